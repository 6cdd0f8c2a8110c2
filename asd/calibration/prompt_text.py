"""What the prompt's words say about each tier's chance: a TF-IDF bag of words and word pairs,
and per tier a logistic regression on it (scikit-learn), as text routers such as RouteLLM's
read a prompt. Its logits join the prompt-only features of stage 0 (the start tier and the
routed start), where the hand-made prompt features (length, digits, options, code, math, task)
see only the prompt's shape.

Fitted on the calibration rows alone. The calibration rows get out-of-fold logits (fold k
scored by a model fitted on the other folds, the folds of `group_folds`), so the stage-0
predictors downstream learn how far to trust the score on rows it was not fitted on. Every
other prompt (held-out rows, a live request) is scored by the mean of those K models — for a
linear model, one with their mean coefficients — so it meets models of the kind the
out-of-fold logits came from, and no K+1-th fit is needed. (A refit on every calibration row
instead: GPU cost at 1-3% loss 0.901 against 0.890 on MMLU-Pro Llama-2, 0.551 against 0.554 on
phi-2 -> Llama-2-chat, fold seeds 0-2.)

The fitted model travels in a policy's meta as plain lists (`to_dict`): vocabulary, idf,
coefficients and intercepts, and `logits` recomputes the same numbers with a CountVectorizer on
that vocabulary, so a saved policy does not depend on pickled scikit-learn objects.

`PromptTokens` counts every word and word pair of a set of prompts once. The simulator fits a
text model per fold on overlapping calibration rows and scores every held-out row several times;
counting a bundle's prompts once and taking each fold's rows from the counts gives the same
vocabulary, matrix and logits, to the bit, as counting each fold's prompts again (tokenising was
10 of the 12 seconds the text model added to `asd sweep` on a 12,000-request ladder).
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from functools import cached_property
from typing import Mapping

import numpy as np

from asd.errors import ConfigError

# scikit-learn and scipy.sparse are imported where used: the simulator and the live runner import
# this module, and a policy without a text model never needs them.

TEXT_VERSION = 1
NGRAM_RANGE = (1, 2)
MAX_TERMS = 20000  # caps the policy file (vocabulary and weights live in its JSON header)
MIN_REQUESTS = 50  # fewer calibration prompts than this: no text model (nothing to learn from)
C = 1.0  # inverse L2 strength: the best of 0.3/1/3 for tier-wise out-of-fold AUROC on MMLU-Pro and AlpacaEval
MAX_ITER = 2000
WEIGHT_DIGITS = 6  # significant digits kept in the JSON header


def _min_df(n: int) -> int:
    return 2 if n < 2000 else 3  # a term in one prompt only says nothing about the next


# One tokenisation for counting (`PromptTokens`, whose TF-IDF is TfidfVectorizer's) and scoring
# (CountVectorizer on the kept vocabulary): lowercase words of two or more characters, and their pairs.
_TOKENS = dict(ngram_range=NGRAM_RANGE, lowercase=True, dtype=np.float64)


def _vectorizer(**kwargs):
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(**_TOKENS, **kwargs)


def _texts(prompts) -> list[str]:
    return [p if isinstance(p, str) else "" for p in prompts]


def _tfidf(counts, idf: np.ndarray):
    """sublinear tf × idf, rows L2-normalised (TfidfVectorizer(sublinear_tf=True)'s transform)."""
    from scipy import sparse

    x = counts.tocsr(copy=True)
    x.sort_indices()  # a row's norm sums its terms in one order, however its counts were made
    np.log(x.data, out=x.data)
    x.data += 1.0
    x = x @ sparse.diags(idf)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    norms[norms == 0.0] = 1.0
    return sparse.diags(1.0 / norms) @ x


@dataclass(frozen=True)
class PromptTokens:
    """Each prompt's count of every word and word pair (`_TOKENS`), no term dropped: `counts`
    (n, T) CSR float64, `terms` (T,) in sorted order — a CountVectorizer fitted on these prompts.
    `take(rows)` is the count of a subset, so a bundle is tokenised once for every fold."""

    counts: object  # scipy.sparse CSR
    terms: np.ndarray

    @classmethod
    def of(cls, prompts) -> "PromptTokens":
        from scipy import sparse

        texts = _texts(prompts)
        counter = _vectorizer()
        try:
            counts = counter.fit_transform(texts).tocsr()
        except ValueError:  # no prompt has a word: nothing to count
            return cls(sparse.csr_matrix((len(texts), 0), dtype=np.float64), np.array([], dtype=object))
        # CountVectorizer orders a row's terms by their first use in the whole corpus; sorted, a
        # prompt's row (and so its TF-IDF to the last bit) is the same whatever prompts came with it
        counts.sort_indices()
        return cls(counts, counter.get_feature_names_out())

    def __len__(self) -> int:
        return self.counts.shape[0]

    def take(self, rows) -> "PromptTokens":
        """The counts of these prompts (row indices, or a boolean mask over every prompt)."""
        rows = np.asarray(rows)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64, copy=False)
        return PromptTokens(self.counts[rows], self.terms)

    def counts_of(self, vocabulary) -> object:
        """(n, len(vocabulary)) counts of these terms, in that order (0 for a term these prompts
        never use): what a CountVectorizer with that vocabulary counts."""
        from scipy import sparse

        vocabulary = np.asarray(vocabulary, dtype=object)
        at = np.searchsorted(self.terms, vocabulary) if self.terms.size else np.zeros(vocabulary.size, dtype=np.int64)
        found = np.flatnonzero(at < self.terms.size)
        found = found[self.terms[at[found]] == vocabulary[found]]
        pick = sparse.csr_matrix((np.ones(found.size), (at[found], found)), shape=(self.terms.size, vocabulary.size))
        return (self.counts @ pick).tocsr()  # `_tfidf` sorts each row's terms before it sums them

    def tfidf(self, min_df: int, max_terms: int):
        """(TF-IDF matrix, vocabulary, idf) as `TfidfVectorizer(**_TOKENS, sublinear_tf=True,
        min_df=min_df, max_features=max_terms).fit_transform` gives on these prompts: the same
        pruning, the same terms in the same order, scikit-learn's own transformer; a row's entries
        sorted by term, so its norm may differ from TfidfVectorizer's in the last bit. None when
        no term is in min_df prompts."""
        from sklearn.feature_extraction.text import TfidfTransformer

        counts = self.counts
        df = np.bincount(counts.indices, minlength=counts.shape[1])
        keep = df >= max(min_df, 1)  # terms these prompts never use are not in their vocabulary
        if keep.sum() > max_terms:  # the most frequent terms, ranked as CountVectorizer ranks them
            frequency = np.asarray(counts.sum(axis=0)).ravel()
            most = np.zeros_like(keep)
            most[np.flatnonzero(keep)[(-frequency[keep]).argsort()[:max_terms]]] = True
            keep = most
        columns = np.flatnonzero(keep)
        if columns.size == 0:
            return None
        transformer = TfidfTransformer(sublinear_tf=True)
        kept = counts[:, columns].tocsr()
        kept.sort_indices()
        x = transformer.fit_transform(kept).tocsr()
        return x, tuple(self.terms[columns]), transformer.idf_.astype(np.float64)


@dataclass(frozen=True)
class PromptTextModel:
    """Per tier, logit P(acceptable) from the prompt's words. `tiers` is the number of columns."""

    vocabulary: tuple[str, ...]
    idf: np.ndarray  # (V,)
    coef: np.ndarray  # (tiers, V)
    intercept: np.ndarray  # (tiers,)

    @property
    def tiers(self) -> int:
        return int(self.intercept.size)

    @cached_property
    def _counter(self):  # built once: a live request scores one prompt at a time
        return _vectorizer(vocabulary={t: j for j, t in enumerate(self.vocabulary)})

    def logits(self, prompts, tokens: "PromptTokens | None" = None) -> np.ndarray:
        """(n, tiers) float64; a missing prompt scores as an empty one (the intercepts).
        tokens: these prompts already counted (`PromptTokens`, row for row); prompts is then unused."""
        if tokens is not None:
            counts = tokens.counts_of(self.vocabulary)
        else:
            texts = _texts(prompts)
            if not texts:
                return np.zeros((0, self.tiers))
            counts = self._counter.transform(texts)
        return np.asarray(_tfidf(counts, self.idf) @ self.coef.T) + self.intercept

    def to_dict(self) -> dict:
        rounded = lambda a: [float(f"{v:.{WEIGHT_DIGITS}g}") for v in np.ravel(a)]  # noqa: E731
        return {"version": TEXT_VERSION, "ngram_range": list(NGRAM_RANGE), "vocabulary": list(self.vocabulary),
                "idf": rounded(self.idf), "coef": [rounded(row) for row in self.coef],
                "intercept": rounded(self.intercept)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "PromptTextModel":
        if not isinstance(data, Mapping) or data.get("version") != TEXT_VERSION:
            raise ConfigError(f"prompt text model: expected a dict with version {TEXT_VERSION}, got {data!r:.80}")
        try:
            if tuple(data["ngram_range"]) != NGRAM_RANGE:
                raise ConfigError(f"prompt text model: ngram_range {data['ngram_range']} is not this asd's {list(NGRAM_RANGE)}")
            vocabulary = tuple(str(t) for t in data["vocabulary"])
            idf = np.asarray(data["idf"], dtype=np.float64)
            coef = np.asarray(data["coef"], dtype=np.float64).reshape(-1, len(vocabulary))
            intercept = np.asarray(data["intercept"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"prompt text model: missing or malformed field ({exc})") from None
        if idf.shape != (len(vocabulary),) or coef.shape[0] != intercept.size:
            raise ConfigError("prompt text model: vocabulary, idf, coef and intercept sizes disagree")
        return cls(vocabulary, idf, coef, intercept)


def _fit_logits(x_fit, y, x_score) -> tuple[np.ndarray, float, np.ndarray]:
    """A logistic regression of the labels y (NaN: unlabelled, skipped; soft labels as expected
    log-loss) on x_fit: (coef, intercept, logits of x_score). One class only: its rate's logit."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from asd.calibration.predictors import _design

    known = np.isfinite(y)
    rows, target, weight = _design(y[known])
    x_known = x_fit[np.flatnonzero(known)]
    classes = np.unique(target if weight is None else target[weight > 0])
    if classes.size < 2:
        rate = float(np.clip(np.mean(y[known]) if known.any() else 0.5, 1e-6, 1 - 1e-6))
        logit = float(np.log(rate / (1 - rate)))
        return np.zeros(x_fit.shape[1]), logit, np.full(x_score.shape[0], logit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # liblinear: 5-10x faster than lbfgs on the sparse TF-IDF of 10k prompts, the same held-out AUROC
        model = LogisticRegression(C=C, solver="liblinear", max_iter=MAX_ITER, random_state=0).fit(
            x_known[rows], target, sample_weight=weight)
    scores = model.decision_function(x_score) if x_score.shape[0] else np.zeros(0)
    return model.coef_[0].astype(np.float64), float(model.intercept_[0]), scores


def fit_prompt_text(prompts, y, folds: int, seed: int,
                    tokens: PromptTokens | None = None) -> tuple[PromptTextModel | None, np.ndarray | None]:
    """(model, out-of-fold logits (n, tiers)) from n calibration prompts and their labels y
    (n, tiers); (None, None) when there are too few prompts with text or no word recurs.
    tokens: these prompts already counted (`PromptTokens`, row for row)."""
    from asd.calibration.predictors import group_folds

    texts = _texts(prompts)
    y = np.asarray(y, dtype=np.float64)
    n = len(texts)
    if sum(1 for t in texts if t.strip()) < max(MIN_REQUESTS, folds):
        return None, None
    if tokens is None:
        tokens = PromptTokens.of(texts)
    elif len(tokens) != n:
        raise ValueError(f"fit_prompt_text: {len(tokens)} counted prompts for {n} prompts")
    fitted = tokens.tfidf(_min_df(n), MAX_TERMS)
    if fitted is None:  # no term reaches min_df: nothing to learn
        return None, None
    x, vocabulary, idf = fitted
    fold = group_folds(np.arange(n), folds, seed)
    oof = np.empty((n, y.shape[1]))
    coef = np.zeros((y.shape[1], len(vocabulary)))
    intercept = np.zeros(y.shape[1])
    for s in range(y.shape[1]):
        for k in range(folds):
            train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
            # the vocabulary and idf are label-free; fitting them on every calibration prompt leaks no label
            w, b, oof[test, s] = _fit_logits(x[train], y[train, s], x[test])
            coef[s] += w / folds
            intercept[s] += b / folds
    return PromptTextModel(vocabulary, idf, coef, intercept), oof


_OF_POLICY: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def policy_prompt_text(policy) -> PromptTextModel | None:
    """The text model a policy's stage 0 reads (meta["prompt_text"], parsed once per policy);
    None for a policy calibrated without one."""
    try:
        return _OF_POLICY[policy]
    except KeyError:
        pass
    data = (getattr(policy, "meta", None) or {}).get("prompt_text")
    model = None if data is None else PromptTextModel.from_dict(data)
    _OF_POLICY[policy] = model
    return model


def attach_prompt_text(policy, model: PromptTextModel | None) -> None:
    """Let `policy_prompt_text` return the fitted model itself (saves parsing its meta again)."""
    _OF_POLICY[policy] = model


def with_prompt_text(prompt_x, prompts, model: PromptTextModel | None,
                     tokens: PromptTokens | None = None) -> np.ndarray:
    """Stage 0's input: the prompt features (n, P), then the text model's logits (n, tiers).
    tokens: the prompts already counted (`PromptTokens`, row for row)."""
    if model is None:
        return prompt_x
    return np.hstack([np.asarray(prompt_x, dtype=np.float64), model.logits(prompts, tokens)])


__all__ = ["PromptTextModel", "PromptTokens", "attach_prompt_text", "fit_prompt_text", "policy_prompt_text",
           "with_prompt_text"]
