"""Features of a trace view for the acceptance predictors: a registry of named features in
groups, computed for every (request, tier) from what is known when the decision at tier i
is made — the outputs of tiers ≤ i, never a later tier — in two states:

- `tier_x` (climbed): the request ran tiers 0..i (all recorded ones are used);
- `cold_x` (started cold at tier i): it skipped tiers < i, so the features that need an
  earlier tier (groups `agreement` and `draft`) take their neutral value and `cold_start`=1;

plus `prompt_x`, prompt-only features for the start decision (stage 0). Every value is
finite: a missing input takes the feature's stated `fill` and a `*_missing` flag says so.
The same code runs on a bundle (`load_view`) and on a live request (`view_from_outputs`).
`FeatureSpec` (JSON) records the columns, so a policy re-applies them to other data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from asd.calibration.answers import KIND_NUMBER, KIND_OPTION, PUNCTUATION_TO_SPACE, extract_answer, jaccard
from asd.calibration.views import TokenLists, TraceView
from asd.errors import ConfigError

# 2: stage 0's prompt_log_tokens from the prompt's characters (as the live runner knows it), not
# tier 0's recorded count; a version-1 policy would be replayed on values it was not fitted on
SPEC_VERSION = 2
LAST_TOKENS = 32
LOW_LOGPROBS = (-1.0, -2.3)  # p < 0.37 and p < 0.1
MAX_TASKS = 64  # task one-hot columns: the most frequent tasks; the rest are all-zero
# A model that hedges is often wrong, and chat models say so in words where a trace has no
# logprobs. Matched as whole words in the case-folded text without punctuation. Pooled 5-fold GPU
# cost at 1-3 % loss against always-last, `params`, mean of fold seeds 0-2, without → with this
# group (benchmarks/bench_policy_quality.py): AlpacaEval Llama-2-chat 0.638 → 0.605 (points saved
# beyond the best simple policy at 2 % loss 10.5 → 23.1, gap to the oracle closed 0.198 → 0.380),
# FuseChat 0.940 → 0.923, MMLU-Pro Llama-2 0.881 → 0.871, Mistral → Mixtral 0.832 → 0.834 (gap
# 0.226 → 0.256); gemma → vicuna → openbuddy now reaches 2 % loss; worse on Tulu-2-DPO 0.735 →
# 0.763, phi-2 → Llama-2-chat 0.690 → 0.725 (though it saves 10.2 → 17.0 points at 2 %) and
# GSM8K Mixtral → GPT-4 0.872 → 0.898; MMLU-Pro Qwen1.5, Llama-3.1, Yi within 0.005.
HEDGE_WORDS = ("might", "may", "possibly", "perhaps", "likely", "approximately", "unclear", "however", "but",
               "i think", "not sure", "it depends")
_HEDGE = re.compile(r"\b(?:" + "|".join(HEDGE_WORDS) + r")\b")


@dataclass(frozen=True)
class Feature:
    """One feature: `fill` where its input is missing (stated imputation), `cold` its
    neutral value in the cold-start state (None: the same as climbed)."""

    name: str
    group: str
    fill: float
    cold: float | None
    doc: str


def _f(name, group, doc, fill=0.0, cold=None):
    return Feature(name, group, fill, cold, doc)


FEATURES: tuple[Feature, ...] = (
    _f("logprob_mean", "logprob", "mean token logprob of tier i's answer"),
    _f("logprob_min", "logprob", "min token logprob"),
    _f("logprob_last32", "logprob", f"mean logprob of the last {LAST_TOKENS} tokens (no token list: the mean)"),
    _f("logprob_below_1", "logprob", "share of tokens with logprob < -1 (no token list: 0)"),
    _f("logprob_below_2_3", "logprob", "share of tokens with logprob < -2.3 (no token list: 0)"),
    _f("logprob_missing", "logprob", "1 where tier i's answer has no logprobs (its logprob features are 0)"),
    _f("entropy_mean", "entropy", "mean top-k entropy per token"),
    _f("entropy_max", "entropy", "max top-k entropy over tokens (no token list: the mean)"),
    _f("entropy_missing", "entropy", "1 where tier i's answer has no entropies (its entropy features are 0)"),
    _f("log_output_tokens", "length", "log(1 + output tokens); missing: 0"),
    _f("log_prompt_tokens", "length", "log(1 + tier i's prompt tokens); missing: log(1 + prompt chars / 4)"),
    _f("hit_token_limit", "length", "1 where output tokens >= the tier's max_tokens (unknown limit: 0)"),
    _f("output_missing", "length", "1 where tier i has no recorded answer"),
    _f("output_empty", "format", "1 where the answer text is missing or blank"),
    _f("answer_number", "format", "the final answer parses as a number"),
    _f("answer_option", "format", "the final answer is an option letter"),
    _f("answer_json", "format", "the answer came from a JSON 'answer' field"),
    _f("answer_marked", "format", "the text marks its answer (JSON field, 'the answer is', boxed, '####', a bare short answer)"),
    _f("hedge_rate", "content", "hedging and qualifying words per 100 words of tier i's answer (HEDGE_WORDS; no text: 0)"),
    _f("prev_answered", "agreement", "tier i-1 has a non-empty answer", cold=0.0),
    _f("agree_prev", "agreement", "tier i's normalised answer equals tier i-1's", cold=0.0),
    _f("agree_any_prev", "agreement", "tier i's answer equals some earlier tier's", cold=0.0),
    _f("agree_count_prev", "agreement", "how many earlier tiers gave the same answer", cold=0.0),
    _f("agree_share_prev", "agreement", "share of the earlier tiers with an answer that gave the same one (none: 0)", cold=0.0),
    _f("similarity_prev", "agreement", "word-set Jaccard of the normalised texts of tiers i and i-1 (either empty: 0)", cold=0.0),
    _f("contains_prev", "agreement", "one of the normalised texts of tiers i, i-1 contains the other as whole words", cold=0.0),
    _f("draft_present", "draft", "tier i verified tier i-1's answer as a draft", cold=0.0),
    _f("draft_accept_share", "draft", "accepted share of the draft: n_accepted / n_draft_tokens (no draft: 0)", cold=0.0),
    _f("draft_verifier_mean_logprob", "draft", "tier i's mean logprob on tier i-1's draft tokens (none: 0)", cold=0.0),
    _f("draft_verifier_min_logprob", "draft", "tier i's min logprob on the draft tokens (none: 0)", cold=0.0),
    _f("tier_index", "stage", "the tier's index i in the ladder"),
    _f("cold_start", "stage", "1 in the cold-start state (tiers < i skipped), 0 when climbed", cold=1.0),
)
FEATURE_BY_NAME = {f.name: f for f in FEATURES}
GROUPS = ("logprob", "entropy", "length", "format", "content", "agreement", "draft", "stage")
FEATURE_GROUPS: dict[str, list[str]] = {g: [f.name for f in FEATURES if f.group == g] for g in GROUPS}
# Always computed: the predictors and tables need the state (tier, cold or climbed).
ALWAYS = ("stage",)
COLD_FEATURES = tuple(f.name for f in FEATURES if f.cold is not None)

PROMPT_FEATURES: dict[str, str] = {
    "prompt_missing": "1 where the prompt text was not recorded (its text features are 0)",
    "prompt_log_chars": "log(1 + prompt characters)",
    "prompt_log_words": "log(1 + prompt words)",
    "prompt_log_tokens": "log(1 + prompt chars / 4), as the live runner knows it before tier 0 runs; no prompt "
                         "text: log(1 + tier 0's prompt tokens)",
    "prompt_digit_share": "share of characters that are digits",
    "prompt_log_question_marks": "log(1 + number of '?')",
    "prompt_has_options": "at least two lettered option lines ('A. ...', '(B) ...')",
    "prompt_has_code": "code markers (```, def/class/import/return, braces or semicolons ending a line, #include, print()",
    "prompt_has_math": "math markers (digit operator digit, \\frac/\\sqrt/\\int/\\sum, ^2, $$)",
}
TASK_PREFIX = "task="

_OPTION_LINE = re.compile(r"^[ \t]*\(?[A-Ja-j][.)][ \t]+\S", re.MULTILINE)
# Substring tests: much cheaper than one regex with many alternatives over a long prompt.
_CODE_MARKERS = ("```", "def ", "class ", "import ", "#include", "return ", ";\n", "{\n", "};", "</", "console.", "print(")
_MATH_MARKERS = ("\\frac", "\\sqrt", "\\int", "\\sum", "^2", "$$")
_MATH = re.compile(r"\d ?[-+*/^=×÷<>≤≥] ?-?\d")
_DIGITS = "0123456789"


@dataclass(frozen=True)
class FeatureSpec:
    """Which features, in which column order, with the task vocabulary of the one-hot:
    what a policy stores to compute the same columns on other data (JSON via to_dict)."""

    groups: tuple[str, ...]
    names: tuple[str, ...]
    prompt_names: tuple[str, ...]
    tasks: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"version": SPEC_VERSION, "groups": list(self.groups), "names": list(self.names),
                "prompt_names": list(self.prompt_names), "tasks": list(self.tasks)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "FeatureSpec":
        if not isinstance(data, Mapping) or data.get("version") != SPEC_VERSION:
            raise ConfigError(f"feature spec: expected a dict with version {SPEC_VERSION}, got {data!r:.80}")
        try:
            spec = cls(tuple(data["groups"]), tuple(data["names"]), tuple(data["prompt_names"]), tuple(data["tasks"]))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"feature spec: missing or malformed field ({exc})") from None
        _check_groups(spec.groups)
        expected = tuple(n for g in GROUPS if g in spec.groups for n in FEATURE_GROUPS[g])
        if spec.names != expected:
            raise ConfigError(f"feature spec: names {list(spec.names)} do not match groups {list(spec.groups)} in this asd")
        prompt = tuple(PROMPT_FEATURES) + tuple(TASK_PREFIX + t for t in spec.tasks)
        if spec.prompt_names != prompt:
            raise ConfigError("feature spec: prompt_names do not match this asd's prompt features")
        return spec


class ColdFeatures:
    """`FeatureSet.cold_x` without a second (N, L, F) tensor: the cold state is the climbed one
    with each cold feature at its constant neutral value, so it is made from `tier_x` for the
    rows asked for. Indexes like the ndarray it stands for (the result is an ndarray), and
    `np.asarray(cold_x)` builds the whole tensor."""

    def __init__(self, tier_x: np.ndarray, columns, values):
        self.tier_x = tier_x
        self.columns = np.asarray(columns, dtype=np.intp)
        self.values = np.asarray(values, dtype=tier_x.dtype)

    shape = property(lambda self: self.tier_x.shape)
    dtype = property(lambda self: self.tier_x.dtype)
    ndim = property(lambda self: self.tier_x.ndim)
    size = property(lambda self: self.tier_x.size)

    def __len__(self) -> int:
        return len(self.tier_x)

    def _cold(self, block: np.ndarray) -> np.ndarray:
        if np.may_share_memory(block, self.tier_x):  # a basic index is a view of tier_x
            block = block.copy()
        block[..., self.columns] = self.values
        return block

    def of_climbed(self, block: np.ndarray) -> np.ndarray:
        """The cold state of rows already taken from tier_x (a copy): saves taking them twice."""
        return self._cold(np.array(block))

    def __array__(self, dtype=None, copy=None):
        full = self._cold(self.tier_x.copy())
        return full if dtype is None else full.astype(dtype, copy=False)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if len(key) < self.ndim and not any(k is Ellipsis or k is None for k in key):
            return self._cold(self.tier_x[key])  # the feature axis is left whole
        return np.asarray(self)[key]


@dataclass(frozen=True)
class FeatureSet:
    """Features of a view. `tier_x` (N, L, F) and `prompt_x` (N, P) are finite float64 (tier_x
    float32 when compute_features was asked for it, to halve a large view's memory; consumers
    upcast the rows they use); `cold_x` (N, L, F) indexes like an array of tier_x's dtype
    (`ColdFeatures`: made from tier_x for the rows asked for, never stored whole)."""

    tier_x: np.ndarray
    cold_x: ColdFeatures
    prompt_x: np.ndarray
    names: list[str]
    prompt_names: list[str]
    groups: list[str]
    missing_groups: dict[str, str]  # group → why it is not (fully) available in this view
    spec: FeatureSpec
    imputed: dict[str, str] = field(default_factory=dict)  # feature → how it was filled throughout

    @property
    def cold_features(self) -> list[str]:
        """The features whose value differs between the climbed and the cold state."""
        return [n for n in self.names if n in COLD_FEATURES]

    def column(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ConfigError(f"no feature {name!r}; features are {self.names}") from None


def _check_groups(groups: Iterable[str]) -> None:
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ConfigError(f"unknown feature group {unknown[0]!r}; groups are {', '.join(GROUPS)}")


def available_groups(view: TraceView) -> dict[str, str | None]:
    """Per group: None when the view has what it needs, else the reason it has not."""
    text = view.has_text
    return {
        "logprob": None if view.has_logprobs else "no logprobs in trace",
        "entropy": None if view.has_entropy else "no token entropies in trace",
        "length": None,
        "format": None if text else "no output text in trace",
        "content": None if text else "no output text in trace",
        "agreement": None if text else "no output text in trace",
        "draft": None if view.has_drafts else "no drafts (consecutive tiers) in trace",
        "stage": None,
    }


def tiers_lacking(view: TraceView, group: str) -> list[str]:
    """Tiers of `view` with nothing for `group` (no request there has it) though the view as a
    whole has it: its features there are fill values for every request. Tier 0 is never said to
    lack drafts (it has none to verify)."""
    if available_groups(view)[group]:
        return []
    if group == "logprob":
        has = np.isfinite(view.mean_logprob).any(axis=0)
    elif group == "entropy":
        has = np.isfinite(view.mean_entropy).any(axis=0)
    elif group in ("format", "content", "agreement"):
        has = pd.notna(view.outputs).any(axis=0)
    elif group == "draft":
        has = np.isfinite(np.asarray(view.draft_n_tokens, dtype=np.float64)).any(axis=0)
        has[0] = True
    else:
        return []
    return [str(name) for name, h in zip(view.tier_names, has) if not h]


def parse_groups(groups: str | Iterable[str] | None) -> list[str] | None:
    """'logprob,agreement' or a list → group names (checked); None stays None (= all available)."""
    if groups is None:
        return None
    if isinstance(groups, str):
        groups = [g.strip() for g in groups.split(",") if g.strip()]
    groups = list(groups)
    if not groups:  # it fitted a policy on the stage features alone (AUROC 0.5) without a word
        raise ConfigError(f"no feature group named: name at least one of "
                          f"{', '.join(g for g in GROUPS if g not in ALWAYS)}")
    _check_groups(groups)
    return groups


_CHUNK_ROWS = 2_048  # requests interleaved into (N, L, F) per pass: the block stays in cache


def _interleave(columns, n, n_tiers, dtype) -> np.ndarray:
    """Stack (N, L) columns into (N, L, F) `dtype`, a block of requests at a time, straight
    into the output (6x faster than stacking bigger blocks and copying them in)."""
    out = np.empty((n, n_tiers, len(columns)), dtype=dtype)
    for lo in range(0, n, _CHUNK_ROWS):
        np.stack([c[lo:lo + _CHUNK_ROWS] for c in columns], axis=-1, out=out[lo:lo + _CHUNK_ROWS])
    return out


def compute_features(view: TraceView, groups: str | Iterable[str] | None = None, *, spec: FeatureSpec | None = None,
                     dtype=np.float64) -> FeatureSet:
    """Features of every (request, tier) of `view`.

    groups=None: every group the view supports (the others are listed in `missing_groups`);
    named groups: those plus `stage`, and a group the view cannot supply is a ConfigError.
    With `spec` (from a policy), its groups and task vocabulary are used as they are and a
    group the view lacks is computed from its fill values and listed in `missing_groups` —
    the caller decides whether that is acceptable. dtype: of tier_x/cold_x (float32 halves a
    large view's memory; features are computed in float64 and rounded once)."""
    if np.dtype(dtype) not in (np.float32, np.float64):  # an integer dtype truncated every feature
        raise ConfigError(f"features dtype {np.dtype(dtype).name}: use float32 or float64")
    availability = available_groups(view)
    if spec is not None:
        chosen = list(spec.groups)
        missing = {g: availability[g] for g in chosen if availability[g]}
        tasks = list(spec.tasks)
    else:
        requested = parse_groups(groups)
        if requested is None:
            chosen = [g for g in GROUPS if availability[g] is None]
        else:
            for g in requested:
                if availability[g]:
                    raise ConfigError(f"feature group {g!r} is not available: {availability[g]}")
            chosen = [g for g in GROUPS if g in requested or g in ALWAYS]
        missing = {g: availability[g] for g in GROUPS if availability[g] and g not in chosen}
        tasks = task_vocabulary(view.tasks)
    names = [n for g in GROUPS if g in chosen for n in FEATURE_GROUPS[g]]
    n, n_tiers = view.n_requests, view.n_tiers
    computed: dict[str, np.ndarray] = {}
    context = _Context(view)
    for group in chosen:
        # filled and in storage dtype as soon as a group is done: a float32 view never holds
        # every feature in float64 at once
        for name, values in _GROUP_FUNCTIONS[group](context).items():
            values = np.asarray(values, dtype=np.float64)
            computed[name] = np.where(np.isfinite(values), values, FEATURE_BY_NAME[name].fill).astype(dtype, copy=False)
    imputed = context.imputed
    columns = [computed.pop(name) for name in names]
    del computed
    # Interleaving whole columns into (N, L, F) one at a time is strided and several times
    # slower; a block of requests at a time is as fast as one np.stack without its full-size copy.
    tier_x = _interleave(columns, n, n_tiers, dtype)
    del columns
    cold = [(j, FEATURE_BY_NAME[name].cold) for j, name in enumerate(names) if FEATURE_BY_NAME[name].cold is not None]
    cold_x = ColdFeatures(tier_x, [j for j, _ in cold], [v for _, v in cold])
    prompt_x, prompt_names = prompt_features(view, tasks)
    spec = FeatureSpec(tuple(chosen), tuple(names), tuple(prompt_names), tuple(tasks))
    return FeatureSet(tier_x, cold_x, prompt_x, names, prompt_names, chosen, missing, spec, imputed)


# -- groups: each returns {name: (N, L) array}; NaN/inf become the feature's fill -----------


class _Context:
    """One compute_features call: the view, notes on imputation, and the answer parse and
    normalised texts that several groups share (computed once)."""

    def __init__(self, view: TraceView):
        self.view = view
        self.imputed: dict[str, str] = {}
        self._answers: _Answers | None = None
        self.normalised: dict[str, tuple[str, frozenset]] = {}

    @property
    def answers(self) -> "_Answers":
        if self._answers is None:
            self._answers = parse_answers(self.view)
        return self._answers

    def normalise(self, text: str) -> tuple[str, frozenset]:
        """Case-folded words without punctuation, joined and as a set (articles kept: the
        similarity only needs both sides treated alike). Tier i's text is tier i+1's
        `previous`, so each distinct text is done once."""
        found = self.normalised.get(text)
        if found is None:
            words = text.casefold().translate(PUNCTUATION_TO_SPACE).split()
            found = self.normalised[text] = (" ".join(words), frozenset(words))
        return found


def _logprob(context: _Context) -> dict:
    view, imputed = context.view, context.imputed
    lists = view.token_lists("token_logprobs")
    missing = ~np.isfinite(view.mean_logprob)
    out = {"logprob_mean": view.mean_logprob, "logprob_min": view.min_logprob, "logprob_missing": missing.astype(np.float64)}
    if lists.any:
        last = ragged_tail_mean(lists, LAST_TOKENS)
        out["logprob_last32"] = np.where(lists.present & (lists.length > 0), last, view.mean_logprob)
        for threshold, name in zip(LOW_LOGPROBS, ("logprob_below_1", "logprob_below_2_3")):
            out[name] = ragged_share_below(lists, threshold)
    else:
        out["logprob_last32"] = view.mean_logprob
        out["logprob_below_1"] = out["logprob_below_2_3"] = np.zeros(missing.shape)
        note = "no token_logprobs lists in trace"
        imputed.update({"logprob_last32": f"{note}: = logprob_mean", "logprob_below_1": f"{note}: 0", "logprob_below_2_3": f"{note}: 0"})
    return out


def _entropy(context: _Context) -> dict:
    view, imputed = context.view, context.imputed
    lists = view.token_lists("token_entropy")
    missing = ~np.isfinite(view.mean_entropy)
    out = {"entropy_mean": view.mean_entropy, "entropy_missing": missing.astype(np.float64)}
    if lists.any:
        out["entropy_max"] = np.where(lists.present & (lists.length > 0), ragged_max(lists), view.mean_entropy)
    else:
        out["entropy_max"] = view.mean_entropy
        imputed["entropy_max"] = "no token_entropy lists in trace: = entropy_mean"
    return out


def _length(context: _Context) -> dict:
    view = context.view
    chars = prompt_chars(view.prompts)
    prompt_estimate = np.log1p(chars / 4.0)[:, None]
    limit = view.max_tokens[None, :]
    with np.errstate(invalid="ignore"):
        hit = np.where(np.isfinite(limit) & np.isfinite(view.n_output_tokens), view.n_output_tokens >= limit, False)
    return {
        "log_output_tokens": np.log1p(np.maximum(view.n_output_tokens, 0.0)),
        "log_prompt_tokens": np.where(
            np.isfinite(view.n_prompt_tokens), np.log1p(np.maximum(view.n_prompt_tokens, 0.0)), prompt_estimate
        ),
        "hit_token_limit": hit.astype(np.float64),
        "output_missing": (~view.has_output).astype(np.float64),
    }


@dataclass
class _Answers:
    """Per (request, tier): the parsed answer's code (-1 none), kind flags, and the texts."""

    codes: np.ndarray
    kind: np.ndarray
    from_json: np.ndarray
    marked: np.ndarray


def parse_answers(view: TraceView) -> _Answers:
    """Parse every output once; answer keys become integer codes so agreement is numpy."""
    texts = view.outputs.ravel()
    parsed = [extract_answer(t) for t in texts]
    keys = np.array([a.key for a in parsed], dtype=object)
    codes, _ = pd.factorize(keys, use_na_sentinel=True)
    shape = view.outputs.shape
    return _Answers(
        codes=codes.reshape(shape).astype(np.int64),
        kind=np.array([a.kind for a in parsed], dtype=np.int64).reshape(shape),
        from_json=np.array([a.from_json for a in parsed], dtype=bool).reshape(shape),
        marked=np.array([a.marked for a in parsed], dtype=bool).reshape(shape),
    )


def _format(context: _Context) -> dict:
    view = context.view
    a = context.answers
    empty = np.array([t is None or not t.strip() for t in view.outputs.ravel()], dtype=bool).reshape(view.outputs.shape)
    return {
        "output_empty": empty.astype(np.float64),
        "answer_number": (a.kind == KIND_NUMBER).astype(np.float64),
        "answer_option": (a.kind == KIND_OPTION).astype(np.float64),
        "answer_json": a.from_json.astype(np.float64),
        "answer_marked": a.marked.astype(np.float64),
    }


def _content(context: _Context) -> dict:
    texts = context.view.outputs
    rate = np.zeros(texts.size)
    by_text: dict[str, float] = {}  # each distinct text counted once
    for k, text in enumerate(texts.ravel()):
        if text:
            found = by_text.get(text)
            if found is None:
                words, _ = context.normalise(text)  # shared with the agreement group's similarity
                found = by_text[text] = 100.0 * len(_HEDGE.findall(words)) / (words.count(" ") + 1) if words else 0.0
            rate[k] = found
    return {"hedge_rate": rate.reshape(texts.shape)}


def _agreement(context: _Context) -> dict:
    view = context.view
    a = context.answers
    codes = a.codes
    n, n_tiers = codes.shape
    answered = codes >= 0
    prev_answered = np.zeros((n, n_tiers))
    agree_prev = np.zeros((n, n_tiers))
    count = np.zeros((n, n_tiers))
    n_earlier = np.zeros((n, n_tiers))
    similarity = np.zeros((n, n_tiers))
    contains = np.zeros((n, n_tiers))
    for i in range(1, n_tiers):
        prev_answered[:, i] = answered[:, i - 1]
        agree_prev[:, i] = answered[:, i] & (codes[:, i] == codes[:, i - 1])
        same = answered[:, :i] & (codes[:, :i] == codes[:, i : i + 1]) & answered[:, i : i + 1]
        count[:, i] = same.sum(axis=1)
        n_earlier[:, i] = answered[:, :i].sum(axis=1)
        similarity[:, i], contains[:, i] = _text_pairs(view.outputs[:, i], view.outputs[:, i - 1], context.normalise)
    return {
        "prev_answered": prev_answered,
        "agree_prev": agree_prev,
        "agree_any_prev": (count > 0).astype(np.float64),
        "agree_count_prev": count,
        "agree_share_prev": np.divide(count, n_earlier, out=np.zeros_like(count), where=n_earlier > 0),
        "similarity_prev": similarity,
        "contains_prev": contains,
    }


def _text_pairs(texts: np.ndarray, previous: np.ndarray, normalise) -> tuple[np.ndarray, np.ndarray]:
    """Word-set Jaccard and whole-word containment of two columns of texts (0 where either
    is missing); identical texts are 1/1 without being tokenised."""
    sim = np.zeros(len(texts))
    contains = np.zeros(len(texts))
    for r, (a, b) in enumerate(zip(texts, previous)):
        if not a or not b:
            continue
        if a == b:
            sim[r] = contains[r] = 1.0
            continue
        (na, wa), (nb, wb) = normalise(a), normalise(b)
        if not na or not nb:
            continue
        sim[r] = jaccard(wa, wb)
        short, long = (na, nb) if len(na) <= len(nb) else (nb, na)
        contains[r] = float(f" {short} " in f" {long} ")
    return sim, contains


def _draft(context: _Context) -> dict:
    view, imputed = context.view, context.imputed
    present = np.isfinite(view.draft_n_tokens) | np.isfinite(view.draft_n_accepted)
    share = np.divide(
        view.draft_n_accepted, view.draft_n_tokens,
        out=np.zeros(view.draft_n_tokens.shape), where=np.isfinite(view.draft_n_tokens) & (view.draft_n_tokens > 0),
    )
    lists = view.token_lists("verifier_logprobs")
    if lists.any:
        mean, low = ragged_mean(lists), ragged_min(lists)
    else:
        mean = low = np.zeros(present.shape)
        imputed.update({"draft_verifier_mean_logprob": "no verifier_logprobs in trace: 0",
                        "draft_verifier_min_logprob": "no verifier_logprobs in trace: 0"})
    return {
        "draft_present": present.astype(np.float64),
        "draft_accept_share": np.clip(share, 0.0, 1.0),
        "draft_verifier_mean_logprob": mean,
        "draft_verifier_min_logprob": low,
    }


def _stage(context: _Context) -> dict:
    view = context.view
    shape = (view.n_requests, view.n_tiers)
    return {"tier_index": np.broadcast_to(np.arange(view.n_tiers, dtype=np.float64), shape), "cold_start": np.zeros(shape)}


_GROUP_FUNCTIONS = {
    "logprob": _logprob, "entropy": _entropy, "length": _length, "format": _format, "content": _content,
    "agreement": _agreement, "draft": _draft, "stage": _stage,
}


# -- prompt-only features (stage 0) ---------------------------------------------------------


def task_vocabulary(tasks: np.ndarray, limit: int = MAX_TASKS) -> list[str]:
    """The tasks seen at least twice, most frequent first (ties by name), at most `limit`; then
    sorted. A task of one request is that request's id in another name: its one-hot column let
    the full fit memorise it where no out-of-fold fit could, and on a ladder of a task per request
    calibration failed its own p̂ consistency check."""
    counts = pd.Series(tasks, dtype=object).value_counts(dropna=True)
    counts = counts[np.array([isinstance(t, str) for t in counts.index], dtype=bool) & (counts.to_numpy() >= 2)]
    if counts.empty:
        return []
    counts = counts.sort_index().sort_values(ascending=False, kind="stable")
    return sorted(counts.index[:limit].tolist())


def prompt_features(view: TraceView, tasks: list[str]) -> tuple[np.ndarray, list[str]]:
    """(N, P) prompt-only features and their names; a task outside `tasks` is all-zero."""
    names = list(PROMPT_FEATURES) + [TASK_PREFIX + t for t in tasks]
    n = view.n_requests
    x = np.zeros((n, len(names)), dtype=np.float64)
    # The prompt's length in tokens as stage 0 knows it: from its characters, as the live runner
    # has it before any tier ran. Tier 0's recorded count (its chat template's tokens) is used
    # only where no prompt text was recorded: it made stage 0 learn, and replay, a value the
    # deployed decision never sees (the built-in trace's starts differed on 380 of 600 requests).
    tokens0 = view.n_prompt_tokens[:, 0] if view.n_tiers else np.full(n, np.nan)
    known = np.isfinite(tokens0) & (tokens0 >= 0)
    x[:, 0] = 1.0
    x[known, 3] = np.log1p(tokens0[known])
    for r in np.flatnonzero(pd.notna(view.prompts)):
        prompt = view.prompts[r]
        chars = len(prompt)
        x[r, 0] = 0.0
        x[r, 1] = np.log1p(chars)
        x[r, 2] = np.log1p(len(prompt.split()))
        x[r, 3] = np.log1p(chars / 4.0)
        x[r, 4] = sum(map(prompt.count, _DIGITS)) / chars if chars else 0.0
        x[r, 5] = np.log1p(prompt.count("?"))
        x[r, 6] = float(len(_OPTION_LINE.findall(prompt)) >= 2)
        x[r, 7] = float(any(m in prompt for m in _CODE_MARKERS))
        x[r, 8] = float(any(m in prompt for m in _MATH_MARKERS) or _MATH.search(prompt) is not None)
    if tasks:
        codes = pd.Index(tasks, dtype=object).get_indexer(view.tasks)  # -1: unknown or none
        known_task = np.flatnonzero(codes >= 0)
        x[known_task, len(PROMPT_FEATURES) + codes[known_task]] = 1.0
    return x, names


def prompt_chars(prompts: np.ndarray) -> np.ndarray:
    """Characters per prompt, NaN where not recorded."""
    return pd.Series(prompts, dtype=object).str.len().to_numpy(dtype=np.float64, na_value=np.nan)


# -- ragged reductions over TokenLists (vectorised with ufunc.reduceat) ----------------------


def _segment_reduce(values: np.ndarray, begin: np.ndarray, end: np.ndarray, ufunc) -> np.ndarray:
    """`ufunc` over values[begin:end] per cell (NaN where empty), each cell from its own
    values only — so a cell's result never depends on another cell's (a cumulative sum would
    let rounding leak between cells). Bounds go to `reduceat` interleaved, sorted by begin;
    the segments between cells are computed and dropped."""
    out = np.full(begin.shape, np.nan)
    cells = np.flatnonzero((end > begin).ravel())
    if cells.size == 0:
        return out
    b, e = begin.ravel()[cells], end.ravel()[cells]
    order = np.argsort(b, kind="stable")
    bounds = np.empty(2 * cells.size, dtype=np.int64)
    bounds[0::2], bounds[1::2] = b[order], e[order]
    padded = np.append(values.astype(np.float64), 0.0)  # an end bound may equal len(values)
    out.ravel()[cells[order]] = ufunc.reduceat(padded, bounds)[0::2]
    return out


def _end(lists: TokenLists) -> np.ndarray:
    return lists.start + lists.length


def ragged_mean(lists: TokenLists) -> np.ndarray:
    """Per cell mean; NaN where the list is missing or empty."""
    return _segment_reduce(lists.values, lists.start, _end(lists), np.add) / np.maximum(lists.length, 1)


def ragged_tail_mean(lists: TokenLists, last: int) -> np.ndarray:
    """Per cell mean of the last `last` values; NaN where missing or empty."""
    end = _end(lists)
    begin = np.maximum(lists.start, end - last)
    return _segment_reduce(lists.values, begin, end, np.add) / np.maximum(end - begin, 1)


def ragged_share_below(lists: TokenLists, threshold: float) -> np.ndarray:
    """Per cell share of values < threshold; NaN where missing or empty."""
    below = (lists.values < threshold).astype(np.float64)
    return _segment_reduce(below, lists.start, _end(lists), np.add) / np.maximum(lists.length, 1)


def ragged_max(lists: TokenLists) -> np.ndarray:
    return _segment_reduce(lists.values, lists.start, _end(lists), np.maximum)


def ragged_min(lists: TokenLists) -> np.ndarray:
    return _segment_reduce(lists.values, lists.start, _end(lists), np.minimum)


__all__ = [
    "COLD_FEATURES", "FEATURES", "FEATURE_GROUPS", "GROUPS", "PROMPT_FEATURES", "ColdFeatures", "Feature", "FeatureSet",
    "FeatureSpec", "available_groups", "compute_features", "parse_answers", "parse_groups", "prompt_features",
    "ragged_max", "ragged_mean", "ragged_min", "ragged_share_below", "ragged_tail_mean", "task_vocabulary",
]
