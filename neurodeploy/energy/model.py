"""Energy per inference, per layer, for a target; and the equivalent ANN's energy.

Every energy is a count from :mod:`.counts` (or traffic from :mod:`.mapping`) times one number
of a target TOML; :meth:`EnergyResult.numbers_used` lists each with its citation.

Neuromorphic estimate (targets with ``[energy]``)
    synapse layer: ``synops x energy.synop_pj``;
    population: ``active x energy.neuron_update_active_pj + (updates - active) x
    energy.neuron_update_inactive_pj``;
    spike routing of each emitter (inputs included): ``messages x energy.spike_in_tile_pj +
    east-west hops x energy.hop_ew_pj + north-south hops x energy.hop_ns_pj``.
    Static power and off-chip I/O are not included (they can dominate: see the Loihi 2 PilotNet
    measurements in the notes).

45 nm AC/MAC estimate of the same SNN (from the ANN reference target's ``[ann]``)
    ``Effective_ACs x ann.ac_fp32_pj + Effective_MACs x ann.mac_fp32_pj`` (pooling and identity
    layers included as additions); neuron updates are not charged (the usual convention).

Equivalent ANN (same layers, every connection computed, ``ann_steps`` passes)
    weight layers: dense connections x ``ann.mac_fp32_pj`` (int8: ``ann.mac_int8_pj``);
    sum pooling and residual identity: connections x ``ann.add_*``; average pooling adds one
    ``ann.mult_*`` per output; ``Scale`` one multiply per element. Activations are free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import nir

from ..passes.align_pipeline import added_by_alignment
from ..targets import Target, load_target
from .counts import NetworkCounts, PopulationCounts, SynapseLayerCounts, count_operations
from .mapping import Mapping, Traffic, map_network

_WEIGHT_KINDS = ("Affine", "Linear", "Conv1d", "Conv2d")


@dataclass
class LayerEnergy:
    """Energy of one row of the report (a population or a synapse layer), per inference."""

    name: str
    kind: str
    role: str  # "input" | "neuron" | "readout" | "synapse"
    n_neurons: int
    n_synapses: int
    spikes_per_sample: float
    synops_per_sample: float
    neuron_updates_per_sample: float
    active_updates_per_sample: float
    messages_per_sample: float
    hops_ew_per_sample: float
    hops_ns_per_sample: float
    synop_pj: float = 0.0
    neuron_update_pj: float = 0.0
    routing_pj: float = 0.0
    snn_45nm_pj: float = 0.0
    ann_fp32_pj: float = 0.0
    ann_int8_pj: float = 0.0
    share: float = 0.0
    added_by: str = ""  # "relay", "clock" or "clock bias": added by pipeline alignment

    @property
    def kind_label(self) -> str:
        """``kind``, marked where pipeline alignment added the layer (real hardware cost)."""
        return f"{self.kind} ({self.added_by}, alignment)" if self.added_by else self.kind

    @property
    def total_pj(self) -> float:
        return self.synop_pj + self.neuron_update_pj + self.routing_pj


@dataclass
class NumberUsed:
    key: str  # dotted TOML key, e.g. "energy.synop_pj"
    target: str
    value: float
    unit: str
    citation: str
    assumption: bool


@dataclass
class EnergyResult:
    """Everything a report needs. Energies are per inference (one sample of T steps)."""

    target: Target
    ann_target: Target
    counts: NetworkCounts
    mapping: Mapping | None
    layers: list[LayerEnergy]
    dt_s: float | None
    ann_steps: int
    estimate: str  # "neuromorphic" or "45nm-ac-mac"
    notes: list[str] = field(default_factory=list)

    @property
    def total_pj(self) -> float:
        return sum(layer.total_pj for layer in self.layers)

    @property
    def snn_45nm_pj(self) -> float:
        return sum(layer.snn_45nm_pj for layer in self.layers)

    @property
    def ann_fp32_pj(self) -> float:
        return sum(layer.ann_fp32_pj for layer in self.layers)

    @property
    def ann_int8_pj(self) -> float:
        return sum(layer.ann_int8_pj for layer in self.layers)

    @property
    def ann_fp32_ratio(self) -> float:
        """ANN fp32 energy / SNN energy on the target (> 1: the SNN needs less)."""
        return self.ann_fp32_pj / self.total_pj if self.total_pj > 0 else math.inf

    @property
    def ann_int8_ratio(self) -> float:
        return self.ann_int8_pj / self.total_pj if self.total_pj > 0 else math.inf

    @property
    def duration_s(self) -> float | None:
        return None if self.dt_s is None else self.dt_s * self.counts.n_steps

    @property
    def mean_power_w(self) -> float | None:
        """Dynamic power while running one inference (energy / (T dt))."""
        d = self.duration_s
        return None if not d else self.total_pj * 1e-12 / d

    def numbers_used(self) -> list[NumberUsed]:
        """Every target number the estimate used, with its citation."""
        keys: list[tuple[Target, str, str]] = []
        if self.estimate == "neuromorphic":
            keys += [(self.target, f"energy.{k}", "pJ") for k in (
                "synop_pj", "neuron_update_active_pj", "neuron_update_inactive_pj",
                "spike_in_tile_pj", "hop_ew_pj", "hop_ns_pj")]
        if self.mapping is not None:
            keys += [(self.target, f"limits.{k}", "") for k in (
                "neurons_per_core", "synapse_memory_bits", "fan_in_axons", "fan_out_axons",
                "cores_per_chip", "cores_per_tile", "mesh_width_tiles", "mesh_height_tiles",
                "synapse_word_bits", "synapse_block_header_bits", "synapses_per_block",
                "synapse_index_bits_min")]
            keys.append((self.target, "numerics.weight_bits", "bit"))
        if self.target.numerics is not None:
            keys += [(self.target, f"numerics.{k}", "bit") for k in ("state_bits", "weight_bits")]
            keys.append((self.target, "numerics.state_vars_per_neuron", ""))
        keys += [(self.ann_target, f"ann.{k}", "pJ") for k in (
            "ac_fp32_pj", "mac_fp32_pj", "mult_fp32_pj", "add_fp32_pj",
            "mac_int8_pj", "mult_int8_pj", "add_int8_pj")]
        out, seen = [], set()
        for t, key, unit in keys:
            if (t.name, key) in seen:
                continue
            seen.add((t.name, key))
            c = t.citation(key)
            out.append(NumberUsed(key, t.name, c.value, unit, c.text(), c.assumption))
        return out

    def to_dict(self) -> dict[str, Any]:
        def num(x):
            if x is None:
                return None
            x = float(x)
            return x if math.isfinite(x) else None

        return {
            "target": {"name": self.target.name, "description": self.target.description,
                       "path": str(self.target.path), "inherits": list(self.target.inherits)},
            "ann_reference": self.ann_target.name,
            "estimate": self.estimate,
            "n_steps": self.counts.n_steps,
            "n_samples": self.counts.n_samples,
            "dt_s": self.dt_s,
            "ann_steps": self.ann_steps,
            "totals": {
                "energy_pj_per_inference": num(self.total_pj),
                "synop_pj": num(sum(r.synop_pj for r in self.layers)),
                "neuron_update_pj": num(sum(r.neuron_update_pj for r in self.layers)),
                "routing_pj": num(sum(r.routing_pj for r in self.layers)),
                "snn_45nm_pj": num(self.snn_45nm_pj),
                "ann_fp32_pj": num(self.ann_fp32_pj),
                "ann_int8_pj": num(self.ann_int8_pj),
                "ann_fp32_ratio": num(self.ann_fp32_ratio),
                "ann_int8_ratio": num(self.ann_int8_ratio),
                "duration_s": num(self.duration_s),
                "mean_power_w": num(self.mean_power_w),
                "synops_per_sample": self.counts.synops_per_sample,
                "sinabs_synops_per_sample": self.counts.sinabs_synops_per_sample,
                "neuron_updates_per_sample": self.counts.neuron_updates_per_sample,
                "active_updates_per_sample": self.counts.active_updates_per_sample,
                "spikes_per_sample": self.counts.spikes_per_sample,
                "cores": None if self.mapping is None else self.mapping.n_cores,
                "chips": None if self.mapping is None else self.mapping.n_chips,
            },
            "layers": [
                {**{k: (num(v) if isinstance(v, float) else v) for k, v in vars(r).items()},
                 "total_pj": num(r.total_pj)}
                for r in self.layers
            ],
            "neurobench": self.counts.neurobench(),
            "numbers_used": [vars(n) for n in self.numbers_used()],
            "notes": list(self.notes),
            "counts": self.counts.to_dict(),
            "mapping": None if self.mapping is None else self.mapping.to_dict(),
        }


def _ann_layer(s: SynapseLayerCounts, ann, steps: int) -> tuple[float, float]:
    """(fp32, int8) energy of the equivalent ANN layer over ``steps`` passes."""
    conn = s.n_connections * steps
    outs = math.prod(s.output_shape) * steps
    if s.kind in _WEIGHT_KINDS:
        return conn * ann.mac_fp32_pj, conn * ann.mac_int8_pj
    if s.kind in ("SumPool2d", "Identity"):
        return conn * ann.add_fp32_pj, conn * ann.add_int8_pj
    if s.kind == "AvgPool2d":
        return (conn * ann.add_fp32_pj + outs * ann.mult_fp32_pj,
                conn * ann.add_int8_pj + outs * ann.mult_int8_pj)
    # Scale: one multiply per element
    return outs * ann.mult_fp32_pj, outs * ann.mult_int8_pj


def energy_from_counts(
    counts: NetworkCounts,
    target: str | Target,
    *,
    mapping: Mapping | None = None,
    dt_s: float | None = None,
    ann_reference: str | Target | None = None,
    ann_steps: int | None = None,
) -> EnergyResult:
    """Energy of already-counted activity (see :func:`analyze`)."""
    target = load_target(target)
    ref = ann_reference or target.ann_reference or (target if target.ann is not None else None)
    if ref is None:
        ref = "ann-45nm"
    ann_target = load_target(ref)
    ann = ann_target.require("ann")
    steps = counts.n_steps if ann_steps is None else int(ann_steps)
    if steps < 1:
        raise ValueError(f"ann_steps must be >= 1, got {steps}")
    notes: list[str] = []
    estimate = "neuromorphic" if target.energy is not None else "45nm-ac-mac"
    if estimate == "45nm-ac-mac":
        notes.append(f"target {target.name!r} has no [energy]: the SNN estimate is the 45 nm "
                     "AC/MAC estimate (ACs x ann.ac_fp32_pj + MACs x ann.mac_fp32_pj)")
    traffic: dict[str, Traffic] = {}
    if mapping is not None:
        traffic = mapping.traffic(counts)
    elif estimate == "neuromorphic":
        notes.append("no core mapping: each spike is charged one message and no hops (a lower "
                     "bound on routing energy)")
    notes.append(f"equivalent ANN: every connection computed, {steps} pass(es) per inference "
                 f"({'one per time step' if ann_steps is None else 'set by the caller'})")
    notes.append("neuromorphic estimate excludes static power and off-chip I/O")

    pops = {p.name: p for p in counts.populations}
    syns = {s.name: s for s in counts.synapse_layers}
    rows: list[LayerEnergy] = []
    for name in counts.display_order:
        if name in syns:
            s = syns[name]
            row = LayerEnergy(
                name=name, kind=s.kind, role="synapse", n_neurons=0, n_synapses=s.n_synapses,
                spikes_per_sample=0.0, synops_per_sample=s.synops_per_sample,
                neuron_updates_per_sample=0.0, active_updates_per_sample=0.0,
                messages_per_sample=0.0, hops_ew_per_sample=0.0, hops_ns_per_sample=0.0,
            )
            row.snn_45nm_pj = (s.effective_acs_per_sample * ann.ac_fp32_pj
                               + s.effective_macs_per_sample * ann.mac_fp32_pj)
            row.ann_fp32_pj, row.ann_int8_pj = _ann_layer(s, ann, steps)
            if estimate == "neuromorphic":
                row.synop_pj = s.synops_per_sample * target.energy.synop_pj
            else:
                row.synop_pj = row.snn_45nm_pj
            rows.append(row)
        elif name in pops:
            p: PopulationCounts = pops[name]
            tr = traffic.get(name)
            if tr is None:
                msgs = p.spikes_per_sample if p.role != "readout" else 0.0
                tr = Traffic(msgs, 0.0, 0.0)
            row = LayerEnergy(
                name=name, kind=p.kind, role=p.role, n_neurons=p.n_neurons, n_synapses=0,
                spikes_per_sample=p.spikes_per_sample, synops_per_sample=0.0,
                neuron_updates_per_sample=p.neuron_updates_per_sample,
                active_updates_per_sample=p.active_updates_per_sample,
                messages_per_sample=tr.messages_per_sample,
                hops_ew_per_sample=tr.hops_ew_per_sample,
                hops_ns_per_sample=tr.hops_ns_per_sample,
            )
            if estimate == "neuromorphic":
                e = target.energy
                inactive = p.neuron_updates_per_sample - p.active_updates_per_sample
                row.neuron_update_pj = (p.active_updates_per_sample * e.neuron_update_active_pj
                                        + inactive * e.neuron_update_inactive_pj)
                row.routing_pj = (tr.messages_per_sample * e.spike_in_tile_pj
                                  + tr.hops_ew_per_sample * e.hop_ew_pj
                                  + tr.hops_ns_per_sample * e.hop_ns_pj)
            rows.append(row)
    total = sum(r.total_pj for r in rows)
    for r in rows:
        r.share = r.total_pj / total if total > 0 else 0.0
    return EnergyResult(target=target, ann_target=ann_target, counts=counts, mapping=mapping,
                        layers=rows, dt_s=dt_s, ann_steps=steps, estimate=estimate, notes=notes)


def analyze(
    graph: nir.NIRGraph,
    activity: dict[str, Any],
    target: str | Target = "loihi",
    *,
    dt_s: float | None = None,
    ann_reference: str | Target | None = None,
    ann_steps: int | None = None,
    map_cores: bool = True,
    raster_sample: int = 0,
) -> EnergyResult:
    """Count operations, map onto cores and estimate energy per inference.

    Parameters
    ----------
    graph, activity
        a flat NIR graph and ``{node: [T, B, *shape]}`` for every Input and neuron node.
    target
        a target name (``"loihi"``, ``"loihi2"``, ``"loihi-sim"``, ``"ann-45nm"``), a TOML path,
        or a loaded :class:`~neurodeploy.targets.Target`.
    dt_s
        seconds per time step (for power and rates); defaults to ``graph.metadata["dt"]``.
    ann_reference
        target whose ``[ann]`` prices the equivalent ANN; defaults to the target's
        ``ann_reference`` (``"ann-45nm"``).
    ann_steps
        passes of the equivalent ANN per inference; defaults to T (one per time step, as
        NeuroBench's ``Dense``). Use 1 for a static-input ANN.
    map_cores
        place the network on cores (needed for routing energy); raises
        :class:`~neurodeploy.energy.mapping.MappingError` when it does not fit.
    """
    target = load_target(target)
    if dt_s is None:
        meta = getattr(graph, "metadata", None)
        dt = meta.get("dt") if isinstance(meta, dict) else None
        dt_s = float(dt) if dt is not None else None
    counts = count_operations(graph, activity, numerics=target.numerics,
                              raster_sample=raster_sample)
    mapping = None
    if map_cores and target.limits is not None:
        mapping = map_network(counts, target)
    result = energy_from_counts(counts, target, mapping=mapping, dt_s=dt_s,
                                ann_reference=ann_reference, ann_steps=ann_steps)
    for row in result.layers:
        node = graph.nodes.get(row.name)
        if node is not None:
            row.added_by = added_by_alignment(node) or ""
    return result
