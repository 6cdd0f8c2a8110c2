"""asd.engine: optimal stopping over a model ladder — tables, numba DP and decision kernels,
the Policy object (saved as one versioned file), λ search, and the protocol's rule as a baseline."""

from asd.engine.policy import POLICY_VERSION, Policy, Predictor
from asd.engine.protocol import ProtocolPolicy, optimal_stopping_rule
from asd.engine.search import LambdaSearch, bisect_lambda, search_lambda, search_lambda_share
from asd.engine.tables import EngineTables, build_tables, risk_quality

__all__ = [
    "POLICY_VERSION", "EngineTables", "LambdaSearch", "Policy", "Predictor", "ProtocolPolicy",
    "bisect_lambda", "build_tables", "optimal_stopping_rule", "risk_quality", "search_lambda",
    "search_lambda_share",
]
