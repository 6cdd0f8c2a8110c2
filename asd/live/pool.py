"""A tier as the cascade runner sees it: a pool of replicas (several servers of the same model)
with least-outstanding-requests balancing, a concurrency limit, timeouts, and retries with
exponential backoff across replicas. A replica that fails is taken out for `cooldown_s` and then
probed again by the next call; when every replica of a tier is out, calls fail at once, so the
runner falls back without waiting on a dead server.

Tier options (beside the backend's own): `url` (one URL or a list: one replica each),
`concurrency` (calls in flight per replica, default 1: a llama.cpp server with one slot),
`timeout_s` (per call, 60), `retries` (2), `backoff_s` (0.2), `cooldown_s` (5), `speculative`
(true: continue from the tier below's draft; false: regenerate — for servers where scoring a
draft costs more than generating, such as llama-cpp-python's with a 262k-token vocabulary).
`sampling.top_logprobs: 0` asks the tier for no logprobs at all.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from asd.calibration.profiles import tier_tensor_parallel
from asd.errors import BackendError, ConfigError
from asd.live.backends.aio import OpenAIReplica, ReplicaError, RequestRejected, ThreadedReplica
from asd.live.backends.base import Backend, Generation, Score, make_backend


@dataclass
class Replica:
    client: OpenAIReplica | ThreadedReplica
    outstanding: int = 0
    down_until: float = 0.0
    calls: int = 0
    failures: int = 0
    # Is its server there? The last evidence: a probe (`TierPool.probe`), a call answered (True)
    # or a call failed (False); None before any. `problem`: what was wrong when False.
    reachable: bool | None = None
    problem: str | None = None
    answered_at: float | None = None  # time.monotonic() of the last call answered

    @property
    def healthy(self) -> bool:
        """Not cooling down after failures, and not last found unreachable (by a probe or a call)."""
        return self.down_until <= time.monotonic() and self.reachable is not False

    @property
    def url(self) -> str:
        return self.client.url


def replica_urls(tier: dict) -> list[str]:
    """`url` as one string or a list of strings → the replica URLs (in order)."""
    urls = tier.get("url")
    urls = [urls] if isinstance(urls, str) else list(urls or [])
    if not all(isinstance(u, str) and u for u in urls):
        raise ConfigError(f"tier {tier.get('name')!r}: `url` must be a URL or a list of URLs")
    return urls


class TierPool:
    """The replicas of one tier; `generate`/`score` pick a replica, bound concurrency, retry."""

    def __init__(self, index: int, tier: dict):
        self.index = index
        self.tier = tier
        self.name = str(tier["name"])
        self.sampling = tier.get("sampling") or {}
        self.max_tokens = int(self.sampling.get("max_tokens", 48))
        self.top_logprobs = int(self.sampling.get("top_logprobs", 5))
        self.gpus = tier_tensor_parallel(tier)  # as the cost model a recorded bundle of it gets
        self.speculative = bool(tier.get("speculative", True))
        self.retries = int(tier.get("retries", 2))
        self.backoff_s = float(tier.get("backoff_s", 0.2))
        self.cooldown_s = float(tier.get("cooldown_s", 5.0))
        self.timeout_s = float(tier.get("timeout_s", 60.0))
        per_replica = int(tier.get("concurrency", 1))
        if per_replica < 1:
            raise ConfigError(f"tier {self.name!r}: `concurrency` must be >= 1")
        if tier.get("backend") == "openai":
            urls = replica_urls(tier)
            if not urls:
                raise ConfigError(f"tier {self.name!r}: backend openai needs `url` (one URL or a list)")
            self.formatter = Backend(tier)
            self.replicas = [Replica(OpenAIReplica(tier, url)) for url in urls]
        else:
            backend = make_backend(tier)  # loads the model once, in this process
            self.formatter = backend
            self.replicas = [Replica(ThreadedReplica(backend))]
            per_replica = 1
        self.limit = per_replica * len(self.replicas)
        self._slots = asyncio.Semaphore(self.limit)
        self.waiting = 0  # calls queued for a slot
        self.running = 0

    def format_prompt(self, prompt: str) -> str:
        return self.formatter.format_prompt(prompt)

    def as_draft(self, text: str) -> str:
        """A verifier whose answers start with a space reads a draft without one as glued to its
        prompt; the tier's `draft_separator` goes between them (as in `asd record`)."""
        separator = self.tier.get("draft_separator") or ""
        if separator and text and not text[:1].isspace():
            return separator + text
        return text

    # -- calls ---------------------------------------------------------------------------------
    async def generate(self, prompt: str, max_tokens: int) -> tuple[Generation, str, float]:
        """(generation, replica URL, queue wait ms)."""
        return await self._call("generate", prompt, max_tokens, 0.0, self.top_logprobs)

    async def score(self, prompt: str, draft: str) -> tuple[Score, str, float]:
        return await self._call("score", prompt, draft, self.top_logprobs)

    async def _call(self, op: str, *args):
        last = "no replica tried"
        tried: set[int] = set()
        queued_ms = 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            t0 = time.perf_counter()
            self.waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self.waiting -= 1
            queued_ms += (time.perf_counter() - t0) * 1e3
            replica = self._pick(tried)
            if replica is None:
                self._slots.release()
                raise BackendError(f"tier {self.name!r}: every replica is down ({last})")
            replica.outstanding += 1
            replica.calls += 1
            self.running += 1
            try:
                result = await asyncio.wait_for(getattr(replica.client, op)(*args), self.timeout_s)
                replica.down_until = 0.0
                self._answered(replica)
                return result, replica.url, queued_ms
            except RequestRejected as exc:
                # The request's own fault (its prompt does not fit): the server answered, so the
                # replica stays up, and no other replica or retry would do better.
                self._answered(replica)
                exc.tier = self.name
                raise
            except ReplicaError as exc:
                last = str(exc)
                if not exc.retryable:
                    raise BackendError(f"tier {self.name!r}: {exc}") from None
                self._mark_down(replica, last)
            except asyncio.TimeoutError:
                last = f"{replica.url}: no answer within {self.timeout_s:g} s"
                self._mark_down(replica, last)
            finally:
                replica.outstanding -= 1
                self.running -= 1
                self._slots.release()
            tried.add(id(replica))
        raise BackendError(f"tier {self.name!r}: {op} failed after {self.retries + 1} tries ({last})")

    async def probe(self, timeout_s: float, fresh_s: float = 0.0) -> list[str]:
        """Ask the replicas' servers whether they are there (`GET /v1/models`, all at once, each
        within `timeout_s`; an in-process model always is); → what is wrong with each that is
        not, as `URL: reason`. A replica with calls in flight, or that answered one in the last
        `fresh_s`, is not asked: its calls say more, and a server that runs one request at a
        time (llama-cpp-python's) answers /v1/models only after the requests ahead of it, so
        a busy server would look dead. The answer is kept (`reachable`, shown by `stats`);
        routing is unchanged: a replica's own failed calls take it out, as before."""
        now = time.monotonic()
        asked = [r for r in self.replicas
                 if r.outstanding == 0 and (r.answered_at is None or now - r.answered_at >= fresh_s)]
        problems = await asyncio.gather(*(r.client.probe(timeout_s) for r in asked))
        for replica, problem in zip(asked, problems):
            replica.reachable, replica.problem = problem is None, problem
        return [r.problem or r.url for r in self.replicas if r.reachable is False]

    @property
    def healthy(self) -> bool:
        """Some replica is healthy (`Replica.healthy`): what `GET /health` reports per tier."""
        return any(r.healthy for r in self.replicas)

    @staticmethod
    def _answered(replica: Replica) -> None:
        replica.reachable, replica.problem, replica.answered_at = True, None, time.monotonic()

    def _mark_down(self, replica: Replica, problem: str) -> None:
        replica.failures += 1
        replica.down_until = time.monotonic() + self.cooldown_s
        replica.reachable, replica.problem = False, problem  # until a probe or a call says otherwise

    def _pick(self, tried: set[int]) -> Replica | None:
        """Least outstanding calls among replicas that are up, preferring ones not yet tried
        for this call; None when every replica is down."""
        now = time.monotonic()
        up = [r for r in self.replicas if r.down_until <= now]
        if not up:
            return None
        fresh = [r for r in up if id(r) not in tried] or up
        return min(fresh, key=lambda r: r.outstanding)

    def stats(self) -> dict:
        now = time.monotonic()
        return {
            "tier": self.name,
            "limit": self.limit,
            "running": self.running,
            "waiting": self.waiting,
            "replicas": [{"url": r.url, "outstanding": r.outstanding, "calls": r.calls, "failures": r.failures,
                          "up": r.down_until <= now, "reachable": r.reachable, "problem": r.problem}
                         for r in self.replicas],
        }

    async def aclose(self) -> None:
        for replica in self.replicas:
            await replica.client.aclose()
