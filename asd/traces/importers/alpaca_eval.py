"""AlpacaEval (tatsu-lab's published outputs and per-example judge preferences, as tidied in
shared/data/alpaca_eval): one tier per model, quality from the judge's preference against
the annotator's baseline model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from asd.errors import ConfigError, TraceError
from asd.traces.bundle import new_manifest
from asd.traces.importers.base import (
    TOKEN_ESTIMATE_RULE,
    ImportedTrace,
    Importer,
    complete_ladder_requests,
    estimate_tokens,
    in_request_order,
    parse_model_list,
    parse_params_b,
    read_ladder_rows,
    read_request_table,
    read_source,
    require_files,
)

SOURCE = {
    "repo": "tatsu-lab/alpaca_eval",
    "commit": "cd543a149df89434d8a54582c0151c0b945c3d20",
    "paths": ["results/<model>/model_outputs.json", "results/<model>/<annotator>/annotations.json"],
    "license": "Apache-2.0 (repo); instructions CC-BY-NC-4.0",
}
# Which annotator the default picks when several label every requested model: the
# continuous AlpacaEval 2 judge first, then AlpacaEval 1, then the rest.
ANNOTATOR_ORDER = (
    "weighted_alpaca_eval_gpt4_turbo",
    "alpaca_eval_gpt4",
    "alpaca_eval_cot_gpt4_turbo_fn",
    "alpaca_eval_gpt4_turbo_fn",
    "bedrock_claude",
)
NO_LABELS = "none"
# prompt_idx is matched against the annotations' prompt_idx, so both must be integers.
OUTPUT_KINDS = {"prompt_idx": "integer", "params_b": "number", "output": "string"}
PROMPT_KINDS = {"dataset": "string", "instruction": "string"}
ANNOTATION_KINDS = {
    "model": "string",
    "annotator": "string",
    "prompt_idx": "integer",
    "baseline": "string",
    "preference": "number",
    "output_2_matches_model_outputs": "boolean",
}
LABEL_RULE = (
    "quality = preference - 1 from annotator {annotator} (judge vs baseline {baseline}): "
    "1 (baseline better) -> 0, 2 (model better) -> 1, draw 1.5 -> 0.5, draw coded 0 -> 0.5; "
    "weighted annotators give 1 + P(model better), so quality is continuous in [0, 1]; "
    "a null preference, or a judged text that differs from the imported output (or is not known "
    "to match it), -> null quality"
)


def preference_to_quality(preference: np.ndarray) -> np.ndarray:
    """AlpacaEval preference (1 = baseline better, 2 = model better, 0 or 1.5 = draw,
    weighted judges anywhere in [1, 2]) → quality in [0, 1]; NaN stays NaN."""
    preference = np.asarray(preference, dtype=np.float64)
    quality = np.where(preference == 0.0, 0.5, preference - 1.0)
    bad = ~np.isnan(preference) & ((quality < 0.0) | (quality > 1.0))
    if bad.any():
        raise ValueError(f"preference {float(preference[bad][0])!r} is neither 0 nor in [1, 2]")
    return quality


class AlpacaEvalImporter(Importer):
    name = "alpaca-eval"
    summary = ("AlpacaEval's published outputs and judge annotations (tidied Parquet, as in shared/data/alpaca_eval): "
               "one tier per --models name, quality from --annotator")
    source_kind = "directory"
    options = ("models", "annotator", "drop_incomplete")
    required = ("models",)

    def load(
        self,
        src: Path,
        *,
        models: str | None = None,
        annotator: str | None = None,
        drop_incomplete: bool = False,
    ) -> ImportedTrace:
        src = self.check_source(src)
        require_files(src, ("prompts.parquet", "outputs.parquet", "annotations.parquet"), "an AlpacaEval export")
        names = parse_model_list(models)
        outputs_file = src / "outputs.parquet"
        rows = read_ladder_rows(outputs_file, names, OUTPUT_KINDS, "prompt_idx")
        params = hand_labelled_params(rows, names, outputs_file)  # checked over every row of the ladder
        null_output = rows["output"].isna().to_numpy()
        if null_output.any():
            first = rows[null_output].iloc[0]
            raise TraceError(
                f"{outputs_file}, column 'output': null for model {first['model']!r}, prompt_idx {first['prompt_idx']} "
                "(a value is required)"
            )
        # The annotator is checked before completeness, so its errors come first.
        annotations_file = src / "annotations.parquet"
        annotations = read_source(annotations_file, ANNOTATION_KINDS, non_null=("model", "annotator", "prompt_idx"))
        chosen = choose_annotator(annotations, names, annotator, str(annotations_file))
        labels, mismatched, unsure, baseline = self._labels(annotations, chosen, names, str(annotations_file))
        keep, dropped = complete_ladder_requests(rows, names, drop_incomplete, str(outputs_file))

        prompts = read_request_table(
            src / "prompts.parquet",
            "prompt_idx",
            keep,
            PROMPT_KINDS,
            ("instruction",),
            "no instruction for prompt_idx {} (it has outputs)",
        )
        requests = pd.DataFrame(
            {"request_id": keep, "prompt": prompts["instruction"].to_numpy(), "task": prompts["dataset"].to_numpy()}
        )
        rows = in_request_order(rows, keep)
        prompt_tokens = estimate_tokens(requests.set_index("request_id")["prompt"])
        outputs = pd.DataFrame(
            {
                "request_id": rows["request_id"],
                "tier": rows["tier"],
                "output": rows["output"],
                "n_prompt_tokens": prompt_tokens.reindex(rows["request_id"]).to_numpy(),
                "n_output_tokens": estimate_tokens(rows["output"]),
            }
        )
        imported = pd.MultiIndex.from_arrays([rows["model"], rows["prompt_idx"]])
        # nulled labels of the outputs imported: not of a request --drop-incomplete dropped
        in_mismatch, in_unsure = imported.isin(mismatched), imported.isin(unsure)
        n_mismatch, n_unknown = int(in_mismatch.sum()), int(in_unsure.sum())
        n_no_preference = n_unjudged = 0
        if labels is not None:
            quality = labels.reindex(imported)
            judged = imported.isin(labels.index)
            n_unjudged = int((~judged).sum())
            n_no_preference = int((judged & quality.isna().to_numpy() & ~in_mismatch & ~in_unsure).sum())
            outputs["quality"] = pd.array(quality.to_numpy(), dtype="Float32")
            outputs["label_source"] = np.where(quality.notna().to_numpy(), chosen, None)
        tiers = [
            {"name": n, "model_id": n, "params_b": params[n] if params.get(n) is not None else parse_params_b(n)}
            for n in names
        ]
        manifest = new_manifest(
            tiers,
            label_rule=LABEL_RULE.format(annotator=chosen, baseline=baseline) if labels is not None else None,
            estimated_columns=["outputs.n_prompt_tokens", "outputs.n_output_tokens"],
            provenance={
                "importer": self.name,
                "source": SOURCE,
                "source_dir": str(src.resolve()),
                "arguments": {"models": names, "annotator": annotator, "drop_incomplete": drop_incomplete},
                "annotator": chosen,
                "baseline": baseline,
                "token_estimate_rule": {
                    "outputs.n_prompt_tokens": TOKEN_ESTIMATE_RULE + " of the instruction (chat template not counted)",
                    "outputs.n_output_tokens": TOKEN_ESTIMATE_RULE + " of the output",
                },
                "params_b_rule": "the data's params_b hand labels, else parsed from the model name",
                "labels_nulled_text_mismatch": n_mismatch,
                "labels_nulled_match_unknown": n_unknown,
                "labels_null_no_preference": n_no_preference,
                "outputs_not_judged": n_unjudged,
                "dropped_incomplete_requests": dropped,
            },
        )
        notes = []
        if labels is not None:
            notes.append(f"annotator {chosen} (baseline {baseline})")
        for n, what, why in ((n_mismatch, "label", "nulled: the judged text differs from the imported output"),
                             (n_unknown, "label", "nulled: not known whether the judged text is the imported output"),
                             (n_no_preference, "label", f"null: {chosen} gave no preference"),
                             (n_unjudged, "output", f"not judged by {chosen}")):
            if n:
                notes.append(f"{n} {what}{'s' if n != 1 else ''} {why}")
        return ImportedTrace(manifest, requests, outputs, report={"dropped_incomplete": dropped, "notes": notes})

    @staticmethod
    def _labels(annotations: pd.DataFrame, chosen: str, names: list[str], where: str):
        """(model, prompt_idx) → quality for the chosen annotator; None when `none`."""
        if chosen == NO_LABELS:
            none = pd.MultiIndex.from_tuples([], names=["model", "prompt_idx"])
            return None, none, none, None
        rows = annotations[(annotations["annotator"] == chosen) & annotations["model"].isin(names)]
        # Some annotation files are stored twice (identical rows); differing copies are an error.
        rows = rows.drop_duplicates(["model", "prompt_idx", "preference", "output_2_matches_model_outputs"])
        clash = rows.duplicated(["model", "prompt_idx"], keep=False)
        if clash.any():
            first = rows[clash].iloc[0]
            raise TraceError(
                f"{where}: conflicting preferences of {chosen} for model {first['model']!r}, "
                f"prompt_idx {first['prompt_idx']}"
            )
        try:
            quality = preference_to_quality(rows["preference"].to_numpy())
        except ValueError as exc:
            raise TraceError(f"{where}, column 'preference': {exc} (annotator {chosen})") from None
        # A null match flag is not a match: the label may belong to another text.
        matches = rows["output_2_matches_model_outputs"].astype("boolean")
        mismatch = (matches == False).fillna(False).to_numpy(dtype=bool)  # noqa: E712 (elementwise)
        unknown = matches.isna().to_numpy()
        quality[mismatch | unknown] = np.nan
        pairs = pd.MultiIndex.from_arrays([rows["model"], rows["prompt_idx"]])
        labels = pd.Series(quality, index=pairs)
        baselines = rows["baseline"].dropna().unique()
        return labels, pairs[mismatch], pairs[unknown], (str(baselines[0]) if len(baselines) else None)


def hand_labelled_params(rows: pd.DataFrame, names: list[str], where: Path) -> dict[str, float | None]:
    """model → the data's params_b hand label (None where every row is null). A value that is
    not a finite number > 0, or two different values for one model, is an error naming the
    source file, the column and the model."""
    labels: dict[str, float | None] = {}
    for name in names:
        values = rows.loc[rows["model"] == name, "params_b"].dropna().astype("float64")
        bad = values[~(np.isfinite(values) & (values > 0))]
        if len(bad):
            raise TraceError(
                f"{where}, column 'params_b': {bad.iloc[0]:g} for model {name!r} "
                "(a parameter count in billions must be a finite number > 0, or null)"
            )
        distinct = sorted(values.unique())
        if len(distinct) > 1:
            raise TraceError(
                f"{where}, column 'params_b': model {name!r} has different values "
                f"{', '.join(f'{v:g}' for v in distinct)} (one parameter count per model)"
            )
        labels[name] = float(distinct[0]) if distinct else None
    return labels


def choose_annotator(annotations: pd.DataFrame, names: list[str], annotator: str | None, where: str) -> str:
    """The requested annotator (checked), or the first in ANNOTATOR_ORDER labelling every model."""
    if annotator == NO_LABELS:
        return NO_LABELS
    labelled = annotations[annotations["preference"].notna() & annotations["model"].isin(names)]
    covers = labelled.groupby("annotator")["model"].agg(lambda m: set(m))
    everyone = set(annotations["annotator"].unique())
    if annotator is not None:
        if annotator not in everyone:
            raise ConfigError(
                f"--annotator {annotator!r}: unknown in {where}; annotators: {', '.join(sorted(everyone))}, or none"
            )
        lacking = [n for n in names if n not in covers.get(annotator, set())]
        if lacking:
            raise TraceError(
                f"{where}: annotator {annotator} has no labels for {', '.join(lacking)}; "
                f"{_coverage(covers, names)}; or --annotator none for outputs without labels"
            )
        return annotator
    ranked = sorted(covers.index, key=lambda a: (ANNOTATOR_ORDER.index(a) if a in ANNOTATOR_ORDER else 99, a))
    for candidate in ranked:
        if covers[candidate] >= set(names):
            return candidate
    raise TraceError(
        f"{where}: no annotator labels all of {', '.join(names)}; {_coverage(covers, names)}; "
        "pass --annotator none to import the outputs without labels"
    )


def _coverage(covers: pd.Series, names: list[str]) -> str:
    parts = [f"{a} labels {', '.join(n for n in names if n in covers[a])}" for a in sorted(covers.index)]
    return "; ".join(parts) if parts else "no annotator labels any of them"
