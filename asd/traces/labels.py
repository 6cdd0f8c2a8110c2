"""The one "acceptable" rule of the project: which recorded answers count as good enough.

It lives here, beside the trace schema, so that `asd traces inspect` and calibration
(`asd.calibration.views`, which re-exports it) judge a trace the same way without the
trace layer importing calibration.
"""

from __future__ import annotations

import numpy as np

ACCEPT_THRESHOLD = 0.5
ACCEPTABLE_RULE = "accepted, or quality >= {threshold} where accepted is null"


def acceptable(quality, accepted, threshold: float = ACCEPT_THRESHOLD) -> np.ndarray:
    """1.0 / 0.0 per answer, NaN where unlabelled: `accepted` where recorded (not NaN), else
    `quality >= threshold` where quality is recorded. Inputs are float arrays with NaN = null
    (booleans are fine); the result is float64 of their broadcast shape."""
    quality = np.asarray(quality, dtype=np.float64)
    accepted = np.asarray(accepted, dtype=np.float64)
    by_quality = np.where(np.isnan(quality), np.nan, (quality >= threshold).astype(np.float64))
    return np.where(np.isnan(accepted), by_quality, (accepted != 0).astype(np.float64))


def acceptable_rule(threshold: float = ACCEPT_THRESHOLD) -> str:
    """The rule in words, for reports."""
    return ACCEPTABLE_RULE.format(threshold=threshold)


__all__ = ["ACCEPT_THRESHOLD", "acceptable", "acceptable_rule"]
