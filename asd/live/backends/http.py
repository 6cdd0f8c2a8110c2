"""OpenAI-compatible HTTP backend (vLLM, SGLang, llama.cpp servers) over `/v1/completions`.

Generation streams, so time to first token is measured at the first token that arrives;
scoring sends prompt + draft with `echo: true` and `logprobs`, and `max_tokens: 1` (llama.cpp
reads 0 as "no limit"). Echoed logprobs are checked once per backend against generated ones,
because servers shift them by one for models without a BOS token (SmolLM2 under llama.cpp).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from asd.errors import BackendError, ConfigError
from asd.live.backends.base import Backend, Generation, Score, register, tokens_of_text

RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


@register
class OpenAIHTTPBackend(Backend):
    """Tier options: `url` (server base URL), `model` (served model name; first of /v1/models
    when absent), `api_key`, `timeout_s` (120), `retries` (3), `backoff_s` (0.5),
    `concurrency` (1), `template`, `stop`, `score_prefix` (text put before a scored prompt)."""

    name = "openai"
    options = ("url", "api_key", "served_model", "score_prefix")

    def __init__(self, tier):
        super().__init__(tier)
        try:
            import httpx
        except ImportError:
            raise BackendError(
                f"tier {tier.get('name')!r}: backend openai needs httpx (pip install 'asd[live]')"
            ) from None

        url = tier.get("url")
        if not url:
            raise ConfigError(f"tier {tier.get('name')!r}: backend openai needs `url`")
        self.base = str(url).rstrip("/")
        if self.base.endswith("/v1"):
            self.base = self.base[: -len("/v1")]
        self.retries = int(tier.get("retries", 3))
        self.backoff_s = float(tier.get("backoff_s", 0.5))
        self.concurrency = max(1, int(tier.get("concurrency", 1)))
        self.default_batch_size = max(8, 2 * self.concurrency)  # keep every connection busy
        self.score_prefix = str(tier.get("score_prefix") or "")
        headers = {"Authorization": f"Bearer {tier['api_key']}"} if tier.get("api_key") else {}
        self._httpx = httpx
        self.client = httpx.Client(timeout=float(tier.get("timeout_s", 120)), headers=headers)
        self.model = tier.get("served_model") or self._served_model(tier.get("model"))
        self._aligned: bool | None = None
        self._tokenize_route: str | None = None

    # -- transport ---------------------------------------------------------------
    def _request(self, method: str, path: str, payload: dict | None = None, stream: bool = False):
        url = f"{self.base}{path}"
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                if stream:
                    request = self.client.build_request(method, url, json=payload)
                    response = self.client.send(request, stream=True)
                else:
                    response = self.client.request(method, url, json=payload)
            except (self._httpx.TransportError, self._httpx.TimeoutException) as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            if response.status_code in RETRY_STATUS and attempt < self.retries:
                last = f"HTTP {response.status_code}"
                response.close()
                continue
            if response.status_code >= 400:
                body = response.read().decode("utf-8", errors="replace") if stream else response.text
                response.close()
                raise BackendError(f"{url}: HTTP {response.status_code} ({_first_line(body)})")
            return response
        raise BackendError(f"{url}: server unreachable after {self.retries + 1} tries ({last})")

    def _served_model(self, configured) -> str | None:
        response = self._request("GET", "/v1/models")
        try:
            models = [m["id"] for m in response.json().get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            models = []
        if configured and str(configured) in models:
            return str(configured)
        if configured and models and len(models) > 1:
            raise BackendError(f"{self.base}: serves {models}, not {configured!r}")
        return models[0] if models else configured

    # -- protocol ----------------------------------------------------------------
    def generate(self, prompts: Sequence[str], max_tokens, temperature=0.0, top_logprobs=5):
        one = lambda p: self._generate_one(p, int(max_tokens), float(temperature), int(top_logprobs))  # noqa: E731
        if self.concurrency == 1 or len(prompts) == 1:
            return [one(p) for p in prompts]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(one, prompts))

    def _generate_one(self, prompt: str, max_tokens: int, temperature: float, k: int) -> Generation:
        payload = completion_payload(self.model, prompt, max_tokens, temperature, max(1, k), self.stop)
        stream = StreamedCompletion(f"{self.base}/v1/completions")
        response = self._request("POST", "/v1/completions", payload, stream=True)
        try:
            for chunk in _sse_events(response):
                stream.add(chunk)
        except (self._httpx.TransportError, self._httpx.TimeoutException) as exc:
            raise BackendError(f"{self.base}/v1/completions: stream broke ({type(exc).__name__})") from None
        finally:
            response.close()
        usage = stream.usage
        n_prompt = usage.get("prompt_tokens") if usage else self._count_tokens(prompt)
        return stream.generation(n_prompt)

    def _count_tokens(self, prompt: str) -> int | None:
        """Prompt length when the stream carried no usage: llama.cpp's and vLLM's tokenize routes."""
        routes = [self._tokenize_route] if self._tokenize_route else ["/extras/tokenize", "/tokenize"]
        for route in routes:
            body = {"input": prompt} if route == "/extras/tokenize" else {"prompt": prompt, "model": self.model}
            try:
                response = self.client.post(f"{self.base}{route}", json=body)
            except self._httpx.HTTPError:
                continue
            if response.status_code == 200:
                data = response.json()
                tokens = data.get("tokens")
                if isinstance(tokens, list):
                    self._tokenize_route = route
                    return len(tokens)
                if isinstance(data.get("count"), int):
                    self._tokenize_route = route
                    return data["count"]
        return None

    def score(self, prompt: str, continuation: str, top_logprobs: int = 1) -> Score:
        if not continuation:
            return Score([], [], 0.0)
        if self._aligned is None:
            self._check_echo_alignment(prompt + continuation)
        start = time.perf_counter()
        tokens, logprobs, tops = self._echo(self.score_prefix + prompt + continuation, len(continuation), max(1, top_logprobs))
        return score_from_echo(tokens, logprobs, tops, (time.perf_counter() - start) * 1e3)

    def _echo(self, text: str, n_chars: int, k: int):
        data = self._request("POST", "/v1/completions", echo_payload(self.model, text, k)).json()
        return echo_slice(data, n_chars, f"{self.base}/v1/completions")

    def _check_echo_alignment(self, text: str) -> None:
        """Generate a few tokens after `text`, echo-score them, and require the same logprobs."""
        probe = self.score_prefix + text
        generated = self._generate_one(probe, 4, 0.0, 1)
        if not generated.text or not generated.token_logprobs:
            return  # the model stopped at once: nothing to compare, check on the next draft
        _, echoed, _ = self._echo(probe + generated.text, len(generated.text), 1)
        self._aligned = check_echo_alignment(self.base, generated, echoed)

    def describe(self) -> dict:
        """The served model name as model_id, the server's base URL, and its version where
        the server reports one (vLLM `/version`, llama.cpp `/props` build_info, the
        llama-cpp-python server's OpenAPI info), else "(version unknown)"."""
        return {"backend": self.name, "backend_version": self._server_version(),
                "model_id": self.model, "url": self.base}

    def _server_version(self) -> str:
        version = self._get_json("/version").get("version")
        if version:
            return f"{self._owner() or 'server'} {version}"
        build = self._get_json("/props").get("build_info")
        if build:
            return f"llama.cpp server {build}"
        info = self._get_json("/openapi.json").get("info") or {}
        title, version = str(info.get("title") or ""), info.get("version")
        if version and title and title != "FastAPI":  # FastAPI's defaults say nothing about the server
            name = "llama-cpp-python server" if "llama.cpp Python" in title else title
            return f"{name} {version}"
        return f"{self._owner() or 'openai-compatible server'} (version unknown)"

    def _owner(self) -> str | None:
        """`owned_by` of the served model when it names the server (vllm, llamacpp, sglang)."""
        for entry in self._get_json("/v1/models").get("data") or []:
            if isinstance(entry, dict) and entry.get("id") == self.model:
                owner = str(entry.get("owned_by") or "")
                return owner if owner.lower() in ("vllm", "llamacpp", "sglang") else None
        return None

    def _get_json(self, path: str) -> dict:
        """GET one informational route; any failure is an empty answer (never an error)."""
        try:
            response = self.client.get(f"{self.base}{path}")
            data = response.json() if response.status_code == 200 else {}
        except (self._httpx.HTTPError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def close(self) -> None:
        self.client.close()


# -- request bodies and response parsing, shared by the blocking and the asyncio client ----------
def completion_payload(model, prompt: str, max_tokens: int, temperature: float, k: int | None, stop) -> dict:
    """A streamed `/v1/completions` body with a usage chunk, asking for the top-`k` logprobs of
    each token (none when k is 0 or None)."""
    payload = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if k:
        payload["logprobs"] = int(k)
    if stop:
        payload["stop"] = list(stop)
    return payload


def echo_payload(model, text: str, k: int) -> dict:
    return {"model": model, "prompt": text, "max_tokens": 1, "temperature": 0.0, "logprobs": k, "echo": True}


class StreamedCompletion:
    """Collects the SSE chunks of one streamed completion; time to first token is taken when
    the first chunk carrying text or tokens arrives."""

    def __init__(self, where: str):
        self.where = where
        self.start = time.perf_counter()
        self.ttft_ms = None
        self.text, self.tokens, self.logprobs, self.tops = [], [], [], []
        self.usage, self.finish = None, None
        self.text_events = 0  # servers stream one token per event: the count without usage or logprobs

    def add(self, chunk: dict) -> None:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            piece = choice.get("logprobs") or {}
            if choice.get("text") or piece.get("tokens"):
                self.text_events += 1
                if self.ttft_ms is None:
                    self.ttft_ms = (time.perf_counter() - self.start) * 1e3
            self.text.append(choice.get("text") or "")
            self.tokens.extend(piece.get("tokens") or [])
            self.logprobs.extend(piece.get("token_logprobs") or [])
            self.tops.extend(piece.get("top_logprobs") or [])
            self.finish = choice.get("finish_reason") or self.finish

    def generation(self, n_prompt_tokens: int | None) -> Generation:
        e2e_ms = (time.perf_counter() - self.start) * 1e3
        if self.finish is None:
            raise BackendError(
                f"{self.where}: the stream ended before the completion finished (no "
                "finish_reason); the server may interrupt concurrent requests (llama.cpp: start it with "
                "--interrupt_requests false, or set concurrency: 1)"
            )
        n_output = self.usage.get("completion_tokens") if self.usage else len(self.tokens) or self.text_events
        text, tokens = "".join(self.text), [str(t) for t in self.tokens]
        logprobs, tops = [float(x) for x in self.logprobs if x is not None], self.tops
        keep = tokens_of_text(text, tokens)
        if keep < len(tokens):
            # llama.cpp's server leaves the stop string out of `text` but sends its token, its
            # logprob and its count: the output is what the text holds, as the in-process backend
            # cuts it (`local._cut_at_stop`), so token counts and logprobs agree across backends
            tokens, logprobs, tops, n_output = tokens[:keep], logprobs[:keep], tops[:keep], keep
        return Generation(
            text=text,
            tokens=tokens,
            token_logprobs=logprobs,
            top_logprobs=[t or {} for t in tops] if tops else None,
            n_prompt_tokens=n_prompt_tokens,
            n_output_tokens=n_output if n_output is not None else len(self.tokens),
            ttft_ms=self.ttft_ms,
            e2e_ms=e2e_ms,
            finish_reason=self.finish,
        )


def echo_slice(data: dict, n_chars: int, where: str):
    """Tokens, logprobs and top-k of the last `n_chars` characters of an echoed text.

    Servers' text offsets skip special tokens, so the draft is found from the end: the
    echo is prompt + draft + the generated token(s) that `usage.completion_tokens` counts.
    """
    try:
        lp = data["choices"][0]["logprobs"]
        tokens, values, tops = lp["tokens"], lp["token_logprobs"], lp["top_logprobs"] or [None] * len(lp["tokens"])
    except (KeyError, IndexError, TypeError):
        raise BackendError(f"{where}: echo returned no logprobs; this server cannot score drafts") from None
    n_generated = int((data.get("usage") or {}).get("completion_tokens", 1) or 0)
    end = len(tokens) - n_generated
    begin, covered = end, 0
    while begin > 0 and covered < n_chars:
        begin -= 1
        covered += len(tokens[begin] or "")
    out_values = values[begin:end]
    if any(v is None for v in out_values):
        raise BackendError(f"{where}: echo gave no logprob for a draft token")
    return list(tokens[begin:end]), [float(v) for v in out_values], [t or {} for t in tops[begin:end]]


def score_from_echo(tokens, logprobs, tops, verify_ms: float) -> Score:
    agrees = [bool(top) and max(top, key=top.get) == tok for tok, top in zip(tokens, tops)]
    return Score(token_logprobs=logprobs, greedy_agrees=agrees, verify_ms=verify_ms, tokens=tokens,
                 top_logprobs=tops)


def check_echo_alignment(base: str, generated: Generation, echoed: list[float]) -> bool:
    """True when echoed logprobs equal generated ones; else the BOS-shift error."""
    n = min(len(echoed), len(generated.token_logprobs))
    worst = max(abs(a - b) for a, b in zip(echoed[:n], generated.token_logprobs[:n])) if n else 0.0
    if n == 0 or worst > 0.05:
        raise BackendError(
            f"{base}: echoed logprobs do not match generated ones (off by {worst:.3g}); the server "
            "shifts them for models without a BOS token — set `score_prefix` to the model's BOS text "
            "(e.g. <|im_start|> for SmolLM2) or use the llama_cpp backend"
        )
    return True


def _sse_events(response):
    for line in response.iter_lines():
        line = line.strip()
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        try:
            yield json.loads(data)
        except json.JSONDecodeError:
            raise BackendError(f"{response.request.url}: malformed stream event {data[:80]!r}") from None


def _first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0][:200] if text else "no body"
