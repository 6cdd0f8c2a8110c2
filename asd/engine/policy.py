"""The Policy: engine tables + predictor weights + the stop/start tables solved for one λ.
Saved as one versioned file (npz with a JSON header that carries `meta`: features, cost model,
provenance, bundle hash); `asd simulate` and `asd live` load it. `update` folds online outcomes
into the Beta posteriors; `from_calibration` builds it from features and out-of-fold p̂.

How it decides (DESIGN.md, "The decision problem, done right"): the predictor turns a
request's features after tier i into a calibrated P(accept), which falls into bin b; the
request stops at tier i iff the stop table says λ(1 − q_i(b)) ≤ c_{i+1}(b) + Σ T_i(b,b') V_{i+1}(b'),
the value of going on (backward induction over tiers, `dp_nb.solve_dp_nb`). Before any tier,
stage 0 scores the prompt alone and picks the start tier s minimising c_s + Σ T_{0→s} V_s, or,
when the tables keep start evidence (`asd calibrate` does), the start from which the calibration
requests in that prompt bin did best when replayed under the solved stop tables.
Solving for a new λ is O(L·B²) and rewrites the tables in place; a decision is one predictor
evaluation and one table lookup.
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numba.core.errors import NumbaError

from asd import __version__
from asd.engine import decide_nb as K
from asd.engine.dp_nb import (TIE_LOW, empirical_start_nb, evidence_sums_nb, path_totals_nb, routed_totals_nb,
                              solve_cold_start_nb, solve_dp_nb, walk_bins_cold_nb, walk_bins_nb)
from asd.engine.tables import COLD_FIELDS, EVIDENCE_FIELDS, EngineTables, check_evidence, parse_risk, pooling_weights
from asd.errors import PolicyError, real_number
from asd.traces.jsonl import loads_unique

POLICY_FORMAT = "asd.policy"
# 2: meta header, start_lam, per-stage feature counts, cold-start tables, identity predictor.
# 3: optional start evidence (stage 0 chosen by replaying the calibration requests).
# 4: optional routed stage 0 (prompt rows per tier, their evidence, the solved threshold).
POLICY_VERSION = 4
READABLE_VERSIONS = (2, 3, 4)  # a version-2 file has no start evidence: its stage 0 is the model's
# Pseudo-requests of the model's value in each prompt bin's empirical start value: enough to
# decide an empty bin, too few to outweigh a single observed request.
START_PRIOR_WEIGHT = 1.0
PREDICTOR_KINDS = {"logistic": K.LOGISTIC, "mlp": K.MLP, "identity": K.IDENTITY}
# The routed stage 0's candidate thresholds: this many quantiles of the calibration requests'
# prompt-only scores (as the router baseline's grid), and one no score reaches (start at the last tier).
ROUTE_THRESHOLDS = 64
# Evidence sums kept per distinct pair of stop tables (`evidence_sums_nb`): a λ enumeration meets
# a few hundred; past this many the oldest go (each is a few (L, B0) and (G,) arrays).
EVIDENCE_SUMS_CACHE = 1024
# build_tables options from_calibration passes through (p̂ arrays come from its own arguments).
TABLE_OPTIONS = ("start_costs", "n_bins", "n_prompt_bins", "binning", "prior_alpha", "prior_beta", "prior_strength",
                 "smoothing", "empirical_start", "p_hat_weight", "pool_bins")
# Out-of-fold p̂ and the final predictor's in-sample p̂ differ by fold noise, not by this much:
# a larger mean gap means the features or p̂ came from something else.
AGREEMENT_TOL = 0.25
# Below this many calibration requests, fold models fitted on a few dozen rows can miss the
# tolerance by chance; the refusal then says to calibrate on more, not that the fit is foreign.
FEW_REQUESTS = 100


def _f64(name, a, shape=None):
    a = np.ascontiguousarray(a, dtype=np.float64)
    if shape is not None and a.shape != shape:
        raise PolicyError(f"{name} has shape {a.shape}: expected {shape}")
    if not np.isfinite(a).all():
        raise PolicyError(f"{name} contains NaN or infinite values")
    return a


def _whole(name: str, values) -> np.ndarray:
    """`values` as a contiguous int64 array, or one PolicyError: a string was numpy's bare
    ValueError, and 0.7 was truncated to bin 0 without a word."""
    try:
        a = np.asarray(values)
        if a.dtype.kind in "biu" or (a.dtype.kind == "f" and np.isfinite(a).all() and np.array_equal(a, np.trunc(a))):
            a = a.astype(np.int64, copy=False)
            return a if a.ndim == 0 else np.ascontiguousarray(a)  # a scalar tier stays 0-d
    except (TypeError, ValueError, OverflowError):
        pass
    raise PolicyError(f"{name}: must be whole numbers (got {_describe(values)})")


def _describe(a) -> str:
    shape = getattr(a, "shape", None)
    return f"{type(a).__name__} of shape {shape}" if shape is not None else type(a).__name__


def _non_finite_refusal(exc: ValueError, call: str) -> PolicyError:
    """The single-decision kernels refuse NaN/inf features with ValueError(K.NON_FINITE): that
    becomes a PolicyError naming the call; any other ValueError is re-raised as it is."""
    if str(exc) != K.NON_FINITE:
        raise exc
    return PolicyError(f"{call}: {K.NON_FINITE}")


def _ragged(name, rows, inner_ndim):
    """Stack per-stage arrays whose last axis may differ (prompt P vs tier F features), zero-
    padded to the widest; returns (stacked, feature counts per stage)."""
    if isinstance(rows, np.ndarray) or not isinstance(rows, (list, tuple)):
        a = np.asarray(rows, dtype=np.float64)
        if a.ndim != inner_ndim + 1:
            return a, None
        return a, np.full(a.shape[0], a.shape[-1], dtype=np.int64)
    arrays = [np.asarray(r, dtype=np.float64) for r in rows]
    if not arrays or any(a.ndim != inner_ndim for a in arrays):
        raise PolicyError(f"{name}: expected one {inner_ndim}-d array per stage")
    if len({a.shape[:-1] for a in arrays}) != 1:
        raise PolicyError(f"{name}: stages differ in shape other than the feature count")
    width = max(a.shape[-1] for a in arrays)
    out = np.zeros((len(arrays),) + arrays[0].shape[:-1] + (width,))
    for i, a in enumerate(arrays):
        out[i, ..., : a.shape[-1]] = a
    return out, np.array([a.shape[-1] for a in arrays], dtype=np.int64)


def _json_meta(meta) -> dict:
    meta = {} if meta is None else dict(meta)
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"policy meta must be JSON-able (strings, numbers, lists, dicts): {exc}") from None
    return meta


def route_row_count(n_tiers: int) -> int:
    """Predictor rows the routed stage 0 adds: prompt-only P(acceptable at tier s) for s in
    1..L−2 (tier 0's is row 0, the last tier needs none)."""
    return max(int(n_tiers) - 2, 0)


def quantile_thresholds(values, size: int) -> np.ndarray:
    """`size` candidate thresholds on scores in [0, 1]: size − 1 quantiles of `values` and 2.0,
    which no score reaches (sorted, distinct)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    qs = np.quantile(values, np.linspace(0.0, 1.0, max(size - 1, 1))) if values.size else np.array([])
    return np.ascontiguousarray(np.unique(np.concatenate([qs, [2.0]])))


def route_thresholds(route_p: np.ndarray) -> np.ndarray:
    """Candidate thresholds of the routed stage 0: quantiles of the calibration requests'
    prompt-only scores, every tier's pooled (the router baseline's grid), and 2.0 (every request
    starts at the last tier)."""
    return quantile_thresholds(route_p, ROUTE_THRESHOLDS)


@dataclass(frozen=True)
class Predictor:
    """Acceptance predictor in the forms calibration exports, one row per stage.

    Row 0 scores the prompt alone (stage 0; used only when `has_prompt`), row i+1 scores the
    request after tier i answered. w1 (S, H, W), b1 (S, H), w2 (S, H), b2 (S,): a logistic
    regression is H = 1 (w2, b2 unused); an MLP has one ReLU hidden layer of width H;
    "identity" takes feature 0 as p̂ (precomputed scores). Stage i reads feature_counts[i]
    values (prompt features P may differ from tier features F; W = the widest, zero-padded).
    The raw output goes through a piecewise-linear isotonic table per row (iso_x, iso_y padded
    to K knots, knot_counts real knots per row). Without a prompt stage, L rows are enough:
    Policy pads row 0.
    """

    kind: str
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    iso_x: np.ndarray
    iso_y: np.ndarray
    knot_counts: np.ndarray
    has_prompt: bool = False
    feature_counts: np.ndarray | None = None

    def __post_init__(self):
        self._check_arrays()
        counts = self.feature_counts
        width = self.w1.shape[2]
        counts = (np.full(self.w1.shape[0], width, dtype=np.int64) if counts is None
                  else np.ascontiguousarray(counts, dtype=np.int64))
        if counts.shape != (self.w1.shape[0],) or (counts < 1).any() or (counts > width).any():
            raise PolicyError(f"predictor feature counts {counts.tolist()}: need one in 1..{width} per stage")
        object.__setattr__(self, "feature_counts", counts)

    def _check_arrays(self) -> None:
        """Shapes that agree, finite weights, and isotonic tables the kernels may index: the
        compiled forward pass trusts all three (a knot count beyond the table read past it,
        and crashed the process; a NaN weight made a p̂ that never stops)."""
        w1 = getattr(self.w1, "shape", ())
        if len(w1) != 3 or 0 in w1[:2]:
            raise PolicyError(f"predictor w1 has shape {w1}: expected (stages, hidden, features)")
        rows, hidden = w1[:2]
        for name, shape in (("b1", (rows, hidden)), ("w2", (rows, hidden)), ("b2", (rows,))):
            if getattr(getattr(self, name), "shape", None) != shape:
                raise PolicyError(f"predictor {name} has shape {getattr(getattr(self, name), 'shape', None)}: "
                                  f"expected {shape}")
        for name in ("w1", "b1", "w2", "b2", "iso_x", "iso_y"):
            if not np.isfinite(np.asarray(getattr(self, name), dtype=np.float64)).all():
                raise PolicyError(f"predictor {name} contains NaN or infinite values")
        iso = getattr(self.iso_x, "shape", ())
        if len(iso) != 2 or iso[0] != rows or iso[1] < 1 or getattr(self.iso_y, "shape", None) != iso:
            raise PolicyError(f"isotonic tables have shapes {iso} and {getattr(self.iso_y, 'shape', None)}: "
                              f"expected ({rows}, knots) each")
        knots = np.asarray(self.knot_counts)
        if knots.shape != (rows,) or (knots < 1).any() or (knots > iso[1]).any():
            raise PolicyError(f"isotonic knot counts {knots.tolist()}: need one in 1..{iso[1]} per stage")
        for row, k in enumerate(knots.tolist()):
            if (np.diff(self.iso_x[row, :k]) < 0).any():
                raise PolicyError(f"isotonic table of stage {row}: knots x must be non-decreasing")
            if (self.iso_y[row, :k] < 0).any() or (self.iso_y[row, :k] > 1).any():
                raise PolicyError(f"isotonic table of stage {row}: y must lie in [0, 1]")

    @property
    def n_rows(self) -> int:
        return self.w1.shape[0]

    @property
    def n_features(self) -> int:
        """Features per tier stage (F): row 1 with a prompt stage (row 0 and any routing rows
        after the tiers read the prompt's P), else every row."""
        return int(self.feature_counts[1 if self.has_prompt and self.n_rows > 1 else -1])

    @property
    def n_prompt_features(self) -> int:
        """Features of the prompt stage (P); row 0 when there is one."""
        return int(self.feature_counts[0])

    @classmethod
    def logistic(cls, weights, bias, *, isotonic=None, has_prompt=False) -> Predictor:
        """weights (S, F), or a list of S 1-d arrays when the prompt row has its own width P."""
        weights, counts = _ragged("logistic weights", weights, 1)
        if weights.ndim != 2:
            raise PolicyError(f"logistic weights have shape {weights.shape}: expected (stages, features)")
        n_rows = weights.shape[0]
        bias = _f64("logistic bias", bias, (n_rows,))
        return cls._build("logistic", weights[:, None, :], bias[:, None], np.zeros((n_rows, 1)),
                          np.zeros(n_rows), isotonic, has_prompt, counts)

    @classmethod
    def mlp(cls, w1, b1, w2, b2, *, isotonic=None, has_prompt=False) -> Predictor:
        """w1 (S, H, F), or a list of S (H, F_row) arrays when the prompt row has its own width."""
        w1, counts = _ragged("MLP w1", w1, 2)
        if w1.ndim != 3:
            raise PolicyError(f"MLP w1 has shape {w1.shape}: expected (stages, hidden, features)")
        n_rows, hidden, _ = w1.shape
        return cls._build("mlp", w1, _f64("MLP b1", b1, (n_rows, hidden)),
                          _f64("MLP w2", w2, (n_rows, hidden)), _f64("MLP b2", b2, (n_rows,)),
                          isotonic, has_prompt, counts)

    @classmethod
    def identity(cls, n_tiers: int, *, has_prompt: bool = False, isotonic=None) -> Predictor:
        """p̂ = the feature itself (one feature, clipped to [0, 1]): for precomputed calibrated
        scores. Tier features are (N, L, 1); with has_prompt, prompt features are (N, 1)."""
        if not isinstance(n_tiers, (int, np.integer)) or n_tiers < 1:
            raise PolicyError(f"n_tiers={n_tiers!r}: must be a positive integer")
        n_rows = n_tiers + 1
        return cls._build("identity", np.zeros((n_rows, 1, 1)), np.zeros((n_rows, 1)), np.zeros((n_rows, 1)),
                          np.zeros(n_rows), isotonic, has_prompt, np.ones(n_rows, dtype=np.int64))

    @classmethod
    def _build(cls, kind, w1, b1, w2, b2, isotonic, has_prompt, counts=None) -> Predictor:
        w1 = _f64(f"{kind} weights", w1)
        n_rows = w1.shape[0]
        if isotonic is None:
            isotonic = [([0.0, 1.0], [0.0, 1.0])] * n_rows
        if len(isotonic) != n_rows:
            raise PolicyError(f"isotonic tables: got {len(isotonic)}, need one per stage ({n_rows})")
        n_knots = max(len(np.atleast_1d(x)) for x, _ in isotonic)
        iso_x = np.ones((n_rows, n_knots))
        iso_y = np.ones((n_rows, n_knots))
        knots = np.zeros(n_rows, dtype=np.int64)
        for row, (x, y) in enumerate(isotonic):
            x = _f64(f"isotonic x of stage {row}", np.atleast_1d(x))
            y = _f64(f"isotonic y of stage {row}", np.atleast_1d(y))
            if x.ndim != 1 or x.shape != y.shape or x.size == 0:
                raise PolicyError(f"isotonic table of stage {row}: x and y must be equal-length, non-empty 1-d")
            if (np.diff(x) < 0).any():
                raise PolicyError(f"isotonic table of stage {row}: knots x must be non-decreasing")
            if (y < 0).any() or (y > 1).any():
                raise PolicyError(f"isotonic table of stage {row}: y must lie in [0, 1]")
            iso_x[row, : x.size], iso_y[row, : x.size] = x, y
            iso_x[row, x.size:], iso_y[row, x.size:] = x[-1], y[-1]
            knots[row] = x.size
        return cls(kind, w1, np.ascontiguousarray(b1), np.ascontiguousarray(w2),
                   np.ascontiguousarray(b2), iso_x, iso_y, knots, bool(has_prompt), counts)

    def with_prompt_row(self) -> Predictor:
        """This predictor with a placeholder row 0 (no prompt stage): L rows → L + 1."""
        pad = lambda a: np.concatenate([np.zeros((1,) + a.shape[1:], dtype=a.dtype), a])  # noqa: E731
        # Row 0 is never read for a decision (one prompt bin): a one-knot constant table.
        knots = np.concatenate([[1], self.knot_counts]).astype(np.int64)
        iso_x, iso_y = pad(self.iso_x), pad(self.iso_y)
        counts = np.concatenate([[self.feature_counts[0]], self.feature_counts]).astype(np.int64)
        return Predictor(self.kind, pad(self.w1), pad(self.b1), pad(self.w2), pad(self.b2),
                         np.ascontiguousarray(iso_x), np.ascontiguousarray(iso_y), knots, False, counts)

    def predict_proba(self, row: int, x) -> np.ndarray:
        """Calibrated p̂ of stage `row` for features x (N, feature_counts[row]), in numpy: the
        same formula as the kernels (np.interp for the isotonic table)."""
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)) or not 0 <= row < self.n_rows:
            # a negative row read the last stage's weights without a word
            raise PolicyError(f"stage row {row!r}: must be a whole number in 0..{self.n_rows - 1}")
        x = np.asarray(x, dtype=np.float64)
        width = int(self.feature_counts[row])
        if x.ndim != 2 or x.shape[1] != width:
            raise PolicyError(f"features of stage {row} have shape {x.shape}: expected (requests, {width})")
        if self.kind == "identity":
            raw = np.clip(x[:, 0], 0.0, 1.0)
        elif self.kind == "logistic":
            raw = 1.0 / (1.0 + np.exp(-(x @ self.w1[row, 0, :width] + self.b1[row, 0])))
        else:
            hidden = np.maximum(x @ self.w1[row, :, :width].T + self.b1[row], 0.0)
            raw = 1.0 / (1.0 + np.exp(-(hidden @ self.w2[row] + self.b2[row])))
        k = int(self.knot_counts[row])
        return np.interp(raw, self.iso_x[row, :k], self.iso_y[row, :k])


@dataclass(frozen=True)
class LambdaWalk:
    """Where each request starts and stops under the current tables."""

    start: np.ndarray
    stop: np.ndarray

    def totals(self, tier_values: np.ndarray) -> np.ndarray:
        """Per request, the sum of tier_values (N, L) over the tiers it ran."""
        out = np.empty(tier_values.shape[0])
        path_totals_nb(self.start, self.stop, np.ascontiguousarray(tier_values, dtype=np.float64), out)
        return out


def check_policy_target(path) -> Path:
    """Where `Policy.save` may write: a new file, or an earlier policy file (a zip holding the
    policy header) — never a directory or a file of anything else. PolicyError otherwise."""
    import zipfile

    path = Path(path)
    if path.is_dir():
        raise PolicyError(f"{path}: is a directory; give the policy file's path")
    if path.exists():
        replaceable = False
        if path.is_file():  # a device or a pipe is not read: looking for a header in one never ends
            try:
                with zipfile.ZipFile(path) as archive:
                    replaceable = "header.npy" in archive.namelist()
            except (OSError, zipfile.BadZipFile):
                pass
        if not replaceable:
            raise PolicyError(f"{path}: exists and is not an asd policy file; not overwritten (choose another path)")
    return path


class Policy:
    """Tables, predictor and solved decisions for one λ. Build with tables + predictor,
    `solve(lam)` for another λ (in place), `decide`/`start` per request, `*_batch` for arrays,
    `walk` over precomputed bins, `update` with online outcomes, `save`/`load` one file.

    meta: a JSON-able dict saved in the file header (features, cost model, provenance, the
    bundle's content hash, calibration report summary); `check_compatible` compares a ladder
    with meta["tier_params_b"] and meta["bundle_content_hash"] when present.
    start_lam: the λ whose stage-0 start table is in use (= lam unless a λ search pinned it).
    """

    def __init__(self, tables: EngineTables, predictor: Predictor, *, lam: float = 1.0,
                 risk: str | float = "mean", tier_names=None, meta=None, start_lam: float | None = None):
        n_tiers = tables.n_tiers
        if predictor.kind not in PREDICTOR_KINDS:
            raise PolicyError(f"predictor kind {predictor.kind!r}: use one of {', '.join(PREDICTOR_KINDS)}")
        if predictor.n_rows == n_tiers and not predictor.has_prompt:
            predictor = predictor.with_prompt_row()
        route_rows = route_row_count(n_tiers) if tables.has_route_evidence else 0
        if tables.has_route_evidence and not predictor.has_prompt:
            raise PolicyError("tables carry routed stage-0 evidence but the predictor has no prompt stage")
        if predictor.n_rows != n_tiers + 1 + route_rows:
            routed = f" and {route_rows} prompt rows for tiers 1..{n_tiers - 2} (routed stage 0)" if route_rows else ""
            raise PolicyError(f"predictor has {predictor.n_rows} stages; a {n_tiers}-tier ladder needs "
                              f"{n_tiers + 1 + route_rows} (row 0 = prompt, then one per tier{routed}), or "
                              f"{n_tiers} without a prompt stage")
        tier_widths = set(predictor.feature_counts[1:n_tiers + 1].tolist())
        if len(tier_widths) != 1:
            raise PolicyError(f"predictor tier stages read {sorted(tier_widths)} features: every tier stage "
                              "must read the same tier features")
        if (predictor.feature_counts[n_tiers + 1:] != predictor.feature_counts[0]).any():
            raise PolicyError("predictor routing rows must read the prompt features, as row 0 does")
        if not predictor.has_prompt and tables.n_prompt_bins != 1:
            raise PolicyError(f"tables have {tables.n_prompt_bins} prompt bins but the predictor has no "
                              "prompt stage (has_prompt=False): build tables without prompt_p")
        tier_names = [f"tier{i}" for i in range(n_tiers)] if tier_names is None else list(tier_names)
        if len(tier_names) != n_tiers:
            raise PolicyError(f"{len(tier_names)} tier names for {n_tiers} tiers")
        self.tables = tables
        self.predictor = predictor
        self.tier_names = tier_names
        self.meta = _json_meta(meta)
        gamma = parse_risk(risk)
        self.risk = "mean" if gamma is None else gamma
        self.q_stop, self.q_mean = tables.quality(self.risk)
        self.q_stop_cold, self.q_mean_cold = tables.quality_cold(self.risk)
        n_bins, n_prompt_bins = tables.n_bins, tables.n_prompt_bins
        self.stop_table = np.zeros((n_tiers, n_bins), dtype=np.uint8)
        self.value_table = np.zeros((n_tiers, n_bins))
        self.continue_table = np.zeros((n_tiers, n_bins))
        self._vmean = np.zeros((n_tiers, n_bins))
        self.start_table = np.zeros(n_prompt_bins, dtype=np.int64)
        self.value0 = np.zeros(n_prompt_bins)
        self.start_values = np.zeros((n_tiers, n_prompt_bins))  # value of starting at s from prompt bin b0
        self._start_model = np.zeros((n_tiers, n_prompt_bins))  # the model's part of it (scratch of each solve)
        self._evidence = _start_evidence(tables)
        # the routed stage 0: its candidate thresholds, their replayed totals, the solved threshold
        self._route_thresholds = None if self._evidence is None or self._evidence.route_p is None else (
            route_thresholds(self._evidence.route_p))
        self._route_totals = None if self._route_thresholds is None else np.zeros(self._route_thresholds.size + 1)
        self._route = np.full(1, np.nan)
        self._evidence_sums: dict[bytes, tuple] = {}  # stop tables → evidence_sums_nb's sums (see _sums)
        # the cold-start state (a request that started at tier s, skipping the tiers below)
        self.stop_cold_table = np.zeros((n_tiers, n_bins), dtype=np.uint8)
        self.value_cold_table = np.zeros((n_tiers, n_bins))
        self._vmean_cold = np.zeros((n_tiers, n_bins))
        # scratch for a start table solved at another λ (solve(lam, start_lam=...))
        self._scratch = tuple(np.zeros_like(a) for a in self._outputs())
        self._pack()
        self._n_features = predictor.n_features
        self._n_prompt_features = predictor.n_prompt_features
        self._n_tiers = n_tiers
        self._stop_one = K.stop_packed_nb
        self._start_one = K.start_packed_nb
        self.lam = float("nan")
        self.start_lam = float("nan")
        self.solve(lam, start_lam=start_lam)

    # -- construction helpers -------------------------------------------------------------
    def _outputs(self):
        return (self.stop_table, self.value_table, self.continue_table, self._vmean, self.start_table, self.value0,
                self.stop_cold_table, self.value_cold_table, self._vmean_cold, self.start_values, self._route)

    def _solve_into(self, lam, stop, value, cont, vmean, start, value0, stop_cold, value_cold, vmean_cold,
                    start_values, route) -> None:
        t = self.tables
        solve_dp_nb(lam, self.q_stop, self.q_mean, t.trans, t.cnext, t.trans0, t.c0,
                    stop, value, cont, vmean, start, value0)
        if t.cold_start:
            solve_cold_start_nb(lam, self.q_stop_cold, self.q_mean_cold, t.trans_cold, t.cnext_cold, t.trans0, t.c0,
                                stop, value, vmean, stop_cold, value_cold, vmean_cold, start, value0)
        else:  # the cold state is priced like the climbed one
            stop_cold[:], value_cold[:], vmean_cold[:] = stop, value, vmean
        # the model's value of each start as played: c0_s(b0) + Σ_b T_{0→s}(b0, b) V_cold_s(b)
        model = self._start_model
        np.einsum("sab,sb->sa", t.trans0, value_cold, out=model)
        model += t.c0
        if self._evidence is None:
            start_values[:] = model
        else:
            e = self._evidence
            start_cost, start_miss, route_cost, route_miss = self._sums(stop, stop_cold)
            empirical_start_nb(lam, start_cost, start_miss, e.counts, model, START_PRIOR_WEIGHT, start_values, start,
                               value0)
        route[0] = np.nan
        if self._route_thresholds is not None:  # (routing evidence is start evidence: the sums above exist)
            # the routed stage 0 replaces the start table where the calibration requests did better
            # under it (strictly, beyond rounding): both are scored on the same requests and tables
            totals, thresholds = self._route_totals, self._route_thresholds
            routed_totals_nb(lam, start_cost, start_miss, start, route_cost, route_miss, totals)
            g = int(np.argmin(totals[:-1]))
            if totals[g] < totals[-1] * TIE_LOW:
                route[0] = thresholds[g]

    def _sums(self, stop, stop_cold):
        """evidence_sums_nb's sums for these stop tables, replayed once per distinct pair: a λ
        search solves thousands of λ between a few changes of the tables (q_mean, the only other
        input, is fixed for a Policy: `update` makes a new one)."""
        key = stop.tobytes() + stop_cold.tobytes()
        sums = self._evidence_sums.get(key)
        if sums is None:
            e, n_tiers = self._evidence, self.tables.n_tiers
            thresholds = self._route_thresholds if self._route_thresholds is not None else np.zeros(0)
            route_p = e.route_p if e.route_p is not None else np.zeros((0, 0))
            sums = (np.empty((n_tiers, self.tables.n_prompt_bins)), np.empty((n_tiers, self.tables.n_prompt_bins)),
                    np.empty(thresholds.size), np.empty(thresholds.size))
            evidence_sums_nb(stop, stop_cold, self.q_mean, self.q_mean_cold, e.prompt_bins, route_p, thresholds,
                             e.tier_bins, e.cold_bins, e.accepted, e.cost, e.cost_cont, *sums)
            if len(self._evidence_sums) >= EVIDENCE_SUMS_CACHE:
                self._evidence_sums.pop(next(iter(self._evidence_sums)))
            self._evidence_sums[key] = sums
        return sums

    def _pack(self) -> None:
        t, p = self.tables, self.predictor
        n_rows, hidden, feats = p.w1.shape
        n_edges = max(t.n_bins, t.n_prompt_bins) + 1
        edges = np.ones((n_rows, n_edges))
        edges[0, : t.n_prompt_bins + 1] = t.edges0
        edges[1:t.n_tiers + 1, : t.n_bins + 1] = t.edges  # routing rows after the tiers are never binned
        parts = [p.w1, p.b1, p.w2, p.b2, p.iso_x, p.iso_y, edges,
                 self.stop_table.astype(np.float64), self._route]
        offsets = np.cumsum([0] + [a.size for a in parts])
        self._blob = np.ascontiguousarray(np.concatenate([a.ravel() for a in parts]))
        bin_counts = np.array([t.n_prompt_bins] + [t.n_bins] * t.n_tiers + [1] * (n_rows - t.n_tiers - 1),
                              dtype=np.int64)
        layout = np.zeros(K.HEADER_SIZE + 3 * n_rows + t.n_prompt_bins, dtype=np.int64)
        layout[[K.KIND, K.N_ROWS, K.N_HIDDEN, K.N_FEATURES, K.N_KNOTS_MAX, K.N_TIERS, K.N_EDGES,
                K.N_BINS, K.N_PROMPT_BINS]] = [PREDICTOR_KINDS[p.kind], n_rows, hidden, feats,
                                               p.iso_x.shape[1], t.n_tiers, n_edges, t.n_bins,
                                               t.n_prompt_bins]
        layout[K.OFF_W1:K.OFF_STOP + 1] = offsets[:8]
        layout[K.OFF_KNOT_COUNTS] = K.HEADER_SIZE
        layout[K.OFF_BIN_COUNTS] = K.HEADER_SIZE + n_rows
        layout[K.OFF_FEATURE_COUNTS] = K.HEADER_SIZE + 2 * n_rows
        layout[K.OFF_START] = K.HEADER_SIZE + 3 * n_rows
        layout[K.OFF_ROUTE] = offsets[8]
        layout[K.HEADER_SIZE:K.HEADER_SIZE + n_rows] = p.knot_counts
        layout[K.HEADER_SIZE + n_rows:K.HEADER_SIZE + 2 * n_rows] = bin_counts
        layout[K.HEADER_SIZE + 2 * n_rows:K.HEADER_SIZE + 3 * n_rows] = p.feature_counts
        self._layout = layout
        self._stop_view = self._blob[offsets[7]:offsets[8]].reshape(t.n_tiers, t.n_bins)
        self._route_view = self._blob[offsets[8]:offsets[9]]
        self._start_view = layout[K.HEADER_SIZE + 3 * n_rows:]

    @classmethod
    def from_calibration(cls, predictor: Predictor, tier_x, accepted, costs, *, oof_p, prompt_x=None,
                         oof_prompt_p=None, cold_x=None, oof_cold_p=None, oof_route_p=None, lam: float = 1.0,
                         risk="mean", tier_names=None, meta=None, **table_options) -> Policy:
        """Tables from out-of-fold p̂, decisions from the predictor fitted on all rows.

        tier_x (N, L, F) climbed-state tier features; prompt_x (N, P) prompt features (only with
        a prompt-stage predictor); cold_x (N, L, F) started-cold features. oof_p (N, L),
        oof_prompt_p (N,), oof_cold_p (N, L): the same predictor family's out-of-fold p̂ on those
        features. oof_route_p (N, L−2), with a stage 0 and start evidence: the out-of-fold
        prompt-only P(acceptable at tier s) for s in 1..L−2 of the predictor's routing rows
        (row L + s), for the routed stage 0; with oof_prompt_p (tier 0's) it is the tables'
        route evidence. Tables are built from the OOF p̂ (in-sample p̂ would make every bin look better
        than it is); the predictor's own p̂ must agree with them on average (mean gap <
        AGREEMENT_TOL per stage) or this refuses: the p̂ came from other features or another model.
        `asd.calibration.calibrate` is the one path that produces both; table_options are
        `TABLE_OPTIONS` of `tables.build_tables`.
        """
        from asd.engine.tables import build_tables

        for name, value in (("p_hat", "oof_p"), ("prompt_p", "oof_prompt_p"), ("start_p_hat", "oof_cold_p"),
                            ("route_p", "oof_prompt_p and oof_route_p")):
            if name in table_options:
                raise PolicyError(f"{name}: from_calibration builds it from {value}")
        unknown = sorted(set(table_options) - set(TABLE_OPTIONS))
        if unknown:
            raise PolicyError(f"unknown table option {', '.join(map(repr, unknown))}: valid options are "
                              f"{', '.join(TABLE_OPTIONS)}")
        tier_x = np.asarray(tier_x, dtype=np.float64)
        oof_p = np.asarray(oof_p, dtype=np.float64)
        if tier_x.ndim != 3:
            raise PolicyError(f"tier features have shape {tier_x.shape}: expected (requests, tiers, features)")
        n, n_tiers, n_features = tier_x.shape
        if oof_p.shape != (n, n_tiers):
            raise PolicyError(f"oof_p has shape {oof_p.shape}: expected ({n}, {n_tiers}), one per request and tier")
        route_rows = 0 if oof_route_p is None else route_row_count(n_tiers)
        rows = predictor.n_rows - (0 if predictor.n_rows == n_tiers and not predictor.has_prompt else 1) - route_rows
        if rows != n_tiers:
            raise PolicyError(f"predictor has {predictor.n_rows} stages for {n_tiers} tiers of features"
                              + (f" and {route_rows} routing rows" if route_rows else ""))
        if oof_route_p is not None:
            oof_route_p = np.asarray(oof_route_p, dtype=np.float64).reshape(n, -1) if n else np.zeros((0, route_rows))
            if oof_route_p.shape != (n, route_rows):
                raise PolicyError(f"oof_route_p has shape {oof_route_p.shape}: expected ({n}, {route_rows}), tiers "
                                  f"1..{n_tiers - 2}")
            if oof_prompt_p is None:
                raise PolicyError("oof_route_p is the routed stage 0's evidence: it needs a stage 0 (prompt_x, "
                                  "oof_prompt_p)")
        width = predictor.n_features
        if n_features != width:
            raise PolicyError(f"tier features have {n_features} columns; the predictor reads {width}")
        if (prompt_x is None) != (oof_prompt_p is None):
            raise PolicyError("prompt_x and oof_prompt_p come together: pass both for a stage 0, or neither")
        if (prompt_x is not None) != predictor.has_prompt:
            raise PolicyError("the predictor has a prompt stage but no prompt_x was given" if predictor.has_prompt
                              else "prompt_x given but the predictor has no prompt stage (has_prompt=False)")
        if (cold_x is None) != (oof_cold_p is None):
            raise PolicyError("cold_x and oof_cold_p come together: pass both for cold starts, or neither")
        rows_of = (lambda i: i) if predictor.n_rows == n_tiers and not predictor.has_prompt else (lambda i: i + 1)
        checks = [(f"tier {i}", rows_of(i), tier_x[:, i], oof_p[:, i]) for i in range(n_tiers)]
        if prompt_x is not None:
            prompt_x = np.asarray(prompt_x, dtype=np.float64)
            oof_prompt_p = np.asarray(oof_prompt_p, dtype=np.float64)
            if prompt_x.ndim != 2 or prompt_x.shape[0] != n:
                raise PolicyError(f"prompt features have shape {prompt_x.shape}: expected ({n}, prompt features)")
            if oof_prompt_p.shape != (n,):
                raise PolicyError(f"oof_prompt_p has shape {oof_prompt_p.shape}: expected ({n},)")
            checks.append(("the prompt stage", 0, prompt_x, oof_prompt_p))
        if cold_x is not None:
            cold_x = np.asarray(cold_x, dtype=np.float64)
            oof_cold_p = np.asarray(oof_cold_p, dtype=np.float64)
            if cold_x.shape != tier_x.shape:
                raise PolicyError(f"cold features have shape {cold_x.shape}; tier features have {tier_x.shape}")
            if oof_cold_p.shape != (n, n_tiers):
                raise PolicyError(f"oof_cold_p has shape {oof_cold_p.shape}: expected ({n}, {n_tiers})")
            checks += [(f"tier {i} (cold)", rows_of(i), cold_x[:, i], oof_cold_p[:, i]) for i in range(1, n_tiers)]
        if oof_route_p is not None:
            checks += [(f"the routing row of tier {s}", n_tiers + s, prompt_x, oof_route_p[:, s - 1])
                       for s in range(1, n_tiers - 1)]
        for where, row, x, oof in checks:
            if not np.isfinite(x).all():
                raise PolicyError(f"features of {where} contain NaN or infinite values")
            gap = float(np.mean(np.abs(predictor.predict_proba(row, x) - oof)))
            if not gap < AGREEMENT_TOL:
                why = (f"with {n} calibration requests the fold models can differ this much by chance: calibrate on "
                       f"at least {FEW_REQUESTS}" if n < FEW_REQUESTS else
                       "p̂ and predictor must come from one fit on these features")
                raise PolicyError(f"out-of-fold p̂ of {where} disagrees with the predictor (mean |gap| = {gap:.3f} "
                                  f">= {AGREEMENT_TOL}): {why}")
        route_p = None if oof_route_p is None else np.column_stack([oof_prompt_p, oof_route_p])
        tables = build_tables(oof_p, accepted, costs, prompt_p=oof_prompt_p, start_p_hat=oof_cold_p, route_p=route_p,
                              **table_options)
        return cls(tables, predictor, lam=lam, risk=risk, tier_names=tier_names, meta=meta)

    # -- solving ----------------------------------------------------------------------------
    @property
    def n_tiers(self) -> int:
        return self.tables.n_tiers

    def solve(self, lam: float, *, start_lam: float | None = None) -> Policy:
        """Backward induction for this λ; rewrites the stop/start tables in place. With
        start_lam, the stage-0 start table is the one optimal at start_lam (the stop table is
        still λ's): what a λ search that pins the start table returns (see search.py)."""
        lam = real_number("λ", lam, PolicyError)
        if not (lam >= 0.0) or lam == float("inf"):
            raise PolicyError(f"λ={lam}: must be a finite number >= 0")
        start_lam = lam if start_lam is None else real_number("start_lam", start_lam, PolicyError)
        if not (start_lam >= 0.0) or start_lam == float("inf"):
            raise PolicyError(f"start_lam={start_lam}: must be a finite number >= 0")
        t = self.tables
        if start_lam != lam:
            self._solve_into(start_lam, *self._scratch)
        self._solve_into(lam, *self._outputs())
        if start_lam != lam:
            self.start_table[:] = self._scratch[4]
            self._route[:] = self._scratch[10]
            for b0, s in enumerate(self.start_table):  # the value actually played from that start
                self.value0[b0] = self.start_values[s, b0]
        self._stop_view[:] = self.stop_table
        self._start_view[:] = self.start_table
        self._route_view[:] = self._route
        self.lam = lam
        self.start_lam = start_lam
        return self

    def continue_value(self, tier: int, bin_: int, cold: bool = False) -> float | None:
        """The solved continue value at `tier`, bin `bin_` (None at the last tier): the next tier's
        expected cost plus its risk-neutral value, what the stop value is compared with. cold: at
        the tier a request started at (the cold state's transitions, as `solve_cold_start_nb`)."""
        tier = self._check_tier(tier)
        if tier == self._n_tiers - 1:
            return None
        if not cold or tier == 0 or not self.tables.cold_start:
            return float(self.continue_table[tier, bin_])
        t = self.tables
        return float(t.cnext_cold[tier, bin_] + t.trans_cold[tier, bin_] @ self._vmean[tier + 1])

    # -- decisions --------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Make one call of each one-request decision (stage 0, p̂, stop climbed and cold) on
        made-up features, so that numba's kernels are compiled, or loaded from its cache, before
        the first request rather than inside it: on a cold cache that took 4 s of the first
        request's latency in `asd live`."""
        x = np.zeros(self._n_features)
        self.predict(0, x)
        self.decide(0, x)
        if self._n_tiers > 2:
            self.decide(1, x, cold=True)
        if self.predictor.has_prompt:
            prompt = np.zeros(self._n_prompt_features)
            self.predict(None, prompt)
            self.start(prompt)

    def decide(self, tier: int, features: np.ndarray, cold: bool = False) -> bool:
        """Stop at `tier` (0-based) given that tier's features (1-d contiguous float64 array,
        F long)? cold=True at the tier a request started at, skipping the tiers below (its cold
        features, cold stop table). The hot path: two cheap checks and one compiled call (which
        also refuses NaN/inf features), no allocation."""
        if cold and tier != 0:
            return self._decide_cold(tier, features)
        try:
            if 0 <= tier < self._n_tiers and features.shape[0] == self._n_features:
                return self._stop_one(self._blob, self._layout, tier, features)
        except ValueError as exc:
            raise _non_finite_refusal(exc, f"decide(tier={tier!r})") from None
        except (AttributeError, IndexError, NumbaError):
            pass
        raise PolicyError(f"decide(tier={tier!r}, features={_describe(features)}): tier must be in "
                          f"0..{self.n_tiers - 1} and features a 1-d contiguous float64 array of "
                          f"{self._n_features} values")

    def _decide_cold(self, tier, features) -> bool:
        tier = self._check_tier(tier)
        x = self._features(features, 1)
        b = np.empty(1, dtype=np.int64)
        K.bins_batch_packed_nb(self._blob, self._layout, np.array([tier + 1], dtype=np.int64), x, b)
        return bool(self.stop_cold_table[tier, b[0]])

    def start(self, prompt_features: np.ndarray) -> int:
        """Start tier chosen at stage 0 from prompt features, P long (tier 0 when no prompt
        predictor)."""
        try:
            if prompt_features.shape[0] == self._n_prompt_features:
                return int(self._start_one(self._blob, self._layout, prompt_features))
        except ValueError as exc:
            raise _non_finite_refusal(exc, "start(prompt features)") from None
        except (AttributeError, IndexError, NumbaError):
            pass
        raise PolicyError(f"start(prompt features={_describe(prompt_features)}): expected a 1-d contiguous "
                          f"float64 array of {self._n_prompt_features} values")

    def predict(self, tier: int | None, features) -> float:
        """Calibrated P(accept) after `tier` (None = the prompt-only stage 0)."""
        width = self._n_prompt_features if tier is None else self._n_features
        x = self._features(features, 1, width)[0]
        row = 0 if tier is None else self._check_tier(tier) + 1
        return float(K.predict_packed_nb(self._blob, self._layout, row, x))

    def decide_batch(self, tiers, features, out=None) -> np.ndarray:
        """uint8 stop flags for N requests at tiers (N,) with features (N, F); prange inside."""
        x = self._features(features, 2)
        tiers = self._tiers(tiers, x.shape[0])
        out = self._out(out, x.shape[0], np.uint8)
        K.stop_batch_packed_nb(self._blob, self._layout, tiers, x, out)
        return out

    def start_batch(self, prompt_features, out=None) -> np.ndarray:
        """int64 start tiers for N requests from prompt features (N, P)."""
        x = self._features(prompt_features, 2, self._n_prompt_features)
        out = self._out(out, x.shape[0], np.int64)
        K.start_batch_packed_nb(self._blob, self._layout, x, out)
        return out

    def prompt_bins(self, prompt_features) -> np.ndarray:
        """Stage-0 bin of each request from prompt features (N, P) (λ-independent)."""
        x = self._features(prompt_features, 2, self._n_prompt_features)
        out = np.empty(x.shape[0], dtype=np.int64)
        K.bins_batch_packed_nb(self._blob, self._layout, np.zeros(x.shape[0], dtype=np.int64), x, out)
        return out

    def tier_bins(self, features) -> np.ndarray:
        """Bin of each request after each tier, from features (N, L, F) (λ-independent)."""
        x = np.ascontiguousarray(features, dtype=np.float64)
        if x.ndim != 3 or x.shape[1:] != (self.n_tiers, self._n_features):
            raise PolicyError(f"tier features have shape {x.shape}: expected (requests, {self.n_tiers}, "
                              f"{self._n_features})")
        if not np.isfinite(x).all():
            raise PolicyError("tier features contain NaN or infinite values")
        n = x.shape[0]
        rows = np.tile(np.arange(1, self.n_tiers + 1, dtype=np.int64), n)
        out = np.empty(n * self.n_tiers, dtype=np.int64)
        K.bins_batch_packed_nb(self._blob, self._layout, rows, x.reshape(n * self.n_tiers, -1), out)
        return out.reshape(n, self.n_tiers)

    def cold_tier_bins(self, cold_features) -> np.ndarray:
        """Bin of each request at each tier in the cold-start state, from cold features (N, L, F)
        (FeatureSet.cold_x: the same layout, earlier-tier features neutral): the same predictor
        rows and edges as `tier_bins`. Pass the result as `walk(..., cold_bins=)`."""
        return self.tier_bins(cold_features)

    def walk(self, prompt_bins, tier_bins, cold_bins=None, *, route_scores=None) -> LambdaWalk:
        """Start and stop tier of each request from its precomputed bins, under this λ. A request
        that starts at s > 0 is decided at s on cold_bins[:, s] (cold stop table) and on
        tier_bins (stop table) after that.
        prompt_bins may be None only when the policy has one prompt bin; cold_bins may be None
        only when the tables are not cold-start tables or no request skips a tier. route_scores
        (`route_scores(prompt_x)`) are needed when the policy routes at stage 0 at this λ."""
        if self.route_threshold is not None:  # the prompt bins play no part: any valid ones pass the checks
            prompt_bins = np.zeros(np.asarray(tier_bins).shape[0], dtype=np.int64)
        prompt_bins, tier_bins, cold_bins = self.check_bins(prompt_bins, tier_bins, cold_bins)
        prompt_bins, start_table = self.stage0_lookup(prompt_bins, route_scores, tier_bins)
        out_start = np.empty(tier_bins.shape[0], dtype=np.int64)
        out_stop = np.empty(tier_bins.shape[0], dtype=np.int64)
        if cold_bins is None:
            walk_bins_nb(prompt_bins, tier_bins, start_table, self.stop_table, out_start, out_stop)
            self.refuse_climbed_bins_for_cold_starts(out_start)
        else:
            walk_bins_cold_nb(prompt_bins, tier_bins, cold_bins, start_table, self.stop_table,
                              self.stop_cold_table, out_start, out_stop)
        return LambdaWalk(out_start, out_stop)

    @property
    def route_threshold(self) -> float | None:
        """The routed stage 0's threshold at the solved start λ (a request starts at the first
        tier whose prompt-only p̂ reaches it); None where the start table decides."""
        threshold = float(self._route[0])
        return None if math.isnan(threshold) else threshold

    def route_scores(self, prompt_features) -> np.ndarray:
        """(N, L−1) prompt-only calibrated P(acceptable at tier s) for s < L−1, from prompt
        features (N, P): what the routed stage 0 thresholds (λ-independent); computed by the
        decision kernels' own arithmetic, so `routed_starts` agrees with `start`."""
        if not self.tables.has_route_evidence:
            raise PolicyError("this policy has no routed stage 0 (calibrated without its prompt rows)")
        x = self._features(prompt_features, 2, self._n_prompt_features)
        n, tiers = x.shape[0], self.n_tiers
        out = np.empty((tiers - 1, n))
        for s in range(tiers - 1):
            rows = np.full(n, 0 if s == 0 else tiers + s, dtype=np.int64)
            K.predict_batch_packed_nb(self._blob, self._layout, rows, x, out[s])
        return np.ascontiguousarray(out.T)

    def stage0_lookup(self, prompt_bins, route_scores, like=None):
        """(per-request keys, start table) that the walk kernels read as (prompt bins, start
        table) under the solved start λ: the prompt bins and the start table, or, where stage 0
        routes, each request's routed start as its own key under the identity table."""
        if self.route_threshold is None:
            return prompt_bins, self.start_table
        return self.routed_starts(route_scores, like), np.arange(self.n_tiers, dtype=np.int64)

    def routed_starts(self, route_scores, like=None) -> np.ndarray:
        """Start tier of each request under the routed stage 0 at the solved start λ, from its
        `route_scores` (N, L−1); `like`: an (N, …) array the scores must match in length."""
        threshold = self.route_threshold
        if threshold is None:
            raise PolicyError(f"at start λ={self.start_lam:.6g} this policy starts from its start table, not routed")
        if route_scores is None:
            raise PolicyError(f"at start λ={self.start_lam:.6g} this policy routes at stage 0: pass "
                              "route_scores=policy.route_scores(prompt_x)")
        scores = np.asarray(route_scores, dtype=np.float64)
        n = scores.shape[0] if like is None else np.asarray(like).shape[0]
        if scores.shape != (n, self.n_tiers - 1):
            raise PolicyError(f"route scores have shape {scores.shape}: expected ({n}, {self.n_tiers - 1})")
        reached = np.concatenate([scores >= threshold, np.ones((n, 1), dtype=bool)], axis=1)  # the last takes the rest
        return reached.argmax(axis=1).astype(np.int64)

    def refuse_climbed_bins_for_cold_starts(self, out_start) -> None:
        if self.tables.cold_start and out_start.size and out_start.max() > 0:
            raise PolicyError("this policy's stage 0 was built for cold starts (start_p_hat) and some requests "
                              "skip tiers: pass cold_bins=policy.cold_tier_bins(cold_x)")

    def check_bins(self, prompt_bins, tier_bins, cold_bins=None):
        tier_bins = _whole("tier bins", tier_bins)
        if tier_bins.ndim != 2 or tier_bins.shape[1] != self.n_tiers:
            raise PolicyError(f"tier bins have shape {tier_bins.shape}: expected (requests, {self.n_tiers})")
        n = tier_bins.shape[0]
        if prompt_bins is None and self.tables.n_prompt_bins > 1:
            raise PolicyError(f"prompt bins are None but this policy has a stage 0 with {self.tables.n_prompt_bins} "
                              "prompt bins: pass policy.prompt_bins(prompt_x)")
        prompt_bins = np.zeros(n, dtype=np.int64) if prompt_bins is None else _whole("prompt bins", prompt_bins)
        if prompt_bins.shape != (n,):
            raise PolicyError(f"prompt bins have shape {prompt_bins.shape}: expected ({n},)")
        if n and (tier_bins.min() < 0 or tier_bins.max() >= self.tables.n_bins):
            raise PolicyError(f"tier bins must lie in 0..{self.tables.n_bins - 1}")
        if n and (prompt_bins.min() < 0 or prompt_bins.max() >= self.tables.n_prompt_bins):
            raise PolicyError(f"prompt bins must lie in 0..{self.tables.n_prompt_bins - 1}")
        if cold_bins is not None:
            cold_bins = _whole("cold bins", cold_bins)
            if cold_bins.shape != tier_bins.shape:
                raise PolicyError(f"cold bins have shape {cold_bins.shape}: expected {tier_bins.shape}")
            if n and (cold_bins.min() < 0 or cold_bins.max() >= self.tables.n_bins):
                raise PolicyError(f"cold bins must lie in 0..{self.tables.n_bins - 1}")
        return prompt_bins, tier_bins, cold_bins

    def _check_tier(self, tier) -> int:
        # a whole number: int() truncated 1.5 to tier 1 (the climbed path refuses it) and
        # raised a bare ValueError for "a"
        if isinstance(tier, bool) or not isinstance(tier, (int, np.integer)) or not 0 <= tier < self.n_tiers:
            raise PolicyError(f"tier {tier!r}: must be a whole number in 0..{self.n_tiers - 1}")
        return int(tier)

    def _tiers(self, tiers, n):
        tiers = _whole("tiers", tiers)
        if tiers.ndim == 0:
            tiers = np.full(n, int(tiers), dtype=np.int64)
        if tiers.shape != (n,):
            raise PolicyError(f"tiers have shape {tiers.shape}: expected ({n},), one per request")
        tiers = np.ascontiguousarray(tiers)
        if n and (tiers.min() < 0 or tiers.max() >= self.n_tiers):
            raise PolicyError(f"tiers must lie in 0..{self.n_tiers - 1}")
        return tiers

    @staticmethod
    def _out(out, n, dtype) -> np.ndarray:
        """A caller's output buffer, checked: the kernel writes n values into it unchecked, so a
        short one would corrupt memory and another dtype or a strided view would be misread."""
        if out is None:
            return np.empty(n, dtype=dtype)
        if not isinstance(out, np.ndarray) or out.shape != (n,) or out.dtype != dtype \
                or not out.flags.c_contiguous or not out.flags.writeable:
            described = (f"shape {out.shape}, dtype {out.dtype}" if isinstance(out, np.ndarray)
                         else type(out).__name__)
            raise PolicyError(f"out: {described}; expected a writeable contiguous {np.dtype(dtype).name} "
                              f"array of shape ({n},), one per request")
        return out

    def _features(self, features, ndim, width=None):
        width = self._n_features if width is None else width
        try:
            x = np.ascontiguousarray(features, dtype=np.float64)
        except (TypeError, ValueError):
            raise PolicyError(f"features: {_describe(features)}: must be numbers") from None
        if ndim == 1 and x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != width:
            raise PolicyError(f"features have shape {x.shape}: expected (requests, {width})")
        if not np.isfinite(x).all():
            raise PolicyError("features contain NaN or infinite values")
        return x

    # -- online update ----------------------------------------------------------------------
    def update(self, tiers, accepted, *, bins=None, features=None, cold=None) -> Policy:
        """Fold observed outcomes into the Beta posteriors (research protocol, extension 3) and
        re-solve at the current λ (and start λ): a new Policy; this one is left as it was.

        One row per observation: tiers (M,) the tier that answered, accepted (M,) 1/0 (or a
        quality in [0, 1]), and either bins (M,) the bin its p̂ fell in, or features (M, F) its
        tier features (binned here with the policy's predictor). cold (M,) bool marks answers
        given at a tier the request started at cold (they update the cold posteriors; tier 0
        is one state; tables without a cold state, `cold_start` False, count them as climbed). Only the Beta posteriors and counts change: transitions, costs and the
        start evidence stay as calibrated (refit for those). With pooled tables (`pool_bins`) an
        outcome counts in the neighbouring bins' posteriors with the calibration's weights.
        meta["online_updates"] counts the observations folded in so far."""
        if (bins is None) == (features is None):
            raise PolicyError("update: pass exactly one of bins= or features= for the observations")
        try:
            accepted = np.asarray(accepted, dtype=np.float64)
        except (TypeError, ValueError):
            raise PolicyError(f"update: accepted {_describe(accepted)}: must be numbers (1/0 or a quality)") from None
        if accepted.ndim != 1:
            raise PolicyError(f"update: accepted has shape {accepted.shape}: expected (observations,)")
        m = accepted.shape[0]
        tiers = self._tiers(tiers, m)
        bad = ~np.isfinite(accepted) | (accepted < 0) | (accepted > 1)
        if bad.any():
            i = int(np.argmax(bad))
            raise PolicyError(f"update: accepted[{i}] = {float(accepted[i])!r}: must be 1/0 or a quality in [0, 1]")
        if features is not None:
            x = self._features(features, 2)
            if x.shape[0] != m:
                raise PolicyError(f"update: {x.shape[0]} feature rows for {m} observations")
            bins = np.empty(m, dtype=np.int64)
            K.bins_batch_packed_nb(self._blob, self._layout, tiers + 1, x, bins)
        bins = _whole("update: bins", bins)
        if bins.shape != (m,):
            raise PolicyError(f"update: bins have shape {bins.shape}: expected ({m},)")
        if m and (bins.min() < 0 or bins.max() >= self.tables.n_bins):
            raise PolicyError(f"update: bins must lie in 0..{self.tables.n_bins - 1}")
        cold = np.zeros(m, dtype=bool) if cold is None else np.asarray(cold, dtype=bool)
        if cold.shape != (m,):
            raise PolicyError(f"update: cold has shape {cold.shape}: expected ({m},)")
        t = self.tables
        if not t.cold_start:
            # tables without a cold state price a cold start as a climb (the solve copies the
            # climbed tables): its outcomes count there, or they would never be read again
            cold = np.zeros(m, dtype=bool)
        weights = pooling_weights(t.n_bins, t.pool_bins)  # symmetric: a bin's row is its column
        new = {}
        for suffix, rows in (("", ~cold | (tiers == 0)), ("_cold", cold | (tiers == 0))):
            alpha, beta, n_obs = (getattr(t, name + suffix).copy() for name in ("alpha", "beta", "n_obs"))
            at = (tiers[rows], bins[rows])
            ones, zeros = np.zeros_like(alpha), np.zeros_like(beta)
            np.add.at(ones, at, accepted[rows])
            np.add.at(zeros, at, 1.0 - accepted[rows])
            alpha += ones @ weights
            beta += zeros @ weights
            np.add.at(n_obs, at, 1.0)
            new.update({"alpha" + suffix: alpha, "beta" + suffix: beta, "n_obs" + suffix: n_obs})
        meta = dict(self.meta, online_updates=int(self.meta.get("online_updates", 0)) + m)
        return Policy(replace(t, **new), self.predictor, lam=self.lam,
                      risk=self.risk, tier_names=self.tier_names, meta=meta, start_lam=self.start_lam)

    # -- compatibility ----------------------------------------------------------------------
    def calibrated_params_b(self) -> list | None:
        """The ladder's parameter counts the policy was calibrated on (meta["tier_params_b"], or
        the params_b of meta["bundle"]["tiers"]; NaN where unknown), None when not recorded."""
        known = self.meta.get("tier_params_b")
        bundle = self.meta.get("bundle") if isinstance(self.meta.get("bundle"), dict) else {}
        if known is None and isinstance(bundle.get("tiers"), list):
            known = [t.get("params_b") if isinstance(t, dict) else None for t in bundle["tiers"]]
            known = [np.nan if v is None else v for v in known]
        return known

    def check_compatible(self, tier_names=None, params_b=None, content_hash=None) -> None:
        """Refuse (one PolicyError line naming every difference) a ladder this policy was not
        calibrated for: tier names, parameter counts (meta["tier_params_b"], or the params_b of
        meta["bundle"]["tiers"] as `asd calibrate` writes them), bundle hash
        (meta["bundle_content_hash"] or meta["bundle"]["content_hash"]). Arguments left None, or
        not recorded in meta, are not compared; a trace view (or anything with `tier_names` and
        `params_b`) may be passed as tier_names."""
        if tier_names is not None and hasattr(tier_names, "tier_names"):
            view = tier_names
            tier_names = list(view.tier_names)
            params_b = getattr(view, "params_b", None) if params_b is None else params_b
        problems = []
        if tier_names is not None and list(tier_names) != self.tier_names:
            problems.append(f"tiers {list(tier_names)} != policy tiers {self.tier_names}")
        bundle = self.meta.get("bundle") if isinstance(self.meta.get("bundle"), dict) else {}
        known = self.calibrated_params_b()
        if params_b is not None and known is not None:
            try:
                given = np.asarray(params_b, dtype=np.float64)
            except (TypeError, ValueError):
                raise PolicyError(f"params_b={params_b!r}: must be numbers, one per tier") from None
            known = np.asarray(known, dtype=np.float64)
            if given.shape != known.shape or not np.allclose(given, known, rtol=1e-6, equal_nan=True):
                problems.append(f"params_b {given.tolist()} != policy params_b {known.tolist()}")
        known_hash = self.meta.get("bundle_content_hash", bundle.get("content_hash"))
        if content_hash is not None and known_hash is not None and content_hash != known_hash:
            problems.append(f"bundle hash {content_hash[:12]}… != the calibration bundle's {known_hash[:12]}…")
        if problems:
            raise PolicyError("policy does not fit this ladder: " + "; ".join(problems))

    # -- persistence ------------------------------------------------------------------------
    def header(self) -> dict:
        t = self.tables
        return {
            "format": POLICY_FORMAT, "version": POLICY_VERSION, "asd_version": __version__,
            "tier_names": self.tier_names, "lam": self.lam, "start_lam": self.start_lam, "risk": self.risk,
            "predictor": self.predictor.kind, "has_prompt": self.predictor.has_prompt,
            "n_features": self._n_features, "n_prompt_features": self._n_prompt_features,
            "n_bins": t.n_bins, "n_prompt_bins": t.n_prompt_bins, "cold_start": t.cold_start,
            "prior": [_json_prior(t.prior_alpha), _json_prior(t.prior_beta)], "notes": list(t.notes),
            "pool_bins": t.pool_bins, "meta": self.meta,
        }

    def save(self, path) -> Path:
        """Write one .npz (arrays + JSON header) atomically: a temp file, then rename. An existing
        file at `path` is replaced only when it is a policy file (never a user's other data)."""
        path = check_policy_target(path)
        t, p = self.tables, self.predictor
        arrays = {f"tables.{k}": getattr(t, k) for k in
                  ("edges", "edges0", "alpha", "beta", "n_obs", "trans", "trans0", "cnext", "c0") + COLD_FIELDS}
        if t.has_start_evidence:
            arrays.update({f"tables.{k}": getattr(t, k) for k in EVIDENCE_FIELDS})
        if t.has_route_evidence:
            arrays["tables.evidence_route_p"] = t.evidence_route_p
        arrays.update({f"predictor.{k}": getattr(p, k) for k in
                       ("w1", "b1", "w2", "b2", "iso_x", "iso_y", "knot_counts", "feature_counts")})
        arrays.update({"solved.stop": self.stop_table, "solved.start": self.start_table,
                       "solved.stop_cold": self.stop_cold_table, "solved.route": self._route})
        from asd.fsutil import atomic_write

        return atomic_write(path, lambda fh: np.savez(fh, header=np.array(json.dumps(self.header())), **arrays))

    @classmethod
    def load(cls, path, *, expect_tiers=None, expect_params_b=None, expect_content_hash=None) -> Policy:
        """Read a policy file; refuses another format version with a clear message, and (with
        expect_*) a policy calibrated for another ladder or bundle (see `check_compatible`)."""
        path = Path(path)
        if not path.is_file():
            raise PolicyError(f"policy file {path} is a directory, not a policy file" if path.is_dir()
                              else f"policy file {path} is not a regular file (a device or a pipe), not a policy "
                                   "file" if path.exists() else f"policy file {path} not found")
        try:
            with open(path, "rb") as fh:
                magic = fh.read(4)
            if magic != b"PK\x03\x04":  # np.load would call any other file "pickled (object) data"
                raise ValueError("not an .npz archive (a policy is the .npz that `asd calibrate -o` writes)")
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            with data:
                header = loads_unique(str(data["header"]))
                arrays = {k: data[k] for k in data.files if k != "header"}
            if not isinstance(header, dict):
                raise ValueError(f"its header is a JSON {type(header).__name__}, not an object")
        except (OSError, ValueError, KeyError, EOFError, json.JSONDecodeError, zipfile.BadZipFile, zlib.error) as exc:
            # a truncated or bit-flipped archive: BadZipFile (or zlib's error) from the zip layer
            raise PolicyError(f"policy file {path} is not a readable asd policy ({exc.__class__.__name__}: {exc})") from None
        if header.get("format") != POLICY_FORMAT:
            raise PolicyError(f"policy file {path}: format {header.get('format')!r} is not {POLICY_FORMAT!r}")
        if header.get("version") not in READABLE_VERSIONS:
            raise PolicyError(f"policy file {path} has version {header.get('version')}; this asd "
                              f"({__version__}) reads versions {', '.join(map(str, READABLE_VERSIONS))}: recalibrate")
        try:
            tables = EngineTables(**{k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("tables.")},
                                  prior_alpha=_from_json_prior(header["prior"][0]),
                                  prior_beta=_from_json_prior(header["prior"][1]),
                                  notes=tuple(header["notes"]), cold_start=bool(header["cold_start"]),
                                  pool_bins=header.get("pool_bins", 0))  # files before pooling: 0
            pa = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("predictor.")}
            predictor = Predictor(kind=header["predictor"], has_prompt=header["has_prompt"], **pa)
            policy = cls(tables, predictor, lam=header["lam"], risk=header["risk"], tier_names=header["tier_names"],
                         meta=header["meta"], start_lam=header["start_lam"])
            stored = arrays["solved.stop"], arrays["solved.start"], arrays["solved.stop_cold"]
        except KeyError as exc:
            raise PolicyError(f"policy file {path} is incomplete: missing {exc}") from None
        except (TypeError, IndexError, ValueError) as exc:  # a field of the wrong type or shape (a hand edit)
            raise PolicyError(f"policy file {path} has a malformed field ({exc.__class__.__name__}: {exc})") from None
        except PolicyError as exc:  # the arrays' own checks: say which file they are about
            raise PolicyError(f"policy file {path}: {exc}") from None
        if "solved.route" in arrays:  # version 4: the routed stage 0's threshold (NaN: the start table)
            policy_route, kept = policy._route, np.asarray(arrays["solved.route"], dtype=np.float64)
            if kept.shape != (1,) or not np.array_equal(policy_route, kept, equal_nan=True):
                raise PolicyError(f"policy file {path}: stored stage-0 route disagrees with a re-solve at "
                                  f"λ={policy.start_lam}")
        if not all(np.array_equal(solved, kept) for solved, kept in
                   zip((policy.stop_table, policy.start_table, policy.stop_cold_table), stored)):
            raise PolicyError(f"policy file {path}: stored stop tables disagree with a re-solve at λ={policy.lam}")
        try:
            policy.check_compatible(expect_tiers, expect_params_b, expect_content_hash)
        except PolicyError as exc:
            raise PolicyError(f"policy file {path}: {exc}") from None
        return policy


def _json_prior(prior):
    return list(prior) if isinstance(prior, tuple) else prior


def _from_json_prior(prior):
    return tuple(float(v) for v in prior) if isinstance(prior, list) else float(prior)


@dataclass(frozen=True)
class _StartEvidence:
    """EngineTables' evidence_* arrays checked and laid out for `empirical_start_nb`."""

    prompt_bins: np.ndarray
    tier_bins: np.ndarray
    cold_bins: np.ndarray
    accepted: np.ndarray
    cost: np.ndarray
    cost_cont: np.ndarray
    counts: np.ndarray
    route_p: np.ndarray | None = None


def _start_evidence(tables: EngineTables) -> _StartEvidence | None:
    """None without evidence; else the checked arrays (`tables.check_evidence`) as the kernel
    reads them."""
    if not tables.has_start_evidence:
        return None
    check_evidence(tables)
    arrays = {name: np.ascontiguousarray(getattr(tables, "evidence_" + name), dtype=dtype)
              for name, dtype in (("prompt_bins", np.int64), ("tier_bins", np.int64), ("cold_bins", np.int64),
                                  ("accepted", np.float64), ("cost", np.float64), ("cost_cont", np.float64))}
    counts = np.bincount(arrays["prompt_bins"], minlength=tables.n_prompt_bins).astype(np.float64)
    route_p = None if tables.evidence_route_p is None else np.ascontiguousarray(tables.evidence_route_p,
                                                                                dtype=np.float64)
    return _StartEvidence(counts=counts, route_p=route_p, **arrays)
