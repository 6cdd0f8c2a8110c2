"""The calibration requests' id sketch: exact on small calibration sets, a close estimate on
large ones, stable across runs, and the in-sample warning it drives for a policy replayed on a
copy of its calibration bundle (another content hash, the same requests)."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from asd.calibration.calibrate import calibrate
from asd.calibration.id_sketch import MIN_COMPARED, SKETCH_SIZE, calibration_share, request_id_sketch
from asd.cli import main
from asd.engine import Policy
from asd.simulator.evaluate import Evaluation


def ids(prefix, n):
    return [f"{prefix}-{i}" for i in range(n)]


@settings(max_examples=40, deadline=None)
@given(n_cal=st.integers(1, 300), n_new=st.integers(0, 300), n_shared=st.integers(0, 300))
def test_share_is_exact_when_the_calibration_set_fits_in_the_sketch(n_cal, n_new, n_shared):
    cal = ids("cal", n_cal)
    shared = cal[: min(n_shared, n_cal)]
    replayed = shared + ids("new", n_new)
    found = calibration_share(request_id_sketch(cal), replayed)
    if found is None:  # nothing to compare, or fewer than MIN_COMPARED of the replayed ids
        assert len(shared) < min(MIN_COMPARED, len(replayed)) or not replayed
        return
    share, compared = found
    # every calibration id is in the sketch, and every shared id hashes at or below its largest:
    # all of them are compared and found, so the share is exact over the compared ids
    assert len(shared) <= compared <= len(replayed)
    assert round(share * compared) == len(shared)


def test_share_is_estimated_within_a_few_points_on_large_sets():
    cal = ids("req", 50_000)
    rng = np.random.default_rng(0)
    replayed = list(rng.choice(cal, 8_000, replace=False)) + ids("other", 12_000)  # 40% seen
    share, compared = calibration_share(request_id_sketch(cal), replayed)
    assert compared >= 200 and abs(share - 0.4) < 0.08
    assert calibration_share(request_id_sketch(cal), ids("other", 20_000))[0] == 0.0


def test_sketch_is_deterministic_sorted_and_bounded():
    sketch = request_id_sketch(ids("r", 5000))
    assert sketch == request_id_sketch(list(reversed(ids("r", 5000))))  # order of ids does not matter
    assert len(sketch) == SKETCH_SIZE and sketch == sorted(sketch) and len(set(sketch)) == SKETCH_SIZE
    assert request_id_sketch(["a", "a", "b"]) == request_id_sketch(["b", "a"])
    assert calibration_share(["not hex"], ["a"]) is None and calibration_share([], ["a"]) is None


def test_replaying_on_a_split_copy_of_the_calibration_bundle_is_called_in_sample(tmp_path):
    for seed in (0, 1):
        done = CliRunner().invoke(main, ["traces", "split", "builtin", "-o", str(tmp_path / f"s{seed}"),
                                         "--seed", str(seed)])
        assert done.exit_code == 0, done.output
    policy = calibrate(tmp_path / "s0").policy  # fitted on split s0's calibration rows
    path = policy.save(tmp_path / "p.npz")
    assert len(Policy.load(path).meta["calibration"]["request_id_sketch"]) == 420  # 70% of 600, all in the sketch
    assert Evaluation(tmp_path / "s0", policy=path, split="test").warnings == []  # its own held-out split
    warned = Evaluation(tmp_path / "s1", policy=path, split="test").warnings  # another split of the same requests
    assert len(warned) == 1 and warned[0].startswith("in-sample: about ") and "of the 180 requests" in warned[0]
    share = float(warned[0].split("about ")[1].split("%")[0]) / 100
    assert 0.5 < share < 0.9
    everything = Evaluation("builtin", policy=path).warnings  # no split column: every request, 70% seen
    assert len(everything) == 1 and "about 70% of the 600 requests" in everything[0]


def test_without_an_estimate_the_bundle_hash_still_decides():
    policy = calibrate("builtin").policy  # every request of the built-in trace
    policy.meta["calibration"]["request_id_sketch"] = ["0000000000000001"]  # no replayed id hashes this low
    warned = Evaluation("builtin", policy=policy).warnings
    assert len(warned) == 1 and "is the bundle the policy was calibrated on (content hash" in warned[0]
