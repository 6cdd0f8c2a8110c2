"""`asd serve`: an OpenAI-compatible HTTP endpoint in front of the cascade (FastAPI + uvicorn).

FastAPI only maps requests to the cascade runner and back: `POST /v1/completions` and
`/v1/chat/completions` (JSON or SSE streaming once the cascade has settled on a tier), with an
extra `asd` object (stopped_at_tier, tier_probabilities, cost, fallback); `POST /v1/feedback`
(online posterior update, persisted); `GET /health` (each tier's servers asked, not assumed),
`/stats`, `/metrics` (prometheus_client). Errors are OpenAI-shaped: {"error": {"message",
"type", "code"}}; a full queue is 429 with Retry-After; an optional bearer token guards every
route but /health.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import warnings
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from asd import __version__
from asd.errors import AsdError
from asd.fsutil import check_writable_file
from asd.live.backends.aio import RequestRejected
from asd.live.feedback import FeedbackStore
from asd.live.metrics import ServeMetrics
from asd.live.runner import (CascadeError, CascadeRequest, CascadeResult, CascadeRunner, Overloaded,
                             describe_unreachable)

MAX_TOKENS_LIMIT = 4096
STREAM_CHUNK_CHARS = 16
# GET /health asks each tier server for /v1/models, each given PROBE_TIMEOUT_S, at most once
# every HEALTH_MAX_AGE_S (a load balancer polling every second does not poll the tier servers).
PROBE_TIMEOUT_S = 2.0
HEALTH_MAX_AGE_S = 5.0
MAX_STOP_STRINGS = 4  # as OpenAI

log = logging.getLogger("asd.serve")


def _utf8(text: str) -> str:
    """Text the tiers can be sent: no unpaired surrogate (JSON's "\\ud800" decodes to one)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (an unpaired surrogate such as \\ud800 cannot be encoded as UTF-8)") from None
    return text


# Strict strings (5 is not "5") that can be encoded as UTF-8.
Text = Annotated[StrictStr, AfterValidator(_utf8)]
StopStrings = Annotated[Text, Field(min_length=1)] | Annotated[list[Annotated[Text, Field(min_length=1)]],
                                                               Field(min_length=1, max_length=MAX_STOP_STRINGS)]
MaxTokens = Annotated[int | None, Field(default=None, ge=1, le=MAX_TOKENS_LIMIT, strict=True)]


# -- request bodies (unknown OpenAI fields are accepted and ignored) ------------------------------
class Sampling(BaseModel):
    """The OpenAI sampling fields that are read, strictly typed: `temperature` (a finite number;
    only 0 is served, the cascade decodes greedily), `stop` (honoured: the answer is cut at the
    first stop string), `logprobs`/`top_logprobs` (only null, false or 0: none are returned)."""

    model_config = ConfigDict(extra="allow")
    model: Text | None = None
    max_tokens: MaxTokens
    stream: StrictBool | None = False  # null: the OpenAI default, as for the other fields
    n: int | None = Field(default=1, ge=1, le=1, strict=True)
    temperature: float | None = Field(default=None, strict=True, allow_inf_nan=False)
    stop: StopStrings | None = None
    logprobs: Any = None
    top_logprobs: Any = None


class CompletionBody(Sampling):
    prompt: Text | list[Text]
    user: Text | None = None


class ContentPart(BaseModel):
    """One part of a message's content; only the text of `text` parts is read."""

    model_config = ConfigDict(extra="allow")
    type: Text
    text: Text | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Text | list[ContentPart] | None = None


class ChatBody(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: MaxTokens


class FeedbackBody(BaseModel):
    request_id: Text = Field(min_length=1)
    accepted: StrictBool  # true or false: "yes" and 1 are not verdicts


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str, code: str, headers: dict | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.headers = status, message, type_, code, headers
        self.param = param


def check_sampling(body: Sampling) -> None:
    """What the typed fields cannot say: sampling asd does not do is refused, not ignored."""
    if body.temperature not in (None, 0):
        raise ApiError(400, f"temperature: only greedy decoding is served (temperature 0 or null), got "
                       f"{body.temperature:g}", "invalid_request_error", "unsupported_value", param="temperature")
    for name in ("logprobs", "top_logprobs"):
        value = getattr(body, name)
        if value is not None and value is not False and not (type(value) is int and value == 0):
            raise ApiError(400, f"{name}: logprobs are not returned by this server (give null, false or 0)",
                           "invalid_request_error", "unsupported_value", param=name)


def stop_strings(body: Sampling) -> list[str]:
    return [] if body.stop is None else [body.stop] if isinstance(body.stop, str) else list(body.stop)


def apply_stop(result: CascadeResult, stops: list[str]) -> None:
    """Cut the answer before the first stop string in it (finish_reason "stop"), as OpenAI does."""
    cuts = [i for i in (result.text.find(stop) for stop in stops) if i >= 0]
    if cuts:
        result.text = result.text[:min(cuts)]
        result.finish_reason = "stop"
        result.n_completion_tokens = tokens_covering(result.runs[-1].generation, len(result.text))


def tokens_covering(generation, n_chars: int) -> int | None:
    """How many of the answer's tokens make up its first `n_chars` characters (a token the cut
    splits counts), so usage counts the answer returned; None where the tier's tokens do not
    spell its text (none returned, or byte pieces): usage then counts the tokens decoded."""
    tokens = generation.tokens or []
    if not tokens or "".join(tokens) != generation.text:
        return None
    covered = 0
    for k, token in enumerate(tokens):
        if covered >= n_chars:
            return k
        covered += len(token)
    return len(tokens)


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def _field_path(loc) -> list:
    """A pydantic error location as the request's field path: without "body" and without the
    union-member tags pydantic adds (`function-after[...]`, `list[...]`)."""
    return [p for p in loc if p != "body" and not (isinstance(p, str) and "[" in p)]


def _most_telling(errors: list[dict]) -> dict:
    """Of a body's validation errors, the one to report: the deepest field (a content part's
    `text`, not its message), and a broken value before a union member of the wrong type."""
    if not errors:
        return {}
    def rank(error):
        path = _field_path(error.get("loc", ()))
        tagged = len(path) < len([p for p in error.get("loc", ()) if p != "body"])
        return len(path), not (tagged and str(error.get("type", "")).endswith("_type"))
    return max(errors, key=rank)  # max keeps the first of equals


def chat_prompt(messages: list[ChatMessage]) -> str:
    """One user message is the prompt as it is (each tier applies its own template); a longer
    conversation becomes a role-labelled transcript ending with the last message."""
    texts = []
    for m, message in enumerate(messages):
        content = message.content
        if isinstance(content, list):  # content parts: keep the text parts
            for p, part in enumerate(content):
                if part.type == "text" and part.text is None:
                    where = f"messages.{m}.content.{p}.text"
                    raise ApiError(400, f"{where}: a text part needs a string `text`", "invalid_request_error",
                                   "invalid_request", param=where)
            content = "".join(part.text for part in content if part.type == "text")
        texts.append((message.role, content or ""))
    if len(texts) == 1 and texts[0][0] == "user":
        return texts[0][1]
    return "\n".join(f"{role.capitalize()}: {text}" for role, text in texts)


@dataclass
class ServeState:
    runner: CascadeRunner
    metrics: ServeMetrics
    feedback: FeedbackStore | None
    started: float


def create_app(build_runner: Callable[[], CascadeRunner], *, api_key: str | None = None,
               feedback: Callable[[CascadeRunner], FeedbackStore | None] | None = None) -> FastAPI:
    """The app. `build_runner` is called inside the server's event loop (its HTTP clients
    belong to that loop); `feedback` builds the feedback store for the runner's policy."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runner = build_runner()
        store = feedback(runner) if feedback else None
        app.state.asd = ServeState(runner, ServeMetrics(runner), store, time.time())
        try:
            # Serve even so: the servers may come up later, and /health says which are down.
            unreachable = await runner.probe(PROBE_TIMEOUT_S)
            if unreachable:
                warnings.warn(f"{describe_unreachable(unreachable)}; serving anyway: GET /health reports a "
                              "tier down until its server answers", stacklevel=1)
            yield
        finally:
            await runner.aclose()

    app = FastAPI(title="asd", version=__version__, lifespan=lifespan)

    def state(request: Request) -> ServeState:
        return request.app.state.asd

    @app.middleware("http")
    async def guard_and_count(request: Request, call_next):
        route = request.url.path
        if api_key and route != "/health":
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            # the scheme is case-insensitive (RFC 7235: 'bearer' is 'Bearer'); the token is compared in constant time
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
                response = JSONResponse(error_body("missing or wrong bearer token", "authentication_error",
                                                   "invalid_api_key"), status_code=401)
                _count(request, route, 401)
                return response
        try:
            response = await call_next(request)
        except Exception as exc:  # noqa: BLE001 — a bug: an OpenAI-shaped 500, logged once and counted
            log.error("%s %s: unhandled %s", request.method, route, type(exc).__name__, exc_info=exc)
            response = JSONResponse(error_body(f"internal server error ({type(exc).__name__}); it is logged",
                                               "server_error", "internal_error"), status_code=500)
        _count(request, route, response.status_code)
        return response

    def _count(request: Request, route: str, code: int) -> None:
        known = {"/v1/completions", "/v1/chat/completions", "/v1/feedback", "/health", "/stats", "/metrics"}
        serve = getattr(request.app.state, "asd", None)
        if serve is not None:
            serve.metrics.requests.labels(route if route in known else "other", str(code)).inc()

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse(error_body(exc.message, exc.type, exc.code, exc.param), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        first = _most_telling(exc.errors())
        where = ".".join(str(p) for p in _field_path(first.get("loc", ()))) or "body"
        message = f"{where}: {first.get('msg', 'invalid request')}"
        code = "invalid_json" if first.get("type") == "json_invalid" else "invalid_request"
        if code == "invalid_json":
            where = None  # its loc is a character offset, not a field
        return JSONResponse(error_body(message, "invalid_request_error", code, where), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), type_, str(exc.status_code)), status_code=exc.status_code)

    async def answer(serve: ServeState, prompt: str, body: Sampling, max_tokens: int | None) -> CascadeResult:
        check_sampling(body)
        runner = serve.runner
        try:
            runner.admit()
        except Overloaded as exc:
            raise ApiError(429, f"server busy: {exc}; retry later", "rate_limit_error", "queue_full",
                           {"Retry-After": str(exc.retry_after_s)}) from None
        try:
            result = await runner.run(CascadeRequest(prompt=prompt, max_tokens=max_tokens))
        except CascadeError as exc:
            raise ApiError(503, str(exc), "server_error", "tiers_unavailable") from None
        except RequestRejected as exc:  # the request's own fault: the tier servers stay up
            param = "messages" if isinstance(body, ChatBody) else "prompt"
            context = f"its context is {exc.n_ctx} tokens" if exc.n_ctx else "its context is not known to asd"
            raise ApiError(400, f"{param}: too long for tier {exc.tier!r} ({context}): {exc.detail}; shorten the "
                           "prompt or ask for fewer max_tokens", "invalid_request_error", exc.code, param=param) from None
        finally:
            runner.release()
        apply_stop(result, stop_strings(body))
        return result

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, request: Request):
        prompt = body.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ApiError(400, f"prompt: give one prompt (got a list of {len(prompt)})", "invalid_request_error",
                               "invalid_request", param="prompt")
            prompt = prompt[0]
        if not prompt.strip():
            raise ApiError(400, "prompt: empty", "invalid_request_error", "invalid_request", param="prompt")
        serve = state(request)
        result = await answer(serve, prompt, body, body.max_tokens)
        if body.stream:
            return _stream(result, chat=False, serve=serve)
        return {
            "id": f"cmpl-{result.request_id}", "object": "text_completion", "created": int(time.time()),
            "model": result.tier_name,
            "choices": [{"index": 0, "text": result.text, "logprobs": None, "finish_reason": result.finish_reason}],
            "usage": _usage(result), "asd": _asd_object(result, serve.runner),
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatBody, request: Request):
        prompt = chat_prompt(body.messages)
        if not prompt.strip():
            raise ApiError(400, "messages: no text content", "invalid_request_error", "invalid_request",
                           param="messages")
        serve = state(request)
        result = await answer(serve, prompt, body, body.max_completion_tokens or body.max_tokens)
        if body.stream:
            return _stream(result, chat=True, serve=serve)
        return {
            "id": f"chatcmpl-{result.request_id}", "object": "chat.completion", "created": int(time.time()),
            "model": result.tier_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                         "finish_reason": result.finish_reason}],
            "usage": _usage(result), "asd": _asd_object(result, serve.runner),
        }

    @app.post("/v1/feedback")
    async def feedback_route(body: FeedbackBody, request: Request):
        serve = state(request)
        if serve.feedback is None:
            raise ApiError(501, "feedback is off on this server", "invalid_request_error", "feedback_disabled")
        where = serve.runner.stop_of(body.request_id)
        if where is None:
            raise ApiError(404, f"request_id {body.request_id!r}: not a recent request of this server",
                           "not_found_error", "unknown_request_id")
        tier, bin_, cold = where
        given = serve.runner.verdict_of(body.request_id)
        if given is not None and given != body.accepted:
            raise ApiError(409, f"request_id {body.request_id!r}: feedback already given (accepted: "
                           f"{str(given).lower()}); a request's verdict counts once and cannot be changed",
                           "invalid_request_error", "feedback_conflict")
        if given is None:  # the first verdict counts; the same one again is not counted again
            try:
                serve.runner.policy = serve.feedback.add(tier, bin_, cold, body.accepted)
            except OSError as exc:  # nothing counted: the client may retry once the file can be written
                raise ApiError(503, f"feedback file {serve.feedback.path} cannot be written "
                               f"({(exc.strerror or str(exc)).lower()}): the verdict is not counted; retry later",
                               "server_error", "feedback_not_saved") from None
            serve.metrics.feedback.labels(str(body.accepted).lower()).inc()
            serve.runner.note_verdict(body.request_id, body.accepted)
        return {"request_id": body.request_id, "tier": serve.runner.pools[tier].name, "bin": bin_, "cold": cold,
                "accepted": body.accepted, "counted": given is None, "observations": serve.feedback.n}

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health(request: Request):
        """For a load balancer: {"status", "tiers": {tier name: up}}. A tier is up when one of
        its servers is known to answer — it answered GET /v1/models (asked here, at most every
        HEALTH_MAX_AGE_S, each server given PROBE_TIMEOUT_S) or its last call, and is not
        cooling down after failed calls; an in-process model always answers. Never assumed:
        a server not yet asked is asked first. "ok" (200): every tier up; "degraded" (200):
        some tier down, requests are answered by the others (the cascade falls back); "down"
        (503): no tier up. Which server failed, and how, is in /stats (this route needs no token)."""
        serve = state(request)
        await serve.runner.probe(PROBE_TIMEOUT_S, max_age_s=HEALTH_MAX_AGE_S)
        tiers = {pool.name: pool.healthy for pool in serve.runner.pools}
        status = "ok" if all(tiers.values()) else "degraded" if any(tiers.values()) else "down"
        return JSONResponse({"status": status, "tiers": tiers}, status_code=503 if status == "down" else 200)

    @app.get("/stats")
    async def stats(request: Request):
        serve = state(request)
        out = serve.runner.stats()
        out["uptime_s"] = round(time.time() - serve.started, 1)
        out["feedback"] = serve.feedback.summary() if serve.feedback else None
        return out

    @app.get("/metrics")
    async def metrics(request: Request):
        return Response(state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def _usage(result: CascadeResult) -> dict:
    final = result.runs[-1].generation
    prompt = int(result.n_prompt_tokens or 0)
    completion = int(final.n_output_tokens or 0) if result.n_completion_tokens is None else result.n_completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _asd_object(result: CascadeResult, runner: CascadeRunner) -> dict:
    return {
        "request_id": result.request_id,
        "stopped_at_tier": result.tier_name,
        "stopped_at_tier_index": result.stopped_at_tier,
        "start_tier": runner.pools[result.start_tier].name,
        "tier_probabilities": result.tier_probabilities(),
        "cost": {"gpu_ms": round(result.gpu_ms, 3), "tiers_run": [run.name for run in result.runs]},
        "fallback": result.fallback,
        "latency_ms": round(result.latency_ms, 3),
        "tiers": [{"tier": run.name, "replica": run.replica, "draft_tokens": run.draft.n_draft_tokens if run.draft else None,
                   "accepted_tokens": run.n_accepted if run.draft else None,
                   "queue_ms": round(run.queue_ms, 3), "verify_ms": round(run.verify_ms, 3),
                   "generate_ms": round(run.generate_ms, 3)} for run in result.runs],
    }


def _stream(result: CascadeResult, *, chat: bool, serve: ServeState) -> StreamingResponse:
    """The settled answer as OpenAI SSE chunks; the last chunk carries finish_reason and `asd`."""
    created = int(time.time())
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{result.request_id}"
    kind = "chat.completion.chunk" if chat else "text_completion"
    text = result.text

    def chunk(piece: str | None, finish: str | None, extra: dict | None = None, role: bool = False) -> str:
        if chat:
            delta = {"role": "assistant"} if role else {} if piece is None else {"content": piece}
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}
        event = {"id": ident, "object": kind, "created": created, "model": result.tier_name, "choices": [choice]}
        event.update(extra or {})
        return f"data: {json.dumps(event)}\n\n"

    def events():
        if chat:
            yield chunk(None, None, role=True)
        for i in range(0, len(text), STREAM_CHUNK_CHARS):
            yield chunk(text[i:i + STREAM_CHUNK_CHARS], None)
        yield chunk(None if chat else "", result.finish_reason,
                    {"usage": _usage(result), "asd": _asd_object(result, serve.runner)})
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _check_can_listen(host: str, port: int) -> None:
    """ConfigError when (host, port) cannot be bound: in use by another server, or not this
    machine's address. Bound and released at once, with the SO_REUSEADDR uvicorn itself sets."""
    import socket

    from asd.errors import ConfigError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None


def serve(tiers_path, policy_path, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_queue: int = 256, feedback_path=None, speculative: bool = True, log_level: str = "warning",
          announce=None) -> None:
    """`asd serve`: load the ladder and the policy, then run uvicorn until interrupted.
    announce: called with no arguments once both are loaded and checked, just before listening."""
    import uvicorn

    from asd.engine.policy import Policy
    from asd.errors import ConfigError
    from asd.live.features import features_for_policy
    from asd.live.runner import build_runner, check_ladder
    from asd.live.tiers import load_ladder

    if host not in LOOPBACK and not api_key:
        raise ConfigError(f"--host {host}: binding beyond loopback needs --api-key (or ASD_API_KEY)")
    if max_queue < 1:
        raise ConfigError(f"--max-queue {max_queue}: must be >= 1")
    _check_can_listen(host, port)  # one error: line now, not uvicorn's log line and exit 3 after loading
    if feedback_path is not None:
        # refused now, not at the first POST /v1/feedback (the store creates missing directories)
        check_writable_file(feedback_path, "--feedback-file")
    ladder = load_ladder(tiers_path)
    policy = Policy.load(policy_path)
    # refused here, not inside uvicorn's startup
    check_ladder([t["name"] for t in ladder["tiers"]], policy, [t.get("params_b") for t in ladder["tiers"]],
                 files=(tiers_path, policy_path))
    features_for = features_for_policy(policy, ladder["tiers"], speculative=speculative)
    store = FeedbackStore(policy, policy_path, feedback_path)  # earlier feedback folded in: store.policy
    if feedback_path is None:
        try:
            check_writable_file(store.path, "the feedback file")
        except AsdError as exc:  # beside a read-only policy: serving needs no feedback, but say so
            store.persist = False
            warnings.warn(f"{exc}; POST /v1/feedback updates the policy in memory only (give --feedback-file)",
                          stacklevel=1)

    def build():
        return build_runner(ladder["tiers"], store.policy, features_for, max_in_flight=max_queue,
                            speculative=speculative)

    app = create_app(build, api_key=api_key, feedback=lambda runner: store)
    if announce is not None:
        announce()
    uvicorn.run(app, host=host, port=port, log_level=log_level)
