"""Hardware latency profile: continuous-batching iteration time of Llama-shaped 7B/13B/34B/70B
models at tensor parallelism 1/2/4/8 on A100/H100, derived from Vidur's measured operator
timings, and the committed coefficients the `profile` and `params` cost models read.

One iteration of a batch takes  t_ms = c0 + c1·prefill_tokens + c2·decode_seqs + c3·kv_tokens.
How the four numbers are obtained (`fit_hardware_profile`, run by
`scripts/fit_hardware_profile.py`; the committed JSON records the same in `provenance`):
- per (hardware, model, TP), one scikit-learn IsotonicRegression per Vidur op (milliseconds per
  layer vs tokens in the batch; monotone, as Vidur fits one regressor per op) on 3 of every 4
  measured token counts (the 4th is held out for `heldout_mape`);
- the model's linear-op time at n batch tokens = emb(n) + n_layers·Σ other ops(n) + 2·n_layers·
  all_reduce(n·hidden·2 bytes) (TP > 1, IsotonicRegression on Vidur's single-node DGX
  all-reduce table) + the LM head's weight read (vocab·hidden·2 bytes / TP / effective HBM
  bandwidth, once per iteration);
- that time is evaluated densely — decode batches of 1..128 sequences and prefill chunks of
  64..4096 tokens — and c0, c1, c2 fitted by non-negative least squares on relative error
  (LinearRegression(positive=True), weights 1/t², i.e. Vidur's MAPE scoring);
- c3 is analytic: decode attention is memory-bound (the attention tables are missing from the
  data), c3 = KV bytes per token (2·n_layers·n_kv_heads·head_dim·2 bytes) / TP / (HBM peak ×
  efficiency). Prefill attention's quadratic FLOPs are left out (about 1% of a 70B prefill at
  550 tokens).
- 13B is not profiled by Vidur. InternLM-20B's layers have exactly Llama-2-13B's shape (hidden
  5120, MLP 13824, 40 heads, 40 KV heads), so the 13B entry uses InternLM-20B's per-layer op
  timings with Llama-2-13B's 40 layers and 32000-token vocabulary.
A tier whose size lies between profiled sizes gets each coefficient interpolated linearly in
parameter count; outside 6.74B..69B every coefficient scales in proportion to the parameter
count (a roofline assumption, stated in the cost model's note).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from asd.errors import ConfigError

PROFILE_PATH = Path(__file__).resolve().parent / "data" / "hardware_profile.json"
PROFILE_FORMAT = "asd-hardware-profile/1"
ITERATION_FORM = "t_ms = c0 + c1*prefill_tokens + c2*decode_seqs + c3*kv_tokens_in_batch"

VIDUR_SOURCE = {
    "repo": "microsoft/vidur",
    "commit": "7d47513363ec447a741ac5e47241580b47724fbf",
    "paths": ["data/profiling/compute/{a100,h100}/<org>/<model>/mlp.csv", "data/profiling/network/{a100_dgx,h100_dgx}/all_reduce.csv"],
    "license": "MIT",
    "via": "shared/data/vidur/profiling_mlp_ops.parquet, profiling_network.parquet (tidy copies)",
}

# Memory bandwidth: nominal peak of the SXM parts Vidur profiled (A100-SXM4-80GB, H100-SXM5-80GB)
# times an achieved fraction typical of memory-bound decode kernels.
PARAMS_B_MAX = 100_000.0  # billions: 100 T parameters, far past any served model

HARDWARE = {
    "a100": {"hbm_tb_s": 2.039, "topology": "a100_dgx", "gpu": "A100-SXM4-80GB"},
    "h100": {"hbm_tb_s": 3.35, "topology": "h100_dgx", "gpu": "H100-SXM5-80GB"},
}
HBM_EFFICIENCY = 0.8
BYTES_PER_VALUE = 2  # fp16/bf16 weights, activations and KV cache
TENSOR_PARALLEL = (1, 2, 4, 8)

# Profile classes: Llama shapes; `vidur_model` whose per-layer op timings are used.
MODELS = {
    "7b": dict(params_b=6.74, hidden=4096, heads=32, kv_heads=32, layers=32, vocab=32000,
               model_id="meta-llama/Llama-2-7b-hf", vidur_model="meta-llama/Llama-2-7b-hf"),
    "13b": dict(params_b=13.02, hidden=5120, heads=40, kv_heads=40, layers=40, vocab=32000,
                model_id="meta-llama/Llama-2-13b-hf", vidur_model="internlm/internlm-20b",
                derived="InternLM-20B per-layer op timings (same layer shape as Llama-2-13B) x 40 layers"),
    "34b": dict(params_b=33.74, hidden=8192, heads=64, kv_heads=8, layers=48, vocab=32000,
                model_id="codellama/CodeLlama-34b-hf", vidur_model="codellama/CodeLlama-34b-Instruct-hf"),
    "70b": dict(params_b=68.98, hidden=8192, heads=64, kv_heads=8, layers=80, vocab=32000,
                model_id="meta-llama/Llama-2-70b-hf", vidur_model="meta-llama/Llama-2-70b-hf"),
}
OPS = ("emb", "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
       "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
DECODE_MAX_BATCH = 128  # decode batches 1..128 sequences
PREFILL_MIN_TOKENS = 64  # prefill chunks of 64..4096 tokens
HOLDOUT_EVERY = 4  # every 4th measured token count is held out of the fit


def _kv_bytes_per_token(shape: dict) -> float:
    head_dim = shape["hidden"] // shape["heads"]
    return 2.0 * shape["layers"] * shape["kv_heads"] * head_dim * BYTES_PER_VALUE


def _bandwidth_bytes_per_ms(hardware: str) -> float:
    return HARDWARE[hardware]["hbm_tb_s"] * 1e12 * HBM_EFFICIENCY / 1e3


def _isotonic(x: np.ndarray, y: np.ndarray):
    from sklearn.isotonic import IsotonicRegression

    return IsotonicRegression(increasing=True, out_of_bounds="clip").fit(x, y)


class _LinearOpTime:
    """Linear-op time (ms) of one forward pass over n batch tokens for one (hardware, model, TP)."""

    def __init__(self, ops_table, network_table, hardware: str, shape: dict, tp: int, fit_tokens: np.ndarray):
        rows = ops_table[ops_table["num_tokens"].isin(fit_tokens)]
        self.op_models = {op: _isotonic(rows["num_tokens"].to_numpy(float), rows[f"time_stats.{op}.median"].to_numpy(float))
                          for op in OPS}
        self.shape, self.tp, self.hardware = shape, tp, hardware
        self.all_reduce = None
        if tp > 1:
            net = network_table[
                (network_table["topology"] == HARDWARE[hardware]["topology"])
                & (network_table["collective"] == "all_reduce")
                & (network_table["num_workers"] == tp)
                & (network_table["devices_per_node"] == tp)
            ]
            if net.empty:
                raise ConfigError(f"vidur network table: no single-node all_reduce for {hardware} x {tp}")
            self.all_reduce = _isotonic(net["size"].to_numpy(float), net["time_ms_median"].to_numpy(float))
        self.lm_head_ms = shape["vocab"] * shape["hidden"] * BYTES_PER_VALUE / tp / _bandwidth_bytes_per_ms(hardware)

    def non_op_ms(self, n: np.ndarray) -> np.ndarray:
        """All-reduce and LM-head time: modelled, not measured per op."""
        extra = np.full(np.shape(n), self.lm_head_ms, dtype=float)
        if self.all_reduce is not None:
            size = np.asarray(n, dtype=float) * self.shape["hidden"] * BYTES_PER_VALUE
            extra += 2 * self.shape["layers"] * self.all_reduce.predict(size)
        return extra

    def ops_ms(self, op_values: dict) -> np.ndarray:
        """Embedding once per pass, every other op once per layer."""
        layer = sum(op_values[op] for op in OPS if op != "emb")
        return op_values["emb"] + self.shape["layers"] * layer

    def __call__(self, n: np.ndarray) -> np.ndarray:
        n = np.asarray(n, dtype=float)
        return self.ops_ms({op: m.predict(n) for op, m in self.op_models.items()}) + self.non_op_ms(n)


def _fit_coefficients(time_fn: _LinearOpTime, max_tokens: int) -> np.ndarray:
    """c0, c1, c2 by non-negative least squares on relative error over the dense batch grid."""
    from sklearn.linear_model import LinearRegression

    decode = np.arange(1, DECODE_MAX_BATCH + 1, dtype=float)
    prefill = np.arange(PREFILL_MIN_TOKENS, max_tokens + 1, 8, dtype=float)
    x = np.concatenate([np.column_stack([np.zeros_like(decode), decode]), np.column_stack([prefill, np.zeros_like(prefill)])])
    y = np.concatenate([time_fn(decode), time_fn(prefill)])
    # c0 enters as a column of ones so it is constrained >= 0 with the others.
    design = np.column_stack([np.ones(len(y)), x])
    reg = LinearRegression(positive=True, fit_intercept=False).fit(design, y, sample_weight=1.0 / y**2)
    return reg.coef_.astype(float)


def _split_tokens(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Measured token counts → (fit, held out): every HOLDOUT_EVERY-th from the second on is held
    out; the smallest and largest stay in the fit so nothing is extrapolated."""
    tokens = np.sort(np.unique(tokens))
    held = np.zeros(len(tokens), dtype=bool)
    held[1:-1:HOLDOUT_EVERY] = True
    return tokens[~held], tokens[held]


def _read_vidur(vidur_dir: Path):
    import pandas as pd

    ops_file, net_file = vidur_dir / "profiling_mlp_ops.parquet", vidur_dir / "profiling_network.parquet"
    for f in (ops_file, net_file):
        if not f.is_file():
            raise ConfigError(f"{f}: not found (the Vidur profiling tables from shared/data/vidur)")
    return pd.read_parquet(ops_file), pd.read_parquet(net_file)


def _entries(vidur_dir: Path):
    """Yield (hardware, model key, tp, time model, measured rows, held-out token counts)."""
    ops, net = _read_vidur(Path(vidur_dir))
    for hardware in HARDWARE:
        for key, shape in MODELS.items():
            for tp in TENSOR_PARALLEL:
                rows = ops[(ops["hardware"] == hardware) & (ops["model"] == shape["vidur_model"])
                           & (ops["num_tensor_parallel_workers"] == tp)]
                if rows.empty:
                    raise ConfigError(f"vidur: no op timings for {shape['vidur_model']} on {hardware} at TP {tp}")
                fit_tokens, held = _split_tokens(rows["num_tokens"].to_numpy())
                yield hardware, key, tp, _LinearOpTime(rows, net, hardware, shape, tp, fit_tokens), rows, held


def _iteration_ms(c: np.ndarray, prefill, decode) -> np.ndarray:
    return c[0] + c[1] * np.asarray(prefill, float) + c[2] * np.asarray(decode, float)


def _heldout_errors(c: np.ndarray, time_fn: _LinearOpTime, rows, held: np.ndarray) -> dict:
    """Relative error of the fitted iteration model against the *measured* op sums (plus the same
    modelled all-reduce and LM-head terms) at the held-out token counts: a decode batch of n
    sequences for n ≤ DECODE_MAX_BATCH, a prefill chunk of n tokens for n ≥ PREFILL_MIN_TOKENS."""
    meas = rows[rows["num_tokens"].isin(held)].groupby("num_tokens")[[f"time_stats.{op}.median" for op in OPS]].median()
    n = meas.index.to_numpy(float)
    measured = time_fn.ops_ms({op: meas[f"time_stats.{op}.median"].to_numpy(float) for op in OPS}) + time_fn.non_op_ms(n)
    out = {}
    dec, pre = n <= DECODE_MAX_BATCH, n >= PREFILL_MIN_TOKENS
    if dec.any():
        out["decode_mape"] = float(np.mean(np.abs(_iteration_ms(c, 0, n[dec]) - measured[dec]) / measured[dec]))
    if pre.any():
        out["prefill_mape"] = float(np.mean(np.abs(_iteration_ms(c, n[pre], 0) - measured[pre]) / measured[pre]))
    out["n_heldout"] = int(len(n))
    return out


# A profiled model kept out of the fit, to check the interpolation in parameter count.
INTERPOLATION_CHECK = dict(hardware="a100", vidur_model="meta-llama/Meta-Llama-3-8B", params_b=8.03, hidden=4096,
                           heads=32, kv_heads=8, layers=32, vocab=128256)


def interpolation_errors(vidur_dir: str | Path, profile: "HardwareProfile") -> dict:
    """MAPE of the profile's coefficients interpolated at 8.03B (between the 7B and 13B entries)
    against Vidur's measured Llama-3-8B on A100 (GQA, 128k vocabulary; never used in the fit), at
    every measured token count up to 4096, per TP."""
    ops, net = _read_vidur(Path(vidur_dir))
    check = INTERPOLATION_CHECK
    out = {}
    for tp in TENSOR_PARALLEL:
        rows = ops[(ops["hardware"] == check["hardware"]) & (ops["model"] == check["vidur_model"])
                   & (ops["num_tensor_parallel_workers"] == tp) & (ops["num_tokens"] <= 4096)]
        time_fn = _LinearOpTime(rows, net, check["hardware"], check, tp, np.unique(rows["num_tokens"].to_numpy()))
        c = profile.coefficients(check["hardware"], check["params_b"], tp)
        out[f"tp{tp}"] = _heldout_errors(c, time_fn, rows, np.unique(rows["num_tokens"].to_numpy()))
    return out


def fit_hardware_profile(vidur_dir: str | Path) -> dict:
    """The hardware profile document (without its date) from the Vidur tables in `vidur_dir`."""
    entries, all_dec, all_pre = [], [], []
    for hardware, key, tp, time_fn, rows, held in _entries(Path(vidur_dir)):
        shape = MODELS[key]
        c012 = _fit_coefficients(time_fn, int(rows["num_tokens"].max()))
        c3 = _kv_bytes_per_token(shape) / tp / _bandwidth_bytes_per_ms(hardware)
        coeffs = np.append(c012, c3)
        errors = _heldout_errors(coeffs, time_fn, rows, held)
        all_dec.append(errors["decode_mape"])
        all_pre.append(errors["prefill_mape"])
        entries.append({"hardware": hardware, "model": key, "tensor_parallel": tp,
                        "coefficients": [round(float(v), 9) for v in coeffs], "heldout": errors})
    document = {
        "format": PROFILE_FORMAT,
        "iteration_form": ITERATION_FORM,
        "units": "milliseconds per iteration; c1 per prefill token, c2 per decode sequence, c3 per KV-cache token read",
        "provenance": {
            "source": VIDUR_SOURCE,
            "generated_by": "scripts/fit_hardware_profile.py (asd.calibration.profiles.fit_hardware_profile)",
            "method": __doc__.split("How the four numbers are obtained", 1)[1].split("A tier whose size", 1)[0].strip(),
            "constants": {
                "hbm_tb_s": {k: v["hbm_tb_s"] for k, v in HARDWARE.items()},
                "gpus": {k: v["gpu"] for k, v in HARDWARE.items()},
                "hbm_efficiency": HBM_EFFICIENCY,
                "bytes_per_value": BYTES_PER_VALUE,
                "decode_batches": [1, DECODE_MAX_BATCH],
                "prefill_tokens_min": PREFILL_MIN_TOKENS,
                "holdout": f"every {HOLDOUT_EVERY}th measured token count (interior) held out of the fit",
            },
        },
        "models": {k: {f: v for f, v in m.items()} for k, m in MODELS.items()},
        "entries": entries,
        "validation": {
            "vidur_heldout_decode_mape_mean": float(np.mean(all_dec)),
            "vidur_heldout_decode_mape_max": float(np.max(all_dec)),
            "vidur_heldout_prefill_mape_mean": float(np.mean(all_pre)),
            "vidur_heldout_prefill_mape_max": float(np.max(all_pre)),
        },
    }
    interp = interpolation_errors(vidur_dir, HardwareProfile(document))
    document["validation"]["interpolated_8b_vs_llama3_8b_a100"] = {
        "decode_mape_max_over_tp": max(e["decode_mape"] for e in interp.values()),
        "prefill_mape_max_over_tp": max(e["prefill_mape"] for e in interp.values()),
        "what": "coefficients interpolated at 8.03B between the 7B and 13B entries vs Vidur's measured "
                "Meta-Llama-3-8B on A100 (not used in the fit)",
    }
    return document


class HardwareProfile:
    """The committed profile: iteration coefficients per (hardware, profiled size, TP)."""

    def __init__(self, document: dict):
        if document.get("format") != PROFILE_FORMAT:
            raise ConfigError(f"hardware profile: format {document.get('format')!r}, expected {PROFILE_FORMAT!r}")
        self.document = document
        self.sizes = sorted(document["models"], key=lambda k: document["models"][k]["params_b"])
        self.params = np.array([document["models"][k]["params_b"] for k in self.sizes], dtype=float)
        self._table = {(e["hardware"], e["model"], e["tensor_parallel"]): np.asarray(e["coefficients"], dtype=float)
                       for e in document["entries"]}

    def coefficients(self, hardware: str, params_b: float, tensor_parallel: int) -> np.ndarray:
        """[c0, c1, c2, c3] (ms) for a Llama-shaped model of `params_b` billion parameters."""
        if hardware not in HARDWARE:
            raise ConfigError(f"hardware profile: unknown hardware {hardware!r}; profiled: {', '.join(HARDWARE)}")
        if tensor_parallel not in TENSOR_PARALLEL:
            raise ConfigError(f"hardware profile: tensor parallel {tensor_parallel} not profiled; profiled: {TENSOR_PARALLEL}")
        if not (np.isfinite(params_b) and params_b > 0):
            raise ConfigError(f"hardware profile: parameter count must be a positive number, got {params_b!r}")
        if params_b > PARAMS_B_MAX:  # 70e9 for 70: the count in parameters, not billions
            raise ConfigError(f"hardware profile: parameter count {params_b:g} billion is not a model size; "
                              "give it in billions (70 for a 70B model)")
        table = np.stack([self._table[(hardware, k, tensor_parallel)] for k in self.sizes])
        if params_b <= self.params[0]:
            return table[0] * params_b / self.params[0]
        if params_b >= self.params[-1]:
            return table[-1] * params_b / self.params[-1]
        return np.array([np.interp(params_b, self.params, table[:, j]) for j in range(4)])


@functools.lru_cache(maxsize=4)
def _load(path: str) -> HardwareProfile:
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the hardware profile ({exc})") from None
    return HardwareProfile(document)


def load_hardware_profile(path: str | Path | None = None) -> HardwareProfile:
    """The committed profile (asd/calibration/data/hardware_profile.json) or another file."""
    return _load(str(path or PROFILE_PATH))


def tier_hardware(tier: dict) -> tuple[str, str]:
    """Profile hardware for a manifest tier entry: a100 or h100 when its `hardware` says so, else
    h100 (stated as the returned reason)."""
    text = str(tier.get("hardware") or "").lower()
    for name in HARDWARE:
        if name in text:
            return name, f"{name} (manifest)"
    return "h100", "h100 (assumed: manifest hardware " + (repr(tier.get("hardware")) if tier.get("hardware") else "unknown") + ")"


GPU_MEMORY_GB = 80.0  # both profiled parts are 80 GB
WEIGHT_MEMORY_SHARE = 0.8  # the rest holds the KV cache and activations


def default_tensor_parallel(params_b: float) -> int:
    """Smallest profiled TP whose GPUs hold the fp16 weights in 80% of 80 GB each (8B, 13B → 1;
    34B → 2; 70B → 4): the usual deployment, for a tier whose manifest names no TP."""
    for tp in TENSOR_PARALLEL:
        if params_b * BYTES_PER_VALUE <= WEIGHT_MEMORY_SHARE * GPU_MEMORY_GB * tp:
            return tp
    return TENSOR_PARALLEL[-1]


def tier_tensor_parallel(tier: dict) -> int:
    """A tier's GPUs (its manifest entry or tier config): the `tensor_parallel` it states, else
    the usual deployment for its `params_b` (`default_tensor_parallel`), else 1 — the one rule
    of the cost models, the live runner's GPU-seconds and `asd live`'s simulated pools."""
    if tier.get("tensor_parallel") is not None:
        return int(tier["tensor_parallel"])
    params = tier.get("params_b")
    if params is not None and np.isfinite(params) and params > 0:
        return default_tensor_parallel(float(params))
    return 1


# ---------------------------------------------------------------- LLMPerf cross-check

LLMPERF_SIZES = {"7b": 6.74, "13b": 13.02, "70b": 68.98}
LLMPERF_EXCLUDED = {("groq", "70b"): "LPU, not a GPU", ("bedrock", "13b"): "inter-token latency anomalous (data README)"}


def llmperf_comparison(requests_csv: str | Path, profile: HardwareProfile, concurrency: int = 5) -> list[dict]:
    """Per Llama-2-chat size: the providers' median TTFT and inter-token latency (errors and zero
    rows dropped) beside the profile's, for a request of the median prompt/output length decoded
    in a batch of `concurrency` (LLMPerf's 5 concurrent requests) on each profiled (hardware, TP)."""
    import pandas as pd

    data = pd.read_csv(requests_csv)
    data = data[data["error_code"].isna() & (data["ttft_s"] > 0) & (data["inter_token_latency_s"] > 0)]
    out = []
    for size, params_b in LLMPERF_SIZES.items():
        rows = data[data["model_size"] == size]
        providers = {}
        for provider, g in rows.groupby("provider"):
            if (provider, size) in LLMPERF_EXCLUDED:
                continue
            providers[provider] = {"ttft_ms": float(g["ttft_s"].median() * 1e3), "itl_ms": float(g["inter_token_latency_s"].median() * 1e3)}
        n_in, n_out = float(rows["number_input_tokens"].median()), float(rows["number_output_tokens"].median())
        profiled = []
        for hardware in HARDWARE:
            for tp in TENSOR_PARALLEL:
                c = profile.coefficients(hardware, params_b, tp)
                ttft = c[0] + (c[1] + c[3]) * n_in
                kv = concurrency * (n_in + n_out / 2)
                itl = c[0] + c[2] * concurrency + c[3] * kv
                profiled.append({"hardware": hardware, "tensor_parallel": tp, "ttft_ms": float(ttft), "itl_ms": float(itl)})
        out.append({"size": size, "n_input_tokens": n_in, "n_output_tokens": n_out, "providers": providers, "profile": profiled})
    return out
