"""asd.calibration: from a trace bundle to engine inputs — dense views of the bundle, the
features the acceptance predictors read, (predictors and cost models alongside)."""

from asd.calibration.answers import Answer, extract_answer, normalise_text
from asd.calibration.features import (
    FEATURE_GROUPS, FEATURES, GROUPS, PROMPT_FEATURES, Feature, FeatureSet, FeatureSpec, available_groups,
    compute_features,
)
from asd.calibration.views import (
    ACCEPT_THRESHOLD, TokenLists, TraceView, acceptable, load_view, view_from_outputs, view_from_records,
)

__all__ = [
    "ACCEPT_THRESHOLD", "Answer", "FEATURES", "FEATURE_GROUPS", "Feature", "FeatureSet", "FeatureSpec", "GROUPS",
    "PROMPT_FEATURES", "TokenLists", "TraceView", "acceptable", "available_groups", "compute_features",
    "extract_answer", "load_view", "normalise_text", "view_from_outputs", "view_from_records",
]
