"""Trace bundles: the recorded per-tier outputs, logprobs, timings and drafts that the
engine is calibrated on and the simulator replays.

Open a bundle for reading with `open_bundle(path_or_bundle)` (a directory, `"builtin"` or a
`Bundle`): it validates the bundle before anything reads it. Functions that take a bundle
(`summarize_bundle`, `read_arrays`, `split_bundle`, ...) accept all three and open it that way.
"""

from asd.traces.bundle import Bundle, new_manifest, open_bundle, write_bundle

__all__ = ["Bundle", "new_manifest", "open_bundle", "write_bundle"]
