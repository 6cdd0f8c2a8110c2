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

from asd.calibration.profiles import tier_tensor_parallel
from asd.errors import AsdError, BackendError, ConfigError, Interrupted
from asd.live import labels
from asd.live.prompts import prompt_hash
from asd.live.record import draft_row, manifest_tier_entry, output_row, public_tier
from asd.live.runner import CascadeRequest, CascadeResult, CascadeRunner
from asd.traces import bundle as B

STATS = ("mean", "p50", "p95", "p99")
# How long `asd live` waits for each tier server's GET /v1/models before the run (a refused
# connection is an answer at once; this bounds a host that does not answer at all).
PROBE_TIMEOUT_S = 10.0


@dataclass
class LiveOutcome:
    """One request of a live run: when it was sent (s from the start) and its result or error."""

    request: CascadeRequest
    sent_s: float
    result: CascadeResult | None
    error: str | None


def poisson_arrivals(n: int, rate: float, seed: int = 0) -> np.ndarray:
    """Arrival offsets (s) of a Poisson process at `rate` requests/s, the first at 0."""
    if not 0 < rate < float("inf"):
        raise ConfigError(f"--rate {rate}: must be a finite number > 0 requests per second")
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

    why = f" within {deadline_s:g} s"
    try:
        await asyncio.wait_for(open_loop() if arrivals_s is not None else closed_loop(), deadline_s)
    except asyncio.TimeoutError:
        pass  # requests not finished by the deadline are reported as errors below
    except asyncio.CancelledError:
        # Ctrl-C (asyncio.run cancels the main task): the answered requests are kept and
        # written, as at the deadline; returning normally keeps asyncio.run from raising
        # KeyboardInterrupt over them
        why = ": " + INTERRUPTED
    # a request sent but not answered keeps its send time; one never sent has none
    return [o if o is not None else
            LiveOutcome(r, float("nan"), None, f"not sent{why}") if r.arrival_s is None else
            LiveOutcome(r, r.arrival_s, None, f"not answered{why}")
            for o, r in zip(outcomes, requests)]


INTERRUPTED = "the run was interrupted"


def interrupted(outcomes: list[LiveOutcome]) -> bool:
    return any(o.error is not None and o.error.endswith(": " + INTERRUPTED) for o in outcomes)


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
        "quality_requests": len(qualities),  # answered and labelled (a prompt with no reference is not)
        "stop_fractions": {name: float(stops[i] / max(1, len(done))) for i, name in enumerate(tier_names)},
        "gpu_s": float(sum(o.result.gpu_ms for o in done) / 1e3),
        "answered": len(done),
        "errors": len(outcomes) - len(done),
        "fallbacks": sum(bool(o.result.fallback) for o in done),
    }


# -- the simulated side ---------------------------------------------------------------------------
def tier_slots(tier: dict) -> int:
    """Requests a tier's server runs at once per replica (llama.cpp's python server: 1; a vLLM
    server: its max_num_seqs): the simulator's max batch. `slots` in the tier config, else its
    `concurrency`."""
    return int(tier.get("slots") or tier.get("concurrency") or 1)


def simulate_live(bundle_path, policy, tiers: list[dict]) -> dict:
    """Replay the recorded requests through the discrete-event simulator at their recorded
    arrival times: the policy's walk on the same features, the tier latency fitted from the
    live trace (the `trace` cost model), one pool per tier shaped like the servers (replicas =
    URLs, max batch = slots)."""
    from asd.calibration.costs import fit_cost_model
    from asd.calibration.features import compute_features
    from asd.calibration.views import load_view
    from asd.calibration.prompt_text import policy_prompt_text
    from asd.live.features import policy_feature_spec, stage0_prompt_features
    from asd.live.pool import replica_urls
    from asd.simulator.des import Pools, simulate

    view = load_view(bundle_path)
    features = compute_features(view, spec=policy_feature_spec(policy))
    # Stage 0 sees what the live runner saw then: the prompt, not yet tier 0's token count.
    prompt_x = stage0_prompt_features(view, policy_feature_spec(policy), policy_prompt_text(policy))
    prompt_bins = policy.prompt_bins(prompt_x) if policy.predictor.has_prompt else None
    cold_bins = policy.cold_tier_bins(features.cold_x) if policy.tables.cold_start else None
    route_scores = policy.route_scores(prompt_x) if policy.tables.has_route_evidence else None
    walk = policy.walk(prompt_bins, policy.tier_bins(features.tier_x), cold_bins, route_scores=route_scores)
    model = fit_cost_model(view, "trace")
    grid = model.grid(view)  # token counts as the cost model charges them (missing ones filled)
    coeffs, fit_note = fit_server_latency(view, model.iteration_coefficients())
    pools = Pools.build(coeffs,
                        replicas=np.array([max(1, len(replica_urls(t))) for t in tiers], dtype=np.int64),
                        tensor_parallel=np.array([tier_tensor_parallel(t) for t in tiers], dtype=np.int64),
                        max_batch=np.array([tier_slots(t) for t in tiers], dtype=np.int64))
    n_prompt = np.rint(grid.n_prompt_tokens).astype(np.int64)
    n_out = np.rint(grid.n_output_tokens).astype(np.int64)
    n_draft = np.rint(grid.n_draft_tokens).astype(np.int64) if grid.n_draft_tokens is not None else np.zeros_like(n_out)
    n_accepted = np.rint(grid.n_accepted).astype(np.int64) if grid.n_accepted is not None else np.zeros_like(n_out)
    arrival_ms = np.asarray(view_arrivals(bundle_path, view), dtype=np.float64) * 1e3
    cont = dict(n_prompt_cont=n_prompt + n_draft, n_decode_cont=np.maximum(n_out - n_accepted, 0),
                n_kv_cont=n_prompt + n_accepted)  # as the cost model's closed form (job.des_latency)
    result = simulate(walk.start, walk.stop, n_prompt, n_out, arrival_ms=arrival_ms, pools=pools, **cont)
    # The baseline a simulator without queueing would give: every request alone on the ladder.
    spaced = np.arange(view.n_requests, dtype=np.float64) * (1e3 * float(result.e2e_ms.max(initial=0.0)) + 1e6)
    alone = simulate(walk.start, walk.stop, n_prompt, n_out, arrival_ms=spaced, pools=pools, **cont)
    # Diagnostic: the same queues fed each request's own recorded server time (a one-iteration
    # "request" of busy_ms prefill tokens at 1 ms each), so the DES's queueing is tested apart
    # from the latency model's spread. Tiers a request did not run cost nothing there.
    busy = np.rint(np.nan_to_num(np.asarray(view.e2e_ms, dtype=np.float64))).astype(np.int64)
    unit = Pools.build(np.tile([0.0, 1.0, 0.0, 0.0], (len(tiers), 1)), replicas=pools.replicas,
                       tensor_parallel=pools.tensor_parallel, max_batch=pools.max_batch)
    ones = np.ones_like(busy)
    recorded = simulate(walk.start, walk.stop, busy, ones, arrival_ms=arrival_ms, pools=unit,
                        n_prompt_cont=busy, n_decode_cont=ones)
    rows = np.arange(view.n_requests)
    quality = np.asarray(view.quality, dtype=np.float64)[rows, walk.stop]
    stops = np.bincount(walk.stop, minlength=len(tiers))
    return {
        "latency_ms": latency_stats(result.e2e_ms),
        "quality": float(np.nanmean(quality)) if np.isfinite(quality).any() else None,
        # a simulated stop where the live run recorded no answer (a fallback, an error) has no label
        "quality_requests": int(np.isfinite(quality).sum()),
        "stop_fractions": {t["name"]: float(stops[i] / max(1, view.n_requests)) for i, t in enumerate(tiers)},
        "gpu_s": float(result.gpu_s.sum()),
        "no_queueing_latency_ms": latency_stats(alone.e2e_ms),
        "recorded_service_latency_ms": latency_stats(recorded.e2e_ms),
        "stop_tiers": walk.stop,
        "request_ids": view.request_ids,
        "latency_model": {"note": fit_note, "iteration_coefficients_ms": coeffs.tolist()},
        "pools": {"replicas": pools.replicas.tolist(), "max_batch": pools.max_batch.tolist()},
    }


def fit_server_latency(view, fallback: np.ndarray, min_rows: int = 3) -> tuple[np.ndarray, str]:
    """Per tier, the iteration coefficients [c0, c1, c2, c3] (ms) whose request-alone latency
    best matches the server time each request took in the live run (`e2e_ms` of the recorded
    bundle: verification + generation, no queueing), by non-negative least squares:
        time ≈ c0·(1 + m) + c1·P + c2·m,   m = decode iterations after the first token, P = prefill tokens
    (c3 = 0: attention over a few hundred tokens is nothing next to the weights on these models).
    Least squares matches the mean server time, which sets how fast a queue drains; the
    `trace` cost model's robust TTFT/TPOT fit matches the median instead. A tier with fewer
    than `min_rows` timed requests keeps `fallback`'s row."""
    from scipy.optimize import nnls

    coeffs = np.array(fallback, dtype=np.float64, copy=True)
    drafts = np.nan_to_num(np.asarray(view.draft_n_tokens, dtype=np.float64))
    accepted = np.nan_to_num(np.asarray(view.draft_n_accepted, dtype=np.float64))
    kept = []
    for i in range(view.n_tiers):
        busy, prompt, out = view.e2e_ms[:, i], view.n_prompt_tokens[:, i], view.n_output_tokens[:, i]
        rows = np.isfinite(busy) & np.isfinite(prompt) & np.isfinite(out)
        if rows.sum() < min_rows:
            kept.append(view.tier_names[i])
            continue
        m = np.maximum(out[rows] - accepted[rows, i] - 1.0, 0.0)
        design = np.stack([1.0 + m, prompt[rows] + drafts[rows, i], m], axis=1)
        c, _ = nnls(design, busy[rows])
        coeffs[i] = [c[0], c[1], c[2], 0.0]
    note = "per-tier NNLS of iteration coefficients on the live run's server times"
    if kept:
        note += f"; the trace cost model's for {', '.join(kept)} (fewer than {min_rows} timed requests)"
    return coeffs, note


def view_arrivals(bundle_path, view) -> np.ndarray:
    """Recorded arrival offsets (s) in the view's request order."""
    requests = B.open_bundle(bundle_path).to_pandas("requests").set_index("request_id")
    return requests.loc[list(view.request_ids), "arrival_s"].to_numpy(dtype=np.float64)


def relative_errors(measured: dict, simulated: dict) -> dict:
    """(simulated − measured) / measured per latency statistic."""
    out = {}
    for stat in STATS:
        m, s = measured["latency_ms"][stat], simulated["latency_ms"][stat]
        out[stat] = None if m in (None, 0) or s is None else (s - m) / m
    return out


def live(tiers_path, policy_path, prompts_path, *, rate=None, concurrency=None, out=None, seed: int = 0,
         limit: int | None = None, deadline_s: float = 3600.0, overwrite: bool = False, progress: bool = True,
         command: str | None = None) -> dict:
    """`asd live`: run, record, simulate, compare. Returns the dict the CLI prints and writes."""
    import tempfile

    from asd.engine.policy import Policy
    from asd.fsutil import scratch_dir
    from asd.live.features import features_for_policy
    from asd.live.prompts import load_prompts
    from asd.live.runner import build_runner, check_ladder, describe_unreachable
    from asd.live.tiers import load_ladder

    if (rate is None) == (concurrency is None):
        raise ConfigError("give exactly one of --rate R (open loop, Poisson) or --concurrency C (closed loop)")
    if concurrency is not None and concurrency < 1:
        raise ConfigError(f"--concurrency {concurrency}: must be >= 1")
    if out is not None:  # refused now, not after the run it would discard
        B.bundle_target(out, overwrite)
    ladder = load_ladder(tiers_path)
    tiers = ladder["tiers"]
    policy = Policy.load(policy_path)
    check_ladder([t["name"] for t in tiers], policy, [t.get("params_b") for t in tiers], files=(tiers_path, policy_path))
    features_for = features_for_policy(policy, tiers)
    prompts = load_prompts(prompts_path)
    if limit is not None:
        prompts = prompts.iloc[:limit].reset_index(drop=True)
    arrivals = poisson_arrivals(len(prompts), rate, seed) if rate is not None else None
    requests = [CascadeRequest(p, request_id=str(r), task=t if isinstance(t, str) else None)
                for r, p, t in zip(prompts["request_id"], prompts["prompt"], prompts["task"])]

    async def run():
        runner = build_runner(tiers, policy, features_for)
        try:
            # Every server must be there before the first arrival: a dead one would be waited
            # for at every arrival, and the run would measure a ladder other than the simulated one.
            unreachable = await runner.probe(PROBE_TIMEOUT_S)
            if unreachable:
                raise BackendError(f"{tiers_path}: {describe_unreachable(unreachable)}; no request was sent")
            with _progress_bar(progress, len(requests)) as advance:
                return await drive(runner, requests, arrivals_s=arrivals, concurrency=concurrency,
                                   deadline_s=deadline_s, on_done=advance)
        finally:
            await runner.aclose()

    started = time.time()
    outcomes = asyncio.run(run())
    wall_s = time.time() - started
    names = [t["name"] for t in tiers]
    measured = measured_summary(outcomes, names, prompts)
    run_info = {"rate": rate, "concurrency": concurrency, "seed": seed, "n_requests": len(prompts),
                "policy": str(policy_path), "lambda": policy.lam, "wall_s": wall_s, "command": command,
                "measured": measured,
                "requests": [{"request_id": o.request.request_id, "sent_s": o.sent_s,
                              "latency_ms": o.result.latency_ms if o.result else None,
                              "stopped_at_tier": o.result.stopped_at_tier if o.result else None,
                              "fallback": bool(o.result.fallback) if o.result else None, "error": o.error}
                             for o in outcomes]}
    answered = [o for o in outcomes if o.result is not None]
    if not answered:
        if interrupted(outcomes):
            raise Interrupted("interrupted before any request was answered; nothing written")
        raise AsdError(f"no request was answered ({outcomes[0].error if outcomes else 'no prompts'})")
    target = out if out is not None else scratch_dir(tempfile.gettempdir(), "asd-live-") / "bundle"
    answered_ids = {o.request.request_id for o in answered}
    recorded = prompts[prompts["request_id"].isin(answered_ids)].reset_index(drop=True)
    bundle_path = write_live_bundle(target, tiers, recorded, answered, run=run_info, overwrite=overwrite)
    simulated = simulate_live(bundle_path, policy, tiers)
    measured_stops = {o.request.request_id: o.result.stopped_at_tier for o in answered}
    same_stop = float(np.mean([measured_stops[rid] == int(s) for rid, s in
                               zip(simulated.pop("request_ids"), simulated.pop("stop_tiers"))]))
    no_queueing = {"latency_ms": simulated.pop("no_queueing_latency_ms")}
    recorded_service = {"latency_ms": simulated.pop("recorded_service_latency_ms")}
    warnings = []
    if interrupted(outcomes):
        warnings.append(f"interrupted: {len(answered)} of {len(outcomes)} requests answered before it; the bundle "
                        "and both columns hold those alone")
    if measured["fallbacks"]:
        warnings.append(f"{measured['fallbacks']} of {measured['answered']} answered requests fell back (a tier failed "
                        "or refused them): the simulated column walks the policy as if every tier answered, and a "
                        "tier the run got no answer from costs nothing there, so the columns differ for them by more "
                        "than the model's error")
    return {
        "n_requests": len(prompts), "rate": rate, "concurrency": concurrency,
        "measured": measured, "simulated": simulated,
        "rel_error": relative_errors(measured, simulated),
        "no_queueing": no_queueing, "no_queueing_rel_error": relative_errors(measured, no_queueing),
        "recorded_service": recorded_service, "recorded_service_rel_error": relative_errors(measured, recorded_service),
        "same_stop_tier": same_stop, "warnings": warnings, "interrupted": interrupted(outcomes),
        "bundle": str(bundle_path), "wall_s": round(wall_s, 1),
    }


class _progress_bar:
    """A rich progress bar over answered requests (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("live"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=Console(stderr=True))
        self.progress.__enter__()
        task = self.progress.add_task("live", total=self.total)
        return lambda: self.progress.advance(task)

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.__exit__(*exc)


def format_report(report: dict) -> str:
    """The terminal table of `asd live` (the --json file holds the same dict)."""
    m, s, e = report["measured"], report["simulated"], report["rel_error"]
    loop = f"rate {report['rate']} req/s (open loop)" if report["rate"] is not None else \
        f"concurrency {report['concurrency']} (closed loop)"
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = [f"asd live: {report['n_requests']} requests, {loop}, {report['wall_s']} s; bundle {report['bundle']}",
             f"  {'':<18}{'measured':>10}{'simulated':>11}{'rel. error':>12}"]
    for stat in STATS:
        lines.append(f"  {'latency ' + stat + ' ms':<18}{fmt(m['latency_ms'][stat], '.0f'):>10}"
                     f"{fmt(s['latency_ms'][stat], '.0f'):>11}{fmt(None if e[stat] is None else 100 * e[stat], '+.1f'):>11}%")
    q = report["no_queueing_rel_error"]
    lines.append(f"  {'(no queueing p50/p95)':<18}{'':>10}{fmt(report['no_queueing']['latency_ms']['p50'], '.0f'):>6}/"
                 f"{fmt(report['no_queueing']['latency_ms']['p95'], '.0f'):<5}{fmt(None if q['p50'] is None else 100 * q['p50'], '+.0f'):>6}/"
                 f"{fmt(None if q['p95'] is None else 100 * q['p95'], '+.0f')}%")
    q = report["recorded_service_rel_error"]
    lines.append(f"  {'(own server times)':<18}{'':>10}{fmt(report['recorded_service']['latency_ms']['p50'], '.0f'):>6}/"
                 f"{fmt(report['recorded_service']['latency_ms']['p95'], '.0f'):<5}{fmt(None if q['p50'] is None else 100 * q['p50'], '+.0f'):>6}/"
                 f"{fmt(None if q['p95'] is None else 100 * q['p95'], '+.0f')}%")
    lines.append(f"  {'quality':<18}{fmt(m['quality'], '.3f'):>10}{fmt(s['quality'], '.3f'):>11}")
    if m.get("quality_requests") != s.get("quality_requests"):
        lines.append(f"  {'':<18}(over {m['quality_requests']} measured and {s['quality_requests']} simulated requests: "
                     "a simulated stop at a tier the live run got no answer from has no label)")
    lines.append(f"  {'GPU-seconds':<18}{fmt(m['gpu_s'], '.1f'):>10}{fmt(s['gpu_s'], '.1f'):>11}")
    for name in m["stop_fractions"]:
        lines.append(f"  {'stop ' + name:<18}{fmt(m['stop_fractions'][name], '.2f'):>10}"
                     f"{fmt(s['stop_fractions'][name], '.2f'):>11}")
    lines.append(f"  same stop tier live and simulated: {100 * report['same_stop_tier']:.0f}% of requests; "
                 f"answered {m['answered']}, errors {m['errors']}, fallbacks {m['fallbacks']}")
    lines += [f"  warning: {w}" for w in report.get("warnings", [])]
    return "\n".join(lines)
