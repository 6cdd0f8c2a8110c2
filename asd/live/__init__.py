"""asd.live."""
