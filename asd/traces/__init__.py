"""asd.traces."""
