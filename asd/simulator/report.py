"""Terminal rendering (rich tables) of the dicts `asd calibrate`, `asd simulate` and `asd sweep`
return; their --json files are the same dicts."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from asd.markup import escaped


def wide_console() -> Console:
    """Tables of many columns: at least 120 columns (pipes and CI logs default to 80, which
    would truncate the figures); a wider terminal is used as it is."""
    return Console(width=max(Console().width, 120))


def _f(value, digits=3, pct=False) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if pct:
        return f"{100 * value:+.1f}%"
    if isinstance(value, float):
        if digits == 0 and abs(value) >= 1e7:  # a runaway latency (1e13 ms) in a column's width, not 14 digits
            return f"{value:.3g}"
        return f"{value:.{digits}f}"
    return str(value)


def _stops(fractions) -> str:
    return " ".join(f"{f:.2f}" for f in fractions)


def _bins(report: dict) -> str:
    pool = report.get("pool_bins") or 0
    return f"{report['bins']} bins" + (f" (each pooling ±{pool} neighbours)" if pool else "")


def _loss_levels(at: dict) -> str:
    """"1 / 2 / 3%" from the quality check's policy_cost_at_loss keys ("0.01", ...)."""
    return " / ".join(f"{100 * float(loss):g}" for loss in at) + "%"


def print_calibration(report: dict, console: Console | None = None) -> None:
    report = escaped(report)  # names and paths from the data are text, not markup
    console = console or wide_console()
    if report["predictor"] == "gbt-reference":
        print_reference(report, console)
        return
    console.print(f"[bold]{report['bundle']}[/bold]: calibrated on {report['data']}")
    console.print(f"predictor {report['predictor']}, {len(report['features'])} features "
                  f"({', '.join(report['feature_groups'])}), {_bins(report)}, risk {report['risk']}, "
                  f"stage 0 {'on' if report['stage0'] else 'off'}, cost model {report['cost_model']}")
    for group, reason in report["missing_groups"].items():
        console.print(f"[dim]no {group} features: {reason}[/dim]")
    table = Table(title="out-of-fold metrics per tier", box=box.SIMPLE_HEAD)
    table.add_column("tier", no_wrap=True)
    for col in ("n", "AUROC", "Brier", "ECE", "best single feature", "its AUROC"):
        table.add_column(col, justify="left" if col.startswith("best") else "right", no_wrap=True)
    for t in report["tiers"]:
        table.add_row(t["name"], _f(t["n"]), _f(t["auroc"]), _f(t["brier"]), _f(t["ece"]),
                      _f(t["best_feature"]), _f(t["best_feature_auroc"]))
    console.print(table)
    if report.get("stage0_metrics"):
        m = report["stage0_metrics"]
        console.print(f"stage 0 (prompt only, P(tier 0 acceptable)): AUROC {_f(m.get('auroc'))}, "
                      f"Brier {_f(m.get('brier'))}, ECE {_f(m.get('ece'))}")
    text = report.get("prompt_text")
    if text:
        console.print(f"stage 0 reads the prompt's words too: {text['terms']:,} words and word pairs of the calibration "
                      f"prompts (kept in the policy file), out-of-fold AUROC per tier "
                      f"{' / '.join(_f(a) for a in text['auroc'])}")
    for m in report.get("route_metrics") or []:
        console.print(f"stage 0 routing row (prompt only, P({m['name']} acceptable)): AUROC {_f(m.get('auroc'))}, "
                      f"Brier {_f(m.get('brier'))}, ECE {_f(m.get('ece'))}")
    console.print(f"[dim]{report['metrics_note']}; {report['cost_note']}[/dim]")
    if report.get("policy_path"):
        unit = {"gpu_ms": "GPU-ms", "params_tokens": "B-parameter tokens"}.get(report.get("cost_unit"), "cost units")
        console.print(f"policy written to {report['policy_path']}, solved at λ = {report['policy_lambda']:.4g} ({unit} "
                      "charged per unacceptable answer), where check, live and serve run it; `asd simulate BUNDLE "
                      "--tau-max MS --save-policy FILE` picks λ for a latency limit", highlight=False)


def print_reference(report: dict, console: Console) -> None:
    """`asd calibrate --predictor gbt-reference`: boosted trees beside logistic, per stage."""
    report = escaped(report)  # names and paths from the data are text, not markup
    console.print(f"[bold]{report['bundle']}[/bold]: calibrated on {report['data']}")
    console.print(f"gradient-boosted trees (offline reference) vs logistic, {len(report['features'])} features "
                  f"({', '.join(report['feature_groups'])})")
    for group, reason in report["missing_groups"].items():
        console.print(f"[dim]no {group} features: {reason}[/dim]")
    table = Table(title="out-of-fold metrics: boosted trees | logistic", box=box.SIMPLE_HEAD)
    for col in ("stage", "n", "AUROC", "Brier", "ECE", "logistic AUROC", "Brier", "ECE"):
        table.add_column(col, justify="left" if col == "stage" else "right", no_wrap=True)
    for t in report["tiers"] + ([report["stage0_metrics"]] if report["stage0_metrics"] else []):
        table.add_row(t["name"], _f(t["n"]), _f(t["auroc"]), _f(t["brier"]), _f(t["ece"]),
                      _f(t["logistic_auroc"]), _f(t["logistic_brier"]), _f(t["logistic_ece"]))
    console.print(table)
    console.print(f"[dim]{report['metrics_note']}; {report['note']}[/dim]")


# a name longer than this folds where the table would not fit: enough to read every word
METHOD_MIN_WIDTH = 24
METHOD_WIDTH = 40  # `always-` + a 33-character tier name fits one line


def _method_table(title, rows, stat, tau=None) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD)
    # a long tier name (a Hugging Face id) folds onto a second line rather than cut the figures
    # min_width: a narrow terminal or a wide stops column must not squeeze the names themselves
    # (`fixed-2stag` / `e` on an 8-tier ladder, one letter a line beside 1e13 ms latencies); past
    # METHOD_MIN_WIDTH a long name folds instead, or the verdict column is cropped off the right
    table.add_column("method", overflow="fold", max_width=METHOD_WIDTH,
                     min_width=min(max((len(str(name)) for name, _ in rows), default=6), METHOD_MIN_WIDTH))
    for col in ("quality", "cost", "mean ms", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("stops per tier", justify="right", overflow="fold")  # many tiers' shares fold, not the names
    if tau is not None:
        # the verdict is what a reader came for: never squeezed to its header's first letter
        table.add_column(f"{stat}≤τ", justify="right", no_wrap=True, min_width=len(f"{stat}≤τ"))
    for name, s in rows:
        lat = s["latency_ms"]
        cells = [name, _f(s["quality"]), _f(s["cost_rel"]), _f(lat["mean"], 0), _f(lat["p50"], 0),
                 _f(lat["p95"], 0), _f(lat["p99"], 0), _stops(s["stop_fractions"])]
        if tau is not None:
            cells.append(_f(s.get("meets_tau", lat[stat] <= tau)))
        table.add_row(*cells)
    return table


def _criterion(criterion: dict) -> str:
    """A criterion's change in %, to one decimal, or more where one decimal would print its bound
    itself: −39.98% read "−40.0% (goal −40%: not met)"."""
    value, goal = criterion["value"], criterion["bound"]
    if value is None:
        return _f(value)
    for digits in range(1, 5):
        shown = f"{100 * value:+.{digits}f}"
        if round(float(shown), 6) != round(100 * goal, 6):
            break
    return shown + "%"


def _replayed(result: dict) -> str:
    """What the replayed requests are: held out, or (a given policy on requests it was fitted on,
    which the warnings say) not; with no policy fitted (an unlabelled bundle), neither."""
    if result.get("chosen", True) is None:
        return "replayed"
    return "in-sample" if result.get("in_sample") else "held-out"


def print_simulation(result: dict, console: Console | None = None) -> None:
    result = escaped(result)  # names and paths from the data are text, not markup
    console = console or wide_console()
    stat, tau = result["stat"], result["tau_max_ms"]
    console.print(f"[bold]{result['bundle']}[/bold]: {result['n_requests']} {_replayed(result)} requests, tiers "
                  f"{' → '.join(result['tiers'])}; {result['evaluation']}")
    console.print(f"cost model {result['cost_model']} ({result['cost_note']}); mode {result['mode']}"
                  f"{_load_text(result.get('load'))}")
    if (result.get("load") or {}).get("latency_note"):
        console.print(f"[dim]note: {result['load']['latency_note']}[/dim]")
    c = result["chosen"]
    if c is None:  # an unlabelled bundle: the methods that need no labels, for cost and latency
        console.print(result["not_fitted"])
        console.print(_method_table(f"{_replayed(result)} cost and latency at τ_max = {tau:g} ms ({stat})",
                                    list(result["baselines"].items()), stat, tau))
        console.print(f"[dim]cost: {cost_words(result['cost_model'])} relative to always-last; stops: share of "
                      "requests stopping at each tier; quality —: no labels[/dim]")
        return
    status = result["search"]["status"]
    replayed = _replayed(result)  # a given policy on its own calibration requests: in-sample
    search = result["search"]
    among = (f"the {search['distinct_policies']} distinct policies" if search.get("exhaustive", True)
             else f"{search['evaluations']} policies spread over {search['lambda_intervals']} λ intervals"
             if search.get("lambda_intervals") is not None else f"{search['evaluations']} policies on a λ grid")
    head = {"ok": f"λ = {c['lambda']:.4g}: the best {replayed} quality of {among}, among those whose {stat} latency "
                  f"stays ≤ {tau:g} ms",
            "slack": f"λ = {c['lambda']:.4g}: τ_max does not bind (every policy tried fits); the best {replayed} "
                     f"quality of {among}",
            "infeasible": f"infeasible: none of {among} meets {stat} ≤ {tau:g} ms; showing λ = 0 (the "
                          "cheapest policy, not always the fastest: a baseline below may meet τ_max)"}[status]
    console.print(head)
    rows = [("policy", c)] + list(result["baselines"].items())
    console.print(_method_table(f"{replayed} results at τ_max = {tau:g} ms ({stat})", rows, stat, tau))
    console.print(f"[dim]cost: {cost_words(result['cost_model'])} relative to always-last; stops: share of "
                  "requests stopping at each tier; oracle: cheapest acceptable tier per request (else the cheapest), "
                  "an upper bound on the share of acceptable answers, not on mean graded quality[/dim]")
    cr = result["criteria"]
    console.print(
        f"protocol criteria vs {cr['against']}: latency {_criterion(cr['latency_change'])} "
        f"(goal {cr['latency_change']['goal']}: {'met' if cr['latency_change']['met'] else 'not met'}), "
        f"quality loss {_criterion(cr['quality_loss'])} (goal {cr['quality_loss']['goal']}: "
        f"{'met' if cr['quality_loss']['met'] else 'not met'}), {_cost_short(result['cost_model'])} "
        f"{_criterion(cr['gpu_change'])} "
        f"(goal {cr['gpu_change']['goal']}: {'met' if cr['gpu_change']['met'] else 'not met'})")
    d = result["deployment"]
    # folds are judged on replayed latencies: under --mode des the table's are the load's, so say so
    replayed = " (on replayed latencies, without this load's queueing)" if result["mode"] == "des" else ""
    console.print(f"deployment{replayed}: λ chosen on each fold's calibration rows met τ_max on {d['met']} of "
                  f"{d['of']} held-out folds ({d['note']})")
    saved = result.get("deployed_policy")
    if saved:
        stat, value, margin = saved["stat"], saved["calibration_statistic_ms"], saved["margin_ms"]
        why = {"ok": f"{stat} {value:.0f} ms on them, within τ_max less a {margin:.0f} ms margin",
               "slack": (f"τ_max is slack on them: every distinct policy fits, the best quality there at {stat} "
                         f"{value:.0f} ms, within τ_max less a {margin:.0f} ms margin"
                         if saved.get("rule", "").startswith("best") else
                         f"τ_max is slack on them: {stat} {value:.0f} ms at the largest λ, within τ_max less a "
                         f"{margin:.0f} ms margin"),
               "infeasible": f"{stat} on them is {value:.0f} ms even at λ = 0, over τ_max less a {margin:.0f} ms "
                             "margin: the cheapest policy"}[saved["status"]]
        if saved.get("chosen_by") == "held-out quality":  # slack: the report's choice, not the bracket's top
            how = (f"(the held-out choice above), as τ_max is slack on them ({stat} {saved['deepest_statistic_ms']:.0f} "
                   f"ms even at the largest λ, within τ_max less a {margin:.0f} ms margin; {value:.0f} ms at this λ)")
        else:
            how = f"by the same rule ({why})"
        console.print(f"wrote {saved['path']}: fitted on {saved['calibration_requests']} requests, λ = "
                      f"{saved['lambda']:.4g} {how}", highlight=False)


def _load_text(load: dict | None) -> str:
    """' at 6 req/s (Poisson), replicas [1, 1], max batch 4, fifo queues' for a DES load; '' for replay."""
    if not load:
        return ""
    arrivals = {"poisson": "Poisson", "gamma": f"gamma gaps, CV {load['cv']}",
                "trace": "the trace's offsets"}[load["arrivals"]]
    if load.get("rate") is not None:
        rate = f" at {load['rate']:.3g} req/s ({arrivals})"
    elif load.get("rate_note"):  # offsets with no span to measure a rate over
        rate = f" with {arrivals} ({load['rate_note']})"
    else:
        rate = f" at the trace's rate ({arrivals})"
    pools = f", replicas {load['replicas']}, max batch {load['max_batch']}" if "replicas" in load else ""
    if load.get("kv_tokens"):
        pools += f", KV cache {load['kv_tokens']} tokens per replica"
    return f"{rate}{pools}, {load['scheduler']} queues"


def _summarised(points: list[dict], check: dict) -> set[int]:
    """Indices of the frontier points the ≤ 2 % summary line compares: the policy's point there,
    and for each baseline point above the frontier the policy point it is measured against and the
    cheapest one that matches its quality (the "points more cost")."""
    lams = {check["policy"]["lambda"]} if check.get("policy") else set()
    for entry in check.get("baseline_points_above_policy") or []:
        lams.add(entry.get("policy_lambda"))
        matching = [p for p in points if p["quality"] is not None and entry["quality"] is not None
                    and p["quality"] >= entry["quality"] - 1e-9]  # the rule of sweep._extra_cost
        if matching:
            lams.add(min(matching, key=lambda p: p["cost_rel"])["lambda"])
    return {i for i, p in enumerate(points) if p["lambda"] in lams}


def print_sweep(result: dict, console: Console | None = None) -> None:
    result = escaped(result)  # names and paths from the data are text, not markup
    console = console or wide_console()
    mode = "" if not result.get("load") else f"; mode {result['mode']}{_load_text(result['load'])}"
    console.print(f"[bold]{result['bundle']}[/bold]: {result['n_requests']} {_replayed(result)} requests, "
                  f"{result['evaluation']}; cost model {result['cost_model']}{mode}")
    table = Table(title=f"policy frontier ({len(result['policy'])} distinct policies)", box=box.SIMPLE_HEAD)
    for col in ("λ", "quality", "cost", "mean ms", "p95 ms", "stops per tier"):
        table.add_column(col, justify="right", no_wrap=True)
    points = result["policy"]
    shown = points if len(points) <= 16 else [points[int(i)] for i in
                                              sorted(set(round(k * (len(points) - 1) / 15) for k in range(16))
                                                     | _summarised(points, result["quality_check"]))]
    for p in shown:
        table.add_row(f"{p['lambda']:.4g}", _f(p["quality"]), _f(p["cost_rel"]), _f(p["latency_ms"]["mean"], 0),
                      _f(p["latency_ms"]["p95"], 0), _stops(p["stop_fractions"]))
    console.print(table)
    if len(shown) < len(points):
        console.print(f"[dim]{len(shown)} of {len(points)} shown: evenly spaced, and the points the summary below "
                      "compares; --csv and --json list every one[/dim]")
    rows = []
    for name, pts in result["baselines"].items():
        if len(pts) == 1:
            rows.append((name, pts[0]))
        else:
            rows.append((f"{name} ({len(pts)} points, best)", max(pts, key=lambda p: p["quality"] or 0)))
    console.print(_method_table("baselines", rows, "p95"))
    q = result["quality_check"]
    pol = q["policy"]
    console.print(
        f"at ≤ 2% quality loss vs always-last (quality ≥ {q['quality_floor']:.3f}): policy cost "
        f"{_f(pol['cost_rel'] if pol else None)}, best simple ({q['best_simple']['name']}) "
        f"{_f(q['best_simple']['cost_rel'])}, oracle {_f(q['oracle']['cost_rel'])}; saved "
        f"{_f(q['saved_vs_simple_points'], 1)} points, gap closed {_f(q['gap_closed'])}, "
        f"baseline points above the policy: {_above_text(q['baseline_points_above_policy'], result['quality_requests'])}")
    for note in q.get("notes", ()):
        console.print(f"note: {note}")
    at = q["policy_cost_at_loss"]
    console.print(f"policy cost at {_loss_levels(at)} loss: {' / '.join(_f(v) for v in at.values())} "
                  f"(mean {_f(q['policy_cost_at_losses_mean'])})")
    rep = result.get("repeats")
    if rep:
        def spread(d, digits=3):
            return _spread_text(d, len(rep["seeds"]), digits)
        k = len(rep["seeds"])
        console.print(f"over {k} fold seeds ({rep['seeds'][0]}..{rep['seeds'][-1]}): policy cost "
                      f"{spread(rep['policy_cost_rel'])}, saved {spread(rep['saved_vs_simple_points'], 1)} points, "
                      f"gap closed {spread(rep['gap_closed'])}; baseline points above the policy in "
                      f"{rep['with_baseline_points_above']} of {k}; every goal met in {rep['met']} of {k}; "
                      f"policy cost at {_loss_levels(at)} loss, their mean: {spread(rep['policy_cost_at_losses_mean'])}")
    for ab in result.get("ablation", []):
        console.print(f"ablation {ab['name']}: cost at ≤ 2% loss {_f(ab['cost_rel'])} "
                      f"(change {_f(ab['change_points'], 1)} points)")
    if result.get("ablation_groups_absent"):
        console.print(f"not ablated (absent from {result['bundle']}): "
                      + ", ".join(f"{g} ({why})" for g, why in result["ablation_groups_absent"].items()))


def _spread_text(d: dict | None, n_seeds: int, digits: int = 3) -> str:
    """`mean ± sd (min to max)` over fold seeds; a seed whose policy never reaches the 2% floor
    has no value, so where some lack one the text says how many it is of."""
    if d is None:
        return "n/a"
    of = "" if d["n"] == n_seeds else (f" of the {d['n']} seeds that reach it" if d["n"] > 1
                                       else " of the 1 seed that reaches it")
    return f"{_f(d['mean'], digits)} ± {_f(d['sd'], digits)} ({_f(d['min'], digits)} to {_f(d['max'], digits)}{of})"


def _requests_worth(x: float) -> str:
    """Whole requests, but under one a graded quality's fraction (a 0.5 draw is not 0 requests)."""
    return f"{x:.0f}" if x >= 1 else f"{x:.2g}"


def _above_text(points: list[dict], n_requests: int) -> str:
    """How many baseline points lie above the policy's frontier, whose, and how far at most, in
    quality at their cost and in what the policy pays to match them: `4 (threshold 3, router 1;
    up to 0.0062 quality above the policy at their cost, 5 of 805 requests' worth, at most 1.3
    paired standard errors; the policy matches them for up to 1.2 points more cost)`."""
    if not points:
        return "0"
    names = [p["baseline"] for p in points]
    parts = [", ".join(f"{n} {names.count(n)}" for n in dict.fromkeys(names))]
    one = len(points) == 1
    above = [p["quality_above"] for p in points if p["quality_above"] is not None]
    if above:
        z = [p["quality_above_z"] for p in points if p["quality_above_z"] is not None]
        parts.append(f"{'' if len(above) == 1 else 'up to '}{max(above):.4f} quality above the policy at "
                     f"{'its' if one else 'their'} cost, {_requests_worth(max(above) * n_requests)} of {n_requests} requests' worth"
                     + (f", {'' if len(z) == 1 else 'at most '}{max(z):.1f} paired standard errors" if z else ""))
    extra = [p["policy_extra_cost"] for p in points if p["policy_extra_cost"] is not None]
    if extra:
        parts.append(f"the policy matches {'it' if one else 'them'} for {'' if len(extra) == 1 else 'up to '}"
                     f"{100 * max(extra):.1f} points more cost")
    for n, what in ((len(points) - len(above), "cheaper than every policy point"),
                    (len(points) - len(extra), "above the policy's best quality")):
        if n:
            parts.append(f"{n} {what}")
    return f"{len(points)} ({'; '.join(parts)})"


def print_check(result, console: Console | None = None) -> None:
    """`asd check`: each bundle's replay in one line, then one table of every promise."""
    console = console or wide_console()
    console.print(f"[bold]asd check[/bold] {escape(str(result.policy))}")
    for b in escaped(result.bundles):
        console.print(f"{b['bundle']}: {b['evaluation']}; mode {b['mode']}{_load_text(b.get('load'))}, "
                      f"cost model {b['cost_model']}", highlight=False)
    table = Table(box=box.SIMPLE_HEAD)
    for col, justify in (("bundle", "left"), ("promise", "left"), ("measured", "right"), ("limit", "right"),
                         ("result", "left")):
        table.add_column(col, justify=justify, no_wrap=True)
    for r in result.rows:
        table.add_row(*escaped((str(r.bundle), r.promise, r.shown, r.limit_text)),
                      "pass" if r.passed else "[bold red]FAIL[/bold red]")
    console.print(table)
    for r in result.failures:
        console.print(escape(f"FAIL {r.bundle}: {r.message}"), highlight=False)
    n, failed = len(result.rows), len(result.failures)
    console.print(f"{n - failed} of {n} promises hold" + ("" if not failed else f"; {failed} failed"), highlight=False)


def cost_words(cost_model: str | None) -> str:
    """What a cost model's cost is, for report legends: `params` counts parameters × tokens, not GPU time."""
    return "params × tokens cost" if cost_model == "params" else "GPU cost"


def _cost_short(cost_model: str | None) -> str:
    return "cost (params × tokens)" if cost_model == "params" else "GPU"


def print_explain(ex: dict, console: Console | None = None) -> None:
    console = console or wide_console()
    ex = dict(ex, prompt=ex.get("prompt") and repr(ex["prompt"]),  # quoted first, then escaped as text
              tiers=[dict(t, output=repr(t["output"])) for t in ex["tiers"]])
    ex = escaped(ex)
    console.print(f"[bold]request {ex['request_id']}[/bold] at λ = {ex['lambda']:.4g}: starts at "
                  f"{ex['start_tier']}, stops at {ex['stop_tier']}")
    if ex.get("prompt"):
        console.print(f"prompt: {ex['prompt']}")
    stage0 = ex.get("stage0") or {}
    if stage0.get("rule") == "routed" and stage0["threshold"] > 1.0:  # the grid's "no score reaches it"
        console.print("stage 0, routed: every request starts at the last tier (the policy's routing threshold is "
                      "above every prompt-only p̂)")
    elif stage0.get("rule") == "routed":
        scores = ", ".join(f"{name} {p:.3f}" for name, p in zip((t["tier"] for t in ex["tiers"]), stage0["route_scores"]))
        console.print(f"stage 0, routed: starts at the first tier whose prompt-only p̂ reaches "
                      f"{stage0['threshold']:.3f} ({scores})")
    elif stage0:
        console.print(f"stage 0: prompt bin {stage0['prompt_bin']}")
    console.print("values: the expected cost from that tier on: stop = λ × (1 − its bin's acceptance), continue = "
                  f"the next tier's {cost_words(ex.get('cost_model'))} + its expected value; the lower one decides "
                  "(ties stop)", highlight=False)
    for t in ex["tiers"]:
        # a tier the walk never entered shows what the climbed-state tables would have decided there
        state = t["state"] if t["ran"] else f"{t['state']}; values as if climbed there"
        cont = "—" if t["continue_value"] is None else f"{t['continue_value']:.4g}"
        console.print(f"  {t['tier']} ({state}): p̂ {t['p_hat']:.3f}, bin {t['bin']}, stop value "
                      f"{t['stop_value']:.4g}, continue value {cont} → {t['decision']}; acceptable "
                      f"{_f(t['acceptable'])}")
        console.print(f"    output: {t['output']}")
        top = sorted(t["features"].items(), key=lambda kv: -abs(kv[1]))[:8]
        console.print("    features: " + ", ".join(f"{k}={v:.3g}" for k, v in top))
