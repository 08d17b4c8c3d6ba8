"""Every export is checked numerically: the NIR graph, simulated in float, reproduces torch."""

import nir
import numpy as np
import pytest
import torch
from torch import nn

import neurodeploy.nn as snn
from neurodeploy.engine import simulate_float
from neurodeploy.errors import UnsupportedLayerError
from neurodeploy.frontends.torch import torch_to_nir
from neurodeploy.passes import lower_for_hardware
from tests.models_for_tests import conv3, residual, spikes


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("factory,shape", [(conv3, (2, 9, 9)), (residual, (2, 8, 8))])
def test_export_reproduces_torch_spikes(factory, shape, seed):
    model = factory(seed)
    x = spikes(25, 4, shape, seed=seed)
    with torch.no_grad():
        ref = model(x).numpy()
    graph = torch_to_nir(model, shape)
    got = simulate_float(graph, x.numpy()).output
    # amplitudes are folded into the next layer: compare spike events
    assert np.array_equal(ref != 0, got != 0)
    assert ref.sum() > 0
    lowered = lower_for_hardware(graph)
    assert np.array_equal(simulate_float(lowered, x.numpy()).output != 0, ref != 0)
    kinds = {type(n).__name__ for n in lowered.nodes.values()}
    assert kinds <= {"Input", "Output", "Conv2d", "Affine", "IF", "LIF"}


def test_export_structure_residual_and_bn_folded():
    g = torch_to_nir(residual(), (2, 8, 8))
    types = {k: type(v).__name__ for k, v in g.nodes.items()}
    assert "BatchNorm2d" not in types.values()
    assert types["pool"] == "SumPool2d" and types["pool.scale"] == "Scale"
    assert ("c2", "n2") in g.edges and ("sc", "n2") in g.edges  # residual: two edges in
    assert g.nodes["n2"].metadata["reset"] == "zero"
    assert g.nodes["n1"].metadata["reset"] == "subtract"


def test_export_roundtrips_through_nir_file(tmp_path):
    g = torch_to_nir(conv3(), (2, 9, 9))
    nir.write(tmp_path / "m.nir", g)
    g2 = nir.read(tmp_path / "m.nir")
    x = spikes(10, 2, (2, 9, 9)).numpy()
    assert np.array_equal(simulate_float(g, x).output, simulate_float(g2, x, dt=1.0).output)


def test_unsupported_layer_names_module_and_lists_supported():
    m = snn.multistep(nn.Sequential(nn.Conv2d(2, 2, 3), nn.ReLU(), snn.IF()))
    with pytest.raises(UnsupportedLayerError, match=r"'1' of type ReLU; supported: Conv2d"):
        torch_to_nir(m, (2, 5, 5))
