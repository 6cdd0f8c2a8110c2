"""`asd check`: a policy's promises tested on stored traces, on a CPU — the check a CI system runs
on every change to a policy, its features or asd itself.

Each bundle is replayed under the GIVEN policy (`Evaluation(policy=...)`: the policy at the λ it
was saved with, its own feature spec, refused with one line when the bundle cannot serve it), and
every stated promise becomes one row: bundle, promise, measured, limit, pass/fail.

Promises:
  min_quality Q            quality (mean score over labelled requests) >= Q
  max_loss_vs_last PCT     quality loss against always-last on the same requests, in % of its
                           quality, <= PCT
  max_cost_rel C           GPU cost relative to always-last <= C
  max_latency {STAT: MS}   the latency statistic (mean, p50, p95, p99) <= MS
  beat B[:m]               the policy is not beaten by baseline B beyond margin m (absolute,
                           on both axes): quality >= quality(B) − m AND cost_rel <= cost_rel(B) + m.
                           The tuned baselines (threshold, router) are picked, per fold, on the
                           calibration rows at the policy's own cost on those rows (its cost
                           budget), then replayed on the same requests as the policy; `random`
                           mixes single tiers at the policy's mean cost; the others are fixed.
  against OLD (tolerance T) regression: the frontiers of both policies (every distinct policy
                           of each over λ, on the same requests) are compared at every cost level
                           of the old frontier; it fails when, at some level c, the new frontier's
                           best quality at cost <= c is below the old one's by more than T (or
                           the new frontier has no policy that cheap). Measured: the largest
                           shortfall, and the cost level where it is.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path

import numpy as np

from asd.calibration.views import TraceView
from asd.engine import Policy
from asd.errors import ConfigError
from asd.simulator import baselines as B
from asd.simulator.evaluate import Evaluation, load_policy
from asd.simulator.job import TRACE_DES_NOTE, arrivals_check, check_load_options, des_latency, describe_load
from asd.simulator.outcomes import STATISTICS, Outcomes, summarize, walk_outcomes
from asd.traces.bundle import Bundle

EPS = 1e-12


@dataclass(frozen=True)
class Row:
    """One promise on one bundle."""

    bundle: str
    promise: str
    measured: float | None
    limit: float
    passed: bool
    message: str
    shown: str = ""  # the measured figure as the table prints it (with context for beat/against)
    limit_shown: str = ""  # the limit as printed, to the measured figure's precision (default: 3 decimals)

    @property
    def limit_text(self) -> str:
        return self.limit_shown or _limit(self.limit)

    def to_dict(self) -> dict:
        return {"bundle": self.bundle, "promise": self.promise, "measured": self.measured, "limit": self.limit,
                "passed": self.passed, "message": self.message, "shown": self.shown}


@dataclass
class CheckResult:
    """Every row, whether all hold, and what each bundle's replay was (design, warnings, figures)."""

    policy: str
    rows: list[Row]
    bundles: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if not r.passed]

    def to_dict(self) -> dict:
        return {"policy": self.policy, "passed": self.passed, "n_promises": len(self.rows),
                "n_failed": len(self.failures), "bundles": self.bundles, "rows": [r.to_dict() for r in self.rows]}

    def table(self) -> str:
        """The plain-text table (what `assert_policy` fails with, and the CLI prints)."""
        head = ("bundle", "promise", "measured", "limit", "result")
        body = [(r.bundle, r.promise, r.shown, r.limit_text, "pass" if r.passed else "FAIL") for r in self.rows]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
        line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        out = [line(head), line(["-" * w for w in widths])] + [line(b) for b in body]
        failed = self.failures
        out.append(f"{len(self.rows) - len(failed)} of {len(self.rows)} promises hold"
                   + ("" if not failed else "; failed: " + "; ".join(f"{r.bundle}: {r.message}" for r in failed)))
        return "\n".join(out)


def _num(value) -> str:
    """A quality, cost or margin: always 3 decimals, so 1.0 and 1.07 read 1.000 and 1.070 side by side."""
    if value is None:
        return "—"
    return f"{value:.3f}" if isinstance(value, Real) and not isinstance(value, bool) else str(value)


def _limit(value, digits: int = 3) -> str:
    """A limit the user gave: to its measured figure's precision (1 → 1.000 beside 1.132), or as
    given where that would round it (a margin of 0.0004 is not 0.000)."""
    if value is None:
        return "—"
    if abs(value) >= 1e9:  # 1e300 printed as 301 digits squeezed every other column out of the table
        return f"{value:g}"
    shown = f"{value:.{digits}f}"
    return shown if float(shown) == value else f"{value:g}"


# -- parsing promises ----------------------------------------------------------------------------


def parse_latency(items) -> dict[str, float]:
    """`["p95=480", "mean=200"]`, "p95=480" or {"p95": 480} → {stat: ms}."""
    if items is None:
        return {}
    if isinstance(items, dict):
        pairs = list(items.items())
    elif isinstance(items, (str, list, tuple)):
        items = [items] if isinstance(items, str) else list(items)
        pairs = []
        for item in items:
            stat, sep, ms = str(item).partition("=")
            if not sep:
                raise ConfigError(f"--max-latency {item!r}: use STAT=MS, e.g. p95=800")
            pairs.append((stat.strip(), ms.strip()))
    else:  # a bare number has no statistic to hold it to
        raise ConfigError(f"max_latency {items!r}: give STAT=MS or {{STAT: MS}}, e.g. \"p95=800\" or {{\"p95\": 800}}")
    out = {}
    for stat, ms in pairs:
        if stat not in STATISTICS:
            raise ConfigError(f"--max-latency {stat}={ms}: statistic must be one of {', '.join(STATISTICS)}")
        try:
            if isinstance(ms, bool):  # float(True) is 1: not a 1 ms limit
                raise TypeError
            value = float(ms)
        except (TypeError, ValueError):
            raise ConfigError(f"--max-latency {stat}={ms}: MS must be a number of milliseconds") from None
        if not value > 0 or not math.isfinite(value):
            raise ConfigError(f"--max-latency {stat}={ms}: MS must be a positive, finite number of milliseconds")
        if stat in out:  # the later limit silently replaced the earlier one
            raise ConfigError(f"--max-latency {stat} is given twice ({out[stat]:g} and {value:g} ms): give each "
                              "statistic one limit")
        out[stat] = value
    return out


def parse_beat(items, tier_names) -> list[tuple[str, float]]:
    """`["threshold:0.01", "always-x"]` or "threshold" → [(baseline, margin)]; baseline names
    as in every report (`always-<tier>`, fixed-2stage, pipeline, threshold, router, random,
    protocol, oracle)."""
    if items is None:
        return []
    given = [items] if isinstance(items, str) else items
    if not isinstance(given, (list, tuple)) or not all(isinstance(i, str) for i in given):
        raise ConfigError(f"beat {items!r}: give BASELINE[:MARGIN] or a list of them, e.g. \"threshold:0.01\"")
    items = list(given)
    names = B.baseline_names(tier_names)
    out = []
    for item in items:
        # a tier name may hold ':' (llama3:8b): the item whole is a name before it is NAME:MARGIN
        name, sep, margin = item.rpartition(":") if ":" in item and item not in names else (item, "", "0")
        if name not in names:
            raise ConfigError(f"--beat {item!r}: unknown baseline {name!r}; baselines are {', '.join(names)}")
        if any(name == seen for seen, _ in out):  # two rows of one name: JUnit tools merge them, hiding one
            raise ConfigError(f"--beat {item!r}: {name} is given twice; give each baseline once")
        try:
            m = float(margin)
        except ValueError:
            raise ConfigError(f"--beat {item!r}: MARGIN must be a number (absolute quality/cost points)") from None
        if not (m >= 0) or not math.isfinite(m):
            raise ConfigError(f"--beat {item!r}: MARGIN must be a finite number >= 0")
        out.append((name, m))
    return out


def _check_limit(name, value, lo=0.0):
    if value is None:
        return
    number = isinstance(value, Real) and not isinstance(value, bool)  # from Python: "0.5" or True
    if not number or not math.isfinite(value) or value < lo:
        raise ConfigError(f"--{name} {value if number else repr(value)}: must be a finite number >= {lo:g}")


# -- the check ----------------------------------------------------------------------------------


def _refuse_repeated_bundles(bundles: list) -> None:
    """A bundle named twice (`builtin` and its directory too) would be two identical JUnit test
    cases, the clash --beat refuses for a repeated baseline."""
    from asd.traces.bundle import resolve_bundle_path

    seen: dict[str, object] = {}
    for bundle in bundles:
        if not isinstance(bundle, (str, os.PathLike)):
            continue
        try:
            key = os.path.realpath(resolve_bundle_path(bundle))
        except Exception:  # unreadable: refused where it is opened, with its own message
            continue
        if key in seen:
            also = "" if str(seen[key]) == str(bundle) else f" (also as {seen[key]})"
            raise ConfigError(f"asd check: bundle {bundle} is given twice{also}; give each bundle once")
        seen[key] = bundle


def check_policy(policy, bundles, *, min_quality: float | None = None, max_loss_vs_last: float | None = None,
                 max_cost_rel: float | None = None, max_latency=None, beat=None, against=None,
                 tolerance: float = 0.0, split: str | None = None, folds: int | None = None,
                 mode: str = "replay", rate: float | None = None, seed: int = 0, arrivals: str = "poisson",
                 cv: float = 1.0, scheduler: str = "fifo", replicas=1, max_batch: int = 256,
                 kv_tokens=None) -> CheckResult:
    """Replay every bundle under `policy` (a Policy or a policy file) and test each promise.

    bundles: one bundle (a path, "builtin", a TraceView) or a list. Promises left None are not
    tested; at least one is required. Bad input (no promise, unknown statistic or baseline, an
    incompatible policy, an unreadable bundle) raises an AsdError before any figure. mode "des":
    latencies under load (rate, arrivals, cv, scheduler, replicas, max_batch, kv_tokens as in `asd simulate`)."""
    bundles = [bundles] if isinstance(bundles, (str, Path)) or not isinstance(bundles, (list, tuple)) else list(bundles)
    if not bundles:
        raise ConfigError("asd check: give at least one bundle")
    _refuse_repeated_bundles(bundles)
    latency = parse_latency(max_latency)
    for name, value in (("min-quality", min_quality), ("max-loss-vs-last", max_loss_vs_last),
                        ("max-cost-rel", max_cost_rel), ("tolerance", tolerance)):
        _check_limit(name, value)
    if tolerance is None:  # the frontier comparison adds it: None was a TypeError there
        raise ConfigError("asd check: tolerance=None: give a number >= 0 (0: no shortfall allowed)")
    if min_quality is not None and min_quality > 1:
        raise ConfigError(f"--min-quality {min_quality}: quality is a share in [0, 1]")
    check_load_options(mode, rate, scheduler, arrivals, cv)
    # des_latency's arguments; the report names the load as `asd simulate` does (describe_load)
    load = ({"rate": rate, "arrivals": arrivals, "cv": cv, "scheduler": scheduler, "replicas": replicas,
             "max_batch": max_batch, "kv_tokens": kv_tokens} if mode == "des" else None)
    beats_given = beat not in (None, [], ())
    if not any(v is not None for v in (min_quality, max_loss_vs_last, max_cost_rel, against)) and not latency \
            and not beats_given:
        raise ConfigError("asd check: state at least one promise (--min-quality, --max-loss-vs-last, --max-cost-rel, "
                          "--max-latency, --beat, --against)")
    given = [("policy", policy, (Policy,))] + ([("against", against, (Policy,))] if against is not None else [])
    given += [("bundle", b, (Bundle, TraceView)) for b in bundles]
    for name, value, loaded in given:  # else pathlib's TypeError from deep inside
        if not isinstance(value, (str, os.PathLike, *loaded)):
            kinds = " or ".join(k.__name__ for k in loaded)
            raise ConfigError(f"asd check: {name}={value!r}: give a path or a {kinds}")
    label = str(policy) if isinstance(policy, (str, Path)) else "policy"
    new = load_policy(policy)
    old = None if against is None else load_policy(against)
    rows, reports = [], []
    for bundle in bundles:
        ev = Evaluation(bundle, policy=new, policy_name=label, split=split, folds=folds, seed=seed,
                        check_held=arrivals_check(mode, rate, arrivals, cv, seed))
        # an in-memory view has no path: named by its place in the list (JUnit needs a classname)
        name = str(bundle) if isinstance(bundle, (str, Path)) else ev.view.path or f"bundle {len(reports) + 1}"
        beats = parse_beat(beat, ev.view.tier_names)
        old_ev = None
        if old is not None:
            old_ev = Evaluation(ev.view, policy=old, policy_name=f"{against} (--against)", split=split, folds=folds,
                                seed=seed)
        bundle_rows, report = _check_bundle(name, ev, old_ev, min_quality=min_quality,
                                            max_loss_vs_last=max_loss_vs_last, max_cost_rel=max_cost_rel,
                                            latency=latency, beats=beats, tolerance=tolerance, load=load,
                                            seed=seed)
        rows += bundle_rows
        reports.append(report)
    return CheckResult(label, rows, reports)


NO_QUALITY = "no replayed request is labelled where it stops"
# why a cost relative to always-last is None: a trace may record 0 ms at the last tier
FREE_LAST = "always-last costs 0 on the replayed requests, so no cost relative to it exists"


def _check_bundle(name, ev: Evaluation, old_ev: Evaluation | None, *, min_quality, max_loss_vs_last,
                  max_cost_rel, latency, beats, tolerance, load, seed) -> tuple[list[Row], dict]:
    n_tiers = ev.view.n_tiers
    timed = _timer(ev, load, seed)
    out = timed(ev.policy_outcomes())
    s = summarize(out, ev.cost_last, n_tiers)
    rows = []
    if min_quality is not None:
        q = s["quality"]
        ok = q is not None and q >= min_quality - EPS
        rows.append(Row(name, "min quality", q, min_quality, ok,
                        f"quality {_num(q)} {'>=' if ok else '<'} {_limit(min_quality)}" if q is not None else
                        f"no quality to check ({NO_QUALITY})", _num(q)))
    if max_loss_vs_last is not None:
        last = summarize(B.always(ev.arrays, n_tiers - 1), ev.cost_last, n_tiers)["quality"]
        loss = None if s["quality"] is None or not last else 100.0 * (last - s["quality"]) / last
        ok = loss is not None and loss <= max_loss_vs_last + EPS
        rows.append(Row(name, "max loss vs last (%)", loss, max_loss_vs_last, ok,
                        f"quality loss vs always-last {_num(loss)}% {'<=' if ok else '>'} {_limit(max_loss_vs_last)}%"
                        if loss is not None else f"no quality loss to check ({NO_QUALITY}, or always-last's is 0)",
                        f"{_num(loss)} (last {_num(last)})"))
    if max_cost_rel is not None:
        c = s["cost_rel"]
        ok = c is not None and c <= max_cost_rel + EPS
        rows.append(Row(name, "max cost rel", c, max_cost_rel, ok,
                        f"cost relative to always-last {_num(c)} {'<=' if ok else '>'} {_limit(max_cost_rel)}"
                        if c is not None else f"cost relative to always-last cannot be measured ({FREE_LAST})",
                        _num(c)))
    for stat, ms in latency.items():
        v = s["latency_ms"][stat]
        ok = v <= ms + EPS
        rows.append(Row(name, f"max {stat} latency (ms)", v, ms, ok,
                        f"{stat} latency {v:.1f} ms {'<=' if ok else '>'} {_limit(ms, 1)} ms", f"{v:.1f}", _limit(ms, 1)))
    baselines = {}
    for baseline, margin in beats:
        b = baselines[baseline] = summarize(timed(_baseline(ev, baseline)), ev.cost_last, n_tiers)
        q_ok = s["quality"] is not None and b["quality"] is not None and s["quality"] >= b["quality"] - margin - EPS
        # `random` is drawn at the policy's mean cost: its realised cost falls either side of the
        # policy's by the draw (the verdict flipped with --seed), so only quality is compared
        c_ok = baseline == "random" or (s["cost_rel"] is not None and b["cost_rel"] is not None
                                        and s["cost_rel"] <= b["cost_rel"] + margin + EPS)
        dq = None if s["quality"] is None or b["quality"] is None else s["quality"] - b["quality"]
        why = []
        if not q_ok:  # a promise that cannot be measured fails, and says why
            why.append(f"quality {_num(s['quality'])} < {baseline}'s {_num(b['quality'])} − {_limit(margin)}"
                       if dq is not None else
                       f"{'the policy' if s['quality'] is None else baseline} has no quality here ({NO_QUALITY}), "
                       "so the qualities cannot be compared")
        if not c_ok:
            why.append(f"cost {_num(s['cost_rel'])} > {baseline}'s {_num(b['cost_rel'])} + {_limit(margin)}"
                       if s["cost_rel"] is not None and b["cost_rel"] is not None else
                       f"the costs cannot be compared ({FREE_LAST})")
        msg = ("; ".join(why) if why else
               f"quality {_num(s['quality'])} vs {_num(b['quality'])}, cost {_num(s['cost_rel'])} vs {_num(b['cost_rel'])}")
        rows.append(Row(name, f"beat {baseline}", dq, margin, q_ok and c_ok, f"beat {baseline}: {msg}",
                        f"q {_num(s['quality'])} vs {_num(b['quality'])}, cost {_num(s['cost_rel'])} vs "
                        f"{_num(b['cost_rel'])}"))
    regression = None
    if old_ev is not None:
        regression = compare_frontiers(ev, old_ev, tolerance)
        worst = regression["worst"]
        ok = regression["passed"]
        where = regression["where"]
        rows.append(Row(name, "no regression vs old", worst, tolerance, ok,
                        f"regression vs old policy: {where}" if not ok else
                        f"new frontier within {_limit(tolerance)} of the old at every cost level (largest shortfall "
                        f"{_num(worst)})", _shortfall(regression)))
    report = {"bundle": name, "n_requests": int(ev.held.size), "evaluation": ev.design["description"],
              "lambda": ev.policy_lam, "mode": "replay" if load is None else "des",
              "load": load and {**describe_load(load["rate"], load["arrivals"], load["cv"], load["scheduler"]),
                                "replicas": load["replicas"], "max_batch": load["max_batch"],
                                "kv_tokens": load["kv_tokens"]},
              "cost_model": ev.cost_model.kind,
              "warnings": list(ev.warnings) + ([TRACE_DES_NOTE] if load and ev.cost_model.kind == "trace" else []),
              "figures": s, "baselines": baselines, "regression": regression}
    return rows, report


def _shortfall(regression: dict) -> str:
    at = regression["at_cost"]
    if at is None:
        return "no cost level"
    if regression["worst"] is None:
        return f"no new policy at cost ≤ {at:.3f}"
    return f"shortfall {regression['worst']:.3f} at cost ≤ {at:.3f}"


def _timer(ev: Evaluation, load: dict | None, seed):
    if load is None:  # replay
        return lambda out: out
    return des_latency(ev, seed=seed, **load)


def _baseline(ev: Evaluation, name: str) -> Outcomes:
    """A baseline on the policy's requests; the tuned ones at the policy's own cost budget on
    each fold's calibration rows, `random` at its mean cost."""
    if name in B.TUNED:
        parts = []
        for f in ev.folds:
            ev.fixed.solve(ev.policy_lam, start_lam=ev.policy_start_lam)
            prompt, tier, cold = f.cal_bins
            w = f.policy.walk(prompt, tier, cold_bins=cold,
                              route_scores=None if f.stage0_route is None else f.stage0_route[1])
            cal_out = walk_outcomes(w.start, w.stop, f.cal_arrays)
            cost_last = float(f.cal_arrays.cost[:, -1].sum())
            budget = float(cal_out.cost.sum() / cost_last) if cost_last > 0 else 1.0
            parts.append(ev.tuned_baseline(name, cost_rel=budget, folds=[f]))
        return Outcomes.concat(parts)
    if name == "random":
        return ev.random_baseline(float(ev.policy_outcomes().cost.mean()))
    return ev.fixed_baselines(ev.policy_lam)[name]


# -- regression: frontiers over λ -----------------------------------------------------------------


def compare_frontiers(new: Evaluation, old: Evaluation, tolerance: float) -> dict:
    """Both policies' frontiers (sweep's machinery: every distinct policy over λ) on the same
    requests, compared at each cost level of the old frontier."""
    from asd.simulator.sweep import policy_frontier

    if not np.array_equal(new.held, old.held):
        raise ConfigError("--against: the two policies were not replayed on the same requests")
    if new.cost_last <= 0 or old.cost_last <= 0:  # every point's cost is None: no cost level to compare at
        return {"passed": False, "worst": None, "at_cost": None, "tolerance": tolerance, "levels": [],
                "where": f"the frontiers cannot be compared ({FREE_LAST})", "new_frontier": [], "old_frontier": []}
    new_points, old_points = policy_frontier(new), policy_frontier(old)
    worst, at_cost, where = -np.inf, None, "no cost level compared"
    levels = []
    for p in sorted(old_points, key=lambda p: p["cost_rel"]):
        if p["quality"] is None:
            continue
        c = p["cost_rel"]
        old_best = max(q["quality"] for q in old_points if q["cost_rel"] <= c + EPS and q["quality"] is not None)
        cands = [q["quality"] for q in new_points if q["cost_rel"] <= c + EPS and q["quality"] is not None]
        new_best = max(cands) if cands else None
        shortfall = np.inf if new_best is None else old_best - new_best
        levels.append({"cost_rel": c, "old_quality": old_best, "new_quality": new_best,
                       "shortfall": None if new_best is None else shortfall})
        if shortfall > worst:
            worst, at_cost = shortfall, c
            # the worst level, stated as a shortfall only where it is one
            where = (f"at cost ≤ {c:.3f} the new frontier has no policy that cheap (old quality {old_best:.3f})"
                     if new_best is None else
                     f"at cost ≤ {c:.3f}: new quality {new_best:.3f} < old {old_best:.3f} − {_limit(tolerance)}"
                     if shortfall > tolerance + EPS else
                     f"at cost ≤ {c:.3f}: new quality {new_best:.3f}, old {old_best:.3f} (within {_limit(tolerance)})")
    for a, b in ((new, new), (old, old)):  # leave each policy solved at the λ it was saved with
        a.fixed.solve(b.policy_lam, start_lam=b.policy_start_lam)
    passed = bool(levels) and worst <= tolerance + EPS
    return {"passed": passed, "worst": None if not np.isfinite(worst) else float(worst), "at_cost": at_cost,
            "where": where, "tolerance": tolerance, "levels": levels,
            "new_frontier": [{"lambda": p["lambda"], "quality": p["quality"], "cost_rel": p["cost_rel"]} for p in new_points],
            "old_frontier": [{"lambda": p["lambda"], "quality": p["quality"], "cost_rel": p["cost_rel"]} for p in old_points]}


# -- JUnit XML ------------------------------------------------------------------------------------


def junit_xml(result: CheckResult) -> str:
    """JUnit XML: one <testcase> per bundle × promise (classname = the bundle, name = the
    promise), a <failure> with the row's message where it does not hold."""
    import xml.etree.ElementTree as ET

    suites = ET.Element("testsuites", name="asd check", tests=str(len(result.rows)),
                        failures=str(len(result.failures)))
    suite = ET.SubElement(suites, "testsuite", name=f"asd check {result.policy}", tests=str(len(result.rows)),
                          failures=str(len(result.failures)), errors="0", skipped="0")
    for row in result.rows:
        case = ET.SubElement(suite, "testcase", classname=row.bundle, name=row.promise)
        if row.passed:
            ET.SubElement(case, "system-out").text = row.message
        else:
            failure = ET.SubElement(case, "failure", message=row.message, type="PromiseFailed")
            failure.text = f"measured {row.shown}, limit {row.limit_text}"
    warnings = [f"{report['bundle']}: {warning}" for report in result.bundles for warning in report["warnings"]]
    if warnings:  # one <system-err> per suite, as JUnit's schema allows (parsers kept only one of several)
        ET.SubElement(suite, "system-err").text = "\n".join(warnings)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
