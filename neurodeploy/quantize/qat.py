"""Quantization-aware fine-tuning on the exact Loihi weight grid (the PyTorch side).

With compile's default scales (min/max, one scale per output channel) the weights of output
channel ``k`` of every synapse layer into a neuron layer become mantissas
``q = round(lambda_k w_eff)``, ``q`` even in ``[-256, 254]`` for mixed signs, with
``lambda_k = 254 / max|w_eff[k]|``, and the threshold becomes ``round(lambda_k theta)``
(``docs/fixed-point.md``). A trained network whose decisions sit close to a threshold loses a
few of them to that rounding. Training through the grid (fake quantization with a
straight-through estimator, the practice of lava-dl's quantized training) and snapping the
weights onto it at the end gives a float model that the compiler maps onto Loihi exactly:

* every channel's grid is ``2 / lambda_k`` with ``lambda_k = n_k / theta`` for the smallest
  odd integer ``n_k >= 254 theta / max|w_eff[k]|``: the largest weight lands on mantissa
  254 (so min/max chooses this ``lambda_k`` again), the threshold on the integer ``n_k``;
* weights are clamped to ``[-254, 254]`` (not -256, which would change the max);
* spike inputs and integer images then give currents that are even multiples of
  ``1 / lambda_k``, the threshold an odd one: no current equals the threshold exactly, so float
  and fixed point cannot break a tie differently.

A :class:`GridGroup` lists the weights into one neuron layer. ``ref`` of them set the scale;
the others (e.g. a recurrent synapse whose copies also feed a layer that sees only the first)
are clamped to the same range so that the max stays where the grid puts it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

TOP = 254  # largest mantissa magnitude used (mixed-sign Loihi weights: even values in [-256, 254])


@dataclass
class GridGroup:
    """Synapse weights into one neuron layer, quantized on one per-channel grid."""

    name: str
    weights: list[torch.nn.Parameter]  # each [C_out, ...]
    theta: float  # the neuron layer's threshold minus its reset, in membrane units
    gains: list[float]  # w_eff = gain * w for each weight (neuron gain times folded scales)
    ref: int | None = None  # the first ``ref`` weights set the scale (None: all of them)


def channel_scales(group: GridGroup) -> torch.Tensor:
    """``lambda_k = n_k / theta`` per output channel (``inf`` for a channel without weights)."""
    refs = group.weights[: group.ref or len(group.weights)]
    gains = group.gains[: len(refs)]
    m = torch.stack([(abs(g) * w.detach().abs()).reshape(w.shape[0], -1).amax(1)
                     for w, g in zip(refs, gains, strict=True)]).amax(0).double()
    if group.theta <= 0:
        raise ValueError(f"{group.name}: threshold must be positive for QAT, got {group.theta}")
    n = torch.ceil(TOP * group.theta / m * (1 - 1e-6))  # snapped float32 weights stay put
    n = n + (n % 2 == 0)  # odd: currents are even multiples of 1 / lambda, the threshold odd
    return torch.where(m > 0, n / group.theta, torch.full_like(m, float("inf")))


def _row(x: torch.Tensor, ndim: int) -> torch.Tensor:
    return x.reshape(-1, *([1] * (ndim - 1)))


def quantize_group(group: GridGroup) -> list[torch.Tensor]:
    """The weights of ``group`` rounded to nearest on their grid (new tensors, same dtype)."""
    lam = channel_scales(group)
    out = []
    for w, g in zip(group.weights, group.gains, strict=True):
        step = _row(torch.where(torch.isinf(lam), torch.ones_like(lam), 2.0 / (lam * abs(g))),
                    w.ndim)
        q = torch.clamp(torch.round(w.detach().double() / step), -TOP // 2, TOP // 2)
        out.append(torch.where(_row(torch.isinf(lam), w.ndim), torch.zeros_like(q), q * step)
                   .to(w.dtype))
    return out


@contextmanager
def quantized_weights(groups: Sequence[GridGroup]) -> Iterator[None]:
    """Run the model with every group's weights on the grid; gradients computed inside apply to
    the float weights (straight-through estimator). Call ``backward`` inside the block."""
    saved = []
    with torch.no_grad():
        for grp in groups:
            for w, q in zip(grp.weights, quantize_group(grp), strict=True):
                saved.append((w, w.data.clone()))
                w.data.copy_(q)
    try:
        yield
    finally:
        with torch.no_grad():
            for w, data in saved:
                w.data.copy_(data)


def snap_(groups: Sequence[GridGroup]) -> None:
    """Move every group's weights onto the grid, in place."""
    with torch.no_grad():
        for grp in groups:
            for w, q in zip(grp.weights, quantize_group(grp), strict=True):
                w.copy_(q)


def on_grid(groups: Sequence[GridGroup]) -> bool:
    """Whether every weight already lies on its group's grid."""
    return all(torch.equal(w.detach(), q) for grp in groups
               for w, q in zip(grp.weights, quantize_group(grp), strict=True))
