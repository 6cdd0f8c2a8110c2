"""The fitted-Q reference (asd.simulator.fitted_q) and scripts/policy_reference.py: on ladders
whose features reveal acceptance, the learned policy finds the optimal actions (start tier
from the prompt; stop or climb from a tier's own features, climbed or cold); μ = 0 stops at
the cheapest tier; on a bundle, every point is bounded by the oracle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asd.errors import ConfigError
from asd.simulator.evaluate import Evaluation
from asd.simulator.fitted_q import default_learner, fitted_q_frontier, fitted_q_point, fitted_q_reference
from asd.simulator.sweep import baseline_frontiers
from asd.traces.synth import write_synthetic_bundle

REPO = Path(__file__).resolve().parents[2]
COSTS = np.array([0.1, 0.3, 1.0])


def ladder(n=3000, *, prompt_reveals=False, tier_reveals=False, seed=0):
    """3 tiers; difficulty d in 0..3: tiers k >= d accept, none when d = 3."""
    rng = np.random.default_rng(seed)
    d = rng.integers(0, 4, n)
    score = ((np.arange(3)[None, :] >= d[:, None]) & (d[:, None] < 3)).astype(float)
    prompt_x = np.eye(4)[d] if prompt_reveals else rng.normal(size=(n, 3))
    tier_x = rng.normal(size=(n, 3, 2))
    if tier_reveals:
        tier_x[:, :, 0] = score  # a tier's own acceptance, visible once it ran
    cost = np.tile(COSTS, (n, 1))
    return dict(score=score, cost=cost, cost_cont=cost.copy(), tier_x=tier_x, cold_x=tier_x.copy(),
                prompt_x=prompt_x, fold=np.arange(n) % 5), d


def learner():
    return default_learner(0)


def test_prompt_that_reveals_the_cheapest_acceptable_tier_gives_the_oracle():
    data, d = ladder(2000, prompt_reveals=True)
    point = fitted_q_point(20.0, make_learner=learner, **data)
    oracle_cost = np.where(d == 3, COSTS[0], COSTS[np.minimum(d, 2)]).mean()
    assert point.quality == pytest.approx((d < 3).mean())
    assert point.cost_rel == pytest.approx(oracle_cost, abs=0.01)
    assert point.start_fractions == pytest.approx([((d == 0) | (d == 3)).mean(), (d == 1).mean(), (d == 2).mean()],
                                                  abs=0.01)


def test_tier_features_that_reveal_acceptance_are_used_climbed_and_cold():
    # prompt is noise: the best plan starts cold at tier 1 (cost 0.3 + 0.5 · 1.0 = 0.8), stops there
    # when it accepts and climbs otherwise; starting at tier 0 costs 0.825, always-last 1.0.
    data, d = ladder(tier_reveals=True)
    point = fitted_q_point(20.0, make_learner=learner, **data)
    assert point.quality >= (d < 3).mean() - 0.005
    assert point.cost_rel <= 0.83
    assert point.stop_fractions[2] == pytest.approx((d >= 2).mean(), abs=0.02)  # climbs only when it must


def test_no_value_on_quality_stops_everything_at_the_cheapest_tier():
    data, d = ladder(prompt_reveals=True, tier_reveals=True)
    point = fitted_q_point(0.0, make_learner=learner, **data)
    assert point.start_fractions == [1.0, 0.0, 0.0] and point.stop_fractions == [1.0, 0.0, 0.0]
    assert point.cost_rel == pytest.approx(COSTS[0]) and point.quality == pytest.approx(data["score"][:, 0].mean())


def test_unjudged_scores_are_left_out_of_quality_and_the_frontier_is_sorted_by_cost():
    data, d = ladder(prompt_reveals=True)
    data["score"][::7, 2] = np.nan
    points = fitted_q_frontier(**data, mus=[0.0, 3.0, 30.0])
    assert [p.cost_rel for p in points] == sorted(p.cost_rel for p in points)
    assert all(np.isfinite(p.quality) and sum(p.start_fractions) == pytest.approx(1.0) for p in points)


def test_bad_ladders_are_refused():
    data, _ = ladder()
    with pytest.raises(ConfigError, match="at least 2 folds"):
        fitted_q_frontier(**(data | {"fold": np.zeros(len(data["fold"]), int)}), mus=[1.0])
    with pytest.raises(ConfigError, match="at least 2 tiers"):
        fitted_q_frontier(**(data | {"score": data["score"][:, :1]}), mus=[1.0])
    with pytest.raises(ConfigError, match="at least 2 tiers"):
        fitted_q_point(1.0, make_learner=learner, **(data | {"score": data["score"][:, 0]}))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    path = tmp_path_factory.mktemp("fq") / "ladder"
    write_synthetic_bundle(path, 400, 3, 3, informativeness=0.7)
    return path


def test_reference_on_a_bundle_is_bounded_by_the_oracle(synth):
    ev = Evaluation(synth, folds=3, seed=0, cost_model="params")
    oracle = baseline_frontiers(ev)["oracle"][0]
    points = fitted_q_reference(ev, [0.1, 10.0, 1000.0])
    assert len(points) == 3
    for p in points:
        assert p.quality <= oracle["quality"] + 1e-12
        assert sum(p.stop_fractions) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="pooled folds"):
        fitted_q_reference(_split_evaluation(synth), [1.0])


def _split_evaluation(path):
    from asd.cli import main
    from click.testing import CliRunner

    out = path.parent / "split"
    done = CliRunner().invoke(main, ["traces", "split", str(path), "-o", str(out), "--seed", "0"])
    assert done.exit_code == 0, done.output
    return Evaluation(out, split="test", seed=0)


def test_script_prints_both_costs_and_writes_json(tmp_path):
    target = tmp_path / "ref.json"
    done = subprocess.run([sys.executable, "scripts/policy_reference.py", "builtin", "--points", "3",
                           "--json", str(target)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "policy cost" in done.stdout and "fitted-Q cost" in done.stdout
    result = json.loads(target.read_text())
    assert [r["loss"] for r in result["comparison"]] == [0.01, 0.02, 0.03] and len(result["fitted_q"]) == 3
    bad = subprocess.run([sys.executable, "scripts/policy_reference.py", str(tmp_path / "missing")], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: no such bundle"]
    (tmp_path / "afile").write_text("")
    unwritable = tmp_path / "afile" / "ref.json"  # refused before the work
    bad = subprocess.run([sys.executable, "scripts/policy_reference.py", "builtin", "--json", str(unwritable)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"error: {unwritable}: cannot write --json ({unwritable.parent} is a file, not a directory)"]
    # each bad option named alone (it named `--points 25` when only --seed was given); an
    # unlabelled bundle before calibrating (it named `asd sweep` after calibrating)
    from asd.traces.bundle import open_bundle, write_bundle

    write_synthetic_bundle(tmp_path / "s", 60, 2, 5)
    source = open_bundle(tmp_path / "s")
    write_bundle(tmp_path / "u", source.manifest, source.to_pandas("requests"),
                 source.to_pandas("outputs").assign(quality=None, accepted=None), source.to_pandas("drafts"))
    for args, line in ((["builtin", "--seed", "-1"], "error: --seed -1: need a seed >= 0"),
                       (["builtin", "--points", "1"], "error: --points 1: need at least 2"),
                       ([str(tmp_path / "u")], f"error: policy_reference.py: {tmp_path / 'u'} has no quality label "
                        "at tier synth-8b: a policy fitted on it would know nothing about that tier's answers (label "
                        "the bundle first)")):
        bad = subprocess.run([sys.executable, "scripts/policy_reference.py", *args], cwd=REPO, capture_output=True,
                             text=True, timeout=600)
        assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [line], bad.stderr
