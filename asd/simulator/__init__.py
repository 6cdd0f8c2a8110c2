"""asd.simulator: replay a trace under a policy without contention (numba, over requests and λ
grids) and a discrete-event simulation of the cascade under load (continuous batching, queues,
KV limits), both on arrays; latency.py is the iteration-level latency model they share."""

from asd.simulator.des import DesResult, Pools, arrival_times, simulate
from asd.simulator.latency import latency_grid, request_latency_ms
from asd.simulator.replay import (
    GridResult, ReplayInputs, ReplayResult, policy_tables, replay, replay_grid, replay_statistic,
)

__all__ = [
    "DesResult", "GridResult", "Pools", "ReplayInputs", "ReplayResult", "arrival_times", "latency_grid",
    "policy_tables", "replay", "replay_grid", "replay_statistic", "request_latency_ms", "simulate",
]
