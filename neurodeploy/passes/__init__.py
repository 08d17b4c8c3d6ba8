"""Graph passes: pure functions ``NIRGraph -> NIRGraph`` (the input graph is not modified).

``lower_for_hardware`` runs them in order and names the failing pass. ``align_for_pipeline``
(with its helpers for quantized graphs) makes a lowered graph's timing on pipelined hardware match
training; the compiler runs it after lowering.
"""

from __future__ import annotations

import nir

from ..errors import GraphError
from .align_pipeline import (
    added_by_alignment,
    align_for_pipeline,
    alignment_summary,
    clock_scales,
    data_depth,
    is_aligned,
    node_depths,
    settle_precharge,
    training_timing,
)
from .flatten_subgraphs import flatten_subgraphs
from .fold_scale import fold_scale
from .fuse_linear import fuse_linear

# node types that survive lowering but that no fixed-point target can run
_NO_FIXED_POINT = (nir.Delay, nir.Threshold, nir.LI, nir.I, nir.CubaLI, nir.Conv1d)


def lower_for_hardware(graph: nir.NIRGraph) -> nir.NIRGraph:
    """Inline subgraphs, fold scales and fuse linear chains: every synapse is Affine/Conv2d."""
    done = []
    for p in (flatten_subgraphs, fold_scale, fuse_linear):
        try:
            graph = p(graph)
        except GraphError as e:
            raise GraphError(f"pass {p.__name__} (after {done or 'none'}): {e}") from e
        done.append(p.__name__)
    for name, node in graph.nodes.items():
        if isinstance(node, _NO_FIXED_POINT):
            raise GraphError(f"node {name!r} ({type(node).__name__}) has no Loihi fixed-point "
                             "mapping; graphs with it run in the float engine only")
    return graph


__all__ = ["added_by_alignment", "align_for_pipeline", "alignment_summary", "clock_scales",
           "data_depth", "flatten_subgraphs", "fold_scale", "fuse_linear", "is_aligned",
           "lower_for_hardware", "node_depths", "settle_precharge", "training_timing"]
