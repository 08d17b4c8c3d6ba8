"""Overflow and saturation: every u wrap and v clip is counted, reported by eval and compile."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest

from neurodeploy import artifact
from neurodeploy import fixedpoint as fp
from neurodeploy.cli import main
from neurodeploy.commands.eval import evaluate
from neurodeploy.compiler import compile_graph
from neurodeploy.engine import simulate_fixed
from neurodeploy.quantize import simulate_layerwise
from neurodeploy.runtime import run

N_BIG, N_NEG = 600, 10  # inputs driving neuron 0 (u wraps) and neuron 1 (v clips)
T = 60
SCALE = 1e4  # with |w| = 1 every weight saturates: mantissas 254 / -256


def overflow_graph() -> nir.NIRGraph:
    w = np.zeros((2, N_BIG + N_NEG))
    w[0, :N_BIG] = 1.0
    w[1, N_BIG:] = -1.0
    return nir.NIRGraph(
        nodes={"in": nir.Input(np.array([N_BIG + N_NEG])), "fc": nir.Affine(w, np.zeros(2)),
               "n": nir.IF(r=np.ones(2), v_threshold=np.ones(2), v_reset=np.zeros(2),
                           metadata={"reset": "subtract"}),
               "out": nir.Output(np.array([2]))},
        edges=[("in", "fc"), ("fc", "n"), ("n", "out")], metadata={"dt": 1.0}, type_check=False)


@pytest.fixture(scope="module")
def model():
    return compile_graph(overflow_graph(), scales={"n": SCALE}, time_steps=T)


def expected_counts(a_in: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent oracle for an IF layer with du = 4095, dv = 0 and no spikes (v < 0):
    ``u = a_in << 6`` wrapped once by 2**24, ``v`` accumulates ``u`` and saturates."""
    u = a_in * 64
    u = np.where(u > 2 ** 23, u - 2 ** 24, np.where(u <= -2 ** 23, u + 2 ** 24, u))
    assert np.all(u < 0)  # both neurons are driven negative: no spike, no reset
    v = np.zeros_like(u)
    v_clip = np.zeros_like(u)
    for _ in range(steps):
        v = v + u
        v_clip += v < -(2 ** 23 - 1)
        v = np.maximum(v, -(2 ** 23 - 1))
    u_wrap = (np.abs(a_in * 64) >= 2 ** 23).astype(np.int64) * steps
    return u_wrap, v_clip


def test_saturated_weights_are_counted_per_layer(model):
    q = model.graph.nodes["fc"].metadata["loihi"]
    np.testing.assert_array_equal(q["weight_mant"][0, :N_BIG], 254)
    np.testing.assert_array_equal(q["weight_mant"][1, N_BIG:], -256)
    assert q["n_saturated"] == N_BIG + N_NEG
    assert model.meta["saturated_weights"] == N_BIG + N_NEG
    assert model.meta["saturated_layers"] == {"n": N_BIG + N_NEG}
    layer = model.meta["quantization"]["layers"][0]
    assert layer["n_saturated"] == N_BIG + N_NEG and layer["observer"] == "override"


def test_wraps_and_clips_counted_by_the_engines(model):
    x = np.ones((T, 1, N_BIG + N_NEG), np.int64)
    a_in = np.array([254 * N_BIG, -256 * N_NEG])
    assert a_in[0] * 64 > fp.STATE_MAX  # the current overflows 24 bits
    u_wrap, v_clip = expected_counts(a_in, T)
    assert u_wrap[0] == T and u_wrap[1] == 0 and v_clip[1] > 0
    res = simulate_fixed(model.graph, x, pipeline=False, record_states=True)
    st = res.states["n"]
    np.testing.assert_array_equal(st["u_wrap"][0], u_wrap)
    np.testing.assert_array_equal(st["v_clip"][0], v_clip)
    assert st["u"].shape == (T, 1, 2)  # the states themselves are recorded too
    stats: dict = {}
    simulate_layerwise(model.graph, x, stats)
    np.testing.assert_array_equal(stats["n"]["u_wrap"][0], u_wrap)
    np.testing.assert_array_equal(stats["n"]["v_clip"][0], v_clip)


def test_eval_reports_overflow_per_layer(model):
    x = np.ones((T, 2, N_BIG + N_NEG), np.int64)
    rep = evaluate(model, x, np.array([0, 1]), batch_size=1)
    u_wrap, v_clip = expected_counts(np.array([254 * N_BIG, -256 * N_NEG]), T)
    ly = rep.layers[0]
    # loihi-sim runs T + 1 steps, the first without input (one synapse delay): same counts
    assert ly.u_wrap == ly.u_wrap_fake_quant == 2 * u_wrap.sum()
    assert ly.v_clip == ly.v_clip_fake_quant == 2 * v_clip.sum()
    assert rep.overflow == {"n": {"u_wrap": ly.u_wrap, "v_clip": ly.v_clip}}
    assert rep.as_dict()["overflow"]["n"]["u_wrap"] == ly.u_wrap


def test_cli_eval_and_compile_warn(model, tmp_path, capsys):
    path = tmp_path / "o.ndp"
    artifact.save(model, path)
    data = tmp_path / "x.npz"
    np.savez(data, x=np.ones((1, T, N_BIG + N_NEG), np.uint8), y=np.array([0]))
    assert main(["eval", str(path), "--input", str(data), "--json"]) == 0
    captured = capsys.readouterr()
    rep = json.loads(captured.out)
    assert rep["overflow"]["n"]["u_wrap"] == T
    assert "overflow in the loihi-sim run: n (60 u wraps" in captured.err
    # compile warns about saturated weights, naming the layer
    g = overflow_graph()
    g.nodes["fc"].weight[0, 0] = 50.0  # one outlier: the percentile observer clips it
    nir_path = tmp_path / "g.nir"
    nir.write(nir_path, g)
    out = tmp_path / "g.ndp"
    assert main(["compile", str(nir_path), "--dt", "1", "-o", str(out), "--observer",
                 "percentile"]) == 0
    err = capsys.readouterr().err
    assert "weights saturated during quantization: layer n: 1" in err
    assert main(["compile", str(nir_path), "--dt", "1", "-o", str(out)]) == 0
    assert "saturated" not in capsys.readouterr().err


@pytest.mark.lava
def test_lava_backend_agrees_through_overflow(model):
    """``eval --backend lava`` reads out Lava itself; the native engine models its int32
    arithmetic, so an overflowing model gives the same readout. Neuron 0 integrates moderate
    input and spikes, except that every tenth step its current wraps to a large negative value:
    its spike count depends on the wrap being reproduced."""
    x = np.zeros((T, 1, N_BIG + N_NEG), np.int64)
    x[:, 0, :100] = 1
    x[::10, 0, :N_BIG] = 1
    x[:, 0, N_BIG:] = 1
    counts = run(model, x, "native").counts
    assert counts[0, 0] > 0
    rep = evaluate(model, x, backend="lava")
    assert rep.backend == "lava" and rep.lava_equals_native is True
    assert rep.layers[0].u_wrap == T // 10
