"""Quantization of a lowered NIR graph to Loihi-style fixed point."""

from .loihi import LoihiFormat, QuantReport, quantize_graph

__all__ = ["LoihiFormat", "QuantReport", "quantize_graph"]
