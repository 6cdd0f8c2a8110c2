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
import re
import time

from asd.errors import BackendError, ConfigError
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


class RequestRejected(ReplicaError):
    """The server refused this request for what it asks, not for what the server is: the prompt
    (with the tokens asked for) does not fit the model's context. Never retried, the replica is
    not marked down (it answered), and the client is told (400 context_length_exceeded).
    `n_ctx`: the model's context in tokens where the server said it; `tier`: set by the pool."""

    def __init__(self, message: str, *, code: str = "context_length_exceeded", detail: str = "",
                 n_ctx: int | None = None, status: int = 400):
        super().__init__(message, retryable=False)
        self.code, self.detail, self.n_ctx, self.status = code, detail, n_ctx, status
        self.tier: str | None = None


# How servers word a prompt longer than the context: llama-cpp-python and vLLM ("maximum context
# length is N tokens"), llama.cpp's Llama ("exceed context window of N"), llama.cpp's llama-server
# (type exceed_context_size_error, n_ctx in the body).
_LLAMA_CONTEXT = r"exceed context window of (\d+)"  # also what in-process llama.cpp raises
_CONTEXT_PATTERNS = (r"maximum context length is (\d+)", _LLAMA_CONTEXT, r"exceeds? the available context size")


def context_overflow(status: int, body: str) -> RequestRejected | None:
    """A RequestRejected when an HTTP error answer (status, body) says the prompt does not fit
    the model's context, else None."""
    if status not in (400, 413, 422):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    error = error if isinstance(error, dict) else (data if isinstance(data, dict) else {})
    message = str(error.get("message") or error.get("detail") or body or "")
    code, type_ = str(error.get("code") or ""), str(error.get("type") or "")
    matches = [re.search(p, message, re.IGNORECASE) for p in _CONTEXT_PATTERNS]
    if code != "context_length_exceeded" and type_ != "exceed_context_size_error" and not any(matches):
        return None
    n_ctx = error.get("n_ctx") if isinstance(error.get("n_ctx"), int) else None
    for match in matches:
        if n_ctx is None and match is not None and match.groups():
            n_ctx = int(match.group(1))
    return RequestRejected(message, detail=_first_line(message), n_ctx=n_ctx, status=status)


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
        n_ctx = tier.get("n_ctx")
        if n_ctx is not None and (isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1):
            raise ConfigError(f"tier {tier.get('name')!r}: `n_ctx` (the server's context in tokens) must be a "
                              f"whole number >= 1, not {n_ctx!r}")
        self._n_ctx: int | None = n_ctx
        self._n_ctx_asked = n_ctx is not None

    async def _post(self, path: str, payload: dict, stream: bool = False):
        url = f"{self.url}{path}"
        try:
            response = await self._send("POST", url, payload=payload, stream=stream)
        except self._httpx.RemoteProtocolError:
            if stream:
                return None  # the server hung up before answering: `generate` asks it why
            raise ReplicaError(f"{url}: the server hung up without answering", retryable=True) from None
        except (self._httpx.TransportError, self._httpx.TimeoutException) as exc:
            raise ReplicaError(f"{url}: {_describe(exc)}", retryable=True) from None
        if response.status_code >= 400:
            body = (await response.aread()).decode("utf-8", errors="replace")
            await response.aclose()
            overflow = context_overflow(response.status_code, body)
            if overflow is not None:
                overflow.args = (f"{url}: HTTP {response.status_code} ({overflow.detail})",)
                raise overflow
            # Another 4xx is not retried either (and does not take the replica out: see the pool).
            raise ReplicaError(f"{url}: HTTP {response.status_code} ({_first_line(body)})",
                               retryable=response.status_code in RETRY_STATUS)
        return response

    async def _send(self, method: str, url: str, *, payload: dict | None = None, stream: bool = False, **options):
        """One HTTP call, asked again once on a new connection when the one taken from the pool
        breaks before any answer: a server that hangs up on one request (llama-cpp-python's, on a
        prompt longer than its context) drops its idle keep-alive connections too, and the next
        call to reuse one took a healthy replica out (or reported it unreachable). A server that
        is down refuses the connect: not asked again here (the pool's retries deal with it)."""
        request = self.client.build_request(method, url, json=payload, **options)
        for again in (False, True):
            try:
                return await self.client.send(request, stream=stream)
            except (self._httpx.ReadError, self._httpx.WriteError, self._httpx.RemoteProtocolError):
                if again:
                    raise

    async def served_model(self) -> str | None:
        if self.model is None:
            url = f"{self.url}/v1/models"
            try:
                response = await self._send("GET", url)
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
            response = await self._send("GET", url, timeout=self._httpx.Timeout(timeout_s))
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
        if response is None:
            raise await self._diagnose_cut(prompt, int(max_tokens), where)
        events = 0
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
                    events += 1
                except json.JSONDecodeError:
                    raise ReplicaError(f"{where}: malformed stream event {data[:80]!r}", retryable=False) from None
        except (self._httpx.TransportError, self._httpx.TimeoutException) as exc:
            if events or isinstance(exc, self._httpx.TimeoutException):  # else: asked again below
                raise ReplicaError(f"{where}: stream broke ({_describe(exc)})", retryable=True) from None
        finally:
            await response.aclose()
        if stream.finish is None and events == 0:
            # Cut before the first event: llama-cpp-python's server hangs up (or ends the stream)
            # when the prompt does not fit its context, and says nothing more (its error handler
            # fails too). A server that cannot answer at all is a replica failure; one that
            # answers (it tokenizes the prompt) and refused this prompt is the request's fault.
            raise await self._diagnose_cut(prompt, int(max_tokens), where)
        try:
            generation = stream.generation(None)
        except BackendError as exc:  # no finish_reason: the server cut the stream
            raise ReplicaError(str(exc), retryable=True) from None
        usage = stream.usage or {}
        generation.n_prompt_tokens = usage.get("prompt_tokens") or await self._count_tokens(prompt)
        return generation

    async def _diagnose_cut(self, prompt: str, max_tokens: int, where: str) -> ReplicaError:
        """Why a stream was cut before its first event, as the error to raise: RequestRejected
        when the prompt + `max_tokens` exceed the server's context (the tier's `n_ctx`, else
        what the server reports), or — context unknown — when the server answers right after
        (it tokenizes this prompt); else a retryable ReplicaError (the server is failing)."""
        cut = ReplicaError(f"{where}: the server cut the stream before any token (it may interrupt concurrent "
                           "requests: llama.cpp: start it with --interrupt_requests false, or set concurrency: 1)",
                           retryable=True)
        n_prompt = await self._count_tokens(prompt)
        if n_prompt is None:
            return cut
        n_ctx = await self.context_size()
        needed = n_prompt + max_tokens
        if n_ctx is not None:
            if needed <= n_ctx:
                return cut
            detail = (f"{n_prompt} prompt tokens + {max_tokens} to generate = {needed}, more than the context "
                      f"of {n_ctx}")
        else:
            detail = (f"the server refused this {n_prompt}-token prompt (+ {max_tokens} to generate) and answers "
                      "other requests: longer than its context (which it does not report)")
        return RequestRejected(f"{where}: {detail}", detail=detail, n_ctx=n_ctx)

    async def context_size(self) -> int | None:
        """The model's context in tokens: `n_ctx` of the tier dict (not a config key: a ladder
        built in code, as the tests do, may give it), else what the server says (vLLM's
        /v1/models max_model_len, llama.cpp's /props n_ctx), asked once; None when unknown
        (llama-cpp-python's server does not say)."""
        if not self._n_ctx_asked:
            self._n_ctx_asked = True
            for path, read in (("/v1/models", _max_model_len), ("/props", _props_n_ctx)):
                try:
                    response = await self._send("GET", f"{self.url}{path}")
                    found = read(response.json()) if response.status_code == 200 else None
                except (self._httpx.HTTPError, ValueError):
                    found = None
                if isinstance(found, int) and not isinstance(found, bool) and found > 0:
                    self._n_ctx = found
                    break
        return self._n_ctx

    async def _count_tokens(self, prompt: str) -> int | None:
        """Prompt length when the stream carried no usage (llama-cpp-python's server ignores
        `stream_options`): its /extras/tokenize route, or vLLM's /tokenize."""
        routes = [self._tokenize_route] if self._tokenize_route else ["/extras/tokenize", "/tokenize"]
        for route in routes:
            body = {"input": prompt} if route == "/extras/tokenize" else {"prompt": prompt, "model": self.model}
            try:
                response = await self._send("POST", f"{self.url}{route}", payload=body)
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
            return (await self._in_thread(self.backend.generate, [prompt], max_tokens, temperature, top_logprobs))[0]

    async def score(self, prompt: str, continuation: str, top_logprobs: int = 5) -> Score:
        async with self._lock:
            return await self._in_thread(self.backend.score, prompt, continuation, top_logprobs)

    async def _in_thread(self, call, *args):
        try:
            return await asyncio.to_thread(call, *args)
        except ValueError as exc:  # llama.cpp: "Requested tokens (N) exceed context window of M"
            match = re.search(_LLAMA_CONTEXT, str(exc))
            if match is None:
                raise
            raise RequestRejected(f"{self.url}: {exc}", detail=str(exc), n_ctx=int(match.group(1))) from None

    async def probe(self, timeout_s: float) -> str | None:
        """The model is loaded in this process: always there."""
        return None

    async def aclose(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self.backend.close)


def _max_model_len(data) -> int | None:
    for entry in (data.get("data") or []) if isinstance(data, dict) else []:
        if isinstance(entry, dict) and entry.get("max_model_len"):
            return entry["max_model_len"]
    return None


def _props_n_ctx(data) -> int | None:
    settings = data.get("default_generation_settings") if isinstance(data, dict) else None
    return (settings or {}).get("n_ctx") if isinstance(settings, dict) else None


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0][:200] if text else "no body"
