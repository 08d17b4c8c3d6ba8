"""Execution backends (Lava simulation; hardware backends later)."""
