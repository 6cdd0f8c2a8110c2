"""A learned reference for the policy: cross-fitted fitted-Q iteration over the engine's own
actions and information, with a flexible learner (boosted trees by default).

The engine bins one calibrated p̂ per tier and solves a DP over a Markov chain of bins. When it
falls short of a quality target, is that the engine (the binning, the Markov step, the DP) or
the information (what the features say about acceptance)? This answers it: a learner that sees
every feature, not one binned score, picks the same actions — start at tier s from the prompt
features; after each tier, stop or climb one tier from that tier's features (climbed, or cold
at the start tier) and the prompt features — by fitted-Q iteration backwards from the last
tier. If it does no better than the policy on held-out requests, the features are the limit,
not the engine.

For one value weight μ (value = μ · quality − cost, cost in units of the mean always-last
cost), at each decision from the last tier back, the gain of each action over the first one
is regressed on the decision's features; the realised value of the chosen action on every row
is the target of the decision before it. Every prediction is out of fold: a row's decisions
come from models fitted on the other folds (the standard cross-fitted form; a row's own label
reaches it only through other rows' later decisions). Realised values, not predicted ones, are
carried back: a prediction carries its fit's errors on the prompt features, which the start
decision would then learn as signal. Unjudged scores (NaN) count as the tier's mean score in
the targets and are left out of the reported quality, as in the replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from asd.errors import ConfigError

DEFAULT_MUS = tuple(np.geomspace(0.1, 1000.0, 25))


def default_learner(seed: int = 0):
    from sklearn.ensemble import HistGradientBoostingRegressor

    # early stopping on a held-back tenth: on weak features the fit stays near the mean instead
    # of chasing noise, which would scatter the decisions
    return HistGradientBoostingRegressor(max_iter=200, learning_rate=0.1, min_samples_leaf=40, early_stopping=True,
                                         validation_fraction=0.1, n_iter_no_change=10, random_state=seed)


@dataclass
class FittedQPoint:
    mu: float
    quality: float
    cost_rel: float
    start_fractions: list[float]
    stop_fractions: list[float]

    def as_dict(self) -> dict:
        return {"mu": self.mu, "quality": self.quality, "cost_rel": self.cost_rel,
                "start_fractions": self.start_fractions, "stop_fractions": self.stop_fractions}


def _out_of_fold(x: np.ndarray, y: np.ndarray, fold: np.ndarray, make_learner) -> np.ndarray:
    pred = np.empty(len(y))
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        pred[test] = make_learner().fit(x[train], y[train]).predict(x[test])
    return pred


@dataclass
class _Inputs:
    """The ladder as the recursion reads it: scores (NaN filled for targets), costs in units of
    the mean always-last cost, and each decision's features with the prompt's."""

    score: np.ndarray
    filled: np.ndarray
    c_start: np.ndarray
    c_climb: np.ndarray
    x_climbed: list
    x_cold: list
    prompt_x: np.ndarray
    fold: np.ndarray


def _inputs(score, cost, cost_cont, tier_x, cold_x, prompt_x, fold) -> _Inputs:
    score = np.asarray(score, dtype=np.float64)
    if score.ndim != 2 or score.shape[1] < 2:
        raise ConfigError("fitted-Q reference: needs a ladder of at least 2 tiers")
    if len(np.unique(fold)) < 2:
        raise ConfigError("fitted-Q reference: needs at least 2 folds")
    n_tiers = score.shape[1]
    cost, cost_cont = np.asarray(cost, np.float64), np.asarray(cost_cont, np.float64)
    scale = float(cost[:, -1].mean())
    if scale <= 0:
        raise ConfigError("fitted-Q reference: the last tier's mean cost is 0; nothing to trade quality against")
    filled = np.nan_to_num(np.where(np.isnan(score), np.nanmean(score, axis=0), score))  # no judged row: 0
    prompt_x = np.asarray(prompt_x, np.float64)
    x_climbed = [np.hstack([np.asarray(tier_x[:, i], np.float64), prompt_x]) for i in range(n_tiers)]
    x_cold = [x_climbed[0]] + [np.hstack([np.asarray(cold_x[:, s], np.float64), prompt_x]) for s in range(1, n_tiers)]
    return _Inputs(score, filled, cost / scale, cost_cont / scale, x_climbed, x_cold, prompt_x, np.asarray(fold))


def _point(mu: float, d: _Inputs, make_learner) -> FittedQPoint:
    n, n_tiers = d.score.shape
    rows = np.arange(n)

    def decide(x, options):
        """Each row's option: the out-of-fold argmax of the predicted gain over option 0 (the
        options share most of their variance; a difference's fit does not add two fits' errors)."""
        gains = [np.zeros(n)] + [_out_of_fold(x, o - options[0], d.fold, make_learner) for o in options[1:]]
        return np.argmax(np.stack(gains), axis=0)

    # arriving climbed at tier i: realised value, end tier and the cost of the climbs after i
    value, end, spent = [None] * n_tiers, [None] * n_tiers, [None] * n_tiers
    value[-1], end[-1], spent[-1] = mu * d.filled[:, -1], np.full(n, n_tiers - 1), np.zeros(n)

    def step(i, x):
        stay_value, go_value = mu * d.filled[:, i], value[i + 1] - d.c_climb[:, i + 1]
        go = decide(x, [stay_value, go_value]) == 1
        return (np.where(go, go_value, stay_value), np.where(go, end[i + 1], i),
                np.where(go, spent[i + 1] + d.c_climb[:, i + 1], 0.0))

    for i in range(n_tiers - 2, -1, -1):
        value[i], end[i], spent[i] = step(i, d.x_climbed[i])
    cold = [(value[0], end[0], spent[0])] + [step(s, d.x_cold[s]) for s in range(1, n_tiers - 1)]
    cold.append((value[-1], end[-1], spent[-1]))
    start = decide(d.prompt_x, [v - d.c_start[:, s] for s, (v, _, _) in enumerate(cold)])
    final = np.stack([e for _, e, _ in cold])[start, rows]
    total = d.c_start[rows, start] + np.stack([sp for _, _, sp in cold])[start, rows]
    got = d.score[rows, final]
    quality = float(np.nanmean(got)) if np.isfinite(got).any() else float("nan")
    return FittedQPoint(float(mu), quality, float(total.mean()),
                        (np.bincount(start, minlength=n_tiers) / n).tolist(),
                        (np.bincount(final, minlength=n_tiers) / n).tolist())


def fitted_q_point(mu: float, score, cost, cost_cont, tier_x, cold_x, prompt_x, fold,
                   make_learner: Callable) -> FittedQPoint:
    """The held-out (pooled over folds) quality and relative cost of the fitted-Q policy at μ.

    score (N, L) with NaN where unjudged; cost (N, L) charged when a tier is the start tier,
    cost_cont (N, L) when it is climbed to; tier_x / cold_x (N, L, F) the climbed / cold
    features; prompt_x (N, P); fold (N,) each row's fold."""
    with threadpool_limits(limits=1, user_api="openmp"):
        return _point(float(mu), _inputs(score, cost, cost_cont, tier_x, cold_x, prompt_x, fold), make_learner)


def fitted_q_frontier(score, cost, cost_cont, tier_x, cold_x, prompt_x, fold, mus=DEFAULT_MUS, *,
                      make_learner: Callable | None = None, seed: int = 0, progress=None) -> list[FittedQPoint]:
    """fitted_q_point at every μ, sorted by cost."""
    make_learner = make_learner or (lambda: default_learner(seed))
    inputs = _inputs(score, cost, cost_cont, tier_x, cold_x, prompt_x, fold)
    points = []
    # one OpenMP thread: the fits are many and small, and the trees' threads spin against any
    # other busy core (fits of 0.02 s took seconds on a shared 2-core machine)
    with threadpool_limits(limits=1, user_api="openmp"):
        for j, mu in enumerate(mus):
            if progress is not None:
                progress(j, len(mus))
            points.append(_point(float(mu), inputs, make_learner))
    return sorted(points, key=lambda p: p.cost_rel)


def fitted_q_reference(ev, mus=DEFAULT_MUS, *, seed: int = 0, progress=None) -> list[FittedQPoint]:
    """The fitted-Q frontier on an Evaluation's requests and folds (the same rows, costs and
    features its policies are calibrated and replayed on). It fits on every row of the other
    folds; above MAX_CALIBRATION_ROWS calibration rows a fold's policy fits on a subsample, so
    on such bundles the reference has more data than the policy (it is a reference, not a rival)."""
    if ev.fixed is not None:
        raise ConfigError("fitted-Q reference: compares against policies calibrated per fold; give no --policy")
    if ev.design["folds"] is None:
        raise ConfigError("fitted-Q reference: needs pooled folds (--folds K), not a split")
    fold = np.concatenate([np.full(f.held.size, k) for k, f in enumerate(ev.folds)])
    fs, held = ev.features, ev.held
    return fitted_q_frontier(ev.labelled_score, ev.arrays.cost, ev.arrays.cost_cont, fs.tier_x[held], fs.cold_x[held],
                             fs.prompt_x[held], fold, mus, seed=seed, progress=progress)
