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

With per-channel quantization (``quantize_graph(per_channel=True)``; ``compile_graph`` uses it
on targets whose thresholds may differ per neuron) every output channel ``k`` of the neuron layer
has its own ``lambda_k = lambda m_k`` in all its synapse layers: ``m_k = max(1, s_k / lambda)``
with ``s_k`` the largest scale at which the channel's own weights and threshold fit (with
min/max, every channel fills its 8 bits; a larger observer scale clips only the channels whose
own bound is below it). Spikes are binary, so scaling channel ``k``'s weights, threshold, bias
and ``v_init`` together is exact in float; only the rounding changes, and an outlier weight no
longer coarsens every other channel.

``lambda`` comes from an observer (:mod:`neurodeploy.quantize.observers`): by default min/max,
the largest scale that keeps every weight in range and the threshold under its bit width; or a
percentile of ``|w_eff|``; or, per layer, a scale and threshold factor (``vth = round(theta
lambda f)``) chosen on calibration data (:func:`neurodeploy.quantize.calibrate.calibrate`). A
recurrent synapse into a neuron is one of its synapse layers, so it shares the neuron's scale
like every other input. Every choice is recorded in node metadata ``"loihi"`` and summarised in
:class:`QuantReport`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import nir
import numpy as np

from ..errors import QuantizationError
from ..graph import is_neuron, predecessors, reset_mode, successors
from .observers import MinMaxObserver, ScaleObserver, channel_multipliers, make_observer
from .rounding import WeightRounding, round_nearest

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
    max_abs_weight_error: float  # float weight units: <= half an LSB (nearest), < one (gptq)
    observer: str = "minmax"
    vth_factor: float = 1.0  # threshold nudge: vth = round(theta * scale * vth_factor)
    percentile: float | None = None  # percentile observer only
    rate_error: float | None = None  # calibration: firing-rate error of the chosen candidate
    rate_error_minmax: float | None = None  # ... and of the min/max scale
    candidates: list[list[float]] = field(default_factory=list)  # [scale, vth_factor, error]
    per_channel: bool = False  # scales per output channel (channel_scale_min..max)
    channel_scale_min: float | None = None
    channel_scale_max: float | None = None
    rounding: str = "nearest"  # of all synapse layers into the neuron: nearest or gptq
    output_error: float | None = None  # ||sum_s (W_s - Q_s/s_s) X_s||^2 / ||sum_s W_s X_s||^2
    output_error_nearest: float | None = None  # ... with round-to-nearest (calibration data)
    rounding_inputs: str | None = None  # X from the "float" or the "quantized" earlier layers
    rounding_joint: bool | None = None  # synapses rounded jointly (else one at a time)
    rounding_note: str | None = None  # why not gptq, or why not jointly
    rounding_rate_errors: dict | None = None  # held-out rate error of each candidate rounding


@dataclass
class QuantReport:
    layers: list[LayerQuant] = field(default_factory=list)
    observer: str = "minmax"
    calibration: dict | None = None  # summary from calibrate(), when one ran
    per_channel: bool = False  # one scale per output channel (else one per layer)
    rounding: str = "nearest"  # weight rounding asked for (WeightRounding.method)
    rounding_samples: int = 0  # calibration samples behind the rounding (0: none used)
    rounding_choice: dict | None = None  # how the per-layer rounding was chosen (auto/gptq)

    @property
    def saturated_layers(self) -> dict[str, int]:
        """Neuron layers with saturated incoming weights: ``{name: count}``."""
        return {x.neuron: x.n_saturated for x in self.layers if x.n_saturated}

    def as_dict(self) -> dict:
        d = {"observer": self.observer, "per_channel": self.per_channel,
             "rounding": self.rounding, "rounding_samples": self.rounding_samples,
             "rounding_choice": self.rounding_choice,
             "layers": [vars(x) for x in self.layers]}
        if self.calibration is not None:
            d["calibration"] = self.calibration
        return d


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


def quantize_weights(w: np.ndarray, scale: float | np.ndarray, weight_bits: int = 8):
    """Integer mantissas of ``w * scale`` in the Lava/Loihi 8-bit synapse format, rounded to
    nearest (:func:`.rounding.round_nearest`; the grid is :func:`.rounding.weight_grid`).

    ``scale``: a number, or per-row scales that broadcast against ``w`` (``[C_out, 1, ...]``).
    Returns ``(mantissa, n_saturated)``. Mixed-sign matrices use even values only.
    """
    return round_nearest(np.asarray(w, float) * scale, weight_bits)


def max_scale(w_eff: list[np.ndarray], theta: np.ndarray, fmt: LoihiFormat) -> float:
    """Min/max observer: the largest scale keeping weights and threshold in range."""
    obs = MinMaxObserver(fmt)
    obs.observe(w_eff, theta)
    return obs.calculate_scale()


@dataclass
class LayerInputs:
    """A neuron layer as the quantizer sees it (what observers and calibration need)."""

    neuron: str
    synapses: list[str]
    gain: float  # per-step input gain g (IF dt r, LIF dt r / tau, ...)
    theta: np.ndarray  # v_threshold - v_reset
    w_eff: list[np.ndarray]  # g * W per synapse layer, in membrane units


def layer_inputs(graph: nir.NIRGraph, fmt: LoihiFormat | None = None) -> list[LayerInputs]:
    """Every neuron layer of a lowered graph with its synapse layers, in node order.

    Raises :class:`QuantizationError` when an input is not an Affine/Conv2d (lower the graph
    first) or when a synapse layer feeds more than one neuron layer (it could not take both
    scales).
    """
    fmt = fmt or LoihiFormat()
    dt = float(graph.metadata.get("dt", 1.0))
    pred, succ = predecessors(graph), successors(graph)
    layers = []
    for name, node in graph.nodes.items():
        if not is_neuron(node):
            continue
        syn = pred[name]
        for s in syn:
            if not isinstance(graph.nodes[s], SYNAPSE_TYPES):
                raise QuantizationError(
                    f"node {name!r}: input {s!r} is a {type(graph.nodes[s]).__name__}; lower the "
                    "graph first so every synapse layer is an Affine or Conv2d")
            fed = [t for t in succ[s] if is_neuron(graph.nodes[t])]
            if len(fed) > 1:
                raise QuantizationError(
                    f"synapse layer {s!r} feeds {len(fed)} neuron layers ({', '.join(fed)}); "
                    "each synapse layer takes the scale of the one neuron layer it feeds")
        gain, _, _, _ = _gain_and_decays(name, node, dt, fmt)
        theta = np.asarray(node.v_threshold, float) - np.asarray(node.v_reset, float)
        gain_u = _uniform(name, "input gain (dt r / tau)", np.round(gain, 12) * 1e12) / 1e12
        w_eff = [np.asarray(graph.nodes[s].weight, float) * gain_u for s in syn]
        layers.append(LayerInputs(name, list(syn), gain_u, theta, w_eff))
    return layers


def _scalar_record(rec: dict) -> dict:
    """Observer records as node metadata: numbers, strings and arrays (no None, no nesting)."""
    return {k: v for k, v in rec.items() if v is not None and not isinstance(v, dict)}


def _channel_scales(layer: LayerInputs, lam: float, factor: float, bias_v: np.ndarray,
                    fmt: LoihiFormat) -> np.ndarray:
    """``lambda_k = lambda m_k`` per output channel, kept where the nudged threshold
    (``theta lambda_k factor``) and the bias still fit their bits, and never below ``lambda``."""
    m = channel_multipliers(layer.w_eff, layer.theta, fmt, lam)
    n = m.size
    theta_c = np.abs(np.asarray(layer.theta, float)).reshape(n, -1).max(axis=1, initial=0.0)
    bias_c = np.abs(np.asarray(bias_v, float)).reshape(n, -1).max(axis=1, initial=0.0)
    vth_max = (1 << fmt.vth_bits) - 1
    bias_max = ((1 << (fmt.bias_mant_bits - 1)) - 1) << fmt.bias_exp_max
    with np.errstate(divide="ignore", over="ignore"):
        cap = np.minimum(np.where(theta_c > 0, vth_max / (theta_c * factor), np.inf),
                         np.where(bias_c > 0, bias_max / (bias_c * (1 << fmt.act_shift)),
                                  np.inf))
    return np.maximum(lam, np.minimum(lam * m, cap))


def _per_row(scale: np.ndarray, ndim: int):
    """Channel scales shaped to broadcast over an array with the channel on axis 0."""
    if np.all(scale == scale[0]):
        return float(scale[0])
    return scale.reshape(-1, *([1] * (ndim - 1)))


def quantize_graph(graph: nir.NIRGraph, fmt: LoihiFormat | None = None,
                   scales: dict[str, float] | None = None, *,
                   observer: str | Callable[..., ScaleObserver] = "minmax",
                   vth_factors: dict[str, float] | None = None,
                   records: dict[str, dict] | None = None,
                   per_channel: bool = False,
                   rounding: WeightRounding | None = None) -> tuple[nir.NIRGraph, QuantReport]:
    """Annotate a lowered graph (``passes.lower_for_hardware``) with fixed-point parameters.

    ``observer`` picks every layer's scale from its weights: ``"minmax"`` (default),
    ``"percentile"`` or a constructor (:mod:`.observers`). ``scales`` overrides it per neuron
    layer and ``vth_factors`` nudges thresholds (``vth = round(theta scale factor)``); calibration
    passes both, with ``records`` (per layer, merged into ``metadata["loihi"]``: the observer's
    name and candidate errors). ``per_channel``: every output channel ``k`` gets its own scale
    ``lambda_k = lambda m_k`` (:func:`.observers.channel_multipliers`), in its weights (all
    synapse layers), threshold, bias and initial membrane; the target must allow per-neuron
    thresholds. ``rounding`` (:class:`.rounding.WeightRounding`) chooses how weights are
    rounded at the chosen scales: to nearest (default), or GPTQ-style on calibration inputs,
    all synapses into one neuron layer jointly; each layer and its synapses record
    ``rounding`` and, with calibration inputs, ``output_error`` and ``output_error_nearest``
    (of the layer's summed input current). Returns a new graph whose synapse and neuron nodes carry
    ``metadata["loihi"]`` (``scale``: the layer's ``lambda``; ``channel_scale``: ``lambda_k``
    per channel), and the report.
    """
    from ..passes._util import clone

    if observer == "search":
        raise QuantizationError("observer 'search' needs calibration data: run "
                                "neurodeploy.quantize.calibrate(graph, x) and pass its scales")
    fmt = fmt or LoihiFormat()
    g = clone(graph)
    dt = float(g.metadata.get("dt", 1.0))
    scales, vth_factors, records = scales or {}, vth_factors or {}, records or {}
    rounding = rounding or WeightRounding()
    report = QuantReport(observer=observer if isinstance(observer, str) else "custom",
                         per_channel=bool(per_channel), rounding=rounding.method,
                         rounding_samples=rounding.samples, rounding_choice=rounding.summary)
    for layer in layer_inputs(g, fmt):
        name, syn, gain_u, theta, w_eff = (layer.neuron, layer.synapses, layer.gain, layer.theta,
                                           layer.w_eff)
        node = g.nodes[name]
        _, dv, du, leak = _gain_and_decays(name, node, dt, fmt)
        if name in scales:
            lam = float(scales[name])
            rec = {"observer": "override", **records.get(name, {})}
        else:
            obs = make_observer(observer, fmt)
            obs.observe(w_eff, theta)
            lam = obs.calculate_scale()
            report.observer = obs.name
            rec = {**obs.record(), **records.get(name, {})}
        factor = float(vth_factors.get(name, 1.0))
        if not lam > 0 or not np.isfinite(lam):
            raise QuantizationError(f"node {name!r}: scale must be positive and finite, got {lam}")
        bias_v = np.zeros(theta.shape) + leak
        for s in syn:
            b = np.asarray(g.nodes[s].bias, float) * gain_u
            if theta.ndim > 1 and b.size == theta.size:  # per neuron: a dense synapse
                b = b.reshape(theta.shape)
            bias_v = bias_v + (b.reshape(-1, *([1] * (theta.ndim - 1))) if theta.ndim > 1
                               and b.shape != theta.shape else b)
        n_ch = theta.shape[0] if theta.ndim else 1
        lam_c = (_channel_scales(layer, lam, factor, bias_v, fmt) if per_channel
                 else np.full(n_ch, lam))
        lam_n = _per_row(lam_c, theta.ndim) if theta.ndim else lam
        vth = np.round(theta * lam_n * factor).astype(np.int64)
        if vth.max() >= 1 << fmt.vth_bits or vth.min() < 0:
            raise QuantizationError(f"node {name!r}: threshold {vth.max()} does not fit "
                                    f"{fmt.vth_bits} bits at scale {lam:.4g}")
        n_sat = n_w = 0
        err = 0.0
        lam_ws = [_per_row(lam_c, np.ndim(w)) if np.shape(w)[:1] == (n_ch,) else lam
                  for w in w_eff]
        qs, sats, rrec = rounding.round_layer(name, w_eff, lam_ws, fmt.weight_bits)
        node_rec = {k: v for k, v in rrec.items()
                    if k in ("rounding", "rounding_inputs", "rounding_note", "output_error",
                             "output_error_nearest")}
        for s, w, lam_w, q, sat in zip(syn, w_eff, lam_ws, qs, sats, strict=True):
            n_sat += sat
            n_w += q.size
            err = max(err, float(np.abs(q / lam_w - w).max()) / gain_u if q.size else 0.0)
            conn = g.nodes[s]
            conn.metadata = dict(conn.metadata)
            conn.metadata["loihi"] = {"weight_mant": q, "weight_exp": 0, "scale": lam,
                                      "channel_scale": lam_c, "n_saturated": sat, **node_rec}
        bias_eff = np.round(bias_v * lam_n * (1 << fmt.act_shift)).astype(np.int64)
        mant_max = (1 << (fmt.bias_mant_bits - 1)) - 1
        bias_exp = 0
        while np.abs(bias_eff).max(initial=0) > mant_max << bias_exp:
            bias_exp += 1
        if bias_exp > fmt.bias_exp_max:
            raise QuantizationError(f"node {name!r}: bias needs exponent {bias_exp} > "
                                    f"{fmt.bias_exp_max}")
        bias_mant = np.round(bias_eff / (1 << bias_exp)).astype(np.int64)
        v_init = np.asarray(node.metadata.get("v_init", 0.0), float) - np.asarray(node.v_reset)
        v_init_int = np.round(np.broadcast_to(v_init, theta.shape) * lam_n *
                              (1 << fmt.act_shift)).astype(np.int64)
        dv_i = _uniform(name, "dv (membrane decay)", dv)
        du_i = _uniform(name, "du (current decay)", du)
        node.metadata = dict(node.metadata)
        node.metadata["loihi"] = {
            **_scalar_record(rec),
            "scale": lam, "channel_scale": lam_c, "vth": vth, "du": du_i, "dv": dv_i,
            "bias_mant": bias_mant, "bias_exp": bias_exp, "v_init": v_init_int,
            "reset": reset_mode(node), "vth_factor": factor, "n_saturated": n_sat,
        }
        cands = np.asarray(rec.get("candidates", np.zeros((0, 3))), float).reshape(-1, 3)
        report.layers.append(LayerQuant(
            name, lam, int(vth.max()), dv_i, du_i, bias_exp, list(syn), n_w, n_sat, err,
            observer=str(rec["observer"]), vth_factor=factor,
            percentile=rec.get("percentile"), rate_error=rec.get("rate_error"),
            rate_error_minmax=rec.get("rate_error_minmax"), candidates=cands.tolist(),
            per_channel=bool(per_channel), channel_scale_min=float(lam_c.min()),
            channel_scale_max=float(lam_c.max()), rounding=rrec["rounding"],
            output_error=rrec.get("output_error"),
            output_error_nearest=rrec.get("output_error_nearest"),
            rounding_inputs=rrec.get("rounding_inputs"),
            rounding_joint=rrec.get("rounding_joint"), rounding_note=rrec.get("rounding_note"),
            rounding_rate_errors=rrec.get("rounding_rate_errors")))
    return g, report
