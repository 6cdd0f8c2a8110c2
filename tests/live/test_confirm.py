"""`asd live` pieces against real llama.cpp servers: open and closed loops send every prompt
once, and the run is recorded as a valid trace bundle that the calibration view reads."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("httpx", reason="httpx not installed (pip install '.[live]')")

from asd.errors import ConfigError
from asd.live.confirm import drive, measured_summary, poisson_arrivals, write_live_bundle
from asd.live.runner import CascadeRequest, build_runner
from asd.traces.bundle import open_bundle
from asd.traces.validate import validate_bundle
from tests.live.cascade import builtin_policy, served_ladder, simple_features

PROMPTS = pd.DataFrame({
    "request_id": ["a", "b", "c", "d"],
    "prompt": ["What is 76 plus 34? Answer with just the number.",
               "What is the chemical symbol for zinc? Answer with just the symbol.",
               "Write these words in capital letters: winter summer yellow",
               "Is a lemon sour or sweet? Answer with one word."],
    "reference": ["110", "Zn", "WINTER SUMMER YELLOW", None],
    "task": ["arithmetic", "facts", "copying", None],
})


def run_live(tiers, deadline_s=300, **loop):
    policy = builtin_policy()

    async def go():
        runner = build_runner(tiers, policy, simple_features)
        try:
            requests = [CascadeRequest(p, request_id=r, task=t) for r, p, t in
                        zip(PROMPTS["request_id"], PROMPTS["prompt"], PROMPTS["task"])]
            return await drive(runner, requests, deadline_s=deadline_s, **loop)
        finally:
            await runner.aclose()

    return asyncio.run(go())


def test_poisson_arrivals_start_at_zero_and_match_the_rate():
    arrivals = poisson_arrivals(20_000, rate=4.0, seed=1)
    assert arrivals[0] == 0.0 and np.all(np.diff(arrivals) >= 0)
    assert abs(len(arrivals) / arrivals[-1] - 4.0) < 0.1
    for bad in (0.0, -1.0, float("inf"), float("nan")):  # inf: every request at t = 0, not a rate
        with pytest.raises(ConfigError, match="must be a finite number > 0 requests per second"):
            poisson_arrivals(5, rate=bad)


def test_closed_and_open_loop_runs_are_recorded_as_a_valid_bundle(llama_server, gemma_server, tmp_path):
    tiers = served_ladder(llama_server, gemma_server, max_tokens=3)
    closed = run_live(tiers, concurrency=2)
    assert all(o.result is not None for o in closed), [o.error for o in closed]
    opened = run_live(tiers, arrivals_s=poisson_arrivals(len(PROMPTS), rate=2.0, seed=0))
    assert all(o.result is not None for o in opened)
    sent = [o.sent_s for o in opened]
    assert sent == sorted(sent) and sent[0] < 0.5
    path = write_live_bundle(tmp_path / "live", tiers, PROMPTS, opened, run={"rate": 2.0})
    assert validate_bundle(path) == []
    bundle = open_bundle(path)
    outputs = bundle.to_pandas("outputs")
    assert len(outputs) == sum(len(o.result.runs) for o in opened)
    requests = bundle.to_pandas("requests")
    assert np.allclose(requests["arrival_s"], sent)
    first = outputs[(outputs["request_id"] == "a") & (outputs["tier"] == 0)].iloc[0]
    assert first["quality"] in (0.0, 1.0) and first["e2e_ms"] > 0
    assert outputs[outputs["request_id"] == "d"]["quality"].isna().all()  # no reference: unlabelled
    summary = measured_summary(opened, ["smollm2-135m", "gemma3-270m"], PROMPTS)
    assert summary["answered"] == 4 and summary["errors"] == 0
    assert sum(summary["stop_fractions"].values()) == 1.0 and summary["gpu_s"] > 0
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p95"]


def test_asd_live_cli_prints_measured_vs_simulated_and_writes_the_json_keys(llama_server, gemma_server, tmp_path):
    import json

    import yaml
    from click.testing import CliRunner

    from asd.cli import main
    from tests.live.cascade import calibrated_builtin_policy
    from tests.live.conftest import write_jsonl

    tiers = tmp_path / "tiers.yaml"
    tiers.write_text(yaml.safe_dump({"tiers": served_ladder(llama_server, gemma_server, max_tokens=3)}))
    calibrated_builtin_policy().save(tmp_path / "policy.npz")
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS.where(PROMPTS.notna(), None).to_dict("records"))
    result = CliRunner().invoke(main, ["live", "--tiers", str(tiers), "--policy", str(tmp_path / "policy.npz"),
                                       "--prompts", str(prompts), "--rate", "2", "-o", str(tmp_path / "run"),
                                       "--json", str(tmp_path / "r.json"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "measured  simulated  rel. error" in result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_requests"] == 4 and report["rate"] == 2.0
    for side in ("measured", "simulated"):
        assert set(report[side]["latency_ms"]) == {"mean", "p50", "p95", "p99"}
        assert sum(report[side]["stop_fractions"].values()) == pytest.approx(1.0)
        assert "quality" in report[side]
    assert set(report["rel_error"]) == {"mean", "p50", "p95", "p99"}
    assert report["same_stop_tier"] == 1.0  # one feature path: the simulator walks as the runner did
    assert validate_bundle(tmp_path / "run") == []


def test_asd_live_refuses_both_or_neither_loop_with_one_line(tmp_path):
    from click.testing import CliRunner

    from asd.cli import main

    result = CliRunner().invoke(main, ["live", "--tiers", "t.yaml", "--policy", "p.npz", "--prompts", "p.jsonl"])
    assert result.exit_code == 2 and "error: give exactly one of --rate" in result.output


def test_asd_live_refuses_its_output_before_the_run(tmp_path, monkeypatch):
    """-o builtin, or an existing -o without --overwrite, was refused only when the bundle was
    written, after every request had been sent; now before the tier config is even read."""
    from click.testing import CliRunner

    from asd.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").mkdir()
    for out, message in [("builtin", "error: builtin: the built-in trace is read-only"),
                         ("taken", "error: taken: already exists (pass --overwrite to replace it)")]:
        result = CliRunner().invoke(main, ["live", "--tiers", "absent.yaml", "--policy", "p.npz",
                                           "--prompts", "p.jsonl", "--rate", "1", "-o", out])
        assert result.exit_code == 2 and result.output.startswith(message) and result.output.count("\n") == 1, \
            result.output
    result = CliRunner().invoke(main, ["live", "--tiers", "absent.yaml", "--policy", "p.npz", "--prompts", "p.jsonl",
                                       "--rate", "1", "-o", "taken", "--overwrite"])
    assert result.output == "error: absent.yaml: tier config not found\n"  # --overwrite: on to the config
    (tmp_path / "mine").mkdir()  # --overwrite replaces a bundle, never a directory of the user's files
    (tmp_path / "mine" / "notes.txt").write_text("keep\n")
    result = CliRunner().invoke(main, ["live", "--tiers", "absent.yaml", "--policy", "p.npz", "--prompts", "p.jsonl",
                                       "--rate", "1", "-o", "mine", "--overwrite"])
    assert result.exit_code == 2 and result.output == ("error: mine: exists and is not a trace bundle (no manifest.json); "
                                                       "--overwrite replaces only a bundle: move or remove this directory "
                                                       "yourself\n")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep\n"


def live_cli(tmp_path, tiers: list[dict], n_prompts: int, *extra):
    """`asd live` through the CLI on these tiers with the calibrated policy; (result, seconds, tiers file)."""
    import time

    import yaml
    from click.testing import CliRunner

    from asd.cli import main
    from tests.live.cascade import calibrated_builtin_policy
    from tests.live.conftest import write_jsonl

    config = tmp_path / "tiers.yaml"
    config.write_text(yaml.safe_dump({"tiers": tiers}))
    calibrated_builtin_policy().save(tmp_path / "policy.npz")
    rows = [{"request_id": f"r{i}", "prompt": f"What is {i} plus 1? Answer with just the number."} for i in range(n_prompts)]
    prompts = write_jsonl(tmp_path / "p.jsonl", rows)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["live", "--tiers", str(config), "--policy", str(tmp_path / "policy.npz"),
                                       "--prompts", str(prompts), "--no-progress", *extra])
    return result, time.monotonic() - started, config


def refused(tier: str, url: str) -> str:
    return f"tier {tier!r} not reachable ({url}/v1/models: ConnectError: All connection attempts failed)"


def test_asd_live_with_every_tier_server_down_fails_at_once_with_one_line(tmp_path):
    """It waited for every arrival (54 s for 20 prompts at 0.5/s) before saying no request was
    answered; now each tier server is asked first, and nothing is sent or written."""
    from tests.live.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    result, seconds, config = live_cli(tmp_path, served_ladder(dead, dead), 20, "--rate", "0.5",
                                       "-o", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert result.output == (f"error: {config}: {refused('smollm2-135m', dead)}; {refused('gemma3-270m', dead)}; "
                             "no request was sent\n")
    assert seconds < 15
    assert not (tmp_path / "run").exists()


def test_asd_live_warns_that_seed_does_nothing_with_concurrency(tmp_path):
    from tests.live.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    result, _, config = live_cli(tmp_path, served_ladder(dead, dead), 2, "--concurrency", "1", "--seed", "3")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("warning: --seed has no effect with --concurrency (it seeds the Poisson "
                                    "arrivals of --rate); ignored\n")
    assert f"error: {config}: " in result.output


def test_asd_live_names_the_one_tier_server_that_is_down(llama_server, tmp_path):
    from tests.live.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    result, seconds, config = live_cli(tmp_path, served_ladder(llama_server, dead), 4, "--concurrency", "1")
    assert result.exit_code == 2, result.output
    assert result.output == f"error: {config}: {refused('gemma3-270m', dead)}; no request was sent\n"
    assert seconds < 15


def test_asd_live_says_when_quality_is_compared_over_different_requests(llama_server, tmp_path):
    """A tier that lists its models but fails every completion: requests fall back to the answer
    below, the simulated walk still stops them at that tier, where the live bundle has no answer
    and so no label. Measured 0.250 against simulated 0.300 read as a simulator error."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import yaml
    from click.testing import CliRunner

    from asd.cli import main
    from asd.traces.bundle import builtin_bundle_path
    from tests.live.cascade import calibrated_builtin_policy

    class Failing(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = json.dumps({"object": "list", "data": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # noqa: N802
            self.send_error(500, "completions fail here")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        failing = f"http://127.0.0.1:{server.server_address[1]}"
        config = tmp_path / "tiers.yaml"
        config.write_text(yaml.safe_dump({"tiers": served_ladder(llama_server, failing, retries=0)}))
        calibrated_builtin_policy().save(tmp_path / "policy.npz")
        prompts = tmp_path / "p.jsonl"
        lines = (builtin_bundle_path().parent / "prompts.jsonl").read_text().splitlines()[:12]
        prompts.write_text("\n".join(lines) + "\n")
        result = CliRunner().invoke(main, ["live", "--tiers", str(config), "--policy", str(tmp_path / "policy.npz"),
                                           "--prompts", str(prompts), "--concurrency", "2", "--no-progress",
                                           "--json", str(tmp_path / "r.json")])
    finally:
        server.shutdown()
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    m, s = report["measured"], report["simulated"]
    assert m["fallbacks"] > 0 and m["quality_requests"] == 12  # every answer served is labelled
    assert s["quality_requests"] == 12 - m["fallbacks"]  # those the walk sends up have no answer there
    assert (f"(over 12 measured and {s['quality_requests']} simulated requests: a simulated stop at a tier the "
            "live run got no answer from has no label)") in result.output
    # the columns are not comparable for the requests that fell back: said so
    warning = (f"{m['fallbacks']} of 12 answered requests fell back (a tier failed or refused them): the simulated "
               "column walks the policy as if every tier answered")
    assert report["warnings"][0].startswith(warning) and f"  warning: {warning}" in result.output


def test_a_request_sent_but_not_answered_by_the_deadline_keeps_its_send_time():
    """Two prompts sent at once to a server that takes the connection and never answers (a
    listening socket nobody accepts from); the other two due long after the deadline. The first
    two were recorded as never sent (sent_s NaN), like the last two."""
    import socket

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        outcomes = run_live(served_ladder(url, url), deadline_s=0.5, arrivals_s=np.array([0.0, 0.0, 100.0, 100.0]))
    assert [o.result for o in outcomes] == [None] * 4
    assert all(0 <= o.sent_s < 0.5 for o in outcomes[:2]) and all(np.isnan(o.sent_s) for o in outcomes[2:])
    assert [o.error for o in outcomes] == ["not answered within 0.5 s"] * 2 + ["not sent within 0.5 s"] * 2


def test_asd_live_names_both_files_when_the_ladder_is_not_the_policys(tmp_path):
    import yaml
    from click.testing import CliRunner

    from asd.cli import main
    from tests.live.cascade import calibrated_builtin_policy

    calibrated_builtin_policy().save(tmp_path / "policy.npz")
    tiers = served_ladder("http://127.0.0.1:1", "http://127.0.0.1:2")
    tiers[1]["name"] = "llama-70b"
    config = tmp_path / "tiers.yaml"
    config.write_text(yaml.safe_dump({"tiers": tiers}))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"request_id": "a", "prompt": "hi"}\n')
    result = CliRunner().invoke(main, ["live", "--tiers", str(config), "--policy", str(tmp_path / "policy.npz"),
                                       "--prompts", str(prompts), "--rate", "1", "--no-progress"])
    assert result.exit_code == 2
    assert result.output == (f"error: {config} and {tmp_path / 'policy.npz'}: tier config names ['smollm2-135m', "
                             "'llama-70b'] differ from the policy's tiers ['smollm2-135m', 'gemma3-270m']\n")


def test_asd_live_interrupted_keeps_what_was_answered_and_exits_130(llama_server, gemma_server, tmp_path):
    """Ctrl-C printed `Aborted!`, exit 1, and wrote nothing of the requests already answered.
    Poisson arrivals at 0.005/s put the first request at 0 s and the others past 2000 s, so the
    interrupt at 15 s falls between them."""
    import json
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from tests.live.cascade import calibrated_builtin_policy
    from tests.live.conftest import REPO, subprocess_env, write_jsonl

    tiers = tmp_path / "tiers.yaml"
    tiers.write_text(yaml.safe_dump({"tiers": served_ladder(llama_server, gemma_server, max_tokens=3)}))
    calibrated_builtin_policy().save(tmp_path / "policy.npz")
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS.where(PROMPTS.notna(), None).to_dict("records"))
    command = [sys.executable, "-m", "asd", "live", "--tiers", str(tiers), "--policy", str(tmp_path / "policy.npz"),
               "--prompts", str(prompts), "--rate", "0.005", "-o", str(tmp_path / "run"), "--json",
               str(tmp_path / "r.json"), "--no-progress"]
    process = subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(15)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "Aborted" not in stderr
    assert "warning: interrupted: 1 of 4 requests answered before it" in stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["interrupted"] is True and report["measured"]["answered"] == 1
    assert validate_bundle(tmp_path / "run") == []
    assert open_bundle(tmp_path / "run").to_pandas("requests")["request_id"].tolist() == ["a"]
    live = json.loads((tmp_path / "run" / "manifest.json").read_text())["provenance"]["live"]
    assert [r["error"] for r in live["requests"][1:]] == ["not sent: the run was interrupted"] * 3
    assert [r["sent_s"] for r in live["requests"][1:]] == [None] * 3


def test_asd_live_interrupted_while_probing_the_servers_is_one_line_and_exit_130(tmp_path):
    """Ctrl-C before any request is sent (loading the policy, warming it up, probing servers:
    up to 10 s against a host that never answers) reached click: `Aborted!`, exit 1 (found by a
    hunt). The signal is sent once the probe has connected to the silent server."""
    import signal
    import socket
    import subprocess
    import sys

    import yaml

    from tests.live.conftest import REPO, subprocess_env, write_jsonl

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    tiers = yaml.safe_load((REPO / "asd" / "traces" / "builtin" / "servers.yaml").read_text())
    for tier in tiers["tiers"]:
        tier["url"] = url
    (tmp_path / "tiers.yaml").write_text(yaml.safe_dump(tiers))
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"request_id": "a", "prompt": "Say hello."}])
    command = [sys.executable, "-m", "asd", "live", "--tiers", str(tmp_path / "tiers.yaml"), "--policy",
               str(REPO / "tests" / "policies" / "builtin.npz"), "--prompts", str(prompts), "--rate", "1",
               "-o", str(tmp_path / "run"), "--no-progress"]
    process = subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        silent.settimeout(120)
        connection, _ = silent.accept()  # the probe asks: the run is past loading, before any request
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        connection.close()
    finally:
        silent.close()
        process.kill()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "error: interrupted; no output was left half-written"
    assert "Traceback" not in stderr and "Aborted" not in stderr
    assert not (tmp_path / "run").exists()
