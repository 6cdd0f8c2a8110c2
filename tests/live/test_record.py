"""`asd record` end to end on the real SmolLM2-135M model: complete bundles, resume after a
real SIGKILL, deterministic shards, and one-line errors on bad input with nothing lost."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from asd.cli import main
from asd.errors import TraceError
from asd.live import record as R
from asd.live.prompts import load_prompts, select_shard, shard_of
from asd.traces.bundle import open_bundle
from tests.live.conftest import CHAT, REPO, QuietHandler, free_port, serving, subprocess_env, write_jsonl

PROMPTS = [
    {"request_id": "a1", "prompt": "What is 2 plus 3? Answer with just the number.", "reference": "5", "task": "arithmetic"},
    {"request_id": "a2", "prompt": "What is the capital of France? Answer with one word.", "reference": "Paris", "task": "facts"},
    {"request_id": "a3", "prompt": "Repeat these words exactly: blue river", "reference": "blue river", "task": "copying"},
    {"request_id": "a4", "prompt": "Name a colour."},
    {"request_id": "a5", "prompt": "Is 7 even or odd? Answer with one word.", "reference": "odd", "task": "classification"},
    {"request_id": "a6", "prompt": "Say hello."},
]


def ladder(tmp_path: Path, smollm2: str, max_tokens: int = 6, batch_size: int = 2) -> Path:
    """Two tiers on the same small model, prompted differently, so drafts get verified."""
    config = {
        "sampling": {"max_tokens": max_tokens, "temperature": 0.0, "top_logprobs": 3},
        "tiers": [
            {"name": "chat", "backend": "llama_cpp", "model": smollm2, "template": CHAT, "stop": ["<|im_end|>"],
             "n_ctx": 128, "n_threads": 1, "batch_size": batch_size, "params_b": 0.135, "hardware": "cpu"},
            {"name": "plain", "backend": "llama_cpp", "model": "smollm2-135m", "template": "<|im_start|>Question: {prompt}\nAnswer:",
             "stop": ["\n"], "draft_separator": " ", "n_ctx": 128, "n_threads": 1, "batch_size": batch_size},
        ],
    }
    path = tmp_path / "tiers.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(*args):
    return CliRunner().invoke(main, ["record", *map(str, args), "--no-progress"])


def test_record_writes_a_complete_valid_bundle_and_rerun_is_a_no_op(tmp_path, smollm2):
    tiers, prompts = ladder(tmp_path, smollm2), write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    out = tmp_path / "bundle"
    result = run_cli("--tiers", tiers, "--prompts", prompts, "-o", out, "--json", tmp_path / "s.json")
    assert result.exit_code == 0, result.output
    assert "complete, 6 requests" in result.output
    bundle = open_bundle(out)
    assert bundle.tier_names == ["chat", "plain"]
    assert bundle.tiers[0]["backend"] == "llama_cpp" and bundle.tiers[0]["backend_version"].startswith("llama-cpp-python")
    assert bundle.tiers[0]["params_b"] == 0.135 and bundle.tiers[1]["params_b"] == 0.135  # short name's default
    assert "last tier" in bundle.manifest["label_rule"]
    assert bundle.manifest["sampling"]["chat"]["max_tokens"] == 6
    outputs = bundle.to_pandas("outputs")
    assert len(outputs) == 12 and set(outputs["tier"]) == {0, 1}
    assert (outputs["ttft_ms"] > 0).all() and (outputs["e2e_ms"] >= outputs["ttft_ms"]).all()
    assert all(len(lp) == n for lp, n in zip(outputs["token_logprobs"], outputs["n_output_tokens"]))
    sources = dict(zip(zip(outputs["request_id"], outputs["tier"]), outputs["label_source"]))
    assert sources[("a1", 0)] == "reference:numeric" and sources[("a4", 0)] == "agreement:last_tier"
    assert outputs.loc[(outputs["request_id"] == "a4") & (outputs["tier"] == 1), "quality"].item() == 1.0
    drafts = bundle.to_pandas("drafts")
    assert len(drafts) == 6 and set(zip(drafts["draft_tier"], drafts["verify_tier"])) == {(0, 1)}
    assert (drafts["n_accepted"] <= drafts["n_draft_tokens"]).all() and (drafts["verify_ms"] > 0).all()
    requests = bundle.to_pandas("requests")
    assert list(requests["request_id"]) == [p["request_id"] for p in PROMPTS]
    assert not (tmp_path / "bundle.partial").exists()
    assert json.loads((tmp_path / "s.json").read_text())["generated"] == 12

    again = run_cli("--tiers", tiers, "--prompts", prompts, "-o", out)
    assert again.exit_code == 0 and "already complete" in again.output
    # another run's unfinished work beside it (other options) is not this run's to delete: it was, silently
    other = tmp_path / "bundle.partial"
    other.mkdir()
    (other / "plan.json").write_text(json.dumps({"fingerprint": "another-run"}))
    kept = run_cli("--tiers", tiers, "--prompts", prompts, "-o", out)
    assert kept.exit_code == 0 and "already complete" in kept.output
    assert f"note: {other} holds an unfinished recording from other inputs, kept" in kept.output
    assert (other / "plan.json").is_file()
    # references changed since: the labels came from the old ones, so "already complete" would keep them
    changed = write_jsonl(tmp_path / "p2.jsonl", [{**p, "reference": "WRONG"} for p in PROMPTS])
    refused = run_cli("--tiers", tiers, "--prompts", changed, "-o", out)
    assert refused.exit_code == 2
    assert refused.output == (f"error: {out}: already recorded, with other references or tasks than {changed} gives "
                              "now, which its labels come from (pass --overwrite to record it again)\n")
    # a table gone since: not "already complete"
    (out / "outputs.parquet").unlink()
    broken = run_cli("--tiers", tiers, "--prompts", prompts, "-o", out)
    assert broken.exit_code == 2 and broken.output.startswith(f"error: {out}: recorded, but no longer a valid bundle (")
    assert broken.output.rstrip().endswith("pass --overwrite to record it again")


def test_sigkill_mid_run_loses_nothing_recorded_and_rerun_completes(tmp_path, smollm2):
    tiers = ladder(tmp_path, smollm2, max_tokens=8, batch_size=1)
    # Twelve requests, one per shard: plenty of runway to kill the run in the middle.
    many = PROMPTS + [{**p, "request_id": p["request_id"] + "b"} for p in PROMPTS]
    prompts = write_jsonl(tmp_path / "p.jsonl", many)
    out = tmp_path / "bundle"
    partial = tmp_path / "bundle.partial"
    command = [sys.executable, "-m", "asd.cli", "record", "--tiers", str(tiers), "--prompts", str(prompts),
               "-o", str(out), "--no-progress"]
    victim = subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while len(list(partial.glob("outputs-*.parquet"))) < 3:
        assert victim.poll() is None, "record finished before it could be killed"
        assert time.monotonic() < deadline, "no shards appeared"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not out.exists()
    shards = sorted(partial.glob("*.parquet"))
    kept = sum(pq.read_table(s).num_rows for s in shards)  # every shard left behind is whole
    assert 3 <= kept < 24 + 12

    finished = subprocess.run(command + ["--json", str(tmp_path / "s.json")], cwd=REPO, env=subprocess_env(),
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["resumed_outputs"] + summary["resumed_drafts"] == kept
    assert summary["generated"] + summary["resumed_outputs"] == 24
    bundle = open_bundle(out)
    outputs = bundle.to_pandas("outputs")
    assert len(outputs) == 24 and not outputs.duplicated(["request_id", "tier"]).any()
    assert len(bundle.to_pandas("drafts")) == 12
    assert not partial.exists()


def test_shard_slices_are_stable_disjoint_and_cover_every_prompt(tmp_path, smollm2):
    frame = load_prompts(write_jsonl(tmp_path / "p.jsonl", PROMPTS))
    slices = [set(select_shard(frame, (i, 3))["request_id"]) for i in range(3)]
    assert set().union(*slices) == set(frame["request_id"]) and sum(map(len, slices)) == len(frame)
    shuffled = load_prompts(write_jsonl(tmp_path / "q.jsonl", PROMPTS[::-1]))
    assert set(select_shard(shuffled, (1, 3))["request_id"]) == slices[1]
    assert [shard_of(p["request_id"], 3) for p in PROMPTS] == [0, 1, 1, 1, 1, 1]  # pinned across versions

    index = next(i for i in range(3) if slices[i])
    result = run_cli("--tiers", ladder(tmp_path, smollm2, max_tokens=2), "--prompts", tmp_path / "p.jsonl",
                     "-o", tmp_path / "slice", "--shard", f"{index}/3", "--drafts", "none")
    assert result.exit_code == 0, result.output
    bundle = open_bundle(tmp_path / "slice")
    assert set(bundle.to_pandas("requests")["request_id"]) == slices[index]
    assert not bundle.has("drafts") and bundle.manifest["record"]["shard"] == f"{index}/3"


def test_malformed_prompt_file_is_one_line_naming_the_line(tmp_path, smollm2):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": oops}\n')
    result = run_cli("--tiers", ladder(tmp_path, smollm2), "--prompts", bad, "-o", tmp_path / "b")
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "bad.jsonl, line 2, near column 'prompt', character 12: invalid JSON" in result.output
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.partial").exists()


def test_overwrite_never_replaces_a_directory_of_other_files(tmp_path, smollm2):
    """--overwrite replaced whatever stood at -o once the run was done, a directory of the user's
    files included; it is refused before any model loads, and the directory is kept."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep\n")
    result = run_cli("--tiers", ladder(tmp_path, smollm2), "--prompts", write_jsonl(tmp_path / "p.jsonl", PROMPTS),
                     "-o", mine, "--overwrite")
    assert result.exit_code == 2 and result.output == (f"error: {mine}: exists and is not a trace bundle (no "
                                                       "manifest.json); --overwrite replaces only a bundle: move or "
                                                       "remove this directory yourself\n")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and not (tmp_path / "mine.partial").exists()


def test_missing_model_file_is_one_line_naming_the_file(tmp_path, llama_cpp_installed):
    config = tmp_path / "t.json"
    config.write_text(json.dumps({"tiers": [{"name": "x", "backend": "llama_cpp", "model": str(tmp_path / "gone.gguf")}]}))
    result = run_cli("--tiers", config, "--prompts", write_jsonl(tmp_path / "p.jsonl", PROMPTS), "-o", tmp_path / "b")
    assert result.exit_code == 2 and "gone.gguf: model file not found" in result.output
    assert not (tmp_path / "b").exists()


def test_unreachable_server_keeps_earlier_tiers_and_resumes(tmp_path, smollm2, httpx_installed):
    config = yaml.safe_load(ladder(tmp_path, smollm2, max_tokens=3).read_text())
    url = f"http://127.0.0.1:{free_port()}"
    config["tiers"][1] = {"name": "remote", "backend": "openai", "url": url, "retries": 1, "backoff_s": 0.01}
    tiers = tmp_path / "remote.yaml"
    tiers.write_text(yaml.safe_dump(config))
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    result = run_cli("--tiers", tiers, "--prompts", prompts, "-o", tmp_path / "b")
    assert result.exit_code == 2
    assert f"{url}/v1/models: server unreachable" in result.output
    assert "6 results recorded so far are kept" in result.output and "rerun the same command" in result.output
    kept = sum(pq.read_table(s).num_rows for s in (tmp_path / "b.partial").glob("outputs-*.parquet"))
    assert kept == 6


def test_a_run_that_records_nothing_leaves_nothing_and_the_fixed_config_runs(tmp_path, httpx_installed):
    """A first tier whose server is down: nothing recorded, so no `b.partial/` is kept — it held
    only the plan, and refused the rerun with the URL fixed as "an unfinished recording from
    other tiers/prompts/options" (--restart needed to record anything)."""
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS[:2])
    config = tmp_path / "t.yaml"
    config.write_text(yaml.safe_dump({"tiers": [{"name": "remote", "backend": "openai",
                                                 "url": f"http://127.0.0.1:{free_port()}", "retries": 0}]}))
    result = run_cli("--tiers", config, "--prompts", prompts, "-o", tmp_path / "b")
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.rstrip().endswith("nothing was recorded, and nothing is left behind"), result.output
    assert not (tmp_path / "b.partial").exists() and not (tmp_path / "b").exists()
    with serving(_NoLogprobsServer) as url:  # the fixed config: the rerun gets as far as the server's answers
        config.write_text(yaml.safe_dump({"tiers": [{"name": "remote", "backend": "openai", "url": url}]}))
        rerun = run_cli("--tiers", config, "--prompts", prompts, "-o", tmp_path / "b")
    assert "other tiers/prompts/options" not in rerun.output and "no logprobs" in rerun.output, rerun.output


@pytest.mark.parametrize("content, message", [("", "the prompt file is empty (0 bytes)"),
                                              ("request_id,prompt\n", "the prompt file holds no prompts (no rows)")])
def test_an_empty_prompt_file_is_refused_as_empty_before_any_tier_is_asked(tmp_path, content, message):
    """It said "no 'prompt' column (columns are [])"."""
    prompts = tmp_path / "p.csv"
    prompts.write_text(content)
    config = tmp_path / "t.yaml"
    config.write_text(yaml.safe_dump({"tiers": [{"name": "remote", "backend": "openai",
                                                 "url": f"http://127.0.0.1:{free_port()}", "retries": 0}]}))
    result = run_cli("--tiers", config, "--prompts", prompts, "-o", tmp_path / "b")
    assert result.exit_code == 2 and result.output == f"error: {prompts}: {message}\n"
    assert not (tmp_path / "b.partial").exists() and not (tmp_path / "b").exists()


def test_openai_tier_records_the_served_model_server_version_and_url(tmp_path, llama_server):
    import httpx
    import llama_cpp

    config = tmp_path / "t.yaml"
    config.write_text(yaml.safe_dump({
        "sampling": {"max_tokens": 2, "temperature": 0.0, "top_logprobs": 1},
        "tiers": [{"name": "served", "backend": "openai", "url": llama_server + "/v1", "template": CHAT}],
    }))
    result = run_cli("--tiers", config, "--prompts", write_jsonl(tmp_path / "p.jsonl", PROMPTS[:2]),
                     "-o", tmp_path / "b", "--drafts", "none")
    assert result.exit_code == 0, result.output
    bundle = open_bundle(tmp_path / "b")
    served = httpx.get(f"{llama_server}/v1/models").json()["data"][0]["id"]
    assert bundle.tiers[0]["model_id"] == served
    assert bundle.tiers[0]["backend_version"] == f"llama-cpp-python server {llama_cpp.__version__}"
    assert bundle.manifest["provenance"]["tier_backends"] == {"served": {"url": llama_server}}


class _NoLogprobsServer(QuietHandler):
    """An OpenAI-style server that ignores `logprobs` (as some proxies do)."""

    finish_reason = "length"

    def do_GET(self):
        self.reply(json.dumps({"data": [{"id": "m"}]}).encode())

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        event = {"choices": [{"text": " hi", "index": 0, "logprobs": None, "finish_reason": self.finish_reason}]}
        body = f"data: {json.dumps(event)}\n\ndata: {json.dumps({'choices': [], 'usage': {'prompt_tokens': 3, 'completion_tokens': 1}})}\n\ndata: [DONE]\n\n"
        self.reply(body.encode(), "text/event-stream")


class _CutShortServer(_NoLogprobsServer):
    """A server whose stream stops before the completion finishes (no finish_reason)."""

    finish_reason = None


def record_one_openai_tier(tmp_path, handler, tier_name):
    """`asd record` of PROMPTS through one openai tier served by `handler`; (result, url)."""
    with serving(handler) as url:
        config = tmp_path / "t.yaml"
        config.write_text(yaml.safe_dump({"tiers": [{"name": tier_name, "backend": "openai", "url": url}]}))
        result = run_cli("--tiers", config, "--prompts", write_jsonl(tmp_path / "p.jsonl", PROMPTS), "-o", tmp_path / "b")
    return result, url


def test_stream_cut_short_is_refused_not_recorded_as_an_answer(tmp_path, httpx_installed):
    result, _ = record_one_openai_tier(tmp_path, _CutShortServer, "cut")
    assert result.exit_code == 2 and "the stream ended before the completion finished" in result.output


def test_tier_that_returns_no_logprobs_is_refused_with_one_line(tmp_path, httpx_installed):
    result, url = record_one_openai_tier(tmp_path, _NoLogprobsServer, "proxy")
    assert result.exit_code == 2
    assert f"tier 'proxy' ({url}) returned no logprobs for request 'a1'" in result.output
    assert not (tmp_path / "b").exists()


def test_disk_full_mid_run_keeps_earlier_shards_and_resumes(tmp_path, smollm2, monkeypatch):
    tiers, prompts = ladder(tmp_path, smollm2, max_tokens=3), write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    real_write = R.ShardStore._write_shard
    written = []

    def full_disk(self, kind, table):
        if len(written) >= 2:
            # What the kernel does when the disk fills: write() fails with ENOSPC.
            import errno

            err = OSError(errno.ENOSPC, "No space left on device")
            monkeypatch.setattr("builtins.open", _failing_open(err))
        written.append(kind)
        return real_write(self, kind, table)

    monkeypatch.setattr(R.ShardStore, "_write_shard", full_disk)
    result = run_cli("--tiers", tiers, "--prompts", prompts, "-o", tmp_path / "b")
    monkeypatch.undo()
    assert result.exit_code == 2
    assert "disk full while writing" in result.output and "4 results recorded so far are kept" in result.output
    assert not list((tmp_path / "b.partial").glob(".*.tmp"))
    resumed = run_cli("--tiers", tiers, "--prompts", prompts, "-o", tmp_path / "b")
    assert resumed.exit_code == 0, resumed.output
    assert len(open_bundle(tmp_path / "b").to_pandas("outputs")) == 12


def _failing_open(err):
    import builtins

    real_open = builtins.open

    def failing(file, mode="r", *args, **kwargs):
        if "w" in mode and str(file).endswith(".tmp"):
            raise err
        return real_open(file, mode, *args, **kwargs)

    return failing


def test_resuming_with_other_inputs_is_refused(tmp_path, smollm2):
    tiers, prompts = ladder(tmp_path, smollm2), write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    partial = tmp_path / "b.partial"
    partial.mkdir()
    (partial / "plan.json").write_text(json.dumps({"fingerprint": "something-else"}))
    result = run_cli("--tiers", tiers, "--prompts", prompts, "-o", tmp_path / "b")
    assert result.exit_code == 2 and "holds an unfinished recording from other tiers/prompts/options" in result.output
    assert "add --restart to discard it and start over" in result.output


def test_a_damaged_shard_of_an_unfinished_run_is_one_error_naming_it(tmp_path):
    """Shards are written atomically, so only damage from outside asd (a disk, a hand) leaves
    one unreadable: the rerun raised pyarrow's ArrowInvalid as a traceback."""
    store = R.ShardStore(tmp_path / "b.partial", "fp", plan={})
    (tmp_path / "b.partial" / "outputs-00000.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(TraceError, match=r"outputs-00000.parquet: a recorded shard cannot be read .*add --restart"):
        store.read("outputs")


def test_shards_without_a_plan_are_never_adopted(tmp_path, smollm2):
    """A second recorder on the same -o recreated the first one's .partial/ after it finished,
    holding shards but no plan.json; a later run with other inputs took the directory as fresh
    and reused drafts scored on other outputs."""
    tiers, prompts = ladder(tmp_path, smollm2), write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    partial = tmp_path / "b.partial"
    partial.mkdir()
    (partial / "drafts-00000000000000000001-1.parquet").write_bytes(b"left by another recorder")
    result = run_cli("--tiers", tiers, "--prompts", prompts, "-o", tmp_path / "b")
    assert result.exit_code == 2
    assert f"{partial}: holds recorded shards but no plan.json saying from what; add --restart" in result.output
    assert run_cli("--tiers", tiers, "--prompts", prompts, "-o", tmp_path / "b", "--restart").exit_code == 0
    assert not partial.exists() and not (tmp_path / "b.lock").exists()


def test_a_second_recorder_on_the_same_output_is_refused_at_once(tmp_path, smollm2):
    import fcntl

    tiers, prompts = ladder(tmp_path, smollm2), write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    with open(tmp_path / "b.lock", "a") as held:  # as a running `asd record -o b` holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run_cli("--tiers", tiers, "--prompts", prompts, "-o", tmp_path / "b", "--restart")
    assert result.exit_code == 2 and result.output == (
        f"error: {tmp_path / 'b'}: another asd record is writing it now (it holds {tmp_path / 'b.lock'}); wait for it "
        "to finish, or write elsewhere\n")
    assert not (tmp_path / "b.partial").exists() and not (tmp_path / "b").exists()


def test_a_store_whose_directory_is_removed_does_not_make_it_again(tmp_path):
    import shutil

    store = R.ShardStore(tmp_path / "b.partial", "fp", plan={})
    shutil.rmtree(tmp_path / "b.partial")
    with pytest.raises(TraceError, match=r"b.partial: removed while recording; nothing more is written there"):
        store.save_tier_info(0, {})
    assert not (tmp_path / "b.partial").exists()


def test_overwrite_onto_a_bundle_holding_other_files_is_refused_before_recording(tmp_path, smollm2):
    tiers, prompts = ladder(tmp_path, smollm2), write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    out = tmp_path / "b"
    assert run_cli("--tiers", tiers, "--prompts", prompts, "-o", out).exit_code == 0
    (out / "prompts.jsonl").write_text("mine\n")
    result = run_cli("--tiers", tiers, "--prompts", prompts, "-o", out, "--overwrite")
    assert result.exit_code == 2 and "holds 'prompts.jsonl' besides the bundle's own files" in result.output
    assert "recorded so far" not in result.output and not (tmp_path / "b.partial").exists()
    assert (out / "prompts.jsonl").read_text() == "mine\n"


def test_an_empty_answer_is_not_scored_as_a_draft_as_live_scores_none(tmp_path, smollm2):
    """The live runner verifies no draft where the tier below answered nothing, so its draft
    features read "no draft" there; a recorded row scoring the empty text (0 tokens) read
    draft_present 1 and trained the predictors on a state live never shows."""
    from asd.calibration.views import load_view

    config = yaml.safe_load(ladder(tmp_path, smollm2).read_text())
    # The assistant turn is closed in the template: SmolLM2 answers with a newline, cut by the stop.
    config["tiers"][0]["template"] = CHAT + "OK.<|im_end|>"
    config["tiers"][0]["stop"] = ["<|im_end|>", "\n", "<|im_start|>"]
    tiers = tmp_path / "empty_first.yaml"
    tiers.write_text(yaml.safe_dump(config))
    out = tmp_path / "bundle"
    result = run_cli("--tiers", tiers, "--prompts", write_jsonl(tmp_path / "p.jsonl", PROMPTS[:3]), "-o", out)
    assert result.exit_code == 0, result.output
    bundle = open_bundle(out)
    outputs = bundle.to_pandas("outputs")
    assert (outputs.loc[outputs["tier"] == 0, "output"] == "").all()  # the setup gives what it claims
    assert not bundle.has("drafts")  # no row scored an empty text, and no empty table is written
    assert result.output.count("scored 0 drafts") == 1, result.output
    assert not load_view(out).has_drafts  # calibration reads "no draft at tier 1", as live has it
