"""A given policy replayed on bundles that hold no calibration rows: a held-out bundle whose
every request is in split 'test' (the natural input of `asd check` in CI) and a small one. The
policy needs no calibration; only the tuned baselines do, and they are cross-fitted among the
replayed requests, as the report says. Both were refused ("split 'test' leaves 40 held-out
and 0 calibration requests"; "5 requests are too few for 5 folds")."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from asd.calibration.calibrate import calibrate_to_file
from asd.cli import main
from asd.simulator.evaluate import Evaluation
from asd.testing import check_policy
from asd.traces.bundle import open_bundle, write_bundle
from asd.traces.synth import write_synthetic_bundle


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    root = tmp_path_factory.mktemp("given")
    write_synthetic_bundle(root / "calib", 300, 3, 5, informativeness=0.7)
    policy = root / "policy.npz"
    calibrate_to_file(root / "calib", policy, lam=2000.0)
    return root, policy


def subset(root, name, n, split=None, seed=11):
    """`n` requests of a fresh synthetic ladder of the same tiers (not the calibration one)."""
    write_synthetic_bundle(root / f"{name}-src", max(n, 10), 3, seed, informativeness=0.7)
    source = open_bundle(root / f"{name}-src")
    requests = source.to_pandas("requests").iloc[:n]
    if split is not None:
        requests["split"] = split
    kept = set(requests["request_id"])

    def rows(table):
        frame = source.to_pandas(table)
        return pa.Table.from_pandas(frame[frame["request_id"].isin(kept)], preserve_index=False)

    drafts = rows("drafts") if (source.path / "drafts.parquet").exists() else None
    write_bundle(root / name, source.manifest, pa.Table.from_pandas(requests, preserve_index=False), rows("outputs"),
                 drafts, overwrite=True)
    return root / name


def test_a_test_only_bundle_is_checked_with_baselines_cross_fitted_among_its_requests(ladder):
    root, policy = ladder
    bundle = subset(root, "heldout", 40, split="test")
    result = CliRunner().invoke(main, ["check", str(policy), str(bundle), "--min-quality", "0", "--beat",
                                       "threshold:1"])
    assert result.exit_code == 0, result.output
    report = check_policy(policy, bundle, min_quality=0.0).bundles[0]
    assert "tuned baselines cross-fitted over 5 folds of them (no request outside split 'test')" in report["evaluation"]
    ev = Evaluation(bundle, policy=policy)
    assert sorted(np.concatenate([held for held in (f.held for f in ev.folds)])) == list(range(40))
    for f in ev.folds:  # each fold's baselines are tuned on the other folds' requests only
        assert f.cal.size and not np.intersect1d(f.cal, f.held).size


def test_a_small_bundle_takes_fewer_folds_and_below_four_requests_is_refused(ladder):
    root, policy = ladder
    report = check_policy(policy, subset(root, "five", 5), min_quality=0.0).bundles[0]
    assert "tuned baselines cross-fitted over 2 folds" in report["evaluation"]
    result = CliRunner().invoke(main, ["check", str(policy), str(subset(root, "three", 3)), "--min-quality", "0"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].endswith(
        "3 requests are too few to tune the threshold and router baselines beside the policy (at least 4)")
    # folds the user asked for are kept, and refused as before when too many
    result = CliRunner().invoke(main, ["check", str(policy), str(root / "five"), "--min-quality", "0",
                                       "--folds", "5"])
    assert result.exit_code == 2 and "5 requests are too few for 5 folds" in result.output


def test_calibrating_still_needs_calibration_rows(ladder):
    root, _ = ladder
    bundle = subset(root, "heldout2", 40, split="test")
    result = CliRunner().invoke(main, ["simulate", str(bundle), "--tau-max", "800"])
    assert result.exit_code == 2 and "leaves 40 held-out and 0 calibration requests" in result.output


def test_a_tier_without_a_feature_group_the_policy_uses_is_warned_about(ladder):
    """The whole bundle lacking logprobs is refused; one tier lacking them was replayed silently
    on fill values (p̂ 0.000 there, so the policy never stopped at it)."""
    root, policy = ladder
    source = open_bundle(subset(root, "lp", 40))
    outputs = source.to_pandas("outputs")
    middle = outputs["tier"] == 1
    for column in ("token_logprobs", "mean_logprob", "min_logprob"):
        outputs[column] = outputs[column].astype(object).where(~middle, None)
    write_bundle(root / "lp-gap", source.manifest, source.to_pandas("requests"), outputs,
                 source.to_pandas("drafts") if (source.path / "drafts.parquet").exists() else None)
    ev = Evaluation(root / "lp-gap", policy=policy, policy_name="p.npz")
    tier = open_bundle(root / "lp-gap").tier_names[1]
    assert any(w.startswith(f"tier {tier} has no logprob data in ") and "policy p.npz's logprob features" in w
               for w in ev.warnings), ev.warnings
    assert not any("has no logprob data" in w for w in Evaluation(root / "lp", policy=policy).warnings)


def test_tiers_lacking_reads_each_group_per_tier(ladder):
    from asd.calibration.features import tiers_lacking
    from asd.calibration.views import load_view

    root, _ = ladder
    source = open_bundle(subset(root, "txt", 20))
    outputs = source.to_pandas("outputs")
    outputs["output"] = ["the answer is B"] * len(outputs)  # synthetic ladders have no text of their own
    outputs["output"] = outputs["output"].where(outputs["tier"] != 2, None)
    write_bundle(root / "txt-gap", source.manifest, source.to_pandas("requests"), outputs, source.to_pandas("drafts"))
    view = load_view(root / "txt-gap")
    last = view.tier_names[2]
    assert [tiers_lacking(view, g) for g in ("format", "content", "agreement")] == [[last]] * 3
    assert tiers_lacking(view, "logprob") == tiers_lacking(view, "draft") == tiers_lacking(view, "length") == []


def test_a_stage0_policy_on_a_bundle_without_prompts_is_refused_in_one_line(tmp_path):
    """Stage 0 ran on the prompt features' fill values (prompt_missing 1) and the policy became
    always-last on such a bundle without a word. A policy calibrated without prompts (a
    synthetic ladder's) replays there as before."""
    policy, flat = tmp_path / "policy.npz", tmp_path / "flat.npz"
    calibrate_to_file("builtin", policy)
    calibrate_to_file("builtin", flat, stage0=False)
    source = open_bundle("builtin")
    requests = source.to_pandas("requests")
    requests["prompt"] = None
    write_bundle(tmp_path / "no-prompts", source.manifest, requests, source.to_pandas("outputs"),
                 source.to_pandas("drafts"))
    for args in (["check", str(policy), str(tmp_path / "no-prompts"), "--min-quality", "0"],
                 ["simulate", str(tmp_path / "no-prompts"), "--policy", str(policy), "--tau-max", "5000"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines()[-1] == (
            f"error: policy {policy}'s stage 0 reads the prompts, and {tmp_path / 'no-prompts'} records none; "
            "record them, or recalibrate without stage 0 (asd calibrate --no-stage0)"), args
    assert CliRunner().invoke(main, ["check", str(flat), str(tmp_path / "no-prompts"),
                                     "--min-quality", "0"]).exit_code == 0
