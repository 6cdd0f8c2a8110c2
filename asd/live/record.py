"""`asd record`: run every tier of a ladder over a prompt set, score each tier's output as a
draft under the later tiers, label quality, and write a trace bundle.

Crash-safe and resumable: results go to small Parquet shards in `BUNDLE.partial/`, each
written to a temporary name and renamed into place as its batch completes, so a kill loses
at most the batch in flight. Rerunning the same command reads the shards, skips what is
done, and finally consolidates everything into the bundle with one atomic write.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from asd.errors import AsdError, BackendError, ConfigError, TraceError
from asd.fsutil import atomic_write
from asd.live import labels, models
from asd.live.backends.base import Generation, Score, make_backend
from asd.live.prompts import load_prompts, parse_shard, prompt_hash, select_shard
from asd.live.tiers import load_ladder
from asd.traces import bundle as B
from asd.traces import schema as S
from asd.traces.summary import accepted_share
from asd.traces.validate import validate_bundle

DRAFT_MODES = ("all", "next", "none")
PLAN = "plan.json"

# Shards hold what the backends measured; labels and list summaries are added when the
# bundle is consolidated (`bundle.conform`).
OUTPUT_SHARD = pa.schema([S.OUTPUTS.field(name) for name in S.MEASURED_OUTPUT_COLUMNS])
DRAFT_SHARD = S.DRAFTS


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def record(
    tiers_path: str | Path,
    prompts_path: str | Path,
    out: str | Path,
    *,
    shard: str | None = None,
    limit: int | None = None,
    drafts: str = "all",
    label: str = "agreement",
    overwrite: bool = False,
    restart: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """Record (or resume recording) a bundle at `out`; returns a summary dict. `limit` keeps
    the first `limit` prompts of the file (before `shard` slices them); `restart` discards
    the results of an earlier, unfinished run kept in `out.partial/` first."""
    started = time.time()
    out = B.output_path(out)  # never the shipped built-in trace
    if drafts not in DRAFT_MODES:
        raise ConfigError(f"--drafts {drafts!r}: choose one of {list(DRAFT_MODES)}")
    if label not in labels.LABEL_MODES:
        raise ConfigError(f"--label {label!r}: choose one of {list(labels.LABEL_MODES)}")
    if label == "bleu":
        labels.label_by_agreement("a", "a", "bleu")  # fail now, not after hours of recording
    ladder = load_ladder(tiers_path)
    shard_spec = parse_shard(shard)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: must be at least 1")
    prompts = load_prompts(prompts_path)
    prompts = select_shard(prompts if limit is None else prompts.head(limit), shard_spec)
    if prompts.empty:
        raise ConfigError(f"--shard {shard}: this slice of {prompts_path} holds no prompts")
    fingerprint = _fingerprint(ladder, prompts, shard, drafts, label)

    if (out / B.MANIFEST).is_file() and not overwrite:
        try:
            record_info = json.loads((out / B.MANIFEST).read_text()).get("record") or {}
        except (OSError, json.JSONDecodeError):
            record_info = {}
        done = record_info.get("fingerprint")
        if done == fingerprint:
            labelled_by = record_info.get("labels_fingerprint")
            if labelled_by is not None and labelled_by != _labels_fingerprint(prompts):  # older bundles have none
                raise TraceError(f"{out}: already recorded, with other references or tasks than {prompts_path} "
                                 "gives now, which its labels come from (pass --overwrite to record it again)")
            try:  # its files still as written (a stamped bundle: hashed, not re-read)
                B.open_bundle(out)
            except TraceError as exc:
                raise TraceError(f"{out}: recorded, but no longer a valid bundle ({exc}); pass --overwrite to record "
                                 "it again") from None
            status = {"bundle": str(out), "status": "already complete", "n_requests": len(prompts)}
            partial = partial_path(out)
            if _plan_fingerprint(partial) in (fingerprint, None):
                # A run killed between the final write and its cleanup leaves its shards behind.
                shutil.rmtree(partial, ignore_errors=True)
            else:  # another run's unfinished work (other tiers or options): not ours to delete
                status["kept"] = f"{partial} holds an unfinished recording from other inputs, kept"
            return status
        raise TraceError(f"{out}: already exists and was recorded from other inputs (pass --overwrite to replace it)")
    if os.path.lexists(out) and not (out / B.MANIFEST).is_file():
        B.bundle_target(out, overwrite=True)  # a file or a directory of other files is never replaced
        if not overwrite:  # an empty directory is, when asked
            raise TraceError(f"{out}: exists and is not a trace bundle (pass --overwrite to replace it)")
    elif overwrite:  # a bundle holding other files: refused now, not after hours of recording
        B.bundle_target(out, overwrite=True)

    # Every tier's context must hold the prompts: checked (or chosen, `n_ctx: auto`) from the
    # tokenised prompts before any model loads or anything is written.
    ladder = fit_contexts(ladder, prompts, drafts, tiers_path)
    with _sole_recorder(out):
        discarded = _discard_partial(partial_path(out)) if restart else None
        work = ShardStore(partial_path(out), fingerprint, plan={"tiers_config": str(tiers_path), "prompts": str(prompts_path), "shard": shard, "drafts": drafts, "label": label})
        counts = {"generated": 0, "scored": 0, "resumed_outputs": 0, "resumed_drafts": 0}
        try:
            _run_tiers(ladder, prompts, work, drafts, progress, counts)
            summary = _consolidate(ladder, prompts, work, out, tiers_path, prompts_path, shard, drafts, label, fingerprint, command, started)
        except AsdError as exc:
            raise type(exc)(f"{exc} — {_kept(work)}") from None
        except KeyboardInterrupt:
            raise AsdError(f"interrupted — {_kept(work)}") from None
        summary.update(counts)
        if discarded is not None:
            summary["discarded"] = discarded
        shutil.rmtree(work.path, ignore_errors=True)
    return summary


@contextmanager
def _sole_recorder(out: Path):
    """Hold `OUT.lock` (an advisory lock the kernel drops when the process dies, kill -9 too)
    while recording: a second `asd record -o OUT` started meanwhile had recreated the first
    one's `.partial/` after it finished, without a plan, and a later run adopted those shards."""
    import fcntl

    lock = out.with_name(out.name + ".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")
    except OSError as exc:
        raise TraceError(f"{lock}: cannot create the recording lock ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise TraceError(f"{out}: another asd record is writing it now (it holds {lock}); wait for it to "
                             "finish, or write elsewhere") from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
    finally:
        handle.close()


def _kept(work: "ShardStore") -> str:
    n = work.n_rows()
    if n == 0:  # only the plan: kept, it refused the rerun with a fixed tier config as "other inputs"
        shutil.rmtree(work.path, ignore_errors=True)
        return "nothing was recorded, and nothing is left behind"
    return (
        f"{_count(n, 'result')} recorded so far {'is' if n == 1 else 'are'} kept in {work.path}; rerun the same command to resume, "
        "or after changing the tier config or options add --restart to discard them and start over"
    )


def _discard_partial(path: Path) -> dict:
    """`--restart`: remove an unfinished run's shards; says what was discarded."""
    if not path.is_dir():
        return {"path": str(path), "results": 0}
    try:
        n = ShardStore.count_rows(path)
    except (OSError, pa.ArrowException):
        n = None  # unreadable shards are discarded all the same
    shutil.rmtree(path)
    return {"path": str(path), "results": n}


def fit_contexts(ladder: dict, prompts: pd.DataFrame, drafts: str, tiers_path) -> dict:
    """The ladder with each tier's context checked or chosen for these prompts (its
    backend's `fit_context`), before any model loads: a tier verifying drafts also needs
    room for the longest draft (the draft tiers' max_tokens)."""
    from asd.live.backends import BACKENDS

    pairs = list(zip(prompts["request_id"], prompts["prompt"]))
    tiers = []
    for u, tier in enumerate(ladder["tiers"]):
        draft_max = max((ladder["tiers"][t]["sampling"]["max_tokens"] for t in _draft_tiers(u, drafts)), default=0)
        try:
            tiers.append(BACKENDS[tier["backend"]].fit_context(tier, pairs, tier["sampling"]["max_tokens"], draft_max))
        except ConfigError as exc:
            raise ConfigError(f"{tiers_path}: {exc}") from None
    return {**ladder, "tiers": tiers}


# -- the work --------------------------------------------------------------------------------
def _run_tiers(ladder, prompts, work: "ShardStore", drafts, progress, counts) -> None:
    tiers = ladder["tiers"]
    ids = list(prompts["request_id"])
    text_of = dict(zip(prompts["request_id"], prompts["prompt"]))
    done_outputs = work.done_outputs()
    done_drafts = work.done_drafts()
    counts["resumed_outputs"] = sum(len(v) for v in done_outputs.values())
    counts["resumed_drafts"] = sum(len(v) for v in done_drafts.values())
    with _progress(progress) as bar:
        for u, tier in enumerate(tiers):
            todo = [r for r in ids if r not in done_outputs.get(u, set())]
            # An empty answer is no draft: the live runner scores none (its features say "no draft"),
            # so a row scoring it would train the draft features on a state live never shows.
            draft_texts = {t: work.output_texts(t) for t in _draft_tiers(u, drafts)}
            todo_drafts = {t: [r for r in ids if r not in done_drafts.get((t, u), set()) and draft_texts[t].get(r)]
                           for t in draft_texts}
            if not todo and not any(todo_drafts.values()) and work.has_tier_info(u):
                continue
            backend = make_backend(tier)
            try:
                work.save_tier_info(u, backend.describe())
                sampling = tier["sampling"]
                batch = int(tier.get("batch_size") or backend.default_batch_size)
                task = bar(f"{tier['name']}: generate", len(ids), len(ids) - len(todo))
                for chunk in _chunks(todo, batch):
                    formatted = [backend.format_prompt(text_of[r]) for r in chunk]
                    gens = backend.generate(formatted, sampling["max_tokens"], sampling["temperature"], sampling["top_logprobs"])
                    if len(gens) != len(chunk):
                        raise BackendError(f"tier {tier['name']!r}: asked for {len(chunk)} generations, got {len(gens)}")
                    for rid, gen in zip(chunk, gens):
                        _check_generation(tier, rid, gen)
                    work.write_outputs([output_row(rid, u, g) for rid, g in zip(chunk, gens)])
                    counts["generated"] += len(chunk)
                    task(len(chunk))
                for t, todo_pair in todo_drafts.items():
                    if not todo_pair:
                        continue
                    draft_text = draft_texts[t]
                    n_drafts = sum(1 for r in ids if draft_text.get(r))
                    task = bar(f"{tiers[t]['name']} → {tier['name']}: verify", n_drafts, n_drafts - len(todo_pair))
                    for chunk in _chunks(todo_pair, batch):
                        scores = backend.score_batch(
                            [(backend.format_prompt(text_of[r]), _as_draft(tier, draft_text[r])) for r in chunk]
                        )
                        work.write_drafts([draft_row(r, t, u, s) for r, s in zip(chunk, scores)])
                        counts["scored"] += len(chunk)
                        task(len(chunk))
            finally:
                backend.close()


def _as_draft(verifier: dict, text: str) -> str:
    """A verifier whose own answers start with a space (prompt ends in "Answer:") reads a draft
    that starts without one as glued to its prompt; `draft_separator` is put between them."""
    separator = verifier.get("draft_separator") or ""
    if separator and text and not text[:1].isspace():
        return separator + text
    return text


def _draft_tiers(u: int, drafts: str) -> list[int]:
    if drafts == "none" or u == 0:
        return []
    return [u - 1] if drafts == "next" else list(range(u))


def _check_generation(tier: dict, rid: str, gen: Generation) -> None:
    where = f"tier {tier['name']!r} ({tier.get('url') or tier.get('model')})"
    if gen.n_output_tokens and (not gen.token_logprobs or len(gen.token_logprobs) != gen.n_output_tokens):
        raise BackendError(
            f"{where} returned no logprobs for request {rid!r} "
            f"({len(gen.token_logprobs or [])} for {gen.n_output_tokens} tokens); a trace needs them"
        )


def output_row(rid: str, tier: int, gen: Generation) -> dict:
    """One outputs row; a tier asked for no logprobs (live) has null lists, "not recorded"."""
    entropy = gen.token_entropy
    no_logprobs = not gen.token_logprobs and bool(gen.n_output_tokens)
    return {
        "request_id": rid,
        "tier": tier,
        "output": gen.text,
        "n_prompt_tokens": gen.n_prompt_tokens,
        "n_output_tokens": gen.n_output_tokens,
        "token_logprobs": None if no_logprobs else [float(x) for x in gen.token_logprobs],
        "token_entropy": None if entropy is None or no_logprobs else [float(x) for x in entropy],
        "ttft_ms": gen.ttft_ms,
        "e2e_ms": gen.e2e_ms,
    }


def draft_row(rid: str, draft: int, verify: int, score: Score) -> dict:
    return {
        "request_id": rid,
        "draft_tier": draft,
        "verify_tier": verify,
        "n_draft_tokens": score.n_draft_tokens,
        "n_accepted": score.n_accepted,
        "verifier_logprobs": [float(x) for x in score.token_logprobs],
        "verify_ms": score.verify_ms,
    }


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), max(1, size)):
        yield items[i : i + size]


# -- consolidation --------------------------------------------------------------------------
def _consolidate(ladder, prompts, work, out, tiers_path, prompts_path, shard, drafts, label, fingerprint, command, started) -> dict:
    tiers = ladder["tiers"]
    outputs = work.read("outputs").to_pandas()
    outputs = outputs.drop_duplicates(["request_id", "tier"]).sort_values(["request_id", "tier"], kind="stable")
    outputs = outputs[outputs["request_id"].isin(set(prompts["request_id"]))]
    expected = len(prompts) * len(tiers)
    if len(outputs) != expected:
        raise TraceError(f"{work.path}: {len(outputs)} of {expected} outputs recorded")
    _label(outputs, prompts, len(tiers) - 1, label)
    draft_table = None
    if drafts != "none" and len(tiers) > 1:
        draft_frame = work.read("drafts").to_pandas().drop_duplicates(["request_id", "draft_tier", "verify_tier"])
        draft_frame = draft_frame[draft_frame["request_id"].isin(set(prompts["request_id"]))]
        draft_table = draft_frame.sort_values(["request_id", "draft_tier", "verify_tier"], kind="stable")
        if draft_table.empty:  # every draft tier answered nothing: a bundle omits an empty table
            draft_table = None
    requests = pd.DataFrame(
        {
            "request_id": prompts["request_id"],
            "prompt": prompts["prompt"],
            "prompt_hash": [prompt_hash(p) for p in prompts["prompt"]],
            "task": prompts["task"],
            "reference": prompts["reference"],
        }
    )
    manifest = B.new_manifest(
        [manifest_tier_entry(tier, work.tier_info(u)) for u, tier in enumerate(tiers)],
        sampling={tier["name"]: tier["sampling"] for tier in tiers},
        provenance={
            "recorded_by": "asd record",
            "command": command,
            "tiers_config": str(tiers_path),
            "tiers": [public_tier(t) for t in tiers],
            "tier_backends": _tier_backends(tiers, work),
            "prompts": str(prompts_path),
            "prompts_sha256": B.file_sha256(prompts_path),
            "shard": shard,
            "host": platform.node(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "finished_at_unix": time.time(),
            "timings": "ttft_ms/e2e_ms measured per request around the backend's work; verify_ms likewise",
            "entropy": "token_entropy is the entropy (nats) of the renormalised top-k logprobs",
            "drafts": "each tier's output re-tokenised and scored by every later tier ('all') or the next "
            "('next'), an empty one not (no draft, as live); n_draft_tokens and n_accepted count the verifier's tokens; n_accepted = longest "
            "prefix where the verifier's greedy (argmax) token equals the draft token",
        },
        label_rule=labels.label_rule(label),
        record={"fingerprint": fingerprint, "labels_fingerprint": _labels_fingerprint(prompts), "drafts": drafts,
                "label": label, "shard": shard},
    )
    B.write_bundle(out, manifest, requests, outputs, draft_table, overwrite=True, validate=False)
    problems = [str(p) for p in validate_bundle(out, stamp=True)]  # reported, not raised; stamped when valid
    return {
        "bundle": str(out),
        "status": "complete",
        "n_requests": len(prompts),
        "tiers": [_tier_summary(tier["name"], outputs[outputs["tier"] == u]) for u, tier in enumerate(tiers)],
        "drafts": []
        if draft_table is None
        else [
            {
                "draft": tiers[int(d)]["name"],
                "verifier": tiers[int(v)]["name"],
                "rows": int(len(g)),
                "accepted_share": _round(accepted_share(g["n_accepted"], g["n_draft_tokens"])),
                "mean_verify_ms": _mean(g["verify_ms"]),
            }
            for (d, v), g in draft_table.groupby(["draft_tier", "verify_tier"])
        ],
        "validation_problems": problems,
        "seconds": round(time.time() - started, 1),
    }


def _tier_summary(name: str, rows: pd.DataFrame) -> dict:
    return {
        "tier": name,
        "outputs": len(rows),
        "mean_output_tokens": _mean(rows["n_output_tokens"]),
        "mean_ttft_ms": _mean(rows["ttft_ms"]),
        "mean_e2e_ms": _mean(rows["e2e_ms"]),
        "quality": _mean(rows["quality"]),
    }


def _label(outputs: pd.DataFrame, prompts: pd.DataFrame, last: int, mode: str) -> None:
    reference = dict(zip(prompts["request_id"], prompts["reference"]))
    task = dict(zip(prompts["request_id"], prompts["task"]))
    final = dict(zip(outputs.loc[outputs["tier"] == last, "request_id"], outputs.loc[outputs["tier"] == last, "output"]))
    quality, accepted, source = [], [], []
    for rid, text in zip(outputs["request_id"], outputs["output"]):
        if isinstance(reference[rid], str):
            q, ok, src = labels.label_by_reference(text, reference[rid], task[rid] if isinstance(task[rid], str) else None)
        else:
            q, ok, src = labels.label_by_agreement(text, final[rid], mode)
        quality.append(q)
        accepted.append(ok)
        source.append(src)
    outputs["quality"] = np.asarray(quality, dtype=np.float32)
    outputs["accepted"] = accepted
    outputs["label_source"] = source


def manifest_tier_entry(tier: dict, info: dict) -> dict:
    # An HTTP backend reports the model the server actually serves; its URL goes to provenance.
    model = str(info.get("model_id") or tier.get("model") or tier.get("url"))
    return {
        "name": tier["name"],
        "model_id": tier.get("model_id") or models.MODEL_IDS.get(model, model),
        "params_b": tier.get("params_b", models.PARAMS_B.get(model)),
        "dtype": tier.get("dtype") or info.get("dtype"),
        "quantization": tier.get("quantization") or models.QUANTIZATION.get(model),
        "hardware": tier.get("hardware"),
        "tensor_parallel": tier.get("tensor_parallel"),
        "backend": info.get("backend") or tier.get("backend"),
        "backend_version": info.get("backend_version"),
    }


def _tier_backends(tiers, work: "ShardStore") -> dict:
    """What each backend reported beyond the manifest's fixed tier keys (an HTTP tier's
    server URL), by tier name; the tier keys are a fixed part of the bundle schema."""
    details = {}
    for u, tier in enumerate(tiers):
        extra = {k: v for k, v in work.tier_info(u).items() if k not in S.TIER_KEYS}
        if extra:
            details[tier["name"]] = extra
    return details


def public_tier(tier: dict) -> dict:
    return {k: v for k, v in tier.items() if k not in ("api_key",)}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _mean(values) -> float | None:
    values = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    return None if values.empty else round(float(values.mean()), 4)


def _labels_fingerprint(prompts) -> str:
    """What the labels were computed from beyond the outputs: each request's reference and task
    (not in `_fingerprint`, so changing them does not discard an unfinished run's outputs)."""
    digest = hashlib.sha256()
    for values in zip(prompts["request_id"], prompts["reference"], prompts["task"]):
        digest.update(json.dumps([None if v is None or v != v else str(v) for v in values]).encode())
    return digest.hexdigest()[:24]


def _plan_fingerprint(partial: Path) -> str | None:
    """The fingerprint of the unfinished run in `partial` (None: no readable plan there)."""
    try:
        return json.loads((partial / PLAN).read_text()).get("fingerprint")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def _fingerprint(ladder, prompts, shard, drafts, label) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([public_tier(t) for t in ladder["tiers"]], sort_keys=True, default=str).encode())
    for rid, prompt in zip(prompts["request_id"], prompts["prompt"]):
        digest.update(f"{rid}\x00{prompt}\x00".encode())
    digest.update(f"{shard}|{drafts}|{label}".encode())
    return digest.hexdigest()[:24]


# -- shards ---------------------------------------------------------------------------------
class ShardStore:
    """`BUNDLE.partial/`: plan.json, tier-N.json (backend description) and Parquet shards."""

    def __init__(self, path: Path, fingerprint: str, plan: dict):
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
            plan_file = path / PLAN
            if plan_file.is_file():
                if _plan_fingerprint(path) != fingerprint:
                    raise TraceError(
                        f"{path}: holds an unfinished recording from other tiers/prompts/options; rerun it with "
                        "the same inputs to finish it, or add --restart to discard it and start over"
                    )
            elif any(path.glob("*.parquet")) or any(path.glob("tier-*.json")):
                # shards without the plan that says what they were recorded from: never adopted
                raise TraceError(f"{path}: holds recorded shards but no {PLAN} saying from what; add --restart to "
                                 "discard them and start over")
            else:
                self._atomic_bytes(plan_file, json.dumps({"fingerprint": fingerprint, **plan}, indent=2).encode())
            for stale in path.glob(".*.tmp"):  # a shard whose writer was killed mid-write
                stale.unlink(missing_ok=True)
        except OSError as exc:
            raise TraceError(f"{path}: cannot prepare the recording directory ({exc.strerror or exc})") from None

    def _files(self, kind: str) -> list[Path]:
        return sorted(self.path.glob(f"{kind}-*.parquet"))

    def read(self, kind: str) -> pa.Table:
        schema = OUTPUT_SHARD if kind == "outputs" else DRAFT_SHARD
        tables = []
        for f in self._files(kind):
            try:
                tables.append(pq.read_table(f, schema=schema))
            except (OSError, pa.ArrowException) as exc:  # written atomically: only damage outside asd does this
                raise TraceError(f"{f}: a recorded shard cannot be read ({exc}); add --restart to discard the "
                                 "unfinished run and start over") from None
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def n_rows(self) -> int:
        return self.count_rows(self.path)

    @staticmethod
    def count_rows(path: Path) -> int:
        return sum(pq.read_metadata(f).num_rows for kind in ("outputs", "drafts") for f in sorted(path.glob(f"{kind}-*.parquet")))

    def done_outputs(self) -> dict[int, set[str]]:
        table = self.read("outputs").select(["request_id", "tier"]).to_pandas()
        return {int(t): set(g["request_id"]) for t, g in table.groupby("tier")}

    def done_drafts(self) -> dict[tuple[int, int], set[str]]:
        table = self.read("drafts").select(["request_id", "draft_tier", "verify_tier"]).to_pandas()
        return {(int(d), int(v)): set(g["request_id"]) for (d, v), g in table.groupby(["draft_tier", "verify_tier"])}

    def output_texts(self, tier: int) -> dict[str, str]:
        table = self.read("outputs").select(["request_id", "tier", "output"]).to_pandas()
        table = table[table["tier"] == tier]
        return dict(zip(table["request_id"], table["output"]))

    def write_outputs(self, rows: list[dict]) -> None:
        self._write_shard("outputs", pa.Table.from_pylist(rows, schema=OUTPUT_SHARD))

    def write_drafts(self, rows: list[dict]) -> None:
        self._write_shard("drafts", pa.Table.from_pylist(rows, schema=DRAFT_SHARD))

    def has_tier_info(self, tier: int) -> bool:
        return (self.path / f"tier-{tier}.json").is_file()

    def save_tier_info(self, tier: int, info: dict) -> None:
        self._atomic_bytes(self.path / f"tier-{tier}.json", json.dumps(info, indent=2).encode())

    def tier_info(self, tier: int) -> dict:
        file = self.path / f"tier-{tier}.json"
        return json.loads(file.read_text()) if file.is_file() else {}

    def _write_shard(self, kind: str, table: pa.Table) -> None:
        name = f"{kind}-{time.time_ns():020d}-{os.getpid()}.parquet"
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        self._atomic_bytes(self.path / name, sink.getvalue().to_pybytes())

    def _atomic_bytes(self, target: Path, data: bytes) -> None:
        """`atomic_write` (readers see all of the file or nothing), disk errors as one line."""
        if not target.parent.is_dir():  # atomic_write would make it again, a directory without its plan
            raise TraceError(f"{target.parent}: removed while recording; nothing more is written there")
        try:
            atomic_write(target, data)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise TraceError(f"{target.parent}: disk full while writing {target.name}") from None
            raise TraceError(f"{target}: cannot write ({exc.strerror or exc})") from None


# -- progress -------------------------------------------------------------------------------
@contextmanager
def _progress(enabled: bool):
    """Yields `bar(label, total, completed) -> advance(n)`; a rich bar with ETA per tier."""
    if not enabled:
        yield lambda label, total, completed: (lambda n: None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:

        def bar(label, total, completed):
            task = progress.add_task(label, total=total, completed=completed)
            return lambda n: progress.advance(task, n)

        yield bar


def format_summary(summary: dict) -> str:
    """The terminal table of a `record` summary (the --json file holds the same dict)."""
    lines = [f"{summary['bundle']}: {summary['status']}, {_count(summary['n_requests'], 'request')}"]
    if summary.get("status") != "complete":
        return "\n".join(lines + ([f"  note: {summary['kept']}"] if "kept" in summary else []))
    lines.append(
        f"  generated {_count(summary.get('generated', 0), 'output')}, scored {_count(summary.get('scored', 0), 'draft')} "
        f"(resumed {_count(summary.get('resumed_outputs', 0), 'output')}, {_count(summary.get('resumed_drafts', 0), 'draft')}) "
        f"in {summary['seconds']} s"
    )
    lines.append(f"  {'tier':<24}{'outputs':>8}{'tokens':>8}{'ttft ms':>10}{'e2e ms':>10}{'quality':>9}")
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for row in summary["tiers"]:
        lines.append(
            f"  {row['tier']:<24}{row['outputs']:>8}{fmt(row['mean_output_tokens'], '.1f'):>8}"
            f"{fmt(row['mean_ttft_ms'], '.1f'):>10}{fmt(row['mean_e2e_ms'], '.1f'):>10}{fmt(row['quality'], '.3f'):>9}"
        )
    for row in summary["drafts"]:
        lines.append(
            f"  draft {row['draft']} → {row['verifier']}: {_count(row['rows'], 'row')}, accepted share "
            f"{fmt(row['accepted_share'], '.3f')}, verify {fmt(row['mean_verify_ms'], '.1f')} ms"
        )
    discarded = summary.get("discarded")
    if discarded:
        results = "its results" if discarded["results"] is None else _count(discarded["results"], "result")
        lines.insert(1, f"  --restart: discarded {results} of an unfinished run in {discarded['path']}")
    for problem in summary.get("validation_problems") or []:
        lines.append(f"  validation: {problem}")
    return "\n".join(lines)
