"""Policy: one versioned file round-trips decisions, refuses other versions, rejects bad input;
stage 0 skips small tiers exactly when they rarely suffice."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from asd.engine.policy import POLICY_VERSION, Policy, Predictor
from asd.engine.tables import build_tables
from asd.errors import PolicyError


def synthetic_ladder(rng, n=3000, n_tiers=4, n_features=16, hard_share=0.5, with_prompt=True):
    """Requests with a hidden difficulty; tier i answers well when its skill beats it.
    Feature 0 after each tier is the logit of that tier's true acceptance; prompt feature 0
    sees the difficulty."""
    difficulty = rng.normal(size=n) + np.where(rng.random(n) < hard_share, 2.5, -1.0)
    skill = np.linspace(-1.0, 2.5, n_tiers)
    logit = skill[None, :] - difficulty[:, None]
    p_true = 1.0 / (1.0 + np.exp(-logit))
    accepted = (rng.random((n, n_tiers)) < p_true).astype(float)
    features = rng.normal(size=(n, n_tiers, n_features)) * 0.1
    features[:, :, 0] = logit
    prompt_features = rng.normal(size=(n, n_features)) * 0.1
    prompt_features[:, 0] = -difficulty
    weights = np.zeros((n_tiers + 1, n_features))
    weights[:, 0] = 1.0
    predictor = Predictor.logistic(weights, np.zeros(n_tiers + 1), has_prompt=with_prompt)
    return predictor, features, prompt_features, p_true, accepted


def make_policy(rng, lam=20.0, costs=(1.0, 2.0, 4.0, 8.0), with_prompt=True, start_costs=None, **kw):
    predictor, features, prompt_features, p_true, accepted = synthetic_ladder(rng, with_prompt=with_prompt, **kw)
    prompt_p = 1.0 / (1.0 + np.exp(-prompt_features[:, 0])) if with_prompt else None
    policy = Policy.from_calibration(predictor, features, accepted, np.array(costs), oof_p=p_true, lam=lam,
                                     prompt_x=prompt_features if with_prompt else None, oof_prompt_p=prompt_p,
                                     n_prompt_bins=8 if with_prompt else None, start_costs=start_costs)
    return policy, features, prompt_features


def test_save_load_round_trip_gives_identical_decisions(tmp_path):
    rng = np.random.default_rng(0)
    policy, features, prompt_features = make_policy(rng, risk_lam := 30.0)
    policy = Policy(policy.tables, policy.predictor, lam=risk_lam, risk=0.9, tier_names=["8B", "13B", "34B", "70B"])
    path = policy.save(tmp_path / "p" / "policy.npz")
    loaded = Policy.load(path)
    assert loaded.lam == policy.lam and loaded.risk == 0.9 and loaded.tier_names == ["8B", "13B", "34B", "70B"]
    flat = features.reshape(-1, features.shape[-1])
    tiers = np.tile(np.arange(4), features.shape[0])
    np.testing.assert_array_equal(loaded.decide_batch(tiers, flat), policy.decide_batch(tiers, flat))
    np.testing.assert_array_equal(loaded.start_batch(prompt_features), policy.start_batch(prompt_features))
    assert not list(path.parent.glob(".*tmp"))  # atomic write leaves no temp file


def test_loading_a_file_of_another_version_is_refused_with_a_clear_message(tmp_path):
    rng = np.random.default_rng(1)
    policy, _, _ = make_policy(rng)
    path = policy.save(tmp_path / "policy.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(str(arrays["header"]))
    header["version"] = POLICY_VERSION + 1
    arrays["header"] = np.array(json.dumps(header))
    np.savez(tmp_path / "future.npz", **arrays)
    with pytest.raises(PolicyError, match=f"has version {POLICY_VERSION + 1}; .* reads versions 2, 3, {POLICY_VERSION}: recalibrate"):
        Policy.load(tmp_path / "future.npz")


def test_missing_or_corrupt_policy_file_raises_policy_error(tmp_path):
    with pytest.raises(PolicyError, match="not found"):
        Policy.load(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(PolicyError, match="not a readable asd policy"):
        Policy.load(tmp_path / "junk.npz")
    # a text file: named for what it is not, not numpy's "contains pickled (object) data"
    (tmp_path / "notes.txt").write_text("λ = 1e4 looked fine\n")
    with pytest.raises(PolicyError, match=r"notes.txt is not a readable asd policy .*not an \.npz archive") as info:
        Policy.load(tmp_path / "notes.txt")
    assert "pickle" not in str(info.value)
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as zf:
        zf.writestr("x.npy", b"")
    with pytest.raises(PolicyError):
        Policy.load(tmp_path / "other.npz")


def test_other_files_in_place_of_a_policy_raise_policy_error(tmp_path):
    """A .npy array, an empty file, a header that is not a JSON object, a file without the
    solved tables: each a PolicyError (they escaped as TypeError, EOFError — click's "Aborted!" —,
    AttributeError and KeyError)."""
    np.save(tmp_path / "array.npy", np.arange(3))
    (tmp_path / "empty.npz").write_bytes(b"")
    np.savez(tmp_path / "list.npz", header=np.array("[]"))
    rng = np.random.default_rng(1)
    path = make_policy(rng)[0].save(tmp_path / "policy.npz")
    with np.load(path) as data:
        np.savez(tmp_path / "unsolved.npz", **{k: data[k] for k in data.files if k != "solved.stop"})
    for name, message in [("array.npy", "not an .npz archive"), ("empty.npz", "not a readable asd policy"),
                          ("list.npz", "header is a JSON list"), ("unsolved.npz", "incomplete: missing 'solved.stop'")]:
        with pytest.raises(PolicyError, match=message):
            Policy.load(tmp_path / name)


def test_a_policy_header_naming_a_key_twice_is_refused(tmp_path):
    """A hand-edited header with a second "format" or "version" was read by its last value."""
    path = make_policy(np.random.default_rng(1))[0].save(tmp_path / "policy.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    header = str(arrays["header"])
    arrays["header"] = np.array(header[:-1] + f', "version": {POLICY_VERSION}}}')
    np.savez(tmp_path / "twice.npz", **arrays)
    with pytest.raises(PolicyError, match=r"twice.npz is not a readable asd policy \(DuplicateKeyError: duplicate key 'version'\)"):
        Policy.load(tmp_path / "twice.npz")


def test_damaged_or_hand_edited_policy_files_raise_one_policy_error_naming_the_file(tmp_path):
    """A truncated archive and a flipped byte (zipfile's BadZipFile, a CRC failure) and header or
    array fields of the wrong type or shape (ValueError, IndexError): each one PolicyError that
    names the file (they escaped as tracebacks, and `asd check` read them as a failed promise)."""
    rng = np.random.default_rng(1)
    path = make_policy(rng)[0].save(tmp_path / "policy.npz")
    raw = path.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(raw[:500])
    with zipfile.ZipFile(path) as zf:  # flip a byte inside a stored member's data: its CRC fails
        info = zf.getinfo("tables.trans.npy")
    flipped = bytearray(raw)
    flipped[info.header_offset + 30 + len(info.filename) + info.compress_size // 2] ^= 0xFF
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(str(arrays["header"]))
    edits = {"lam_text.npz": ({**header, "lam": "abc"}, {}),
             "prior_text.npz": ({**header, "prior": ["x", 1.0]}, {}),
             "edges_text.npz": (header, {"tables.edges": np.array(["a", "b"])}),
             "w1_shape.npz": (header, {"predictor.w1": np.zeros(3)})}
    for name, (head, changed) in edits.items():
        np.savez(tmp_path / name, **{**arrays, "header": np.array(json.dumps(head)), **changed})
    for name in ["truncated.npz", "flipped.npz", *edits]:
        with pytest.raises(PolicyError, match=f"policy file {tmp_path / name}") as caught:
            Policy.load(tmp_path / name)
        assert "\n" not in str(caught.value) and "missing tuple" not in str(caught.value), name


def test_decisions_follow_the_stop_table_of_the_bin_the_predictor_lands_in():
    rng = np.random.default_rng(2)
    policy, features, _ = make_policy(rng, with_prompt=False)
    for r in range(50):
        for tier in range(4):
            x = features[r, tier]
            p = policy.predict(tier, x)
            b = int(np.searchsorted(policy.tables.edges[tier, 1:-1], p, side="right"))
            assert policy.decide(tier, x) == bool(policy.stop_table[tier, b])


def test_solve_rewrites_tables_in_place_and_larger_lambda_stops_less():
    rng = np.random.default_rng(3)
    policy, features, _ = make_policy(rng, with_prompt=False)
    flat = features[:, 0, :]
    stops_small = policy.solve(1.0).decide_batch(0, flat).sum()
    stops_large = policy.solve(1000.0).decide_batch(0, flat).sum()
    assert stops_small > stops_large
    assert policy.lam == 1000.0


def test_stage0_skips_small_tiers_when_they_rarely_suffice():
    """Mostly-hard prompts: skipping straight to a deeper tier beats the best policy that
    starts every request at tier 0, and many requests skip."""
    rng = np.random.default_rng(4)
    policy, _, prompt_features = make_policy(rng, lam=20.0, hard_share=0.9)
    starts = policy.start_batch(prompt_features)
    assert (starts > 0).mean() > 0.3
    t = policy.tables
    start_at_tier0 = t.c0[0] + t.trans0[0] @ policy._vmean[0]
    weights = np.bincount(policy.prompt_bins(prompt_features), minlength=t.n_prompt_bins) / len(starts)
    assert (policy.value0 <= start_at_tier0 + 1e-9).all()
    assert weights @ policy.value0 < 0.95 * (weights @ start_at_tier0)  # ~10% lower here


@pytest.mark.parametrize("lam", [2.0, 20.0, 200.0])
def test_one_prompt_bin_and_no_saving_from_skipping_reduces_to_always_start_at_tier0(lam):
    """Starting cold at tier s costs as much as running tiers 0..s: stage 0 keeps tier 0."""
    rng = np.random.default_rng(5)
    costs = np.array([1.0, 2.0, 4.0, 8.0])
    policy, _, prompt_features = make_policy(rng, lam=lam, costs=costs, with_prompt=False,
                                             start_costs=np.cumsum(costs))
    assert policy.tables.n_prompt_bins == 1
    assert (policy.start_batch(prompt_features) == 0).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_single_decide_and_start_refuse_non_finite_features_like_the_batch_calls(bad):
    rng = np.random.default_rng(7)
    policy, features, prompt_features = make_policy(rng, with_prompt=True)
    for position in (0, features.shape[2] - 1):
        x = features[0, 1].copy()
        x[position] = bad
        with pytest.raises(PolicyError, match=r"decide\(tier=1\): features contain NaN or infinite values"):
            policy.decide(1, x)
        with pytest.raises(PolicyError, match="NaN"):
            policy.decide_batch(1, x[None, :])
        p = prompt_features[0].copy()
        p[position] = bad
        with pytest.raises(PolicyError, match=r"start\(prompt features\): features contain NaN or infinite"):
            policy.start(p)
        with pytest.raises(PolicyError, match="NaN"):
            policy.start_batch(p[None, :])
    # finite features still decide, and agree with the batch call
    x = features[0, 1]
    assert policy.decide(1, x) == bool(policy.decide_batch(1, x[None, :])[0])
    assert policy.start(prompt_features[0]) == int(policy.start_batch(prompt_features[:1])[0])


def test_bad_policy_input_raises_policy_error():
    rng = np.random.default_rng(6)
    policy, features, _ = make_policy(rng, with_prompt=False)
    with pytest.raises(PolicyError, match="λ=-1.0"):
        policy.solve(-1.0)
    with pytest.raises(PolicyError, match="λ=nan"):
        policy.solve(float("nan"))
    with pytest.raises(PolicyError, match="tier must be in 0..3"):
        policy.decide(4, features[0, 0])
    with pytest.raises(PolicyError, match="array of 16 values"):
        policy.decide(0, features[0, 0, :5])
    with pytest.raises(PolicyError, match="contiguous"):
        policy.decide(0, np.asfortranarray(features[:, 0, :])[0])
    with pytest.raises(PolicyError, match="features=list"):
        policy.decide(0, [0.0] * 16)
    with pytest.raises(PolicyError, match="prompt features"):
        policy.start(np.zeros(3))
    with pytest.raises(PolicyError, match=r"features have shape \(3, 5\)"):
        policy.decide_batch(0, np.zeros((3, 5)))
    with pytest.raises(PolicyError, match="NaN"):
        policy.decide_batch(0, np.full((2, 16), np.nan))
    with pytest.raises(PolicyError, match="tiers must lie in 0..3"):
        policy.decide_batch(7, np.zeros((2, 16)))
    with pytest.raises(PolicyError, match=r"tiers have shape \(3,\): expected \(2,\)"):
        policy.decide_batch([0, 1, 2], np.zeros((2, 16)))
    with pytest.raises(PolicyError, match="needs 5"):
        Policy(policy.tables, Predictor.logistic(np.zeros((3, 16)), np.zeros(3)))
    tables = build_tables(np.full((4, 4), 0.5), np.ones((4, 4)), np.ones(4), prompt_p=np.linspace(0, 1, 4))
    with pytest.raises(PolicyError, match="no prompt stage"):
        Policy(tables, policy.predictor)
    with pytest.raises(PolicyError, match="non-decreasing"):
        Predictor.logistic(np.zeros((5, 16)), np.zeros(5), isotonic=[([0.5, 0.1], [0.0, 1.0])] * 5)
    with pytest.raises(PolicyError, match="NaN"):
        Predictor.logistic(np.full((5, 16), np.nan), np.zeros(5))


def test_batch_calls_fill_a_given_out_buffer_and_refuse_one_the_kernel_would_overrun():
    """The kernels write one value per request into `out` unchecked: a short buffer corrupted
    the heap (a segfault, or glibc's abort, a few allocations later)."""
    rng = np.random.default_rng(11)
    policy, features, prompt_features = make_policy(rng, with_prompt=True)
    flat, n = features[:, 0], len(features)
    stops, starts = np.empty(n, np.uint8), np.empty(n, np.int64)
    assert policy.decide_batch(0, flat, out=stops) is stops
    assert policy.start_batch(prompt_features, out=starts) is starts
    np.testing.assert_array_equal(stops, policy.decide_batch(0, flat))
    np.testing.assert_array_equal(starts, policy.start_batch(prompt_features))
    wrong_stops = [np.empty(1, np.uint8), np.empty(n, np.int64), np.empty(2 * n, np.uint8)[::2],
                   np.empty((n, 1), np.uint8), list(range(n))]
    for out in wrong_stops:
        with pytest.raises(PolicyError, match=rf"out: .*expected a writeable contiguous uint8 array of shape \({n},\)"):
            policy.decide_batch(0, flat, out=out)
    read_only = np.empty(n, np.int64)
    read_only.flags.writeable = False
    for out in (np.empty(1, np.int64), np.empty(n, np.uint8), read_only):
        with pytest.raises(PolicyError, match=rf"expected a writeable contiguous int64 array of shape \({n},\)"):
            policy.start_batch(prompt_features, out=out)


def test_a_stage_row_outside_the_predictor_and_a_directory_for_a_policy_file_are_named(tmp_path):
    rng = np.random.default_rng(3)
    policy, features, _ = make_policy(rng, with_prompt=True)
    rows = policy.predictor.n_rows
    for row in (-1, rows, 1.0, True):  # -1 read the last stage's weights without a word
        with pytest.raises(PolicyError, match=rf"stage row {row!r}: must be a whole number in 0\.\.{rows - 1}"):
            policy.predictor.predict_proba(row, features[:, 0])
    with pytest.raises(PolicyError, match=f"policy file {tmp_path} is a directory, not a policy file"):
        Policy.load(tmp_path)
    # a device exists: "not found" sent the user looking for a file that is there
    with pytest.raises(PolicyError, match=r"policy file /dev/null is not a regular file \(a device or a pipe\)"):
        Policy.load("/dev/null")
    with pytest.raises(PolicyError, match=f"policy file {tmp_path / 'p.npz'} not found"):
        Policy.load(tmp_path / "p.npz")


def test_save_replaces_a_policy_file_but_never_other_data(tmp_path):
    rng = np.random.default_rng(5)
    policy, _, _ = make_policy(rng, with_prompt=True)
    target = tmp_path / "policy.npz"
    policy.save(target)
    policy.solve(policy.lam * 2 + 1).save(target)  # re-saving a policy over a policy is the common case
    assert Policy.load(target).lam == policy.lam
    notes = tmp_path / "requests.parquet"
    notes.write_bytes(b"PAR1 someone's table")
    for path in (notes, tmp_path):
        with pytest.raises(PolicyError, match=r"is not an asd policy file; not overwritten|is a directory"):
            policy.save(path)
    assert notes.read_bytes() == b"PAR1 someone's table"
