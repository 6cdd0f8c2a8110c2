"""asyncio replicas for the cascade runner and `asd serve`: one tier server (or one in-process
model) that generates and scores drafts without blocking the event loop.

`OpenAIReplica` speaks to one OpenAI-compatible server with `httpx.AsyncClient`, through the
same request bodies and response parsing as the blocking `openai` backend (`http.py`).
`ThreadedReplica` runs any blocking backend (llama.cpp in-process, vLLM offline) in a worker
thread, one call at a time. Neither retries: the tier pool retries across replicas.
"""

from __future__ import annotations

import asyncio
import json
import time

from asd.errors import BackendError
from asd.live.backends.base import Backend, Generation, Score
from asd.live.backends.http import (
    RETRY_STATUS,
    StreamedCompletion,
    check_echo_alignment,
    completion_payload,
    echo_payload,
    echo_slice,
    score_from_echo,
)


class ReplicaError(BackendError):
    """A replica call failed; `retryable` when another try (here or on another replica) may
    succeed: the server is unreachable, timed out, cut the stream or answered 408/429/5xx."""

    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


class OpenAIReplica:
    """One OpenAI-compatible server of a tier. Tier options as the `openai` backend:
    `model`/`served_model`, `api_key`, `timeout_s`, `score_prefix`, `stop`."""

    def __init__(self, tier: dict, url: str):
        try:
            import httpx
        except ImportError:
            raise BackendError(f"tier {tier.get('name')!r}: backend openai needs httpx (pip install 'asd[live]')") from None

        self.tier = tier
        base = str(url).rstrip("/")
        self.url = base[: -len("/v1")] if base.endswith("/v1") else base
        headers = {"Authorization": f"Bearer {tier['api_key']}"} if tier.get("api_key") else {}
        timeout = float(tier.get("timeout_s", 60))
        # No pooled-connection reuse limit beyond the tier's own concurrency: the pool bounds calls.
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)), headers=headers)
        self._httpx = httpx
        self.model = tier.get("served_model")
        self.score_prefix = str(tier.get("score_prefix") or "")
        self._aligned = False
        self._tokenize_route: str | None = None
        stop = tier.get("stop") or []
        self.stop = [stop] if isinstance(stop, str) else list(stop)

    async def _post(self, path: str, payload: dict, stream: bool = False):
        url = f"{self.url}{path}"
        try:
            if stream:
                request = self.client.build_request("POST", url, json=payload)
                response = await self.client.send(request, stream=True)
            else:
                response = await self.client.post(url, json=payload)
        except (self._httpx.TransportError, self._httpx.TimeoutException) as exc:
            raise ReplicaError(f"{url}: {_describe(exc)}", retryable=True) from None
        if response.status_code >= 400:
            body = (await response.aread()).decode("utf-8", errors="replace")
            await response.aclose()
            raise ReplicaError(f"{url}: HTTP {response.status_code} ({_first_line(body)})",
                               retryable=response.status_code in RETRY_STATUS)
        return response

    async def served_model(self) -> str | None:
        if self.model is None:
            url = f"{self.url}/v1/models"
            try:
                response = await self.client.get(url)
            except (self._httpx.TransportError, self._httpx.TimeoutException) as exc:
                raise ReplicaError(f"{url}: {_describe(exc)}", retryable=True) from None
            self._take_model(response)
        return self.model

    def _take_model(self, response) -> None:
        """The model to ask for, from a /v1/models answer: the configured one when served,
        else the first served (else the configured name as it is)."""
        try:
            models = [m["id"] for m in response.json().get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            models = []
        configured = self.tier.get("model")
        self.model = str(configured) if configured and str(configured) in models else (models[0] if models else configured)

    async def probe(self, timeout_s: float) -> str | None:
        """Is the server there? `GET /v1/models` (as `asd record` asks first) within
        `timeout_s`: None when it answers (its served model is then known), else what went
        wrong, starting with the URL asked."""
        url = f"{self.url}/v1/models"
        try:
            response = await self.client.get(url, timeout=self._httpx.Timeout(timeout_s))
        except (self._httpx.TransportError, self._httpx.TimeoutException) as exc:
            return f"{url}: {_describe(exc)}"
        if response.status_code >= 400:
            return f"{url}: HTTP {response.status_code} ({_first_line(response.text)})"
        if self.model is None:
            self._take_model(response)
        return None

    async def generate(self, prompt: str, max_tokens: int, temperature: float = 0.0, top_logprobs: int = 5) -> Generation:
        payload = completion_payload(await self.served_model(), prompt, int(max_tokens), float(temperature),
                                     int(top_logprobs), self.stop)
        where = f"{self.url}/v1/completions"
        stream = StreamedCompletion(where)
        response = await self._post("/v1/completions", payload, stream=True)
        try:
            async for line in response.aiter_lines():
                line = line.strip()
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    break
                try:
                    stream.add(json.loads(data))
                except json.JSONDecodeError:
                    raise ReplicaError(f"{where}: malformed stream event {data[:80]!r}", retryable=False) from None
        except (self._httpx.TransportError, self._httpx.TimeoutException) as exc:
            raise ReplicaError(f"{where}: stream broke ({_describe(exc)})", retryable=True) from None
        finally:
            await response.aclose()
        try:
            generation = stream.generation(None)
        except BackendError as exc:  # no finish_reason: the server cut the stream
            raise ReplicaError(str(exc), retryable=True) from None
        usage = stream.usage or {}
        generation.n_prompt_tokens = usage.get("prompt_tokens") or await self._count_tokens(prompt)
        return generation

    async def _count_tokens(self, prompt: str) -> int | None:
        """Prompt length when the stream carried no usage (llama-cpp-python's server ignores
        `stream_options`): its /extras/tokenize route, or vLLM's /tokenize."""
        routes = [self._tokenize_route] if self._tokenize_route else ["/extras/tokenize", "/tokenize"]
        for route in routes:
            body = {"input": prompt} if route == "/extras/tokenize" else {"prompt": prompt, "model": self.model}
            try:
                response = await self.client.post(f"{self.url}{route}", json=body)
                data = response.json() if response.status_code == 200 else {}
            except (self._httpx.HTTPError, ValueError):
                continue
            count = len(data["tokens"]) if isinstance(data.get("tokens"), list) else data.get("count")
            if isinstance(count, int):
                self._tokenize_route = route
                return count
        return None

    async def score(self, prompt: str, continuation: str, top_logprobs: int = 5) -> Score:
        if not continuation:
            return Score([], [], 0.0)
        if not self._aligned:
            await self._check_alignment(prompt + continuation)
        start = time.perf_counter()
        tokens, logprobs, tops = await self._echo(self.score_prefix + prompt + continuation, len(continuation),
                                                  max(1, top_logprobs))
        return score_from_echo(tokens, logprobs, tops, (time.perf_counter() - start) * 1e3)

    async def _echo(self, text: str, n_chars: int, k: int):
        response = await self._post("/v1/completions", echo_payload(await self.served_model(), text, k))
        try:
            data = response.json()
        except ValueError:
            raise ReplicaError(f"{self.url}/v1/completions: echo answer is not JSON", retryable=False) from None
        return echo_slice(data, n_chars, f"{self.url}/v1/completions")

    async def _check_alignment(self, text: str) -> None:
        """Once per replica: echoed logprobs must equal generated ones (see the `openai` backend)."""
        probe = self.score_prefix + text
        generated = await self.generate(probe, 4, 0.0, 1)
        if not generated.text or not generated.token_logprobs:
            return
        _, echoed, _ = await self._echo(probe + generated.text, len(generated.text), 1)
        self._aligned = check_echo_alignment(self.url, generated, echoed)

    async def aclose(self) -> None:
        await self.client.aclose()


class ThreadedReplica:
    """A blocking backend (one model in this process) behind a lock, called in a worker thread."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.url = f"in-process:{backend.name}:{backend.tier.get('model')}"
        self._lock = asyncio.Lock()

    async def generate(self, prompt: str, max_tokens: int, temperature: float = 0.0, top_logprobs: int = 5) -> Generation:
        async with self._lock:
            return (await asyncio.to_thread(self.backend.generate, [prompt], max_tokens, temperature, top_logprobs))[0]

    async def score(self, prompt: str, continuation: str, top_logprobs: int = 5) -> Score:
        async with self._lock:
            return await asyncio.to_thread(self.backend.score, prompt, continuation, top_logprobs)

    async def probe(self, timeout_s: float) -> str | None:
        """The model is loaded in this process: always there."""
        return None

    async def aclose(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self.backend.close)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0][:200] if text else "no body"
