"""Cost and latency of each (request, tier) — run cold, or continuing from the previous tier's
draft — for the engine's tables, the replay and the discrete-event simulator.

Three models (`COST_MODELS`), chosen by `fit_cost_model(view, kind)`:
- `trace`: from the trace's own timings. Per tier, TTFT = a + b·prompt tokens (HuberRegressor)
  and time per output token = median of (e2e − ttft)/(n_out − 1), both with their residual
  spread. A request's latency is its recorded e2e where present, else the fit's prediction.
- `profile`: the hardware profile (asd/calibration/data/hardware_profile.json, fitted from Vidur's
  GPU operator timings): the tier's hardware (a100/h100 from the manifest, else h100) and tensor
  parallelism (the manifest's; where it names none, the smallest TP whose GPUs hold the fp16
  weights in 80% of 80 GB: 8B/13B → 1, 34B → 2, 70B → 4).
- `params`: cost = params_b × (prompt + output tokens), the inspect oracle's FLOPs yardstick;
  latency from the profile on h100 at the same tensor parallelism as `profile`. A continuation
  counts the tokens its weights run over: prompt + the whole draft it verifies (rejected tokens
  too) + those decoded after the accepted prefix.
GPU cost (`trace`, `profile`) = latency × GPUs of the tier (tensor parallel × 1 replica).
A missing token count is filled with its tier's mean recorded count (the inspect rule,
`asd.traces.summary`), rounded to a whole token, never free; `CostGrid` carries the counts it charged.

The iteration model shared with the DES: one continuous-batching iteration takes
    c0 + c1·prefill_tokens + c2·decode_seqs + c3·kv_tokens
(`CostModel.iteration_coefficients()`, (L, 4), ms). A request alone runs one prefill iteration
over its P = prompt (+ draft) tokens — c0 + (c1 + c3)·P, which yields its first new token — then
m = n_out − n_accepted − 1 decode iterations, the j-th (1-based) over kv_len = prompt + accepted + j
tokens: c0 + c2 + c3·kv_len. `request_latency_ms` is that sum in closed form and is what `grid()`
uses, so for `profile` and `params` a DES at zero load reproduces `latency_ms` exactly.

Speculative continuation (tier i given tier i−1's draft, `drafts` table): verify the draft in one
forward pass over prompt + draft, then decode only after the accepted prefix (n_accepted = the
longest prefix the verifier accepts). A bundle whose manifest says `"draft_acceptance":
"sps_steps"` (Spec-Bench: accepted tokens summed over SpS steps, not a prefix) or that has no
drafts is priced as regeneration: cost_cont = cost, said in `note`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from asd.calibration.profiles import load_hardware_profile, tier_hardware, tier_tensor_parallel
from asd.errors import ConfigError, PolicyError, TraceError
from asd.simulator.latency import latency_ms as request_latency_ms  # the one closed form, shared with the DES
from asd.traces.schema import DEFAULT_DRAFT_ACCEPTANCE, DRAFT_ACCEPTANCE
from asd.traces.summary import _fill_counts as fill_token_counts  # the inspect oracle's imputation rule

COST_MODELS = ("trace", "profile", "params")
COST_MODEL_FORMAT = "asd-cost-model/1"
PARAMS_HARDWARE = "h100"


@dataclass(frozen=True)
class CostGrid:
    """Per (request, tier) cost and latency; every array (N, L) float64 and finite."""

    cost: np.ndarray
    cost_cont: np.ndarray
    latency_ms: np.ndarray
    latency_cont_ms: np.ndarray
    speculative: bool
    unit: str  # "gpu_ms" or "params_tokens"
    note: str = ""
    # The token counts charged, (N, L) float64 whole numbers, so a simulator replays exactly what
    # was priced: missing counts filled (rounded to whole tokens); draft length and accepted prefix
    # where tier i continues from tier i−1's draft, 0 elsewhere (continuation = a prefill over
    # n_prompt + n_draft, then decode iterations from kv = n_prompt + n_accepted).
    n_prompt_tokens: np.ndarray | None = None
    n_output_tokens: np.ndarray | None = None
    n_draft_tokens: np.ndarray | None = None
    n_accepted: np.ndarray | None = None


@dataclass
class CostModel:
    """A fitted cost/latency model for one ladder; JSON-able for the policy file."""

    kind: str
    tier_names: list[str]
    coefficients: np.ndarray  # (L, 4) iteration coefficients, ms
    gpus: np.ndarray  # (L,) int64: tensor parallel × 1 replica
    params_b: np.ndarray  # (L,) float64, NaN where unknown
    unit: str
    note: str
    details: dict = field(default_factory=dict)  # per-kind fit results (residual spreads, hardware, ...)

    def iteration_coefficients(self) -> np.ndarray:
        return np.array(self.coefficients, dtype=np.float64, copy=True)

    # ---------------------------------------------------------------- grid

    def grid(self, view) -> CostGrid:
        """Cost and latency of every (request, tier) of `view` (a TraceView or anything with its fields)."""
        n_tiers = len(view.tier_names)
        if list(view.tier_names) != list(self.tier_names):
            raise TraceError(
                f"{getattr(view, 'path', 'trace')}: tiers {list(view.tier_names)} differ from the cost model's {self.tier_names}"
            )
        n_prompt, n_out, fill_note = _filled_tokens(view)
        speculative, why = _speculative(view)
        coeffs = self.coefficients[None, :, :]
        model_cold = request_latency_ms(coeffs, n_prompt, n_out)
        cont_mask, n_draft, n_acc = _continuations(view, n_out, speculative, n_tiers)
        model_cont = np.where(cont_mask, request_latency_ms(coeffs, n_prompt, n_out, n_draft, n_acc), model_cold)

        if self.kind == "trace":
            latency, latency_cont = self._trace_latency(view, n_prompt, n_out, model_cold, model_cont, cont_mask, n_acc)
        else:
            latency, latency_cont = model_cold, model_cont
        if self.kind == "params":
            params = self.params_b[None, :]
            tokens = n_prompt + n_out
            no_counts = not tokens.any()
            cost = params * (np.ones_like(tokens) if no_counts else tokens)
            cont_tokens = n_prompt + n_draft + np.maximum(n_out - n_acc, 0.0)
            cost_cont = np.where(cont_mask, params * cont_tokens, cost)
            if speculative:  # dearer than regenerating where less than half the draft is accepted
                why += ("; params of a continuation: prompt + the whole draft it verifies + the tokens decoded "
                        "after the accepted prefix")
            if no_counts:
                fill_note = (fill_note + "; " if fill_note else "") + "no token counts: params cost = params_b per request"
        else:
            gpus = self.gpus[None, :].astype(np.float64)
            cost, cost_cont = latency * gpus, latency_cont * gpus
        arrays = dict(cost=cost, cost_cont=cost_cont, latency_ms=latency, latency_cont_ms=latency_cont)
        for name, a in arrays.items():
            arrays[name] = np.ascontiguousarray(np.broadcast_to(a, n_prompt.shape), dtype=np.float64)
            if not np.isfinite(arrays[name]).all():
                raise TraceError(f"{getattr(view, 'path', 'trace')}: {self.kind} cost model gave a non-finite {name}")
        note = "; ".join(s for s in (self.note, why, fill_note) if s)
        return CostGrid(**arrays, speculative=speculative, unit=self.unit, note=note,
                        n_prompt_tokens=n_prompt, n_output_tokens=n_out, n_draft_tokens=n_draft, n_accepted=n_acc)

    def _trace_latency(self, view, n_prompt, n_out, model_cold, model_cont, cont_mask, n_acc):
        """Recorded e2e where present; ttft + tpot·(n_out − 1) where only ttft is; the fit otherwise.
        Continuation: recorded verify_ms + tpot per token decoded after the accepted prefix where
        verify_ms is recorded, else the recorded latency scaled by the model's continuation/cold ratio."""
        tpot = np.asarray(self.details["tpot_ms"], dtype=np.float64)[None, :]
        e2e, ttft = np.asarray(view.e2e_ms, np.float64), np.asarray(view.ttft_ms, np.float64)
        decode = tpot * np.maximum(n_out - 1.0, 0.0)
        fitted = self._fitted_ttft(n_prompt) + decode  # NaN at a tier with no timings to fit: its profile's
        latency = np.where(np.isfinite(e2e), e2e, np.where(np.isfinite(ttft), ttft + decode,
                                                            np.where(np.isfinite(fitted), fitted, model_cold)))
        verify = np.asarray(view.draft_verify_ms, np.float64)
        after_prefix = verify + tpot * np.maximum(n_out - n_acc - 1.0, 0.0)
        ratio = model_cont / np.where(model_cold > 0, model_cold, 1.0)
        latency_cont = np.where(cont_mask, np.where(np.isfinite(verify), after_prefix, latency * ratio), latency)
        return latency, latency_cont

    def _fitted_ttft(self, n_prompt):
        """TTFT(prompt tokens) as each tier's trace fit predicts it, for a request with no timings at
        that tier; NaN at a tier that had no timings to fit (priced by the profile's coefficients).
        (The iteration coefficients match this fit only at the tier's mean prompt length.)"""
        fits = self.details.get("tiers") or [{}] * len(self.tier_names)
        a = np.array([f.get("ttft_intercept_ms", np.nan) for f in fits], dtype=np.float64)[None, :]
        b = np.array([f.get("ttft_per_prompt_token_ms", np.nan) for f in fits], dtype=np.float64)[None, :]
        return a + b * n_prompt

    # ---------------------------------------------------------------- JSON

    def to_dict(self) -> dict:
        return {
            "format": COST_MODEL_FORMAT,
            "kind": self.kind,
            "tier_names": list(self.tier_names),
            "coefficients": [[float(v) for v in row] for row in self.coefficients],
            "gpus": [int(g) for g in self.gpus],
            "params_b": [None if not np.isfinite(p) else float(p) for p in self.params_b],
            "unit": self.unit,
            "note": self.note,
            "details": _jsonable(self.details),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "CostModel":
        if not isinstance(data, dict) or data.get("format") != COST_MODEL_FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise PolicyError(f"cost model: format {got!r}, expected {COST_MODEL_FORMAT!r}")
        missing = [k for k in ("kind", "tier_names", "coefficients", "gpus", "params_b", "unit", "note") if k not in data]
        if missing:
            raise PolicyError(f"cost model: missing key {missing[0]!r}")
        if data["kind"] not in COST_MODELS:
            raise PolicyError(f"cost model: unknown kind {data['kind']!r}; known: {', '.join(COST_MODELS)}")
        n = len(data["tier_names"])
        coeffs = np.asarray(data["coefficients"], dtype=np.float64)
        if coeffs.shape != (n, 4) or not np.isfinite(coeffs).all() or (coeffs < 0).any():
            raise PolicyError(f"cost model: coefficients must be {n} rows of 4 finite numbers >= 0")
        gpus = np.asarray(data["gpus"], dtype=np.int64)
        if gpus.shape != (n,) or (gpus < 1).any():
            raise PolicyError(f"cost model: gpus must be {n} whole numbers >= 1")
        params = np.array([np.nan if p is None else p for p in data["params_b"]], dtype=np.float64)
        details = dict(data.get("details") or {})
        if data["kind"] == "trace" and len(details.get("tpot_ms") or []) != n:
            raise PolicyError(f"cost model: a trace model needs details.tpot_ms for its {n} tiers")
        return cls(data["kind"], list(data["tier_names"]), coeffs, gpus, params, data["unit"], data["note"], details)


# -------------------------------------------------------------------- fitting


def fit_cost_model(view, kind: str) -> CostModel:
    """Fit the `kind` cost model (one of COST_MODELS) on a trace view."""
    if kind not in COST_MODELS:
        raise ConfigError(f"unknown cost model {kind!r}; choose one of {', '.join(COST_MODELS)}")
    names = [str(n) for n in view.tier_names]
    params = np.asarray(view.params_b, dtype=np.float64)
    tp = np.asarray(view.tensor_parallel, dtype=np.int64)
    tp = np.where(tp >= 1, tp, 1)
    tiers = (view.manifest or {}).get("tiers") or [{} for _ in names]
    tp_notes = _assume_tensor_parallel(names, params, tp, tiers)
    if kind == "trace":
        return _fit_trace(view, names, params, tp, tp_notes)
    hardware, hw_notes = [], []
    for i, name in enumerate(names):
        if not (np.isfinite(params[i]) and params[i] > 0):
            raise ConfigError(f"tier {name}: parameter count unknown; the {kind} cost model needs params_b for every tier "
                              f"(give it when importing: asd traces import ... --params-b {name}=BILLIONS)")
        if kind == "params":
            hardware.append(PARAMS_HARDWARE)
        else:
            hw, why = tier_hardware(tiers[i] if i < len(tiers) else {})
            hardware.append(hw)
            hw_notes.append(f"{name}: {why}")
    coeffs = _profile_coefficients(names, params, tp, hardware)
    details = {"hardware": hardware, "tensor_parallel": tp.tolist(), "profile": _profile_provenance()}
    scale = _profile_scale_note(params) + ("; " + ", ".join(tp_notes) if tp_notes else "")
    if kind == "profile":
        note = (f"hardware profile (Vidur-derived) per tier: {', '.join(hw_notes)}, TP {tp.tolist()}; "
                f"GPU cost = latency x TP{scale}")
        return CostModel(kind, names, coeffs, tp.copy(), params, "gpu_ms", note, details)
    note = (f"params: cost = params_b x (prompt + output tokens); latency from the hardware profile on "
            f"{PARAMS_HARDWARE}, TP {tp.tolist()}{scale}")
    return CostModel(kind, names, coeffs, tp.copy(), params, "params_tokens", note, details)


def _assume_tensor_parallel(names, params, tp, tiers) -> list[str]:
    """Fill, in `tp`, the TP of each tier whose manifest names none: the usual deployment for its
    size (`tier_tensor_parallel`), else 1 when its size is unknown too; one note per tier
    filled, for the cost model's note (a 70B tier priced on one GPU was a quarter of its cost)."""
    notes = []
    for i, name in enumerate(names):
        if (tiers[i] if i < len(tiers) else {}).get("tensor_parallel") is not None:
            continue
        sized = bool(np.isfinite(params[i]) and params[i] > 0)
        tp[i] = tier_tensor_parallel({"params_b": float(params[i])})
        notes.append(f"{name}: TP {tp[i]} (assumed: " + ("fp16 weights in 80% of 80 GB per GPU)" if sized else
                                                       "neither its TP nor its size is known)"))
    return notes


def _profile_coefficients(names, params, tp, hardware) -> np.ndarray:
    profile = load_hardware_profile()
    rows = []
    for name, p, t, hw in zip(names, params, tp, hardware):
        try:
            rows.append(profile.coefficients(hw, float(p), int(t)))
        except ConfigError as exc:
            raise ConfigError(f"tier {name}: {exc}") from None
    return np.array(rows, dtype=np.float64)


def _profile_provenance() -> dict:
    prov = load_hardware_profile().document["provenance"]
    return {"source": prov["source"]["repo"] + "@" + prov["source"]["commit"], "generated_at": prov.get("generated_at")}


def _profile_scale_note(params: np.ndarray) -> str:
    profile = load_hardware_profile()
    lo, hi = profile.params[0], profile.params[-1]
    outside = [f"{p:g}B" for p in params if np.isfinite(p) and (p < lo or p > hi)]
    if not outside:
        return "; sizes between profiled ones interpolated linearly in parameter count"
    return (f"; {', '.join(outside)} outside the profiled {lo:g}-{hi:g}B: coefficients scaled in proportion "
            f"to parameter count")


def _fit_trace(view, names, params, tp, tp_notes=()) -> CostModel:
    """Per tier: TTFT(prompt tokens) by HuberRegressor, time per output token by the median, and
    their residual spreads; tiers without timings get the profile's coefficients (stated)."""
    ttft_all, e2e_all = np.asarray(view.ttft_ms, np.float64), np.asarray(view.e2e_ms, np.float64)
    if not (np.isfinite(ttft_all).any() or np.isfinite(e2e_all).any()):
        raise TraceError(
            f"{getattr(view, 'path', 'trace')}: no recorded timings (ttft_ms, e2e_ms) at any tier, so the trace "
            f"cost model has nothing to fit; use the profile or params cost model"
        )
    n_prompt_raw, n_out_raw = np.asarray(view.n_prompt_tokens, np.float64), np.asarray(view.n_output_tokens, np.float64)
    n_prompt, n_out, _ = _filled_tokens(view)
    tiers = (view.manifest or {}).get("tiers") or [{} for _ in names]
    coeffs, fits, notes = [], [], []
    for i, name in enumerate(names):
        fit = _fit_trace_tier(ttft_all[:, i], e2e_all[:, i], n_prompt_raw[:, i], n_out_raw[:, i])
        if fit is None:
            if not (np.isfinite(params[i]) and params[i] > 0):
                raise TraceError(f"tier {name}: no recorded timings and no parameter count for a profile fallback")
            hw, _ = tier_hardware(tiers[i] if i < len(tiers) else {})
            c = _profile_coefficients([name], params[i:i + 1], tp[i:i + 1], [hw])[0]
            coeffs.append(c)
            fit = {"source": f"hardware profile ({hw}, TP {int(tp[i])}): no timings recorded", "tpot_ms": float(c[0] + c[2])}
            notes.append(f"{name}: no timings, hardware profile used")
        else:
            coeffs.append(_trace_coefficients(fit, n_prompt[:, i], n_out[:, i]))
            if "iteration_note" in fit:
                notes.append(f"{name}: {fit['iteration_note']}")
        fits.append(fit)
    details = {
        "tpot_ms": [f["tpot_ms"] for f in fits],
        "tiers": fits,
    }
    note = ("trace: recorded e2e where present, else TTFT(prompt tokens) + time per output token fitted per tier; "
            "GPU cost = latency x TP; iteration coefficients reproduce the fit at the tier's mean prompt length "
            "(the recorded e2e itself is not an iteration model)")
    if notes or tp_notes:
        note += "; " + "; ".join([*notes, *tp_notes])
    return CostModel("trace", names, np.array(coeffs, dtype=np.float64), tp.copy(), params, "gpu_ms", note, details)


# HuberRegressor is iterative over every row (about 8 s per tier at 10^6 rows): above this many
# timed rows it is fitted on a seeded subsample (stated in the fit), residual spreads on all rows.
MAX_HUBER_ROWS = 20_000


def _huber(x, y, seed=0) -> tuple[tuple[float, float] | None, str | None]:
    """A robust line y ≈ intercept + slope·x by HuberRegressor on (x (n,), y), on at most
    MAX_HUBER_ROWS seeded rows: ((intercept, slope), note); None for the line where the solver
    fails, so the caller keeps its median."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import HuberRegressor
    from threadpoolctl import threadpool_limits

    n = y.shape[0]
    note = None
    if n > MAX_HUBER_ROWS:
        keep = np.sort(np.random.default_rng(seed).choice(n, MAX_HUBER_ROWS, replace=False))
        x, y = x[keep], y[keep]
        note = f"HuberRegressor fitted on a seeded subsample of {MAX_HUBER_ROWS} of {n} timed rows"
    # Fitted on unit scales: in milliseconds and tokens l-BFGS-b sometimes ended ABNORMAL, which
    # sklearn raises as a ValueError (a traceback from fitting a cost model on real timings).
    x_scale = float(np.std(x)) or 1.0
    y_scale = float(np.median(np.abs(y))) or float(np.max(np.abs(y))) or 1.0
    # one BLAS thread: a one-feature fit gains nothing from more, and on a busy machine spinning
    # threads made it 10-100x slower. lbfgs stopping at its iteration limit on a few noisy
    # timings is still a usable robust line; its warning was six lines with a URL among asd's
    # one-line warnings (as the predictors' fits)
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            reg = HuberRegressor().fit((x / x_scale)[:, None], y / y_scale)
        except ValueError:
            return None, note
    return (float(reg.intercept_) * y_scale, float(reg.coef_[0]) * y_scale / x_scale), note


def _fit_trace_tier(ttft, e2e, n_prompt, n_out) -> dict | None:

    has_ttft = np.isfinite(ttft)
    has_e2e = np.isfinite(e2e)
    if not (has_ttft.any() or has_e2e.any()):
        return None
    fit: dict = {"source": "trace timings"}
    both = has_ttft & has_e2e & np.isfinite(n_out) & (n_out >= 2)
    if has_ttft.any():
        rows = has_ttft & np.isfinite(n_prompt)
        a, b, resid = float(np.median(ttft[has_ttft])), 0.0, ttft[has_ttft] - np.median(ttft[has_ttft])
        if rows.sum() >= 3 and np.ptp(n_prompt[rows]) > 0:
            line, sub_note = _huber(n_prompt[rows], ttft[rows])
            if sub_note:
                fit["subsample_note"] = sub_note
            if line is not None and line[1] >= 0:
                a, b = line
                resid = ttft[rows] - (a + b * n_prompt[rows])
        fit.update(ttft_intercept_ms=a, ttft_per_prompt_token_ms=b, ttft_residual_sd_ms=float(np.std(resid)),
                   n_ttft=int(has_ttft.sum()))
        if both.any():
            per_token = (e2e[both] - ttft[both]) / (n_out[both] - 1.0)
            fit.update(tpot_ms=float(np.median(per_token)), tpot_sd_ms=float(np.std(per_token)), n_tpot=int(both.sum()))
        else:
            fit.update(tpot_ms=0.0, tpot_sd_ms=0.0, n_tpot=0, tpot_note="no request with ttft, e2e and >= 2 output tokens")
    else:
        # e2e only (e.g. Spec-Bench): e2e = a + tpot·(n_out − 1), a standing in for TTFT.
        rows = has_e2e & np.isfinite(n_out)
        a, tpot, resid = float(np.median(e2e[has_e2e])), 0.0, e2e[has_e2e] - np.median(e2e[has_e2e])
        if rows.sum() >= 3 and np.ptp(n_out[rows]) > 0:
            decodes = np.maximum(n_out[rows] - 1.0, 0.0)
            line, sub_note = _huber(decodes, e2e[rows])
            if sub_note:
                fit["subsample_note"] = sub_note
            if line is not None and line[1] >= 0:
                a, tpot = max(line[0], 0.0), line[1]
                resid = e2e[rows] - (line[0] + tpot * decodes)
        fit.update(ttft_intercept_ms=a, ttft_per_prompt_token_ms=0.0, ttft_residual_sd_ms=float("nan"),
                   n_ttft=0, tpot_ms=tpot, tpot_sd_ms=float("nan"), e2e_residual_sd_ms=float(np.std(resid)),
                   n_tpot=int(rows.sum()),
                   tpot_note="no ttft recorded: e2e = a + tpot x (n_out - 1) fitted by HuberRegressor, a standing in for TTFT")
    fit["ttft_intercept_ms"] = max(fit["ttft_intercept_ms"], 0.0)
    fit["tpot_ms"] = max(fit["tpot_ms"], 0.0)
    return fit


def _trace_coefficients(fit: dict, n_prompt: np.ndarray, n_out: np.ndarray) -> np.ndarray:
    """Iteration coefficients matching a tier's TTFT/TPOT fit for a request alone: c0 + c1·n_prompt
    = TTFT and c0 + c2 = TPOT. All four stay ≥ 0 (a DES batch must never get faster with more
    sequences), so c0 = min(a, tpot) and the rest of the TTFT intercept moves into c1 at the tier's
    mean prompt length (exact on average over the trace's prompts). With no prompt tokens to
    carry it, every iteration costs what makes a request alone take its fitted time at the tier's
    mean output length (stated in the fit's iteration_note, which the model's note repeats)."""
    a, b, tpot = fit["ttft_intercept_ms"], fit["ttft_per_prompt_token_ms"], fit["tpot_ms"]
    mean_prompt = float(np.mean(n_prompt)) if n_prompt.size else 0.0
    if mean_prompt > 0 or a <= tpot:
        c0 = min(a, tpot)
        c1 = b + ((a - c0) / mean_prompt if mean_prompt > 0 else 0.0)
        return np.array([c0, c1, max(tpot - c0, 0.0), 0.0], dtype=np.float64)
    # The prefill iteration has no tokens to charge a − tpot to. Charging every iteration tpot
    # timed one-token answers (a classifier's) at 0 ms in the DES; one iteration cost over a
    # request's n_out iterations keeps its e2e, a + (n_out − 1)·tpot, at the mean n_out.
    outputs = max(float(np.mean(n_out)) if n_out.size else 1.0, 1.0)
    c0 = (a + (outputs - 1.0) * tpot) / outputs
    fit["iteration_note"] = (f"no prompt tokens: every iteration costs {c0:.3g} ms, so a request alone takes its "
                             f"fitted e2e at the mean {outputs:.3g} output tokens (TTFT {a:.3g} ms, TPOT {tpot:.3g} ms)")
    return np.array([c0, b, 0.0, 0.0], dtype=np.float64)


# -------------------------------------------------------------------- helpers


def _filled_tokens(view) -> tuple[np.ndarray, np.ndarray, str]:
    """Prompt and output token grids with missing counts filled (the inspect oracle's rule)."""
    n_prompt, filled_p = fill_token_counts(np.asarray(view.n_prompt_tokens, dtype=np.float64))
    n_out, filled_o = fill_token_counts(np.asarray(view.n_output_tokens, dtype=np.float64))
    # Whole tokens, so an iteration-level simulator charges exactly these counts.
    n_prompt, n_out = np.rint(n_prompt), np.rint(n_out)
    notes = []
    if filled_p or filled_o:
        notes.append(f"{filled_p + filled_o} missing token count(s) filled with that tier's mean recorded count "
                     f"(rounded to a whole token)")
    for label, raw in (("prompt", view.n_prompt_tokens), ("output", view.n_output_tokens)):
        raw = np.asarray(raw, dtype=np.float64)
        none = np.isnan(raw).all(axis=0)
        if none.any() and not none.all():  # the fill rule's fallback: such a tier's cost is a guess
            names = ", ".join(str(n) for n, x in zip(view.tier_names, none) if x)
            notes.append(f"{names} recorded no {label} token count: filled with the mean over every tier")
    for label, raw in (("prompt", view.n_prompt_tokens), ("output", view.n_output_tokens)):
        if np.isnan(np.asarray(raw, dtype=np.float64)).all():
            notes.append(f"no {label} token counts recorded: counted as 0")
    return n_prompt, n_out, "; ".join(notes)


def draft_acceptance(manifest: dict | None) -> str:
    """What `drafts.n_accepted` means in a bundle: `longest_prefix` (the schema's meaning, default)
    or `sps_steps` (accepted tokens summed over speculative-sampling steps, Spec-Bench)."""
    value = (manifest or {}).get("draft_acceptance", DEFAULT_DRAFT_ACCEPTANCE)
    if value not in DRAFT_ACCEPTANCE:
        raise TraceError(f"manifest.json: draft_acceptance {value!r} is not one of {', '.join(DRAFT_ACCEPTANCE)}")
    return value


def _speculative(view) -> tuple[bool, str]:
    if not getattr(view, "has_drafts", False):
        return False, "regeneration: trace has no drafts"
    meaning = draft_acceptance(getattr(view, "manifest", None))
    if meaning != "longest_prefix":
        return False, (f"regeneration: the drafts' n_accepted is {meaning} (accepted tokens summed over "
                       f"speculative-sampling steps), not a longest accepted prefix")
    if not np.isfinite(np.asarray(view.draft_n_accepted, dtype=np.float64)).any():
        return False, "regeneration: drafts record no n_accepted"
    return True, "speculative continuation from drafts (verify prompt + draft, decode after the accepted prefix)"


def _continuations(view, n_out_filled, speculative: bool, n_tiers: int):
    """(mask, n_draft, n_accepted) grids: where tier i can continue from tier i−1's draft. A draft
    length not recorded is taken as tier i−1's output token count (stated in the module note)."""
    shape = n_out_filled.shape
    if not speculative:
        zeros = np.zeros(shape)
        return np.zeros(shape, dtype=bool), zeros, zeros
    acc = np.asarray(view.draft_n_accepted, dtype=np.float64)
    n_draft = np.asarray(view.draft_n_tokens, dtype=np.float64)
    previous = np.concatenate([np.zeros((shape[0], 1)), n_out_filled[:, :-1]], axis=1)
    n_draft = np.where(np.isfinite(n_draft), n_draft, previous)
    mask = np.isfinite(acc)
    mask[:, 0] = False
    n_draft = np.rint(np.maximum(n_draft, 0.0))
    n_acc = np.where(mask, np.minimum(acc, n_draft), 0.0)
    return mask, np.where(mask, n_draft, 0.0), n_acc


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


__all__ = [
    "COST_MODELS", "DRAFT_ACCEPTANCE", "CostGrid", "CostModel", "draft_acceptance", "fit_cost_model",
    "request_latency_ms",
]
