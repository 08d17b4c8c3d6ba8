"""Operation counts, core mapping, energy estimates and reports (see docs in each module).

Entry points::

    result = analyze(graph, activity, "loihi", dt_s=1e-3)
    write_report(result, "build/energy.html")
"""

from .counts import (
    ActivityError,
    NetworkCounts,
    NetworkStructure,
    PopulationCounts,
    SynapseLayerCounts,
    count_operations,
)
from .mapping import CoreUsage, Mapping, MappingError, PopulationPlacement, Traffic, map_network
from .model import EnergyResult, LayerEnergy, NumberUsed, analyze, energy_from_counts
from .report import render_figures, write_report

__all__ = [
    "ActivityError",
    "CoreUsage",
    "EnergyResult",
    "LayerEnergy",
    "Mapping",
    "MappingError",
    "NetworkCounts",
    "NetworkStructure",
    "NumberUsed",
    "PopulationCounts",
    "PopulationPlacement",
    "SynapseLayerCounts",
    "Traffic",
    "analyze",
    "count_operations",
    "energy_from_counts",
    "map_network",
    "render_figures",
    "write_report",
]
