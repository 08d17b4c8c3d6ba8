"""ANN -> SNN conversion: ReLU networks from ONNX, ``torch.export`` or TorchScript to IF SNNs.

A trained ReLU network (Conv, Gemm/MatMul, Relu, BatchNormalization, AveragePool,
GlobalAveragePool, Flatten/Reshape-to-flat, Add, Dropout/Identity) becomes a NIR graph of
integrate-and-fire neurons with reset by subtraction, whose firing rates approximate the ANN's
activations (rate coding; Rueckauer et al. 2017, "Conversion of continuous-valued deep networks
to efficient event-driven networks"):

* every ReLU becomes an ``IF`` layer (``r = 1``, ``v_threshold = 1``, ``v_reset = 0``, metadata
  ``reset = "subtract"``), the network output (logits) one more IF layer read out by spike
  count; BatchNormalization is folded into the Conv/Gemm before it; an AveragePool becomes
  NIR's ``AvgPool2d`` (the compiler fuses it into the next weights); a sum of two branches (a
  residual ``Add``) becomes two edges into one node, which NIR sums;
* data-based threshold balancing, written as the equivalent weight normalisation: with
  ``lambda_l`` the ``percentile`` (default 99.9th) of layer ``l``'s positive ANN activations on
  the calibration data, every weight on a path from layer ``s`` to layer ``l`` is scaled by
  ``lambda_s / lambda_l`` and the biases by ``1 / lambda_l``; a spike of layer ``l`` then stands
  for ``lambda_l`` units of activation. The input is ``lambda_0`` = the largest calibration
  value (1 without calibration), so the SNN expects spike trains with rate ``x / lambda_0`` per
  step (:func:`encode_rates`); negative inputs cannot be represented and count as 0;
* without calibration data the scales are the model-based bounds (Diehl et al. 2015): the
  largest activation any input in ``[0, lambda_0]`` can cause, which is safe but leaves the
  neurons firing far below their maximum rate (longer time windows are needed).

The graph carries metadata ``dt = 1``, ``time_steps``, ``input_scale`` (``lambda_0``) and
``ann_scales`` (``lambda_l`` per layer). Unsupported operators (MaxPool, Sigmoid, Concat, ...)
raise :class:`UnsupportedLayerError` naming the operator.
"""

from __future__ import annotations

import copy
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np
import torch

from ..engine.ops import apply_linear
from ..errors import InputFileError, UnsupportedLayerError
from ..graph import evaluation_order, predecessors, successors, validate
from .nir_file import infer_shapes

SUPPORTED_OPS = ["Conv (2-D)", "Gemm", "MatMul (constant weights)", "Add", "Relu",
                 "BatchNormalization", "AveragePool", "GlobalAveragePool", "Flatten",
                 "Reshape (to [N, -1])", "Dropout", "Identity"]


@dataclass
class Op:
    """One operator of the ANN in a format-neutral form (tensors named by strings)."""

    kind: str  # conv, linear, relu, bn, avgpool, gavgpool, flatten, add, addconst, identity
    inputs: list[str]
    output: str
    where: str
    attrs: dict = field(default_factory=dict)


@dataclass
class AnnGraph:
    ops: list[Op]
    input: str
    output: str
    input_shape: tuple[int, ...] | None


# --- ONNX ------------------------------------------------------------------------------------

def _onnx_attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _sym_pads(where: str, pads, n: int = 2) -> list[int]:
    pads = list(pads or [0] * 2 * n)
    if pads[:n] != pads[n:]:
        raise UnsupportedLayerError(where, f"asymmetric padding {pads}", SUPPORTED_OPS)
    return [int(p) for p in pads[:n]]


def read_onnx(path: str | Path) -> AnnGraph:
    """Parse an ONNX model into :class:`Op` s (initializers via ``onnx.numpy_helper``)."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf raises DecodeError and others
        raise InputFileError(f"{path}: not a readable ONNX model ({e})") from e
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in g.initializer}
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1 or len(g.output) != 1:
        raise InputFileError(f"{path}: the model must have one input and one output "
                             f"(has {len(inputs)} and {len(g.output)})")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    in_shape = tuple(dims[1:]) if len(dims) > 1 and all(d > 0 for d in dims[1:]) else None
    ops: list[Op] = []
    for k, node in enumerate(g.node):
        a = _onnx_attrs(node)
        where = node.name or f"{node.op_type}_{k}"
        t, ins = node.op_type, list(node.input)
        out = node.output[0] if node.output else where

        def const(name: str, what: str, where=where, t=t) -> np.ndarray:
            if name not in consts:
                raise UnsupportedLayerError(where, f"{t} with a computed {what}", SUPPORTED_OPS,
                                            f"{what} must be a constant (initializer)")
            return consts[name]

        if t == "Constant":
            consts[out] = numpy_helper.to_array(a["value"]).astype(np.float64)
        elif t == "Conv":
            w = const(ins[1], "weight")
            if w.ndim != 4 or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                raise UnsupportedLayerError(where, f"Conv with weight {w.shape} / auto_pad",
                                            SUPPORTED_OPS, "only 2-D convolutions, explicit pads")
            b = const(ins[2], "bias") if len(ins) > 2 and ins[2] else np.zeros(w.shape[0])
            ops.append(Op("conv", [ins[0]], out, where, {
                "weight": w, "bias": b, "stride": list(a.get("strides", [1, 1])),
                "padding": _sym_pads(where, a.get("pads")),
                "dilation": list(a.get("dilations", [1, 1])), "groups": int(a.get("group", 1))}))
        elif t == "Gemm":
            if a.get("transA", 0):
                raise UnsupportedLayerError(where, "Gemm with transA", SUPPORTED_OPS)
            w = const(ins[1], "weight")
            w = (w if a.get("transB", 0) else w.T) * float(a.get("alpha", 1.0))
            b = const(ins[2], "bias") * float(a.get("beta", 1.0)) if len(ins) > 2 and ins[2] \
                else np.zeros(w.shape[0])
            b = b.reshape(-1)
            ops.append(Op("linear", [ins[0]], out, where,
                          {"weight": w, "bias": np.broadcast_to(b, (w.shape[0],)).copy()}))
        elif t == "MatMul":
            w = const(ins[1], "weight")
            if w.ndim != 2:
                raise UnsupportedLayerError(where, f"MatMul with a {w.ndim}-D weight",
                                            SUPPORTED_OPS)
            ops.append(Op("linear", [ins[0]], out, where,
                          {"weight": w.T, "bias": np.zeros(w.shape[1])}))
        elif t in ("Add", "Sum") and len(ins) == 2 and (ins[0] in consts or ins[1] in consts):
            c, x = (ins[0], ins[1]) if ins[0] in consts else (ins[1], ins[0])
            ops.append(Op("addconst", [x], out, where, {"value": consts[c]}))
        elif t in ("Add", "Sum"):
            ops.append(Op("add", ins, out, where))
        elif t == "Relu":
            ops.append(Op("relu", ins[:1], out, where))
        elif t == "BatchNormalization":
            s, b, m, v = (const(n, "statistic") for n in ins[1:5])
            scale = s / np.sqrt(v + float(a.get("epsilon", 1e-5)))
            ops.append(Op("bn", ins[:1], out, where, {"scale": scale, "shift": b - m * scale}))
        elif t == "AveragePool":
            if a.get("ceil_mode", 0) or a.get("auto_pad", b"NOTSET") not in (b"NOTSET",
                                                                             "NOTSET"):
                raise UnsupportedLayerError(where, "AveragePool with ceil_mode/auto_pad",
                                            SUPPORTED_OPS)
            pads = _sym_pads(where, a.get("pads"))
            if any(pads) and not a.get("count_include_pad", 0):
                raise UnsupportedLayerError(where, "padded AveragePool without "
                                            "count_include_pad", SUPPORTED_OPS)
            k = list(a["kernel_shape"])
            ops.append(Op("avgpool", ins[:1], out, where,
                          {"kernel": k, "stride": list(a.get("strides", [1] * len(k))),
                           "padding": pads}))
        elif t == "GlobalAveragePool":
            ops.append(Op("gavgpool", ins[:1], out, where))
        elif t == "Flatten":
            axis = int(a.get("axis", 1))
            if axis < 1:
                raise UnsupportedLayerError(where, f"Flatten(axis={axis})", SUPPORTED_OPS,
                                            "the batch axis must stay")
            ops.append(Op("flatten", ins[:1], out, where, {"start": axis}))
        elif t == "Reshape":
            shape = const(ins[1], "shape").astype(int).tolist()
            if len(shape) != 2:
                raise UnsupportedLayerError(where, f"Reshape to {shape}", SUPPORTED_OPS,
                                            "only flattening reshapes ([N, -1])")
            ops.append(Op("flatten", ins[:1], out, where, {"start": 1, "check": shape[1]}))
        elif t in ("Identity", "Dropout"):
            ops.append(Op("identity", ins[:1], out, where))
        else:
            hint = ("max pooling has no rate-coded IF equivalent; use average pooling"
                    if t == "MaxPool" else "")
            raise UnsupportedLayerError(where, f"ONNX {t}", SUPPORTED_OPS, hint)
    return AnnGraph(ops, inputs[0].name, g.output[0].name, in_shape)


# --- torch.export (.pt2) ---------------------------------------------------------------------

def _aten(target) -> str:
    name = str(getattr(target, "__name__", target))
    return name.split(".")[0] if not name.startswith("aten") else name.split(".")[1]


def read_exported_program(path: str | Path) -> AnnGraph:
    """Parse a ``torch.export`` program (``torch.export.save``) into :class:`Op` s."""
    try:
        ep = torch.export.load(str(path))
    except Exception as e:  # torch raises many types for a bad archive
        raise InputFileError(f"{path}: not a readable torch.export program ({e})") from e
    sig = ep.graph_signature
    tensors = {**ep.state_dict, **getattr(ep, "constants", {})}
    consts: dict[str, object] = {}
    for spec in sig.input_specs:
        if spec.target is not None and spec.target in tensors:
            consts[spec.arg.name] = tensors[spec.target]
    nodes = list(ep.graph.nodes)
    data_in = [n.name for n in nodes if n.op == "placeholder" and n.name not in consts]
    if len(data_in) != 1:
        raise InputFileError(f"{path}: the program must take one input tensor")
    x_node = next(n for n in nodes if n.name == data_in[0])
    meta = x_node.meta.get("val")
    in_shape = tuple(int(s) for s in meta.shape[1:]) if meta is not None else None
    out_node = next(n for n in nodes if n.op == "output")
    outs = out_node.args[0]
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    if len(outs) != 1:
        raise InputFileError(f"{path}: the program must return one tensor")

    def arr(a):
        v = consts.get(getattr(a, "name", None))
        return None if v is None else v.detach().cpu().double().numpy()

    ops = []
    for n in nodes:
        if n.op != "call_function":
            continue
        ops.append(_aten_op(_aten(n.target), n.name, [getattr(a, "name", a) for a in n.args],
                            n.args, arr, dict(n.kwargs)))
    return AnnGraph([o for o in ops if o is not None], data_in[0], outs[0].name, in_shape)


def _aten_op(kind: str, where: str, names, args, arr, kwargs) -> Op | None:
    """One aten operator (torch.export or TorchScript) as an :class:`Op`."""

    def arg(i, default=None):
        return args[i] if len(args) > i else default

    if kind in ("conv2d", "convolution", "_convolution"):
        w = arr(arg(1))
        if w is None or w.ndim != 4:
            raise UnsupportedLayerError(where, f"aten.{kind} without constant 2-D weight",
                                        SUPPORTED_OPS)
        b = arr(arg(2))
        if kind == "conv2d":
            stride, pad, dil, groups = arg(3, [1, 1]), arg(4, [0, 0]), arg(5, [1, 1]), arg(6, 1)
        else:
            if arg(6):
                raise UnsupportedLayerError(where, "transposed convolution", SUPPORTED_OPS)
            stride, pad, dil, groups = arg(3), arg(4), arg(5), arg(8)
        if isinstance(pad, str):
            raise UnsupportedLayerError(where, f"conv padding {pad!r}", SUPPORTED_OPS)
        return Op("conv", [names[0]], where, where, {
            "weight": w, "bias": b if b is not None else np.zeros(w.shape[0]),
            "stride": list(stride), "padding": list(pad), "dilation": list(dil),
            "groups": int(groups)})
    if kind == "linear":
        w, b = arr(arg(1)), arr(arg(2))
        if w is None:
            raise UnsupportedLayerError(where, "aten.linear with a computed weight",
                                        SUPPORTED_OPS)
        return Op("linear", [names[0]], where, where,
                  {"weight": w, "bias": b if b is not None else np.zeros(w.shape[0])})
    if kind in ("relu", "relu_"):
        return Op("relu", [names[0]], where, where)
    if kind in ("add", "add_"):
        alpha = kwargs.get("alpha", arg(2, 1))
        if alpha != 1:
            raise UnsupportedLayerError(where, f"add with alpha={alpha}", SUPPORTED_OPS)
        c = [arr(a) for a in args[:2]]
        if c[0] is not None or c[1] is not None:
            k = 0 if c[0] is not None else 1
            return Op("addconst", [names[1 - k]], where, where, {"value": c[k]})
        if not all(isinstance(a, str) for a in names[:2]):
            raise UnsupportedLayerError(where, "add of a number", SUPPORTED_OPS)
        return Op("add", list(names[:2]), where, where)
    if kind in ("batch_norm", "_native_batch_norm_legit_no_training"):
        w, b, m, v = (arr(arg(i)) for i in (1, 2, 3, 4))
        eps = arg(7) if kind == "batch_norm" else arg(6)
        w = np.ones_like(m) if w is None else w
        b = np.zeros_like(m) if b is None else b
        scale = w / np.sqrt(v + float(eps))
        return Op("bn", [names[0]], where, where, {"scale": scale, "shift": b - m * scale})
    if kind == "avg_pool2d":
        k = list(arg(1))
        s = list(arg(2) or k)
        p = list(arg(3, [0, 0]))
        p = p * 2 if len(p) == 1 else p
        if arg(4, False) or arg(6) is not None or (any(p) and not arg(5, True)):
            raise UnsupportedLayerError(where, "avg_pool2d with ceil_mode/divisor_override/"
                                        "count_include_pad=False", SUPPORTED_OPS)
        return Op("avgpool", [names[0]], where, where,
                  {"kernel": k * 2 if len(k) == 1 else k, "stride": s * 2 if len(s) == 1 else s,
                   "padding": p})
    if kind == "adaptive_avg_pool2d":
        if list(arg(1)) != [1, 1]:
            raise UnsupportedLayerError(where, f"adaptive_avg_pool2d to {arg(1)}", SUPPORTED_OPS)
        return Op("gavgpool", [names[0]], where, where)
    if kind == "mean" and list(arg(1, [])) in ([-1, -2], [2, 3], [-2, -1], [3, 2]) and arg(2):
        return Op("gavgpool", [names[0]], where, where)
    if kind == "flatten":
        start = int(arg(1, 0))
        if start < 1 or int(arg(2, -1)) != -1:
            raise UnsupportedLayerError(where, "flatten of the batch axis", SUPPORTED_OPS)
        return Op("flatten", [names[0]], where, where, {"start": start})
    if kind in ("view", "reshape", "_unsafe_view"):
        shape = list(arg(1))
        if len(shape) != 2 or not isinstance(shape[1], int):
            raise UnsupportedLayerError(where, f"{kind} to {shape}", SUPPORTED_OPS,
                                        "only flattening reshapes ([N, -1]); use nn.Flatten")
        return Op("flatten", [names[0]], where, where, {"start": 1, "check": shape[1]})
    if kind in ("dropout", "dropout_", "clone", "contiguous", "detach", "alias",
                "feature_dropout"):
        return Op("identity", [names[0]], where, where)
    if kind in ("size", "sym_size", "Int", "NumToTensor", "ScalarImplicit"):
        return None  # shape bookkeeping feeding a flattening view/reshape
    if kind == "getitem":
        if arg(1) != 0:
            raise UnsupportedLayerError(where, "tuple output other than the first",
                                        SUPPORTED_OPS)
        return Op("identity", [names[0]], where, where)
    hint = "max pooling has no rate-coded IF equivalent" if "max_pool" in kind else ""
    raise UnsupportedLayerError(where, f"aten.{kind}", SUPPORTED_OPS, hint)


# --- TorchScript ------------------------------------------------------------------------------

def is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``), by its zip layout."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.split("/", 1)[-1].startswith("code/") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_torchscript(path: str | Path, trust_pickle: bool = False) -> AnnGraph:
    """Parse a TorchScript archive; it runs code when loaded, so it needs ``trust_pickle``."""
    if not trust_pickle:
        raise InputFileError(f"{path}: TorchScript archives execute their code when loaded; "
                             "pass --trust-pickle if you trust its source")
    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()
        frozen = torch.jit.freeze(module)
    except Exception as e:  # torch raises many types for bad archives
        raise InputFileError(f"{path}: not a loadable TorchScript archive ({e})") from e
    graph = frozen.graph
    torch._C._jit_pass_inline(graph)
    values: dict[str, object] = {}
    ins = [v for v in graph.inputs() if v.type().kind() == "TensorType"]
    if len(ins) != 1:
        raise InputFileError(f"{path}: the module must take one tensor")
    outs = list(graph.outputs())
    ops = []
    for node in graph.nodes():
        kind = node.kind()
        out = node.outputsAt(0).debugName() if node.outputsSize() else None
        if kind == "prim::Constant":
            values[out] = node.outputsAt(0).toIValue()
            continue
        if kind == "prim::ListConstruct":
            items = [values.get(i.debugName(), i.debugName()) for i in node.inputs()]
            values[out] = items
            continue
        names = [i.debugName() for i in node.inputs()]
        args = [values.get(n, n) for n in names]

        def arr(a):
            return a.detach().double().numpy() if isinstance(a, torch.Tensor) else None

        op = _aten_op(kind.split("::", 1)[1], out, names, args, arr, {})
        if op is not None:
            ops.append(op)
    return AnnGraph(ops, ins[0].debugName(), outs[0].debugName(), None)


# --- conversion -----------------------------------------------------------------------------

_WEIGHTED = (nir.Conv2d, nir.Affine)


def _conv_len(size, k, s, p, d=1) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


class _Builder:
    """Builds the NIR graph op by op; a tensor is the list of nodes whose sum it is."""

    def __init__(self, ann: AnnGraph, input_shape):
        self.nodes: dict[str, nir.NIRNode] = {"input": nir.Input(
            input_type={"input": np.array(input_shape)})}
        self.edges: list[tuple[str, str]] = []
        self.tensor = {ann.input: ["input"]}
        self.shape = {ann.input: tuple(input_shape)}
        self.relus: list[str] = []
        self.uses: dict[str, int] = {}
        for op in ann.ops:
            for i in op.inputs:
                self.uses[i] = self.uses.get(i, 0) + 1
        self.uses[ann.output] = self.uses.get(ann.output, 0) + 1

    def name(self, base: str) -> str:
        base = base.replace("/", ".").strip(".") or "node"
        name, i = base, 1
        while name in self.nodes:
            i += 1
            name = f"{base}_{i}"
        return name

    def add(self, base: str, node, srcs: list[str]) -> str:
        name = self.name(base)
        self.nodes[name] = node
        self.edges += [(s, name) for s in srcs]
        return name

    def get(self, op: Op, i: int = 0) -> tuple[list[str], tuple[int, ...]]:
        t = op.inputs[i]
        if t not in self.tensor:
            raise UnsupportedLayerError(op.where, f"{op.kind} of a constant or unknown tensor "
                                        f"{t!r}", SUPPORTED_OPS)
        return self.tensor[t], self.shape[t]

    def per_producer(self, op: Op, make, out_shape) -> None:
        prods, _ = self.get(op)
        self.tensor[op.output] = [self.add(op.where if len(prods) == 1 else f"{op.where}.{k}",
                                           make(k), [p]) for k, p in enumerate(prods)]
        self.shape[op.output] = tuple(out_shape)

    def fold_into_producers(self, op: Op, scale, shift) -> None:
        prods, shape = self.get(op)
        nodes = [self.nodes[p] for p in prods]
        if self.uses.get(op.inputs[0], 0) != 1 or not all(isinstance(n, _WEIGHTED)
                                                          for n in nodes):
            raise UnsupportedLayerError(op.where, op.kind, SUPPORTED_OPS,
                                        "BatchNorm / constant additions must directly follow a "
                                        "Conv or Gemm whose output feeds nothing else")
        c = shape[0]
        scale = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (c,))
        shift = np.asarray(shift, np.float64)
        if shift.size not in (1, c):
            raise UnsupportedLayerError(op.where, f"{op.kind} with a constant of shape "
                                        f"{shift.shape}", SUPPORTED_OPS,
                                        "only per-channel constants fold into a bias")
        shift = np.broadcast_to(shift.reshape(-1), (c,))
        for k, n in enumerate(nodes):
            w = np.asarray(n.weight, np.float64)
            n.weight = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
            n.bias = np.asarray(n.bias, np.float64) * scale + (shift if k == 0 else 0.0)
        self.tensor[op.output], self.shape[op.output] = prods, shape

    def op(self, op: Op) -> None:
        k = op.kind
        if k == "identity":
            self.tensor[op.output], self.shape[op.output] = self.get(op)
        elif k == "conv":
            _, shape = self.get(op)
            a = op.attrs
            w = np.asarray(a["weight"], np.float64)
            if len(shape) != 3 or shape[0] != w.shape[1] * a["groups"]:
                raise UnsupportedLayerError(op.where, f"Conv {w.shape} on input {shape}",
                                            SUPPORTED_OPS)
            st, pd, dl = (list(a[x]) * (2 if len(a[x]) == 1 else 1)
                          for x in ("stride", "padding", "dilation"))
            hw = [_conv_len(shape[1 + d], w.shape[2 + d], st[d], pd[d], dl[d]) for d in range(2)]
            bias = np.asarray(a["bias"], np.float64)
            self.per_producer(op, lambda i: nir.Conv2d(
                input_shape=tuple(shape[1:]), weight=w.copy(), stride=np.array(st),
                padding=np.array(pd), dilation=np.array(dl), groups=int(a["groups"]),
                bias=bias.copy() if i == 0 else np.zeros_like(bias)), (w.shape[0], *hw))
        elif k == "linear":
            _, shape = self.get(op)
            w = np.asarray(op.attrs["weight"], np.float64)
            if shape != (w.shape[1],):
                raise UnsupportedLayerError(op.where, f"Gemm {w.shape} on input {shape}",
                                            SUPPORTED_OPS, "flatten before a fully connected "
                                            "layer")
            bias = np.asarray(op.attrs["bias"], np.float64)
            self.per_producer(op, lambda i: nir.Affine(
                weight=w.copy(), bias=bias.copy() if i == 0 else np.zeros_like(bias)),
                (w.shape[0],))
        elif k in ("avgpool", "gavgpool"):
            _, shape = self.get(op)
            if len(shape) != 3:
                raise UnsupportedLayerError(op.where, f"pooling of shape {shape}", SUPPORTED_OPS)
            if k == "gavgpool":
                kern, st, pd = list(shape[1:]), list(shape[1:]), [0, 0]
            else:
                kern, st, pd = op.attrs["kernel"], op.attrs["stride"], op.attrs["padding"]
            hw = [_conv_len(shape[1 + d], kern[d], st[d], pd[d]) for d in range(2)]
            self.per_producer(op, lambda i: nir.AvgPool2d(
                kernel_size=np.array(kern), stride=np.array(st), padding=np.array(pd)),
                (shape[0], *hw))
        elif k == "flatten":
            _, shape = self.get(op)
            start = int(op.attrs["start"]) - 1
            out = (*shape[:start], int(np.prod(shape[start:])))
            if "check" in op.attrs and op.attrs["check"] not in (-1, out[-1]) or len(out) != 1:
                raise UnsupportedLayerError(op.where, f"reshape of {shape}", SUPPORTED_OPS,
                                            "only flattening to [N, features]")
            self.per_producer(op, lambda i: nir.Flatten(
                input_type={"input": np.array(shape)}, start_dim=start, end_dim=-1), out)
        elif k == "bn":
            self.fold_into_producers(op, op.attrs["scale"], op.attrs["shift"])
        elif k == "addconst":
            _, shape = self.get(op)
            self.fold_into_producers(op, np.ones(shape[0]), op.attrs["value"])
        elif k == "add":
            (pa, sa), (pb, sb) = self.get(op, 0), self.get(op, 1)
            if sa != sb:
                raise UnsupportedLayerError(op.where, f"Add of shapes {sa} and {sb}",
                                            SUPPORTED_OPS, "no broadcasting between branches")
            self.tensor[op.output], self.shape[op.output] = pa + pb, sa
        elif k == "relu":
            prods, shape = self.get(op)
            name = self.add(op.where, _if_layer(shape), prods)
            self.relus.append(name)
            self.tensor[op.output], self.shape[op.output] = [name], shape
        else:
            raise UnsupportedLayerError(op.where, k, SUPPORTED_OPS)


def _if_layer(shape) -> nir.IF:
    ones = np.ones(shape)
    return nir.IF(r=ones, v_threshold=ones.copy(), v_reset=0 * ones,
                  metadata={"reset": "subtract"})


def _forward(graph: nir.NIRGraph, x: np.ndarray, relus: set[str], bound: bool = False,
             batch: int = 256) -> dict[str, np.ndarray]:
    """ANN activations of every neuron node (ReLU, or identity for the readout layer).

    ``bound``: propagate upper bounds instead (positive weights and biases only).
    """
    order, _ = evaluation_order(graph)
    pred = predecessors(graph)
    acts: dict[str, list[np.ndarray]] = {k: [] for k, n in graph.nodes.items()
                                         if isinstance(n, nir.IF)}
    pos_nodes = {}
    if bound:
        for k, n in graph.nodes.items():
            if isinstance(n, _WEIGHTED):
                m = copy.copy(n)
                m.weight = np.maximum(np.asarray(n.weight), 0)
                m.bias = np.maximum(np.asarray(n.bias), 0)
                pos_nodes[k] = m
    for i in range(0, len(x), batch):
        val: dict[str, torch.Tensor] = {}
        for name in order:
            node = graph.nodes[name]
            if isinstance(node, nir.Input):
                val[name] = torch.as_tensor(x[i:i + batch], dtype=torch.float64)
                continue
            total = sum(val[p] for p in pred[name])
            if isinstance(node, nir.IF):
                val[name] = torch.relu(total) if name in relus else total
                acts[name].append(val[name].numpy())
            elif isinstance(node, nir.Output):
                val[name] = total
            else:
                val[name] = apply_linear(name, pos_nodes.get(name, node), total)
    return {k: np.concatenate(v) for k, v in acts.items()}


def _identity_synapse(shape, gain: float):
    if len(shape) == 1:
        return nir.Affine(weight=np.eye(shape[0]) * gain, bias=np.zeros(shape[0]))
    c = shape[0]
    return nir.Conv2d(input_shape=tuple(shape[1:]), weight=np.eye(c).reshape(c, c, 1, 1) * gain,
                      stride=np.array([1, 1]), padding=np.array([0, 0]),
                      dilation=np.array([1, 1]), groups=1, bias=np.zeros(c))


def _normalise(graph: nir.NIRGraph, lam: dict[str, float]) -> None:
    """Scale weights on every path source -> neuron by lambda_src / lambda_dst (in place)."""
    pred, succ = predecessors(graph), successors(graph)
    sources = set(lam)
    neurons = [k for k, n in graph.nodes.items() if isinstance(n, nir.IF)]
    for dst in neurons:
        for p in list(pred[dst]):
            chain, cur = [], p
            while cur not in sources:
                if len(pred[cur]) != 1 or len(succ[cur]) != 1:
                    raise UnsupportedLayerError(cur, type(graph.nodes[cur]).__name__,
                                                SUPPORTED_OPS, "a linear layer whose output "
                                                "feeds several layers cannot be normalised")
                chain.append(cur)
                cur = pred[cur][0]
            src = cur
            weighted = [c for c in chain if isinstance(graph.nodes[c], _WEIGHTED)]
            if not weighted:
                shape = tuple(int(s) for s in graph.nodes[dst].input_type["input"])
                name = f"{dst}.from.{src}"
                graph.nodes[name] = _identity_synapse(shape, lam[src] / lam[dst])
                graph.edges.remove((p, dst))
                graph.edges += [(p, name), (name, dst)]
                continue
            last, first = graph.nodes[weighted[0]], graph.nodes[weighted[-1]]
            first.weight = np.asarray(first.weight, np.float64) * lam[src]
            last.weight = np.asarray(last.weight, np.float64) / lam[dst]
            last.bias = np.asarray(last.bias, np.float64) / lam[dst]


def ann_to_snn(ann: AnnGraph, calibration: np.ndarray | None, time_steps: int,
               percentile: float = 99.9, input_shape=None) -> nir.NIRGraph:
    """Convert a parsed ReLU network to a rate-coded IF NIR graph (module docstring)."""
    if not 0 < percentile <= 100:
        raise InputFileError(f"percentile must be in (0, 100], got {percentile}")
    shape = tuple(int(s) for s in (input_shape or ann.input_shape or ()))
    cal = None
    if calibration is not None:
        cal = np.asarray(calibration, dtype=np.float64)
        if shape and cal.ndim == len(shape) + 2 and tuple(cal.shape[2:]) == shape:
            cal = cal.mean(axis=1)  # [N, T, *shape] event counts -> per-step rates
        shape = shape or tuple(cal.shape[1:])
        if tuple(cal.shape[1:]) != shape:
            raise InputFileError(f"calibration data has shape {cal.shape}; expected [N, "
                                 f"{', '.join(map(str, shape))}]")
    if not shape:
        raise InputFileError("the model does not declare its input shape; pass input_shape "
                             "(--input-shape) or calibration data")
    b = _Builder(ann, shape)
    for op in ann.ops:
        b.op(op)
    out_prods, out_shape = b.tensor.get(ann.output), b.shape.get(ann.output)
    if out_prods is None:
        raise InputFileError(f"the model's output {ann.output!r} is not computed by supported "
                             "layers")
    if len(out_prods) == 1 and out_prods[0] in b.relus:
        readout = out_prods[0]  # the network ends in a ReLU: read its spikes
    else:
        readout = b.add("readout", _if_layer(out_shape), out_prods)
    b.add("output", nir.Output(output_type={"output": np.array(out_shape)}), [readout])
    graph = nir.NIRGraph(nodes=b.nodes, edges=b.edges, metadata={}, type_check=False)
    infer_shapes(graph)
    relus = set(b.relus)
    if cal is not None:
        lam_in = float(cal.max())
        if not lam_in > 0:
            raise InputFileError("calibration data has no positive value")
        acts = _forward(graph, cal, relus)
        lam = {}
        for k, a in acts.items():
            pos = a[a > 0]
            lam[k] = float(np.percentile(pos, percentile)) if pos.size else 1.0
            if not pos.size:
                warnings.warn(f"layer {k!r} is never active on the calibration data",
                              stacklevel=2)
    else:
        lam_in = 1.0
        bounds = _forward(graph, np.ones((1, *shape)), relus, bound=True)
        lam = {k: float(a.max()) if a.max() > 0 else 1.0 for k, a in bounds.items()}
    lam["input"] = lam_in
    _normalise(graph, lam)
    graph.metadata = {"dt": 1.0, "time_steps": int(time_steps), "input_scale": lam_in,
                      "ann_scales": {k: v for k, v in lam.items() if k != "input"},
                      "ann_percentile": float(percentile) if cal is not None else "bound"}
    graph = nir.NIRGraph(nodes=graph.nodes, edges=graph.edges, metadata=graph.metadata,
                         type_check=False)
    infer_shapes(graph)
    validate(graph)
    return graph


def onnx_to_nir(path: str | Path, calibration: np.ndarray | None, time_steps: int,
                percentile: float = 99.9, *, input_shape=None) -> nir.NIRGraph:
    """Convert a ReLU CNN in ONNX to a rate-coded IF SNN as a NIR graph (module docstring)."""
    return ann_to_snn(read_onnx(path), calibration, time_steps, percentile, input_shape)


def torch_program_to_nir(path: str | Path, calibration: np.ndarray | None, time_steps: int,
                         percentile: float = 99.9, *, input_shape=None,
                         trust_pickle: bool = False) -> nir.NIRGraph:
    """Same for a ``torch.export`` program (``.pt2``) or a TorchScript archive (``.pt``)."""
    path = Path(path)
    if is_torchscript(path):
        ann = read_torchscript(path, trust_pickle)
    else:
        ann = read_exported_program(path)
    return ann_to_snn(ann, calibration, time_steps, percentile, input_shape)


def ann_forward(path_or_ann, x: np.ndarray, *, trust_pickle: bool = False) -> np.ndarray:
    """The ANN's output for ``x`` [N, *shape], as our parser understood the model (a check)."""
    ann = path_or_ann if isinstance(path_or_ann, AnnGraph) else (
        read_onnx(path_or_ann) if Path(path_or_ann).suffix.lower() == ".onnx" else
        read_torchscript(path_or_ann, trust_pickle) if is_torchscript(path_or_ann) else
        read_exported_program(path_or_ann))
    b = _Builder(ann, tuple(np.asarray(x).shape[1:]))
    for op in ann.ops:
        b.op(op)
    prods, shape = b.tensor[ann.output], b.shape[ann.output]
    out = b.add("readout", _if_layer(shape), prods)
    b.add("output", nir.Output(output_type={"output": np.array(shape)}), [out])
    g = nir.NIRGraph(nodes=b.nodes, edges=b.edges, metadata={}, type_check=False)
    infer_shapes(g)
    return _forward(g, np.asarray(x, np.float64), set(b.relus))[out]


def encode_rates(x: np.ndarray, time_steps: int, input_scale: float = 1.0,
                 method: str = "regular", seed: int | None = None) -> np.ndarray:
    """Spike trains ``[T, N, *shape]`` (int) with rate ``clip(x / input_scale, 0, 1)``.

    ``"regular"``: deterministic, an integrate-and-fire encoder (a spike whenever the running
    sum of the rate crosses an integer); ``"poisson"``: independent Bernoulli spikes.
    """
    r = np.clip(np.asarray(x, np.float64) / float(input_scale), 0.0, 1.0)
    if method == "poisson":
        rng = np.random.default_rng(seed)
        return (rng.random((time_steps, *r.shape)) < r).astype(np.int64)
    if method != "regular":
        raise ValueError(f"method must be 'regular' or 'poisson', got {method!r}")
    acc = np.floor(np.arange(1, time_steps + 1).reshape(-1, *([1] * r.ndim)) * r + 1e-9)
    return np.diff(acc, axis=0, prepend=0).astype(np.int64)
