"""Tests of asd.calibration."""
