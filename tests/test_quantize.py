import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neurodeploy.errors import QuantizationError
from neurodeploy.frontends.torch import torch_to_nir
from neurodeploy.passes import lower_for_hardware
from neurodeploy.quantize import LoihiFormat, quantize_graph
from neurodeploy.quantize.loihi import max_scale, quantize_weights
from tests.models_for_tests import conv3, residual

finite = st.floats(-3, 3, allow_nan=False, width=64)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (5, 7), elements=finite))
def test_dequantized_weights_within_half_lsb(w):
    s = max_scale([w], np.array([1.0]), LoihiFormat())
    q, sat = quantize_weights(w, s)
    assert sat == 0
    mixed = w.min() < 0 < w.max()
    step = 2 if mixed else 1  # Lava drops the LSB of mixed-sign weights
    assert np.all(np.abs(q / s - w) <= step / 2 / s + 1e-12)
    assert q.min() >= -256 and q.max() <= 255
    if mixed:
        assert np.all(q % 2 == 0)


def test_saturation_is_counted():
    q, sat = quantize_weights(np.array([-2.0, 0.5, 3.0]), 200.0)
    assert sat == 2 and q.tolist() == [-256, 100, 254]


def test_scales_recorded_deterministic_and_residual_aligned():
    g = lower_for_hardware(torch_to_nir(residual(), (2, 8, 8)))
    a, rep_a = quantize_graph(g)
    b, rep_b = quantize_graph(g)
    assert [x.scale for x in rep_a.layers] == [x.scale for x in rep_b.layers]
    # both branches of the residual sum into n2 with the neuron's single scale
    assert a.nodes["c2"].metadata["loihi"]["scale"] == a.nodes["sc"].metadata["loihi"]["scale"]
    assert a.nodes["c2"].metadata["loihi"]["scale"] == a.nodes["n2"].metadata["loihi"]["scale"]
    for node in a.nodes.values():
        if "loihi" in node.metadata and "weight_mant" in node.metadata["loihi"]:
            assert np.abs(node.metadata["loihi"]["weight_mant"]).max() <= 256


def test_lif_decay_and_threshold_from_tau():
    g = lower_for_hardware(torch_to_nir(conv3(), (2, 9, 9)))
    q, _ = quantize_graph(g)
    lif = q.nodes["1"].metadata["loihi"]  # beta 0.8 -> dv = 4096 * 0.2
    assert lif["dv"] == round(4096 * 0.2) and lif["du"] == 4095
    assert int(np.max(lif["vth"])) == round(0.6 * lif["scale"])


def test_override_scale_too_large_for_threshold_is_rejected():
    g = lower_for_hardware(torch_to_nir(conv3(), (2, 9, 9)))
    with pytest.raises(QuantizationError, match="node '1': threshold"):
        quantize_graph(g, scales={"1": 1e9})
