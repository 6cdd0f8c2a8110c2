"""Local CPU backend: a GGUF model run in-process by llama-cpp-python.

Generation is a plain token loop over `Llama.eval` so that time to first token and total
time are measured around the real work, and logprobs come from the full-vocabulary
log-softmax of the logits. Scoring evaluates prompt + draft once (`logits_all=True`) and
reads the verifier's distribution at every draft position itself, so models without a BOS
token (SmolLM2) are not shifted by one as llama.cpp's own `echo` logprobs are.
"""

from __future__ import annotations

import ctypes
import sys
import time
from typing import Sequence

import numpy as np

from asd.errors import BackendError, ConfigError
from asd.live.backends.base import Backend, Generation, Score, register


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    peak = logits.max(axis=-1, keepdims=True)
    shifted = logits - peak
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# ggml's log levels (ggml.h): llama-cpp-python's own callback still maps the older enum, so it
# prints warnings such as Gemma's "using full-size SWA cache" as if they were errors.
GGML_LOG_ERROR = 4
GGML_LOG_CONT = 5
_log_state = {"callback": None, "last_level": 0}


def forward_llama_log(level: int, text: bytes) -> None:
    """Pass llama.cpp's errors (and their continuation lines) to stderr; drop the rest."""
    if level == GGML_LOG_CONT:
        level = _log_state["last_level"]
    _log_state["last_level"] = level
    if level == GGML_LOG_ERROR:
        sys.stderr.write(text.decode("utf-8", errors="replace"))
        sys.stderr.flush()


def quiet_llama_logs(llama_cpp) -> None:
    """Route llama.cpp's C-level log through `forward_llama_log` (once per process)."""
    if _log_state["callback"] is None:
        # The ctypes callback must stay referenced for as long as llama.cpp may call it.
        _log_state["callback"] = llama_cpp.llama_log_callback(
            lambda level, text, _user: forward_llama_log(int(level), text or b"")
        )
        llama_cpp.llama_log_set(_log_state["callback"], ctypes.c_void_p(0))


@register
class LlamaCppBackend(Backend):
    """Tier options: `model` (GGUF path or short name), `n_ctx` (a number, or `auto`: the
    longest prompt of the run plus the new tokens, see `fit_context`; default 512 when the
    backend is made directly), `n_threads`, `seed`, `template` (`chat` uses the GGUF's chat
    template), `stop` (strings)."""

    name = "llama_cpp"
    options = ("n_ctx", "n_threads", "seed")
    # `n_ctx: auto` rounds the context it needs up to a multiple of this.
    CONTEXT_STEP = 64

    @classmethod
    def fit_context(cls, tier, prompts, max_tokens, max_draft_tokens):
        """Tokenise every prompt as this tier formats it, loading the GGUF's vocabulary only
        (no weights), and size the context: `n_ctx: auto` (or absent) → the longest prompt +
        max(max_tokens, 2 × max_draft_tokens) (a draft re-tokenised by another model's
        vocabulary may take more tokens), rounded up to a multiple of 64; a given `n_ctx`
        that cannot hold a prompt + max_tokens is a ConfigError naming the prompt and the
        n_ctx it needs."""
        tier = dict(tier)
        given = tier.get("n_ctx")
        auto = given is None or str(given).strip().lower() == "auto"
        if not auto and (not str(given).isdigit() or int(given) < 1):
            raise ConfigError(f"tier {tier.get('name')!r}: n_ctx must be a positive integer or `auto`, got {given!r}")
        vocab = cls({**tier, "n_ctx": 0}, vocab_only=True)
        try:
            longest, longest_name = 0, None
            for name, text in prompts:
                n = len(vocab._tokenize_prompt(vocab.format_prompt(text)))
                if n > longest:
                    longest, longest_name = n, name
        finally:
            vocab.close()
        extra = max(int(max_tokens), 2 * int(max_draft_tokens))
        if auto:
            step = cls.CONTEXT_STEP
            tier["n_ctx"] = -(-(longest + extra) // step) * step
            return tier
        needed = longest + int(max_tokens)
        if needed > int(given):
            raise ConfigError(
                f"tier {tier.get('name')!r}: prompt {longest_name!r} needs {needed} tokens "
                f"({longest} prompt + {max_tokens} max_tokens) but n_ctx is {given}; set `n_ctx: "
                f"{-(-(longest + extra) // cls.CONTEXT_STEP) * cls.CONTEXT_STEP}` (or `n_ctx: auto`) for this tier"
            )
        tier["n_ctx"] = int(given)
        return tier

    def __init__(self, tier, vocab_only: bool = False):
        super().__init__(tier)
        try:
            import llama_cpp
        except ImportError:
            raise BackendError(
                f"tier {tier.get('name')!r}: backend llama_cpp needs llama-cpp-python "
                "(pip install 'asd[local]')"
            ) from None
        from asd.live.models import resolve_model

        self._llama_cpp = llama_cpp
        quiet_llama_logs(llama_cpp)
        self.model_path = resolve_model(tier.get("model") or "")
        n_ctx = tier.get("n_ctx")
        if isinstance(n_ctx, str) and n_ctx.strip().lower() == "auto":
            n_ctx = None  # `asd record` resolves auto before it makes the backend
        self.n_ctx = int(n_ctx or 512)
        kwargs = dict(
            model_path=str(self.model_path),
            n_ctx=self.n_ctx,
            logits_all=not vocab_only,
            vocab_only=vocab_only,
            verbose=False,
            seed=int(tier.get("seed") or 0),
        )
        if tier.get("n_threads"):
            # Prompt evaluation too (llama.cpp's n_threads_batch defaults to every core, and its
            # spinning threads make a prompt batch tens of times slower on a busy machine).
            kwargs["n_threads"] = kwargs["n_threads_batch"] = int(tier["n_threads"])
        try:
            self.llm = llama_cpp.Llama(**kwargs)
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"{self.model_path}: llama.cpp could not load the model ({exc})") from None
        except MemoryError as exc:  # logits_all holds n_ctx × vocabulary scores: 6 GiB for Gemma at n_ctx 6080
            raise BackendError(f"{self.model_path}: not enough memory to load the model at n_ctx {self.n_ctx} "
                               f"({exc}); lower n_ctx or the tier's max_tokens") from None
        self._rng = np.random.default_rng(int(tier.get("seed") or 0))

    # -- helpers -----------------------------------------------------------------
    def _tokenize_prompt(self, prompt: str) -> list[int]:
        # add_bos follows the GGUF's own add_bos_token flag; special=True parses template tokens.
        return self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)

    def _tokenize_continuation(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def _is_end(self, token: int) -> bool:
        return bool(self._llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token))

    def _token_text(self, token: int, previous: list[int]) -> str:
        return self.llm.detokenize([token], prev_tokens=previous).decode("utf-8", errors="replace")

    def _check_fits(self, n_tokens: int, what: str) -> None:
        if n_tokens > self.n_ctx:
            raise BackendError(
                f"tier {self.tier.get('name')!r}: {what} needs {n_tokens} tokens but n_ctx is {self.n_ctx}"
            )

    def chat_prompt(self, prompt: str) -> str:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise BackendError(
                f"{self.model_path}: the model has no chat template; give the tier a `template` "
                "string containing {prompt}"
            )
        vocab_text = lambda t: self.llm.detokenize([t], special=True).decode("utf-8", errors="replace")  # noqa: E731
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=vocab_text(self.llm.token_eos()),
            bos_token=vocab_text(self.llm.token_bos()),
            add_generation_prompt=True,
        )
        return formatter(messages=[{"role": "user", "content": prompt}]).prompt

    # -- protocol ----------------------------------------------------------------
    def generate(self, prompts: Sequence[str], max_tokens, temperature=0.0, top_logprobs=5):
        return [self._generate_one(p, int(max_tokens), float(temperature), int(top_logprobs)) for p in prompts]

    def _generate_one(self, prompt: str, max_tokens: int, temperature: float, k: int) -> Generation:
        llm = self.llm
        stops = self.stop
        start = time.perf_counter()
        prompt_ids = self._tokenize_prompt(prompt)
        self._check_fits(len(prompt_ids) + max_tokens, "prompt + max_tokens")
        llm.reset()
        llm.eval(prompt_ids)
        out_ids: list[int] = []
        logprobs: list[float] = []
        tops: list[dict[str, float]] = []
        ttft_ms = None
        finish = "length"
        for step in range(max_tokens):
            logp = log_softmax(llm.scores[llm.n_tokens - 1])
            if temperature > 0:
                probs = np.exp((logp - logp.max()) / temperature)
                token = int(self._rng.choice(len(probs), p=probs / probs.sum()))
            else:
                token = int(np.argmax(logp))
            if step == 0:
                ttft_ms = (time.perf_counter() - start) * 1e3
            if self._is_end(token):
                finish = "stop"
                break
            out_ids.append(token)
            logprobs.append(float(logp[token]))
            if k > 0:
                best = np.argpartition(-logp, k)[:k] if k < len(logp) else np.arange(len(logp))
                top, previous = {}, out_ids[:-1]
                for t in best[np.argsort(-logp[best])]:
                    top.setdefault(self._token_text(int(t), previous), float(logp[t]))
                tops.append(top)
            if stops:
                text = llm.detokenize(out_ids).decode("utf-8", errors="ignore")
                if any(s in text for s in stops):
                    finish = "stop"
                    break
            if step + 1 < max_tokens:
                llm.eval([token])
        e2e_ms = (time.perf_counter() - start) * 1e3
        text = llm.detokenize(out_ids).decode("utf-8", errors="replace")
        if any(s in text for s in stops):
            out_ids, logprobs, tops, text = _cut_at_stop(llm, out_ids, logprobs, tops, text, stops)
        return Generation(
            text=text,
            tokens=[self._token_text(t, out_ids[:i]) for i, t in enumerate(out_ids)],
            token_ids=out_ids,
            token_logprobs=logprobs,
            top_logprobs=tops if k > 0 else None,
            n_prompt_tokens=len(prompt_ids),
            n_output_tokens=len(out_ids),
            ttft_ms=ttft_ms,
            e2e_ms=e2e_ms,
            finish_reason=finish,
        )

    def score(self, prompt: str, continuation: str, top_logprobs: int = 1) -> Score:
        llm = self.llm
        start = time.perf_counter()
        prompt_ids = self._tokenize_prompt(prompt)
        draft_ids = self._tokenize_continuation(continuation) if continuation else []
        if not draft_ids:
            return Score([], [], (time.perf_counter() - start) * 1e3)
        self._check_fits(len(prompt_ids) + len(draft_ids), "prompt + draft")
        llm.reset()
        llm.eval(prompt_ids + draft_ids)
        # Row i of the scores predicts token i + 1: the draft's first token is predicted by
        # the prompt's last row, whether or not the model put a BOS token in front.
        rows = np.asarray(llm.scores[len(prompt_ids) - 1 : len(prompt_ids) + len(draft_ids) - 1])
        logp = log_softmax(rows)
        ids = np.asarray(draft_ids)
        token_logprobs = logp[np.arange(len(ids)), ids]
        agrees = np.argmax(rows, axis=1) == ids
        verify_ms = (time.perf_counter() - start) * 1e3
        return Score(
            token_logprobs=[float(x) for x in token_logprobs],
            greedy_agrees=[bool(x) for x in agrees],
            verify_ms=verify_ms,
            tokens=[self._token_text(t, draft_ids[:i]) for i, t in enumerate(draft_ids)],
        )

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "backend_version": f"llama-cpp-python {self._llama_cpp.__version__}",
            "dtype": self.llm.metadata.get("general.file_type") and "gguf",
        }

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()


def _cut_at_stop(llm, ids, logprobs, tops, text, stops):
    """Drop the stop string and every token from the one that completes it onwards."""
    cut = min(text.find(s) for s in stops if s in text)
    keep = len(ids)
    while keep > 0 and len(llm.detokenize(ids[:keep]).decode("utf-8", errors="ignore")) > cut:
        keep -= 1
    ids = ids[:keep]
    return ids, logprobs[:keep], tops[:keep], llm.detokenize(ids).decode("utf-8", errors="replace")
