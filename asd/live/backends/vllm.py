"""vLLM offline backend (`vllm.LLM`) for GPU nodes: one engine per tier with its own
tensor-parallel size and quantization (e.g. bitsandbytes), `disable_log_stats=False` so each
`RequestOutput.metrics` carries measured timings. vLLM is imported only when a tier uses it.

The mapping from vLLM's output objects (`RequestOutput` → `CompletionOutput` → per-position
`{token_id: Logprob(logprob, rank, decoded_token)}`) lives in plain functions below so that
it can be tested where vLLM cannot run.
"""

from __future__ import annotations

import time
from typing import Sequence

from asd.errors import BackendError
from asd.live.backends.base import Backend, Generation, Score, register, tokens_of_text


def _timings_ms(metrics) -> tuple[float | None, float | None]:
    """(ttft_ms, e2e_ms) from a request's metrics; None where vLLM did not measure it.

    V0 engines give `RequestMetrics` (arrival_time, first_token_time, last_token_time,
    finished_time; seconds since the epoch); V1 engines give `RequestStateStats`
    (first_token_latency in seconds, monotonic first_token_ts / last_token_ts).
    """
    if metrics is None:
        return None, None
    arrival = getattr(metrics, "arrival_time", None)
    first = getattr(metrics, "first_token_time", None)
    if first is not None and arrival is not None:
        last = getattr(metrics, "finished_time", None) or getattr(metrics, "last_token_time", None)
        ttft = (first - arrival) * 1e3
        return ttft, ((last - arrival) * 1e3 if last is not None else None)
    latency = getattr(metrics, "first_token_latency", None)
    if latency is not None:
        first_ts, last_ts = getattr(metrics, "first_token_ts", None), getattr(metrics, "last_token_ts", None)
        e2e = latency + (last_ts - first_ts) if first_ts is not None and last_ts is not None else None
        return latency * 1e3, (e2e * 1e3 if e2e is not None else None)
    return None, None


def _token_text(entry, token_id: int) -> str:
    item = entry.get(token_id) if entry else None
    text = getattr(item, "decoded_token", None)
    return text if text is not None else str(token_id)


def generation_from_output(output, tier_name: str = "") -> Generation:
    """A vLLM `RequestOutput` (first completion) → `Generation`."""
    if not output.outputs:
        raise BackendError(f"tier {tier_name!r}: vLLM returned no completion for request {output.request_id!r}")
    completion = output.outputs[0]
    token_ids = list(completion.token_ids)
    positions = completion.logprobs
    if token_ids and not positions:
        raise BackendError(f"tier {tier_name!r}: vLLM returned no logprobs (SamplingParams.logprobs unset?)")
    logprobs, tops, tokens = [], [], []
    for token_id, entry in zip(token_ids, positions or []):
        if token_id not in entry:
            raise BackendError(f"tier {tier_name!r}: vLLM logprobs miss the sampled token {token_id}")
        logprobs.append(float(entry[token_id].logprob))
        tops.append({_token_text(entry, tid): float(lp.logprob) for tid, lp in entry.items()})
        tokens.append(_token_text(entry, token_id))
    keep = tokens_of_text(completion.text, tokens)  # the stop string's tokens are not the answer's
    token_ids, logprobs, tops, tokens = token_ids[:keep], logprobs[:keep], tops[:keep], tokens[:keep]
    ttft_ms, e2e_ms = _timings_ms(getattr(output, "metrics", None))
    return Generation(
        text=completion.text,
        tokens=tokens,
        token_ids=token_ids,
        token_logprobs=logprobs,
        top_logprobs=tops,
        n_prompt_tokens=len(output.prompt_token_ids or []),
        n_output_tokens=len(token_ids),
        ttft_ms=ttft_ms,
        e2e_ms=e2e_ms,
        finish_reason=completion.finish_reason,
    )


def score_from_output(output, n_prompt: int, draft_ids: Sequence[int], verify_ms: float | None) -> Score:
    """Verifier logprobs of `draft_ids`, which follow `n_prompt` prompt tokens in `output`'s
    prompt, from its `prompt_logprobs` (one dict per prompt position, None at position 0)."""
    positions = output.prompt_logprobs
    if positions is None or len(positions) < n_prompt + len(draft_ids):
        raise BackendError("vLLM returned no prompt logprobs (SamplingParams.prompt_logprobs unset?)")
    logprobs, agrees, tokens = [], [], []
    for j, token_id in enumerate(draft_ids):
        entry = positions[n_prompt + j]
        item = entry[token_id]
        logprobs.append(float(item.logprob))
        rank = getattr(item, "rank", None)
        if rank is not None:
            agrees.append(rank == 1)  # vLLM ranks from 1 (the argmax)
        else:
            agrees.append(all(item.logprob >= other.logprob for other in entry.values()))
        tokens.append(_token_text(entry, token_id))
    return Score(token_logprobs=logprobs, greedy_agrees=agrees, verify_ms=verify_ms, tokens=tokens)


@register
class VLLMBackend(Backend):
    """Tier options: `model` (HF id or path), `tensor_parallel`, `quantization` (e.g.
    bitsandbytes), `dtype`, `gpu_memory_utilization`, `max_model_len`, `seed`, `template`
    (`chat` uses the tokenizer's chat template), `stop`, `engine_args` (passed to `vllm.LLM`)."""

    name = "vllm"
    options = ("seed", "gpu_memory_utilization", "max_model_len", "engine_args")
    default_batch_size = 256  # the engine batches continuously; small calls would starve it

    def __init__(self, tier):
        super().__init__(tier)
        try:
            import vllm
        except ImportError:
            raise BackendError(
                f"tier {tier.get('name')!r}: backend vllm needs vLLM on a GPU node (pip install 'asd[gpu]')"
            ) from None
        self._vllm = vllm
        kwargs = {
            "model": str(tier["model"]),
            "tensor_parallel_size": int(tier.get("tensor_parallel") or 1),
            "disable_log_stats": False,  # per-request metrics (timings) need stats on
            "seed": int(tier.get("seed") or 0),
        }
        for key in ("quantization", "dtype", "gpu_memory_utilization", "max_model_len"):
            if tier.get(key) is not None:
                kwargs[key] = tier[key]
        kwargs.update(tier.get("engine_args") or {})
        try:
            self.llm = vllm.LLM(**kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            raise BackendError(f"tier {tier.get('name')!r}: vLLM could not load {tier['model']} ({exc})") from None
        self.tokenizer = self.llm.get_tokenizer()

    def chat_prompt(self, prompt: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    def generate(self, prompts, max_tokens, temperature=0.0, top_logprobs=5):
        params = self._vllm.SamplingParams(
            max_tokens=int(max_tokens),
            temperature=float(temperature),
            logprobs=max(1, int(top_logprobs)),
            stop=self.stop or None,
            seed=int(self.tier.get("seed") or 0) if temperature > 0 else None,
        )
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        return [generation_from_output(o, self.tier.get("name", "")) for o in outputs]

    def score(self, prompt: str, continuation: str, top_logprobs: int = 1) -> Score:
        return self.score_batch([(prompt, continuation)], top_logprobs)[0]

    def score_batch(self, pairs, top_logprobs: int = 1) -> list[Score]:
        """All drafts of a batch in one engine call; verify_ms from each request's metrics."""
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=max(1, top_logprobs))
        requests, shapes = [], []
        for prompt, continuation in pairs:
            prompt_ids = self.tokenizer.encode(prompt)
            draft_ids = self.tokenizer.encode(continuation, add_special_tokens=False) if continuation else []
            requests.append({"prompt_token_ids": prompt_ids + draft_ids})
            shapes.append((len(prompt_ids), draft_ids))
        start = time.perf_counter()
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        batch_ms = (time.perf_counter() - start) * 1e3
        scores = []
        for output, (n_prompt, draft_ids) in zip(outputs, shapes):
            _, e2e_ms = _timings_ms(getattr(output, "metrics", None))
            # A lone request's wall time is its own; in a batch only per-request metrics are.
            verify_ms = e2e_ms if e2e_ms is not None else (batch_ms if len(pairs) == 1 else None)
            scores.append(score_from_output(output, n_prompt, draft_ids, verify_ms))
        return scores

    def describe(self) -> dict:
        dtype = None
        try:
            dtype = str(self.llm.llm_engine.model_config.dtype).replace("torch.", "")
        except AttributeError:
            pass
        return {"backend": self.name, "backend_version": f"vllm {self._vllm.__version__}", "dtype": dtype}

    def close(self) -> None:
        # Free GPU memory before the next tier's engine loads.
        self.llm = None
        try:
            import gc

            import torch

            gc.collect()
            torch.cuda.empty_cache()
        except ImportError:
            pass
