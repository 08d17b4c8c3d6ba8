"""Quantization of a lowered NIR graph to Loihi-style fixed point.

``quantize_graph`` applies per-layer scales from an observer (``observers``: min/max,
percentile) or from ``calibrate`` (a search on calibration data for the scales and threshold
nudges that keep firing rates closest to the float model).
"""

from .calibrate import Calibration, calibrate, simulate_layerwise
from .loihi import LayerQuant, LoihiFormat, QuantReport, quantize_graph
from .observers import (
    OBSERVERS,
    MinMaxObserver,
    PercentileObserver,
    ScaleObserver,
    SearchObserver,
    make_observer,
)

__all__ = [
    "OBSERVERS",
    "Calibration",
    "LayerQuant",
    "LoihiFormat",
    "MinMaxObserver",
    "PercentileObserver",
    "QuantReport",
    "ScaleObserver",
    "SearchObserver",
    "calibrate",
    "make_observer",
    "quantize_graph",
    "simulate_layerwise",
]
