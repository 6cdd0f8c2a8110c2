"""The one "acceptable" rule of the project: which recorded answers count as good enough.

It lives here, beside the trace schema, so that `asd traces inspect` and calibration
(`asd.calibration.views`, which re-exports it) judge a trace the same way without the
trace layer importing calibration.
"""

from __future__ import annotations

from numbers import Real

import numpy as np

from asd.errors import ConfigError

ACCEPT_THRESHOLD = 0.5
ACCEPTABLE_RULE = "accepted, or quality >= {threshold} where accepted is null"


def acceptable(quality, accepted, threshold: float = ACCEPT_THRESHOLD) -> np.ndarray:
    """1.0 / 0.0 per answer, NaN where unlabelled: `accepted` where recorded (not NaN), else
    `quality >= threshold` where quality is recorded. Inputs are float arrays with NaN = null
    (booleans are fine); the result is float64 of their broadcast shape."""
    # a threshold outside the scores' range moved the oracle's figures without a word
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold {threshold!r}: the quality an answer needs to count as acceptable, "
                          "a number in [0, 1]")
    quality = np.asarray(quality, dtype=np.float64)
    accepted = np.asarray(accepted, dtype=np.float64)
    # quality is stored as float32: 0.7 reads back as 0.699999988, which missed a 0.7 threshold,
    # so the threshold is compared at that precision too
    by_quality = np.where(np.isnan(quality), np.nan, (quality >= float(np.float32(threshold))).astype(np.float64))
    return np.where(np.isnan(accepted), by_quality, (accepted != 0).astype(np.float64))


def acceptable_rule(threshold: float = ACCEPT_THRESHOLD) -> str:
    """The rule in words, for reports."""
    return ACCEPTABLE_RULE.format(threshold=threshold)


__all__ = ["ACCEPT_THRESHOLD", "acceptable", "acceptable_rule"]
