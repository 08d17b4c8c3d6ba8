"""Weight rounding: round-to-nearest, or data-driven (GPTQ-style) rounding on calibration data.

Quantization keeps the scales the observers chose; rounding only decides, for every weight,
which of the two neighbouring points of the 8-bit grid it takes. Round-to-nearest minimises
each weight's error on its own. Spiking layers are small, and a few weights rounded the same
way can shift a neuron's input current enough to change a decision, so ``"gptq"`` instead
minimises the error of the synaptic input current on calibration inputs ``X``,

    || (W - Q / s) X ||^2 = sum_r e_r H e_r^T,   H = sum_{samples, steps, positions} x x^T,

row by row (rows are independent and share ``H``). It follows Optimal Brain Quantization /
GPTQ (Frantar et al., ICLR 2023): columns are rounded one at a time, most active input first,
and the rounding error of each is compensated on the columns not yet rounded through the
Cholesky factor of ``H^-1`` (damped by ``damp`` times its mean diagonal). Unlike GPTQ, every
weight may only move to the grid point just below or just above its own value (the box of
AdaRound, Nagel et al. 2020), so no weight errs by a full step or more, a weight that fits
the range never saturates, and a saturated one stays at the bound where nearest puts it.
Inputs that never fired in calibration keep the nearest value. Nothing is random, so the same
calibration data gives the same integers.

A neuron sees the sum of the currents of all its synapse layers (a residual add, the relays
and clocks of pipeline alignment, a recurrent synapse), so the synapses into one neuron layer
are rounded jointly: their inputs are stacked (dense: features side by side; Conv2d: unfolded
patches side by side, the layer having one output grid) and one GPTQ runs over the stacked
weights, each column on its own synapse's grid and scale, so one branch's rounding error is
compensated on the other's weights. Synapses that cannot be stacked (dense with convolutional,
grouped convolutions) are rounded one at a time, and the reason is recorded.

The grid is the one of :func:`neurodeploy.quantize.loihi.quantize_weights`: mixed-sign
matrices in steps of 2 in ``[-2^b, 2^b - 2]`` (Lava drops their LSB), one-signed ones in
``[0, 2^b - 1]`` or ``[-(2^b - 1), 0]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nir
import numpy as np
import torch
import torch.nn.functional as F

METHODS = ("nearest", "gptq", "auto")
#: Dampening of ``H`` (fraction of its mean diagonal), as in GPTQ.
DAMP = 0.01
_BLOCK = 128


def weight_grid(x: np.ndarray, weight_bits: int = 8) -> tuple[int, int, int]:
    """``(step, lo, hi)`` of the integer grid for scaled weights ``x`` (Lava's sign modes)."""
    top = (1 << weight_bits) - 1
    if x.size and x.min() < 0 < x.max():
        return 2, -(top + 1), top - 1
    if x.size and x.max() > 0:
        return 1, 0, top
    return 1, -top, 0


def round_nearest(x: np.ndarray, weight_bits: int = 8) -> tuple[np.ndarray, int]:
    """Nearest grid point of every scaled weight; returns ``(mantissa, n_saturated)``."""
    x = np.asarray(x, float)
    step, lo, hi = weight_grid(x, weight_bits)
    q = step * np.round(x / step)
    sat = int(np.count_nonzero((q < lo) | (q > hi)))
    return np.clip(q, lo, hi).astype(np.int64), sat


def _rows(w: np.ndarray, groups: int) -> list[slice]:
    n = w.shape[0] // groups
    return [slice(g * n, (g + 1) * n) for g in range(groups)]


def output_error(w: np.ndarray, q: np.ndarray, scale, gram: np.ndarray) -> tuple[float, float]:
    """``(||(W - Q/s) X||^2, ||W X||^2)`` from the input Gram matrix ``gram = X X^T``.

    ``w``: float weights ``[C_out, ...]``; ``scale``: a number or per-row scales broadcasting
    against ``w``; ``gram``: ``[K, K]``, or ``[G, K, K]`` for a grouped convolution.
    """
    w = np.asarray(w, float)
    e = (w - np.asarray(q, float) / scale).reshape(w.shape[0], -1)
    wf = w.reshape(w.shape[0], -1)
    hs = gram.reshape(-1, *gram.shape[-2:])
    err = sig = 0.0
    for h, rows in zip(hs, _rows(wf, len(hs)), strict=True):
        err += float(((e[rows] @ h) * e[rows]).sum())
        sig += float(((wf[rows] @ h) * wf[rows]).sum())
    return max(err, 0.0), max(sig, 0.0)


def _inverse_factor(h: np.ndarray, damp: float) -> np.ndarray:
    """Upper Cholesky factor ``U`` of ``(H + damp mean(diag H) I)^-1`` (``U^T U``)."""
    h = h.copy()
    k = h.shape[0]
    diag = np.diag(h).copy()
    dead = diag <= 0
    h[dead, :] = 0.0
    h[:, dead] = 0.0
    live = diag[~dead]
    lam = damp * (live.mean() if live.size else 1.0)
    h[np.arange(k), np.arange(k)] = np.where(dead, 1.0, diag + lam)
    while True:
        try:
            low = np.linalg.cholesky(h)
            break
        except np.linalg.LinAlgError:  # numerically semidefinite: more damping
            lam *= 10
            h[np.arange(k), np.arange(k)] += lam
    inv = np.linalg.inv(low)
    hinv = inv.T @ inv
    return np.linalg.cholesky(hinv).T


def _gptq_rows(w: np.ndarray, s: np.ndarray, h: np.ndarray, step: np.ndarray, lo: np.ndarray,
               hi: np.ndarray, damp: float) -> np.ndarray:
    """Integer mantissas of ``w * s`` (``[R, K]`` float weights, ``s`` the scale of every
    weight), columns on their own grids (``step``, ``lo``, ``hi``: ``[K]``) and rounded in order
    of ``diag(h)``; the error is measured and compensated in float units, so columns of
    synapses at different scales can be rounded together."""
    R, K = w.shape
    x = w * s
    down = np.clip(step * np.floor(x / step), lo, hi)
    up = np.clip(step * np.ceil(x / step), lo, hi)
    near = np.clip(step * np.round(x / step), lo, hi)
    diag = np.diag(h)
    dead = diag <= 0
    perm = np.argsort(-diag, kind="stable")
    u = _inverse_factor(h[np.ix_(perm, perm)], damp)
    z = w[:, perm].copy()
    sp, st = s[:, perm], step[perm]
    dn, upp, nr, dd = down[:, perm], up[:, perm], near[:, perm], dead[perm]
    q = np.empty_like(z)
    for b0 in range(0, K, _BLOCK):
        b1 = min(b0 + _BLOCK, K)
        err = np.zeros((R, b1 - b0))
        for j in range(b0, b1):
            col = z[:, j]
            if dd[j]:
                qj = nr[:, j]
            else:
                qj = np.clip(st[j] * np.round(col * sp[:, j] / st[j]), dn[:, j], upp[:, j])
            q[:, j] = qj
            e = (col - qj / sp[:, j]) / u[j, j]
            err[:, j - b0] = e
            z[:, j + 1:b1] -= np.outer(e, u[j, j + 1:b1])
        z[:, b1:] -= err @ u[b0:b1, b1:]
    out = np.empty_like(q)
    out[:, perm] = q
    return out


def _scale_matrix(w: np.ndarray, scale) -> np.ndarray:
    """The scale of every weight of ``w`` as ``[C_out, K]``."""
    return np.broadcast_to(np.asarray(scale, float), w.shape).reshape(w.shape[0], -1)


def gptq_round(w: np.ndarray, scale, gram: np.ndarray, weight_bits: int = 8,
               damp: float = DAMP) -> tuple[np.ndarray, int]:
    """Integer mantissas of ``w * scale`` chosen to minimise ``||(W - Q/s) X||`` given
    ``gram = X X^T`` (``[K, K]``, or ``[G, K, K]`` per group of a grouped convolution).

    Same grid, range and saturation count as :func:`round_nearest`; every result is the grid
    point just below or just above its scaled weight. Returns ``(mantissa, n_saturated)``.
    """
    w = np.asarray(w, float)
    step, lo, hi = weight_grid(w * scale, weight_bits)
    _, sat = round_nearest(w * scale, weight_bits)
    wf, sf = w.reshape(w.shape[0], -1), _scale_matrix(w, scale)
    hs = np.asarray(gram, float).reshape(-1, *np.shape(gram)[-2:])
    K = wf.shape[1]
    if hs.shape[-1] != K:
        raise ValueError(f"Gram matrix is {hs.shape[-1]} wide, weights have {K} inputs")
    grid = [np.full(K, float(v)) for v in (step, lo, hi)]
    q = np.empty_like(wf)
    for h, rows in zip(hs, _rows(wf, len(hs)), strict=True):
        q[rows] = _gptq_rows(wf[rows], sf[rows], h, *grid, damp)
    return q.reshape(w.shape).astype(np.int64), sat


def gptq_round_joint(ws: list[np.ndarray], scales: list, gram: np.ndarray, weight_bits: int = 8,
                     damp: float = DAMP) -> list[np.ndarray]:
    """Integer mantissas of several synapses into one neuron layer, rounded together.

    ``gram``: Gram matrix of their stacked inputs (:func:`accumulate_layer_gram`), so what is
    minimised is the error of the summed current ``||sum_s (W_s - Q_s/s_s) X_s||^2``: one
    synapse's rounding error is compensated on the others' weights. Every synapse keeps its own
    grid (:func:`weight_grid`) and scale; each result is its grid point below or above.
    """
    wf, sf, grids = [], [], []
    for w, s in zip(ws, scales, strict=True):
        w = np.asarray(w, float)
        wf.append(w.reshape(w.shape[0], -1))
        sf.append(_scale_matrix(w, s))
        grids.append([np.full(wf[-1].shape[1], float(v)) for v in weight_grid(w * s,
                                                                                  weight_bits)])
    W, S = np.concatenate(wf, axis=1), np.concatenate(sf, axis=1)
    if gram.shape != (W.shape[1], W.shape[1]):
        raise ValueError(f"Gram matrix is {gram.shape}, weights have {W.shape[1]} inputs")
    step, lo, hi = (np.concatenate([g[i] for g in grids]) for i in range(3))
    q = _gptq_rows(W, S, np.asarray(gram, float), step, lo, hi, damp)
    cuts = np.cumsum([a.shape[1] for a in wf])[:-1]
    return [p.reshape(np.shape(w)).astype(np.int64)
            for p, w in zip(np.split(q, cuts, axis=1), ws, strict=True)]


def _pair(v) -> tuple[int, int]:
    a = np.atleast_1d(np.asarray(v)).astype(int)
    return int(a[0]), int(a[-1])


def _patches(node: nir.Conv2d, x: torch.Tensor) -> list[torch.Tensor]:
    """Unfolded input patches ``[N * L, C_in/G * kh * kw]`` per group of a Conv2d."""
    k = tuple(int(s) for s in np.asarray(node.weight).shape[-2:])
    dil, stride = _pair(node.dilation), _pair(node.stride)
    pad = node.padding
    if isinstance(pad, str):
        pad = ((dil[0] * (k[0] - 1)) // 2, (dil[1] * (k[1] - 1)) // 2) if pad == "same" else (0, 0)
    else:
        pad = _pair(pad)
    groups = int(node.groups)
    cg = x.shape[1] // groups
    out = []
    for g in range(groups):
        p = F.unfold(x[:, g * cg:(g + 1) * cg], k, dilation=dil, padding=pad, stride=stride)
        out.append(p.transpose(1, 2).reshape(-1, p.shape[1]))
    return out


def accumulate_gram(node, x: np.ndarray, gram: np.ndarray | None = None) -> np.ndarray:
    """Add the input Gram matrix of synapse ``node`` (Affine or Conv2d) on inputs ``x``
    (``[N, *in_shape]``, every sample and step a row) to ``gram`` (``None``: start at 0)."""
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    if isinstance(node, nir.Conv2d):
        cols = _patches(node, xt)
    else:
        cols = [xt.reshape(xt.shape[0], -1)]
    h = np.stack([(c.T @ c).numpy() for c in cols])
    if not isinstance(node, nir.Conv2d):
        h = h[0]
    return h if gram is None else gram + h


def unstackable(nodes: list) -> str | None:
    """Why the inputs of synapses ``nodes`` (all into one neuron layer) cannot be stacked into
    one matrix for joint rounding; ``None`` when they can."""
    if len(nodes) < 2:
        return None
    if len({type(n) for n in nodes}) > 1:
        return "dense and convolutional synapses (rows are neurons in one, channels in the other)"
    if any(isinstance(n, nir.Conv2d) and int(n.groups) != 1 for n in nodes):
        return "grouped convolution (its rows see only their group's inputs)"
    return None


def accumulate_layer_gram(nodes: list, xs: list[np.ndarray], gram: np.ndarray | None = None
                          ) -> np.ndarray:
    """Add the Gram matrix of the stacked inputs of synapses ``nodes`` (one neuron layer;
    :func:`unstackable` must be ``None``) to ``gram``: dense inputs are concatenated feature by
    feature, convolution patches position by position (the layer has one output grid), so the
    result's blocks are the synapses' own Gram matrices and their cross terms."""
    cols = []
    for node, x in zip(nodes, xs, strict=True):
        xt = torch.as_tensor(np.asarray(x), dtype=torch.float64)
        cols.append(_patches(node, xt)[0] if isinstance(node, nir.Conv2d)
                    else xt.reshape(xt.shape[0], -1))
    if len({c.shape[0] for c in cols}) > 1:
        raise ValueError("synapses into one neuron layer have different output grids")
    c = torch.cat(cols, dim=1)
    h = (c.T @ c).numpy()
    return h if gram is None else gram + h


@dataclass
class LayerGram:
    """Calibration inputs of one neuron layer's synapses, as Gram matrices.

    ``joint``: one Gram matrix of their stacked inputs (``grams[0]``); otherwise one per synapse
    (``note`` says why they could not be stacked). ``inputs``: ``"float"`` (spikes of the float
    model) or ``"quantized"`` (spikes of the model whose earlier layers are already quantized).
    """

    synapses: list[str]
    grams: list[np.ndarray]
    joint: bool
    inputs: str = "float"
    note: str | None = None

    def error(self, ws: list[np.ndarray], qs: list[np.ndarray], scales: list
              ) -> tuple[float, float]:
        """``(||sum_s (W_s - Q_s/s_s) X_s||^2, ||sum_s W_s X_s||^2)``; per synapse layer (no
        cross terms) when the inputs could not be stacked."""
        if not self.joint:
            out = [output_error(w, q, s, h) for w, q, s, h in zip(ws, qs, scales, self.grams,
                                                                    strict=True)]
            return sum(e for e, _ in out), sum(g for _, g in out)
        wf = [np.asarray(w, float).reshape(np.shape(w)[0], -1) for w in ws]
        e = np.concatenate([w - (np.asarray(q, float) / np.broadcast_to(np.asarray(s, float),
                                                                         np.shape(q))
                                 ).reshape(w.shape) for w, q, s in zip(wf, qs, scales,
                                                                        strict=True)], axis=1)
        W, h = np.concatenate(wf, axis=1), self.grams[0]
        return (max(float(((e @ h) * e).sum()), 0.0), max(float(((W @ h) * W).sum()), 0.0))

    def round(self, ws: list[np.ndarray], scales: list, weight_bits: int, damp: float
              ) -> list[np.ndarray]:
        """GPTQ mantissas of every synapse: jointly, or one synapse at a time."""
        if self.joint:
            return gptq_round_joint(ws, scales, self.grams[0], weight_bits, damp)
        return [gptq_round(w, s, h, weight_bits, damp)[0]
                for w, s, h in zip(ws, scales, self.grams, strict=True)]


@dataclass
class WeightRounding:
    """How :func:`~neurodeploy.quantize.loihi.quantize_graph` rounds weights.

    ``method``: what was asked (``"nearest"``, ``"gptq"`` or ``"auto"``, see
    :func:`neurodeploy.quantize.calibrate.choose_rounding`); ``choice``: per neuron layer,
    ``"nearest"`` or ``"gptq"`` (layers not listed: ``gptq`` when asked for, else nearest);
    ``grams``: the calibration inputs of each neuron layer (:class:`LayerGram`; layers without
    one are rounded to nearest, and that is recorded); ``records``: extra per layer records
    (the candidates' calibration errors); ``cache`` keeps the rounded mantissas per layer,
    inputs and scales, so re-quantizing with the same scales (the calibration passes, the
    aligned graph's two views) rounds each layer once.
    """

    method: str = "nearest"
    grams: dict[str, LayerGram] = field(default_factory=dict)
    choice: dict[str, str] = field(default_factory=dict)
    records: dict[str, dict] = field(default_factory=dict)
    damp: float = DAMP
    samples: int = 0
    summary: dict | None = None
    cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"rounding must be one of {', '.join(METHODS)}, got {self.method!r}")

    def round_layer(self, neuron: str, ws: list[np.ndarray], scales: list, weight_bits: int = 8
                    ) -> tuple[list[np.ndarray], list[int], dict]:
        """``(mantissas, n_saturated, record)`` of the synapse layers into ``neuron``; the
        record says which rounding was used and, with calibration inputs, the relative error of
        the layer's summed input current with nearest and with the result
        (``||sum_s (W_s - Q_s/s_s) X_s||^2 / ||sum_s W_s X_s||^2``)."""
        near = [round_nearest(np.asarray(w, float) * s, weight_bits) for w, s in
                zip(ws, scales, strict=True)]
        qs, sats = [q for q, _ in near], [n for _, n in near]
        rec: dict = {"rounding": "nearest", **self.records.get(neuron, {})}
        lg = self.grams.get(neuron)
        want = self.choice.get(neuron, "gptq" if self.method == "gptq" else "nearest")
        if lg is None:
            if self.method != "nearest":
                rec["rounding_note"] = "nearest: no calibration inputs for this layer"
            return qs, sats, rec
        err_n, sig = lg.error(ws, qs, scales)
        rec.update(output_error_nearest=err_n / sig if sig else 0.0, rounding_inputs=lg.inputs,
                   rounding_joint=lg.joint)
        if lg.note:
            rec["rounding_note"] = f"per synapse: {lg.note}"
        err = err_n
        if want == "gptq" and err_n > 0:
            key = (neuron, lg.inputs, weight_bits,
                   tuple(np.asarray(s, float).tobytes() for s in scales))
            if key not in self.cache:
                self.cache[key] = lg.round(ws, scales, weight_bits, self.damp)
            qg = self.cache[key]
            err_g, _ = lg.error(ws, qg, scales)
            if err_g < err_n:
                qs, err = qg, err_g
                rec["rounding"] = "gptq"
            else:
                rec["rounding_note"] = "nearest: gptq was not better on calibration data"
        rec["output_error"] = err / sig if sig else 0.0
        return qs, sats, rec
