"""The stage-0 prompt text model: its logits are scikit-learn's TF-IDF and logistic regression
recomputed from plain lists, it survives a policy file, its out-of-fold logits never saw their
own row's label, and it learns what the words say."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import roc_auc_score

from asd.calibration.prompt_text import (
    MIN_REQUESTS, NGRAM_RANGE, PromptTextModel, PromptTokens, _tfidf, _vectorizer, fit_prompt_text,
    policy_prompt_text, with_prompt_text,
)
from asd.errors import ConfigError

WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa"]


def _prompts(rng, n, words=WORDS, length=(3, 12)):
    return [" ".join(rng.choice(words, rng.integers(*length))) for _ in range(n)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.sampled_from(WORDS), min_size=0, max_size=15).map(" ".join), min_size=2, max_size=30))
def test_tfidf_from_plain_lists_equals_scikit_learns_transform(texts):
    if not any(t.strip() for t in texts):
        return
    fitted = TfidfVectorizer(ngram_range=NGRAM_RANGE, sublinear_tf=True, dtype=np.float64).fit(texts)
    vocabulary = {t: j for j, t in enumerate(fitted.get_feature_names_out())}
    ours = _tfidf(_vectorizer(vocabulary=vocabulary).transform(texts), fitted.idf_)
    np.testing.assert_allclose(ours.toarray(), fitted.transform(texts).toarray(), rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(WORDS), min_size=0, max_size=15).map(" ".join), min_size=2, max_size=30),
       st.integers(1, 3), st.integers(1, 40))
def test_counted_prompts_give_scikit_learns_tfidf_vocabulary_and_idf(texts, min_df, max_terms):
    """PromptTokens.tfidf prunes and weighs as TfidfVectorizer(min_df, max_features) does: the
    same terms in the same order (the most frequent ones where max_features binds), the same idf
    to the bit, the same matrix up to the order a row's norm is summed in."""
    try:
        reference = TfidfVectorizer(ngram_range=NGRAM_RANGE, sublinear_tf=True, dtype=np.float64, min_df=min_df,
                                    max_features=max_terms)
        expected = reference.fit_transform(texts)
    except ValueError:  # no term left: PromptTokens says so with None
        assert PromptTokens.of(texts).tfidf(min_df, max_terms) is None
        return
    x, vocabulary, idf = PromptTokens.of(texts).tfidf(min_df, max_terms)
    assert vocabulary == tuple(reference.get_feature_names_out())
    np.testing.assert_array_equal(idf, reference.idf_)
    np.testing.assert_allclose(x.toarray(), expected.toarray(), rtol=1e-14, atol=1e-15)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_counting_a_bundle_once_fits_and_scores_every_subset_to_the_bit(seed):
    """The simulator counts a bundle's prompts once and hands each fold its rows: the text model,
    its out-of-fold logits and every score are those of counting the fold's prompts alone."""
    rng = np.random.default_rng(seed)
    prompts = _prompts(rng, 160, words=WORDS + [f"rare{i}" for i in range(40)]) + [None, ""]
    y = (rng.random((len(prompts), 2)) < 0.4).astype(float)
    every = PromptTokens.of(prompts)
    rows = np.sort(rng.choice(len(prompts), 90, replace=False))
    others = np.setdiff1d(np.arange(len(prompts)), rows)
    alone = fit_prompt_text([prompts[r] for r in rows], y[rows], folds=5, seed=1)
    taken = fit_prompt_text([prompts[r] for r in rows], y[rows], folds=5, seed=1, tokens=every.take(rows))
    model = alone[0]
    assert model.vocabulary == taken[0].vocabulary
    for field in ("idf", "coef", "intercept"):
        np.testing.assert_array_equal(getattr(taken[0], field), getattr(model, field))
    np.testing.assert_array_equal(taken[1], alone[1])
    # scoring other prompts from the counts (terms they never use included) = from their text
    held = [prompts[r] for r in others]
    np.testing.assert_array_equal(model.logits(None, every.take(others)), model.logits(held))
    mask = np.zeros(len(prompts), dtype=bool)
    mask[others] = True
    assert (every.take(mask).counts != every.take(others).counts).nnz == 0
    only_one = PromptTokens.of(["alpha beta"])  # most of the vocabulary absent from these counts
    np.testing.assert_array_equal(model.logits(None, only_one), model.logits(["alpha beta"]))
    x = np.zeros((others.size, 1))
    np.testing.assert_array_equal(with_prompt_text(x, held, model, every.take(others)), with_prompt_text(x, held, model))


def test_prompts_without_a_word_count_to_nothing():
    empty = PromptTokens.of([None, "", "   "])
    assert len(empty) == 3 and empty.terms.size == 0 and empty.tfidf(1, 10) is None
    assert empty.counts_of(["alpha", "beta gamma"]).shape == (3, 2)
    assert empty.counts_of(["alpha", "beta gamma"]).nnz == 0
    with pytest.raises(ValueError, match="counted prompts"):
        fit_prompt_text(_prompts(np.random.default_rng(0), 60), np.ones((60, 2)), folds=5, seed=0,
                        tokens=PromptTokens.of(["alpha"]))


def test_it_learns_what_the_words_say_out_of_fold():
    rng = np.random.default_rng(0)
    prompts = _prompts(rng, 400)
    hard = np.array(["kappa" in p or "theta iota" in p for p in prompts])
    y = np.column_stack([np.where(hard, 0.0, 1.0), np.ones(len(prompts))])
    flip = rng.random(len(prompts)) < 0.1  # label noise
    y[flip, 0] = 1.0 - y[flip, 0]
    model, oof = fit_prompt_text(prompts, y, folds=5, seed=0)
    assert oof.shape == (400, 2) and model.tiers == 2
    assert roc_auc_score(y[:, 0], oof[:, 0]) > 0.8
    assert np.ptp(oof[:, 1]) < 1e-6  # one class only: a constant, its rate's logit (clipped)
    full = model.logits(prompts)
    assert roc_auc_score(~hard, full[:, 0]) > 0.9


def test_out_of_fold_logits_never_saw_their_own_label():
    rng = np.random.default_rng(1)
    prompts = _prompts(rng, 200)
    y = (rng.random((200, 2)) < 0.5).astype(float)
    _, oof = fit_prompt_text(prompts, y, folds=5, seed=3)
    for r in (0, 57, 199):
        flipped = y.copy()
        flipped[r] = 1.0 - flipped[r]
        _, again = fit_prompt_text(prompts, flipped, folds=5, seed=3)
        np.testing.assert_array_equal(again[r], oof[r])
        assert not np.array_equal(again, oof)  # other folds' models did see it


def test_the_model_survives_json_and_scores_missing_prompts_at_its_intercepts():
    rng = np.random.default_rng(2)
    prompts = _prompts(rng, 120)
    y = np.column_stack([[float("alpha" in p) for p in prompts], rng.random(120) < 0.3]).astype(float)
    y[5, 0] = np.nan  # unlabelled rows are skipped, soft labels are fitted as expected log-loss
    y[6, 1] = 0.4
    model, _ = fit_prompt_text(prompts, y, folds=5, seed=0)
    again = PromptTextModel.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_allclose(again.logits(prompts), model.logits(prompts), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.logits([None, "", "words never seen"]), np.tile(model.intercept, (3, 1)))
    assert model.logits([]).shape == (0, 2)
    x = np.ones((3, 4))
    np.testing.assert_array_equal(with_prompt_text(x, ["a", "b", "c"], None), x)
    assert with_prompt_text(x, prompts[:3], model).shape == (3, 6)


def test_too_few_prompts_or_no_recurring_word_gives_no_model():
    rng = np.random.default_rng(3)
    few = _prompts(rng, MIN_REQUESTS - 1)
    assert fit_prompt_text(few, np.ones((len(few), 2)), folds=5, seed=0) == (None, None)
    unique = [f"w{i}x" for i in range(200)]  # no term in two prompts
    assert fit_prompt_text(unique, np.ones((200, 2)), folds=5, seed=0) == (None, None)
    missing = [None] * 200
    assert fit_prompt_text(missing, np.ones((200, 2)), folds=5, seed=0) == (None, None)


@pytest.mark.parametrize("bad", [None, {}, {"version": 99}, {"version": 1, "ngram_range": [1, 3]},
                                 {"version": 1, "ngram_range": [1, 2], "vocabulary": ["a"], "idf": [1.0, 2.0],
                                  "coef": [[0.1]], "intercept": [0.0]}])
def test_a_malformed_model_is_one_clear_error(bad):
    with pytest.raises(ConfigError, match="prompt text model"):
        PromptTextModel.from_dict(bad)


def test_calibrate_gives_stage0_the_text_logits_fitted_on_its_rows_alone(tmp_path):
    import dataclasses

    from asd.calibration import load_view
    from asd.calibration.calibrate import calibrate
    from asd.engine import Policy

    view = load_view("builtin")
    rows = np.arange(0, view.n_requests, 2)
    c = calibrate(view, rows=rows, seed=0, single_feature_report=False)
    assert c.prompt_text is not None and "prompt_text" in c.policy.meta
    # the report: its terms, and its out-of-fold AUROC per tier as every stage's (the mean over folds)
    from asd.calibration.metrics import auroc
    from asd.calibration.predictors import group_folds

    text_oof = c.prompt_x[:, c.features.prompt_x.shape[1]:]
    fold = group_folds(np.arange(rows.size), 5, 0)
    assert c.report["prompt_text"]["terms"] == len(c.prompt_text.vocabulary)
    assert c.report["prompt_text"]["auroc"] == [auroc(view.acceptable[rows, s], text_oof[:, s], fold)
                                                for s in range(view.n_tiers)]
    assert all(0.5 < a < 1.0 for a in c.report["prompt_text"]["auroc"])  # the built-in prompts' words tell
    assert c.prompt_x.shape == (rows.size, c.features.prompt_x.shape[1] + view.n_tiers)
    np.testing.assert_array_equal(c.prompt_x[:, :c.features.prompt_x.shape[1]], c.features.prompt_x[rows])
    # labels of the rows left out change nothing about the fitted text model
    scrambled = view.acceptable.copy()
    others = np.setdiff1d(np.arange(view.n_requests), rows)
    scrambled[others] = 1.0 - scrambled[others]
    c2 = calibrate(dataclasses.replace(view, acceptable=scrambled), rows=rows, seed=0, single_feature_report=False)
    np.testing.assert_array_equal(c2.prompt_text.logits(view.prompts), c.prompt_text.logits(view.prompts))
    # the saved policy carries it: stage 0's decisions on new prompts are the same after loading
    path = tmp_path / "p.npz"
    c.policy.save(path)
    loaded = Policy.load(path)
    x_new = with_prompt_text(c.features.prompt_x[others], view.prompts[others], policy_prompt_text(loaded))
    x_fit = with_prompt_text(c.features.prompt_x[others], view.prompts[others], c.prompt_text)
    np.testing.assert_allclose(x_new, x_fit, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(loaded.prompt_bins(x_new), c.policy.prompt_bins(x_fit))
    # without it, stage 0 reads the prompt features alone
    plain = calibrate(view, rows=rows, seed=0, single_feature_report=False, prompt_text=False)
    assert plain.prompt_text is None and "prompt_text" not in plain.policy.meta
    assert policy_prompt_text(plain.policy) is None
