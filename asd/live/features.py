"""The live runner's feature function: a request's answers so far become a one-request trace
view (`asd.calibration.views.view_from_outputs`, the rows `asd record` would write) and go
through `asd.calibration.features.compute_features` with the policy's own feature spec — the
code that computed the features the policy was calibrated on, so simulator and live agree.
"""

from __future__ import annotations

import numpy as np

from asd.errors import ConfigError
from asd.live.record import draft_row, output_row
from asd.live.runner import FeaturesFor, RequestState
from asd.live.tiers import DEFAULT_SAMPLING


def policy_feature_spec(policy):
    """The FeatureSpec a calibrated policy carries in its meta (`asd calibrate` writes it)."""
    from asd.calibration.features import FeatureSpec

    meta = getattr(policy, "meta", None) or {}
    spec = meta.get("features")
    if isinstance(spec, dict) and "spec" in spec:
        spec = spec["spec"]
    if not isinstance(spec, dict):
        raise ConfigError("the policy records no feature spec (meta['features']); calibrate it with `asd calibrate`")
    return FeatureSpec.from_dict(spec)


class CalibrationFeatures:
    """`FeaturesFor` over asd.calibration: prompt features before any tier answered (and the
    policy's prompt text logits where it has a text model), else the features after the
    request's last tier, climbed (the tier below answered) or cold."""

    def __init__(self, spec, tiers: list[dict], prompt_text=None):
        self.spec = spec
        self.prompt_text = prompt_text
        self.tier_names = [str(t["name"]) for t in tiers]
        self.sampling = {str(t["name"]): dict(t.get("sampling") or {}) for t in tiers}

    def view(self, state: RequestState):
        from asd.calibration.views import view_from_outputs

        rid = state.request.request_id
        runs = state.outputs()
        outputs = [None if run is None else output_row(rid, run.tier, run.generation) for run in runs]
        drafts = [None if run is None or run.draft is None else draft_row(rid, run.tier - 1, run.tier, run.draft)
                  for run in runs]
        return view_from_outputs(state.request.prompt, outputs, tiers=self.tier_names, drafts=drafts,
                                 request_id=rid, task=state.request.task, sampling=self.sampling)

    def warm_up(self) -> None:
        """Compute stage 0's and tier 0's features once for a made-up request. The first call
        imports scikit-learn and SciPy (1-2 s); inside the event loop of the first request it
        stalled every request and health check, and asd live's first latencies."""
        from asd.live.backends.base import Generation
        from asd.live.runner import CascadeRequest, TierRun

        state = RequestState(CascadeRequest("Warm up: what is two plus two?", request_id="warm-up"),
                             len(self.tier_names))
        self(state)
        answer = Generation(text="Four.", tokens=["Four", "."], token_logprobs=[-0.1, -0.2],
                            top_logprobs=[{"Four": -0.1, "4": -2.5}, {".": -0.2, "!": -2.0}], n_prompt_tokens=8,
                            n_output_tokens=2, ttft_ms=1.0, e2e_ms=2.0)
        state.runs.append(TierRun(0, self.tier_names[0], answer, None, answer.text, "warm-up", 0.0, 0.0, 0.0))
        self(state)

    def __call__(self, state: RequestState) -> np.ndarray:
        from asd.calibration.features import compute_features

        features = compute_features(self.view(state), spec=self.spec)
        last = state.last
        if last is None:
            from asd.calibration.prompt_text import with_prompt_text

            return np.ascontiguousarray(with_prompt_text(features.prompt_x, [state.request.prompt], self.prompt_text)[0])
        grid = features.tier_x if state.climbed else features.cold_x
        return np.ascontiguousarray(grid[0, last.tier])


def features_for_policy(policy, tiers: list[dict], *, speculative: bool = True) -> FeaturesFor:
    """The features the policy reads, from what the ladder returns; a ladder that cannot return
    a group the policy reads is refused (`check_feature_supply`)."""
    from asd.calibration.prompt_text import policy_prompt_text

    spec = policy_feature_spec(policy)
    check_feature_supply(spec, tiers, speculative=speculative)
    refuse_sampled_tiers(tiers)
    features = CalibrationFeatures(spec, tiers, policy_prompt_text(policy))
    features.warm_up()  # before serving, not in the first request
    return features


def refuse_sampled_tiers(tiers: list[dict]) -> None:
    """Live tiers decode greedily (a draft is kept as far as the verifier's greedy choice agrees
    with it, and the features were calibrated on greedy answers): a tier config asking for a
    temperature above 0 is refused rather than silently sent 0 (`asd record` does sample)."""
    for tier in tiers:
        temperature = (tier.get("sampling") or {}).get("temperature") or 0
        if temperature > 0:
            raise ConfigError(f"tier {tier['name']}: sampling.temperature {temperature:g}: asd live and asd serve "
                              "decode greedily (speculative verification keeps the prefix the verifier's greedy "
                              "choice agrees with); set it to 0 or leave it out")


def check_feature_supply(spec, tiers: list[dict], *, speculative: bool = True) -> None:
    """Refuse a ladder whose settings withhold a feature group the policy reads at a tier it
    decides at (every tier but the last), as `asd check` refuses such a bundle: its features
    would sit at their fill values (with top_logprobs 0, p̂ = 1 and every request stopped at
    tier 0), in the live decisions and in the simulated column alike."""
    deciding = tiers[:-1]
    needs = {"logprob": (1, "token logprobs"), "entropy": (2, "top-k entropies (at least 2 alternatives)")}
    for group, (least, what) in needs.items():
        if group not in spec.groups:
            continue
        for tier in deciding:
            top = int((tier.get("sampling") or {}).get("top_logprobs", DEFAULT_SAMPLING["top_logprobs"]))
            if top < least:
                raise ConfigError(f"the policy reads the {group} features, but tier {tier['name']} has sampling."
                                  f"top_logprobs {top}, which returns no {what}; set it to {max(least, 5)} or "
                                  "recalibrate without them (asd calibrate --features ...)")
    if "draft" in spec.groups:
        for tier in deciding[1:]:  # a draft is scored when tier i continues from tier i-1's answer
            if not speculative or tier.get("speculative") is False:
                where = "--no-speculative" if not speculative else f"tier {tier['name']} has speculative: false"
                raise ConfigError(f"the policy reads the draft features, but {where}, so no draft is scored there; "
                                  "run speculatively or recalibrate without them (asd calibrate --features ...)")


def stage0_prompt_features(view, spec, prompt_text=None) -> np.ndarray:
    """Stage 0's input (N, P [+ L]) as the live runner has it, before any tier ran: the prompt
    features `compute_features` gives calibration and replay (the prompt's length from its
    characters, as the runner knows it), then the prompt text model's logits where the policy
    has one (`policy_prompt_text`)."""
    from asd.calibration.features import compute_features
    from asd.calibration.prompt_text import with_prompt_text

    return with_prompt_text(compute_features(view, spec=spec).prompt_x, view.prompts, prompt_text)
