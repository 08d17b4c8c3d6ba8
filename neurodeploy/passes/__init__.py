"""Graph passes: pure functions ``NIRGraph -> NIRGraph`` (the input graph is not modified).

``lower_for_hardware`` runs them in order and names the failing pass.
"""

from __future__ import annotations

import nir

from ..errors import GraphError
from .fold_scale import fold_scale
from .fuse_linear import fuse_linear


def lower_for_hardware(graph: nir.NIRGraph) -> nir.NIRGraph:
    """Fold scales and fuse linear chains so every synapse layer is one Affine or Conv2d."""
    done = []
    for p in (fold_scale, fuse_linear):
        try:
            graph = p(graph)
        except GraphError as e:
            raise GraphError(f"pass {p.__name__} (after {done or 'none'}): {e}") from e
        done.append(p.__name__)
    return graph


__all__ = ["fold_scale", "fuse_linear", "lower_for_hardware"]
