"""The cascade runner: one request walks the tiers of a ladder through asyncio tier pools,
with the same Policy and the same feature code as the simulator (one decision path, two drivers).

Per request: stage 0 picks the start tier from the prompt (when the policy has a prompt stage);
each tier answers; the features of the request in the state it is really in (climbed from the
tier below, or started cold) give P(accept) and the stop decision. Continuing is speculative:
the next tier scores the previous tier's answer as a draft, keeps the longest prefix its greedy
choice agrees with, and generates the rest greedily from prompt + accepted prefix.

A tier that keeps failing (after the pool's retries) is a fallback, never a lost request: the
answer of the tier already computed is returned, or, when none is, the next tier is tried cold;
the result says which. Only when no tier can answer does `run` raise `CascadeError`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from asd.engine.policy import Policy
from asd.engine.tables import bin_index
from asd.errors import AsdError, BackendError, ConfigError, PolicyError
from asd.live.backends.aio import RequestRejected
from asd.live.backends.base import Generation, Score
from asd.live.pool import TierPool


class CascadeError(BackendError):
    """No tier of the ladder could answer the request."""


class Overloaded(AsdError):
    """The runner's queue is full; retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class CascadeRequest:
    prompt: str
    max_tokens: int | None = None  # None: each tier's sampling.max_tokens
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    task: str | None = None
    arrival_s: float | None = None  # offset from the start of a run (asd live)


@dataclass
class TierRun:
    """One tier's part in a request. `generation` is the tier's whole answer: the accepted
    prefix of the draft followed by what the tier generated after it."""

    tier: int
    name: str
    generation: Generation
    draft: Score | None  # the tier below's answer scored by this tier; None when run cold
    accepted_text: str
    replica: str
    verify_ms: float
    generate_ms: float
    queue_ms: float
    n_accepted: int = 0  # draft tokens kept (verifier tokens)
    gpus: int = 1
    p_accept: float | None = None
    stop: bool | None = None

    @property
    def latency_ms(self) -> float:
        """Time this tier's calls took (queueing included), as the request saw it."""
        return self.verify_ms + self.generate_ms + self.queue_ms

    @property
    def busy_ms(self) -> float:
        """Time the tier's server worked on this request (no queueing): the GPU-time basis."""
        return self.verify_ms + self.generate_ms


@dataclass
class RequestState:
    """What is known about a request so far; the feature function reads it."""

    request: CascadeRequest
    n_tiers: int
    start_tier: int = 0
    runs: list[TierRun] = field(default_factory=list)

    @property
    def last(self) -> TierRun | None:
        return self.runs[-1] if self.runs else None

    def run_at(self, tier: int) -> TierRun | None:
        for run in self.runs:
            if run.tier == tier:
                return run
        return None

    @property
    def climbed(self) -> bool:
        """The last tier continued from the tier below (False: it started there cold)."""
        last = self.last
        return last is not None and (last.tier == 0 or self.run_at(last.tier - 1) is not None)

    def outputs(self) -> list[TierRun | None]:
        """Per tier (L long), the run or None where the tier did not answer."""
        by_tier = {run.tier: run for run in self.runs}
        return [by_tier.get(i) for i in range(self.n_tiers)]


# The feature function: the request's features at its current stage — prompt features before
# any tier answered (stage 0), else the features after its last tier, for the state it is in
# (climbed or cold). A 1-d float64 array of the policy's feature width.
FeaturesFor = Callable[[RequestState], np.ndarray]


@dataclass
class CascadeResult:
    request_id: str
    text: str
    finish_reason: str | None
    stopped_at_tier: int
    tier_name: str
    start_tier: int
    runs: list[TierRun]
    fallback: list[dict] | None
    latency_ms: float
    stop_bin: int | None
    n_prompt_tokens: int | None
    stop_cold: bool = False  # the answering tier was where the request started cold (tiers skipped)
    n_completion_tokens: int | None = None  # the returned answer's tokens, where a stop string cut it
    failed_tiers: list[int] = field(default_factory=list)  # tier failures the answer absorbed, in order

    @property
    def gpu_ms(self) -> float:
        """Server time × GPUs of every tier the request ran at (queueing excluded)."""
        return sum(run.busy_ms * run.gpus for run in self.runs)

    def tier_probabilities(self) -> dict[str, float | None]:
        return {run.name: run.p_accept for run in self.runs}


class CascadeRunner:
    """Runs requests through the tier pools with a Policy and a feature function.

    `max_in_flight`: requests admitted at once (running or queued at a tier); beyond it `admit`
    raises `Overloaded`. `speculative=False` regenerates at each tier instead of continuing.
    """

    def __init__(self, pools: list[TierPool], policy: Policy, features_for: FeaturesFor, *,
                 speculative: bool = True, max_in_flight: int = 256, request_timeout_s: float = 300.0,
                 remember: int = 100_000):
        check_ladder([p.name for p in pools], policy)
        self.pools = pools
        self.policy = policy
        self.features_for = features_for
        self.speculative = speculative
        self.max_in_flight = int(max_in_flight)
        self.request_timeout_s = float(request_timeout_s)
        self.in_flight = 0
        self.completed = 0
        self.failed = 0
        self.rejected = 0  # requests refused by a tier for what they ask (RequestRejected)
        self.stops = [0] * len(pools)
        self.fallbacks = 0
        self._latency_ewma_ms = 0.0
        self._recent: OrderedDict[str, tuple[int, int, bool]] = OrderedDict()  # request id → (tier, bin, cold)
        self._verdicts: dict[str, bool] = {}  # request id (of _recent) → the feedback counted for it
        self._remember = int(remember)
        self.observers: list[Callable[[str, dict], None]] = []
        self._probe_lock = asyncio.Lock()
        self._probed_at: float | None = None
        self._unreachable: dict[str, list[str]] = {}

    @property
    def n_tiers(self) -> int:
        return len(self.pools)

    # -- admission -------------------------------------------------------------------------------
    def admit(self) -> None:
        """Take a place for one request, or raise `Overloaded` (the caller answers 429)."""
        if self.in_flight >= self.max_in_flight:
            self._notify("overloaded", {})
            retry = max(1, int(round(self._latency_ewma_ms / 1e3 * self.in_flight / max(1, self._capacity()))))
            raise Overloaded(f"{self.in_flight} requests in flight (limit {self.max_in_flight})", retry)
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    def _capacity(self) -> int:
        return min(p.limit for p in self.pools)

    # -- one request -----------------------------------------------------------------------------
    async def run(self, request: CascadeRequest) -> CascadeResult:
        """Walk the tiers for one (already admitted) request; bounded by `request_timeout_s`."""
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(self._walk(request, started), self.request_timeout_s)
        except asyncio.TimeoutError:
            self.failed += 1
            self._notify("error", {"kind": "timeout"})
            raise CascadeError(f"request {request.request_id}: no answer within {self.request_timeout_s:g} s") from None
        except CascadeError:
            self.failed += 1
            self._notify("error", {"kind": "no_tier"})
            raise
        except RequestRejected as exc:
            self.rejected += 1
            self._notify("error", {"kind": exc.code})
            raise
        self.completed += 1
        self.stops[result.stopped_at_tier] += 1
        self.fallbacks += bool(result.fallback)
        for tier in result.failed_tiers:  # absorbed: only now, when an answer came (not for a 503)
            self._notify("fallback", {"tier": tier})
        self._latency_ewma_ms += 0.1 * (result.latency_ms - self._latency_ewma_ms)
        if result.stop_bin is not None:
            self._recent[result.request_id] = (result.stopped_at_tier, result.stop_bin, result.stop_cold)
            while len(self._recent) > self._remember:
                self._verdicts.pop(self._recent.popitem(last=False)[0], None)
        self._notify("done", {"result": result})
        return result

    async def _walk(self, request: CascadeRequest, started: float) -> CascadeResult:
        state = RequestState(request, self.n_tiers)
        fallback: list[dict] = []
        state.start_tier = tier = self._start_tier(state, fallback)
        failed: set[int] = set()
        failed_tiers: list[int] = []
        while True:
            try:
                run = await self._run_tier(state, tier)
            except RequestRejected as exc:
                # The request does not fit this tier (its prompt, or prompt + draft, is longer
                # than the context): the client is told, unless a tier below already answered.
                if not state.runs:
                    raise
                fallback.append({"tier": self.pools[tier].name, "error": str(exc),
                                 "action": self._fall_back(state, None)})
                failed_tiers.append(tier)
                break
            except BackendError as exc:
                failed.add(tier)
                untried = self._untried(state, failed, tier)
                fallback.append({"tier": self.pools[tier].name, "error": str(exc),
                                 "action": self._fall_back(state, untried)})
                failed_tiers.append(tier)
                if state.runs:
                    break  # answer from the tier already computed
                if untried is not None:
                    tier = untried  # nothing computed yet: the next tier up (else below), cold
                    continue
                failures = "; ".join(f"tier {f['tier']!r}: {f['error']}" for f in fallback)  # each tier tried
                raise CascadeError(f"request {request.request_id}: no tier could answer ({failures})") from None
            state.runs.append(run)
            self._notify("tier", {"tier": tier, "run": run})
            try:
                # p̂ after every tier, the last too: it is reported and bins feedback on the answer.
                x = np.ascontiguousarray(self.features_for(state), dtype=np.float64)
                run.p_accept = self.policy.predict(tier, x)
                if tier == self.n_tiers - 1:
                    break
                run.stop = self.policy.decide(tier, x, cold=not state.climbed)
            except PolicyError as exc:
                # Features the policy cannot read: keep this answer and say so.
                fallback.append({"tier": self.pools[tier].name, "error": f"policy: {exc}",
                                 "action": f"answered from {self.pools[tier].name}"})
                break
            if run.stop:
                break
            tier += 1
        final = state.last
        stop_cold = not state.climbed
        stop_bin = None
        if final.p_accept is not None:
            stop_bin = int(bin_index(np.array([final.p_accept]), self.policy.tables.edges[final.tier])[0])
        # usage describes the model that answered (OpenAI's convention): its own prompt count,
        # not tier 0's, which another tokenizer and chat template made; unknown there: tier 0's
        answered = final.generation.n_prompt_tokens
        first = state.runs[0].generation
        return CascadeResult(
            request_id=request.request_id,
            text=final.generation.text,
            finish_reason=final.generation.finish_reason,
            stopped_at_tier=final.tier,
            tier_name=final.name,
            start_tier=state.start_tier,
            runs=list(state.runs),
            fallback=fallback or None,
            latency_ms=(time.perf_counter() - started) * 1e3,
            stop_bin=stop_bin,
            n_prompt_tokens=answered if answered is not None else first.n_prompt_tokens,
            stop_cold=stop_cold,
            failed_tiers=failed_tiers,
        )

    def _untried(self, state: RequestState, failed: set[int], tier: int) -> int | None:
        """Where a request with no answer yet goes after `tier` failed: the next tier up, else
        the nearest tier below that stage 0 skipped; None when every tier has failed."""
        above = [t for t in range(tier + 1, self.n_tiers) if t not in failed]
        below = [t for t in range(tier - 1, -1, -1) if t not in failed]
        return (above or below or [None])[0]

    def _fall_back(self, state: RequestState, untried: int | None) -> str:
        if state.runs:
            return f"answered from {state.last.name}"
        if untried is not None:
            return f"skipped to {self.pools[untried].name}"
        return "no tier left"

    def _start_tier(self, state: RequestState, fallback: list[dict]) -> int:
        if not self.policy.predictor.has_prompt:
            return 0
        try:
            return self.policy.start(np.ascontiguousarray(self.features_for(state), dtype=np.float64))
        except PolicyError as exc:
            fallback.append({"tier": self.pools[0].name, "error": f"policy: {exc}", "action": "started at tier 0"})
            return 0

    async def _run_tier(self, state: RequestState, tier: int) -> TierRun:
        pool = self.pools[tier]
        prompt = pool.format_prompt(state.request.prompt)
        max_tokens = int(state.request.max_tokens or pool.max_tokens)
        below = state.last if state.last is not None and state.last.tier == tier - 1 else None
        draft, accepted, n_accepted, verify_ms, queue_ms, replica = None, "", 0, 0.0, 0.0, ""
        if self.speculative and pool.speculative and below is not None and below.generation.text:
            text = pool.as_draft(below.generation.text)
            t0 = time.perf_counter()
            draft, replica, queue_ms = await pool.score(prompt, text)
            verify_ms = (time.perf_counter() - t0) * 1e3 - queue_ms
            n_accepted = min(draft.n_accepted, max_tokens)
            accepted = accepted_prefix(text, draft, n_accepted)
        generation, generate_ms = None, 0.0
        if max_tokens - n_accepted > 0:
            t0 = time.perf_counter()
            generation, replica, waited = await pool.generate(prompt + accepted, max_tokens - n_accepted)
            generate_ms = (time.perf_counter() - t0) * 1e3 - waited
            queue_ms += waited
        return TierRun(
            tier=tier, name=pool.name,
            generation=continued_generation(accepted, draft, n_accepted, generation, verify_ms),
            draft=draft, accepted_text=accepted, replica=replica,
            verify_ms=verify_ms, generate_ms=generate_ms, queue_ms=queue_ms, n_accepted=n_accepted, gpus=pool.gpus,
        )

    # -- tier servers ----------------------------------------------------------------------------
    async def probe(self, timeout_s: float = 2.0, max_age_s: float = 0.0) -> dict[str, list[str]]:
        """Ask every tier's servers whether they are there (`TierPool.probe`, all tiers at once);
        → tier name → what is wrong with each replica that is not (tiers all there are left out).
        A probe younger than `max_age_s` is answered from memory (as is a replica that answered
        a call that recently), and callers that arrive while one is under way wait for it
        rather than start another."""
        async with self._probe_lock:
            if self._probed_at is not None and time.monotonic() - self._probed_at < max_age_s:
                return dict(self._unreachable)
            found = await asyncio.gather(*(pool.probe(timeout_s, fresh_s=max_age_s) for pool in self.pools))
            self._unreachable = {pool.name: problems for pool, problems in zip(self.pools, found) if problems}
            self._probed_at = time.monotonic()
            return dict(self._unreachable)

    # -- feedback and observers ------------------------------------------------------------------
    def stop_of(self, request_id: str) -> tuple[int, int, bool] | None:
        """(stopped tier, p̂ bin, cold state) of a recent request, for feedback."""
        return self._recent.get(request_id)

    def verdict_of(self, request_id: str) -> bool | None:
        """The feedback already counted for a recent request (None: none yet): a request's
        verdict counts once, and is forgotten with the request."""
        return self._verdicts.get(request_id)

    def note_verdict(self, request_id: str, accepted: bool) -> None:
        if request_id in self._recent:
            self._verdicts[request_id] = bool(accepted)

    def _notify(self, event: str, payload: dict) -> None:
        for observer in self.observers:
            observer(event, payload)

    def stats(self) -> dict:
        return {
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "completed": self.completed,
            "failed": self.failed,
            "rejected": self.rejected,
            "fallbacks": self.fallbacks,
            "stops": {p.name: n for p, n in zip(self.pools, self.stops)},
            "lambda": self.policy.lam,
            "speculative": self.speculative,
            "tiers": [p.stats() for p in self.pools],
        }

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()


def accepted_prefix(draft_text: str, score: Score, n_accepted: int) -> str:
    """The draft's text covered by the verifier's first `n_accepted` tokens. Echo scoring may
    return a first token that reaches back into the prompt; that overlap is not draft text."""
    if n_accepted <= 0:
        return ""
    covered = "".join(score.tokens)
    overlap = max(0, len(covered) - len(draft_text))
    keep = len("".join(score.tokens[:n_accepted])) - overlap
    return draft_text[: max(0, keep)]


def continued_generation(accepted: str, draft: Score | None, n_accepted: int, generated: Generation | None,
                         verify_ms: float) -> Generation:
    """One tier's answer from its accepted draft prefix and what it generated after it: the
    prefix's tokens and logprobs are the verifier's own (from scoring)."""
    if generated is None:
        generated = Generation("", [], [], [], 0, 0, None, 0.0, finish_reason="length")
    if n_accepted <= 0 or draft is None:
        return generated
    tops = draft.top_logprobs[:n_accepted] if draft.top_logprobs else [{}] * n_accepted
    gen_tops = generated.top_logprobs if generated.top_logprobs is not None else [{}] * len(generated.token_logprobs)
    n_prompt = generated.n_prompt_tokens - n_accepted if generated.n_prompt_tokens else None
    return Generation(
        text=accepted + generated.text,
        tokens=list(draft.tokens[:n_accepted]) + list(generated.tokens),
        token_logprobs=list(draft.token_logprobs[:n_accepted]) + list(generated.token_logprobs),
        top_logprobs=list(tops) + list(gen_tops),
        n_prompt_tokens=n_prompt,
        n_output_tokens=n_accepted + int(generated.n_output_tokens or 0),
        ttft_ms=verify_ms,  # the accepted prefix is there once the draft is verified
        e2e_ms=verify_ms + float(generated.e2e_ms or 0.0),
        finish_reason=generated.finish_reason,
    )


def describe_unreachable(unreachable: dict[str, list[str]]) -> str:
    """`CascadeRunner.probe`'s answer as one line: each tier not reachable and why, URL first."""
    return "; ".join(f"tier {name!r} not reachable ({', '.join(problems)})" for name, problems in unreachable.items())


def check_ladder(tier_names: list[str], policy: Policy, params_b: list | None = None, *,
                 files: tuple | None = None) -> None:
    """The tier config must be the ladder the policy was calibrated for (same tiers, in order;
    the parameter counts the config states, where the policy recorded them, as `asd check`).
    files: (tier config, policy file), named in the error."""
    where = "" if files is None else f"{files[0]} and {files[1]}: "
    if len(tier_names) != policy.n_tiers:
        raise ConfigError(f"{where}tier config has {len(tier_names)} tiers but the policy has {policy.n_tiers}")
    known = list(policy.tier_names)
    if known != list(tier_names) and not all(n.startswith("tier") for n in known):
        raise ConfigError(f"{where}tier config names {list(tier_names)} differ from the policy's tiers {known}")
    calibrated = policy.calibrated_params_b()
    for name, given, was in zip(tier_names, params_b or [], calibrated or []):
        if given is not None and was is not None and np.isfinite(was) and not np.isclose(given, was, rtol=1e-6):
            raise ConfigError(f"{where}tier config gives {name} params_b {given:g}, but the policy was calibrated "
                              f"on a {was:g}B {name}")


def build_runner(tiers: list[dict], policy: Policy, features_for: FeaturesFor, **options) -> CascadeRunner:
    """Pools for the ladder's tiers (as `asd.live.tiers.load_ladder` returns them) and the
    runner over them; call inside the event loop that will run it."""
    policy.warm_up()  # numba's compile is not the first request's latency
    return CascadeRunner([TierPool(i, tier) for i, tier in enumerate(tiers)], policy, features_for, **options)
