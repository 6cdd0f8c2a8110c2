"""`asd check`, `asd.testing` and `asd simulate/sweep --policy`: asd checks its own committed
policy (tests/policies/builtin.npz) with its committed promises; a broken policy fails with the
expected message and exit 1; the JUnit file parses with the standard library; an incompatible
policy (another ladder, features the bundle lacks, a newer format) is refused with one line
and exit 2 before any figure."""

from __future__ import annotations

import json
import math
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from asd.calibration.calibrate import calibrate_to_file
from asd.cli import main
from asd.engine import Policy
from asd.engine.policy import POLICY_VERSION
from asd.errors import ConfigError, PolicyError
from asd.simulator.evaluate import Evaluation
from asd.simulator.job import des_latency
from asd.testing import assert_policy, check_policy
from asd.traces.synth import write_synthetic_bundle

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "tests" / "policies"
SPEC = json.loads((POLICIES / "builtin.promises.json").read_text())
POLICY = POLICIES / SPEC["policy"]
REGENERATE = "PYTHONPATH=$PWD python scripts/make_check_policy.py"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def promise_argv(promises: dict) -> list[str]:
    """The committed promises as `asd check` options."""
    argv = []
    for key, value in promises.items():
        flag = "--" + key.replace("_", "-")
        if key == "max_latency":
            argv += [a for stat, ms in value.items() for a in (flag, f"{stat}={ms}")]
        elif key == "beat":
            argv += [a for b in value for a in (flag, b)]
        else:
            argv += [flag, value]
    return argv


def one_error_line(result, exit_code=2) -> str:
    assert result.exit_code == exit_code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    """The committed policy solved at λ = 1e9: quality bought at any cost, so the cost and
    latency promises break."""
    path = tmp_path_factory.mktemp("broken") / "broken.npz"
    Policy.load(POLICY).solve(1e9).save(path)
    return path


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A split 3-tier synthetic ladder and a policy calibrated on its calibration split."""
    root = tmp_path_factory.mktemp("synth")
    bundle = root / "ladder"
    write_synthetic_bundle(bundle, 300, 3, 5, informativeness=0.7)
    assert run("traces", "split", bundle, "--seed", 1).exit_code == 0
    policy = root / "ladder.npz"
    calibrate_to_file(bundle, policy, lam=2000.0)
    return bundle, policy


def test_the_committed_policy_loads_with_this_asd():
    try:
        policy = Policy.load(POLICY, expect_tiers=["smollm2-135m", "gemma3-270m"])
    except PolicyError as exc:
        pytest.fail(f"{POLICY.relative_to(REPO)} no longer loads ({exc}); if the policy format changed on "
                    f"purpose, regenerate it: {REGENERATE}")
    assert policy.meta["features"]["groups"] and policy.lam == SPEC["calibrate"]["lam"]


def test_asd_checks_its_own_committed_policy(tmp_path):
    """The committed promises hold on the built-in trace: exit 0, one row per promise, the JSON
    and JUnit files say the same."""
    out, junit = tmp_path / "check.json", tmp_path / "check.xml"
    result = run("check", POLICY, SPEC["bundle"], *promise_argv(SPEC["promises"]), "--json", out, "--junit", junit)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    n = 4 + len(SPEC["promises"]["beat"])
    assert data["passed"] and data["n_promises"] == n and data["n_failed"] == 0
    assert [r["promise"] for r in data["rows"]] == ["min quality", "max loss vs last (%)", "max cost rel",
                                                    "max p95 latency (ms)", "beat always-smollm2-135m"]
    rows = {r["promise"]: r for r in data["rows"]}
    assert rows["min quality"]["measured"] >= SPEC["promises"]["min_quality"]
    assert rows["max cost rel"]["measured"] <= SPEC["promises"]["max_cost_rel"]
    assert rows["max p95 latency (ms)"]["measured"] <= SPEC["promises"]["max_latency"]["p95"]
    assert all(math.isfinite(r["measured"]) for r in data["rows"])
    figures = data["bundles"][0]["figures"]
    assert figures["quality"] == rows["min quality"]["measured"]
    assert data["bundles"][0]["warnings"] and "in-sample" in data["bundles"][0]["warnings"][0]
    assert "in-sample" in result.output and f"{n} of {n} promises hold" in result.output
    suite = ET.parse(junit).getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) == n and suite.get("failures") == "0"
    assert [c.get("name") for c in cases] == [r["promise"] for r in data["rows"]]
    assert all(c.get("classname") == "builtin" and c.find("failure") is None for c in cases)


def test_a_broken_policy_fails_with_the_expected_message_and_exit_1(broken, tmp_path):
    junit = tmp_path / "check.xml"
    result = run("check", broken, "builtin", *promise_argv(SPEC["promises"]), "--junit", junit)
    assert result.exit_code == 1, result.output
    assert "FAIL builtin: cost relative to always-last 2.080 > 1.150" in result.output
    assert "FAIL builtin: p95 latency 1073.8 ms > 480.0 ms" in result.output
    assert "Traceback" not in result.output
    cases = ET.parse(junit).getroot().findall(".//testcase")
    failed = {c.get("name"): c.find("failure").get("message") for c in cases if c.find("failure") is not None}
    assert failed["max cost rel"] == "cost relative to always-last 2.080 > 1.150"
    assert failed["max p95 latency (ms)"] == "p95 latency 1073.8 ms > 480.0 ms"
    assert "min quality" not in failed  # quality is what it bought


def test_asd_testing_check_and_assert(broken):
    ok = check_policy(POLICY, "builtin", min_quality=0.36, max_latency={"p95": 480})
    assert ok.passed and len(ok.rows) == 2 and "2 of 2 promises hold" in ok.table()
    assert assert_policy(POLICY, "builtin", max_cost_rel=1.15).passed
    with pytest.raises(AssertionError) as caught:
        assert_policy(broken, "builtin", max_cost_rel=1.15, min_quality=0.36)
    message = str(caught.value)
    assert "max cost rel" in message and "FAIL" in message and "pass" in message
    assert "cost relative to always-last 2.080 > 1.150" in message


def test_limits_print_to_their_measured_figures_precision():
    # a whole-number limit printed as `1` beside a measured `1.140`, and `480` beside `383.5`
    result = check_policy(POLICY, "builtin", max_cost_rel=1, max_latency={"p95": 480}, beat=["always-smollm2-135m:0"])
    shown = {r.promise: (r.shown, r.limit_text) for r in result.rows}
    assert shown["max cost rel"] == ("1.140", "1.000")
    assert shown["max p95 latency (ms)"] == ("383.5", "480.0")
    assert shown["beat always-smollm2-135m"][1] == "0.000"
    assert "cost relative to always-last 1.140 > 1.000" in result.table()
    # a limit that 3 decimals would round is shown as given: a margin of 0.0004 is not 0.000
    fine = check_policy(POLICY, "builtin", beat=["threshold:0.0004"], max_latency={"p95": 383.45})
    shown = {r.promise: r for r in fine.rows}
    assert shown["beat threshold"].limit_text == "0.0004" and shown["max p95 latency (ms)"].limit_text == "383.45"
    assert not shown["max p95 latency (ms)"].passed and "383.45" in shown["max p95 latency (ms)"].message
    # a huge limit is short: 1e300 printed as 301 digits squeezed the table's other columns out
    huge = check_policy(POLICY, "builtin", max_latency={"p99": 1e300})
    assert huge.rows[0].limit_text == "1e+300" and "733.9     1e+300  pass" in huge.table()


def test_regression_mode_compares_frontiers_and_says_where(tmp_path):
    weak = tmp_path / "weak.npz"
    calibrate_to_file("builtin", weak, groups="length", stage0=False, lam=700.0)
    same = run("check", POLICY, "builtin", "--against", POLICY, "--json", tmp_path / "same.json")
    assert same.exit_code == 0, same.output
    assert json.loads((tmp_path / "same.json").read_text())["rows"][0]["measured"] == 0.0
    # a passing comparison states its worst level without calling it a shortfall
    where = json.loads((tmp_path / "same.json").read_text())["bundles"][0]["regression"]["where"]
    assert where.endswith("(within 0.000)") and "<" not in where
    worse = run("check", weak, "builtin", "--against", POLICY, "--json", tmp_path / "worse.json")
    assert worse.exit_code == 1, worse.output
    assert "FAIL builtin: regression vs old policy: at cost ≤ " in worse.output
    regression = json.loads((tmp_path / "worse.json").read_text())["bundles"][0]["regression"]
    assert not regression["passed"] and regression["levels"] and regression["new_frontier"]
    # the tolerance absorbs a shortfall no larger than itself
    better = run("check", POLICY, "builtin", "--against", weak, "--json", tmp_path / "better.json")
    shortfall = json.loads((tmp_path / "better.json").read_text())["rows"][0]["measured"]
    tolerant = run("check", POLICY, "builtin", "--against", weak, "--tolerance", shortfall + 1e-6)
    assert tolerant.exit_code == 0, tolerant.output
    assert better.exit_code == (0 if shortfall <= 0 else 1)


def test_check_on_a_test_split_is_out_of_sample_and_beats_are_defined(synth, tmp_path):
    bundle, policy = synth
    out = tmp_path / "check.json"
    result = run("check", policy, bundle, "--min-quality", 0, "--beat", "threshold:1", "--beat", "router:1",
                 "--beat", "random:1", "--max-latency", "p99=1e9", "--json", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    report = data["bundles"][0]
    assert report["warnings"] == [] and "replayed on split 'test'" in report["evaluation"]
    assert report["n_requests"] < 300
    # --folds on a split bundle replays every request (in sample, warned), and says why not the split
    folded = check_policy(policy, bundle, min_quality=0, folds=3).bundles[0]
    assert "replayed on every request (300: --folds, not the bundle's split)" in folded["evaluation"]
    assert any(w.startswith("in-sample") for w in folded["warnings"])
    # margin 0: the definition is quality >= B − m and cost <= B + m, row by row
    strict = check_policy(policy, bundle, beat=["threshold", "oracle", "always-synth-70b:0.05"])
    figures, baselines = strict.bundles[0]["figures"], strict.bundles[0]["baselines"]
    for row, (name, margin) in zip(strict.rows, [("threshold", 0.0), ("oracle", 0.0), ("always-synth-70b", 0.05)]):
        b = baselines[name]
        assert row.measured == pytest.approx(figures["quality"] - b["quality"])
        assert row.passed == (figures["quality"] >= b["quality"] - margin - 1e-12
                              and figures["cost_rel"] <= b["cost_rel"] + margin + 1e-12)
    oracle = strict.rows[1]
    assert not oracle.passed and "oracle's" in oracle.message  # nothing beats the oracle's quality
    # random is drawn at the policy's mean cost: quality alone decides, whatever the draw's seed
    # (its realised cost fell either side of the policy's, and the verdict flipped with --seed)
    verdicts = []
    for seed in range(6):
        row = check_policy(policy, bundle, beat=["random"], seed=seed).rows[0]
        b = check_policy(policy, bundle, beat=["random"], seed=seed).bundles[0]["baselines"]["random"]
        assert row.passed == (figures["quality"] >= b["quality"] - 1e-12)
        verdicts.append(row.passed)
    assert len(set(verdicts)) == 1


def test_des_mode_checks_latency_under_load(synth):
    bundle, policy = synth
    replay = check_policy(policy, bundle, max_latency={"p95": 1e9})
    des = check_policy(policy, bundle, max_latency={"p95": 1e9}, mode="des", rate=50.0)
    assert des.passed and des.rows[0].measured >= replay.rows[0].measured * 0.999


def test_des_mode_takes_the_same_load_as_asd_simulate(synth):
    """--arrivals/--cv/--scheduler/--replicas/--max-batch reach the DES exactly as `asd simulate`
    builds it (the pools could not be given to check: it ran 1 replica, batch 256, unsaid)."""
    bundle, policy = synth
    load = dict(rate=40.0, arrivals="gamma", cv=3.0, scheduler="difficulty", replicas=[1, 2, 1], max_batch=4,
                kv_tokens=[5000, 5000, 5000])
    result = check_policy(policy, bundle, max_latency={"p95": 1e9}, mode="des", seed=2, **load)
    report = result.bundles[0]
    assert report["load"] == load and report["mode"] == "des"  # gamma: every field as given
    ev = Evaluation(bundle, policy=policy, seed=2)  # check's seed draws the folds the difficulty keys come from too
    want = des_latency(ev, seed=2, **load)(ev.policy_outcomes()).latency_ms
    assert result.rows[0].measured == pytest.approx(np.percentile(want, 95), rel=1e-12)
    replay = check_policy(policy, bundle, max_latency={"p95": 1e9})
    assert replay.bundles[0]["load"] is None
    poisson = check_policy(policy, bundle, max_latency={"p95": 1e9}, mode="des", rate=40.0, cv=3.0)
    assert poisson.bundles[0]["load"] == {"rate": 40.0, "arrivals": "poisson", "cv": None, "scheduler": "fifo",
                                          "replicas": 1, "max_batch": 256, "kv_tokens": None}
    out = run("check", policy, bundle, "--max-latency", "p95=1e9", "--mode", "des", "--rate", 40, "--arrivals",
              "gamma", "--cv", 3, "--scheduler", "difficulty", "--replicas", "1,2,1", "--max-batch", 4,
              "--kv-tokens", 100000)
    assert out.exit_code == 0, out.output
    assert ("mode des at 40 req/s (gamma gaps, CV 3.0), replicas [1, 2, 1], max batch 4, KV cache 100000 tokens per "
            "replica, difficulty queues" in " ".join(out.stdout.split()))


def test_an_incompatible_policy_is_refused_with_one_line(synth, tmp_path):
    bundle, policy = synth
    # another ladder: the built-in trace's policy on a synthetic ladder
    line = one_error_line(run("check", POLICY, bundle, "--min-quality", 0.1))
    assert f"policy {POLICY} does not fit {bundle}: tiers [" in line and "!= policy tiers" in line
    # features the bundle cannot provide: the synthetic ladder without its logprobs
    nolp = tmp_path / "nolp"
    shutil.copytree(bundle, nolp)
    t = pq.read_table(nolp / "outputs.parquet")
    for c in ("mean_logprob", "min_logprob", "token_logprobs"):
        i = t.schema.get_field_index(c)
        t = t.set_column(i, t.schema.field(i), pa.nulls(t.num_rows, t.schema.field(i).type))
    pq.write_table(t, nolp / "outputs.parquet")
    line = one_error_line(run("check", policy, nolp, "--min-quality", 0.1))
    assert line == (f"error: policy {policy} uses feature groups {nolp} cannot provide: logprob (no logprobs in trace); "
                    "recalibrate without them (asd calibrate --features ...) or record them")
    # a newer policy format
    data = dict(np.load(POLICY))
    header = json.loads(str(data["header"]))
    newer = tmp_path / "newer.npz"
    np.savez(newer, **{**data, "header": np.array(json.dumps({**header, "version": POLICY_VERSION + 1}))})
    line = one_error_line(run("check", newer, "builtin", "--min-quality", 0.1))
    assert f"has version {POLICY_VERSION + 1}" in line and f"reads versions 2, 3, {POLICY_VERSION}: recalibrate" in line
    # a newer feature spec
    spec = dict(header["meta"]["features"], version=header["meta"]["features"]["version"] + 1)
    newer_spec = tmp_path / "newer_spec.npz"
    header2 = dict(header, meta=dict(header["meta"], features=spec))
    np.savez(newer_spec, **{**data, "header": np.array(json.dumps(header2))})
    line = one_error_line(run("check", newer_spec, "builtin", "--min-quality", 0.1))
    assert "feature spec: expected a dict with version" in line and "recalibrate" in line
    # a cost model of another format
    header3 = dict(header, meta=dict(header["meta"], cost_model=dict(header["meta"]["cost_model"], format="asd.cost/99")))
    other_costs = tmp_path / "other_costs.npz"
    np.savez(other_costs, **{**data, "header": np.array(json.dumps(header3))})
    line = one_error_line(run("check", other_costs, "builtin", "--min-quality", 0.1))
    assert f"policy {other_costs}: cost model: format 'asd.cost/99'" in line and "recalibrate" in line


@pytest.mark.parametrize("argv, words", [
    (["builtin"], "state at least one promise"),
    (["builtin", "--max-latency", "p42=100"], "statistic must be one of"),
    (["builtin", "--max-latency", "p95"], "use STAT=MS"),
    (["builtin", "--beat", "nonsense"], "unknown baseline 'nonsense'"),
    (["builtin", "--beat", "threshold:x"], "MARGIN must be a number"),
    # a repeated statistic kept only its last limit, silently; infinities were "not positive"
    (["builtin", "--max-latency", "p95=1000", "--max-latency", "p95=10"],
     "--max-latency p95 is given twice (1000 and 10 ms): give each statistic one limit"),
    (["builtin", "--max-latency", "p95=inf"], "MS must be a positive, finite number"),
    (["builtin", "--beat", "always-smollm2-135m:inf"], "MARGIN must be a finite number >= 0"),
    (["builtin", "--min-quality", "2"], "quality is a share"),
    # the load options are checked where a latency promise uses them (without one they are warned about)
    (["builtin", "--max-latency", "p95=1000", "--mode", "des"], "--mode des needs --rate"),
    (["builtin", "--max-latency", "p95=1000", "--mode", "des", "--arrivals", "trace"],
     "--arrivals trace needs requests.arrival_s; 600 of 600 held-out requests have none"),
    (["builtin", "--max-latency", "p95=1000", "--mode", "des", "--rate", "2", "--arrivals", "gamma", "--cv", "-1"],
     "--cv -1.0: the gaps' coefficient of variation must be a positive number"),
    (["builtin", "--min-quality", "0.1", "--split", "test"], "no split column"),
    (["no-such-bundle", "--min-quality", "0.1"], "no-such-bundle"),
])
def test_bad_input_is_one_line_and_exit_2(argv, words):
    line = one_error_line(run("check", POLICY, *argv))
    assert words in line


def test_a_missing_policy_is_one_line_and_exit_2(tmp_path):
    line = one_error_line(run("check", tmp_path / "none.npz", "builtin", "--min-quality", 0.1))
    assert "none.npz not found" in line


def test_simulate_and_sweep_replay_a_given_policy(synth, tmp_path):
    bundle, policy = synth
    out = tmp_path / "sim.json"
    result = run("simulate", bundle, "--policy", policy, "--tau-max", 1e6, "--json", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert "given policy" in data["evaluation"] and data["split"] == "test" and data["warnings"] == []
    assert data["chosen"]["quality"] is not None and set(data["baselines"]) >= {"threshold", "router", "oracle"}
    out = tmp_path / "sweep.json"
    result = run("sweep", "builtin", "--policy", POLICY, "--json", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["n_requests"] == 600 and len(data["policy"]) > 1 and "in-sample" in data["warnings"][0]
    assert "warning: in-sample" in result.output
    assert one_error_line(run("sweep", "builtin", "--policy", POLICY, "--ablate", "features")).endswith(
        "cannot be combined with --policy (a fixed policy)")


def test_given_policy_evaluation_replays_the_saved_lambda(synth):
    """Evaluation(policy=...) walks the given policy at its saved λ in every fold; on a split
    bundle the held-out rows are the test split, and a λ sweep leaves the policy as saved."""
    bundle, policy = synth
    ev = Evaluation(bundle, policy=policy)
    assert ev.design["split"] == "test" and len(ev.folds) == 1 and ev.folds[0].calibration is None
    before = ev.policy_outcomes()
    p = Policy.load(policy)
    fs = ev.features
    held = ev.held
    w = p.walk(p.prompt_bins(fs.prompt_x[held]), p.tier_bins(fs.tier_x[held]), cold_bins=p.cold_tier_bins(fs.cold_x[held]))
    assert np.array_equal(before.stop, w.stop) and np.array_equal(before.start, w.start)
    ev.policy_outcomes(0.0)
    assert np.array_equal(ev.policy_outcomes().stop, before.stop)
    with pytest.raises(ConfigError):
        Evaluation(bundle).policy_outcomes()


def test_evaluation_default_folds_match_calibration():
    """evaluate.py keeps its own copy (calibration, with scikit-learn, is imported only when used)."""
    from asd.calibration import calibrate
    from asd.simulator import evaluate

    assert evaluate.DEFAULT_FOLDS == calibrate.DEFAULT_FOLDS


@pytest.mark.parametrize("options, message", [
    ({"max_latency": 800}, r"max_latency 800: give STAT=MS or \{STAT: MS\}"),
    ({"min_quality": "high"}, r"--min-quality 'high': must be a finite number >= 0"),
    ({"max_cost_rel": True}, r"--max-cost-rel True: must be a finite number >= 0"),
    # each was a TypeError or ValueError from inside (numpy, pathlib, range), or, for True, a 1 ms limit
    ({"min_quality": 0, "beat": 5}, r"beat 5: give BASELINE\[:MARGIN\] or a list of them"),
    ({"min_quality": 0, "beat": ["threshold", 3]}, r"beat \['threshold', 3\]: give BASELINE"),
    ({"min_quality": 0, "folds": "3"}, r"folds='3': must be a whole number >= 2"),
    ({"min_quality": 0, "folds": 2.5}, r"folds=2.5: must be a whole number >= 2"),
    ({"min_quality": 0, "seed": "0"}, r"seed='0': must be a whole number >= 0"),
    ({"min_quality": 0, "seed": -1}, r"seed=-1: must be a whole number >= 0"),
    ({"min_quality": 0, "mode": "des", "rate": "2"}, r"rate='2': must be a number"),
    ({"min_quality": 0, "mode": "des", "rate": 2, "arrivals": "gamma", "cv": "2"}, r"cv='2': must be a number"),
    ({"min_quality": 0, "against": 5}, r"asd check: against=5: give a path or a Policy"),
    ({"max_latency": {"p95": True}}, r"--max-latency p95=True: MS must be a number of milliseconds"),
])
def test_check_policy_from_python_names_an_option_of_the_wrong_kind(options, message):
    """From Python the options arrive unparsed: a bare number for max_latency was "'int' object is
    not iterable", a string for a limit "'<' not supported"."""
    with pytest.raises(ConfigError, match=message):
        check_policy(POLICY, ["builtin"], **options)


@pytest.mark.parametrize("policy, bundles, message", [
    (None, "builtin", r"asd check: policy=None: give a path or a Policy"),
    (POLICY, None, r"asd check: bundle=None: give a path or a Bundle or TraceView"),
    (POLICY, ["builtin", 3], r"asd check: bundle=3: give a path or a Bundle or TraceView"),
])
def test_check_policy_names_a_policy_or_bundle_that_is_not_one(policy, bundles, message):
    with pytest.raises(ConfigError, match=message):
        check_policy(policy, bundles, min_quality=0)


def test_check_policy_takes_an_open_bundle_and_a_view_as_it_takes_a_path():
    from asd.calibration.views import load_view
    from asd.traces.bundle import open_bundle

    by_path = check_policy(POLICY, "builtin", max_cost_rel=2.0).rows[0].measured
    assert check_policy(POLICY, open_bundle("builtin"), max_cost_rel=2.0).rows[0].measured == by_path
    assert check_policy(POLICY, load_view("builtin"), max_cost_rel=2.0).rows[0].measured == by_path


def test_a_bundle_without_timings_says_its_latencies_are_the_policys_model(synth, tmp_path):
    """A trace model fitted on a bundle prices a tier without timings by the hardware profile (and
    refuses a bundle with none), saying so in its note; a given policy brings its own fitted
    trace model, whose latencies there are modelled from token counts: said so too."""
    from asd.traces.bundle import open_bundle, write_bundle

    bundle, policy = synth
    source = open_bundle(bundle)
    outputs = source.to_pandas("outputs")
    outputs["ttft_ms"] = outputs["e2e_ms"] = np.nan
    write_bundle(tmp_path / "untimed", source.manifest, source.to_pandas("requests"), outputs,
                 source.to_pandas("drafts"))
    assert Policy.load(policy).meta["cost_model"]["kind"] == "trace"
    untimed = check_policy(policy, tmp_path / "untimed", max_latency={"p95": 1e9}).bundles[0]
    assert any(w.startswith(f"{tmp_path / 'untimed'} records no timings at synth-8b, synth-34b, synth-70b: latencies "
                            "there are the policy's trace model") for w in untimed["warnings"]), untimed["warnings"]
    timed = check_policy(policy, bundle, max_latency={"p95": 1e9}).bundles[0]
    assert not any("records no timings" in w for w in timed["warnings"])
    # a trace model fitted on this bundle (timings at the first tier only) is not the policy's: its note speaks
    partly = source.to_pandas("outputs")
    partly.loc[partly["tier"] > 0, ["ttft_ms", "e2e_ms"]] = np.nan
    write_bundle(tmp_path / "partly", source.manifest, source.to_pandas("requests"), partly, source.to_pandas("drafts"))
    own = Evaluation(tmp_path / "partly", policy=policy, cost_model="trace", split="test")
    assert not any("records no timings" in w for w in own.warnings)
    assert "synth-70b: no timings, hardware profile used" in own.cost_note


def test_beat_takes_a_tier_name_holding_a_colon():
    from asd.simulator.check import parse_beat

    names = ["llama3:8b", "llama3:70b"]
    assert parse_beat(["always-llama3:8b", "always-llama3:70b:0.02", "threshold:0.01"], names) == [
        ("always-llama3:8b", 0.0), ("always-llama3:70b", 0.02), ("threshold", 0.01)]
    with pytest.raises(ConfigError, match="unknown baseline 'always-llama3'"):
        parse_beat(["always-llama3:x"], names)


def test_a_promise_that_cannot_be_measured_fails_saying_why(tmp_path):
    """The middle tier is labelled on the calibration rows only: on the test split always-<middle>
    has no quality. `--beat` it failed with 'quality 0.700 < always-b's — − 0.500'; it now says
    the qualities cannot be compared. The policy's own figures still check."""
    from asd.traces.bundle import open_bundle, write_bundle
    from asd.traces.split import split_bundle

    write_synthetic_bundle(tmp_path / "s", 200, 3, 5)
    split_bundle(tmp_path / "s", test_frac=0.5, seed=0)
    source = open_bundle(tmp_path / "s")
    requests, outputs = source.to_pandas("requests"), source.to_pandas("outputs")
    unjudged = (outputs["tier"] == 1) & outputs["request_id"].isin(requests.loc[requests["split"] == "test",
                                                                                 "request_id"])
    outputs["quality"] = outputs["quality"].where(~unjudged, None)
    outputs["accepted"] = outputs["accepted"].astype(object).where(~unjudged, None)
    write_bundle(tmp_path / "p", source.manifest, requests, outputs, source.to_pandas("drafts"))
    calibrate_to_file(tmp_path / "p", tmp_path / "pol.npz")
    result = check_policy(tmp_path / "pol.npz", tmp_path / "p", min_quality=0.0, beat=["always-synth-34b:0.5"])
    quality_row, beat_row = result.rows
    assert quality_row.passed
    assert not beat_row.passed and beat_row.measured is None
    assert ("beat always-synth-34b: always-synth-34b has no quality here (no replayed request is labelled where it "
            "stops), so the qualities cannot be compared") in beat_row.message


def test_cost_promises_on_a_trace_whose_last_tier_costs_nothing_fail_saying_why(tmp_path):
    """A trace recording 0 ms at the last tier (valid: timings are >= 0) has no cost relative to
    always-last: `--max-cost-rel` printed 'cost relative to always-last — > 1.000', `--against`
    was a TypeError sorting None costs. Each now fails and says the cost cannot be measured."""
    from asd.traces.bundle import open_bundle, write_bundle

    write_synthetic_bundle(tmp_path / "s", 200, 2, 5)
    source = open_bundle(tmp_path / "s")
    outputs = source.to_pandas("outputs")
    last = outputs["tier"] == 1
    outputs.loc[last, "e2e_ms"] = 0.0
    outputs.loc[last, "ttft_ms"] = 0.0
    write_bundle(tmp_path / "z", source.manifest, source.to_pandas("requests"), outputs, source.to_pandas("drafts"))
    calibrate_to_file(tmp_path / "z", tmp_path / "pol.npz")
    result = check_policy(tmp_path / "pol.npz", tmp_path / "z", max_cost_rel=1.0, beat="threshold",
                          against=tmp_path / "pol.npz", folds=2)
    assert [row.passed for row in result.rows] == [False, False, False]
    cost_row, beat_row, against_row = result.rows
    why = "(always-last costs 0 on the replayed requests, so no cost relative to it exists)"
    assert cost_row.message == f"cost relative to always-last cannot be measured {why}"
    assert beat_row.message == f"beat threshold: the costs cannot be compared {why}"
    assert against_row.message == f"regression vs old policy: the frontiers cannot be compared {why}"
    assert run("check", tmp_path / "pol.npz", tmp_path / "z", "--max-cost-rel", "1", "--folds", "2").exit_code == 1


def test_check_input_a_ci_job_would_trip_on(synth, tmp_path):
    """From the CI hunt: each was a traceback, a usage screen, a merged JUnit case or an option
    silently run."""
    bundle, policy = synth
    # a baseline twice: two JUnit cases of one name, which CI tools merge (hiding the failing one)
    with pytest.raises(ConfigError, match=r"--beat 'threshold:0.1': threshold is given twice"):
        check_policy(policy, bundle, beat=["threshold", "threshold:0.1"])
    # a bundle twice, by the same name or another path to it: two identical JUnit cases too
    with pytest.raises(ConfigError, match=rf"asd check: bundle {bundle} is given twice; give each bundle once"):
        check_policy(policy, [bundle, bundle], min_quality=0)
    with pytest.raises(ConfigError, match=r"is given twice \(also as "):
        check_policy(policy, [bundle, f"{Path(bundle).parent}/./{Path(bundle).name}"], min_quality=0)
    # tolerance=None with against=: a TypeError inside the frontier comparison
    with pytest.raises(ConfigError, match=r"tolerance=None: give a number >= 0"):
        check_policy(policy, bundle, min_quality=0, against=policy, tolerance=None)
    # an in-memory view has no path: the table and JUnit printed None, and junit_xml raised
    from asd.calibration.views import load_view
    from asd.simulator.check import junit_xml

    import dataclasses

    in_memory = dataclasses.replace(load_view(bundle), path=None)  # as view_from_records builds one
    result = check_policy(policy, [in_memory, bundle], min_quality=0)
    assert [r.bundle for r in result.rows] == ["bundle 1", str(bundle)]
    root = ET.fromstring(junit_xml(result))
    assert [c.get("classname") for c in root.iter("testcase")] == ["bundle 1", str(bundle)]
    # warnings of several bundles: one <system-err> per suite, as JUnit's schema allows
    split_copy = tmp_path / "copy"
    shutil.copytree(bundle, split_copy)
    both = check_policy(policy, [bundle, split_copy], min_quality=0, split="calibration")
    errs = list(ET.fromstring(junit_xml(both)).iter("system-err"))
    assert len(errs) == 1 and errs[0].text.count("in-sample") == 2
    # a directory as POLICY: one error line, not click's usage screen
    refused = run("check", bundle, bundle, "--min-quality", "0")
    assert refused.exit_code == 2 and refused.output == f"error: policy file {bundle} is a directory, not a policy file\n"
    # the load shapes latency alone: without a latency promise it is said to do nothing, and not run
    loaded = run("check", policy, bundle, "--min-quality", "0", "--mode", "des", "--rate", "5")
    assert loaded.exit_code == 0 and "warning: --mode, --rate have no effect without --max-latency" in loaded.output
    assert "mode replay" in loaded.output


def test_a_rate_too_low_to_time_is_refused_before_the_baselines_are_fitted(monkeypatch):
    """--rate 1e-300: the DES refused it only once every fold of the tuned baselines was fitted."""
    def no_fold(*args, **kwargs):
        raise AssertionError("a fold was fitted before the rate was refused")

    monkeypatch.setattr(Evaluation, "_fold", no_fold)
    line = one_error_line(run("check", POLICY, "builtin", "--max-latency", "p95=800", "--mode", "des",
                              "--rate", "1e-300"))
    assert line.startswith("error: arrivals at rate 1e-300 req/s: 600 requests span ")
    assert line.endswith("use a higher rate (for latencies without queueing, --mode replay)")
