"""Core mapping: placement under limits, spike messages and hops, errors naming the layer."""

from __future__ import annotations

import nir
import numpy as np
import pytest

from neurodeploy.energy import MappingError, count_operations, map_network
from neurodeploy.targets import load_target


def lif(n):
    shape = tuple(np.atleast_1d(n))
    return nir.LIF(tau=np.full(shape, 10.0), r=np.ones(shape), v_leak=np.zeros(shape),
                   v_threshold=np.ones(shape))


def chain(*layers):
    """Input(n0) -> Linear -> LIF -> Linear -> LIF ... for weight matrices ``layers``."""
    n0 = layers[0].shape[1]
    nodes = {"in": nir.Input(np.array([n0]))}
    edges, prev = [], "in"
    for i, w in enumerate(layers, 1):
        nodes[f"w{i}"] = nir.Linear(np.asarray(w, float))
        nodes[f"lif{i}"] = lif(w.shape[0])
        edges += [(prev, f"w{i}"), (f"w{i}", f"lif{i}")]
        prev = f"lif{i}"
    nodes["out"] = nir.Output(np.array([layers[-1].shape[0]]))
    edges.append((prev, "out"))
    return nir.NIRGraph(nodes=nodes, edges=edges)


def small_target(tmp_path, name="small", **limits):
    """A target inheriting loihi with some limits overridden."""
    lines = [f'name = "{name}"', 'description = "test target"', 'inherits = "loihi"', "[limits]"]
    lines += [f'{k} = {{ value = {v}, note = "test" }}' for k, v in limits.items()]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_target(path)


def test_small_dense_network_fits_one_core_per_layer():
    w1 = np.array([[1.0, 0, 2], [0, 0, 3]])  # input neuron 1 has no synapse
    m = map_network(chain(w1, np.ones((4, 2))), "loihi")
    assert m.n_cores == 2 and m.n_chips == 1
    c1, c2 = m.cores
    assert (c1.population, c1.n_neurons, c1.in_axons, c1.n_synapses) == ("lif1", 2, 2, 3)
    # nengo-loihi format: per input axon ceil((n x (8 weight + 6 index bits) + 10) / 64) words
    assert c1.synapse_memory_bits == 64 + 64
    assert (c2.population, c2.in_axons, c2.n_synapses) == ("lif2", 2, 8)
    assert c2.synapse_memory_bits == 2 * 128  # 4 x 14 + 10 = 66 bits -> two words per axon
    assert c1.out_axons == 2  # each lif1 neuron reaches the one lif2 core
    pin = m.placements["in"]
    np.testing.assert_array_equal(pin.dest_cores, [1, 0, 1])
    assert pin.cores == [] and m.placements["lif1"].max_fan_in == 2
    u = c1.utilisation(m.limits)
    assert u["neurons"] == 2 / 1024 and u["in_axons"] == 2 / 4096


def test_population_split_over_cores_by_neuron_limit():
    m = map_network(chain(np.ones((3000, 10))), "loihi")
    assert m.n_cores == 3
    assert [c.n_neurons for c in m.cores] == [1024, 1024, 952]
    # every input neuron reaches all 3 cores; Loihi has 4 cores per tile, so no hops
    np.testing.assert_array_equal(m.placements["in"].dest_cores, np.full(10, 3))
    assert m.placements["in"].hops_ew.sum() == 0 and m.placements["in"].hops_ns.sum() == 0


def test_synapse_memory_limit_shrinks_cores(tmp_path):
    # 64 neurons with fan-in 10: one core would need 10 axons x ceil((64*14+10)/64)=15 words
    t = small_target(tmp_path, synapse_memory_bits=5 * 64 * 10)
    m = map_network(chain(np.ones((64, 10))), t)
    # a chunk of n neurons costs 10 x ceil((14 n + 10) / 64) words; 5 words fit n <= 22
    assert m.placements["lif1"].neurons_per_core == 22
    assert m.n_cores == 3
    assert all(c.synapse_memory_bits <= 5 * 64 * 10 for c in m.cores)


def test_manhattan_hops_on_the_mesh(tmp_path):
    # 1 core per tile, 2 x 2 tiles per chip: cores 0..3 at (0,0) (1,0) (0,1) (1,1); chip 1 east
    t = small_target(tmp_path, neurons_per_core=1, cores_per_chip=4, cores_per_tile=1,
                     mesh_width_tiles=2, mesh_height_tiles=2)
    m = map_network(chain(np.ones((4, 1)), np.ones((1, 4))), t)
    assert m.n_cores == 5 and m.n_chips == 2
    assert [(c.x, c.y) for c in m.cores] == [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0)]
    pin = m.placements["in"]  # injected at (0, 0), reaches all four lif1 cores
    assert pin.dest_cores.tolist() == [4]
    assert pin.hops_ew.tolist() == [2] and pin.hops_ns.tolist() == [2]
    p1 = m.placements["lif1"]  # each reaches lif2 on chip 1 at (2, 0)
    assert p1.dest_cores.tolist() == [1, 1, 1, 1]
    assert p1.hops_ew.tolist() == [2, 1, 2, 1] and p1.hops_ns.tolist() == [0, 0, 1, 1]


def test_traffic_weights_hops_by_spike_counts(tmp_path):
    t = small_target(tmp_path, neurons_per_core=1, cores_per_chip=4, cores_per_tile=1,
                     mesh_width_tiles=2, mesh_height_tiles=2)
    g = chain(np.ones((4, 1)), np.ones((1, 4)))
    act = {"in": np.ones((2, 1, 1)), "lif1": np.zeros((2, 1, 4)), "lif2": np.zeros((2, 1, 1))}
    act["lif1"][0, 0, 3] = act["lif1"][1, 0, 3] = act["lif1"][1, 0, 0] = 1
    c = count_operations(g, act)
    tr = map_network(c, t).traffic(c)
    assert (tr["in"].messages_per_sample, tr["in"].hops_ew_per_sample) == (8, 4)
    # neuron 3 spikes twice (1 east-west + 1 north-south hop each), neuron 0 once (2 + 0)
    assert tr["lif1"].messages_per_sample == 3
    assert (tr["lif1"].hops_ew_per_sample, tr["lif1"].hops_ns_per_sample) == (2 * 1 + 2, 2)


def test_out_axon_limit_shrinks_the_source(tmp_path):
    # lif2 (12 neurons, 4 per core) takes 3 cores; every lif1 neuron reaches all 3, so a lif1
    # core of n neurons needs 3 n output axons: n = 2 is the largest with 3 n <= 8
    t = small_target(tmp_path, neurons_per_core=4, fan_out_axons=8)
    m = map_network(chain(np.ones((4, 2)), np.ones((12, 4))), t)
    assert m.placements["lif2"].neurons_per_core == 4 and len(m.placements["lif2"].cores) == 3
    assert m.placements["lif1"].neurons_per_core == 2
    assert [c.out_axons for c in m.cores if c.population == "lif1"] == [6, 6]


def test_single_neuron_fanning_out_too_far_names_the_layer(tmp_path):
    t = small_target(tmp_path, neurons_per_core=1, fan_out_axons=8)
    with pytest.raises(MappingError, match="'lif1'.*fans out.*fan_out_axons = 8"):
        map_network(chain(np.ones((4, 2)), np.ones((12, 4))), t)


def test_fan_in_over_axon_limit_names_the_layer():
    g = chain(np.ones((2, 5000)))
    with pytest.raises(MappingError, match=r"layer 'lif1' does not fit .*fan-in of 5000") as e:
        map_network(g, "loihi")
    assert e.value.layer == "lif1" and "fan_in_axons = 4096" in str(e.value)


def test_fan_in_over_synapse_memory_names_the_layer(tmp_path):
    # one neuron with fan-in 5 needs 5 axons x one 64-bit word > 256 bits
    t = small_target(tmp_path, synapse_memory_bits=256)
    with pytest.raises(MappingError,
                       match=r"layer 'lif2' .*needs 320 bits of synapse memory.*= 256"):
        map_network(chain(np.ones((5, 2)), np.ones((2, 5))), t)


def test_conv_network_maps_and_counts_synapses():
    w = np.ones((2, 1, 3, 3))
    conv = nir.Conv2d(input_shape=(4, 4), weight=w, stride=1, padding=1, dilation=1, groups=1,
                      bias=np.zeros(2))
    g = nir.NIRGraph(nodes={"in": nir.Input(np.array([1, 4, 4])), "conv": conv,
                            "lif": lif((2, 4, 4)), "out": nir.Output(np.array([2, 4, 4]))},
                     edges=[("in", "conv"), ("conv", "lif"), ("lif", "out")])
    m = map_network(g, "loihi")
    assert m.n_cores == 1
    # in-bounds taps per row/column on a 4-wide map with padding 1: 2, 3, 3, 2 -> 10^2 per channel
    assert m.cores[0].n_synapses == 2 * 100 and m.cores[0].in_axons == 16
    np.testing.assert_array_equal(m.placements["in"].dest_cores, np.ones(16))


def test_mapping_needs_limits():
    from neurodeploy.targets import TargetError

    with pytest.raises(TargetError, match="no \\[limits\\]"):
        map_network(chain(np.ones((2, 2))), "ann-45nm")
