"""asd.live.backends."""
