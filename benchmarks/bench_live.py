"""Live confirmation on the CPU ladder: measured against simulated latency on two real llama.cpp servers.

Starts two llama.cpp servers on loopback (SmolLM2-135M → Gemma-3-270M, one thread each), calibrates
a policy on the built-in trace, and runs `asd live` twice — at a low rate and at a rate where
queueing matters (both set from the measured service time of tier 0, so that its utilisation is
about 0.2 and 0.75 on whatever this machine is doing) — comparing measured with simulated
end-to-end latency. The baseline is the same simulator without queueing (every request alone),
measured in the same run. Then `asd serve` (the real command, in a subprocess) takes 64
concurrent clients while the Gemma server is killed mid-run (after the 8th answer; an eighth of
the clients' answers for fewer than 64, at least one): every request must be answered or get a
clear error. Where no request was still out when the kill came, that goal is reported as not
judged. Everything it started is stopped, and its temporary folder removed, at the end.

    python benchmarks/bench_live.py [--json PATH] [--low-n 24] [--high-n 60] [--clients 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import yaml  # noqa: E402

from asd.fsutil import atomic_write  # noqa: E402
from benchmarks.common import refuse_unwritable_json  # noqa: E402
from asd.live.confirm import format_report, live  # noqa: E402
from asd.live.llama_server import cpu_server_ladder, free_port, llama_cpp_server, stop_process  # noqa: E402
from asd.live.models import gemma3_path, smollm2_path  # noqa: E402

PROMPTS = REPO / "asd" / "traces" / "builtin" / "prompts.jsonl"


def calibrated_policy(path: Path) -> dict:
    """`asd calibrate builtin --features logprob,entropy,format --lambda 1e4`: stage 0 on, about
    16% of the built-in prompts start at Gemma, a quarter of the rest continue there. Without
    the length group: the live runs cap answers at 8 tokens, the built-in trace at 48."""
    from asd.calibration.calibrate import calibrate_to_file

    return calibrate_to_file("builtin", path, groups="logprob,entropy,format", lam=1e4)


def prompts_file(work: Path, start: int, n: int) -> Path:
    lines = PROMPTS.read_text().splitlines()[start:start + n]
    path = work / f"prompts-{start}-{n}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def service_time_s(tiers_path, policy_path, work: Path) -> float:
    """Mean time a request spends at tier 0 alone (closed loop, one client), to set the rates."""
    report = live(tiers_path, policy_path, prompts_file(work, 590, 4), concurrency=1, out=work / "warmup",
                  progress=False, overwrite=True)
    return report["measured"]["latency_ms"]["mean"] / 1e3


def serve_load_test(tiers_path, policy_path, work: Path, prompts: list[str], victim: subprocess.Popen,
                    kill_after: int | None = None, deadline_s: float = 420.0) -> dict:
    """`asd serve` in a subprocess; one concurrent client per prompt; SIGKILL the victim tier
    server once `kill_after` answers are in (default: an eighth of the prompts, at most 8, at
    least 1). Counts sent/answered/errors/lost and asd's overhead, and how many requests were
    still out when the kill came (0, or no kill: the kill did not happen mid-run)."""
    if kill_after is None:  # with 8 fixed, a run of 8 clients or fewer never killed anything
        kill_after = max(1, min(8, len(prompts) // 8))
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = open(work / "serve.log", "wb")
    serve = subprocess.Popen([sys.executable, "-m", "asd.cli", "serve", "--tiers", str(tiers_path), "--policy",
                              str(policy_path), "--port", str(port), "--max-queue", str(len(prompts)),
                              "--feedback-file", str(work / "feedback.json")], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if serve.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"asd serve did not start: {(work / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.5)
        answered, errors, lost, overheads = [], [], [], []
        killed = {"after": None, "in_flight": None}

        async def one(http, prompt):
            t0 = time.perf_counter()
            try:
                response = await http.post(f"{url}/v1/completions", json={"prompt": prompt})
                body = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                lost.append(f"{type(exc).__name__}: {exc}")
                return
            client_ms = (time.perf_counter() - t0) * 1e3
            if response.status_code == 200 and body.get("choices"):
                answered.append(body)
                if not body["asd"]["fallback"]:
                    tier_ms = sum(t["queue_ms"] + t["verify_ms"] + t["generate_ms"] for t in body["asd"]["tiers"])
                    overheads.append(client_ms - tier_ms)
            elif response.status_code >= 400 and isinstance(body.get("error"), dict):
                errors.append(response.status_code)
            else:
                lost.append(str(body)[:200])
            if killed["after"] is None and len(answered) >= kill_after:
                killed["after"] = len(answered)
                killed["in_flight"] = len(prompts) - len(answered) - len(errors) - len(lost)
                victim.kill()

        async def run():
            limits = httpx.Limits(max_connections=len(prompts))
            async with httpx.AsyncClient(timeout=deadline_s, limits=limits) as http:
                await asyncio.wait_for(asyncio.gather(*[one(http, p) for p in prompts]), deadline_s)

        started = time.perf_counter()
        asyncio.run(run())
        wall_s = time.perf_counter() - started
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        stop_process(serve)
        log.close()
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name for f in text_string_to_metric_families(metrics)}
    return {"sent": len(prompts), "answered": len(answered), "errors": len(errors), "lost": len(lost),
            "fallbacks": sum(bool(a["asd"]["fallback"]) for a in answered), "killed_after_answers": killed["after"],
            "kill_after": kill_after, "in_flight_at_kill": killed["in_flight"],
            "killed_mid_run": bool(killed["in_flight"]),
            "p50_overhead_ms": float(np.median(overheads)) if overheads else None,
            "p50_tier_ms": float(np.median([sum(t["queue_ms"] + t["verify_ms"] + t["generate_ms"] for t in a["asd"]["tiers"])
                                             for a in answered if not a["asd"]["fallback"]])) if overheads else None,
            "wall_s": wall_s, "metrics_parse": "asd_requests" in families and "asd_stops" in families}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", dest="json_path", help="write the figures as JSON here")
    ap.add_argument("--low-n", type=int, default=24, help="requests in the low-rate run")
    ap.add_argument("--high-n", type=int, default=60, help="requests in the queueing-rate run")
    ap.add_argument("--clients", type=int, default=64, help="concurrent clients of the serve load test")
    ap.add_argument("--max-tokens", type=int, default=8)
    args = ap.parse_args(argv)
    for option, n in (("--low-n", args.low_n), ("--high-n", args.high_n), ("--clients", args.clients),
                      ("--max-tokens", args.max_tokens)):
        if n < 1:  # refused before two servers start and a policy is calibrated
            ap.exit(2, f"error: {option} {n}: need at least 1\n")
    refuse_unwritable_json(ap, args.json_path)
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="bench-live-"))
    try:
        with llama_cpp_server(str(smollm2_path()), work / "smollm2.log") as (smol_url, _), \
                llama_cpp_server(str(gemma3_path()), work / "gemma.log", logits_all=False) as (gemma_url, gemma):
            tiers_path = work / "tiers.yaml"
            tiers_path.write_text(yaml.safe_dump({"tiers": cpu_server_ladder(smol_url, gemma_url, args.max_tokens)}))
            policy_path = work / "policy.npz"
            calibrated_policy(policy_path)
            service_s = service_time_s(tiers_path, policy_path, work)
            low_rate, high_rate = round(0.2 / service_s, 3), round(0.75 / service_s, 3)
            runs = {}
            for name, rate, start, n in (("low", low_rate, 0, args.low_n), ("high", high_rate, 100, args.high_n)):
                runs[name] = live(tiers_path, policy_path, prompts_file(work, start, n), rate=rate, out=work / name,
                                  progress=False, overwrite=True, seed=1)
            prompts = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines()[200:200 + args.clients]]
            serve = serve_load_test(tiers_path, policy_path, work, prompts, gemma)
    finally:  # the servers' logs, the policy and both runs' bundles: nothing is read from them after this
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for name in ("low", "high"):
        report = runs[name]
        for stat in ("p50", "p95"):
            error = abs(report["rel_error"][stat])
            alone = report["no_queueing"]["latency_ms"][stat]
            measured = report["measured"]["latency_ms"][stat]
            baseline = abs(alone - measured) / measured
            rows.append({"figure": f"{stat}_rel_error_{name}_rate", "value": error,
                         "goal": 0.05 if stat == "p50" else 0.10, "baseline": baseline,
                         "baseline_note": "same simulator, every request alone (no queueing)",
                         "ratio_vs_baseline": baseline / error if error else None,
                         "meets_goal": bool(error <= (0.05 if stat == "p50" else 0.10))})
    for name in ("low", "high"):
        for stat in ("p50", "p95"):
            error = abs(runs[name]["recorded_service_rel_error"][stat])
            rows.append({"figure": f"{stat}_rel_error_{name}_rate_recorded_service", "value": error,
                         "goal": 0.05 if stat == "p50" else 0.10, "baseline": None,
                         "baseline_note": "diagnostic: the DES fed each request's own measured server time",
                         "ratio_vs_baseline": None, "meets_goal": bool(error <= (0.05 if stat == "p50" else 0.10))})
    # the goal is about a tier server dying under load: without a kill while requests were out it
    # was not measured, however few were lost
    killed = serve["killed_mid_run"]
    rows.append({"figure": "serve_lost", "value": serve["lost"], "goal": 0, "baseline": None,
                 "baseline_note": "" if killed else "not judged: the Gemma server was not killed mid-run",
                 "ratio_vs_baseline": None, "meets_goal": serve["lost"] == 0 if killed else None})
    rows.append({"figure": "serve_p50_overhead_ms", "value": serve["p50_overhead_ms"], "goal": None,
                 "baseline": serve["p50_tier_ms"], "baseline_note": "p50 time in the tier calls themselves",
                 "ratio_vs_baseline": (serve["p50_overhead_ms"] / serve["p50_tier_ms"])
                 if serve["p50_overhead_ms"] is not None and serve["p50_tier_ms"] else None, "meets_goal": None})
    for name in ("low", "high"):
        print(format_report(runs[name]), end="\n\n")
    print(f"{'figure':<44}{'value':>10}{'goal':>7}{'baseline':>10}{'ratio':>8}  baseline is")
    for row in rows:
        fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
        print(f"{row['figure']:<44}{fmt(row['value']):>10}{fmt(row['goal']):>7}{fmt(row['baseline']):>10}"
              f"{fmt(row['ratio_vs_baseline']):>8}  {row['baseline_note']}")
    print(f"rates: low {low_rate} req/s, high {high_rate} req/s (tier-0 service {service_s:.2f} s); "
          f"serve: sent {serve['sent']}, answered {serve['answered']}, errors {serve['errors']}, lost {serve['lost']}, "
          f"fallbacks {serve['fallbacks']}; {time.time() - started:.0f} s in all")
    if killed:
        print(f"serve: the Gemma server was killed after {serve['killed_after_answers']} answers, "
              f"{serve['in_flight_at_kill']} requests still out; lost {serve['lost']} (goal 0): "
              f"{'met' if serve['lost'] == 0 else 'NOT met'}")
    elif serve["killed_after_answers"] is None:
        print(f"serve: the Gemma server was NOT killed ({serve['answered']} answers, the kill was due after "
              f"{serve['kill_after']}): serve_lost {serve['lost']} is not judged")
    else:
        print(f"serve: the Gemma server was killed after answer {serve['killed_after_answers']} with no request "
              f"still out, NOT mid-run: serve_lost {serve['lost']} is not judged")
    figures = {
        "p50_rel_error_low_rate": abs(runs["low"]["rel_error"]["p50"]),
        "p95_rel_error_low_rate": abs(runs["low"]["rel_error"]["p95"]),
        "p50_rel_error_high_rate": abs(runs["high"]["rel_error"]["p50"]),
        "p95_rel_error_high_rate": abs(runs["high"]["rel_error"]["p95"]),
        "serve_requests_sent": serve["sent"], "serve_answered": serve["answered"], "serve_errors": serve["errors"],
        "serve_lost": serve["lost"], "serve_fallbacks": serve["fallbacks"], "serve_killed_mid_run": killed,
        "serve_p50_overhead_ms": serve["p50_overhead_ms"],
        "p50_rel_error_low_rate_recorded_service": abs(runs["low"]["recorded_service_rel_error"]["p50"]),
        "p95_rel_error_low_rate_recorded_service": abs(runs["low"]["recorded_service_rel_error"]["p95"]),
        "p50_rel_error_high_rate_recorded_service": abs(runs["high"]["recorded_service_rel_error"]["p50"]),
        "p95_rel_error_high_rate_recorded_service": abs(runs["high"]["recorded_service_rel_error"]["p95"]),
        "low_rate": low_rate, "high_rate": high_rate, "tier0_service_s": service_s,
        "runs": {name: {k: v for k, v in r.items() if k != "bundle"} for name, r in runs.items()},
        "serve": serve, "rows": rows, "seconds": round(time.time() - started, 1),
    }
    if args.json_path:
        atomic_write(args.json_path, (json.dumps(figures, indent=2, default=float) + "\n").encode())


if __name__ == "__main__":
    main()
