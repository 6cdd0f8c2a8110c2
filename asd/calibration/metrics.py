"""How good a calibrated acceptance predictor is: AUROC, Brier score, expected calibration error
(10 equal-width bins), the best single feature's AUROC as the bar a predictor must clear, and the
reliability diagram (matplotlib PNG) that `asd calibrate --plots` writes.

Labels are acceptance outcomes in [0, 1] (1 = the tier's answer was acceptable); NaN = unlabelled,
dropped everywhere here. Soft labels (strictly between 0 and 1) are used as they are by the Brier
score and ECE (both are defined for expectations) and thresholded at 0.5 for AUROC and for the
reliability curve, which need classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score

ECE_BINS = 10


def _labelled(y, p):
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and probabilities ({p.size}) differ in length")
    keep = ~np.isnan(y)
    return y[keep], p[keep]


def is_binary(y) -> bool:
    return bool(np.all((y == 0.0) | (y == 1.0)))


def ece(y, p, bins: int = ECE_BINS) -> float:
    """Expected calibration error with `bins` equal-width bins over [0, 1]: Σ_b (n_b / n) ·
    |mean label in b − mean p̂ in b|. The bins are sklearn `calibration_curve`'s (uniform), so
    the ECE and the reliability diagram agree: edges np.linspace(0, 1, bins + 1), bin b holds p̂
    in (edge_b, edge_b+1], the first also 0 (a p̂ on an edge is in the lower bin). NaN labels
    are dropped; no labelled row gives NaN."""
    y, p = _labelled(y, p)
    if y.size == 0:
        return float("nan")
    _, sum_y, sum_p = _bin_sums(y, p, bins)
    return float(np.abs(sum_y - sum_p).sum() / y.size)  # Σ n_b |ȳ_b − p̄_b| / n = Σ |Σy − Σp| / n


def _bin_sums(y, p, bins):
    """Per bin: count, Σ label, Σ p̂, with calibration_curve's (uniform) rule: searchsorted, side
    left, on the inner edges, so even a p̂ that float rounding puts beside an edge (0.3 <
    linspace's 0.30000000000000004) lands where sklearn puts it."""
    which = np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], np.clip(p, 0.0, 1.0))
    return (np.bincount(which, minlength=bins), np.bincount(which, weights=y, minlength=bins),
            np.bincount(which, weights=p, minlength=bins))


def reliability_curve(y, p, bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean p̂, mean label) per non-empty bin, and the count of every bin: the ECE's bins. For
    0/1 labels the first two are sklearn calibration_curve(strategy='uniform')'s prob_pred and
    prob_true (tested); a graded label enters as its value, as in the ECE."""
    y, p = _labelled(y, p)
    counts, sum_y, sum_p = _bin_sums(y, p, bins)
    full = counts > 0
    return sum_p[full] / counts[full], sum_y[full] / counts[full], counts


def auroc(y, score, fold=None) -> float | None:
    """Area under the ROC curve of `score` for labels y ≥ 0.5; None when one class only.

    fold (same length, −1 = none): the mean of each fold's own AUROC (folds with both classes),
    as cross-validation scores a model. Out-of-fold scores pooled over folds come from K models
    whose offsets differ, and a fold whose training rows held fewer acceptances scores its own
    rows lower — exactly where they are more often accepted — so the pooled AUROC understates
    every one of the models (by up to 0.04 on the real ladders) while a raw feature is not
    penalised; one model's ranking is what a deployed policy uses."""
    if fold is not None:
        y, score, fold = (np.asarray(a, dtype=np.float64).ravel() for a in (y, score, fold))
        if fold.shape != y.shape:
            raise ValueError(f"labels ({y.size}) and folds ({fold.size}) differ in length")
        per_fold = [auroc(y[fold == k], score[fold == k]) for k in np.unique(fold[fold >= 0])]
        per_fold = [a for a in per_fold if a is not None]
        if per_fold:
            return float(np.mean(per_fold))
    y, score = _labelled(y, score)
    classes = y >= 0.5
    if classes.all() or not classes.any():
        return None
    return float(roc_auc_score(classes, score))


def brier(y, p) -> float | None:
    y, p = _labelled(y, p)
    if y.size == 0:
        return None
    if is_binary(y):
        return float(brier_score_loss(y, p))
    return float(np.mean((p - y) ** 2))  # soft labels: the same squared error, as expectations


def stage_metrics(y, p, fold=None) -> dict:
    """{auroc, brier, ece, n} of calibrated p̂ against labels (NaN labels dropped); auroc None
    with one class, brier/ece None with no labelled row. fold: each row's cross-validation fold
    (−1 = none), for the per-fold mean AUROC (`auroc`); Brier and ECE are means over rows."""
    if fold is not None:
        keep = ~np.isnan(np.asarray(y, dtype=np.float64).ravel())
        fold = np.asarray(fold).ravel()[keep]
    y_l, p_l = _labelled(y, p)
    return {"auroc": auroc(y_l, p_l, fold), "brier": brier(y_l, p_l),
            "ece": ece(y_l, p_l) if y_l.size else None, "n": int(y_l.size)}


def best_single_feature(X, y, names) -> tuple[str | None, float | None]:
    """The feature whose value alone ranks accepted above rejected answers best, on labelled
    rows: AUROC of each column, sign-free (max(a, 1 − a)), so a predictor's AUROC can be held
    against it. (None, None) when the labels have one class only."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    if X.ndim != 2 or X.shape[0] != y.size or X.shape[1] != len(names):
        raise ValueError(f"features {X.shape} do not match {y.size} labels and {len(names)} names")
    keep = ~np.isnan(y)
    X, classes = X[keep], y[keep] >= 0.5
    if classes.all() or not classes.any():
        return None, None
    best_name, best = None, -1.0
    for name, column in zip(names, X.T):
        a = float(roc_auc_score(classes, column))  # a constant column scores 0.5
        a = max(a, 1.0 - a)
        if a > best:
            best_name, best = name, a
    return best_name, best


def reliability_plot(curves: Mapping, path, *, bins: int = ECE_BINS, title: str | None = None) -> Path:
    """Reliability diagram as a PNG: per stage, the mean label against the mean p̂ in `bins`
    equal-width bins (`reliability_curve`: calibration_curve's for 0/1 labels, and the ECE's)
    with the diagonal, and below it the count of requests in each of those bins. `curves` maps a
    stage name to `(y, p)` or to a `StageFit` (its labelled out-of-fold p̂). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    edges = np.linspace(0.0, 1.0, bins + 1)
    for name, curve in curves.items():
        y, p = curve.curve() if hasattr(curve, "curve") else curve
        y, p = _labelled(y, p)
        if y.size == 0:
            continue
        label = f"{name} (ECE {ece(y, p, bins):.3f}, n={y.size})"
        mean_p, mean_y, counts = reliability_curve(y, p, bins)
        line, = top.plot(mean_p, mean_y, marker="o", ms=3, label=label)
        bottom.stairs(counts, edges, color=line.get_color())
    top.set(ylabel="observed acceptance rate", xlim=(0, 1), ylim=(0, 1),
            title=title or "Reliability (out of fold)")
    top.legend(loc="upper left", fontsize=7)
    bottom.set(xlabel="predicted P(accept)", ylabel="requests", yscale="log")  # log: sparse bins stay visible
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return path
