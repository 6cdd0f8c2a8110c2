"""asd.calibration."""
