"""PyTorch module -> NIR graph, by torch.fx tracing.

Supported layers: Conv2d, Linear, BatchNorm1d/2d (folded into the producing weights),
AvgPool2d (SumPool2d followed by a Scale that ``passes.fold_scale`` moves into the next
weights), Flatten, Dropout/Identity (removed), residual additions (several edges into one
node, which NIR sums) and our ``neurodeploy.nn`` IF/LIF neurons. Spike amplitudes other than
1 become a Scale after the neuron, folded the same way.

Our discrete neurons map onto NIR's ODEs with ``dt = 1`` (graph metadata):
IF ``v += gain x`` -> ``IF(r=gain)``; LIF ``v = beta v + (1-beta) v_leak + gain x`` ->
``LIF(tau = 1/(1-beta), r = gain/(1-beta), v_leak)`` (``v_leak``: the module's resting
potential, 0 unless it has one, e.g. DSR's LIF). Thresholds are read through
``effective_threshold()`` (trainable ones are clamped there). Reset mode and initial membrane go
in node metadata (``reset``, ``v_init``).
"""

from __future__ import annotations

import operator

import nir
import numpy as np
import torch
import torch.fx as fx
from torch import nn

from ..errors import UnsupportedLayerError
from ..nn.neurons import LIF, SpikingNeuron, TimeDistributed

SUPPORTED_MODULES = [
    "Conv2d", "Linear", "BatchNorm1d", "BatchNorm2d", "AvgPool2d", "Flatten", "Dropout",
    "Identity", "neurodeploy.nn.IF", "neurodeploy.nn.LIF", "TimeDistributed(<any of these>)",
    "residual add (+)",
]


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (SpikingNeuron, TimeDistributed)):
            return True
        return super().is_leaf_module(m, qualname)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _shapes(gm: fx.GraphModule, example: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Per-step output shape (without T and B) of every fx node, from one forward pass."""
    shapes: dict[str, tuple[int, ...]] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                shapes[n.name] = tuple(out.shape[2:])
            return out

    with torch.no_grad():
        Recorder(gm).run(example)
    return shapes


class _Builder:
    def __init__(self):
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []

    def add(self, name: str, node: nir.NIRNode, inputs: list[str]) -> list[str]:
        base, i = name, 1
        while name in self.nodes:
            i += 1
            name = f"{base}_{i}"
        self.nodes[name] = node
        self.edges += [(p, name) for p in inputs]
        return [name]


def _scalar(v) -> float:
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)


def _neuron_node(m: SpikingNeuron, shape) -> nir.NIRNode:
    ones = np.ones(shape)
    theta = _scalar(m.effective_threshold())
    meta = {"reset": m.reset, "v_init": _scalar(m.v_init)}
    if isinstance(m, LIF):
        tau = 1.0 / (1.0 - m.beta)
        v_leak = _scalar(getattr(m, "v_leak", 0.0))
        return nir.LIF(tau=tau * ones, r=m.gain * tau * ones, v_leak=v_leak * ones,
                       v_threshold=theta * ones, v_reset=0 * ones, metadata=meta)
    if type(m).charge is not SpikingNeuron.charge:
        raise UnsupportedLayerError(type(m).__name__, type(m).__name__, SUPPORTED_MODULES,
                                    "custom charge() dynamics need their own exporter")
    return nir.IF(r=m.gain * ones, v_threshold=theta * ones, v_reset=0 * ones, metadata=meta)


def _fold_bn(bn, where, producers, b: _Builder, users_ok: bool):
    scale = _np(bn.weight if bn.affine else torch.ones_like(bn.running_var)) / np.sqrt(
        _np(bn.running_var) + bn.eps)
    shift = (_np(bn.bias) if bn.affine else 0.0) - _np(bn.running_mean) * scale
    linear = [p for p in producers if isinstance(b.nodes[p], (nir.Affine, nir.Conv2d))]
    if not users_ok or len(linear) != len(producers):
        raise UnsupportedLayerError(
            where, type(bn).__name__, SUPPORTED_MODULES,
            "BatchNorm must follow Conv2d/Linear (or a sum of them) whose output feeds only it",
        )
    for k, p in enumerate(linear):
        node = b.nodes[p]
        shp = (-1,) + (1,) * (node.weight.ndim - 1)
        node.weight = node.weight * scale.reshape(shp)
        node.bias = node.bias * scale + (shift if k == 0 else 0.0)
    return producers


def torch_to_nir(model: nn.Module, input_shape: tuple[int, ...]) -> nir.NIRGraph:
    """Export ``model`` (taking ``[T, B, *input_shape]``) to a NIR graph with ``dt = 1``."""
    to_nir = getattr(model, "to_nir", None)
    if callable(to_nir):  # recurrent models (e.g. FeedbackSNN) write their own graph
        return to_nir(tuple(input_shape))
    model = model.eval()
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as e:  # fx raises many types for untraceable control flow
        raise UnsupportedLayerError(type(model).__name__, "untraceable forward", SUPPORTED_MODULES,
                                    f"torch.fx could not trace it: {e}") from e
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None else torch.float32
    example = torch.zeros((1, 1, *input_shape), dtype=dtype)
    shapes = _shapes(gm, example)
    b = _Builder()
    prod: dict[str, list[str]] = {}
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            prod[n.name] = b.add("input", nir.Input(input_type=np.array(input_shape)), [])
        elif n.op == "output":
            arg = n.args[0]
            srcs = prod[arg.name]
            b.add("output", nir.Output(output_type=np.array(shapes[arg.name])), srcs)
        elif n.op == "call_function" and n.target in (operator.add, torch.add):
            a, c = n.args[0], n.args[1]
            if not isinstance(a, fx.Node) or not isinstance(c, fx.Node):
                raise UnsupportedLayerError(n.name, "add with a constant", SUPPORTED_MODULES)
            prod[n.name] = prod[a.name] + prod[c.name]
        elif n.op == "call_module":
            m = gm.get_submodule(n.target)
            inner = m.module if isinstance(m, TimeDistributed) else m
            src = prod[n.args[0].name]
            in_shape = shapes[n.args[0].name]
            prod[n.name] = _module(n, inner, src, in_shape, shapes[n.name], b)
        else:
            raise UnsupportedLayerError(n.name, f"{n.op} {getattr(n.target, '__name__', n.target)}",
                                        SUPPORTED_MODULES, "use nn.Flatten instead of tensor ops")
    return nir.NIRGraph(nodes=b.nodes, edges=b.edges, metadata={"dt": 1.0})


def _module(n: fx.Node, m: nn.Module, src, in_shape, out_shape, b: _Builder) -> list[str]:
    where = n.target
    if isinstance(m, SpikingNeuron):
        out = b.add(where, _neuron_node(m, out_shape), src)
        amp = _scalar(m.amplitude())
        if amp != 1.0:
            out = b.add(f"{where}.amplitude", nir.Scale(scale=np.full(out_shape, amp)), out)
        return out
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros":
            raise UnsupportedLayerError(where, f"Conv2d(padding_mode={m.padding_mode!r})",
                                        SUPPORTED_MODULES)
        bias = _np(m.bias) if m.bias is not None else np.zeros(m.out_channels)
        pad = m.padding if not isinstance(m.padding, str) else _same_padding(m, in_shape)
        node = nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=_np(m.weight),
                          stride=np.array(m.stride), padding=np.array(pad),
                          dilation=np.array(m.dilation), groups=m.groups, bias=bias)
        return b.add(where, node, src)
    if isinstance(m, nn.Linear):
        bias = _np(m.bias) if m.bias is not None else np.zeros(m.out_features)
        return b.add(where, nir.Affine(weight=_np(m.weight), bias=bias), src)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        ok = all(len(u.users) == 1 for u in _producer_fx(n))
        return _fold_bn(m, where, src, b, ok)
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode or not m.count_include_pad or m.divisor_override:
            raise UnsupportedLayerError(where, "AvgPool2d with ceil_mode/count_include_pad=False",
                                        SUPPORTED_MODULES)
        k = np.array(nn.modules.utils._pair(m.kernel_size))
        s = np.array(nn.modules.utils._pair(m.stride if m.stride is not None else m.kernel_size))
        p = np.array(nn.modules.utils._pair(m.padding))
        pool = b.add(where, nir.SumPool2d(kernel_size=k, stride=s, padding=p), src)
        return b.add(f"{where}.scale", nir.Scale(scale=np.full(out_shape, 1.0 / k.prod())), pool)
    if isinstance(m, nn.Flatten):
        start = m.start_dim - 1 if m.start_dim > 0 else m.start_dim
        end = m.end_dim - 1 if m.end_dim > 0 else m.end_dim
        node = nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=start, end_dim=end)
        return b.add(where, node, src)
    if isinstance(m, (nn.Dropout, nn.Identity)):
        return src
    raise UnsupportedLayerError(where, type(m).__name__, SUPPORTED_MODULES)


def _producer_fx(n: fx.Node) -> list[fx.Node]:
    """fx nodes whose outputs are summed into ``n``'s input (through additions)."""
    out, todo = [], [n.args[0]]
    while todo:
        x = todo.pop()
        if x.op == "call_function" and x.target in (operator.add, torch.add):
            if len(x.users) != 1:
                return [x]
            todo += [a for a in x.args if isinstance(a, fx.Node)]
        else:
            out.append(x)
    return out


def _same_padding(m: nn.Conv2d, in_shape) -> tuple[int, int]:
    if m.padding == "valid":
        return (0, 0)
    pads = []
    for k, d in zip(m.kernel_size, m.dilation, strict=True):
        total = d * (k - 1)
        if total % 2:
            raise UnsupportedLayerError(str(m), "Conv2d(padding='same') with asymmetric padding",
                                        SUPPORTED_MODULES)
        pads.append(total // 2)
    return tuple(pads)
