import math

import pytest
import torch

import neurodeploy.nn as snn


def test_if_subtract_closed_form():
    n = snn.IF(threshold=1.0, reset="subtract")
    x = torch.tensor([0.6, 0.6, 0.6, 0.6, 0.0]).reshape(5, 1, 1)
    # v: 0.6, 1.2>1 -> spike, 0.2; 0.8; 1.4 -> spike, 0.4; 0.4
    assert n(x).flatten().tolist() == [0, 1, 0, 1, 0]


def test_lif_zero_reset_closed_form():
    n = snn.LIF(beta=0.5, threshold=1.0, reset="zero")
    x = torch.tensor([0.8, 0.8, 0.8, 0.0]).reshape(4, 1, 1)
    # v: 0.8; 1.2 -> spike, 0; 0.8; 0.4
    assert n(x).flatten().tolist() == [0, 1, 0, 0]


def test_strict_threshold_and_v_init():
    n = snn.IF(threshold=1.0, v_init=0.5)
    assert n(torch.tensor([[[0.5]]])).item() == 0  # v == threshold does not fire
    assert n(torch.tensor([[[0.51]]])).item() == 1


def test_amplitude_threshold_and_trainable_bound():
    n = snn.IF(threshold=0.3, learn_threshold=True, spike_amplitude="threshold",
               threshold_min=0.1)
    out = n(torch.ones(3, 1, 1))
    assert torch.allclose(out.max(), torch.tensor(0.3))
    with torch.no_grad():
        n.threshold.fill_(-1.0)
    assert float(n.effective_threshold().detach()) == pytest.approx(0.1)


@pytest.mark.parametrize("name", sorted(snn.SURROGATES))
def test_surrogate_gradients_match_closed_form(name):
    sur = snn.SURROGATES[name]()
    x = torch.linspace(-0.4, 0.4, 9, dtype=torch.float64, requires_grad=True)
    sur(x).sum().backward()
    assert torch.allclose(x.grad, sur.grad(x.detach()))
    if name == "dspike":
        b = sur.b
        expect = b / (2 * math.tanh(b / 2)) / math.cosh(b * 0.2) ** 2
        assert float(sur.grad(torch.tensor(0.2))) == pytest.approx(expect)
        assert float(sur.grad(torch.tensor(0.6))) == 0.0


def test_gradient_flows_to_threshold_and_input():
    n = snn.LIF(tau=4.0, threshold=0.5, learn_threshold=True)
    x = torch.rand(8, 2, 3, requires_grad=True)
    n(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert n.threshold.grad is not None


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="reset must be one of"):
        snn.IF(reset="hard")
    with pytest.raises(ValueError, match="exactly one of beta or tau"):
        snn.LIF()
    with pytest.raises(ValueError, match=r"\[T, B, ...\]"):
        snn.IF()(torch.ones(3))
