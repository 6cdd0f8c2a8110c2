"""`asd live`: a confirmation run. Sends a prompt set through the cascade on real servers (open
loop: Poisson arrivals at a rate; closed loop: C clients each sending its next prompt when the
last is answered), records what happened as a trace bundle (so live runs feed calibration),
then replays the same requests at the same arrival times through the simulator and compares
measured with simulated latency, quality, stop distribution and GPU-seconds.
"""

from __future__ import annotations

import asyncio
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from asd.errors import AsdError, ConfigError
from asd.live import labels
from asd.live.prompts import prompt_hash
from asd.live.record import draft_row, manifest_tier_entry, output_row, public_tier
from asd.live.runner import CascadeRequest, CascadeResult, CascadeRunner
from asd.traces import bundle as B

STATS = ("mean", "p50", "p95", "p99")


@dataclass
class LiveOutcome:
    """One request of a live run: when it was sent (s from the start) and its result or error."""

    request: CascadeRequest
    sent_s: float
    result: CascadeResult | None
    error: str | None


def poisson_arrivals(n: int, rate: float, seed: int = 0) -> np.ndarray:
    """Arrival offsets (s) of a Poisson process at `rate` requests/s, the first at 0."""
    if not rate > 0:
        raise ConfigError(f"--rate {rate}: must be > 0 requests per second")
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, n)
    gaps[0] = 0.0
    return np.cumsum(gaps)


async def drive(runner: CascadeRunner, requests: list[CascadeRequest], *, arrivals_s=None, concurrency=None,
                deadline_s: float = 3600.0, on_done=None) -> list[LiveOutcome]:
    """Send every request once — at its arrival offset (open loop) or through `concurrency`
    clients (closed loop) — and wait for all of them, at most `deadline_s` in all."""
    if (arrivals_s is None) == (concurrency is None):
        raise ConfigError("give exactly one of --rate (open loop) or --concurrency (closed loop)")
    start = time.perf_counter()
    outcomes: list[LiveOutcome | None] = [None] * len(requests)

    async def one(i: int) -> None:
        request = requests[i]
        sent = time.perf_counter() - start
        request.arrival_s = sent
        try:  # no admission limit: a confirmation run measures the queueing it causes
            outcomes[i] = LiveOutcome(request, sent, await runner.run(request), None)
        except AsdError as exc:
            outcomes[i] = LiveOutcome(request, sent, None, str(exc))
        if on_done:
            on_done()

    async def open_loop():
        tasks = []
        for i, offset in enumerate(arrivals_s):
            delay = start + float(offset) - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)

    async def closed_loop():
        queue = iter(range(len(requests)))

        async def client():
            for i in queue:
                await one(i)

        await asyncio.gather(*[client() for _ in range(int(concurrency))])

    try:
        await asyncio.wait_for(open_loop() if arrivals_s is not None else closed_loop(), deadline_s)
    except asyncio.TimeoutError:
        pass  # requests not finished by the deadline are reported as errors below
    return [o if o is not None else LiveOutcome(r, float("nan"), None, f"not answered within {deadline_s:g} s")
            for o, r in zip(outcomes, requests)]


def label(text: str, reference, task) -> tuple[float | None, bool | None, str | None]:
    """Quality against the prompt's reference (the `asd record` rule); unlabelled without one."""
    if isinstance(reference, str):
        return labels.label_by_reference(text, reference, task if isinstance(task, str) else None)
    return None, None, None


def write_live_bundle(out, tiers: list[dict], prompts: pd.DataFrame, outcomes: list[LiveOutcome], *,
                      run: dict, overwrite: bool = False) -> Path:
    """The live run as a trace bundle: every tier a request ran, with what it answered (the
    accepted draft prefix included), the verifier's score of the draft where it continued,
    the tier's own service time (no queueing) as e2e_ms, and each request's send time as arrival_s."""
    by_id = prompts.set_index("request_id")
    outputs, drafts = [], []
    for outcome in outcomes:
        if outcome.result is None:
            continue
        rid = outcome.request.request_id
        row = by_id.loc[rid]
        for tier_run in outcome.result.runs:
            entry = output_row(rid, tier_run.tier, tier_run.generation)
            entry["e2e_ms"] = tier_run.busy_ms
            entry["quality"], entry["accepted"], entry["label_source"] = label(tier_run.generation.text, row["reference"], row["task"])
            outputs.append(entry)
            if tier_run.draft is not None:
                draft = draft_row(rid, tier_run.tier - 1, tier_run.tier, tier_run.draft)
                drafts.append(draft)
    sent = {o.request.request_id: o.sent_s for o in outcomes}
    requests = pd.DataFrame({
        "request_id": prompts["request_id"], "prompt": prompts["prompt"],
        "prompt_hash": [prompt_hash(p) for p in prompts["prompt"]], "task": prompts["task"],
        "reference": prompts["reference"],
        "arrival_s": [sent.get(rid, float("nan")) for rid in prompts["request_id"]],
    })
    manifest = B.new_manifest(
        [manifest_tier_entry(t, {"backend": t.get("backend")}) for t in tiers],
        sampling={t["name"]: t["sampling"] for t in tiers},
        provenance={
            "recorded_by": "asd live", "tiers": [public_tier(t) for t in tiers], "host": platform.node(),
            "platform": platform.platform(), "python": sys.version.split()[0], "finished_at_unix": time.time(),
            "timings": "e2e_ms = the tier's own time on this request (draft verification + generation, "
                       "no queueing); arrival_s = when the request was sent",
            "live": run,
        },
        label_rule=labels.label_rule("agreement"),
    )
    draft_table = pd.DataFrame(drafts) if drafts else None
    bundle = B.write_bundle(B.output_path(out), manifest, requests, pd.DataFrame(outputs), draft_table,
                            overwrite=overwrite)
    return bundle.path


def latency_stats(values_ms) -> dict:
    values = np.asarray(values_ms, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {s: None for s in STATS}
    return {"mean": float(values.mean()), "p50": float(np.percentile(values, 50)),
            "p95": float(np.percentile(values, 95)), "p99": float(np.percentile(values, 99))}


def measured_summary(outcomes: list[LiveOutcome], tier_names: list[str], prompts: pd.DataFrame) -> dict:
    """Latency (arrival to answer), quality of the answers served, stop distribution, GPU-seconds."""
    done = [o for o in outcomes if o.result is not None]
    by_id = prompts.set_index("request_id")
    qualities = []
    for o in done:
        row = by_id.loc[o.request.request_id]
        quality, _, _ = label(o.result.text, row["reference"], row["task"])
        if quality is not None:
            qualities.append(quality)
    stops = np.bincount([o.result.stopped_at_tier for o in done], minlength=len(tier_names))
    return {
        "latency_ms": latency_stats([o.result.latency_ms for o in done]),
        "quality": float(np.mean(qualities)) if qualities else None,
        "stop_fractions": {name: float(stops[i] / max(1, len(done))) for i, name in enumerate(tier_names)},
        "gpu_s": float(sum(o.result.gpu_ms for o in done) / 1e3),
        "answered": len(done),
        "errors": len(outcomes) - len(done),
        "fallbacks": sum(bool(o.result.fallback) for o in done),
    }
