"""One feature path for live and simulated: the runner's features of a request, computed from
its answers as they arrive, equal the calibration features of the bundle the run recorded."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("httpx", reason="httpx not installed (pip install '.[live]')")

from asd.live.confirm import drive, write_live_bundle
from asd.live.features import features_for_policy, stage0_prompt_features
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
    return calibrated_builtin_policy()


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
    started = {o.request.request_id: o.result.start_tier for o in outcomes}
    decided = [(rid, tier) for rid, tier in seen if tier is not None]
    assert decided
    for rid, tier in decided:
        grid = recorded.tier_x if tier == 0 or tier > started[rid] else recorded.cold_x  # the state it was in
        np.testing.assert_allclose(seen[(rid, tier)], grid[row[rid], tier], rtol=0, atol=1e-9)
    from asd.calibration.prompt_text import policy_prompt_text

    text = policy_prompt_text(policy)
    assert text is not None  # the built-in trace has prompts: stage 0 reads their words too
    stage0 = stage0_prompt_features(view, policy_spec(policy), text)
    assert stage0.shape[1] == len(policy_spec(policy).prompt_names) + text.tiers
    for rid in PROMPTS["request_id"]:  # stage 0 read the prompt features the simulator gives it
        np.testing.assert_allclose(seen[(rid, None)], stage0[row[rid]], rtol=0, atol=1e-9)
    # (stage0_prompt_features is `compute_features`' prompt_x, what calibration fitted stage 0 on
    # and the replay reads: it had read tier 0's recorded prompt count, which the runner lacks)


def policy_spec(policy):
    from asd.live.features import policy_feature_spec

    return policy_feature_spec(policy)


def test_a_policy_without_a_feature_spec_is_one_clear_error():
    from asd.errors import ConfigError
    from tests.live.cascade import builtin_policy

    with pytest.raises(ConfigError, match="no feature spec"):
        features_for_policy(builtin_policy(), served_ladder("http://127.0.0.1:1", "http://127.0.0.1:2"))


def _without(tiers, tier, **settings):
    """The ladder with one tier's sampling / options changed."""
    changed = [dict(t, sampling=dict(t.get("sampling") or {})) for t in tiers]
    for key, value in settings.items():
        if key == "top_logprobs":
            changed[tier]["sampling"]["top_logprobs"] = value
        else:
            changed[tier][key] = value
    return changed


def test_a_ladder_that_withholds_a_feature_group_the_policy_reads_is_refused(policy):
    """`top_logprobs: 0` at a deciding tier: the logprob features sat at their fill values, p̂ = 1
    and every request stopped at tier 0, in the live column and the simulated one alike."""
    from asd.errors import ConfigError
    from asd.live.features import check_feature_supply

    tiers = served_ladder("http://127.0.0.1:1", "http://127.0.0.1:2")
    spec = policy_spec(policy)
    assert {"logprob", "entropy"} <= set(spec.groups)
    features_for_policy(policy, tiers)  # as served: top_logprobs 5 at every tier
    with pytest.raises(ConfigError, match=r"reads the logprob features, but tier smollm2-135m has sampling\."
                                          r"top_logprobs 0, which returns no token logprobs"):
        features_for_policy(policy, _without(tiers, 0, top_logprobs=0))
    with pytest.raises(ConfigError, match=r"reads the entropy features, but tier smollm2-135m has sampling\."
                                          r"top_logprobs 1, which returns no top-k entropies"):
        features_for_policy(policy, _without(tiers, 0, top_logprobs=1))
    # the last tier decides nothing: what it returns is not read
    features_for_policy(policy, _without(tiers, 1, top_logprobs=0))
    # drafts: scored only where a tier continues speculatively from the one below
    three = [dict(t, speculative=True) for t in tiers + [dict(tiers[1], name="third")]]
    draft_spec = type(spec)(("draft",), spec.names, spec.prompt_names, spec.tasks)
    check_feature_supply(draft_spec, three)
    with pytest.raises(ConfigError, match="reads the draft features, but tier gemma3-270m has speculative: false"):
        check_feature_supply(draft_spec, _without(three, 1, speculative=False))
    with pytest.raises(ConfigError, match="reads the draft features, but --no-speculative"):
        check_feature_supply(draft_spec, three, speculative=False)
    check_feature_supply(spec, _without(three, 1, top_logprobs=5), speculative=False)  # no drafts read: runs either way
    # a sampled tier: live decodes greedily, so a temperature was silently sent as 0
    sampled = [dict(t, sampling=dict(t["sampling"])) for t in tiers]
    sampled[1]["sampling"]["temperature"] = 0.7
    with pytest.raises(ConfigError, match=r"tier gemma3-270m: sampling.temperature 0.7: asd live and asd serve "
                                          r"decode greedily"):
        features_for_policy(policy, sampled)


def test_asd_serve_refuses_such_a_ladder_in_one_line_before_serving(policy, tmp_path):
    import yaml
    from click.testing import CliRunner

    from asd.cli import main

    policy_file = tmp_path / "policy.npz"
    policy.save(policy_file)
    config = tmp_path / "tiers.yaml"
    config.write_text(yaml.safe_dump({"tiers": _without(served_ladder("http://127.0.0.1:1", "http://127.0.0.1:2"),
                                                        0, top_logprobs=0)}))
    from tests.live.test_server import _free_port

    result = CliRunner().invoke(main, ["serve", "--tiers", str(config), "--policy", str(policy_file),
                                       "--port", _free_port()])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.splitlines() == [
        "error: the policy reads the logprob features, but tier smollm2-135m has sampling.top_logprobs 0, which returns "
        "no token logprobs; set it to 5 or recalibrate without them (asd calibrate --features ...)"]


def test_features_for_policy_leaves_nothing_to_import_for_the_first_request(policy, tmp_path):
    """The feature path's first call imports scikit-learn and SciPy (1-2 s). In asd serve's and
    asd live's event loop that stalled every request and health check behind the first one, and
    skewed a confirmation run's first latencies: features_for_policy now runs it once itself."""
    import subprocess
    import sys

    assert policy.meta.get("prompt_text")  # the text model's scoring is what imports scikit-learn's vectoriser
    policy.save(tmp_path / "p.npz")
    code = f"""
import sys
from asd.engine import Policy
from asd.live.features import features_for_policy
from tests.live.cascade import served_ladder
policy = Policy.load({str(tmp_path / "p.npz")!r})
assert "sklearn.feature_extraction.text" not in sys.modules
features_for_policy(policy, served_ladder("http://127.0.0.1:1", "http://127.0.0.1:2"))
print("sklearn.feature_extraction.text" in sys.modules, "asd.calibration.features" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"], out.stderr
