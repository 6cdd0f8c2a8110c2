"""Terminal rendering of `summarize_bundle`'s dict (rich tables); the JSON is the same dict."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table


def _fmt(value, digits=3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_summary(summary: dict, console: Console | None = None) -> None:
    console = console or Console()
    head = f"[bold]{summary['path']}[/bold]: {summary['n_requests']} requests, {len(summary['tiers'])} tiers"
    if summary["synthetic"]:
        head += " [yellow](SYNTHETIC)[/yellow]"
    console.print(head)
    signals = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in summary["signals"].items())
    splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    console.print(f"signals: {signals}; tasks: {summary['n_tasks']}; splits: {splits}")

    tiers = Table(title="tiers", box=box.SIMPLE_HEAD)
    # Numbers never wrap or truncate; a long tier name folds instead.
    tiers.add_column("tier", overflow="fold", min_width=8)
    for col in ("B", "n", "quality", "accept", "tokens", "ttft", "e2e"):
        tiers.add_column(col, justify="right", no_wrap=True)
    for t in summary["tiers"]:
        tiers.add_row(
            t["name"], "—" if t["params_b"] is None else f"{t['params_b']:g}", _fmt(t["n_outputs"]),
            _fmt(t["mean_quality"]), _fmt(t["acceptable_rate"]), _fmt(t["mean_output_tokens"], 0),
            _fmt(t["mean_ttft_ms"], 0), _fmt(t["mean_e2e_ms"], 0),
        )
    console.print(tiers)
    console.print("[dim]B: parameters (billions); n: outputs; quality, accept(able), output tokens, ttft/e2e (ms): per-tier means (more in --json)[/dim]")

    if summary["agreement"]:
        agree = Table(title="agreement of tier labels", box=box.SIMPLE_HEAD)
        agree.add_column("tiers")
        agree.add_column("agreement", justify="right")
        for pair in summary["agreement"]:
            agree.add_row(f"{pair['a']} / {pair['b']}", _fmt(pair["agreement"]))
        console.print(agree)

    if summary["drafts"]:
        drafts = Table(title="drafts (a tier's answer verified by a deeper tier)", box=box.SIMPLE_HEAD)
        for col in ("draft → verify", "rows", "accepted tokens", "accepted share", "verify ms"):
            drafts.add_column(col, justify="left" if col.startswith("draft") else "right")
        for pair in summary["drafts"]:
            drafts.add_row(f"{pair['draft']} → {pair['verify']}", _fmt(pair["n_rows"]),
                           _fmt(pair["mean_n_accepted"], 1), _fmt(pair["accepted_fraction"]),
                           _fmt(pair["mean_verify_ms"], 0))
        console.print(drafts)

    oracle = summary["oracle"]
    console.print(
        f"oracle (cheapest acceptable tier, {oracle['n_requests']} complete requests): quality "
        f"{_fmt(oracle['quality'])} vs last tier {_fmt(oracle.get('last_tier_quality'))}, "
        f"cost share {_fmt(oracle['cost_share'])} of always-last-tier"
        + (f" ({oracle['cost_note']})" if oracle.get("cost_note") else "")
    )
    console.print(f"[dim]{summary['rules']['acceptable']}; cost = {summary['rules']['cost']}[/dim]")
