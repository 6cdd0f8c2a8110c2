"""Calibrated acceptance predictors, one per stage (the prompt stage 0, then one per tier): fit
with cross-validation grouped by request, calibrate with isotonic regression, report honest
out-of-fold metrics, and export the final model in exactly the form the engine's numba forward
pass evaluates (`asd.engine.Predictor`).

The scheme (`fit_stage`), on the labelled rows (y not NaN), K folds grouped by request:
1. out-of-fold RAW scores: fold k's rows are scored by a model fitted on the other K−1 folds;
2. out-of-fold CALIBRATED p̂ by cross-fitting: the isotonic map applied to fold k is fitted on
   the other folds' out-of-fold raw scores and labels, so fold k's labels never calibrate fold
   k's p̂ — these are the p̂ that the metrics and the engine tables use;
3. the exported model: the predictor refitted on every labelled row, and one isotonic map fitted
   on all out-of-fold raw scores. Unlabelled rows get this final model's p̂ (tables need p̂ for
   every request; those rows took no part in any fit).

Standardisation is folded into the exported first-layer weights, so the engine sees raw features.
Degenerate stages (no labelled row, one class only, fewer labelled requests than folds, every
feature constant) get a constant predictor at the observed rate — stated in `StageFit.notes`,
never a crash or NaN. Soft labels in (0, 1) are fitted as the expected log-loss: each soft row
becomes a positive with weight y and a negative with weight 1 − y; the isotonic map regresses on
y itself.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import ThreadpoolController

from asd.calibration.metrics import best_single_feature, ece, reliability_plot, stage_metrics
from asd.engine.policy import Predictor
from asd.errors import PolicyError

__all__ = ["PREDICTORS", "PREDICTOR_OPTIONS", "StageFit", "best_single_feature", "ece", "fit_stage",
           "group_folds", "reliability_plot", "stack_predictor"]

FIT_THREADS = 2  # a stage's cross-validation fits run two at a time (they wait on BLAS and Cython, not the GIL)
MLP_HIDDEN = 128  # the research protocol's QualityPredictor: Linear(F, 128) → ReLU → Linear(128, 1)
_LOGIT_CLIP = 1e-12  # a constant predictor's bias is logit(rate) with rate clipped away from 0 and 1


def _sigmoid(z):
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _logit(p: float) -> float:
    p = min(max(p, _LOGIT_CLIP), 1.0 - _LOGIT_CLIP)
    return float(np.log(p / (1.0 - p)))


# -- the predictor kinds ---------------------------------------------------------------------

def _weights(step, w) -> dict:
    """Pipeline fit keyword for sample weights, only when there are any (MLPClassifier takes
    them from scikit-learn 1.7 on; hard 0/1 labels never need them)."""
    return {} if w is None else {f"{step}__sample_weight": w}


@dataclass
class _Constant:
    """A model that scores every row `rate` (a fold or stage with one class, or no signal)."""

    rate: float

    def raw(self, X):
        return np.full(X.shape[0], self.rate)

    def engine_weights(self, n_features, hidden):
        return (np.zeros((hidden, n_features)), np.zeros(hidden), np.zeros(hidden),
                _logit(self.rate))


class _Logistic:
    """Standardise → LogisticRegression (lbfgs, L2); exported as w·x + b on raw features."""

    exportable = True

    def __init__(self, C=1.0, max_iter=300, seed=0, **_):
        self.pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))

    def fit(self, X, y, w):
        self.pipeline.fit(X, y, **_weights("logisticregression", w))  # ConvergenceWarning: see _fit_stage
        scaler, lr = self.pipeline[0], self.pipeline[1]
        self.w = lr.coef_[0] / scaler.scale_
        self.b = float(lr.intercept_[0] - self.w @ scaler.mean_)
        return self

    def raw(self, X):
        return _sigmoid(X @ self.w + self.b)

    def engine_weights(self, n_features, hidden):
        return self.w[None, :].copy(), np.array([self.b]), np.zeros(1), 0.0


class _MLP:
    """Standardise → one ReLU hidden layer → sigmoid (sklearn MLPClassifier); exported with the
    standardisation folded into w1, b1."""

    exportable = True

    def __init__(self, hidden=MLP_HIDDEN, alpha=1e-4, max_iter=200, seed=0, **_):
        self.hidden, self.alpha, self.max_iter, self.seed = int(hidden), alpha, max_iter, seed

    def fit(self, X, y, w):
        # adam + early stopping (a 10% validation split, patience 5) is fast and does not overfit
        # on large stages; below 500 rows that split is too small, so lbfgs with more L2.
        big = X.shape[0] >= 500
        net = MLPClassifier(hidden_layer_sizes=(self.hidden,), activation="relu",
                            alpha=self.alpha if big else max(self.alpha, 1e-2),
                            solver="adam" if big else "lbfgs", early_stopping=big, n_iter_no_change=5,
                            batch_size=256, max_iter=self.max_iter, random_state=self.seed)
        self.pipeline = make_pipeline(StandardScaler(), net)
        self.pipeline.fit(X, y, **_weights("mlpclassifier", w))  # ConvergenceWarning: see _fit_stage
        scaler = self.pipeline[0]
        w0 = net.coefs_[0] / scaler.scale_[:, None]  # (F, H)
        self.w1 = np.ascontiguousarray(w0.T)
        self.b1 = net.intercepts_[0] - scaler.mean_ @ w0
        self.w2 = net.coefs_[1][:, 0].copy()
        self.b2 = float(net.intercepts_[1][0])
        return self

    def raw(self, X):
        return _sigmoid(np.maximum(X @ self.w1.T + self.b1, 0.0) @ self.w2 + self.b2)

    def engine_weights(self, n_features, hidden):
        return self.w1, self.b1, self.w2, self.b2


class _GBTReference:
    """HistGradientBoostingClassifier: the offline yardstick a linear/MLP predictor is held
    against; trees have no form in the engine's forward pass, so it cannot be exported."""

    exportable = False

    def __init__(self, max_iter=200, learning_rate=0.1, seed=0, **_):
        self.model = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=learning_rate,
                                                    random_state=seed)

    def fit(self, X, y, w):
        self.model.fit(X, y, sample_weight=w)
        self.pipeline = self.model
        return self

    def raw(self, X):
        return self.model.predict_proba(X)[:, 1]


PREDICTORS = {"logistic": _Logistic, "mlp": _MLP, "gbt-reference": _GBTReference}
# Options a kind takes; one that only another kind takes is ignored, so a caller (the CLI) can pass
# one set for every kind; one that no kind takes is refused.
PREDICTOR_OPTIONS = {"logistic": ("C", "max_iter"), "mlp": ("hidden", "alpha", "max_iter"),
                     "gbt-reference": ("max_iter", "learning_rate")}


# -- the fitted stage ------------------------------------------------------------------------

@dataclass(frozen=True)
class StageFit:
    """One stage's calibrated predictor. Arrays are aligned with the rows given to `fit_stage`.

    oof_p: calibrated p̂ for every row — cross-fitted out of fold on labelled rows, the final
      model's on unlabelled rows; oof_raw: the uncalibrated scores behind it;
    y: the labels (NaN = unlabelled); fold: each row's CV fold (−1: unlabelled, or no CV);
    metrics (a property): {auroc, brier, ece, n} out of fold on the labelled rows; folds: folds
      used (0 for the constant fallback); notes: what was done differently and why (fallbacks, soft labels);
    iso_x, iso_y: the final isotonic table; model: the final fitted predictor (`model.pipeline` is
      the scikit-learn estimator), None for the constant fallback; calibrator: the final sklearn
      IsotonicRegression (None for the fallback); constant: the rate when the fallback was used.
    """

    kind: str
    n_features: int
    oof_p: np.ndarray
    oof_raw: np.ndarray
    y: np.ndarray
    fold: np.ndarray
    folds: int
    notes: tuple
    iso_x: np.ndarray
    iso_y: np.ndarray
    model: object = field(default=None, repr=False)
    calibrator: IsotonicRegression | None = field(default=None, repr=False)
    constant: float | None = None

    @cached_property
    def metrics(self) -> dict:
        """{auroc, brier, ece, n} out of fold on the labelled rows, computed when first read: a
        simulation's fold fits never read them, and at 25,000 rows they cost 30 ms a stage."""
        labelled = ~np.isnan(self.y)
        return stage_metrics(self.y[labelled], self.oof_p[labelled], self.fold[labelled])

    @property
    def exportable(self) -> bool:
        return self.constant is not None or PREDICTORS[self.kind].exportable

    @property
    def hidden(self) -> int:
        if self.kind != "mlp":
            return 1
        return self.model.hidden if self.model is not None else 1

    def curve(self, n_rows: int | None = None):
        """(labels, out-of-fold p̂) of the labelled rows, for the reliability diagram. n_rows: the
        first rows only (a tier fitted with stage 0 stacks cold-start copies after the climbed
        rows; the diagram, like the metrics, counts each request once)."""
        y, p = self.y[:n_rows], self.oof_p[:n_rows]
        keep = ~np.isnan(y)
        return y[keep], p[keep]

    def export(self) -> dict:
        """One engine predictor row: w1 (H, F), b1 (H,), w2 (H,), b2, iso_x, iso_y (float64).
        Logistic is H = 1 with w2, b2 unused (zero); the MLP is one ReLU layer of width H."""
        if not self.exportable:
            raise PolicyError(f"predictor {self.kind!r} is an offline reference and cannot be exported "
                              "to a policy: use logistic or mlp")
        source = _Constant(self.constant) if self.model is None else self.model
        w1, b1, w2, b2 = source.engine_weights(self.n_features, self.hidden)
        return {"w1": np.array(w1, dtype=np.float64), "b1": np.array(b1, dtype=np.float64),
                "w2": np.array(w2, dtype=np.float64), "b2": float(b2),
                "iso_x": self.iso_x.copy(), "iso_y": self.iso_y.copy()}

    def predict_raw(self, X) -> np.ndarray:
        X = _features(X, self.n_features)
        if self.model is None:
            return _Constant(self.constant).raw(X)
        return self.model.raw(X)

    def predict(self, X) -> np.ndarray:
        """Calibrated P(accept) per row, computed as the engine computes it: the exported forward
        pass on raw features, then the piecewise-linear isotonic table clamped at its ends."""
        return np.interp(self.predict_raw(X), self.iso_x, self.iso_y)


# -- fitting ---------------------------------------------------------------------------------

def _features(X, n_features=None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise PolicyError(f"features have shape {X.shape}: expected (rows, features)")
    if n_features is not None and X.shape[1] != n_features:
        raise PolicyError(f"features have {X.shape[1]} columns: this predictor takes {n_features}")
    if not np.isfinite(X).all():
        raise PolicyError("features contain NaN or infinite values")
    return X


def _labels(y, n) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64).ravel()
    if y.size != n:
        raise PolicyError(f"{y.size} labels for {n} feature rows")
    bad = ~np.isnan(y) & ((y < 0.0) | (y > 1.0) | ~np.isfinite(y))
    if bad.any():
        raise PolicyError(f"labels must lie in [0, 1] or be NaN (unlabelled): row {int(np.argmax(bad))} "
                          f"is {y[bad][0]}")
    return y


def group_folds(groups, folds: int, seed: int) -> np.ndarray:
    """Fold of each row: whole groups (requests) are shuffled with `seed` and dealt round-robin
    into `folds` folds, so no group is ever in a fold's train and test part at once."""
    codes, uniques = pd.factorize(pd.Series(groups, dtype=object), use_na_sentinel=False)
    order = np.random.default_rng(seed).permutation(len(uniques))
    fold_of_group = np.empty(len(uniques), dtype=np.int64)
    fold_of_group[order] = np.arange(len(uniques)) % folds
    return fold_of_group[codes]


def _design(y):
    """(row index, 0/1 target, weight) that fit soft labels as expected log-loss: a soft row is a
    positive of weight y and a negative of weight 1 − y. Weights are None when all labels are 0/1."""
    soft = (y > 0.0) & (y < 1.0)
    if not soft.any():
        return np.arange(y.size), y, None
    rows = np.concatenate([np.arange(y.size), np.flatnonzero(soft)])
    target = np.concatenate([np.where(soft, 1.0, y), np.zeros(int(soft.sum()))])
    weight = np.concatenate([np.where(soft, y, 1.0), 1.0 - y[soft]])
    return rows, target, weight


def _fit_model(kind, X, y, options, seed, notes, where):
    rows, target, weight = _design(y)
    classes = np.unique(target if weight is None else target[weight > 0])
    if classes.size < 2:
        notes.append(f"{where}: training labels have one class only; that fold scores its observed rate")
        return _Constant(float(np.mean(y)))
    # hard labels: the rows as they are (X[rows] would copy X for nothing)
    return PREDICTORS[kind](seed=seed, **options).fit(X if weight is None else X[rows], target, weight)


def _isotonic(raw, y):
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
    return iso, np.asarray(iso.X_thresholds_, dtype=np.float64), np.asarray(iso.y_thresholds_, dtype=np.float64)


def _constant_fit(kind, X, y, rate, reason, notes) -> StageFit:
    notes.append(f"constant predictor at the observed acceptance rate {rate:.4g}: {reason}")
    n = X.shape[0]
    p = np.full(n, rate)
    return StageFit(kind=kind, n_features=X.shape[1], oof_p=p, oof_raw=p.copy(), y=y,
                    fold=np.full(n, -1, dtype=np.int64), folds=0,
                    notes=tuple(notes), iso_x=np.array([0.5]), iso_y=np.array([rate]), model=None,
                    constant=rate)


_CONTROLLER: ThreadpoolController | None = None


def _thread_limits(threads):
    """threadpoolctl's limits through one controller: it finds the BLAS/OpenMP libraries once
    (threadpool_limits looks them up on every call, 1 ms — and a calibration makes hundreds of fits)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=threads)


def fit_stage(kind: str, X, y, groups=None, *, folds: int = 5, seed: int = 0, threads: int | None = 1,
              **options) -> StageFit:
    """Fit one stage's calibrated predictor (see the module docstring for the scheme).

    X (N, F) finite features; y (N,) labels in [0, 1], NaN = unlabelled (scored, not fitted);
    groups (N,) request ids (None = every row its own request); `options` go to the predictor
    (logistic: C, max_iter; mlp: hidden, alpha, max_iter; gbt-reference: max_iter, learning_rate);
    another kind's option is ignored, so one call serves a loop over kinds, and a name no kind
    takes is refused.
    threads: BLAS/OpenMP threads while fitting (None = the libraries' default). One by default:
    these matrices are tall and thin, and on a busy machine OpenMP's spinning threads made a
    gradient-boosting fit 40× slower than on one core.
    """
    # warnings filters are process-wide: set once here, not inside fits that run in threads
    with _thread_limits(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _fit_stage(kind, X, y, groups, folds, seed, options, threads)


def _fit_stage(kind, X, y, groups, folds, seed, options, threads=1) -> StageFit:
    if kind not in PREDICTORS:
        raise PolicyError(f"predictor {kind!r}: use one of {', '.join(PREDICTORS)}")
    if int(folds) < 2:
        raise PolicyError(f"folds={folds}: cross-validation needs at least 2")
    known = {name for names in PREDICTOR_OPTIONS.values() for name in names}
    unknown = sorted(set(options) - known)
    if unknown:
        raise PolicyError(f"predictor option {unknown[0]!r} is unknown: {kind} takes "
                          f"{', '.join(PREDICTOR_OPTIONS[kind])}")
    options = {k: v for k, v in options.items() if k in PREDICTOR_OPTIONS[kind]}
    X = _features(X)
    n = X.shape[0]
    y = _labels(y, n)
    groups = np.arange(n) if groups is None else np.asarray(groups, dtype=object)
    if groups.shape != (n,):
        raise PolicyError(f"groups have shape {groups.shape}: expected ({n},), one request id per row")
    notes: list[str] = []
    labelled = ~np.isnan(y)
    Xl, yl = X[labelled], y[labelled]
    n_labelled = int(labelled.sum())
    if n_labelled < n:
        notes.append(f"{n - n_labelled} unlabelled rows scored by the final model, not fitted")
    if ((yl > 0) & (yl < 1)).any():
        notes.append("soft labels fitted as expected log-loss (weights y and 1 − y); AUROC at y ≥ 0.5")
    if n_labelled == 0:
        return _constant_fit(kind, X, y, 0.5, "no labelled rows (0.5 = no information)", notes)
    rate = float(yl.mean())
    if np.all(yl == yl[0]):
        return _constant_fit(kind, X, y, rate, "every label is the same", notes)
    if np.all(Xl == Xl[0]):
        return _constant_fit(kind, X, y, rate, "every feature is constant over the labelled rows", notes)
    n_groups = len(pd.unique(pd.Series(groups[labelled], dtype=object)))
    if n_groups < folds:
        return _constant_fit(kind, X, y, rate, f"{n_groups} labelled requests, fewer than {folds} folds", notes)

    fold_l = group_folds(groups[labelled], folds, seed)

    def fit(k):  # fold k's model and its out-of-fold raw scores; k = folds: the final model
        own_notes = []
        with _thread_limits(threads):  # OpenMP's limit is per thread: set it in this one too
            if k == folds:
                return _fit_model(kind, Xl, yl, options, seed, own_notes, "final model"), None, own_notes
            test = fold_l == k
            model = _fit_model(kind, Xl[~test], yl[~test], options, seed, own_notes, f"fold {k}")
            return model, model.raw(Xl[test]), own_notes

    # The K fold fits and the final one are independent, FIT_THREADS at a time; each is the fit a
    # sequential loop makes (its own estimator, BLAS/OpenMP at `threads`), collected in order.
    with ThreadPoolExecutor(max_workers=FIT_THREADS) as pool:
        fitted = list(pool.map(fit, range(folds + 1)))
    raw_l = np.empty(n_labelled)
    for k in range(folds):
        raw_l[fold_l == k] = fitted[k][1]
        notes.extend(fitted[k][2])
    p_l = np.empty(n_labelled)
    for k in range(folds):  # cross-fitted calibration: fold k's labels never calibrate fold k
        test = fold_l == k
        iso, _, _ = _isotonic(raw_l[~test], yl[~test])
        p_l[test] = iso.predict(raw_l[test])
    final = fitted[folds][0]
    notes.extend(fitted[folds][2])
    calibrator, iso_x, iso_y = _isotonic(raw_l, yl)

    oof_raw = np.empty(n)
    oof_p = np.empty(n)
    oof_raw[labelled], oof_p[labelled] = raw_l, p_l
    if n_labelled < n:
        oof_raw[~labelled] = final.raw(X[~labelled])
        oof_p[~labelled] = np.interp(oof_raw[~labelled], iso_x, iso_y)
    fold = np.full(n, -1, dtype=np.int64)
    fold[labelled] = fold_l
    return StageFit(kind=kind, n_features=X.shape[1], oof_p=oof_p, oof_raw=oof_raw, y=y, fold=fold,
                    folds=folds, notes=tuple(notes), iso_x=iso_x,
                    iso_y=iso_y, model=final, calibrator=calibrator)


# -- the engine's predictor ------------------------------------------------------------------

def _pad(a, shape):
    out = np.zeros(shape)
    out[tuple(slice(0, s) for s in a.shape)] = a
    return out


def stack_predictor(prompt_fit: StageFit | None, tier_fits, kind: str, route_fits=()) -> Predictor:
    """The engine's `Predictor`: row 0 = the prompt stage when `prompt_fit` is given (its own
    feature width P), then one row per tier (width F: a narrower tier stage is zero-padded, so its
    inputs may be padded with any finite values); without a prompt fit, the L tier rows alone (the
    Policy pads its unused row 0). route_fits: the routed stage 0's prompt-only fits of tiers
    1..L−2, appended after the tiers with the prompt's width P. MLP rows of different hidden
    widths are padded with dead hidden units (zero in, zero out). Neither padding changes what a
    row computes."""
    if kind not in ("logistic", "mlp"):
        raise PolicyError(f"predictor {kind!r} cannot be exported to a policy: use logistic or mlp")
    tier_fits = list(tier_fits)
    if not tier_fits:
        raise PolicyError("stack_predictor needs one fit per tier: got none")
    route_fits = list(route_fits)
    if route_fits and prompt_fit is None:
        raise PolicyError("routing rows read the prompt features: they need the prompt stage's fit")
    stages = ([prompt_fit] if prompt_fit is not None else []) + tier_fits + route_fits
    for i, fit in enumerate(stages):
        if fit.kind != kind:
            raise PolicyError(f"stage {i} was fitted as {fit.kind!r}, not {kind!r}")
    rows = [fit.export() for fit in stages]
    # Tier stages share one width F (narrower ones zero-padded: their extra inputs weigh
    # nothing); the prompt stage keeps its own width P.
    first_tier = 1 if prompt_fit is not None else 0
    width = max(r["w1"].shape[1] for r in rows[first_tier:first_tier + len(tier_fits)])
    hidden = max(r["w1"].shape[0] for r in rows)
    isotonic = [(r["iso_x"], r["iso_y"]) for r in rows]
    has_prompt = prompt_fit is not None

    def w1_of(s, r):  # prompt-stage rows (row 0, routing rows) keep their width
        prompt_row = has_prompt and (s == 0 or s >= first_tier + len(tier_fits))
        return _pad(r["w1"], (hidden, r["w1"].shape[1] if prompt_row else width))

    w1 = [w1_of(s, r) for s, r in enumerate(rows)]
    if kind == "logistic":
        return Predictor.logistic([w[0] for w in w1], np.array([r["b1"][0] for r in rows]),
                                  isotonic=isotonic, has_prompt=has_prompt)
    return Predictor.mlp(w1, np.stack([_pad(r["b1"], (hidden,)) for r in rows]),
                         np.stack([_pad(r["w2"], (hidden,)) for r in rows]), np.array([r["b2"] for r in rows]),
                         isotonic=isotonic, has_prompt=has_prompt)
