"""One feature path for live and simulated: the runner's features of a request, computed from
its answers as they arrive, equal the calibration features of the bundle the run recorded."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

from asd.live.confirm import drive, write_live_bundle
from asd.live.features import features_for_policy
from asd.live.runner import CascadeRequest, RequestState, build_runner
from tests.live.cascade import calibrated_builtin_policy, served_ladder

PROMPTS = pd.DataFrame({
    "request_id": ["a", "b", "c"],
    "prompt": ["What is 76 plus 34? Answer with just the number.",
               "What is the chemical symbol for zinc? Answer with just the symbol.",
               "Write these words in capital letters: winter summer yellow"],
    "reference": ["110", "Zn", "WINTER SUMMER YELLOW"],
    "task": ["arithmetic", "facts", "copying"],
})


@pytest.fixture(scope="module")
def policy():
    return calibrated_builtin_policy(groups="logprob,entropy,format", target_stop_share=0.3)


def test_live_features_equal_the_recorded_bundles_features(llama_server, gemma_server, policy, tmp_path):
    from asd.calibration.features import compute_features
    from asd.calibration.views import load_view

    tiers = served_ladder(llama_server, gemma_server, max_tokens=4)
    seen = {}

    def features_for(state: RequestState):
        x = features_for_policy(policy, tiers)(state)
        seen[(state.request.request_id, state.last.tier if state.last else None)] = x
        return x

    async def go():
        runner = build_runner(tiers, policy, features_for)
        try:
            requests = [CascadeRequest(p, request_id=r, task=t) for r, p, t in
                        zip(PROMPTS["request_id"], PROMPTS["prompt"], PROMPTS["task"])]
            return await drive(runner, requests, concurrency=1, deadline_s=300)
        finally:
            await runner.aclose()

    outcomes = asyncio.run(go())
    assert all(o.result is not None for o in outcomes)
    view = load_view(write_live_bundle(tmp_path / "b", tiers, PROMPTS, outcomes, run={}))
    recorded = compute_features(view, spec=policy_spec(policy))
    row = {rid: i for i, rid in enumerate(view.request_ids)}
    decided = [(rid, tier) for rid, tier in seen if tier is not None]
    assert decided
    for rid, tier in decided:
        np.testing.assert_allclose(seen[(rid, tier)], recorded.tier_x[row[rid], tier], rtol=0, atol=1e-9)


def policy_spec(policy):
    from asd.live.features import policy_feature_spec

    return policy_feature_spec(policy)


def test_a_policy_without_a_feature_spec_is_one_clear_error():
    from asd.errors import ConfigError
    from tests.live.cascade import builtin_policy

    with pytest.raises(ConfigError, match="no feature spec"):
        features_for_policy(builtin_policy(), served_ladder("http://127.0.0.1:1", "http://127.0.0.1:2"))
