"""asd.engine: optimal stopping over a model ladder — tables, numba DP and decision kernels,
the Policy object (saved as one versioned file), λ search, and the protocol's rule as a baseline."""

from asd.engine.policy import POLICY_VERSION, TABLE_OPTIONS, Policy, Predictor
from asd.engine.protocol import ProtocolPolicy, optimal_stopping_rule
from asd.engine.search import (
    DistinctPolicy, LambdaSearch, QualitySearch, bisect_lambda, distinct_policies, search_lambda,
    search_lambda_quality, search_lambda_share, search_pinned,
)
from asd.engine.tables import EngineTables, bin_index, build_tables, make_edges, risk_quality

__all__ = [
    "POLICY_VERSION", "TABLE_OPTIONS", "DistinctPolicy", "EngineTables", "LambdaSearch", "Policy", "Predictor",
    "ProtocolPolicy", "QualitySearch", "bin_index", "bisect_lambda", "build_tables", "distinct_policies",
    "make_edges", "optimal_stopping_rule", "risk_quality", "search_lambda", "search_lambda_quality",
    "search_lambda_share", "search_pinned",
]
