"""Report plots (matplotlib, PNG): latency distribution with p50/p95, stops per tier, the
quality–cost and quality–latency frontiers with every baseline."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from asd.errors import ConfigError  # noqa: E402
from asd.fsutil import atomic_file, check_writable_file  # noqa: E402


# The files each command writes into its --plots directory (the CLI refuses other outputs there).
PLOT_FILES = {"calibrate": ("reliability.png",), "simulate": ("latency.png", "stops.png"),
              "sweep": ("frontier_cost.png", "frontier_latency.png")}


def plots_dir(path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create --plots directory ({exc.strerror or exc})") from None
    return path


def check_plot_files(directory, command: str) -> None:
    """Before any work: each file `command` writes into its --plots directory must be writable
    there (a directory of that name failed only after minutes of calibrating, with other outputs
    already replaced). Raises AsdError naming the file."""
    for name in PLOT_FILES[command]:
        check_writable_file(Path(directory) / name, "--plots")  # the directory is made later


def latency_histogram(latency_ms: np.ndarray, path, *, title: str, tau_max: float | None = None,
                      stat: str = "p95") -> Path:
    """The latency distribution with p50, p95 and the statistic τ_max limits (`stat`) marked."""
    from asd.simulator.outcomes import latency_stat

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.hist(latency_ms, bins=60, color="#4c72b0", alpha=0.85)
    marks = dict.fromkeys(["p50", "p95", stat])  # the limited statistic is always drawn (p99, mean)
    for name, style in zip(marks, ("--", ":", "-.")):
        v = latency_stat(latency_ms, name)
        ax.axvline(v, color="black", linestyle=style, label=f"{name} {v:.0f} ms")
    if tau_max is not None:
        ax.axvline(tau_max, color="#c44e52", label=f"τ_max {tau_max:.0f} ms (limits the {stat})")
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("requests")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def stop_distribution(stop_fractions: dict[str, list[float]], tier_names, path) -> Path:
    """Grouped bars: share of requests stopping at each tier, per method."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    width = 0.8 / max(len(stop_fractions), 1)
    x = np.arange(len(tier_names))
    for k, (name, fractions) in enumerate(stop_fractions.items()):
        ax.bar(x + k * width, fractions, width, label=name)
    ax.set_xticks(x + 0.4 - width / 2, tier_names)
    ax.set_ylabel("share of requests stopping here")
    ax.legend(fontsize=7)
    return _save(fig, path)


def frontier(policy_points: list[dict], baselines: dict[str, list[dict]], path, *, x: str = "cost_rel",
             stat: str = "p95", in_sample: bool = False) -> Path:
    """Quality against cost (x="cost_rel") or against a latency statistic (x="latency"). Every
    distinct policy is a dot; the line steps through those no other beats (the best quality at
    no more cost or latency): with stage 0 a larger λ can cost more for no better quality, and
    a line through every point zigzagged. Each baseline's points are joined in order along x
    (in cost order, a cheaper but slower point zigzagged back along latency). in_sample: the run
    replayed a policy on its own calibration requests (the quality axis says so, as the report does)."""
    def xs(points):
        return [p["cost_rel"] if x == "cost_rel" else p["latency_ms"][stat] for p in points]

    def along_x(points):
        return sorted(points, key=lambda p: xs([p])[0])

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    pts = along_x([p for p in policy_points if p["quality"] is not None])
    best, top = [], -np.inf  # in x order, each point better than every one before it
    for p in pts:
        if p["quality"] > top:
            best.append(p)
            top = p["quality"]
    # a dot for every policy: a frontier of one point drew an invisible zero-length step. Drawn
    # over the baselines: where the policy is a single tier (or the oracle) their markers hid it.
    ax.plot(xs(pts), [p["quality"] for p in pts], marker="o", markersize=5, linestyle="none", color="black",
            label="policy (each distinct λ)", zorder=4)
    ax.step(xs(best), [p["quality"] for p in best], where="post", color="black", linewidth=2, zorder=4,
            label="policy frontier (best at no more " + ("cost)" if x == "cost_rel" else "latency)"))
    markers = "osD^v<>ph*X+"
    for k, (name, points) in enumerate(baselines.items()):
        points = along_x(points)
        ax.plot(xs(points), [p["quality"] for p in points], marker=markers[k % len(markers)],
                linestyle="-" if len(points) > 1 else "none", label=name, alpha=0.8)
    ax.set_xlabel("GPU cost relative to always-last" if x == "cost_rel" else f"{stat} latency (ms)")
    ax.set_ylabel("quality (in sample)" if in_sample else "quality (held out)")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def _save(fig, path) -> Path:
    path = Path(path)
    fig.tight_layout()
    try:
        with atomic_file(path) as tmp:  # a failed write leaves the plot that was there
            fig.savefig(tmp, dpi=110, format="png")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write plot ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
    return path
