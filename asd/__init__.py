"""asd — adaptive speculative decoding: per-request stopping on a ladder of model tiers."""

__version__ = "0.1.0"
