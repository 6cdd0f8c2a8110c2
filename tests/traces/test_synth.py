"""Synthetic traces: seeded, valid, correlated across tiers, signal informativeness works."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from asd.errors import ConfigError
from asd.traces.synth import LADDERS, synth_accuracy, synthesize, write_synthetic_bundle
from asd.traces.validate import validate_bundle


def _grid(outputs, column, n_tiers):
    return outputs.column(column).to_numpy(zero_copy_only=False).reshape(-1, n_tiers)


def test_same_seed_same_tables_other_seed_differs():
    a = synthesize(200, 3, seed=7)
    b = synthesize(200, 3, seed=7)
    c = synthesize(200, 3, seed=8)
    for x, y in zip(a[1:], b[1:]):
        assert x.equals(y)
    assert a[0]["tiers"] == b[0]["tiers"]
    assert not a[2].column("quality").equals(c[2].column("quality"))


@pytest.mark.parametrize("n_tiers", sorted(LADDERS))
def test_every_ladder_size_writes_a_valid_bundle_marked_synthetic(tmp_path, n_tiers):
    bundle = write_synthetic_bundle(tmp_path / "b", 10, n_tiers, seed=0, token_lists=n_tiers == 3)
    assert validate_bundle(bundle) == []
    assert bundle.manifest["synthetic"] is True
    assert all(name.startswith("synth-") and name.endswith("b") for name in bundle.tier_names)
    assert bundle.n_tiers == n_tiers
    outputs = bundle.read("outputs", ["request_id", "tier"])
    assert outputs.num_rows == 10 * n_tiers


def test_tier_accuracy_follows_the_ladder_and_correctness_is_positively_correlated():
    n_tiers = 4
    _, _, outputs, _ = synthesize(20_000, n_tiers, seed=1)
    correct = _grid(outputs, "accepted", n_tiers).astype(float)
    assert np.all(np.diff(correct.mean(axis=0)) > 0)
    np.testing.assert_allclose(correct.mean(axis=0), synth_accuracy(n_tiers), atol=0.03)
    corr = np.corrcoef(correct.T)
    assert (corr[np.triu_indices(n_tiers, 1)] > 0.2).all()


def _auc(informativeness, column="mean_logprob"):
    _, _, outputs, _ = synthesize(20_000, 2, seed=2, informativeness=informativeness)
    correct = _grid(outputs, "accepted", 2)[:, 0]
    signal = _grid(outputs, column, 2)[:, 0]
    return roc_auc_score(correct, signal)


def test_informativeness_knob_moves_the_signal_auc():
    aucs = [_auc(rho) for rho in (0.0, 0.4, 0.8, 1.0)]
    assert abs(aucs[0] - 0.5) < 0.03
    assert aucs == sorted(aucs) and aucs[-1] > 0.97
    assert _auc(0.8, "mean_entropy") < 0.2  # entropy falls as the answer gets likelier


def test_signals_and_counts_respect_their_ranges():
    _, _, outputs, drafts = synthesize(5_000, 4, seed=3)
    lp = outputs.column("mean_logprob").to_numpy()
    assert (lp < 0).all() and (outputs.column("min_logprob").to_numpy() <= lp).all()
    assert (outputs.column("mean_entropy").to_numpy() >= 0).all()
    assert (outputs.column("n_output_tokens").to_numpy() >= 1).all()
    ttft, e2e = outputs.column("ttft_ms").to_numpy(), outputs.column("e2e_ms").to_numpy()
    assert (ttft > 0).all() and (e2e > ttft).all()
    acc, n_draft = drafts.column("n_accepted").to_numpy(), drafts.column("n_draft_tokens").to_numpy()
    assert ((acc >= 0) & (acc <= n_draft)).all()


def test_drafts_accept_more_when_the_two_tiers_agree():
    n_tiers = 3
    _, _, outputs, drafts = synthesize(20_000, n_tiers, seed=4)
    correct = _grid(outputs, "accepted", n_tiers)
    agree = (correct[:, :-1] == correct[:, 1:]).ravel()
    frac = drafts.column("n_accepted").to_numpy() / drafts.column("n_draft_tokens").to_numpy()
    assert frac[agree].mean() > frac[~agree].mean() + 0.2


def test_token_lists_match_counts_and_summaries():
    _, _, outputs, _ = synthesize(50, 2, seed=5, token_lists=True)
    rows = outputs.select(["n_output_tokens", "token_logprobs", "mean_logprob", "min_logprob"]).to_pylist()
    for row in rows:
        assert len(row["token_logprobs"]) == row["n_output_tokens"]
        assert row["mean_logprob"] == pytest.approx(np.mean(row["token_logprobs"]), rel=1e-4)
        assert row["min_logprob"] == min(row["token_logprobs"])


@pytest.mark.parametrize(
    "args,kwargs,message",
    [((5, 2, 0), {}, "10..1000000 requests"), ((10, 9, 0), {}, "2..8 tiers"), ((10, 1, 0), {}, "2..8 tiers"),
     ((10, 2, 0), {"informativeness": 1.5}, "informativeness")],
)
def test_out_of_range_arguments_are_config_errors(args, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        synthesize(*args, **kwargs)
