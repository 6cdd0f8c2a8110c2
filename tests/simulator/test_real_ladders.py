"""The policy on a real ladder, held out: AlpacaEval's Llama-2-chat 7B → 13B → 70B (804 prompts
with every tier), imported from ../shared/data (skipped when absent), `params` cost, pooled 5-fold
cross-fitting as `asd sweep` runs it.

Design choices under test, measured as GPU cost on the policy frontier at 1, 2 and 3 % quality
loss against always-70B (mean of the three), each lower than the alternative on every fold seed
or, where said, over the mean of fold seeds 0-2:
- each bin's acceptance counts its calibration requests' labels and their calibrated out-of-fold
  p̂ half each (calibrate's DEFAULT_P_HAT_WEIGHT), not the labels alone: on a ladder of hundreds
  of requests a √N/2-bin holds a few dozen labels, and their noise decides where the DP stops
  (mean of fold seeds 0-2; with the routed stage 0: 0.683 against 0.618 in √N/2 bins, every seed
  the same way, and 0.620 against 0.605 in the default bins, where seed 0 alone goes the other way,
  0.586 against 0.594);
- calibrate's default bins are BIN_REFINE times finer and each pools its neighbours
  (`default_tier_bins`), against the √N/2 bins alone: finer cuts, estimates on as many requests
  (mean of fold seeds 0-2);
- the `content` feature group (how much each tier's answer hedges), against the other groups
  alone, with stage 0 on prompt bins: the chat models' answers carry no logprobs, and hedging is
  what they say of their doubt;
- the routed stage 0 (start at the first tier whose prompt-only p̂ reaches a threshold, where that
  replays better than the prompt bins), against the prompt bins alone, on FuseChat-Llama 1B → 3B → 8B
  (mean of fold seeds 0-2): on chat ladders whose answers say little, which tier a prompt needs is
  the signal, and one score of tier 0's acceptance cannot tell the middle tier from the last."""

from __future__ import annotations

from functools import lru_cache

import pytest

from asd.calibration.calibrate import BIN_REFINE, DEFAULT_P_HAT_WEIGHT, default_bins
from asd.simulator.evaluate import Evaluation
from asd.simulator.sweep import LOSS_LEVELS, sweep
from asd.traces.importers import import_trace

MODELS = "llama-2-7b-chat-hf,llama-2-13b-chat-hf,llama-2-70b-chat-hf"
FUSECHAT = "FuseChat-Llama-3.2-1B-Instruct,FuseChat-Llama-3.2-3B-Instruct,FuseChat-Llama-3.1-8B-Instruct"


def alpaca_eval_ladder(shared_data, tmp_path_factory, models: str):
    """The AlpacaEval ladder of these models (every tier judged), imported once per module."""
    root = shared_data / "alpaca_eval"
    if not root.is_dir():
        pytest.skip(f"AlpacaEval results not found under {root}")
    out = tmp_path_factory.mktemp("alpaca_eval") / "bundle"
    import_trace("alpaca-eval", root, out, models=models, drop_incomplete=True)
    return out


@pytest.fixture(scope="module")
def alpaca_ladder(shared_data, tmp_path_factory):
    return alpaca_eval_ladder(shared_data, tmp_path_factory, MODELS)


@pytest.fixture(scope="module")
def fusechat_ladder(shared_data, tmp_path_factory):
    return alpaca_eval_ladder(shared_data, tmp_path_factory, FUSECHAT)


COARSE_BINS = default_bins(804 * 4 // 5)  # √N/2 bins of a fold's calibration rows, each on its own requests


@lru_cache(maxsize=None)
def cost_at_losses(bundle, seed: int, p_hat_weight: float, n_bins: int | None = None, groups: str | None = None,
                   routed_stage0: bool = True) -> float:
    result = sweep(evaluation=Evaluation(bundle, folds=5, cost_model="params", seed=seed,
                                         p_hat_weight=p_hat_weight, n_bins=n_bins, groups=groups,
                                         routed_stage0=routed_stage0))
    return result["quality_check"]["policy_cost_at_losses_mean"]  # sweep's own mean over LOSS_LEVELS


@pytest.mark.parametrize("n_bins", [COARSE_BINS, None], ids=["coarse-bins", "default-bins"])
def test_bins_counting_calibrated_p_hat_buy_quality_cheaper_than_bins_counting_labels(alpaca_ladder, n_bins):
    assert DEFAULT_P_HAT_WEIGHT == 0.5 and COARSE_BINS == 13 and LOSS_LEVELS == (0.01, 0.02, 0.03)
    labels = [cost_at_losses(alpaca_ladder, seed, 0.0, n_bins) for seed in (0, 1, 2)]
    blended = [cost_at_losses(alpaca_ladder, seed, DEFAULT_P_HAT_WEIGHT, n_bins) for seed in (0, 1, 2)]
    print(f"fold seeds 0-2: GPU cost at 1-3 % loss, labels {labels}, labels and p̂ {blended}")
    assert sum(blended) < sum(labels)


def test_finer_bins_pooling_their_neighbours_buy_quality_cheaper_than_the_bins_alone(alpaca_ladder):
    """Mean of fold seeds 0-2. With the routed stage 0, seed 2 alone goes the other way (0.632
    pooled against 0.623); seeds 0 and 1 give 0.594 against 0.606 and 0.589 against 0.627."""
    assert BIN_REFINE == 4
    alone = [cost_at_losses(alpaca_ladder, seed, DEFAULT_P_HAT_WEIGHT, COARSE_BINS) for seed in (0, 1, 2)]
    pooled = [cost_at_losses(alpaca_ladder, seed, DEFAULT_P_HAT_WEIGHT) for seed in (0, 1, 2)]  # calibrate's defaults
    print(f"fold seeds 0-2: GPU cost at 1-3 % loss, {COARSE_BINS} bins {alone}, "
          f"{BIN_REFINE * COARSE_BINS} pooled ±{BIN_REFINE} {pooled}")
    assert sum(pooled) < sum(alone)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hedging_features_buy_quality_cheaper_than_the_other_text_features_alone(alpaca_ladder, seed):
    """With stage 0 on prompt bins alone, as the group was chosen. With the routed stage 0 the
    two are level on this ladder (mean of seeds 0-2: 0.605 with the group, 0.602 without): part
    of what the answers' hedging told, which tier a prompt needs, the routing now says."""
    without = cost_at_losses(alpaca_ladder, seed, DEFAULT_P_HAT_WEIGHT, groups="length,format,agreement",
                             routed_stage0=False)
    with_content = cost_at_losses(alpaca_ladder, seed, DEFAULT_P_HAT_WEIGHT, routed_stage0=False)
    print(f"fold seed {seed}: GPU cost at 1-3 % loss, without the content group {without:.3f}, with it {with_content:.3f}")
    assert with_content < without


def test_the_routed_stage_0_buys_quality_cheaper_than_the_prompt_bins_alone(fusechat_ladder):
    binned = [cost_at_losses(fusechat_ladder, seed, DEFAULT_P_HAT_WEIGHT, routed_stage0=False) for seed in (0, 1, 2)]
    routed = [cost_at_losses(fusechat_ladder, seed, DEFAULT_P_HAT_WEIGHT) for seed in (0, 1, 2)]
    print(f"fold seeds 0-2: GPU cost at 1-3 % loss, prompt bins {binned}, routed stage 0 {routed}")
    assert sum(routed) < sum(binned)
