"""Trace bundles: the recorded per-tier outputs, logprobs, timings and drafts that the
engine is calibrated on and the simulator replays."""

from asd.traces.bundle import Bundle, new_manifest, open_bundle, write_bundle

__all__ = ["Bundle", "new_manifest", "open_bundle", "write_bundle"]
