"""lava-dl netx ``.net`` export and import: the schema read back with h5py, and round trips."""

import warnings

import h5py
import nir
import numpy as np
import pytest

from neurodeploy.compiler import compile_graph, load_source
from neurodeploy.engine import simulate_fixed, simulate_float
from neurodeploy.errors import InputFileError, UnsupportedLayerError
from neurodeploy.exporters import dequantize, export_netx
from neurodeploy.exporters.netx import NetxExportError
from neurodeploy.frontends.netx import read_netx
from neurodeploy.graph import is_neuron

R = np.random.default_rng(0)


def _ones(shape):
    return np.ones(shape)


def cuba_net(reset="zero") -> nir.NIRGraph:
    """conv -> IF -> conv -> LIF -> flatten -> dense -> recurrent CubaLIF -> dense -> LIF."""
    s1, s2 = (4, 8, 8), (4, 4, 4)
    meta = {"reset": reset}
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 8, 8])}),
        "c1": nir.Conv2d(input_shape=(8, 8), weight=R.normal(0.1, 0.5, (4, 2, 3, 3)), stride=1,
                         padding=1, dilation=1, groups=1, bias=np.full(4, 0.125)),
        "n1": nir.IF(r=_ones(s1), v_threshold=_ones(s1), v_reset=0 * _ones(s1), metadata=meta),
        "c2": nir.Conv2d(input_shape=(8, 8), weight=R.normal(0.1, 0.5, (4, 4, 3, 3)), stride=2,
                         padding=1, dilation=1, groups=1, bias=np.zeros(4)),
        "n2": nir.LIF(tau=5 * _ones(s2), r=5 * _ones(s2), v_leak=0 * _ones(s2),
                      v_threshold=_ones(s2), v_reset=0 * _ones(s2)),
        "f": nir.Flatten(input_type={"input": np.array(s2)}, start_dim=0, end_dim=-1),
        "a3": nir.Affine(weight=R.normal(0.1, 0.4, (10, 64)), bias=np.zeros(10)),
        "n3": nir.CubaLIF(tau_syn=4 * _ones(10), tau_mem=8 * _ones(10), r=8 * _ones(10),
                          v_leak=0 * _ones(10), v_threshold=0.5 * _ones(10),
                          v_reset=0 * _ones(10), w_in=4 * _ones(10)),
        "rec": nir.Affine(weight=R.normal(0, 0.3, (10, 10)), bias=np.zeros(10)),
        "a4": nir.Affine(weight=R.normal(0.2, 0.5, (5, 10)), bias=np.zeros(5)),
        "n4": nir.LIF(tau=4 * _ones(5), r=4 * _ones(5), v_leak=0 * _ones(5),
                      v_threshold=_ones(5), v_reset=0 * _ones(5)),
        "output": nir.Output(output_type={"output": np.array([5])}),
    }
    edges = [("input", "c1"), ("c1", "n1"), ("n1", "c2"), ("c2", "n2"), ("n2", "f"),
             ("f", "a3"), ("a3", "n3"), ("n3", "rec"), ("rec", "n3"), ("n3", "a4"),
             ("a4", "n4"), ("n4", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0}, type_check=False)


@pytest.fixture(scope="module")
def compiled():
    """The compiled network, its conv bias moved to netx's resolution (multiples of 64)."""
    # netx: one vth per layer, and no per-neuron initial membranes (pipeline alignment)
    cm = compile_graph(cuba_net(), time_steps=25, per_channel=False, align=False)
    q = cm.graph.nodes["n1"].metadata["loihi"]
    eff = np.asarray(q["bias_mant"]) * 2 ** int(q["bias_exp"])
    q["bias_mant"], q["bias_exp"] = np.round(eff / 64).astype(np.int64), 6
    return cm


def test_bias_below_netx_resolution_is_rounded_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="netx biases have 6 fewer fractional bits"):
        export_netx(compile_graph(cuba_net(), per_channel=False), tmp_path / "b.net")
    with h5py.File(tmp_path / "b.net", "r") as f:
        b = f["layer/1/bias"][()]
    assert b.dtype == np.float32 and b.shape == (4,) and np.all(b == np.round(b)) and b[0] > 0


def _type(ds) -> str:
    return ds[()][0].decode("ascii")


def test_netx_file_has_every_key_with_the_schema_dtypes(compiled, tmp_path):
    path = tmp_path / "m.net"
    assert export_netx(compiled, path) == ["input", "conv", "conv", "flatten", "dense_rec",
                                           "dense"]
    with h5py.File(path, "r") as f:
        assert set(f) == {"layer", "simulation"} and not f.attrs.keys()
        layers = f["layer"]
        assert sorted(layers, key=int) == [str(i) for i in range(6)]
        for g in layers.values():
            assert g["type"].dtype == np.dtype("S10") and g["type"].shape == (1,)
            assert g["shape"].dtype == np.int64
        assert layers["0"]["shape"][()].tolist() == [2, 8, 8] and "neuron" not in layers["0"]
        conv = layers["1"]
        assert {"inChannels", "outChannels", "kernelSize", "stride", "padding", "dilation",
                "groups", "weight", "bias", "neuron"} <= set(conv)
        assert conv["weight"].dtype == np.float32 and conv["weight"].shape == (4, 2, 3, 3)
        for k in ("kernelSize", "stride", "padding", "dilation"):
            assert conv[k].dtype == np.int64 and conv[k].shape == (2,)
        assert layers["2"]["stride"][()].tolist() == [2, 2]
        assert layers["2"]["shape"][()].tolist() == [4, 4, 4] and "bias" not in layers["2"]
        assert layers["3"]["shape"][()].tolist() == [64, 1, 1] and _type(layers["3"]["type"]
                                                                         ) == "flatten"
        rec = layers["4"]
        assert rec["weight"].shape == (10, 64) and rec["weight_rec"].shape == (10, 10)
        assert rec["inFeatures"][()] == 64 and rec["outFeatures"][()] == 10
        for g in (layers[k] for k in ("1", "2", "4", "5")):
            w = g["weight"][()]
            assert np.all(w == np.round(w)) and w.min() >= -256 and w.max() <= 255
            n = g["neuron"]
            assert n["type"][()] == b"CUBA" and h5py.check_vlen_dtype(n["type"].dtype) is bytes
            for k in ("iDecay", "vDecay", "vThMant", "refDelay"):
                assert n[k].dtype == np.int64 and n[k].shape == ()
            assert n["gradedSpike"].dtype == np.bool_ and not n["gradedSpike"][()]
            assert n["refDelay"][()] == 1
        assert f["simulation/Ts"][()] == 1 and f["simulation/tSample"][()] == 25
        g = compiled.graph
        for k, name in (("1", "n1"), ("2", "n2"), ("4", "n3"), ("5", "n4")):
            q = g.nodes[name].metadata["loihi"]
            n = layers[k]["neuron"]
            assert (n["iDecay"][()], n["vDecay"][()]) == (q["du"] + 1, q["dv"])
            assert n["vThMant"][()] == int(np.max(q["vth"]))
        assert layers["1"]["neuron/iDecay"][()] == 4096 and layers["1"]["neuron/vDecay"][()] == 0
        assert layers["4"]["neuron/iDecay"][()] < 4096  # CubaLIF keeps a synaptic current


def test_round_trip_is_bit_exact_in_fixed_point(compiled, tmp_path):
    export_netx(compiled, tmp_path / "m.net")
    g, info = load_source(tmp_path / "m.net")
    assert info["time_steps"] == 25 and info["input_shape"] == [2, 8, 8]
    kinds = [type(n).__name__ for n in g.nodes.values()]
    assert kinds.count("IF") == 1 and kinds.count("LIF") == 2 and kinds.count("CubaLIF") == 1
    again = compile_graph(g, scales={k: 1.0 for k, n in g.nodes.items() if is_neuron(n)},
                          align=False)
    x = (R.random((40, 5, 2, 8, 8)) < 0.3).astype(np.int64)
    a = simulate_fixed(compiled.graph, x).output
    b = simulate_fixed(again.graph, x).output
    assert np.array_equal(a, b) and a.sum() > 0
    # at NIR level (float) the imported graph is the same network in v >> 6 units
    fa = simulate_float(dequantize(compiled), x).output
    fb = simulate_float(g, x).output
    assert np.mean(fa == fb) > 0.99


def test_reset_by_subtraction_is_refused_or_exported_with_a_warning(tmp_path):
    cm = compile_graph(cuba_net(reset="subtract"), per_channel=False)
    with pytest.raises(NetxExportError, match="resets by subtraction; netx .* resets to zero"):
        export_netx(cm, tmp_path / "s.net")
    assert not (tmp_path / "s.net").exists()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        export_netx(cm, tmp_path / "s.net", allow_reset_change=True)
    assert any("computes something else" in str(x.message) for x in w)
    assert read_netx(tmp_path / "s.net").nodes["layer1.neuron"].metadata["reset"] == "zero"


def test_per_channel_thresholds_are_refused_with_a_hint(tmp_path):
    cm = compile_graph(cuba_net())  # loihi-sim default: one scale per output channel
    with pytest.raises(NetxExportError, match="one threshold per layer: compile with "
                                              "--per-layer"):
        export_netx(cm, tmp_path / "c.net")


def test_branching_graphs_are_refused(tmp_path):
    from neurodeploy.frontends.torch import torch_to_nir
    from tests.models_for_tests import residual

    cm = compile_graph(torch_to_nir(residual(), (2, 8, 8)), align=False)
    with pytest.raises(NetxExportError, match="netx layers take one|feeds 2 layers"):
        export_netx(cm, tmp_path / "r.net", allow_reset_change=True)


def _write_lavadl_like(path, neuron_type=b"LOIHI", extra_layer=None):
    """A file in the layout of lava-dl's tutorial networks: no input layer, dense shapes
    [N, 1, 1], a 1-D weight for the single output, float64 bias, no simulation group."""
    with h5py.File(path, "w") as f:
        lay = f.create_group("layer")
        specs = [(6, 4, R.integers(-60, 60, (4, 6)) * 2.0), (4, 1, R.integers(0, 100, 4) * 1.0)]
        for i, (nin, nout, w) in enumerate(specs):
            g = lay.create_group(str(i))
            g.create_dataset("type", data=np.array([b"dense"], dtype="S10"))
            g.create_dataset("shape", data=np.array([nout, 1, 1]))
            g.create_dataset("inFeatures", data=nin)
            g.create_dataset("outFeatures", data=nout)
            g.create_dataset("weight", data=w.astype(np.float32))
            g.create_dataset("bias", data=np.full(nout, 64.0))
            n = g.create_group("neuron")
            n.create_dataset("type", data=neuron_type, dtype=h5py.special_dtype(vlen=bytes))
            for k, v in (("iDecay", 4096), ("vDecay", 123), ("vThMant", 80), ("refDelay", 1),
                         ("wgtExp", 0)):
                n.create_dataset(k, data=np.int64(v))
            n.create_dataset("theta", data=1600.0)
        if extra_layer:
            g = lay.create_group("2")
            g.create_dataset("type", data=np.array([extra_layer.encode()], dtype="S10"))
            g.create_dataset("shape", data=np.array([1]))


def test_reader_tolerates_lavadl_variations(tmp_path):
    path = tmp_path / "tut.net"
    _write_lavadl_like(path)
    g = read_netx(path)
    assert tuple(g.nodes["input"].output_type["output"]) == (6,)
    assert tuple(g.nodes["output"].output_type["output"]) == (1,)
    assert isinstance(g.nodes["layer0.neuron"], nir.LIF) and g.metadata["dt"] == 1.0
    cm = compile_graph(g, scales={k: 1.0 for k, n in g.nodes.items() if is_neuron(n)})
    q = cm.graph.nodes["layer0.neuron"].metadata["loihi"]
    assert (q["dv"], q["du"], int(np.max(q["vth"]))) == (123, 4095, 80)
    assert int(np.max(q["bias_mant"] * 2 ** q["bias_exp"])) == 64 * 64
    with h5py.File(path, "r") as f:
        w = f["layer/0/weight"][()]
    np.testing.assert_array_equal(cm.graph.nodes["layer0.dense"].metadata["loihi"][
        "weight_mant"], w)


def test_reader_names_what_it_cannot_map(tmp_path):
    path = tmp_path / "pool.net"
    _write_lavadl_like(path, extra_layer="pool")
    with pytest.raises(UnsupportedLayerError, match="'layer2' of type netx layer 'pool'"):
        read_netx(path)
    _write_lavadl_like(tmp_path / "sdnn.net", neuron_type=b"SDNN")
    with pytest.raises(UnsupportedLayerError, match="netx neuron SDNN"):
        read_netx(tmp_path / "sdnn.net")
    with h5py.File(tmp_path / "empty.net", "w") as f:
        f.create_group("other")
    with pytest.raises(InputFileError, match="no /layer group"):
        read_netx(tmp_path / "empty.net")
