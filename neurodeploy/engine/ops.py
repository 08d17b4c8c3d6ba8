"""Evaluation of NIR's stateless (linear) nodes on batched torch tensors.

Tensors are ``[B, *shape]`` with NIR's shapes (channels first, no batch). One definition is
shared by the float engine, the fixed-point engine (which feeds integer-valued float64 tensors,
exact below 2**53) and energy accounting.
"""

from __future__ import annotations

import nir
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import GraphError


def _t(a, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=like.dtype, device=like.device)


def _pair(v) -> tuple[int, int]:
    a = np.atleast_1d(np.asarray(v)).astype(int)
    return (int(a[0]), int(a[-1]))


def apply_linear(name: str, node, x: torch.Tensor, weight=None, bias=True) -> torch.Tensor:
    """Apply connection node ``node`` to ``x`` ([B, *in_shape]).

    ``weight`` overrides the node's weight (the fixed-point engine passes integer mantissas);
    ``bias=False`` drops the bias (it is handled by the neuron in fixed point).
    """
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = _t(node.weight if weight is None else weight, x)
        y = x.reshape(x.shape[0], -1) @ w.T
        if bias and isinstance(node, nir.Affine):
            y = y + _t(node.bias, x)
        return y
    if isinstance(node, nir.Conv2d):
        w = _t(node.weight if weight is None else weight, x)
        b = _t(node.bias, x) if bias and np.any(np.asarray(node.bias) != 0) else None
        pad = node.padding
        if isinstance(pad, str):
            pad = pad if pad in ("same", "valid") else "valid"
        else:
            pad = _pair(pad)
        return F.conv2d(x, w, b, _pair(node.stride), pad, _pair(node.dilation), int(node.groups))
    if isinstance(node, nir.Conv1d):
        w = _t(node.weight if weight is None else weight, x)
        b = _t(node.bias, x) if bias and np.any(np.asarray(node.bias) != 0) else None
        return F.conv1d(x, w, b, int(np.atleast_1d(node.stride)[0]),
                        int(np.atleast_1d(node.padding)[0]),
                        int(np.atleast_1d(node.dilation)[0]), int(node.groups))
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        k, s, p = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
        y = F.avg_pool2d(x, k, s, p, count_include_pad=True)
        return y * (k[0] * k[1]) if isinstance(node, nir.SumPool2d) else y
    if isinstance(node, nir.Scale):
        return x * _t(node.scale, x)
    if isinstance(node, nir.Flatten):
        start = int(node.start_dim) + 1 if int(node.start_dim) >= 0 else int(node.start_dim)
        end = int(node.end_dim) + 1 if int(node.end_dim) >= 0 else int(node.end_dim)
        return x.flatten(start, end)
    raise GraphError(f"node {name!r}: {type(node).__name__} is not a linear node")
