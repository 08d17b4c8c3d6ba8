"""Feedback spiking networks and their equilibrium rates: the pieces SPIDE and IDE train.

A :class:`FeedbackSNN` is a chain of spiking layers ``1..L`` closed by a feedback synapse from
layer ``L`` back to layer ``1``::

    x --input_syn--> [1] --chain[0]--> [2] -- ... --> [L] --classifier(rates)--> logits
                      ^                                |
                      +-------- feedback (previous step)

Within a time step the feed-forward hops have zero delay; the feedback carries the *previous*
step's spikes of layer ``L`` (SPIDE/IDE's convention, and NIR's back-edge semantics in our
engines). Every neuron follows SPIDE's equations (``/work/shared/notes/seed-methods.md`` §2)::

    u += I;  s = [u >= vth];  u -= (vth - u_rest) s;  u *= leak

with ``u`` starting at 0 (``leak = 1`` is IF). In our neuron convention (fire on ``v > theta``,
subtract ``theta``, start at ``v_init``) this is, with ``v = u - u_rest``::

    theta = vth - u_rest,   v_init = -u_rest,   v_leak = -u_rest (LIF only)

exactly, except that the method fires on ``>=`` and our hardware on ``>`` (they differ only when
a membrane lands exactly on the threshold). SPIDE's default ``u_rest = -vth`` gives
``theta = 2 vth`` with the membrane starting half-way ("modified reset"); IDE uses
``u_rest = 0``.

Equilibrium. With the average rates ``a_l`` the network settles near the fixed point
``a = clamp((M a + c) / theta, 0, 1)`` where ``M`` holds the chain and feedback synapses and
``c`` the input current. SPIDE and IDE differentiate *implicitly* at that point: with
``D = diag([0 < a < 1] / theta)`` and ``g = dL/da``, the backward pass solves the linear system
``beta = g + M^T D beta`` and the gradient w.r.t. every pre-activation current is ``D beta``
(so ``dW = D beta a^T``: the "two-stage" rates of forward and backward). :class:`BackwardSystem`
exposes that system to the solvers (spiking in ``neurodeploy.train.spide``, Broyden/linear in
``neurodeploy.train.ide``); :func:`implicit_rates` is the autograd glue.

Feedback weights are re-parametrised by a norm bound (:class:`FeedbackSynapse`): SPIDE's
``W = W_w min(1, r / ||W_w||_F)`` (exact Frobenius norm here) or IDE's
``W = clamp(g, -r, r) W_w / sigma(W_w)`` (power iteration with the ``weight_u``/``weight_v``
buffers). Neither effective weight is a state_dict tensor; it is recomputed on every use.

Export (:meth:`FeedbackSNN.to_nir`) writes the feedback as a NIR back edge
``layer_L -> feedback -> layer_1``; the rate readout becomes ``classifier -> IF`` whose spike
count ranks the classes like the logits (see :meth:`FeedbackSNN.calibrate_readout`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import nir
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedLayerError

_PAIR = nn.modules.utils._pair
#: Largest side of a dense matrix the exporter writes for a transposed convolution.
MAX_DENSE = 1 << 13


# ----------------------------------------------------------------------------------------------
# synapse operators
# ----------------------------------------------------------------------------------------------
@dataclass
class SynOp:
    """One linear synapse map ``h = op(s)`` with its *effective* weight (reparam, BN folded)."""

    kind: str  # "linear" | "conv2d" | "conv_transpose2d"
    weight: torch.Tensor
    bias: torch.Tensor | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    output_padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    meta: dict = field(default_factory=dict)

    def __call__(self, x: torch.Tensor, weight: torch.Tensor | None = None,
                 bias: bool = True) -> torch.Tensor:
        w = self.weight if weight is None else weight
        b = self.bias if bias else None
        if self.kind == "linear":
            return F.linear(x.flatten(1), w, b)
        if self.kind == "conv2d":
            return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)
        return F.conv_transpose2d(x, w, b, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)

    def transpose_apply(self, y: torch.Tensor, x_shape: Sequence[int],
                        weight: torch.Tensor | None = None) -> torch.Tensor:
        """``op^T y`` (the adjoint of the linear part), shaped ``[B, *x_shape]``."""
        w = (self.weight if weight is None else weight).detach().to(y.dtype)
        x_shape = tuple(int(s) for s in x_shape)
        if self.kind == "linear":
            return (y.flatten(1) @ w).reshape(y.shape[0], *x_shape)
        if self.kind == "conv_transpose2d":
            return F.conv2d(y, w, None, self.stride, self.padding, self.dilation, self.groups)
        k = w.shape[-2:]
        out_pad = tuple(
            x_shape[1 + i] - ((y.shape[2 + i] - 1) * self.stride[i] - 2 * self.padding[i]
                              + self.dilation[i] * (k[i] - 1) + 1) for i in range(2))
        return F.conv_transpose2d(y, w, None, self.stride, self.padding, out_pad, self.groups,
                                  self.dilation)


def _unit(t: torch.Tensor) -> torch.Tensor:
    return t / t.norm().clamp_min(1e-12)


def _bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(
        bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else torch.zeros_like(bn.running_mean)) - bn.running_mean * scale
    return scale, shift


def synop(module: nn.Module) -> SynOp:
    """The :class:`SynOp` of a synapse module.

    Supported: ``nn.Linear``, ``nn.Conv2d`` (numeric zero padding), ``nn.ConvTranspose2d``,
    :class:`FeedbackSynapse`, and ``nn.Sequential(conv_or_linear, BatchNorm)`` (BN folded with
    its running statistics, IDE's conv->BN).
    """
    if isinstance(module, FeedbackSynapse):
        return module.op()
    if isinstance(module, nn.Sequential):
        layers = [m for m in module if not isinstance(m, (nn.Identity, nn.Dropout))]
        if len(layers) == 1:
            return synop(layers[0])
        if len(layers) == 2 and isinstance(layers[1], (nn.BatchNorm1d, nn.BatchNorm2d)):
            op = synop(layers[0])
            scale, shift = _bn_affine(layers[1])
            shp = (-1,) + (1,) * (op.weight.dim() - 1)
            if op.kind == "conv_transpose2d":
                raise UnsupportedLayerError(str(module), "ConvTranspose2d->BatchNorm",
                                            ["Linear", "Conv2d"], "fold it by hand")
            b = op.bias if op.bias is not None else torch.zeros_like(scale)
            return SynOp(op.kind, op.weight * scale.reshape(shp), b * scale + shift, op.stride,
                         op.padding, op.output_padding, op.dilation, op.groups)
        raise UnsupportedLayerError(str(module), "Sequential", ["(conv|linear, BatchNorm)"])
    if isinstance(module, nn.Linear):
        return SynOp("linear", module.weight, module.bias)
    if isinstance(module, nn.ConvTranspose2d):
        return SynOp("conv_transpose2d", module.weight, module.bias, _PAIR(module.stride),
                     _PAIR(module.padding), _PAIR(module.output_padding), _PAIR(module.dilation),
                     module.groups)
    if isinstance(module, nn.Conv2d):
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            raise UnsupportedLayerError(str(module), "Conv2d with string padding or padding_mode",
                                        ["Conv2d(padding=int)"])
        return SynOp("conv2d", module.weight, module.bias, _PAIR(module.stride),
                     _PAIR(module.padding), (0, 0), _PAIR(module.dilation), module.groups)
    raise UnsupportedLayerError(type(module).__name__, type(module).__name__,
                                ["Linear", "Conv2d", "ConvTranspose2d", "FeedbackSynapse",
                                 "Sequential(conv, BatchNorm)"])


class FeedbackSynapse(nn.Module):
    """Feedback weights with a norm-bound re-parametrisation (state_dict key ``weight_w``).

    ``kind``: ``"linear"`` (weight ``[out, in]``), ``"conv2d"`` or ``"conv_transpose2d"``
    (weight ``[in, out, k, k]`` as torch stores it). ``norm``:

    * ``"frobenius"`` (SPIDE): ``W = W_w min(1, radius / ||W_w||_F)``;
    * ``"spectral"`` (IDE): ``W = clamp(weight_g, -radius, radius) W_w / sigma`` with
      ``sigma = u . (A v)`` from the buffers ``weight_u`` and ``weight_v``, refreshed by one
      power iteration per training forward. ``sigma_of="operator"``: ``A`` is the map itself,
      ``u`` output-shaped and ``v`` input-shaped (needs ``in_shape``, the per-sample input of
      the map); ``sigma_of="matrix"``: ``A`` is the weight reshaped to a matrix as
      ``torch.nn.utils.spectral_norm`` does (rows = output channels; dim 1 of a transposed
      conv's weight);
    * ``None``: ``W = W_w``.
    """

    def __init__(self, kind: str, in_features: int, out_features: int, kernel_size: int = 1,
                 stride: int = 1, padding: int = 0, output_padding: int = 0,
                 norm: str | None = "frobenius", radius: float = 2.0,
                 in_shape: Sequence[int] | None = None, sigma_of: str = "operator"):
        super().__init__()
        if kind not in ("linear", "conv2d", "conv_transpose2d"):
            raise ValueError(f"kind must be linear/conv2d/conv_transpose2d, got {kind!r}")
        if norm not in (None, "frobenius", "spectral"):
            raise ValueError(f"norm must be None, 'frobenius' or 'spectral', got {norm!r}")
        self.kind, self.norm, self.radius = kind, norm, float(radius)
        self.stride, self.padding = _PAIR(stride), _PAIR(padding)
        self.output_padding = _PAIR(output_padding)
        if kind == "linear":
            shape = (out_features, in_features)
        elif kind == "conv2d":
            shape = (out_features, in_features, kernel_size, kernel_size)
        else:
            shape = (in_features, out_features, kernel_size, kernel_size)
        w = torch.empty(shape)
        nn.init.kaiming_uniform_(w, a=5 ** 0.5)
        self.weight_w = nn.Parameter(w)
        self.in_shape = tuple(int(s) for s in in_shape) if in_shape is not None else (
            (in_features,) if kind == "linear" else None)
        if sigma_of not in ("operator", "matrix"):
            raise ValueError(f"sigma_of must be 'operator' or 'matrix', got {sigma_of!r}")
        self.sigma_of = sigma_of
        if norm == "spectral":
            if sigma_of == "matrix":
                rows, cols = self._matrix(w).shape
                u_shape, v_shape = (rows,), (cols,)
            else:
                if self.in_shape is None:
                    raise ValueError("the operator spectral norm of a conv needs in_shape")
                u_shape = self._raw_op(w)(torch.zeros(1, *self.in_shape)).shape[1:]
                v_shape = self.in_shape
            self.weight_g = nn.Parameter(torch.ones(1))
            self.register_buffer("weight_u", _unit(torch.randn(u_shape)))
            self.register_buffer("weight_v", _unit(torch.randn(v_shape)))

    def _matrix(self, w: torch.Tensor) -> torch.Tensor:
        if self.kind == "conv_transpose2d":
            w = w.transpose(0, 1)
        return w.reshape(w.shape[0], -1)

    def _raw_op(self, w: torch.Tensor) -> SynOp:
        return SynOp(self.kind, w, None, self.stride, self.padding, self.output_padding)

    def sigma(self, update: bool = False) -> torch.Tensor:
        """Spectral-norm estimate ``u . (A v)``; ``update`` runs one power iteration first."""
        if self.sigma_of == "matrix":
            m = self._matrix(self.weight_w)
            if update:
                with torch.no_grad():
                    self.weight_v.copy_(_unit(m.T @ self.weight_u))
                    self.weight_u.copy_(_unit(m @ self.weight_v))
            # clones: autograd must keep this step's u, v even if a later call updates them
            return self.weight_u.clone() @ (m @ self.weight_v.clone())
        op = self._raw_op(self.weight_w)
        if update:
            with torch.no_grad():
                v = _unit(op.transpose_apply(self.weight_u[None], self.in_shape)[0])
                self.weight_v.copy_(v)
                self.weight_u.copy_(_unit(op(v[None], bias=False)[0]))
        return (self.weight_u.clone() * op(self.weight_v.clone()[None], bias=False)[0]).sum()

    def weight(self) -> torch.Tensor:
        """The effective feedback weight."""
        w = self.weight_w
        if self.norm == "frobenius":
            return w * torch.clamp(self.radius / w.norm().clamp_min(1e-12), max=1.0)
        if self.norm == "spectral":
            s = self.sigma(update=self.training)
            return torch.clamp(self.weight_g, -self.radius, self.radius) * w / s
        return w

    def op(self) -> SynOp:
        return self._raw_op(self.weight())

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.op()(s)

    def extra_repr(self) -> str:
        return (f"kind={self.kind!r}, weight={tuple(self.weight_w.shape)}, norm={self.norm!r}, "
                f"radius={self.radius}, stride={self.stride}")


# ----------------------------------------------------------------------------------------------
# implicit differentiation glue
# ----------------------------------------------------------------------------------------------
class _Implicit(torch.autograd.Function):
    @staticmethod
    def forward(ctx, backward_fn, n, *tensors):
        ctx.backward_fn, ctx.n = backward_fn, n
        return tuple(z.detach().clone() for z in tensors[n:])

    @staticmethod
    def backward(ctx, *grads):
        dh = ctx.backward_fn([g if g is not None else None for g in grads])
        return (None, None, *dh, *([None] * ctx.n))


def implicit_rates(h: Sequence[torch.Tensor], z: Sequence[torch.Tensor],
                   backward_fn: Callable[[list], list]) -> tuple[torch.Tensor, ...]:
    """Return the equilibrium rates ``z`` (values) whose gradient flows into the currents ``h``.

    ``backward_fn(g)`` receives ``dL/dz`` per layer (None where unused) and returns ``dL/dh``.
    """
    return _Implicit.apply(backward_fn, len(z), *h, *[t.detach() for t in z])


class BackwardSystem:
    """The linear system ``beta = g + M^T D beta`` at one batch's equilibrium.

    ``blocks``: ``(src, dst, op)`` with forward currents ``h_dst += op(a_src)`` (weights are
    detached here); ``D[l]`` is ``[0 < a_l < 1] / theta`` per sample and ``mask[l]`` the
    indicator; ``shapes[l]`` is the per-sample shape of layer ``l``.
    """

    def __init__(self, blocks: list[tuple[int, int, SynOp]], rates: Sequence[torch.Tensor],
                 theta: float):
        self.blocks = [(s, d, SynOp(op.kind, op.weight.detach(), None, op.stride, op.padding,
                                    op.output_padding, op.dilation, op.groups))
                       for s, d, op in blocks]
        self.rates = [a.detach() for a in rates]
        self.theta = float(theta)
        self.mask = [((a > 0) & (a < 1)).to(a.dtype) for a in self.rates]
        self.D = [m / self.theta for m in self.mask]
        self.shapes = [tuple(a.shape[1:]) for a in self.rates]
        self.batch = self.rates[0].shape[0]
        self.dtype = self.rates[0].dtype

    def mt(self, w: Sequence[torch.Tensor], weights: dict[int, torch.Tensor] | None = None
           ) -> list[torch.Tensor]:
        """``M^T w`` per layer; ``weights[k]`` replaces block ``k``'s weight (quantized solver)."""
        b = w[0].shape[0]
        out = [torch.zeros((b, *s), dtype=self.dtype) for s in self.shapes]
        for k, (src, dst, op) in enumerate(self.blocks):
            wk = None if weights is None else weights.get(k)
            out[src] = out[src] + op.transpose_apply(w[dst].to(self.dtype), self.shapes[src],
                                                     weight=wk)
        return out

    def residual(self, beta: Sequence[torch.Tensor], g: Sequence[torch.Tensor]) -> list:
        """``beta - g - M^T D beta``."""
        mtd = self.mt([d * b for d, b in zip(self.D, beta, strict=True)])
        return [b - gg - m for b, gg, m in zip(beta, g, mtd, strict=True)]

    def flatten(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([x.reshape(x.shape[0], -1) for x in xs], dim=1)

    def unflatten(self, v: torch.Tensor) -> list[torch.Tensor]:
        out, i = [], 0
        for s in self.shapes:
            n = int(np.prod(s))
            out.append(v[:, i:i + n].reshape(v.shape[0], *s))
            i += n
        return out

    def dense_mt(self) -> torch.Tensor:
        """``M^T`` as one ``[n, n]`` matrix over all neurons (small problems only)."""
        n = sum(int(np.prod(s)) for s in self.shapes)
        eye = torch.eye(n, dtype=self.dtype)
        rows = [self.flatten(self.mt(self.unflatten(eye[i:i + 256]))) for i in range(0, n, 256)]
        return torch.cat(rows, dim=0).T  # row r of the stack is M^T e_r, i.e. column r

    def solve_exact(self, g: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``beta = (I - M^T D)^-1 g`` per sample by a dense solve."""
        mt = self.dense_mt()
        d = self.flatten(self.D)
        a = torch.eye(mt.shape[0], dtype=self.dtype)[None] - mt[None] * d[:, None, :]
        return self.unflatten(torch.linalg.solve(a, self.flatten(g)[..., None])[..., 0])


# ----------------------------------------------------------------------------------------------
# the network
# ----------------------------------------------------------------------------------------------
class FeedbackSNN(nn.Module):
    """Spiking layers ``1..L`` in a chain, feedback ``L -> 1`` (previous step), rate readout.

    ``input_syn`` maps one input step to layer 1's current; ``chain[l]`` maps layer ``l+1``'s
    spikes to layer ``l+2``'s current (0-based list); ``feedback`` maps layer ``L``'s spikes to
    layer 1; ``classifier`` maps layer ``L``'s (flattened) rates to logits.

    ``solver(system, g) -> beta`` solves the backward system (see :class:`BackwardSystem`);
    SPIDE and IDE set it. ``forward_mode``: ``"spikes"`` (simulate ``T`` steps; the methods'
    forward) or ``"rates"`` (iterate the rate fixed point; a smooth reference used in tests).
    Inputs are ``[T, B, *in_shape]``: direct encoding repeats the (integer) image every step.
    ``dropout`` drops the classifier's input rates in training (a mask on rates is the same
    mask at every time step, like SPIDE's variational dropout on the last layer).
    """

    def __init__(self, input_syn: nn.Module, chain: Sequence[nn.Module], feedback: nn.Module,
                 classifier: nn.Linear, *, vth: float = 1.0, u_rest: float = 0.0,
                 leak: float = 1.0, solver: Callable | None = None,
                 forward_mode: str = "spikes", dropout: float = 0.0):
        super().__init__()
        if vth <= 0 or vth - u_rest <= 0:
            raise ValueError("need vth > 0 and vth - u_rest > 0")
        if not 0 < leak <= 1:
            raise ValueError(f"leak must be in (0, 1], got {leak}")
        self.input_syn = input_syn
        self.chain = nn.ModuleList(chain)
        self.feedback = feedback
        self.classifier = classifier
        self.vth, self.u_rest, self.leak = float(vth), float(u_rest), float(leak)
        self.solver = solver
        if forward_mode not in ("spikes", "rates"):
            raise ValueError(f"forward_mode must be 'spikes' or 'rates', got {forward_mode!r}")
        self.forward_mode = forward_mode
        self.dropout = float(dropout)
        # deployment readout: logits + readout_shift -> IF(readout_threshold) spike counts
        self.register_buffer("readout_shift", torch.zeros(()))
        self.register_buffer("readout_threshold", torch.ones(()))

    # -- structure ---------------------------------------------------------------------------
    @property
    def theta(self) -> float:
        """Our-convention threshold ``vth - u_rest`` (the subtracted amount)."""
        return self.vth - self.u_rest

    @property
    def n_layers(self) -> int:
        return len(self.chain) + 1

    def blocks(self) -> list[tuple[int, int, SynOp]]:
        """Recurrent synapse blocks ``(src, dst, op)``: the chain and the feedback."""
        out = [(l, l + 1, synop(m)) for l, m in enumerate(self.chain)]
        out.append((self.n_layers - 1, 0, synop(self.feedback)))
        return out

    def layer_shapes(self, in_shape: Sequence[int]) -> list[tuple[int, ...]]:
        with torch.no_grad():
            p = next(self.parameters())
            h = synop(self.input_syn)(torch.zeros((1, *in_shape), dtype=p.dtype))
            shapes = [tuple(h.shape[1:])]
            for m in self.chain:
                h = synop(m)(h)
                shapes.append(tuple(h.shape[1:]))
        return shapes

    # -- simulation --------------------------------------------------------------------------
    @torch.no_grad()
    def simulate(self, x: torch.Tensor, record: bool = False):
        """Run the spiking network; returns per-layer rates (and spike trains if ``record``).

        Rates are spike counts / T (IF) or, with a leak, SPIDE/IDE's leaky-weighted average
        ``sum_t leak^(T-1-t) s_t (1 - leak) / (1 - leak^T)``.
        """
        T, B = x.shape[0], x.shape[1]
        in_op = synop(self.input_syn)
        drive = in_op(x.flatten(0, 1))
        drive = drive.reshape(T, B, *drive.shape[1:])
        ops = [synop(m) for m in self.chain]
        fb = synop(self.feedback)
        u: list = [None] * self.n_layers
        acc: list = [None] * self.n_layers
        trains: list[list] = [[] for _ in range(self.n_layers)]
        s = None
        norm = (1 - self.leak) / (1 - self.leak ** T) if self.leak < 1 else 1.0 / T
        for t in range(T):
            cur = drive[t] if s is None else drive[t] + fb(s)  # s: layer L at step t - 1
            wt = self.leak ** (T - 1 - t)
            for l in range(self.n_layers):
                if u[l] is None:
                    u[l], acc[l] = torch.zeros_like(cur), torch.zeros_like(cur)
                u[l] = u[l] + cur
                s = (u[l] >= self.vth).to(cur.dtype)
                u[l] = (u[l] - self.theta * s) * self.leak
                acc[l] = acc[l] + wt * s
                if record:
                    trains[l].append(s)
                if l < self.n_layers - 1:
                    cur = ops[l](s)
        rates = [a * norm for a in acc]
        if record:
            return rates, [torch.stack(tr) for tr in trains]
        return rates

    def currents(self, x_mean: torch.Tensor, rates: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Pre-activation currents ``h = M a + c`` per layer at rates ``a`` (differentiable)."""
        h = [synop(self.input_syn)(x_mean) + synop(self.feedback)(rates[-1])]
        for l, m in enumerate(self.chain):
            h.append(synop(m)(rates[l]))
        return h

    @torch.no_grad()
    def rate_fixed_point(self, x_mean: torch.Tensor, iters: int = 1000, tol: float = 1e-13):
        """Solve ``a = clamp(h(a) / theta, 0, 1)`` by plain iteration (assumes a contraction)."""
        shapes = self.layer_shapes(x_mean.shape[1:])
        rates = [torch.zeros((x_mean.shape[0], *s), dtype=x_mean.dtype) for s in shapes]
        for _ in range(iters):
            new = [torch.clamp(h / self.theta, 0, 1) for h in self.currents(x_mean, rates)]
            diff = max(float((a - b).abs().max()) for a, b in zip(new, rates, strict=True))
            rates = new
            if diff < tol:
                break
        return rates

    def equilibrium(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Rates of all layers; in training their gradient is the implicit one (``solver``)."""
        x_mean = x.mean(0)
        rates = self.rate_fixed_point(x_mean) if self.forward_mode == "rates" else self.simulate(x)
        if not torch.is_grad_enabled():
            return tuple(rates)
        h = self.currents(x_mean, rates)
        system = BackwardSystem(self.blocks(), rates, self.theta)
        solver = self.solver or BackwardSystem.solve_exact

        def backward_fn(grads):
            g = [torch.zeros_like(a) if gr is None else gr for gr, a in
                 zip(grads, system.rates, strict=True)]
            beta = solver(system, g)
            return [d * b for d, b in zip(system.D, beta, strict=True)]

        return implicit_rates(h, rates, backward_fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the rate readout, ``classifier(a_L)``."""
        a = self.equilibrium(x)[-1]
        if self.training and self.dropout > 0:
            a = F.dropout(a, self.dropout)
        return self.classifier(a.flatten(1))

    # -- deployment ----------------------------------------------------------------------------
    @torch.no_grad()
    def calibrate_readout(self, x: torch.Tensor, batch: int = 256, margin: float = 0.1,
                          headroom: float = 1.1) -> tuple[float, float]:
        """Choose the spiking readout: ``IF(theta_out)`` fed ``classifier(s_L) + shift``.

        Its spike count over ``T`` steps is about ``T (logit + shift) / theta_out`` clipped to
        ``[0, T]`` (at most one spike per step), so the arg-max of counts is the arg-max of the
        logits while the winner is positive and not saturated. Over the calibration inputs
        ``x`` (``[T, N, ...]``), ``shift`` lifts the smallest winning logit to ``margin`` times
        the winners' range above zero and ``theta_out`` is ``headroom`` times the largest
        shifted winner. Adding one constant to every logit changes neither softmax nor arg-max.
        Returns ``(shift, threshold)`` (also stored as buffers).
        """
        was = self.training
        self.eval()
        tops = [self(x[:, i:i + batch]).max(1).values for i in range(0, x.shape[1], batch)]
        self.train(was)
        top = torch.cat(tops)
        lo, hi = float(top.min()), float(top.max())
        shift = -lo + margin * max(hi - lo, 1e-6)
        thr = max(headroom * (hi + shift), 1e-6)
        self.readout_shift.fill_(shift)
        self.readout_threshold.fill_(thr)
        return shift, thr

    def _neuron(self, shape) -> nir.NIRNode:
        ones = np.ones(shape)
        meta = {"reset": "subtract", "v_init": float(-self.u_rest)}
        if self.leak == 1.0:
            return nir.IF(r=ones, v_threshold=self.theta * ones, v_reset=0 * ones, metadata=meta)
        tau = 1.0 / (1.0 - self.leak)
        return nir.LIF(tau=tau * ones, r=tau * ones, v_leak=-self.u_rest * ones,
                       v_threshold=self.theta * ones, v_reset=0 * ones, metadata=meta)

    def to_nir(self, input_shape: Sequence[int], dense: bool | None = None) -> nir.NIRGraph:
        """NIR graph with the feedback as a back edge ``layer_L -> feedback -> layer_1``.

        ``dense``: write every synapse as an ``Affine`` on flattened layers (needed when the
        feedback is a transposed convolution, which NIR/Lava have no synapse for; limited to
        ``MAX_DENSE`` neurons per layer). Default: only when some synapse needs it.
        """
        input_shape = tuple(int(s) for s in input_shape)
        dt = next(self.parameters()).dtype
        shapes = self.layer_shapes(input_shape)
        ops = [synop(self.input_syn)] + [op for _, _, op in self.blocks()]
        if dense is None:
            dense = any(op.kind == "conv_transpose2d" for op in ops)
        names = ["input_syn"] + [f"chain.{i}" for i in range(len(self.chain))] + ["feedback"]
        layer = [f"layer{l + 1}" for l in range(self.n_layers)]
        pre, post = ["input"] + layer, layer + [layer[0]]
        srcs, dsts = [input_shape] + shapes, shapes + [shapes[0]]
        nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type=np.array(input_shape))}
        for l, s in enumerate(shapes):
            nodes[layer[l]] = self._neuron((int(np.prod(s)),) if dense else s)
        edges: list[tuple[str, str]] = []

        def connect(src: str, src_shape, dst: str) -> None:
            """Edge ``src -> dst``, through a Flatten when an Affine reads a multi-dim tensor."""
            flat_src = dense and src != "input"
            if isinstance(nodes[dst], nir.Affine) and len(src_shape) > 1 and not flat_src:
                flat = f"{dst}.flatten"
                nodes[flat] = nir.Flatten(input_type={"input": np.array(src_shape)},
                                          start_dim=0, end_dim=-1)
                edges.append((src, flat))
                src = flat
            edges.append((src, dst))

        for i, (name, op) in enumerate(zip(names, ops, strict=True)):
            nodes[name] = _op_to_nir(name, op, srcs[i], dsts[i], dense, dt)
            connect(pre[i], srcs[i], name)
            edges.append((name, post[i]))
        w = self.classifier.weight.detach().double().numpy()
        b = (self.classifier.bias.detach().double().numpy() if self.classifier.bias is not None
             else np.zeros(w.shape[0])) + float(self.readout_shift)
        nodes["classifier"] = nir.Affine(weight=w, bias=b)
        connect(layer[-1], shapes[-1], "classifier")
        ones = np.ones(w.shape[0])
        nodes["readout"] = nir.IF(r=ones, v_threshold=float(self.readout_threshold) * ones,
                                  v_reset=0 * ones, metadata={"reset": "subtract", "v_init": 0.0})
        nodes["output"] = nir.Output(output_type=np.array([w.shape[0]]))
        edges += [("classifier", "readout"), ("readout", "output")]
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0})


def _op_to_nir(name: str, op: SynOp, in_shape, out_shape, dense: bool, dtype) -> nir.NIRNode:
    bias = (op.bias.detach().double().numpy() if op.bias is not None
            else np.zeros(out_shape[0]))
    if dense or op.kind == "linear":
        n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
        if op.kind == "linear":
            w = op.weight.detach().double().numpy()
            return nir.Affine(weight=w, bias=bias)
        if max(n_in, n_out) > MAX_DENSE:
            raise UnsupportedLayerError(
                name, op.kind, ["Linear", "Conv2d"],
                f"a dense {n_out}x{n_in} matrix is too large; NIR/Lava have no transposed-conv "
                "synapse, so use a Conv2d (stride 1) or Linear feedback")
        with torch.no_grad():
            basis = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *in_shape)
            wd = SynOp(op.kind, op.weight.detach().double(), None, op.stride, op.padding,
                       op.output_padding, op.dilation, op.groups)(basis, bias=False)
        full_bias = np.broadcast_to(bias.reshape(-1, *([1] * (len(out_shape) - 1))),
                                    out_shape).reshape(-1) if len(out_shape) > 1 else bias
        return nir.Affine(weight=wd.reshape(n_in, -1).T.numpy().copy(), bias=full_bias.copy())
    if op.kind == "conv2d":
        return nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=op.weight.detach().double()
                          .numpy(), stride=np.array(op.stride), padding=np.array(op.padding),
                          dilation=np.array(op.dilation), groups=op.groups, bias=bias)
    raise UnsupportedLayerError(name, op.kind, ["Linear", "Conv2d"],
                                "export a transposed-conv feedback with dense=True")
