"""Spec-Bench decoding traces (shared/data/spec_bench): a two-tier ladder, the SpS draft
model → the verify model. The verify tier's output and wall time come from its own vanilla
run; the SpS run's per-step accepted lengths become `drafts` rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from asd.errors import ConfigError, TraceError
from asd.traces.bundle import new_manifest, sampling_per_tier
from asd.traces.importers.base import (
    ImportedTrace,
    Importer,
    check_unique,
    complete_ladder_requests,
    read_source,
    require_files,
    require_rows,
    tiers_named,
)

QUESTIONS_SOURCE = {
    "repo": "hemingkx/Spec-Bench",
    "commit": "fd2c1cd7d2201ef71db4c5f4e455008f017967bf",
    "paths": ["data/spec_bench/question.jsonl"],
    "license": "Apache-2.0",
}
DEFAULT_SOURCE_REPO = "yukiki-jc/Spec-Bench"  # the only fork with all 480 questions for vanilla and SpS
DEFAULT_DATASET = "spec_bench"
DEFAULT_METHOD = "sps-68m"
DEFAULT_VERIFY_MODEL = "vicuna-7b-v1.3"
VANILLA = "vanilla"
TRACE_KINDS = {
    "source_repo": "string",
    "commit": "string",
    "dataset": "string",
    "base_model": "string",
    "method": "string",
    "temperature": "number",
    "question_id": "id",
    "category": "string",
    "turn": "integer",
    "new_tokens": "integer",
    "wall_time_s": "number",
    "accept_lengths": "list of integers",
    "output": "string",
}
DRAFT_ACCEPTANCE_SPS = "sps_steps"  # manifest value: see asd.traces.schema.DRAFT_ACCEPTANCE
QUESTION_KINDS = {"question_id": "id", "turns": "list of strings", "reference": "string"}
DRAFT_RULE = (
    "one drafts row per turn (request_id = question_id:turn) from the SpS run: n_accepted = "
    "sum over verify steps of (accepted length - 1) = new_tokens - decoding_steps, the output "
    "tokens the verifier took from the draft instead of decoding them itself; n_draft_tokens is "
    "null because the harness does not log how many tokens the drafter proposed per step; "
    "verify_ms is null (the SpS wall time covers drafting and verifying together)"
)


def draft_model_name(method: str, verify_model: str) -> str:
    """The draft tier's name: SpS in Spec-Bench drafts Vicuna with vicuna-68m."""
    size = method.split("-", 1)[1] if "-" in method else method
    family = verify_model.split("-", 1)[0]
    return f"{family}-{size}"


def accepted_from_steps(accept_lengths) -> int:
    """Draft tokens accepted over a turn: each verify step commits its accepted draft tokens
    plus one token of the verifier's own, so the draft's share is sum(length - 1)."""
    lengths = np.asarray(accept_lengths, dtype=np.float64)  # a null step reads as NaN
    if np.isnan(lengths).any():
        raise ValueError("a null step")
    if (lengths < 1).any() or (lengths != np.round(lengths)).any():
        bad = lengths[(lengths < 1) | (lengths != np.round(lengths))][0]
        raise ValueError(f"accepted length {bad:g} is not a whole number >= 1 (each step commits a token)")
    return int((lengths - 1).sum())


def draft_accepted(accept_lengths: pd.Series, where: Path) -> pd.array:
    """`accepted_from_steps` per turn; a null list is not recorded (null), a bad one an error."""
    values = []
    for request_id, lengths in accept_lengths.items():
        if lengths is None or (isinstance(lengths, float) and np.isnan(lengths)):
            values.append(None)
            continue
        try:
            values.append(accepted_from_steps(lengths))
        except (TypeError, ValueError) as exc:
            reason = "a null step" if isinstance(exc, TypeError) else str(exc)
            raise TraceError(f"{where}, column 'accept_lengths': turn {request_id!r} of the draft run: {reason}") from None
    return pd.array(values, dtype="Int32")


def check_wall_times(run: pd.DataFrame, where: Path, model: str) -> None:
    """Each turn of the vanilla run (indexed by request_id = question_id:turn) has a wall time
    that is a finite number of seconds >= 0 (it becomes the verify tier's e2e_ms); else an error
    naming the source file, the column and the turn."""
    seconds = run["wall_time_s"].astype("float64").to_numpy()
    bad = ~(np.isfinite(seconds) & (seconds >= 0))
    if bad.any():
        request_id, value = run.index[bad][0], seconds[bad][0]
        qid, turn = request_id.rsplit(":", 1)
        shown = "null" if np.isnan(value) else f"{value:g}"
        raise TraceError(
            f"{where}, column 'wall_time_s': question_id {qid}, turn {turn} of the vanilla run of {model}: {shown} "
            "(a wall time must be a finite number of seconds >= 0)"
        )


class SpecBenchImporter(Importer):
    name = "spec-bench"
    summary = ("Spec-Bench runs (as in shared/data/spec_bench): draft → verify ladder, SpS accepted lengths as "
               "drafts")
    source_kind = "directory"
    options = ("source_repo", "dataset", "method", "verify_model", "drop_incomplete")

    def load(
        self,
        src: Path,
        *,
        source_repo: str | None = None,
        dataset: str | None = None,
        method: str | None = None,
        verify_model: str | None = None,
        drop_incomplete: bool = False,
    ) -> ImportedTrace:
        src = self.check_source(src)
        require_files(src, ("questions.parquet", "decoding_traces.parquet"), "a Spec-Bench export")
        source_repo = source_repo or DEFAULT_SOURCE_REPO
        dataset = dataset or DEFAULT_DATASET
        method = method or DEFAULT_METHOD
        verify_model = verify_model or DEFAULT_VERIFY_MODEL
        traces_file = src / "decoding_traces.parquet"
        traces = read_source(
            traces_file, TRACE_KINDS, non_null=("source_repo", "dataset", "base_model", "method", "question_id", "turn")
        )
        require_rows(traces_file, len(traces))
        runs = traces[["source_repo", "dataset", "base_model", "method"]].drop_duplicates()
        self._check_choice("--source-repo", source_repo, runs["source_repo"], traces_file)
        runs = runs[runs["source_repo"] == source_repo]
        self._check_choice("--dataset", dataset, runs["dataset"], traces_file, f"in {source_repo}")
        runs = runs[runs["dataset"] == dataset]
        self._check_choice("--verify-model", verify_model, runs["base_model"], traces_file, f"in {source_repo} {dataset}")
        runs = runs[runs["base_model"] == verify_model]
        methods = set(runs["method"])
        if VANILLA not in methods:
            raise TraceError(
                f"{traces_file}: no vanilla run of {verify_model} in {source_repo} {dataset}, so the verify tier "
                f"has no output of its own (runs there: {', '.join(sorted(methods))})"
            )
        drafting = sorted(m for m in methods if m.startswith("sps"))
        if method not in drafting:
            raise ConfigError(
                f"--method {method!r}: not a draft-model run of {verify_model} in {source_repo} {dataset}; "
                f"draft-model runs: {', '.join(drafting) or 'none'} (EAGLE/Medusa/Hydra heads are not a separate tier)"
            )

        selected = traces[
            (traces["source_repo"] == source_repo)
            & (traces["dataset"] == dataset)
            & (traces["base_model"] == verify_model)
        ]
        selected = selected.assign(request_id=selected["question_id"].astype(str) + ":" + selected["turn"].astype(str))
        vanilla = selected[selected["method"] == VANILLA].set_index("request_id")
        sps = selected[selected["method"] == method].set_index("request_id")
        for run in (vanilla, sps):
            if run.index.duplicated().any():
                raise TraceError(f"{traces_file}: turn {run.index[run.index.duplicated()][0]!r} recorded twice")
        present = pd.concat(
            [
                pd.DataFrame({"request_id": vanilla.index, "tier": 1}),
                pd.DataFrame({"request_id": sps.index, "tier": 0}),
            ]
        )
        draft_name = draft_model_name(method, verify_model)
        names = [draft_name, verify_model]
        keep, dropped = complete_ladder_requests(present, names, drop_incomplete, str(traces_file))
        keep = np.array(sorted(keep, key=_turn_order), dtype=object)

        vanilla, sps = vanilla.reindex(keep), sps.reindex(keep)
        check_wall_times(vanilla, traces_file, verify_model)
        requests = self._requests(src, keep, vanilla)
        n = len(keep)
        outputs = pd.DataFrame(
            {
                "request_id": np.repeat(keep, 2),
                "tier": np.tile(np.array([0, 1], dtype=np.int16), n),
                # The draft model never answered alone: nothing recorded for tier 0.
                "output": _interleave(None, vanilla["output"].to_numpy()),
                "n_output_tokens": pd.array(_interleave(None, vanilla["new_tokens"].to_numpy()), dtype="Int32"),
                "e2e_ms": pd.array(_interleave(None, (vanilla["wall_time_s"] * 1000.0).to_numpy()), dtype="Float64"),
            }
        )
        drafts = pd.DataFrame(
            {
                "request_id": keep,
                "draft_tier": np.zeros(n, dtype=np.int16),
                "verify_tier": np.ones(n, dtype=np.int16),
                "n_draft_tokens": pd.array([None] * n, dtype="Int32"),
                "n_accepted": draft_accepted(sps["accept_lengths"], traces_file),
            }
        )
        commits = sorted(set(selected["commit"].dropna()))
        temperature = sorted(set(selected["temperature"]))
        tiers = tiers_named([draft_name, verify_model], dtype="float16")
        manifest = new_manifest(
            tiers,
            # n_accepted here is a sum over SpS steps, not the schema's longest accepted prefix.
            draft_acceptance=DRAFT_ACCEPTANCE_SPS,
            sampling=sampling_per_tier(
                tiers, {"temperature": temperature[0] if len(temperature) == 1 else temperature, "batch_size": 1}
            ),
            provenance={
                "importer": self.name,
                "source": {
                    "repo": source_repo,
                    "commit": commits[0] if len(commits) == 1 else commits,
                    "harness": "Spec-Bench (greedy, fp16, batch size 1; hardware not recorded)",
                },
                "questions_source": QUESTIONS_SOURCE,
                "source_dir": str(src.resolve()),
                "arguments": {
                    "source_repo": source_repo,
                    "dataset": dataset,
                    "method": method,
                    "verify_model": verify_model,
                    "drop_incomplete": drop_incomplete,
                },
                "request_rule": "request_id = question_id:turn (turn 0-based); prompt = that turn's user message",
                "output_rule": (
                    f"tier {verify_model}: output, n_output_tokens = new_tokens and e2e_ms = wall_time_s * 1000 "
                    f"of its vanilla run; tier {draft_name}: not recorded (null)"
                ),
                "draft_rule": DRAFT_RULE,
                "dropped_incomplete_requests": dropped,
            },
        )
        notes = [f"drafts from {method}; verify-tier outputs and e2e from the vanilla run of {verify_model}"]
        return ImportedTrace(manifest, requests, outputs, drafts, report={"dropped_incomplete": dropped, "notes": notes})

    @staticmethod
    def _check_choice(flag: str, value: str, available: pd.Series, where: Path, scope: str = "") -> None:
        choices = sorted(set(available))
        if value not in choices:
            raise ConfigError(f"{flag} {value!r}: not in {where}{' ' + scope if scope else ''}; available: {', '.join(choices)}")

    @staticmethod
    def _requests(src: Path, keep: np.ndarray, vanilla: pd.DataFrame) -> pd.DataFrame:
        questions_file = src / "questions.parquet"
        questions = read_source(questions_file, QUESTION_KINDS, non_null=("question_id",))
        check_unique(questions_file, questions, ["question_id"])
        by_id = questions.assign(qid=questions["question_id"].astype(str)).set_index("qid")
        prompts, references = [], []
        for request_id, turn in zip(keep, vanilla["turn"].to_numpy()):
            qid = request_id.rsplit(":", 1)[0]
            prompt = reference = None
            if qid in by_id.index:
                turns = by_id.at[qid, "turns"]
                turns = [] if turns is None or (isinstance(turns, float) and np.isnan(turns)) else list(turns)
                prompt = turns[turn] if 0 <= turn < len(turns) else None
                reference = _turn_reference(by_id.at[qid, "reference"], turn)
            prompts.append(prompt)
            references.append(reference)
        return pd.DataFrame(
            {"request_id": keep, "prompt": prompts, "task": vanilla["category"].to_numpy(), "reference": references}
        )


def _turn_reference(raw, turn: int) -> str | None:
    """The reference answer for one turn (the data keeps a JSON list, one per turn)."""
    if raw is None or (isinstance(raw, float) and np.isnan(raw)):
        return None
    try:
        parsed = json.loads(raw)
    except (TypeError, json.JSONDecodeError):
        return str(raw)
    if isinstance(parsed, list):
        return str(parsed[turn]) if turn < len(parsed) and parsed[turn] is not None else None
    return str(parsed)


def _turn_order(request_id: str):
    qid, turn = request_id.rsplit(":", 1)
    return (0, int(qid), int(turn)) if qid.isdigit() else (1, qid, int(turn))


def _interleave(draft_value, verify_values: np.ndarray) -> list:
    out: list = []
    for value in verify_values:
        out.append(draft_value)
        out.append(None if (isinstance(value, float) and np.isnan(value)) else value)
    return out
