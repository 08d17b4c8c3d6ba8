"""Operation counts on hand-made NIR graphs, checked against closed-form values.

Conventions under test (neurodeploy/energy/counts.py): Effective ops = (non-zero input,
non-zero weight) pairs, ACs when every input of the step is in {-1, 0, 1}; Dense = every
in-bounds connection; sinabs = sum |value| x fan-out over all in-bounds connections; all per
sample (sum over steps / batch size).
"""

from __future__ import annotations

import itertools

import nir
import numpy as np
import pytest
import torch

from neurodeploy.energy import ActivityError, count_operations
from neurodeploy.errors import GraphError


def lif(shape):
    shape = tuple(np.atleast_1d(shape))
    return nir.LIF(tau=np.full(shape, 10.0), r=np.ones(shape), v_leak=np.zeros(shape),
                   v_threshold=np.ones(shape))


def spikes(shape, *on):
    """A [T, B, *shape] int8 array with ones at the given (t, b, *index) positions."""
    a = np.zeros(shape, np.int8)
    for idx in on:
        a[idx] = 1
    return a


# --------------------------------------------------------------------------------------- dense

W_DENSE = np.array([[1.0, 0, 2, 0], [0, 0, 3, 0], [4, 5, 6, 0]])  # non-zero fan-out [2, 1, 3, 0]


def dense_graph():
    return nir.NIRGraph(
        nodes={"in": nir.Input(np.array([4])), "fc": nir.Affine(W_DENSE, np.zeros(3)),
               "lif": lif(3), "out": nir.Output(np.array([3]))},
        edges=[("in", "fc"), ("fc", "lif"), ("lif", "out")],
    )


def dense_activity():
    x = np.zeros((3, 2, 4), np.int8)
    x[0, 0] = [1, 0, 0, 1]
    x[0, 1] = [0, 1, 1, 0]
    x[1, 1] = [1, 1, 1, 1]
    x[2, 0] = [0, 0, 1, 0]
    s = spikes((3, 2, 3), (0, 0, 0), (0, 1, 2), (2, 0, 1))
    return {"in": x, "lif": s}


def test_dense_counts_closed_form():
    c = count_operations(dense_graph(), dense_activity())
    fc = c.layer("fc")
    # step 0: sample 0 -> inputs 0, 3 -> 2 + 0; sample 1 -> inputs 1, 2 -> 1 + 3
    # step 1: sample 1 -> all inputs -> 2 + 1 + 3 + 0; step 2: sample 0 -> input 2 -> 3
    np.testing.assert_array_equal(fc.synops_per_step, [6 / 2, 6 / 2, 3 / 2])
    assert fc.effective_acs_per_sample == 15 / 2
    assert fc.effective_macs_per_sample == 0
    assert fc.dense_ops_per_sample == 12 * 3  # 3x4 connections, 3 steps
    assert fc.n_connections == 12 and fc.n_synapses == 6
    assert fc.sinabs_synops_per_sample == 9 * 3 / 2  # 9 input events x fan-out 3
    assert fc.connection_sparsity == 6 / 12
    assert fc.input_events_per_sample == 9 / 2

    p = c.layer("lif")
    assert p.spikes_per_sample == 3 / 2
    assert p.neuron_updates_per_sample == 3 * 3
    # non-zero input rows: s0t0 {0, 2}; s1t0 all 3; s1t1 all 3; s0t2 all 3 (col 2 = [2, 3, 6])
    assert p.active_updates_per_sample == (2 + 3 + 0 + 3 + 3 + 0) / 2
    np.testing.assert_array_equal(p.active_updates_per_step, [5 / 2, 3 / 2, 3 / 2])
    np.testing.assert_array_equal(p.spike_count_per_neuron, [0.5, 0.5, 0.5])
    assert p.activation_sparsity == 15 / 18

    nb = c.neurobench()
    assert nb["Effective_ACs"] == 7.5 and nb["Effective_MACs"] == 0 and nb["Dense"] == 36
    assert nb["ActivationSparsity"] == 15 / 18 and nb["ConnectionSparsity"] == 6 / 12
    # footprint: weight + bias as stored (float64) + LIF tau, r, v_leak, v_threshold, v_reset
    assert nb["Footprint"] == W_DENSE.nbytes + 3 * 8 + 5 * 3 * 8
    inp = c.layer("in")
    assert inp.neuron_updates_per_sample == 0 and inp.spikes_per_sample == 9 / 2


def test_analog_input_counts_macs_and_values():
    x = np.array([[[0.5, 0.0, 2.0, 0.0]]])  # T = B = 1, not all in {-1, 0, 1}
    c = count_operations(dense_graph(), {"in": x, "lif": np.zeros((1, 1, 3))})
    fc = c.layer("fc")
    assert fc.effective_macs_per_sample == 2 + 3 and fc.effective_acs_per_sample == 0
    assert fc.sinabs_synops_per_sample == (0.5 + 2.0) * 3
    assert not fc.input_is_spiking
    assert not c.layer("in").is_spiking


def test_mac_ac_decided_per_step():
    x = np.zeros((2, 1, 4))
    x[0, 0, 2] = 1.0  # step 0: spikes -> 3 ACs
    x[1, 0, 0] = 3.0  # step 1: graded -> 2 MACs
    fc = count_operations(dense_graph(), {"in": x, "lif": np.zeros((2, 1, 3))}).layer("fc")
    np.testing.assert_array_equal(fc.input_is_spiking_per_step, [True, False])
    assert fc.effective_acs_per_sample == 3 and fc.effective_macs_per_sample == 2
    assert fc.sinabs_synops_per_sample == 1 * 3 + 3 * 3


def test_negative_spikes_are_acs():
    x = np.zeros((1, 1, 4))
    x[0, 0, 0], x[0, 0, 2] = -1, 1
    fc = count_operations(dense_graph(), {"in": x, "lif": np.zeros((1, 1, 3))}).layer("fc")
    assert fc.effective_acs_per_sample == 2 + 3 and fc.sinabs_synops_per_sample == 2 * 3


# ---------------------------------------------------------------------------------------- conv


def conv_graph(weight, in_shape, stride=1, padding=1, groups=1):
    c_out = weight.shape[0]
    conv = nir.Conv2d(input_shape=in_shape[1:], weight=weight, stride=stride, padding=padding,
                      dilation=1, groups=groups, bias=np.zeros(c_out))
    out_shape = tuple(conv.output_type["output"])
    # NIR types a grouped conv's input as weight.shape[1] channels: skip its type check
    g = nir.NIRGraph(
        nodes={"in": nir.Input(np.array(in_shape)), "conv": conv, "lif": lif(out_shape),
               "out": nir.Output(np.array(out_shape))},
        edges=[("in", "conv"), ("conv", "lif"), ("lif", "out")],
        type_check=groups == 1,
    )
    return g, out_shape


def test_conv_padding_border_fanout():
    g, out_shape = conv_graph(np.ones((1, 1, 3, 3)), (1, 5, 5))
    assert out_shape == (1, 5, 5)
    x = np.zeros((3, 1, 1, 5, 5), np.int8)
    x[0, 0, 0, 0, 0] = 1  # corner: reaches 2 x 2 outputs
    x[1, 0, 0, 0, 2] = 1  # edge: 2 x 3
    x[2, 0, 0, 2, 2] = 1  # centre: 3 x 3
    c = count_operations(g, {"in": x, "lif": np.zeros((3, 1, *out_shape))})
    conv = c.layer("conv")
    np.testing.assert_array_equal(conv.synops_per_step, [4, 6, 9])
    # in-bounds taps per output row/column: 2, 3, 3, 3, 2 -> (2+3+3+3+2)^2 per step
    assert conv.n_connections == 13 * 13
    assert conv.dense_ops_per_sample == 169 * 3
    assert conv.sinabs_synops_per_sample == 4 + 6 + 9


def stride_group_weight():
    w = np.zeros((4, 1, 3, 3))
    w[0] = 1  # group 0 (input channel 0): a full kernel
    w[1, 0, 1, 1] = 1  # group 0: centre tap only
    w[2] = 1  # group 1 (input channel 1): a full kernel
    return w  # output channel 3: all zero


def test_conv_stride2_padding1_groups2():
    g, out_shape = conv_graph(stride_group_weight(), (2, 4, 4), stride=2, padding=1, groups=2)
    assert out_shape == (4, 2, 2)  # floor((4 + 2 - 3) / 2) + 1 = 2
    x = np.zeros((1, 1, 2, 4, 4), np.int8)
    # output row oy reads input rows 2*oy - 1 .. 2*oy + 1
    x[0, 0, 0, 1, 1] = 1  # rows/cols {0, 1} reach it: 4 positions; ch 0: 4, ch 1 (centre): 0
    x[0, 0, 0, 0, 0] = 1  # only position (0, 0) with the centre tap: ch 0: 1, ch 1: 1
    x[0, 0, 1, 3, 3] = 1  # only position (1, 1): ch 2: 1, ch 3: 0
    x[0, 0, 1, 2, 2] = 1  # only position (1, 1): ch 2: 1, ch 3: 0
    c = count_operations(g, {"in": x, "lif": np.zeros((1, 1, *out_shape))})
    conv = c.layer("conv")
    assert conv.synops_per_sample == 4 + 2 + 1 + 1
    # every output position sees 2 or 3 rows x 2 or 3 columns: (2 + 3)^2 per output channel
    assert conv.n_connections == 4 * 25
    # non-zero in-bounds synapses: ch 0: 25, ch 1 centre tap always in bounds: 4, ch 2: 25
    assert conv.n_synapses == 25 + 4 + 25
    assert conv.n_weights == 36 and conv.n_zero_weights == 36 - 9 - 1 - 9


def brute_force_pairs(weight, x, stride, padding, groups):
    """Count (non-zero input, non-zero weight) pairs of a conv by enumeration."""
    c_out, cin_g, kh, kw = weight.shape
    _, h, w = x.shape
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (w + 2 * padding - kw) // stride + 1
    n = dense = 0
    for co, ci, ky, kx, oy, ox in itertools.product(range(c_out), range(cin_g), range(kh),
                                                    range(kw), range(ho), range(wo)):
        iy, ix = oy * stride - padding + ky, ox * stride - padding + kx
        if 0 <= iy < h and 0 <= ix < w:
            cin = (co // (c_out // groups)) * cin_g + ci
            dense += 1
            n += int(weight[co, ci, ky, kx] != 0 and x[cin, iy, ix] != 0)
    return n, dense


@pytest.mark.parametrize("stride,padding,groups", [(1, 0, 1), (2, 1, 2), (2, 2, 1), (3, 1, 2)])
def test_conv_counts_match_enumeration(stride, padding, groups):
    rng = np.random.default_rng(stride * 10 + padding + groups)
    w = rng.normal(size=(4, 4 // groups, 3, 3)) * (rng.random((4, 4 // groups, 3, 3)) < 0.6)
    g, out_shape = conv_graph(w, (4, 7, 6), stride=stride, padding=padding, groups=groups)
    x = (rng.random((2, 1, 4, 7, 6)) < 0.3).astype(np.int8)
    conv = count_operations(g, {"in": x, "lif": np.zeros((2, 1, *out_shape))}).layer("conv")
    for t in range(2):
        pairs, dense = brute_force_pairs(w, x[t, 0], stride, padding, groups)
        assert conv.synops_per_step[t] == pairs
        assert conv.n_connections == dense
    structural = conv_structural(g)
    assert structural.nnz == conv.n_synapses


def conv_structural(g):
    from neurodeploy.energy import NetworkStructure

    return NetworkStructure.from_graph(g).ops["conv"].structural()


# ------------------------------------------------------------------------------------- pooling


def test_sum_pooling_counted_and_makes_next_layer_macs():
    w = np.array([[1.0, 1, 0, 0], [1, 0, 0, 1]])
    g = nir.NIRGraph(
        nodes={
            "in": nir.Input(np.array([1, 4, 4])),
            "l0": lif((1, 4, 4)),
            "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                  padding=np.array([0, 0])),
            "flat": nir.Flatten(input_type={"input": np.array([1, 2, 2])}, start_dim=0),
            "fc": nir.Affine(w, np.zeros(2)),
            "l1": lif(2),
            "out": nir.Output(np.array([2])),
        },
        edges=[("in", "l0"), ("l0", "pool"), ("pool", "flat"), ("flat", "fc"), ("fc", "l1"),
               ("l1", "out")],
    )
    s0 = np.zeros((2, 1, 1, 4, 4), np.int8)
    s0[0, 0, 0, 0, 0] = s0[0, 0, 0, 0, 1] = 1  # two spikes in window 0 -> pooled value 2
    s0[1, 0, 0, 3, 3] = 1  # one spike in window 3 -> pooled value 1
    act = {"in": np.zeros((2, 1, 1, 4, 4)), "l0": s0, "l1": np.zeros((2, 1, 2))}
    c = count_operations(g, act)
    pool, fc = c.layer("pool"), c.layer("fc")
    assert pool.synops_per_sample == 3 and not pool.counted_by_neurobench
    assert pool.n_connections == 16 and pool.dense_ops_per_sample == 32
    # step 0: pooled input 2 in window 0 -> MACs, column 0 has 2 non-zero weights
    # step 1: pooled input 1 in window 3 -> ACs, column 3 has 1 non-zero weight
    assert fc.effective_macs_per_sample == 2 and fc.effective_acs_per_sample == 1
    np.testing.assert_array_equal(fc.input_is_spiking_per_step, [False, True])
    assert fc.sinabs_synops_per_sample == 2 * 2 + 1 * 2
    assert pool.sinabs_synops_per_sample == 3
    assert c.synops_per_sample == 3 + 3
    assert c.sinabs_synops_per_sample == 3 + 6
    # flatten is a reshape, not a synapse layer; the Input feeds l0 through an Identity layer
    names = [s.name for s in c.synapse_layers]
    assert "flat" not in names and "in->l0" in names
    nb = c.neurobench()
    assert nb["Effective_MACs"] == 2 and nb["Effective_ACs"] == 1 and nb["Dense"] == 16
    assert c.layer("fc").sources == ("l0",) and c.layer("pool").targets == ("l1",)


def test_avg_pooling_counts_like_sum_pooling():
    g = nir.NIRGraph(
        nodes={
            "in": nir.Input(np.array([1, 4, 4])),
            "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([1, 1]),
                                  padding=np.array([0, 0])),
            "l1": lif((1, 3, 3)),
            "out": nir.Output(np.array([1, 3, 3])),
        },
        edges=[("in", "pool"), ("pool", "l1"), ("l1", "out")],
    )
    x = np.zeros((1, 1, 1, 4, 4), np.int8)
    x[0, 0, 0, 1, 1] = 1  # inside 4 overlapping windows
    x[0, 0, 0, 0, 3] = 1  # corner: 1 window
    c = count_operations(g, {"in": x, "l1": np.zeros((1, 1, 1, 3, 3))})
    assert c.layer("pool").synops_per_sample == 4 + 1
    assert c.layer("pool").n_connections == 9 * 4
    assert c.layer("l1").active_updates_per_sample == 4 + 1


# ------------------------------------------------------------------------ residual, recurrence


def test_residual_two_edges_into_one_neuron():
    b = np.zeros((4, 4))
    b[1, 0] = b[2, 1] = 1
    g = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([4])), "a": nir.Linear(np.eye(4)), "lif1": lif(4),
               "b": nir.Linear(b), "lif2": lif(4), "out": nir.Output(np.array([4]))},
        edges=[("in", "a"), ("a", "lif1"), ("lif1", "b"), ("b", "lif2"), ("lif1", "lif2"),
               ("lif2", "out")],
    )
    act = {"in": spikes((1, 1, 4), (0, 0, 0)), "lif1": spikes((1, 1, 4), (0, 0, 0), (0, 0, 1)),
           "lif2": np.zeros((1, 1, 4))}
    c = count_operations(g, act)
    assert c.layer("a").synops_per_sample == 1
    assert c.layer("b").synops_per_sample == 2  # spikes 0, 1 each have one non-zero weight
    skip = c.layer("lif1->lif2")
    assert skip.kind == "Identity" and skip.synops_per_sample == 2
    assert not skip.counted_by_neurobench
    # lif2 input = b s + s = [0, 1, 1, 0] + [1, 1, 0, 0] -> 3 neurons receive input
    assert c.layer("lif2").active_updates_per_sample == 3
    assert c.synops_per_sample == 1 + 2 + 2
    assert c.neurobench()["Effective_ACs"] == 1 + 2


def test_recurrent_edge_back_into_the_same_neuron():
    w_in = np.array([[1.0, 0], [1, 1]])
    w_rec = np.array([[0.0, 2], [3, 0]])
    g = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([2])), "win": nir.Linear(w_in), "lif": lif(2),
               "wrec": nir.Linear(w_rec), "out": nir.Output(np.array([2]))},
        edges=[("in", "win"), ("win", "lif"), ("lif", "wrec"), ("wrec", "lif"), ("lif", "out")],
    )
    act = {"in": spikes((2, 1, 2), (0, 0, 0)), "lif": spikes((2, 1, 2), (0, 0, 1), (1, 0, 0))}
    c = count_operations(g, act)
    np.testing.assert_array_equal(c.layer("win").synops_per_step, [2, 0])
    np.testing.assert_array_equal(c.layer("wrec").synops_per_step, [1, 1])
    assert c.layer("wrec").sources == ("lif",) and c.layer("wrec").targets == ("lif",)
    # t0 input [1, 1] + [2, 0]; t1 input [0, 3] and neuron 0 spikes -> every update active
    assert c.layer("lif").active_updates_per_sample == 4 == c.layer("lif").neuron_updates_per_sample
    np.testing.assert_array_equal(c.synops_per_step, [3, 1])


def test_bias_makes_every_update_active():
    g = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([2])), "fc": nir.Affine(np.eye(2), np.array([0.5, 0])),
               "lif": lif(2), "out": nir.Output(np.array([2]))},
        edges=[("in", "fc"), ("fc", "lif"), ("lif", "out")],
    )
    c = count_operations(g, {"in": np.zeros((3, 1, 2)), "lif": np.zeros((3, 1, 2))})
    assert c.layer("lif").active_updates_per_sample == 3  # neuron 0 gets its bias every step
    assert c.layer("fc").synops_per_sample == 0  # the bias is not a synaptic operation


def test_readout_without_neuron_is_a_population():
    g = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([3])), "fc": nir.Linear(np.ones((2, 3))),
               "out": nir.Output(np.array([2]))},
        edges=[("in", "fc"), ("fc", "out")],
    )
    c = count_operations(g, {"in": spikes((2, 1, 3), (0, 0, 1))})
    out = c.layer("out")
    assert out.role == "readout" and out.neuron_updates_per_sample == 4
    assert out.active_updates_per_sample == 2 and out.spikes_per_sample == 0


def test_numerics_give_memory_bits():
    from neurodeploy.targets import load_target

    c = count_operations(dense_graph(), dense_activity(), numerics=load_target("loihi"))
    assert c.layer("fc").weight_memory_bits == 12 * 8
    assert c.layer("lif").state_memory_bits == 3 * 2 * 24


def test_chunked_evaluation_matches_single_chunk():
    g, out_shape = conv_graph(stride_group_weight(), (2, 4, 4), stride=2, padding=1, groups=2)
    rng = np.random.default_rng(1)
    act = {"in": (rng.random((7, 3, 2, 4, 4)) < 0.4).astype(np.int8),
           "lif": (rng.random((7, 3, *out_shape)) < 0.3).astype(np.int8)}
    a = count_operations(g, act)
    b = count_operations(g, act, chunk_elements=1)
    np.testing.assert_array_equal(a.layer("conv").synops_per_step, b.layer("conv").synops_per_step)
    np.testing.assert_array_equal(a.layer("lif").active_updates_per_step,
                                  b.layer("lif").active_updates_per_step)


# -------------------------------------------------------------------------------------- errors


def test_missing_activity_names_the_node():
    with pytest.raises(ActivityError, match="'lif'"):
        count_operations(dense_graph(), {"in": np.zeros((1, 1, 4))})


def test_inconsistent_time_or_batch_is_rejected():
    with pytest.raises(ActivityError, match="T, B"):
        count_operations(dense_graph(), {"in": np.zeros((2, 1, 4)), "lif": np.zeros((3, 1, 3))})


def test_wrong_activity_shape_is_rejected():
    with pytest.raises(ActivityError, match="'lif'"):
        count_operations(dense_graph(), {"in": np.zeros((1, 1, 4)), "lif": np.zeros((1, 1, 5))})


def test_cycle_without_neuron_is_rejected():
    g = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([2])), "a": nir.Linear(np.eye(2)),
               "b": nir.Linear(np.eye(2)), "lif": lif(2), "out": nir.Output(np.array([2]))},
        edges=[("in", "a"), ("a", "b"), ("b", "a"), ("b", "lif"), ("lif", "out")],
        type_check=False,
    )
    with pytest.raises(GraphError, match="no neuron"):
        count_operations(g, {"in": np.zeros((1, 1, 2)), "lif": np.zeros((1, 1, 2))})


# ------------------------------------------------------------------------ NeuroBench definition


def _binary_copy_ops(layer: torch.nn.Module, x: torch.Tensor, all_ones: bool) -> float:
    """NeuroBench's procedure, written from its published definition (anchors.md section 6.1)."""
    import copy

    b = copy.deepcopy(layer)
    with torch.no_grad():
        b.weight[:] = 1.0 if all_ones else (b.weight != 0).float()
        if b.bias is not None:
            b.bias.zero_()
        xb = torch.ones_like(x) if all_ones else (x != 0).float()
        return float(b(xb).sum())


def small_model():
    rng = np.random.default_rng(7)
    w1 = (rng.normal(size=(4, 2, 3, 3)) * (rng.random((4, 2, 3, 3)) < 0.7)).astype(np.float32)
    w2 = (rng.normal(size=(5, 4 * 3 * 3)) * (rng.random((5, 36)) < 0.5)).astype(np.float32)
    g = nir.NIRGraph(
        nodes={
            "in": nir.Input(np.array([2, 6, 6])),
            "conv": nir.Conv2d(input_shape=(6, 6), weight=w1, stride=2, padding=1, dilation=1,
                               groups=1, bias=np.ones(4, np.float32)),
            "l1": lif((4, 3, 3)),
            "flat": nir.Flatten(input_type={"input": np.array([4, 3, 3])}, start_dim=0),
            "fc": nir.Affine(w2, np.zeros(5, np.float32)),
            "l2": lif(5),
            "out": nir.Output(np.array([5])),
        },
        edges=[("in", "conv"), ("conv", "l1"), ("l1", "flat"), ("flat", "fc"), ("fc", "l2"),
               ("l2", "out")],
    )
    t, b = 4, 3
    act = {"in": (rng.random((t, b, 2, 6, 6)) < 0.3).astype(np.float32),
           "l1": (rng.random((t, b, 4, 3, 3)) < 0.3).astype(np.float32),
           "l2": (rng.random((t, b, 5)) < 0.3).astype(np.float32)}
    act["in"][0, 0, 0, 0, 0] = 0.25  # one analog value: step 0 of conv counts MACs
    conv = torch.nn.Conv2d(2, 4, 3, stride=2, padding=1)
    fc = torch.nn.Linear(36, 5)
    with torch.no_grad():
        conv.weight[:] = torch.from_numpy(w1)
        fc.weight[:] = torch.from_numpy(w2)
    return g, act, conv, fc


def test_counts_follow_neurobench_definition():
    g, act, conv, fc = small_model()
    c = count_operations(g, act)
    t, b = act["in"].shape[:2]
    macs = acs = dense = 0.0
    for step in range(t):
        for layer, x in ((conv, torch.from_numpy(act["in"][step])),
                         (fc, torch.from_numpy(act["l1"][step]).reshape(b, -1))):
            ops = _binary_copy_ops(layer, x, all_ones=False)
            spiking = bool(((x == 0) | (x == 1) | (x == -1)).all())
            acs += ops if spiking else 0
            macs += 0 if spiking else ops
            dense += _binary_copy_ops(layer, x, all_ones=True)
    nb = c.neurobench()
    assert nb["Effective_ACs"] == pytest.approx(acs / b)
    assert nb["Effective_MACs"] == pytest.approx(macs / b) and macs > 0
    assert nb["Dense"] == pytest.approx(dense / b)


def test_counts_equal_neurobench_package():
    """Compare with NeuroBench 2.3.0 itself (installed with the test extras)."""
    from neurobench.metrics.static import ConnectionSparsity
    from neurobench.metrics.utils.layers import single_layer_MACs
    from neurobench.models import TorchModel

    g, act, conv, fc = small_model()
    c = count_operations(g, act)
    t, b = act["in"].shape[:2]
    macs = acs = dense = 0
    for step in range(t):
        for layer, x in ((conv, torch.from_numpy(act["in"][step])),
                         (fc, torch.from_numpy(act["l1"][step]).reshape(b, -1))):
            ops, spiking = single_layer_MACs(x, layer)
            total, _ = single_layer_MACs(x, layer, total=True)
            acs, macs = (acs + ops, macs) if spiking else (acs, macs + ops)
            dense += total
    nb = c.neurobench()
    assert nb["Effective_ACs"] == pytest.approx(acs / b)
    assert nb["Effective_MACs"] == pytest.approx(macs / b)
    assert nb["Dense"] == pytest.approx(dense / b)
    net = torch.nn.Sequential(conv, torch.nn.Flatten(), fc)
    assert nb["ConnectionSparsity"] == pytest.approx(ConnectionSparsity()(TorchModel(net)),
                                                     abs=1e-3)
