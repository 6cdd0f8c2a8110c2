"""The frontier plots: what each draws, read back from the figure before it is saved."""

from __future__ import annotations

import pytest

from asd.simulator import plots as P


def point(quality, cost, p95, lam=None):
    out = {"quality": quality, "cost_rel": cost, "latency_ms": {"mean": p95, "p50": p95, "p95": p95, "p99": p95}}
    return out if lam is None else out | {"lambda": lam}


@pytest.fixture
def drawn(monkeypatch):
    """The axes of every figure `plots` saves (the figure itself is still written)."""
    axes = []
    save = P._save

    def keep(fig, path):
        axes.append(fig.axes[0])
        return save(fig, path)

    monkeypatch.setattr(P, "_save", keep)
    return axes


def lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_a_one_point_policy_frontier_is_drawn(drawn, tmp_path):
    """A ladder whose first tier is always right has one distinct policy: `ax.step` through one
    point drew nothing, so the PNG showed no policy at all."""
    P.frontier([point(1.0, 0.1, 50.0, lam=0.0)], {"always-a": [point(1.0, 0.1, 50.0)]}, tmp_path / "f.png")
    dots = lines(drawn[0])["policy (each distinct λ)"]
    assert dots.get_marker() == "o" and list(dots.get_xdata()) == [0.1]
    # over the baseline at the same point, which hid it
    assert dots.get_zorder() > lines(drawn[0])["always-a"].get_zorder()
    assert (tmp_path / "f.png").stat().st_size > 0


def test_the_policy_line_steps_through_the_points_no_other_beats(drawn, tmp_path):
    """With stage 0 a larger λ can cost more for no better quality: every point is a dot, the
    line joins only those with better quality than every cheaper one."""
    policy = [point(0.5, 0.2, 10, lam=0.0), point(0.7, 0.5, 30, lam=1.0), point(0.6, 0.6, 20, lam=2.0),
              point(0.8, 0.9, 40, lam=3.0)]
    P.frontier(policy, {}, tmp_path / "f.png")
    drawn_lines = lines(drawn[0])
    assert list(drawn_lines["policy (each distinct λ)"].get_xdata()) == [0.2, 0.5, 0.6, 0.9]
    best = drawn_lines["policy frontier (best at no more cost)"]
    assert list(best.get_xdata()) == [0.2, 0.5, 0.9] and list(best.get_ydata()) == [0.5, 0.7, 0.8]


def test_a_sweep_replaying_a_policy_on_its_own_calibration_requests_says_in_sample(drawn, tmp_path):
    """The JSON said in_sample true while both plots said "quality (held out)"."""
    from asd.simulator.sweep import run_sweep
    from asd.traces.synth import write_synthetic_bundle
    from asd.calibration.calibrate import calibrate_to_file

    write_synthetic_bundle(tmp_path / "s", 120, 2, 3)
    calibrate_to_file(tmp_path / "s", tmp_path / "p.npz")
    result = run_sweep(tmp_path / "s", policy=tmp_path / "p.npz", plots=tmp_path / "plots")
    assert result["in_sample"]
    assert [ax.get_ylabel() for ax in drawn] == ["quality (in sample)"] * 2
    P.frontier([point(0.5, 0.2, 10, lam=0.0)], {}, tmp_path / "f.png")
    assert drawn[-1].get_ylabel() == "quality (held out)"


def test_baselines_are_joined_in_order_of_latency_on_the_latency_plot(drawn, tmp_path):
    """The tuned baselines come ordered by cost; joined in that order on the quality–latency
    plot, a point cheaper but slower than the next made the line zigzag back along latency."""
    threshold = [point(0.5, 0.2, 30), point(0.6, 0.4, 20), point(0.8, 0.9, 40)]
    P.frontier([point(0.5, 0.2, 10, lam=0.0)], {"threshold": threshold}, tmp_path / "f.png", x="latency")
    line = lines(drawn[0])["threshold"]
    assert list(line.get_xdata()) == [20, 30, 40] and list(line.get_ydata()) == [0.6, 0.5, 0.8]


@pytest.mark.parametrize("stat", ["p99", "mean", "p95"])
def test_the_latency_histogram_marks_the_statistic_tau_max_limits(drawn, tmp_path, stat):
    """It marked p50 and p95 whatever --stat said, so under --stat p99 the limited statistic was
    never drawn and the τ_max line stood beside a p95 line."""
    import numpy as np

    latency = np.arange(1.0, 1001.0)
    P.latency_histogram(latency, tmp_path / "latency.png", title="t", tau_max=990.0, stat=stat)
    labels = list(lines(drawn[0]))
    value = {"p99": np.percentile(latency, 99), "mean": latency.mean(), "p95": np.percentile(latency, 95)}[stat]
    assert f"{stat} {value:.0f} ms" in labels and "τ_max 990 ms (limits the " + stat + ")" in labels
    assert sum(label.startswith("p95 ") for label in labels) == 1  # not drawn twice under --stat p95
