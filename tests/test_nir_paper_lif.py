"""NIR paper reference: one LIF neuron exported by Norse, as Lava and a Loihi 2 chip ran it.

`lif_lava_cpu_fixed.csv` / `lif_lava_loihi_fixed.csv` hold (input spike, voltage, output spike)
per Lava step; spikes at rows 461, 511, 711, 761: one step after the exact solution
(`lif_exact.csv`), which is Lava's one-step synapse delay.

The paper's script quantized with a fixed weight scale (a spike adds 640 to v, threshold 1600);
our compiler chooses its own scale, so the voltage is compared after rescaling to theirs.
What differs on the chip: at each spike step the chip's probe reads 128 where Lava's CPU model
reads 0. Loihi counts a spiking neuron's refractory period in its voltage register, in units of
128 (nengo-loihi#170; lava-nc/lava#282: "the state of the voltage on Loihi is in fact 128 after
a spike"), and the next step evolves as from 0. `fixedpoint.chip_probe_voltage` applies that
view to our trace, which then matches the chip's trace as closely as the CPU one.
"""

import numpy as np
import pytest

from neurodeploy.compiler import compile_file
from neurodeploy.engine import simulate_fixed
from neurodeploy.fixedpoint import chip_probe_voltage

ISIS = [6, 15, 4, 3, 0, 2, 1, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 14]


def _input() -> np.ndarray:
    d1 = list(np.concatenate([isi * [0] + [1] for isi in ISIS]))[:100]
    return np.array([[e] + 9 * [0] for e in d1]).reshape(-1)  # 1000 steps


@pytest.fixture
def traces(shared_reference):
    folder = shared_reference / "nir-paper"
    load = lambda name: np.loadtxt(folder / name, delimiter=",")  # noqa: E731
    return {k: load(f"lif_{k}.csv") for k in ("lava_cpu_fixed", "lava_loihi_fixed", "exact")}


def test_lif_norse_spikes_match_lava_cpu_and_loihi2(shared_reference, traces):
    cm = compile_file(shared_reference / "nir-paper" / "lif_norse.nir", dt=1e-4)
    x = _input()
    assert np.array_equal(x, traces["lava_cpu_fixed"][:, 0])
    res = simulate_fixed(cm.graph, x.reshape(-1, 1, 1), record_states=True)
    neuron = next(k for k, q in cm.graph.nodes.items() if "vth" in q.metadata.get("loihi", {}))
    spikes = np.flatnonzero(res.activity[neuron][:, 0, 0])
    assert spikes.tolist() == [461, 511, 711, 761]
    for k in ("lava_cpu_fixed", "lava_loihi_fixed"):
        assert np.flatnonzero(traces[k][:, 2]).tolist() == spikes.tolist()
    assert (np.flatnonzero(traces["exact"][:, 2]) + 1).tolist() == spikes.tolist()

    # voltage after our scale: a spike adds 0.04 in float units; the paper's Lava run used 640
    q = cm.graph.nodes[neuron].metadata["loihi"]
    ours = res.states[neuron]["v"][:, 0, 0] / (q["scale"] * 64) * (640 / 0.04)
    ref = traces["lava_cpu_fixed"][:, 1]
    dev = np.abs(ours - ref)
    # Their weight 10.24 was rounded to 10 (2.3 % low) and their coarser v truncates to 0
    # sooner; measured largest deviation: 13.3 LSB of theirs (threshold 1600 LSB), where their
    # trace has decayed to 0-2 while ours still holds 12-14.
    assert dev.max() < 16, dev.max()
    chip = traces["lava_loihi_fixed"][:, 1]
    assert np.all(chip[spikes] == 128) and np.all(ref[spikes] == 0)
    on_chip = chip_probe_voltage(ours, res.activity[neuron][:, 0, 0])
    assert np.all(on_chip[spikes] == chip[spikes])
    assert np.abs(on_chip - chip).max() == dev.max()  # elsewhere the chip equals Lava's CPU run
