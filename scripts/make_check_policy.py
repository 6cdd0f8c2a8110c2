"""Regenerate tests/policies/builtin.npz, the policy asd's own tests check with `asd check`
(tests/simulator/test_check.py), after a change to the policy file format, the features or the
calibration: calibrates on the built-in trace with the options in
tests/policies/builtin.promises.json, writes the policy, and prints the check of its promises
(review the table; adjust the promises in the JSON only with a reason).

    PYTHONPATH=$PWD python scripts/make_check_policy.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMISES = REPO / "tests" / "policies" / "builtin.promises.json"


def main() -> int:
    sys.path.insert(0, str(REPO))
    from asd.calibration.calibrate import calibrate_to_file
    from asd.testing import check_policy

    spec = json.loads(PROMISES.read_text())
    policy = PROMISES.parent / spec["policy"]
    calibrate_to_file(spec["bundle"], policy, **spec["calibrate"])
    result = check_policy(policy, spec["bundle"], **spec["promises"])
    print(f"wrote {policy.relative_to(REPO)}")
    print(result.table())
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
