"""The backend protocol every tier speaks: `generate` prompts with logprobs and measured
timings, and `score` a draft continuation under this tier (verifier logprobs and whether its
greedy choice agrees, token by token). Backends are looked up by name in `BACKENDS`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from asd.errors import ConfigError


@dataclass
class Generation:
    """One tier's answer to one prompt. Timings are measured (None when not measured)."""

    text: str
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    n_prompt_tokens: int
    n_output_tokens: int
    ttft_ms: float | None
    e2e_ms: float | None
    token_ids: list[int] | None = None
    finish_reason: str | None = None

    @property
    def token_entropy(self) -> list[float] | None:
        if self.top_logprobs is None:
            return None
        return [entropy_from_top(top) for top in self.top_logprobs]


@dataclass
class Score:
    """A draft continuation scored under a verifier tier, in the verifier's own tokens.

    `greedy_agrees[j]` says the verifier's argmax at position j is the draft's token j, so
    `n_accepted` (the longest agreeing prefix) is what greedy speculative decoding keeps.
    """

    token_logprobs: list[float]
    greedy_agrees: list[bool]
    verify_ms: float | None
    tokens: list[str] = field(default_factory=list)
    # The verifier's top-k at each draft position, where the backend returns it (echo scoring).
    top_logprobs: list[dict[str, float]] | None = None

    @property
    def n_draft_tokens(self) -> int:
        return len(self.token_logprobs)

    @property
    def n_accepted(self) -> int:
        return longest_agreeing_prefix(self.greedy_agrees)


def tokens_of_text(text: str, tokens: list[str]) -> int:
    """How many of the generated tokens spell the returned text: all of them, unless they spell
    it and then go on (a stop string a server cut from the text but not from the tokens, their
    logprobs and their count: llama.cpp's server, vLLM's token_ids)."""
    joined = "".join(tokens)
    if len(joined) <= len(text) or not joined.startswith(text):
        return len(tokens)
    length = 0
    for k, token in enumerate(tokens):
        if length >= len(text):
            return k
        length += len(token)
    return len(tokens)


def longest_agreeing_prefix(agrees: Sequence[bool]) -> int:
    n = 0
    for ok in agrees:
        if not ok:
            break
        n += 1
    return n


def entropy_from_top(top: Mapping[str, float] | None) -> float:
    """Entropy (nats) of the top-k distribution renormalised to sum to one.

    Top-k is what every backend can return (vLLM, OpenAI servers, llama.cpp), so all tiers
    of a trace get the same estimator; it underestimates the full-vocabulary entropy.
    """
    if not top:
        return float("nan")
    values = [v for v in top.values() if v is not None and math.isfinite(v)]
    if not values:
        return float("nan")
    peak = max(values)
    weights = [math.exp(v - peak) for v in values]
    total = sum(weights)
    return float(-sum((w / total) * math.log(w / total) for w in weights if w > 0))


class Backend:
    """Base class of a tier backend. `name` is the registry key used in tier configs."""

    name: str = ""
    # Tier config keys this backend reads beyond those every tier has (`asd.live.tiers.TIER_KEYS`);
    # `load_ladder` refuses any other key, so a typo is an error, not a silently ignored option.
    options: tuple[str, ...] = ()
    # Prompts per `generate` call, and so per shard, unless the tier sets `batch_size`.
    default_batch_size: int = 8

    def __init__(self, tier: Mapping):
        self.tier = dict(tier)

    def generate(
        self,
        prompts: Sequence[str],
        max_tokens: int,
        temperature: float = 0.0,
        top_logprobs: int = 5,
    ) -> list[Generation]:
        raise NotImplementedError

    def score(self, prompt: str, continuation: str, top_logprobs: int = 1) -> Score:
        raise NotImplementedError

    def score_batch(self, pairs: Sequence[tuple[str, str]], top_logprobs: int = 1) -> list[Score]:
        """Score (prompt, continuation) pairs; engines that batch override this."""
        return [self.score(prompt, continuation, top_logprobs) for prompt, continuation in pairs]

    @property
    def stop(self) -> list[str]:
        stop = self.tier.get("stop") or []
        return [stop] if isinstance(stop, str) else list(stop)

    def format_prompt(self, prompt: str) -> str:
        """Wrap a raw prompt as this tier expects: `chat` (the model's own chat template),
        a string with `{prompt}` in it, or nothing (the prompt as is)."""
        template = self.tier.get("template")
        if template in (None, "", "raw"):
            return prompt
        if template == "chat":
            return self.chat_prompt(prompt)
        return str(template).replace("{prompt}", prompt)

    def chat_prompt(self, prompt: str) -> str:
        raise ConfigError(
            f"tier {self.tier.get('name')!r}: backend {self.name!r} cannot apply a chat template; "
            "give `template` as a string containing {prompt}"
        )

    @classmethod
    def fit_context(cls, tier: Mapping, prompts: Sequence[tuple[str, str]], max_tokens: int, max_draft_tokens: int) -> dict:
        """Before any model loads: `tier` with a context size that holds every prompt
        ((name, text) pairs, named in errors) plus `max_tokens` new tokens and, when this tier
        verifies drafts, `max_draft_tokens` draft tokens. A backend that sets its context
        itself checks or chooses it here (ConfigError naming the prompt and the size needed);
        the default leaves the tier as it is (a server's context is the server's business)."""
        return dict(tier)

    def describe(self) -> dict:
        """Manifest fields for this tier: backend name and version, model id, quantization."""
        return {"backend": self.name, "backend_version": None}

    def close(self) -> None:
        """Free the model / connections; the record loop holds one tier at a time."""


BACKENDS: dict[str, Callable[..., Backend]] = {}


def register(cls):
    """Class decorator: add a backend class to `BACKENDS` under its `name`."""
    BACKENDS[cls.name] = cls
    return cls


def make_backend(tier: Mapping) -> Backend:
    name = tier.get("backend")
    # Importing the package registers the built-in backends (their heavy imports stay lazy).
    import asd.live.backends  # noqa: F401

    if name not in BACKENDS:
        raise ConfigError(
            f"tier {tier.get('name')!r}: unknown backend {name!r} (backends are {sorted(BACKENDS)})"
        )
    return BACKENDS[name](tier)
