"""Terminal rendering of `summarize_bundle`'s dict (rich tables); the JSON is the same dict."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from asd.markup import escaped


def _fmt(value, digits=3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _print_whole(console: Console, table: Table) -> None:
    """Print a table at its natural width even past the terminal's (80 columns when piped):
    cells are never wrapped or cut, so a tier name stays one word."""
    natural = Measurement.get(console, console.options.update(max_width=10_000), table).maximum
    width = console.width
    if natural <= width:
        console.print(table)
        return
    console.width = natural  # print(width=...) is capped at the console's width
    try:
        console.print(table, crop=False)
    finally:
        console.width = width


def print_summary(summary: dict, console: Console | None = None) -> None:
    console = console or Console()
    summary = escaped(summary)  # names and paths from the data are text, not markup
    n, k = summary["n_requests"], len(summary["tiers"])
    head = f"[bold]{summary['path']}[/bold]: {n} request{'s' if n != 1 else ''}, {k} tier{'s' if k != 1 else ''}"
    if summary["synthetic"]:
        head += " [yellow](SYNTHETIC)[/yellow]"
    console.print(head, soft_wrap=True)  # a long path stays on its line
    signals = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in summary["signals"].items())
    splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    tasks = f"; tasks: {summary['n_tasks']}" if summary["n_tasks"] else ""  # no task column: say nothing
    console.print(f"signals: {signals}{tasks}; splits: {splits}")

    tiers = Table(title="tiers", box=box.SIMPLE_HEAD)
    tiers.add_column("tier", no_wrap=True)
    for col in ("B", "n", "quality", "accept", "tokens", "ttft", "e2e"):
        tiers.add_column(col, justify="right", no_wrap=True)
    for t in summary["tiers"]:
        tiers.add_row(
            t["name"], "—" if t["params_b"] is None else f"{t['params_b']:g}", _fmt(t["n_outputs"]),
            _fmt(t["mean_quality"]), _fmt(t["acceptable_rate"]), _fmt(t["mean_output_tokens"], 0),
            _fmt(t["mean_ttft_ms"], 0), _fmt(t["mean_e2e_ms"], 0),
        )
    _print_whole(console, tiers)
    console.print("[dim]B: parameters (billions); n: recorded outputs; quality (judged, else the accepted flag), accept(able), output tokens, ttft/e2e (ms): per-tier means (more in --json)[/dim]")

    if summary["agreement"]:
        agree = Table(title="agreement of tier labels", box=box.SIMPLE_HEAD)
        agree.add_column("tiers", no_wrap=True)
        agree.add_column("agreement", justify="right", no_wrap=True)
        agree.add_column("requests", justify="right", no_wrap=True)  # labelled at both tiers
        for pair in summary["agreement"]:
            agree.add_row(f"{pair['a']} / {pair['b']}", _fmt(pair["agreement"]), _fmt(pair.get("n_requests")))
        _print_whole(console, agree)

    if summary["drafts"]:
        drafts = Table(title="drafts (a tier's answer verified by a deeper tier)", box=box.SIMPLE_HEAD)
        for col in ("draft → verify", "rows", "accepted tokens", "accepted share", "verify ms"):
            drafts.add_column(col, justify="left" if col.startswith("draft") else "right", no_wrap=True)
        for pair in summary["drafts"]:
            drafts.add_row(f"{pair['draft']} → {pair['verify']}", _fmt(pair["n_rows"]),
                           _fmt(pair["mean_n_accepted"], 1), _fmt(pair["accepted_share"]),
                           _fmt(pair["mean_verify_ms"], 0))
        _print_whole(console, drafts)
        console.print("[dim]accepted tokens: mean n_accepted per row; accepted share: Σ n_accepted / Σ n_draft_tokens[/dim]")

    oracle = summary["oracle"]
    console.print(
        f"oracle (cheapest acceptable tier, {oracle['n_requests']} requests with a labelled output at every tier): quality "
        f"{_fmt(oracle['quality'])} vs last tier {_fmt(oracle.get('last_tier_quality'))}, "
        f"cost share {_fmt(oracle['cost_share'])} of always-last-tier"
        + (f" ({oracle['cost_note']})" if oracle.get("cost_note") else "")
    )
    console.print(f"[dim]{summary['rules']['acceptable']}; cost = {summary['rules']['cost']}[/dim]")
