"""Time prefill and decode of one Llama-shaped decoder layer (8B/13B/34B/70B shapes, random
bf16 weights) on a GPU, for batch sizes 1..64, to check the simulator's latency model.

Run on a GPU node only (never in CI): `python benchmarks/gpu/bench_llama_layers.py --json out.json`.
Per shape and batch it prints the measured per-layer time, the whole-model estimate
(layers × layer time + LM head), and a roofline baseline measured in the same run (peak
bf16 matmul throughput and device memory bandwidth, each measured here), with the ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

# name: hidden, intermediate, attention heads, key/value heads, layers, vocabulary
SHAPES = {
    "8b": dict(hidden=4096, intermediate=14336, heads=32, kv_heads=8, layers=32, vocab=128256),  # Llama-3-8B
    "13b": dict(hidden=5120, intermediate=13824, heads=40, kv_heads=40, layers=40, vocab=32000),  # Llama-2-13B
    "34b": dict(hidden=8192, intermediate=22016, heads=64, kv_heads=8, layers=48, vocab=32000),  # CodeLlama-34B
    "70b": dict(hidden=8192, intermediate=28672, heads=64, kv_heads=8, layers=80, vocab=128256),  # Llama-3-70B
}


def need_gpu():
    try:
        import torch
    except ImportError:
        sys.exit("bench_llama_layers: PyTorch is not installed; run this on a GPU node (pip install 'asd[gpu]')")
    if not torch.cuda.is_available():
        sys.exit("bench_llama_layers: no CUDA GPU visible (torch.cuda.is_available() is False); run it on a GPU node")
    return torch


class Layer:
    """One pre-norm Llama decoder layer: RMSNorm, GQA attention with RoPE, SwiGLU MLP."""

    def __init__(self, torch, shape: dict, device, dtype):
        self.t = torch
        h, i = shape["hidden"], shape["intermediate"]
        self.heads, self.kv_heads = shape["heads"], shape["kv_heads"]
        self.head_dim = h // self.heads
        kv = self.kv_heads * self.head_dim
        g = torch.Generator(device=device).manual_seed(0)
        w = lambda rows, cols: (torch.randn(rows, cols, device=device, dtype=dtype, generator=g) * rows**-0.5)  # noqa: E731
        self.wqkv = w(h, h + 2 * kv)
        self.wo = w(h, h)
        self.w_gate_up = w(h, 2 * i)
        self.w_down = w(i, h)
        self.norm1 = torch.ones(h, device=device, dtype=dtype)
        self.norm2 = torch.ones(h, device=device, dtype=dtype)
        self.intermediate = i
        self.kv = kv
        inv = 1.0 / (10000 ** (torch.arange(0, self.head_dim, 2, device=device, dtype=torch.float32) / self.head_dim))
        self.inv_freq = inv

    def weight_bytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in (self.wqkv, self.wo, self.w_gate_up, self.w_down))

    def _rms(self, x, weight):
        t = self.t
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * t.rsqrt(variance + 1e-5)).to(x.dtype) * weight

    def _rope(self, x, positions):
        t = self.t
        freqs = positions.float()[:, None] * self.inv_freq[None, :]  # (seq, head_dim/2)
        cos, sin = freqs.cos().to(x.dtype), freqs.sin().to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return t.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)

    def _attention(self, F, q, k, v, causal: bool):
        try:  # grouped-query attention without materialising repeated K/V (torch >= 2.5)
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=self.kv_heads != self.heads)
        except TypeError:
            repeat = self.heads // self.kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def forward(self, x, positions, cache=None):
        """x: (batch, seq, hidden). `cache` = (k, v), each (batch, kv_heads, context, head_dim)."""
        t = self.t
        F = t.nn.functional
        b, s, h = x.shape
        y = self._rms(x, self.norm1)
        q, k, v = (y @ self.wqkv).split([h, self.kv, self.kv], dim=-1)
        q = self._rope(q.view(b, s, self.heads, self.head_dim), positions).transpose(1, 2)
        k = self._rope(k.view(b, s, self.kv_heads, self.head_dim), positions).transpose(1, 2)
        v = v.view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        if cache is not None:
            # Preallocated KV cache covering the whole context: write this step in place
            # (as serving engines do) and attend over all of it.
            cache[0][:, :, positions] = k
            cache[1][:, :, positions] = v
            k, v = cache
        attn = self._attention(F, q, k, v, causal=cache is None)
        x = x + attn.transpose(1, 2).reshape(b, s, h) @ self.wo
        y = self._rms(x, self.norm2)
        gate, up = (y @ self.w_gate_up).split([self.intermediate, self.intermediate], dim=-1)
        return x + (F.silu(gate) * up) @ self.w_down


def cuda_time_ms(torch, fn, repeats: int, warmup: int = 3) -> float:
    """Median of `repeats` CUDA-event timings of `fn()` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure_peaks(torch, device, dtype, repeats: int) -> dict:
    """Roofline inputs measured on this device: bf16 matmul TFLOP/s and copy bandwidth GB/s."""
    n = 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = cuda_time_ms(torch, lambda: a @ b, repeats)
    tflops = 2 * n**3 / (ms * 1e-3) / 1e12
    src = torch.empty(1 << 30, device=device, dtype=torch.uint8)  # 1 GiB
    dst = torch.empty_like(src)
    ms_copy = cuda_time_ms(torch, lambda: dst.copy_(src), repeats)
    bandwidth = 2 * src.numel() / (ms_copy * 1e-3) / 1e9  # read + write
    del a, b, src, dst
    torch.cuda.empty_cache()
    return {"matmul_tflops": tflops, "copy_gb_s": bandwidth}


def layer_flops(shape: dict, tokens: int, context: int) -> float:
    """Matmul FLOPs of one layer for `tokens` new tokens attending to `context` positions each."""
    h, i = shape["hidden"], shape["intermediate"]
    kv = shape["kv_heads"] * (h // shape["heads"])
    dense = 2 * tokens * (h * (h + 2 * kv) + h * h + h * 2 * i + i * h)
    attention = 2 * 2 * tokens * context * h  # QK^T and PV
    return dense + attention


def bench_shape(torch, name, shape, batches, prompt_len, context_len, repeats, device, dtype, peaks) -> list[dict]:
    layer = Layer(torch, shape, device, dtype)
    head = torch.randn(shape["hidden"], shape["vocab"], device=device, dtype=dtype) * shape["hidden"] ** -0.5
    rows = []
    for batch in batches:
        try:
            x = torch.randn(batch, prompt_len, shape["hidden"], device=device, dtype=dtype)
            positions = torch.arange(prompt_len, device=device)
            with torch.inference_mode():
                prefill_ms = cuda_time_ms(torch, lambda: layer.forward(x, positions), repeats)
                head_prefill_ms = cuda_time_ms(torch, lambda: x[:, -1, :] @ head, repeats)
                kv_shape = (batch, shape["kv_heads"], context_len, shape["hidden"] // shape["heads"])
                cache = (torch.randn(kv_shape, device=device, dtype=dtype), torch.randn(kv_shape, device=device, dtype=dtype))
                step = torch.randn(batch, 1, shape["hidden"], device=device, dtype=dtype)
                step_pos = torch.tensor([context_len - 1], device=device)
                decode_ms = cuda_time_ms(torch, lambda: layer.forward(step, step_pos, cache), repeats)
                head_decode_ms = cuda_time_ms(torch, lambda: step[:, -1, :] @ head, repeats)
            del x, cache, step
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            rows.append({"shape": name, "batch": batch, "error": "out of GPU memory"})
            continue
        kv_bytes = 2 * batch * shape["kv_heads"] * (shape["hidden"] // shape["heads"]) * context_len * 2
        # Roofline baselines from this run's measured peaks: prefill is compute-bound, decode
        # reads every weight (and the KV cache) once per step.
        prefill_roof_ms = layer_flops(shape, batch * prompt_len, prompt_len / 2) / (peaks["matmul_tflops"] * 1e12) * 1e3
        decode_roof_ms = max(
            (layer.weight_bytes() + kv_bytes) / (peaks["copy_gb_s"] * 1e9) * 1e3,
            layer_flops(shape, batch, context_len) / (peaks["matmul_tflops"] * 1e12) * 1e3,
        )
        rows.append(
            {
                "shape": name,
                "batch": batch,
                "prompt_len": prompt_len,
                "context_len": context_len,
                "prefill_ms_per_layer": prefill_ms,
                "decode_ms_per_layer": decode_ms,
                "prefill_roofline_ms_per_layer": prefill_roof_ms,
                "decode_roofline_ms_per_layer": decode_roof_ms,
                "prefill_ratio_to_roofline": prefill_ms / prefill_roof_ms,
                "decode_ratio_to_roofline": decode_ms / decode_roof_ms,
                "model_prefill_ms": shape["layers"] * prefill_ms + head_prefill_ms,
                "model_decode_ms_per_token": shape["layers"] * decode_ms + head_decode_ms,
                "layers": shape["layers"],
            }
        )
        print(
            f"{name:>4} b={batch:<3} prefill {prefill_ms:8.3f} ms/layer (roofline {prefill_roof_ms:7.3f}, "
            f"×{prefill_ms / prefill_roof_ms:5.2f})  decode {decode_ms:7.3f} ms/layer (roofline "
            f"{decode_roof_ms:6.3f}, ×{decode_ms / decode_roof_ms:5.2f})  model: prefill "
            f"{rows[-1]['model_prefill_ms']:8.1f} ms, decode {rows[-1]['model_decode_ms_per_token']:7.2f} ms/token",
            flush=True,
        )
    del layer, head
    torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="8b,13b,34b,70b", help="comma list of " + ",".join(SHAPES))
    parser.add_argument("--batches", default="1,2,4,8,16,32,64")
    parser.add_argument("--prompt-len", type=int, default=512, help="prefill tokens per sequence")
    parser.add_argument("--context-len", type=int, default=1024, help="KV length a decode step attends to")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()
    shapes = [s.strip().lower() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        sys.exit(f"bench_llama_layers: unknown shape {unknown[0]!r} (shapes are {', '.join(SHAPES)})")
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        sys.exit(f"bench_llama_layers: --batches {args.batches!r} is not a comma list of integers")

    torch = need_gpu()
    device, dtype = torch.device("cuda"), torch.bfloat16
    torch.backends.cuda.matmul.allow_tf32 = True
    started = time.time()
    with torch.inference_mode():
        peaks = measure_peaks(torch, device, dtype, args.repeats)
    print(f"device {torch.cuda.get_device_name(0)}: bf16 matmul {peaks['matmul_tflops']:.0f} TFLOP/s, "
          f"copy {peaks['copy_gb_s']:.0f} GB/s (measured; roofline baselines below use these)")
    rows = []
    for name in shapes:
        rows += bench_shape(torch, name, SHAPES[name], batches, args.prompt_len, args.context_len,
                            args.repeats, device, dtype, peaks)
    report = {
        "benchmark": "bench_llama_layers",
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "host": platform.node(),
        "dtype": "bfloat16",
        "weights": "random (timing only)",
        "peaks": peaks,
        "shapes": {k: SHAPES[k] for k in shapes},
        "rows": rows,
        "seconds": time.time() - started,
    }
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"wrote {args.json_path}")


if __name__ == "__main__":
    main()
