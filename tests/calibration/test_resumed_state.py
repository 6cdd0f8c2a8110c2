"""scripts/resumed_state.py measures the one state the simulator does not model (README section 6):
a request started cold at tier 1 that climbs to tier 2. Its tier-2 features, as the script rebuilds
them from the full history, must be what the live runner computes when tier 0 never ran."""

import importlib.util
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from asd.calibration import compute_features, view_from_outputs

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "resumed_state.py"
TIERS = ["t0", "t1", "t2", "t3"]
ANSWERS = ["The answer is 5.", "The answer is 7.", "5", "I am not sure.", "", None]


def _script():
    spec = importlib.util.spec_from_file_location("resumed_state", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outputs(texts):
    """Tiers 0-2 answer `texts` (None: not run); tier 3 answers, so the view always has text."""
    return [None if t is None else {"output": t, "n_output_tokens": 4, "n_prompt_tokens": 12}
            for t in [*texts, "The answer is 5."]]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(ANSWERS), min_size=3, max_size=3))
def test_the_scripts_tier_2_is_what_live_computes_after_a_cold_start_at_tier_1(texts):
    full = compute_features(view_from_outputs("What is 2 + 3?", _outputs(texts), tiers=TIERS))
    live = compute_features(view_from_outputs("What is 2 + 3?", _outputs([None] + texts[1:]), tiers=TIERS),
                            spec=full.spec)
    rebuilt = _script().resumed_tier2(full.tier_x, list(full.names))
    # every column of tier 2, not only the three the script rewrites: nothing else may differ
    np.testing.assert_array_equal(rebuilt[0, 2], live.tier_x[0, 2])


def test_the_three_counts_are_what_differ_when_tier_0_agreed():
    texts = ["The answer is 5.", "The answer is 5.", "The answer is 5."]
    full = compute_features(view_from_outputs("What is 2 + 3?", _outputs(texts), tiers=TIERS))
    live = compute_features(view_from_outputs("What is 2 + 3?", _outputs([None] + texts[1:]), tiers=TIERS),
                            spec=full.spec)
    differ = [n for n, a, b in zip(full.names, full.tier_x[0, 2], live.tier_x[0, 2]) if a != b]
    assert differ == ["agree_count_prev"]  # 2 earlier tiers agree in the replay, 1 live; any and share stay 1
