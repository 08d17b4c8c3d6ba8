"""Loihi fixed-point quantization of a lowered NIR graph (see docs/fixed-point.md).

Every neuron layer ``n`` gets one scale ``lambda_n`` (integer synaptic units per float unit of
its membrane potential). All synapse layers into ``n`` share it, so a residual sum adds
like-scaled currents. With ``g`` the per-step input gain of the neuron (IF: ``dt r``;
LIF: ``dt r / tau``; CubaLIF: ``(dt/tau_syn) w_in (dt/tau_mem) r``):

* weights: ``w = round(g W lambda)``, 8-bit: mixed-sign matrices in steps of 2 in
  [-256, 254] (Lava drops the LSB of mixed-sign weights), one-signed in [0, 255]/[-255, 0];
* threshold: ``vth = round((v_threshold - v_reset) lambda)`` (Lava compares ``v > vth << 6``);
* bias: ``bias_mant << bias_exp = round(b lambda 64)`` (added to ``v``, which carries 6 more
  fractional bits than the synaptic input);
* decays (12 bit): ``dv = round(4096 dt / tau_mem)``, ``du = 4095`` for IF/LIF (no synaptic
  memory), ``du = 4095 - round(4096 (1 - dt / tau_syn))`` for CubaLIF (Lava decays ``u`` by
  ``du + 1``);
* the membrane is shifted so that ``v_reset`` maps to 0 (``v_leak`` and ``v_init`` move with it).

``lambda`` comes from an observer (:mod:`neurodeploy.quantize.observers`): the largest scale
that keeps every weight in range and the threshold under its bit width. Every choice is recorded
in node metadata ``"loihi"`` and summarised in :class:`QuantReport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nir
import numpy as np

from ..errors import QuantizationError
from ..graph import is_neuron, predecessors, reset_mode

SYNAPSE_TYPES = (nir.Affine, nir.Conv2d)


@dataclass(frozen=True)
class LoihiFormat:
    """Bit widths of the fixed-point format (filled from the target's TOML)."""

    weight_bits: int = 8
    state_bits: int = 24
    decay_bits: int = 12
    vth_bits: int = 17
    bias_mant_bits: int = 13
    bias_exp_max: int = 7
    act_shift: int = 6

    @classmethod
    def from_target(cls, target) -> LoihiFormat:
        num = getattr(target, "numerics", None)
        if num is None:
            return cls()
        kw = {f: int(getattr(num, f)) for f in cls.__dataclass_fields__ if hasattr(num, f)}
        return cls(**kw)


@dataclass
class LayerQuant:
    """What quantization chose for one neuron layer and its incoming synapses."""

    neuron: str
    scale: float
    vth: int
    dv: int
    du: int
    bias_exp: int
    synapses: list[str]
    n_weights: int
    n_saturated: int
    max_abs_weight_error: float  # in float weight units, <= half an LSB unless saturated


@dataclass
class QuantReport:
    layers: list[LayerQuant] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"layers": [vars(x) for x in self.layers]}


def _gain_and_decays(name, node, dt, fmt: LoihiFormat):
    one = 1 << fmt.decay_bits
    if isinstance(node, nir.IF):
        return dt * np.asarray(node.r, float), 0, one - 1, np.zeros_like(node.r, dtype=float)
    if isinstance(node, nir.LIF):
        tau = np.asarray(node.tau, float)
        dv = np.round(one * dt / tau)
        leak = dt / tau * (np.asarray(node.v_leak, float) - np.asarray(node.v_reset, float))
        return dt * np.asarray(node.r, float) / tau, dv, one - 1, leak
    if isinstance(node, nir.CubaLIF):
        ts, tm = np.asarray(node.tau_syn, float), np.asarray(node.tau_mem, float)
        g = dt / ts * np.asarray(node.w_in, float) * dt / tm * np.asarray(node.r, float)
        du = (one - 1) - np.round(one * (1 - dt / ts))
        leak = dt / tm * (np.asarray(node.v_leak, float) - np.asarray(node.v_reset, float))
        return g, np.round(one * dt / tm), du, leak
    raise QuantizationError(f"node {name!r}: {type(node).__name__} has no fixed-point model")


def _uniform(name, what, a) -> int:
    a = np.asarray(a)
    if not np.all(a == a.flat[0]):
        raise QuantizationError(f"node {name!r}: {what} differs between neurons; Loihi shares it "
                                "per layer")
    return int(a.flat[0])


def quantize_weights(w: np.ndarray, scale: float, weight_bits: int = 8):
    """Integer mantissas of ``w * scale`` in the Lava/Loihi 8-bit synapse format.

    Returns ``(mantissa, n_saturated)``. Mixed-sign matrices use even values only.
    """
    x = np.asarray(w, float) * scale
    top = (1 << weight_bits) - 1
    if x.min() < 0 < x.max() or (x.min() < 0 and x.max() > 0):
        q = 2 * np.round(x / 2)
        lo, hi = -(top + 1), top - 1
    elif x.max() > 0:
        q, lo, hi = np.round(x), 0, top
    else:
        q, lo, hi = np.round(x), -top, 0
    sat = int(np.count_nonzero((q < lo) | (q > hi)))
    return np.clip(q, lo, hi).astype(np.int64), sat


def max_scale(w_eff: list[np.ndarray], theta: np.ndarray, fmt: LoihiFormat) -> float:
    """Min/max observer: the largest scale keeping weights and threshold in range."""
    wmax = max(float(np.abs(w).max()) for w in w_eff) if w_eff else 0.0
    top = (1 << fmt.weight_bits) - 2
    s_w = top / wmax if wmax > 0 else np.inf
    tmax = float(np.max(np.abs(theta)))
    s_t = ((1 << fmt.vth_bits) - 1) / tmax if tmax > 0 else np.inf
    s = min(s_w, s_t)
    if not np.isfinite(s):
        raise QuantizationError("layer has neither weights nor threshold to set a scale from")
    return s


def quantize_graph(graph: nir.NIRGraph, fmt: LoihiFormat | None = None,
                   scales: dict[str, float] | None = None) -> tuple[nir.NIRGraph, QuantReport]:
    """Annotate a lowered graph (``passes.lower_for_hardware``) with fixed-point parameters.

    ``scales`` overrides the observer's choice per neuron layer (calibration passes them in).
    Returns a new graph whose synapse and neuron nodes carry ``metadata["loihi"]``.
    """
    from ..passes._util import clone

    fmt = fmt or LoihiFormat()
    g = clone(graph)
    dt = float(g.metadata.get("dt", 1.0))
    pred = predecessors(g)
    report = QuantReport()
    for name, node in g.nodes.items():
        if not is_neuron(node):
            continue
        syn = pred[name]
        for s in syn:
            if not isinstance(g.nodes[s], SYNAPSE_TYPES):
                raise QuantizationError(
                    f"node {name!r}: input {s!r} is a {type(g.nodes[s]).__name__}; lower the "
                    "graph first so every synapse layer is an Affine or Conv2d")
        gain, dv, du, leak = _gain_and_decays(name, node, dt, fmt)
        theta = np.asarray(node.v_threshold, float) - np.asarray(node.v_reset, float)
        gain_u = _uniform(name, "input gain (dt r / tau)", np.round(gain, 12) * 1e12) / 1e12
        w_eff = [np.asarray(g.nodes[s].weight, float) * gain_u for s in syn]
        lam = float(scales[name]) if scales and name in scales else max_scale(w_eff, theta, fmt)
        vth = np.round(theta * lam).astype(np.int64)
        if vth.max() >= 1 << fmt.vth_bits or vth.min() < 0:
            raise QuantizationError(f"node {name!r}: threshold {vth.max()} does not fit "
                                    f"{fmt.vth_bits} bits at scale {lam:.4g}")
        bias_v = np.zeros(theta.shape) + leak
        n_sat = n_w = 0
        err = 0.0
        for s, w in zip(syn, w_eff, strict=True):
            q, sat = quantize_weights(w, lam, fmt.weight_bits)
            n_sat += sat
            n_w += q.size
            err = max(err, float(np.abs(q / lam - w).max()) / gain_u if q.size else 0.0)
            conn = g.nodes[s]
            b = np.asarray(conn.bias, float) * gain_u
            bias_v = bias_v + (b.reshape(-1, *([1] * (theta.ndim - 1))) if theta.ndim > 1
                               else b)
            conn.metadata = dict(conn.metadata)
            conn.metadata["loihi"] = {"weight_mant": q, "weight_exp": 0, "scale": lam,
                                      "n_saturated": sat}
        bias_eff = np.round(bias_v * lam * (1 << fmt.act_shift)).astype(np.int64)
        mant_max = (1 << (fmt.bias_mant_bits - 1)) - 1
        bias_exp = 0
        while np.abs(bias_eff).max(initial=0) > mant_max << bias_exp:
            bias_exp += 1
        if bias_exp > fmt.bias_exp_max:
            raise QuantizationError(f"node {name!r}: bias needs exponent {bias_exp} > "
                                    f"{fmt.bias_exp_max}")
        bias_mant = np.round(bias_eff / (1 << bias_exp)).astype(np.int64)
        v_init = np.asarray(node.metadata.get("v_init", 0.0), float) - np.asarray(node.v_reset)
        v_init_int = np.round(np.broadcast_to(v_init, theta.shape) * lam *
                              (1 << fmt.act_shift)).astype(np.int64)
        dv_i = _uniform(name, "dv (membrane decay)", dv)
        du_i = _uniform(name, "du (current decay)", du)
        node.metadata = dict(node.metadata)
        node.metadata["loihi"] = {
            "scale": lam, "vth": vth, "du": du_i, "dv": dv_i, "bias_mant": bias_mant,
            "bias_exp": bias_exp, "v_init": v_init_int, "reset": reset_mode(node),
            "observer": "minmax" if not (scales and name in scales) else "calibrated",
        }
        report.layers.append(LayerQuant(name, lam, int(vth.max()), dv_i, du_i, bias_exp,
                                        list(syn), n_w, n_sat, err))
    return g, report
