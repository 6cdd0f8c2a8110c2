"""Regenerate asd/calibration/data/hardware_profile.json from the Vidur profiling tables.

    python scripts/fit_hardware_profile.py [--vidur ../shared/data/vidur] [-o asd/calibration/data/hardware_profile.json]

The method, constants and source commit are written into the JSON's `provenance`; the
fitting code is `asd.calibration.profiles.fit_hardware_profile`. Also prints the held-out
error against Vidur and the comparison with the LLMPerf leaderboard when that data is present.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path

from asd.calibration.profiles import PROFILE_PATH, HardwareProfile, fit_hardware_profile, llmperf_comparison

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ASD_SHARED_DATA", REPO.parent / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vidur", type=Path, default=SHARED / "vidur")
    parser.add_argument("-o", "--output", type=Path, default=PROFILE_PATH)
    args = parser.parse_args()
    document = fit_hardware_profile(args.vidur)
    document["provenance"]["generated_at"] = dt.date.today().isoformat()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {args.output}: {len(document['entries'])} entries")
    for key, value in document["validation"].items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:.3f}" for k, v in value.items() if isinstance(v, float))
            print(f"  {key}: {value}")
        else:
            print(f"  {key}: {value:.3f}")
    llmperf = SHARED / "llmperf_leaderboard" / "requests.csv"
    if llmperf.is_file():
        for row in llmperf_comparison(llmperf, HardwareProfile(document)):
            itl = sorted(p["itl_ms"] for p in row["providers"].values())
            ttft = sorted(p["ttft_ms"] for p in row["providers"].values())
            prof = {(p["hardware"], p["tensor_parallel"]): p for p in row["profile"]}
            print(f"  llmperf {row['size']}: providers ITL {itl[0]:.1f}..{itl[-1]:.1f} ms, TTFT {ttft[0]:.0f}..{ttft[-1]:.0f} ms; "
                  + ", ".join(f"{h} TP{tp} ITL {p['itl_ms']:.1f} TTFT {p['ttft_ms']:.0f}" for (h, tp), p in prof.items()))


if __name__ == "__main__":
    main()
