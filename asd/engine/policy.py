"""The Policy: engine tables + predictor weights + the stop/start tables solved for one λ.
Saved as one versioned file (npz with a JSON header); `asd simulate` and `asd live` load it.

How it decides (DESIGN.md, "The decision problem, done right"): the predictor turns a
request's features after tier i into a calibrated P(accept), which falls into bin b; the
request stops at tier i iff the stop table says λ(1 − q_i(b)) ≤ c_{i+1}(b) + Σ T_i(b,b') V_{i+1}(b'),
the value of going on (backward induction over tiers, `dp_nb.solve_dp_nb`). Before any tier,
stage 0 scores the prompt alone and picks the start tier s minimising c_s + Σ T_{0→s} V_s.
Solving for a new λ is O(L·B²) and rewrites the tables in place; a decision is one predictor
evaluation and one table lookup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba.core.errors import NumbaError

from asd import __version__
from asd.engine import decide_nb as K
from asd.engine.dp_nb import path_totals_nb, solve_dp_nb, walk_bins_nb
from asd.engine.tables import EngineTables, parse_risk
from asd.errors import PolicyError

POLICY_FORMAT = "asd.policy"
POLICY_VERSION = 1
PREDICTOR_KINDS = {"logistic": K.LOGISTIC, "mlp": K.MLP}


def _f64(name, a, shape=None):
    a = np.ascontiguousarray(a, dtype=np.float64)
    if shape is not None and a.shape != shape:
        raise PolicyError(f"{name} has shape {a.shape}: expected {shape}")
    if not np.isfinite(a).all():
        raise PolicyError(f"{name} contains NaN or infinite values")
    return a


def _describe(a) -> str:
    shape = getattr(a, "shape", None)
    return f"{type(a).__name__} of shape {shape}" if shape is not None else type(a).__name__


def _non_finite_refusal(exc: ValueError, call: str) -> PolicyError:
    """The single-decision kernels refuse NaN/inf features with ValueError(K.NON_FINITE): that
    becomes a PolicyError naming the call; any other ValueError is re-raised as it is."""
    if str(exc) != K.NON_FINITE:
        raise exc
    return PolicyError(f"{call}: {K.NON_FINITE}")


@dataclass(frozen=True)
class Predictor:
    """Acceptance predictor in the forms calibration exports, one row per stage.

    Row 0 scores the prompt alone (stage 0; used only when `has_prompt`), row i+1 scores the
    request after tier i answered. w1 (S, H, F), b1 (S, H), w2 (S, H), b2 (S,): a logistic
    regression is H = 1 (w2, b2 unused); an MLP has one ReLU hidden layer of width H. The raw
    sigmoid output goes through a piecewise-linear isotonic table per row (iso_x, iso_y padded
    to K knots, knot_counts real knots per row).
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

    @property
    def n_rows(self) -> int:
        return self.w1.shape[0]

    @property
    def n_features(self) -> int:
        return self.w1.shape[2]

    @classmethod
    def logistic(cls, weights, bias, *, isotonic=None, has_prompt=False) -> Predictor:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 2:
            raise PolicyError(f"logistic weights have shape {weights.shape}: expected (stages, features)")
        n_rows = weights.shape[0]
        bias = _f64("logistic bias", bias, (n_rows,))
        return cls._build("logistic", weights[:, None, :], bias[:, None], np.zeros((n_rows, 1)),
                          np.zeros(n_rows), isotonic, has_prompt)

    @classmethod
    def mlp(cls, w1, b1, w2, b2, *, isotonic=None, has_prompt=False) -> Predictor:
        w1 = np.asarray(w1, dtype=np.float64)
        if w1.ndim != 3:
            raise PolicyError(f"MLP w1 has shape {w1.shape}: expected (stages, hidden, features)")
        n_rows, hidden, _ = w1.shape
        return cls._build("mlp", w1, _f64("MLP b1", b1, (n_rows, hidden)),
                          _f64("MLP w2", w2, (n_rows, hidden)), _f64("MLP b2", b2, (n_rows,)),
                          isotonic, has_prompt)

    @classmethod
    def _build(cls, kind, w1, b1, w2, b2, isotonic, has_prompt) -> Predictor:
        w1 = _f64(f"{kind} weights", w1)
        n_rows = w1.shape[0]
        if isotonic is None:
            isotonic = [([0.0, 1.0], [0.0, 1.0])] * n_rows
        if len(isotonic) != n_rows:
            raise PolicyError(f"isotonic tables: got {len(isotonic)}, need one per stage ({n_rows})")
        n_knots = max(len(np.atleast_1d(x)) for x, _ in isotonic)
        iso_x = np.ones((n_rows, n_knots))
        iso_y = np.ones((n_rows, n_knots))
        counts = np.zeros(n_rows, dtype=np.int64)
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
            counts[row] = x.size
        return cls(kind, w1, np.ascontiguousarray(b1), np.ascontiguousarray(w2),
                   np.ascontiguousarray(b2), iso_x, iso_y, counts, bool(has_prompt))


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


class Policy:
    """Tables, predictor and solved decisions for one λ. Build with tables + predictor,
    `solve(lam)` for another λ (in place), `decide`/`start` per request, `*_batch` for arrays."""

    def __init__(self, tables: EngineTables, predictor: Predictor, *, lam: float = 1.0,
                 risk: str | float = "mean", tier_names=None):
        n_tiers = tables.n_tiers
        if predictor.n_rows != n_tiers + 1:
            raise PolicyError(f"predictor has {predictor.n_rows} stages; a {n_tiers}-tier ladder needs "
                              f"{n_tiers + 1} (row 0 = prompt, then one per tier)")
        if predictor.kind not in PREDICTOR_KINDS:
            raise PolicyError(f"predictor kind {predictor.kind!r}: use one of {', '.join(PREDICTOR_KINDS)}")
        if not predictor.has_prompt and tables.n_prompt_bins != 1:
            raise PolicyError(f"tables have {tables.n_prompt_bins} prompt bins but the predictor has no "
                              "prompt stage (has_prompt=False): build tables without prompt_p")
        tier_names = [f"tier{i}" for i in range(n_tiers)] if tier_names is None else list(tier_names)
        if len(tier_names) != n_tiers:
            raise PolicyError(f"{len(tier_names)} tier names for {n_tiers} tiers")
        self.tables = tables
        self.predictor = predictor
        self.tier_names = tier_names
        gamma = parse_risk(risk)
        self.risk = "mean" if gamma is None else gamma
        self.q_stop, self.q_mean = tables.quality(self.risk)
        n_bins, n_prompt_bins = tables.n_bins, tables.n_prompt_bins
        self.stop_table = np.zeros((n_tiers, n_bins), dtype=np.uint8)
        self.value_table = np.zeros((n_tiers, n_bins))
        self.continue_table = np.zeros((n_tiers, n_bins))
        self._vmean = np.zeros((n_tiers, n_bins))
        self.start_table = np.zeros(n_prompt_bins, dtype=np.int64)
        self.value0 = np.zeros(n_prompt_bins)
        self._pack()
        self._n_features = predictor.n_features
        self._n_tiers = n_tiers
        self._stop_one = K.stop_packed_nb
        self._start_one = K.start_packed_nb
        self.lam = float("nan")
        self.solve(lam)

    # -- construction helpers -------------------------------------------------------------
    def _pack(self) -> None:
        t, p = self.tables, self.predictor
        n_rows, hidden, feats = p.w1.shape
        n_edges = max(t.n_bins, t.n_prompt_bins) + 1
        edges = np.ones((n_rows, n_edges))
        edges[0, : t.n_prompt_bins + 1] = t.edges0
        edges[1:, : t.n_bins + 1] = t.edges
        parts = [p.w1, p.b1, p.w2, p.b2, p.iso_x, p.iso_y, edges,
                 self.stop_table.astype(np.float64)]
        offsets = np.cumsum([0] + [a.size for a in parts])
        self._blob = np.ascontiguousarray(np.concatenate([a.ravel() for a in parts]))
        bin_counts = np.array([t.n_prompt_bins] + [t.n_bins] * t.n_tiers, dtype=np.int64)
        layout = np.zeros(K.HEADER_SIZE + 2 * n_rows + t.n_prompt_bins, dtype=np.int64)
        layout[[K.KIND, K.N_ROWS, K.N_HIDDEN, K.N_FEATURES, K.N_KNOTS_MAX, K.N_TIERS, K.N_EDGES,
                K.N_BINS, K.N_PROMPT_BINS]] = [PREDICTOR_KINDS[p.kind], n_rows, hidden, feats,
                                               p.iso_x.shape[1], t.n_tiers, n_edges, t.n_bins,
                                               t.n_prompt_bins]
        layout[K.OFF_W1:K.OFF_STOP + 1] = offsets[:8]
        layout[K.OFF_KNOT_COUNTS] = K.HEADER_SIZE
        layout[K.OFF_BIN_COUNTS] = K.HEADER_SIZE + n_rows
        layout[K.OFF_START] = K.HEADER_SIZE + 2 * n_rows
        layout[K.HEADER_SIZE:K.HEADER_SIZE + n_rows] = p.knot_counts
        layout[K.HEADER_SIZE + n_rows:K.HEADER_SIZE + 2 * n_rows] = bin_counts
        self._layout = layout
        self._stop_view = self._blob[offsets[7]:offsets[8]].reshape(t.n_tiers, t.n_bins)
        self._start_view = layout[K.HEADER_SIZE + 2 * n_rows:]

    @classmethod
    def from_calibration(cls, p_hat, accepted, costs, predictor: Predictor, *, lam: float = 1.0,
                         risk="mean", tier_names=None, **table_options) -> Policy:
        """Build tables (see `tables.build_tables`) and the policy in one call."""
        from asd.engine.tables import build_tables

        return cls(build_tables(p_hat, accepted, costs, **table_options), predictor, lam=lam,
                   risk=risk, tier_names=tier_names)

    # -- solving ----------------------------------------------------------------------------
    @property
    def n_tiers(self) -> int:
        return self.tables.n_tiers

    def solve(self, lam: float) -> Policy:
        """Backward induction for this λ; rewrites the stop/start tables in place."""
        lam = float(lam)
        if not (lam >= 0.0) or lam == float("inf"):
            raise PolicyError(f"λ={lam}: must be a finite number >= 0")
        t = self.tables
        solve_dp_nb(lam, self.q_stop, self.q_mean, t.trans, t.cnext, t.trans0, t.c0,
                    self.stop_table, self.value_table, self.continue_table, self._vmean,
                    self.start_table, self.value0)
        self._stop_view[:] = self.stop_table
        self._start_view[:] = self.start_table
        self.lam = lam
        return self

    # -- decisions --------------------------------------------------------------------------
    def decide(self, tier: int, features: np.ndarray) -> bool:
        """Stop at `tier` (0-based) given that tier's features (1-d contiguous float64 array,
        F long)? The hot path: two cheap checks and one compiled call (which also refuses NaN/inf
        features), no allocation."""
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

    def start(self, prompt_features: np.ndarray) -> int:
        """Start tier chosen at stage 0 from prompt features (tier 0 when no prompt predictor)."""
        try:
            if prompt_features.shape[0] == self._n_features:
                return int(self._start_one(self._blob, self._layout, prompt_features))
        except ValueError as exc:
            raise _non_finite_refusal(exc, "start(prompt features)") from None
        except (AttributeError, IndexError, NumbaError):
            pass
        raise PolicyError(f"start(prompt features={_describe(prompt_features)}): expected a 1-d contiguous "
                          f"float64 array of {self._n_features} values")

    def predict(self, tier: int | None, features) -> float:
        """Calibrated P(accept) after `tier` (None = the prompt-only stage 0)."""
        x = self._features(features, 1)[0]
        row = 0 if tier is None else self._check_tier(tier) + 1
        return float(K.predict_packed_nb(self._blob, self._layout, row, x))

    def decide_batch(self, tiers, features, out=None) -> np.ndarray:
        """uint8 stop flags for N requests at tiers (N,) with features (N, F); prange inside."""
        x = self._features(features, 2)
        tiers = self._tiers(tiers, x.shape[0])
        out = np.empty(x.shape[0], dtype=np.uint8) if out is None else out
        K.stop_batch_packed_nb(self._blob, self._layout, tiers, x, out)
        return out

    def start_batch(self, prompt_features, out=None) -> np.ndarray:
        """int64 start tiers for N requests from prompt features (N, F)."""
        x = self._features(prompt_features, 2)
        out = np.empty(x.shape[0], dtype=np.int64) if out is None else out
        K.start_batch_packed_nb(self._blob, self._layout, x, out)
        return out

    def prompt_bins(self, prompt_features) -> np.ndarray:
        """Stage-0 bin of each request (λ-independent)."""
        x = self._features(prompt_features, 2)
        out = np.empty(x.shape[0], dtype=np.int64)
        K.bins_batch_packed_nb(self._blob, self._layout, np.zeros(x.shape[0], dtype=np.int64), x, out)
        return out

    def tier_bins(self, features) -> np.ndarray:
        """Bin of each request after each tier, from features (N, L, F) (λ-independent)."""
        x = np.ascontiguousarray(features, dtype=np.float64)
        if x.ndim != 3 or x.shape[1:] != (self.n_tiers, self._n_features):
            raise PolicyError(f"tier features have shape {x.shape}: expected (requests, {self.n_tiers}, "
                              f"{self._n_features})")
        n = x.shape[0]
        rows = np.tile(np.arange(1, self.n_tiers + 1, dtype=np.int64), n)
        out = np.empty(n * self.n_tiers, dtype=np.int64)
        K.bins_batch_packed_nb(self._blob, self._layout, rows, x.reshape(n * self.n_tiers, -1), out)
        return out.reshape(n, self.n_tiers)

    def walk(self, prompt_bins, tier_bins) -> LambdaWalk:
        """Start and stop tier of each request from its precomputed bins, under this λ."""
        prompt_bins, tier_bins = self.check_bins(prompt_bins, tier_bins)
        out_start = np.empty(tier_bins.shape[0], dtype=np.int64)
        out_stop = np.empty(tier_bins.shape[0], dtype=np.int64)
        walk_bins_nb(prompt_bins, tier_bins, self.start_table, self.stop_table, out_start, out_stop)
        return LambdaWalk(out_start, out_stop)

    def check_bins(self, prompt_bins, tier_bins):
        tier_bins = np.ascontiguousarray(tier_bins, dtype=np.int64)
        if tier_bins.ndim != 2 or tier_bins.shape[1] != self.n_tiers:
            raise PolicyError(f"tier bins have shape {tier_bins.shape}: expected (requests, {self.n_tiers})")
        n = tier_bins.shape[0]
        prompt_bins = (np.zeros(n, dtype=np.int64) if prompt_bins is None
                       else np.ascontiguousarray(prompt_bins, dtype=np.int64))
        if prompt_bins.shape != (n,):
            raise PolicyError(f"prompt bins have shape {prompt_bins.shape}: expected ({n},)")
        if n and (tier_bins.min() < 0 or tier_bins.max() >= self.tables.n_bins):
            raise PolicyError(f"tier bins must lie in 0..{self.tables.n_bins - 1}")
        if n and (prompt_bins.min() < 0 or prompt_bins.max() >= self.tables.n_prompt_bins):
            raise PolicyError(f"prompt bins must lie in 0..{self.tables.n_prompt_bins - 1}")
        return prompt_bins, tier_bins

    def _check_tier(self, tier) -> int:
        if not 0 <= int(tier) < self.n_tiers:
            raise PolicyError(f"tier {tier}: must be in 0..{self.n_tiers - 1}")
        return int(tier)

    def _tiers(self, tiers, n):
        tiers = np.asarray(tiers, dtype=np.int64)
        if tiers.ndim == 0:
            tiers = np.full(n, int(tiers), dtype=np.int64)
        if tiers.shape != (n,):
            raise PolicyError(f"tiers have shape {tiers.shape}: expected ({n},), one per request")
        tiers = np.ascontiguousarray(tiers)
        if n and (tiers.min() < 0 or tiers.max() >= self.n_tiers):
            raise PolicyError(f"tiers must lie in 0..{self.n_tiers - 1}")
        return tiers

    def _features(self, features, ndim):
        x = np.ascontiguousarray(features, dtype=np.float64)
        if ndim == 1 and x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self._n_features:
            raise PolicyError(f"features have shape {x.shape}: expected (requests, {self._n_features})")
        if not np.isfinite(x).all():
            raise PolicyError("features contain NaN or infinite values")
        return x

    # -- persistence ------------------------------------------------------------------------
    def header(self) -> dict:
        t = self.tables
        return {
            "format": POLICY_FORMAT, "version": POLICY_VERSION, "asd_version": __version__,
            "tier_names": self.tier_names, "lam": self.lam, "risk": self.risk,
            "predictor": self.predictor.kind, "has_prompt": self.predictor.has_prompt,
            "n_features": self._n_features, "n_bins": t.n_bins, "n_prompt_bins": t.n_prompt_bins,
            "prior": [t.prior_alpha, t.prior_beta], "notes": list(t.notes),
        }

    def save(self, path) -> Path:
        """Write one .npz (arrays + JSON header) atomically: a temp file, then rename."""
        path = Path(path)
        t, p = self.tables, self.predictor
        arrays = {f"tables.{k}": getattr(t, k) for k in
                  ("edges", "edges0", "alpha", "beta", "n_obs", "trans", "trans0", "cnext", "c0")}
        arrays.update({f"predictor.{k}": getattr(p, k) for k in
                       ("w1", "b1", "w2", "b2", "iso_x", "iso_y", "knot_counts")})
        arrays.update({"solved.stop": self.stop_table, "solved.start": self.start_table})
        from asd.fsutil import atomic_write

        return atomic_write(path, lambda fh: np.savez(fh, header=np.array(json.dumps(self.header())), **arrays))

    @classmethod
    def load(cls, path) -> Policy:
        """Read a policy file; refuses another format version with a clear message."""
        path = Path(path)
        if not path.is_file():
            raise PolicyError(f"policy file {path} not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                arrays = {k: data[k] for k in data.files if k != "header"}
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise PolicyError(f"policy file {path} is not a readable asd policy ({exc.__class__.__name__}: {exc})") from None
        if header.get("format") != POLICY_FORMAT:
            raise PolicyError(f"policy file {path}: format {header.get('format')!r} is not {POLICY_FORMAT!r}")
        if header.get("version") != POLICY_VERSION:
            raise PolicyError(f"policy file {path} has version {header.get('version')}; this asd "
                              f"({__version__}) reads version {POLICY_VERSION} only: recalibrate")
        try:
            tables = EngineTables(**{k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("tables.")},
                                  prior_alpha=header["prior"][0], prior_beta=header["prior"][1],
                                  notes=tuple(header["notes"]))
            pa = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("predictor.")}
            predictor = Predictor(kind=header["predictor"], has_prompt=header["has_prompt"], **pa)
            policy = cls(tables, predictor, lam=header["lam"], risk=header["risk"], tier_names=header["tier_names"])
        except (KeyError, TypeError, IndexError) as exc:
            raise PolicyError(f"policy file {path} is incomplete: missing {exc}") from None
        if not (np.array_equal(policy.stop_table, arrays["solved.stop"])
                and np.array_equal(policy.start_table, arrays["solved.start"])):
            raise PolicyError(f"policy file {path}: stored stop tables disagree with a re-solve at λ={policy.lam}")
        return policy
