"""Place populations onto neuromorphic cores under a target's limits, and route their spikes.

Placement policy (greedy, one population per core, like nengo-loihi's one block per core):

* populations are placed in graph order (inputs first, breadth-first); each is cut into
  contiguous chunks of its flattened (C-order) neurons, the largest chunk size that satisfies
  every limit, and each chunk takes a core of its own;
* a core's *input axons* are the distinct source neurons with at least one non-zero synapse on
  it; its *synapse memory* follows nengo-loihi's format (see
  :class:`neurodeploy.targets.CoreLimits`); its *output axons* are, summed over its neurons, the
  number of distinct destination cores each neuron reaches;
* a chunk that breaks the output-axon limit is made smaller and everything is placed again;
  a limit that even a single neuron breaks raises :class:`MappingError` naming the layer.

Geometry: global core ``g`` is on chip ``g // cores_per_chip``; within the chip, tile
``(g % cores_per_chip) // cores_per_tile`` sits at ``(tile % mesh_width, tile // mesh_width)``;
chips are laid side by side east-west, so a hop between chips counts like one on a chip
(an assumption: inter-chip links are not modelled). Graph inputs are injected at tile (0, 0) of
chip 0 (assumption: the host link sits at the mesh origin).

Spike traffic: a spike of neuron ``j`` is one message to each distinct destination core; a
message to a core travels ``|dx|`` east-west and ``|dy|`` north-south tile hops (Manhattan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np
import scipy.sparse as sp

from ..errors import NeurodeployError
from ..targets import CoreLimits, Target, load_target
from .counts import NetworkCounts, NetworkStructure


class MappingError(NeurodeployError, ValueError):
    """The network does not fit the target; the message names the layer and the limit."""

    def __init__(self, layer: str | None, message: str):
        self.layer = layer
        super().__init__(message)


@dataclass
class CoreUsage:
    """One core: which neurons it holds and how much of each limit they use."""

    core: int
    chip: int
    x: int  # global tile column (chips side by side east-west)
    y: int  # tile row
    population: str
    neuron_start: int
    neuron_stop: int
    in_axons: int
    out_axons: int
    synapse_memory_bits: int
    n_synapses: int

    @property
    def n_neurons(self) -> int:
        return self.neuron_stop - self.neuron_start

    def utilisation(self, limits: CoreLimits) -> dict[str, float]:
        return {
            "neurons": self.n_neurons / limits.neurons_per_core,
            "in_axons": self.in_axons / limits.fan_in_axons,
            "out_axons": self.out_axons / limits.fan_out_axons,
            "synapse_memory": self.synapse_memory_bits / limits.synapse_memory_bits,
        }


@dataclass
class PopulationPlacement:
    """Where one emitter or population lives and where its spikes go.

    Inputs have no cores (they come from the host). ``dest_cores`` etc. are per neuron.
    """

    name: str
    role: str
    n_neurons: int
    neurons_per_core: int
    cores: list[int]
    max_fan_in: int  # largest number of distinct source neurons of one neuron
    dest_cores: np.ndarray = field(repr=False)  # messages per spike, per neuron
    hops_ew: np.ndarray = field(repr=False)  # east-west hops per spike, per neuron
    hops_ns: np.ndarray = field(repr=False)


@dataclass
class Traffic:
    """Spike traffic of one emitter, per sample."""

    messages_per_sample: float
    hops_ew_per_sample: float
    hops_ns_per_sample: float


@dataclass
class Mapping:
    target: str
    limits: CoreLimits
    weight_bits: int
    placements: dict[str, PopulationPlacement]
    cores: list[CoreUsage]

    @property
    def n_cores(self) -> int:
        return len(self.cores)

    @property
    def n_chips(self) -> int:
        return max((c.chip for c in self.cores), default=-1) + 1

    def traffic(self, counts: NetworkCounts) -> dict[str, Traffic]:
        """Messages and hops per sample of every emitter, from its per-neuron spike counts."""
        out: dict[str, Traffic] = {}
        for p in counts.populations:
            pl = self.placements.get(p.name)
            if pl is None or p.role == "readout":
                continue
            s = np.asarray(p.spike_count_per_neuron, dtype=float)
            out[p.name] = Traffic(
                messages_per_sample=float(s @ pl.dest_cores),
                hops_ew_per_sample=float(s @ pl.hops_ew),
                hops_ns_per_sample=float(s @ pl.hops_ns),
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "n_cores": self.n_cores,
            "n_chips": self.n_chips,
            "placements": [
                {"name": p.name, "role": p.role, "n_neurons": p.n_neurons,
                 "neurons_per_core": p.neurons_per_core, "cores": list(p.cores),
                 "max_fan_in": p.max_fan_in,
                 "mean_dest_cores_per_spike": float(np.mean(p.dest_cores)) if p.n_neurons else 0.0}
                for p in self.placements.values()
            ],
            "cores": [
                {"core": c.core, "chip": c.chip, "x": c.x, "y": c.y, "population": c.population,
                 "neurons": [c.neuron_start, c.neuron_stop], "in_axons": c.in_axons,
                 "out_axons": c.out_axons, "synapse_memory_bits": c.synapse_memory_bits,
                 "n_synapses": c.n_synapses, "utilisation": c.utilisation(self.limits)}
                for c in self.cores
            ],
        }


# ---------------------------------------------------------------------------------------------


def _chunk_indicator(n: int, size: int) -> sp.csr_matrix:
    """``[n_chunks, n]`` with 1 where neuron i is in chunk i // size."""
    n_chunks = -(-n // size)
    rows = np.arange(n) // size
    return sp.csr_matrix((np.ones(n), (rows, np.arange(n))), shape=(n_chunks, n))


def _synapse_bits(counts: np.ndarray, bits_per_synapse: int, lim: CoreLimits) -> np.ndarray:
    """nengo-loihi ``bits_per_axon`` for axons carrying ``counts`` synapses each."""
    spb, hdr, word = lim.synapses_per_block, lim.synapse_block_header_bits, lim.synapse_word_bits
    full, rem = np.divmod(counts.astype(np.int64), spb)
    block = -(-(spb * bits_per_synapse + hdr) // word) * word
    last = np.where(rem > 0, -(-(rem * bits_per_synapse + hdr) // word) * word, 0)
    return full * block + last


class _Placer:
    def __init__(self, st: NetworkStructure, target: Target):
        self.st = st
        self.target = target
        self.lim: CoreLimits = target.require("limits")
        self.weight_bits = int(target.require("numerics").weight_bits)
        self.where = f"target {target.name!r} ({target.path})"
        tiles = self.lim.mesh_width_tiles * self.lim.mesh_height_tiles
        if self.lim.cores_per_chip > tiles * self.lim.cores_per_tile:
            raise MappingError(None, f"{self.where}: limits.cores_per_chip = "
                               f"{self.lim.cores_per_chip} exceeds mesh {tiles} tiles x "
                               f"{self.lim.cores_per_tile} cores per tile")
        # incoming structural connectivity of each population, sources stacked as columns
        self.sources: dict[str, list[str]] = {}
        self.offsets: dict[str, dict[str, int]] = {}
        self.a_in: dict[str, sp.csr_matrix] = {}
        self.proj: dict[tuple[str, str], sp.csr_matrix] = {}  # (dst, src) -> [n_dst, n_src]
        for d in st.populations:
            proj = st.projections(d)
            srcs = list(proj)
            offs, cols, off = {}, [], 0
            for s in srcs:
                offs[s] = off
                off += st.size(s)
                cols.append(proj[s])
                self.proj[(d, s)] = proj[s]
            self.sources[d], self.offsets[d] = srcs, offs
            self.a_in[d] = sp.hstack(cols, format="csr") if cols else sp.csr_matrix((st.size(d), 0))
        self.out_of: dict[str, list[str]] = {}
        for d, s in self.proj:
            self.out_of.setdefault(s, []).append(d)

    # -- input side: neurons, input axons, synapse memory ------------------------------------
    def _in_usage(self, d: str, size: int):
        a = self.a_in[d]
        k = (_chunk_indicator(a.shape[0], size) @ a).tocsr()
        k.eliminate_zeros()
        in_axons = np.diff(k.indptr)
        idx_bits = max(self.lim.synapse_index_bits_min, math.ceil(math.log2(max(size, 1))))
        bits = _synapse_bits(k.data, self.weight_bits + idx_bits, self.lim)
        rows = np.repeat(np.arange(k.shape[0]), in_axons)
        mem = np.bincount(rows, weights=bits, minlength=k.shape[0]).astype(np.int64)
        syn = np.bincount(rows, weights=k.data, minlength=k.shape[0]).astype(np.int64)
        return in_axons, mem, syn

    def _in_ok(self, d: str, size: int) -> bool:
        in_axons, mem, _ = self._in_usage(d, size)
        return bool(np.all(in_axons <= self.lim.fan_in_axons)
                    and np.all(mem <= self.lim.synapse_memory_bits))

    def _single_neuron_error(self, d: str) -> MappingError:
        a = self.a_in[d]
        fan_in = np.diff(a.indptr)
        i = int(np.argmax(fan_in))
        src = ", ".join(self.sources[d]) or "nothing"
        if fan_in[i] > self.lim.fan_in_axons:
            return MappingError(d, (
                f"layer {d!r} does not fit {self.where}: neuron {i} has a fan-in of "
                f"{int(fan_in[i])} distinct source neurons (from {src}), more than "
                f"limits.fan_in_axons = {self.lim.fan_in_axons} input axons per core"))
        _, mem, _ = self._in_usage(d, 1)
        j = int(np.argmax(mem))
        return MappingError(d, (
            f"layer {d!r} does not fit {self.where}: neuron {j} alone needs {int(mem[j])} bits of "
            f"synapse memory (fan-in {int(fan_in[j])} x {self.weight_bits}-bit weights with "
            f"index and block headers), more than limits.synapse_memory_bits = "
            f"{self.lim.synapse_memory_bits} per core"))

    def largest_chunk(self, d: str, upper: int, extra_ok=None) -> int:
        def ok(s: int) -> bool:
            return self._in_ok(d, s) and (extra_ok is None or extra_ok(s))

        upper = max(1, min(upper, self.lim.neurons_per_core, self.st.size(d)))
        if ok(upper):
            return upper
        if not ok(1):
            if not self._in_ok(d, 1):
                raise self._single_neuron_error(d)
            raise MappingError(d, f"layer {d!r} does not fit {self.where}: a single neuron fans "
                               f"out to more than limits.fan_out_axons = "
                               f"{self.lim.fan_out_axons} destination cores")
        lo, hi = 1, upper  # ok(lo), not ok(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(mid):
                lo = mid
            else:
                hi = mid
        return lo

    # -- output side ---------------------------------------------------------------------------
    def dest_core_matrix(self, s: str, chunk: dict[str, int], first_core: dict[str, int]):
        """``[n_cores_total, n_s]`` reach of emitter ``s`` (1 where neuron j hits core c)."""
        n_s = self.st.size(s)
        blocks = []
        for d in self.out_of.get(s, []):
            a = self.proj[(d, s)]
            r = (_chunk_indicator(a.shape[0], chunk[d]) @ a).tocsr()
            r.data[:] = 1.0
            r.eliminate_zeros()
            r = r.tocoo()
            blocks.append((r.row + first_core[d], r.col))
        if not blocks:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), n_s
        rows = np.concatenate([b[0] for b in blocks])
        cols = np.concatenate([b[1] for b in blocks])
        return rows.astype(np.int64), cols.astype(np.int64), n_s

    def out_axons_per_chunk(self, s: str, size: int, chunk, first_core) -> np.ndarray:
        chunk = {**chunk, s: size}
        rows, cols, n_s = self.dest_core_matrix(s, chunk, first_core)
        per_neuron = np.bincount(cols, minlength=n_s)
        return np.bincount(np.arange(n_s) // size, weights=per_neuron).astype(np.int64)


def _positions(n_cores: int, lim: CoreLimits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.arange(n_cores)
    chip = g // lim.cores_per_chip
    tile = (g % lim.cores_per_chip) // lim.cores_per_tile
    x = chip * lim.mesh_width_tiles + tile % lim.mesh_width_tiles
    y = tile // lim.mesh_width_tiles
    return chip, x, y


def map_network(
    graph: nir.NIRGraph | NetworkStructure | NetworkCounts, target: str | Target
) -> Mapping:
    """Place every population of ``graph`` on cores of ``target`` and route its spikes.

    Raises :class:`MappingError` naming the layer when a single neuron breaks a limit.
    """
    target = load_target(target)
    if isinstance(graph, NetworkCounts):
        st = graph.structure
    elif isinstance(graph, NetworkStructure):
        st = graph
    else:
        st = NetworkStructure.from_graph(graph)
    placer = _Placer(st, target)
    lim = placer.lim
    pops = [n for n in st.display_order if n in st.populations]

    chunk = {d: placer.largest_chunk(d, lim.neurons_per_core) for d in pops}
    for _ in range(len(pops) + 8):
        first_core, nxt = {}, 0
        for d in pops:
            first_core[d] = nxt
            nxt += -(-st.size(d) // chunk[d])
        changed = False
        for d in pops:
            out = placer.out_axons_per_chunk(d, chunk[d], chunk, first_core)
            if np.all(out <= lim.fan_out_axons):
                continue

            def out_ok(s: int, d=d, first_core=first_core) -> bool:
                return bool(np.all(placer.out_axons_per_chunk(d, s, chunk, first_core)
                                   <= lim.fan_out_axons))

            chunk[d] = placer.largest_chunk(d, chunk[d] - 1, out_ok)
            changed = True
            break
        if not changed:
            break
    else:
        raise MappingError(None, f"could not satisfy limits.fan_out_axons = {lim.fan_out_axons} "
                           f"on {placer.where} after repeated re-placement")

    first_core, nxt = {}, 0
    for d in pops:
        first_core[d] = nxt
        nxt += -(-st.size(d) // chunk[d])
    n_cores = nxt
    chip, xs, ys = _positions(n_cores, lim)

    placements: dict[str, PopulationPlacement] = {}
    out_axons_core = np.zeros(n_cores, np.int64)
    for s in [n for n in st.display_order if n in st.emitters or n in st.populations]:
        n_s = st.size(s)
        if s in chunk:
            src_core = first_core[s] + np.arange(n_s) // chunk[s]
            sx, sy = xs[src_core], ys[src_core]
            cores = list(range(first_core[s], first_core[s] + -(-n_s // chunk[s])))
        else:  # a graph input: injected at the mesh origin
            sx, sy = np.zeros(n_s, np.int64), np.zeros(n_s, np.int64)
            cores = []
        rows, cols, _ = placer.dest_core_matrix(s, chunk, first_core)
        dest = np.bincount(cols, minlength=n_s).astype(float)
        hew = np.bincount(cols, weights=np.abs(xs[rows] - sx[cols]), minlength=n_s)
        hns = np.bincount(cols, weights=np.abs(ys[rows] - sy[cols]), minlength=n_s)
        if s in chunk:
            np.add.at(out_axons_core, src_core, dest.astype(np.int64))
        fan_in = np.diff(placer.a_in[s].indptr) if s in placer.a_in else np.zeros(1, np.int64)
        placements[s] = PopulationPlacement(
            name=s, role=st.role(s), n_neurons=n_s, neurons_per_core=chunk.get(s, 0),
            cores=cores, max_fan_in=int(fan_in.max()) if fan_in.size else 0,
            dest_cores=dest, hops_ew=hew.astype(float), hops_ns=hns.astype(float),
        )

    cores: list[CoreUsage] = []
    for d in pops:
        in_axons, mem, syn = placer._in_usage(d, chunk[d])
        for i, core in enumerate(placements[d].cores):
            start = i * chunk[d]
            cores.append(CoreUsage(
                core=core, chip=int(chip[core]), x=int(xs[core]), y=int(ys[core]), population=d,
                neuron_start=start, neuron_stop=min(st.size(d), start + chunk[d]),
                in_axons=int(in_axons[i]) if i < in_axons.size else 0,
                out_axons=int(out_axons_core[core]),
                synapse_memory_bits=int(mem[i]) if i < mem.size else 0,
                n_synapses=int(syn[i]) if i < syn.size else 0,
            ))
    return Mapping(target=target.name, limits=lim, weight_bits=placer.weight_bits,
                   placements=placements, cores=cores)
