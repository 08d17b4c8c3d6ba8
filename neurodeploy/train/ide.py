"""IDE: implicit differentiation on the equilibrium of feedback SNNs (Xiao et al., NeurIPS 2021;
pkuxmq/IDE-FSNN).

Same forward as SPIDE (:mod:`neurodeploy.train.spide`) with IDE's neuron: reset by subtracting
``vth`` from a zero initial membrane (``u_rest = 0``) and, in the official CIFAR scripts, a leak
(``leak = 0.99``, ``vth = 2``). The backward linear system ``beta = g + M^T D beta`` at the
rate equilibrium ``a = clamp((M a + F x)/vth, 0, 1)`` is solved numerically:
:class:`ImplicitSolver` offers Broyden's method (IDE's choice, ``threshold = 30`` iterations),
plain fixed-point iteration and an exact dense solve. The feedback weight is re-parametrised by
its spectral norm: ``W = clamp(g, -1, 1) W_w / sigma(W_w)``.

Training on digits (``tools/train.py --method ide``): ``ide-mlp`` (64 -> 128 -> 64, dense
feedback), IF neurons with ``vth = 1`` (the leak and ``vth = 2`` of the CIFAR recipe are options:
``--set leak=0.99 --set vth=2``), T = 30, Adam, cross-entropy on the rate readout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..nn.feedback import BackwardSystem
from . import register
from .common import TrainConfig, TrainResult
from .spide import train_feedback

SOLVERS = ("broyden", "fixed_point", "exact")


def broyden(f, x0: torch.Tensor, max_iter: int = 30, tol: float = 1e-8
            ) -> tuple[torch.Tensor, dict]:
    """Batched "good" Broyden root finding of ``f(x) = 0`` for ``x`` of shape ``[B, n]``.

    The inverse Jacobian starts at the identity (right for ``f(x) = x - F(x)`` with a small
    ``F``) and gets one rank-one update per iteration, kept as ``H = I + sum_i u_i v_i^T``.
    Stops when every sample's ``|f| / (|x| + 1e-12)`` is below ``tol`` or after ``max_iter``
    iterations; returns the iterate with the lowest residual and ``{"iters", "residual"}``.
    """
    x = x0
    fx = f(x)
    us: list[torch.Tensor] = []
    vs: list[torch.Tensor] = []

    def h_mul(y):  # H y
        out = y
        for u, v in zip(us, vs, strict=True):
            out = out + u * (v * y).sum(1, keepdim=True)
        return out

    def h_tmul(y):  # y^T H
        out = y
        for u, v in zip(us, vs, strict=True):
            out = out + v * (u * y).sum(1, keepdim=True)
        return out

    best, best_res = x, fx.norm(dim=1)
    iters = 0
    for _ in range(max_iter):
        iters += 1
        dx = -h_mul(fx)
        x_new = x + dx
        f_new = f(x_new)
        df = f_new - fx
        hdf = h_mul(df)
        denom = (dx * hdf).sum(1, keepdim=True)
        ok = denom.abs() > 1e-30
        v_new = h_tmul(dx)
        us.append(torch.where(ok, (dx - hdf) / torch.where(ok, denom, torch.ones_like(denom)),
                              torch.zeros_like(dx)))
        vs.append(v_new)
        x, fx = x_new, f_new
        res = fx.norm(dim=1)
        better = res < best_res
        best = torch.where(better[:, None], x, best)
        best_res = torch.where(better, res, best_res)
        if bool((best_res <= tol * (best.norm(dim=1) + 1e-12)).all()):
            break
    return best, {"iters": iters, "residual": float(best_res.max())}


@dataclass
class ImplicitSolver:
    """Numerical solver of IDE's backward system; ``method`` in :data:`SOLVERS`."""

    method: str = "broyden"
    max_iter: int = 30
    tol: float = 1e-8

    def __post_init__(self):
        if self.method not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.method!r}")
        self.last_stats: dict = {}

    def __call__(self, system: BackwardSystem, g: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.method == "exact":
            self.last_stats = {"iters": 1}
            return system.solve_exact(g)
        gf = system.flatten(g)
        dflat = system.flatten(system.D)

        def fixed_map(b):  # g + M^T D b
            return gf + system.flatten(system.mt(system.unflatten(dflat * b)))

        if self.method == "fixed_point":
            b, iters = gf, 0
            for _ in range(self.max_iter):
                iters += 1
                nb = fixed_map(b)
                done = float((nb - b).norm(dim=1).max()) <= self.tol * float(nb.norm(dim=1).max())
                b = nb
                if done:
                    break
            self.last_stats = {"iters": iters}
            return system.unflatten(b)
        b, stats = broyden(lambda b: b - fixed_map(b), gf, self.max_iter, self.tol)
        self.last_stats = stats
        return system.unflatten(b)


@register("ide")
def train(cfg: TrainConfig) -> TrainResult:
    solver = ImplicitSolver(cfg.get("solver", "broyden"), max_iter=cfg.get("threshold", 30))
    return train_feedback(cfg, "ide", "ide", solver, lr=2e-3, vth=1.0, u_rest=None, leak=1.0,
                          norm="spectral", radius=1.0)
