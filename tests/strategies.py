"""Hypothesis strategies for traces and engine tables, shared by the test modules."""

from __future__ import annotations

from hypothesis import strategies as st  # noqa: F401

# --- trace strategies ---


# --- engine table strategies ---
