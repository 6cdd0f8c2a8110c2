"""Importers: bring outside results (JSONL/CSV, public eval dumps) into a trace bundle.

`IMPORTERS` maps a format name to its class; the CLI's format choice comes from it, so a
new format is one `Importer` subclass and one line here. `import_trace` loads, writes
atomically, validates, and only then puts the bundle in place.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from asd.errors import ConfigError, TraceError
from asd.fsutil import make_parents, replace_dir
from asd.traces import schema as S
from asd.traces.bundle import bundle_target, write_bundle
from asd.traces.importers.alpaca_eval import AlpacaEvalImporter
from asd.traces.importers.base import ImportedTrace, Importer
from asd.traces.importers.mmlu_pro import MmluProImporter
from asd.traces.importers.option_logits import OptionLogitsImporter
from asd.traces.importers.spec_bench import SpecBenchImporter
from asd.traces.importers.tabular import CsvImporter, JsonlImporter
from asd.traces.validate import validate_bundle

IMPORTERS: dict[str, type[Importer]] = {
    "jsonl": JsonlImporter,
    "csv": CsvImporter,
    "mmlu-pro": MmluProImporter,
    "alpaca-eval": AlpacaEvalImporter,
    "option-logits": OptionLogitsImporter,
    "spec-bench": SpecBenchImporter,
}

__all__ = ["IMPORTERS", "ImportedTrace", "Importer", "get_importer", "import_trace", "load_trace", "summary_lines"]


def get_importer(fmt: str) -> Importer:
    try:
        return IMPORTERS[fmt]()
    except KeyError:
        raise ConfigError(f"unknown import format {fmt!r}; formats are {', '.join(IMPORTERS)}") from None


def load_trace(fmt: str, src: str | os.PathLike, **options) -> ImportedTrace:
    """Read `src` in format `fmt` into memory. Options not given (None/False) are left out;
    an option the format does not take is an error naming the formats that do."""
    importer = get_importer(fmt)
    given = {key: value for key, value in options.items() if value is not None and value is not False}
    for key in given:
        if key not in importer.options:
            users = [name for name, cls in IMPORTERS.items() if key in cls.options]
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"{flag} does not apply to {fmt} (it is for {', '.join(users) or 'no format'})")
    for key in importer.required:
        if key not in given:
            raise ConfigError(f"{fmt} needs --{key.replace('_', '-')}")
    return importer.load(Path(src), **given)


def parse_params_option(text: str | None) -> dict[str, float]:
    """`--params-b NAME=B,...` → {name: billions}, no name twice (`set_params_b` checks the values)."""
    if text is None:
        return {}
    given: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.strip().rpartition("=")
        name = name.strip()
        try:
            billions = float(value)
        except ValueError:
            billions = None
        if not (sep and name) or billions is None:
            raise ConfigError(f"--params-b {text!r}: {item.strip()!r} is not NAME=BILLIONS")
        if name in given:
            raise ConfigError(f"--params-b {text!r}: {name!r} appears twice")
        given[name] = billions
    return given


def set_params_b(trace: ImportedTrace, given: dict[str, float]) -> None:
    """Give the named tiers these parameter counts (the name rule cannot read every name, e.g.
    a mixture of experts' 'Mixtral-8x7B'); the manifest's provenance records which were given."""
    if not given:
        return
    tiers = trace.manifest["tiers"]
    names = [tier["name"] for tier in tiers]
    for name, billions in given.items():
        if name not in names:
            raise ConfigError(f"--params-b: no tier {name!r}; the tiers are {', '.join(names)}")
        if isinstance(billions, bool) or not (isinstance(billions, (int, float)) and math.isfinite(billions)
                                              and billions > 0):
            raise ConfigError(f"--params-b: {name}={billions!r} is not a parameter count in billions > 0")
        stated = trace.manifest.get("provenance", {}).get("params_b_stated", {}).get(name)
        if stated is not None and stated != billions:
            raise ConfigError(f"--params-b: {name}={billions:g} contradicts --tiers {name}:{stated:g}; "
                              "give the size once")
    for tier in tiers:
        if tier["name"] in given:
            tier["params_b"] = given[tier["name"]]
    trace.manifest.setdefault("provenance", {})["params_b_given"] = dict(given)


def import_trace(
    fmt: str,
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    validate: bool = True,
    params_b: str | dict[str, float] | None = None,
    **options,
) -> dict:
    """Import `src` as a bundle at `out`; returns a summary (the CLI prints it, `--json` saves it).
    params_b: parameter counts in billions by tier name (or the CLI's `NAME=B,...`), overriding
    what the format's name rule found.

    The bundle is written beside `out` under a temporary name, validated, and renamed into
    place only if it passes.
    """
    out = bundle_target(out, overwrite)  # never the built-in trace, nor a directory of other files
    given = params_b if isinstance(params_b, dict) else parse_params_option(params_b)
    trace = load_trace(fmt, src, **options)
    set_params_b(trace, given)
    make_parents(out)
    staging = out.with_name(f".{out.name}.import-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    try:
        write_bundle(staging, trace.manifest, trace.requests, trace.outputs, trace.drafts, validate=False)
        # checked here rather than by write_bundle to name the source; a valid bundle is stamped
        problems = validate_bundle(staging, max_problems=20, stamp=True) if validate else []
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise TraceError(f"{src}: the imported bundle fails validation: {problems[0]}{more}")
        replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summarize(fmt, out, trace)


def recorded_outputs(rows: pd.DataFrame) -> int:
    """How many of `rows` (outputs rows) are recorded outputs (`schema.RECORDED_OUTPUT_COLUMNS`)."""
    present = [rows[column].notna().to_numpy() for column in S.RECORDED_OUTPUT_COLUMNS if column in rows]
    return int(np.logical_or.reduce(present).sum()) if present else 0


def summarize(fmt: str, out: Path, trace: ImportedTrace) -> dict:
    """`n_outputs` per tier counts recorded outputs (`recorded_outputs`), not rows."""
    outputs = trace.outputs
    tiers = []
    for index, tier in enumerate(trace.manifest["tiers"]):
        rows = outputs[outputs["tier"] == index]
        quality = rows["quality"].astype("float64") if "quality" in rows else pd.Series(dtype="float64")
        # a label is a quality or an accepted flag (the project's rule, asd.traces.labels)
        accepted = rows["accepted"].astype("float64") if "accepted" in rows else pd.Series(dtype="float64")
        score = quality.fillna(accepted)  # inspect's rule: a mix is not the mean of the few judged
        tiers.append(
            {
                "name": tier["name"],
                "params_b": tier["params_b"],
                "n_outputs": recorded_outputs(rows),
                "n_labelled": int(score.notna().sum()),
                "n_judged": int(quality.notna().sum()),  # with a quality (the rest: the accepted flag alone)
                "mean_quality": float(score.mean()) if score.notna().any() else None,
                "acceptance_rate": float(accepted.mean()) if accepted.notna().any() else None,
            }
        )
    return {
        "format": fmt,
        "bundle": str(out),
        "n_requests": int(len(trace.requests)),
        "n_drafts": int(len(trace.drafts)) if trace.drafts is not None else 0,
        "tiers": tiers,
        "dropped_incomplete": int(trace.report.get("dropped_incomplete", 0)),
        "label_rule": trace.manifest.get("label_rule"),
        "estimated_columns": list(trace.manifest.get("estimated_columns", [])),
        "notes": list(trace.report.get("notes", [])),
    }


def summary_lines(summary: dict) -> list[str]:
    """The import summary as the lines the CLI prints."""
    tiers = summary["tiers"]
    n = summary["n_requests"]
    lines = [f"imported {summary['format']} -> {summary['bundle']}: {n} request{'s' if n != 1 else ''} x "
             f"{len(tiers)} tiers"]
    if summary["dropped_incomplete"]:
        n = summary["dropped_incomplete"]
        lines.append(f"dropped {n} incomplete request{'s' if n != 1 else ''} (a tier missing)")
    width = max(len(t["name"]) for t in tiers)
    for i, tier in enumerate(tiers):
        size = f"{tier['params_b']:g}B" if tier["params_b"] is not None else "?"
        if tier["n_labelled"] and not tier["n_judged"]:  # labelled by the accepted flag alone
            measure = f"accepted {tier['acceptance_rate']:.4f}"
        else:
            measure = "mean quality " + (f"{tier['mean_quality']:.4f}" if tier["mean_quality"] is not None else "-")
        lines.append(
            f"  tier {i}  {tier['name']:<{width}}  {size:>6}  {tier['n_outputs']} outputs  "
            f"{tier['n_labelled']} labelled  {measure}"
        )
    if summary["n_drafts"]:
        lines.append(f"drafts: {summary['n_drafts']} rows")
    if summary["estimated_columns"]:
        lines.append(f"estimated: {', '.join(summary['estimated_columns'])} (rule in the manifest's provenance)")
    lines.extend(summary["notes"])
    return lines
