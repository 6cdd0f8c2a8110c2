"""Names, paths and prompts that look like rich markup print as themselves in every report:
`[/x]` raised rich's MarkupError (a traceback; `asd check` exited 1, which CI reads as a failed
promise, and wrote no JUnit) and `[bold]` vanished from the name."""

from __future__ import annotations

import json

from click.testing import CliRunner

from asd.cli import main
from asd.markup import escaped
from asd.traces.importers import import_trace


def _bundle(tmp_path):
    rows = []
    for i in range(40):
        for tier, name in enumerate(("q[/b]", "big[bold]")):
            rows.append({"request_id": f"r{i}", "model": name, "output": f"answer [/i] {i % (3 + tier)}",
                         "quality": float((i + tier) % 3 != 0), "prompt": f"question [/x] {i}?",
                         "n_prompt_tokens": 10, "n_output_tokens": 5 + tier})
    src = tmp_path / "runs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "b[/x]"
    import_trace("jsonl", src, out, tiers="q[/b]:1,big[bold]:7")
    return out


def test_markup_in_names_paths_and_prompts_prints_as_text(tmp_path):
    bundle = _bundle(tmp_path)
    run = lambda *args: CliRunner().invoke(main, [str(a) for a in args])  # noqa: E731
    inspected = run("traces", "inspect", bundle)
    assert inspected.exit_code == 0, inspected.output
    assert "q[/b]" in inspected.output and "big[bold]" in inspected.output and str(bundle) in inspected.output
    calibrated = run("calibrate", bundle, "-o", tmp_path / "p.npz", "--cost-model", "params")
    assert calibrated.exit_code == 0, calibrated.output
    assert "big[bold]" in calibrated.output
    simulated = run("simulate", bundle, "--tau-max", "1e9", "--cost-model", "params", "--explain", "r3")
    assert simulated.exit_code == 0, simulated.output
    text = simulated.output
    assert "always-q[/b]" in text and "always-big[bold]" in text and "question [/x] 3?" in text
    assert "answer [/i]" in text
    swept = run("sweep", bundle, "--cost-model", "params")
    assert swept.exit_code == 0, swept.output
    assert "always-big[bold]" in swept.output
    checked = run("check", tmp_path / "p.npz", bundle, "--min-quality", "0", "--beat", "always-q[/b]:1",
                  "--junit", tmp_path / "j.xml")
    assert checked.exit_code == 0, checked.output
    assert "2 of 2 promises hold" in checked.output  # the table cuts the long path; the JUnit file names it
    import xml.etree.ElementTree as ET

    cases = ET.parse(tmp_path / "j.xml").getroot().iter("testcase")
    assert {(c.get("classname"), c.get("name")) for c in cases} == {(str(bundle), "min quality"),
                                                                    (str(bundle), "beat always-q[/b]")}


def test_escaped_keeps_the_text_and_the_structure():
    data = {"a[/b]": ["x[bold]y", 1.5, None, ("t[/i]",)], "n": 3}
    out = escaped(data)
    assert set(out) == {"a\\[/b]", "n"} and out["n"] == 3
    assert out["a\\[/b]"] == ["x\\[bold]y", 1.5, None, ("t\\[/i]",)]
