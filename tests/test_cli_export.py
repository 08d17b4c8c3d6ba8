"""``neurodeploy export``: the files it writes run like the compiled model; bad input exits 2.

An exported NIR graph has no synapse delays, so it is compared with the fixed-point model run
without them, from the trained membranes (``training_timing``)."""

import numpy as np
import pytest

from neurodeploy import artifact
from neurodeploy.cli import main
from neurodeploy.compiler import compile_graph
from neurodeploy.engine.fixed_engine import simulate_fixed
from neurodeploy.engine.float_engine import simulate_float
from neurodeploy.frontends.nir_file import read_nir
from neurodeploy.frontends.torch import torch_to_nir
from neurodeploy.graph import output_names
from neurodeploy.passes.align_pipeline import training_timing
from tests.test_nir_export import if_net, spikes


@pytest.fixture
def ndp(tmp_path):
    path = tmp_path / "m.ndp"
    artifact.save(compile_graph(torch_to_nir(if_net(), (2, 8, 8))), path)
    return path


@pytest.fixture
def ndp_per_layer(tmp_path):
    """Compiled as netx can hold it: one scale per layer, no alignment stages."""
    path = tmp_path / "plain.ndp"
    artifact.save(compile_graph(torch_to_nir(if_net(), (2, 8, 8)), per_channel=False,
                                align=False), path)
    return path


def test_exported_nir_runs_like_the_fixed_point_model(ndp, tmp_path, capsys):
    out = tmp_path / "deployed.nir"
    assert main(["export", str(ndp), "--format", "nir", "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    cm = artifact.load(ndp)
    x = spikes(30, 4, (2, 8, 8), seed=5).numpy().astype(np.int64)
    fixed = simulate_fixed(training_timing(cm.graph), x, pipeline=False).activity
    res = simulate_float(read_nir(out), x, dt=1.0).activity
    out_layer = next(a for a, b in cm.graph.edges if b in output_names(cm.graph))
    assert fixed[out_layer].sum() > 0
    assert np.array_equal(res[out_layer], fixed[out_layer])


def test_netx_refuses_what_it_cannot_hold_and_leaves_nothing(ndp, ndp_per_layer, tmp_path,
                                                              capsys):
    out = tmp_path / "deployed.net"
    assert main(["export", str(ndp), "--format", "netx", "-o", str(out)]) == 2
    assert "--no-align" in capsys.readouterr().err and not out.exists()
    assert main(["export", str(ndp_per_layer), "--format", "netx", "-o", str(out)]) == 2
    assert "--allow-reset-change" in capsys.readouterr().err
    assert not out.exists()
    assert main(["export", str(ndp_per_layer), "--format", "netx", "--allow-reset-change", "-o",
                 str(out)]) == 0
    assert out.is_file() and "resets by subtraction" in capsys.readouterr().err


@pytest.mark.parametrize("args, needle", [
    (["missing.ndp", "--format", "nir"], "no such file"),
    (["{ndp}", "--format", "nir", "-o", "{ndp}"], "refusing to overwrite"),
])
def test_bad_input_exits_2(ndp, tmp_path, capsys, args, needle):
    args = [a.format(ndp=ndp) for a in args]
    assert main(["export", *args]) == 2
    assert needle in capsys.readouterr().err
