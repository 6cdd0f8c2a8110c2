"""asd.simulator."""
