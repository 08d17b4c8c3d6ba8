"""The native fixed-point engine against real Lava (fixed_pt) on compiled networks."""

import numpy as np
import pytest

from neurodeploy.backends.lava.network import simulate_lava
from neurodeploy.compiler import compile_graph, pad_for_pipeline
from neurodeploy.engine import simulate_fixed
from neurodeploy.frontends.torch import torch_to_nir
from neurodeploy.runtime import run
from tests.models_for_tests import conv3, residual, spikes

pytestmark = pytest.mark.lava


def check_lava_equals_native(model, shape, T=30, B=2, seed=0, **compile_kw):
    """Compile ``model`` (``compile_kw`` go to ``compile_graph``), run it on Lava fixed_pt and
    on the native engine, and assert every layer's spikes are equal; returns ``(cm, x)``."""
    cm = compile_graph(torch_to_nir(model, shape), time_steps=T, **compile_kw)
    x = spikes(T, B, shape, p=0.35, seed=seed).numpy().astype(np.int64)
    xp = pad_for_pipeline(x, cm.meta["pipeline_depth"])
    lava = simulate_lava(cm.graph, xp)
    native = simulate_fixed(cm.graph, xp).activity
    for k, v in lava.items():
        assert np.array_equal(v, native[k]), f"layer {k} differs"
    assert sum(v.sum() for v in lava.values()) > 0
    return cm, x


def test_three_layer_conv_net_lava_equals_fake_quantized_engine():
    cm, x = check_lava_equals_native(conv3(seed=3), (2, 9, 9))
    lava_counts = run(cm, x, "lava").counts
    assert np.array_equal(lava_counts, run(cm, x, "native").counts)


def test_residual_bn_avgpool_net_both_reset_modes():
    check_lava_equals_native(residual(seed=1), (2, 8, 8), T=20, B=1)
