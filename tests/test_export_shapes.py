"""Graph shapes the lowering once refused or got wrong, each checked numerically against torch:
pooling straight into a neuron, pooling before a padded conv on odd sizes, a Scale before the
Output; and the exporter's LIF resting potential and trainable thresholds."""

import warnings

import nir
import numpy as np
import pytest
import torch
from torch import nn

import neurodeploy.nn as snn
from neurodeploy import runtime, zoo
from neurodeploy.compiler import compile_graph
from neurodeploy.engine import simulate_float
from neurodeploy.frontends.torch import torch_to_nir
from neurodeploy.nn.dsr import DSRLIF
from neurodeploy.passes import lower_for_hardware
from neurodeploy.train.common import (
    TrainResult,
    deploy,
    load_digits_split,
    signed_poisson,
    to_steps,
)
from tests.models_for_tests import spikes

S = snn.multistep
AMP = {"spike_amplitude": "threshold"}


def _head(n):
    return [nn.Flatten(), nn.Linear(n, 3), snn.IF(threshold=0.5)]


SHAPES = {
    "neuron-avgpool-neuron": ((2, 8, 8), lambda: [
        nn.Conv2d(2, 4, 3, padding=1), snn.IF(threshold=0.5, **AMP), nn.AvgPool2d(2),
        snn.IF(threshold=0.3), *_head(64)]),
    "conv-avgpool-lif-odd": ((2, 7, 7), lambda: [
        nn.Conv2d(2, 4, 3, padding=1), nn.AvgPool2d(2), snn.LIF(beta=0.8, threshold=0.3),
        *_head(36)]),
    "strided-conv-overlapping-pool": ((2, 11, 11), lambda: [
        nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.AvgPool2d(3, 2), snn.IF(threshold=0.3),
        *_head(16)]),
    "pool-padded-conv-odd": ((2, 7, 7), lambda: [
        nn.Conv2d(2, 4, 3, padding=1), snn.IF(threshold=0.5), nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), snn.IF(threshold=0.5), *_head(36)]),
    "overlapping-pool-padded-conv": ((2, 8, 8), lambda: [
        nn.Conv2d(2, 4, 3, padding=1), snn.IF(threshold=0.5), nn.AvgPool2d(3, 2),
        nn.Conv2d(4, 4, 3, padding=1), snn.IF(threshold=0.5), *_head(36)]),
    "scale-before-output": ((2, 6, 6), lambda: [
        nn.Conv2d(2, 4, 3, padding=1), snn.IF(threshold=0.5), nn.Flatten(), nn.Linear(144, 3),
        snn.IF(threshold=0.7, **AMP)]),
}


def _model(layers):
    torch.manual_seed(0)
    m = S(nn.Sequential(*layers))
    for p in m.parameters():
        p.data.normal_(0, 0.6)
    return m.double().eval()


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_shape_exports_lowers_and_compiles(name):
    shape, layers = SHAPES[name]
    m = _model(layers())
    x = spikes(20, 3, shape)
    with torch.no_grad():
        ref = m(x).numpy() != 0
    graph = torch_to_nir(m, shape)
    assert np.array_equal(simulate_float(graph, x.numpy()).output != 0, ref)
    lowered = lower_for_hardware(graph)
    assert np.array_equal(simulate_float(lowered, x.numpy()).output != 0, ref)
    assert {type(n).__name__ for n in lowered.nodes.values()} <= {
        "Input", "Output", "Conv2d", "Affine", "IF", "LIF"}
    assert ref.sum() > 0
    cm = compile_graph(graph, time_steps=20)
    res = runtime.run(cm, x.numpy().astype(np.int64), "native")
    assert res.counts.shape == (3, 3) and res.counts.sum() > 0


def test_dense_synapse_into_a_conv_layer_is_bit_exact_in_lava():
    shape, layers = SHAPES["pool-padded-conv-odd"]  # lowered to an Affine into a [4, 3, 3] layer
    cm = compile_graph(torch_to_nir(_model(layers()), shape), time_steps=8)
    x = spikes(8, 1, shape).numpy().astype(np.int64)
    native, lava = runtime.run(cm, x, "native"), runtime.run(cm, x, "lava")
    assert np.array_equal(native.counts, lava.counts) and native.counts.sum() > 0


def test_lif_resting_potential_and_trainable_threshold_are_exported():
    torch.manual_seed(1)
    lif = DSRLIF(threshold=0.3, alpha=0.4)
    clamped = snn.LIF(beta=0.8, threshold=0.2, learn_threshold=True, threshold_min=0.45)
    m = S(nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), lif, nn.Flatten(), nn.Linear(48, 4),
                        clamped)).double().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "tensor with requires_grad to a scalar" warning
        g = torch_to_nir(m, (1, 4, 4))
    node = g.nodes["1"]
    assert isinstance(node, nir.LIF) and np.allclose(node.v_leak, lif.v_leak)
    assert lif.v_leak == pytest.approx(0.6 * 0.3)
    assert np.allclose(g.nodes["4"].v_threshold, 0.45) and np.all(g.nodes["4"].v_leak == 0)
    x = torch.randint(0, 17, (1, 2, 1, 4, 4)).double().repeat(12, 1, 1, 1, 1)
    with torch.no_grad():
        ref = m(x).numpy()
    assert np.array_equal(simulate_float(g, x.numpy()).output != 0, ref != 0)


def test_signed_poisson_input_mode():
    x = torch.tensor([[0.0, 4.0, 16.0]]).reshape(1, 1, 3)
    a = to_steps(x.repeat(64, 1, 1), 400, "signed_poisson", seed=3)
    assert torch.equal(a, to_steps(x.repeat(64, 1, 1), 400, "signed_poisson", seed=3))
    assert torch.equal(a, signed_poisson(x.repeat(64, 1, 1), 400, seed=3))
    assert set(a.unique().tolist()) <= {-1.0, 0.0, 1.0}
    xn = (x.flatten() / 16 - 0.3053) / 0.3760  # 0 -> -0.81, 4 -> -0.15, 16 -> +1 (clamped)
    rate = a.mean(dim=(0, 1, 2))
    assert torch.allclose(rate, torch.sign(xn) * xn.abs().clamp(max=1), atol=0.02)
    assert not torch.equal(a, to_steps(x.repeat(64, 1, 1), 400, "signed_poisson", seed=4))


def test_lee_result_deploys_with_signed_poisson_input():
    torch.manual_seed(0)
    kw = dict(in_channels=1, size=8, classes=10, pre=3, widths=[3, 4], fc=6)
    model = zoo.build("lee-resnet11", **kw).eval()
    split = load_digits_split()
    res = TrainResult("lee", model, "lee-resnet11", kw, (1, 8, 8), 6, 0.0,
                      input_mode="signed_poisson")
    out = deploy(res, split, limit=8)
    assert 0.0 <= out["loihi_accuracy"] <= 1.0 and out["spikes_per_inference"] > 0
