"""asd.engine."""
