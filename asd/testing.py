"""Policy checks for users' own test suites: the promises of `asd check`, from Python.

    from asd.testing import assert_policy

    def test_policy_still_holds():
        assert_policy("policies/prod.npz", "traces/", min_quality=0.8, max_cost_rel=0.6,
                      max_latency={"p95": 800})

`check_policy` returns the CheckResult (`.passed`, `.rows`, `.table()`); `assert_policy` raises
AssertionError whose message is the table, so pytest shows every promise and what it measured.
Promise keywords, `beat` and `against` are defined in `asd.simulator.check`.
"""

from __future__ import annotations

from asd.simulator.check import CheckResult, Row
from asd.simulator.check import check_policy as _check_policy


def check_policy(policy, bundle, **promises) -> CheckResult:
    """Replay `bundle` (a path, "builtin", or a list of them) under `policy` (a policy file or a
    Policy) and test each promise: min_quality, max_loss_vs_last, max_cost_rel,
    max_latency={"p95": ms}, beat="threshold:0.01" (or a list), against=OLD, tolerance; options
    split, folds, mode, rate, seed. Bad input raises an AsdError."""
    return _check_policy(policy, bundle, **promises)


def assert_policy(policy, bundle, **promises) -> CheckResult:
    """`check_policy`, raising AssertionError with the table when any promise fails."""
    result = check_policy(policy, bundle, **promises)
    if not result.passed:
        raise AssertionError("policy promises failed:\n" + result.table())
    return result


__all__ = ["CheckResult", "Row", "assert_policy", "check_policy"]
