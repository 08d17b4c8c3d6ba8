"""Simulation engines: float reference (NIR semantics) and native Loihi fixed point."""

from .fixed_engine import pipeline_depth, simulate_fixed
from .float_engine import SimResult, simulate_float

__all__ = ["SimResult", "pipeline_depth", "simulate_fixed", "simulate_float"]
