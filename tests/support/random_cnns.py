"""Random CNN graphs for the pruning property tests, and the exactness oracle's helpers.

``random_cnn(draw)`` (a hypothesis composite) stacks random blocks: Conv-BN-activation, residual Add,
Concat of branches, channel Split + Concat (C2f-like), depthwise and grouped convolutions, squeeze-excitation
(conv or Gemm form), per-channel Mul/Add, pooling, Pad, Resize; then a head: GAP/Flatten/Reshape into
Gemm or MatMul, or a 1x1 conv output, sometimes with a second graph output.

``zero_channels(model, ratio)`` makes a share of every group's channels contribute nothing (zero filters,
BN gamma and consumer weights); ``zero_consumers(graph, plan, removed)`` sets to zero the consumer weights
that read the channels about to be removed: after that, removing them must not change any output (the
exactness oracle).
"""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnxcomp.passes.prune import choose

from onnxcomp.analysis.channels import PRODUCER, analyze_channels
from onnxcomp.graph import const_value, export_model, import_model
from onnxcomp.io import normalize

ACTS = ("relu", "silu", "hardswish", "leakyrelu", "sigmoid", "clip", "prelu", "tanh", "none")


class Net:
    """Tiny graph builder: every tensor is named after its node, shapes are tracked by hand."""

    def __init__(self, seed: int, opset: int = 17) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.opset = opset
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}{self.n}"

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], base: str | None = None, n_out: int = 1, **attrs) -> str | list[str]:
        name = self.name(base or op_type.lower())
        outs = [name] if n_out == 1 else [f"{name}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x: str, cin: int, cout: int, k: int = 3, group: int = 1, bias: bool = False, stride: int = 1) -> str:
        fan_in = cin // group * k * k
        w = (self.rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(fan_in)).astype(np.float32)
        ins = [x, self.const("w", w)]
        if bias:
            ins.append(self.const("b", self.rng.standard_normal(cout).astype(np.float32) * 0.1))
        return self.op(
            "Conv", ins, "conv", kernel_shape=[k, k], pads=[k // 2] * 4, group=group, strides=[stride, stride]
        )

    def bn(self, x: str, c: int) -> str:
        r = self.rng
        params = [r.uniform(0.5, 1.5, c), r.normal(0, 0.1, c), r.normal(0, 0.1, c), r.uniform(0.5, 2.0, c)]
        consts = [self.const("bn", p.astype(np.float32)) for p in params]
        return self.op("BatchNormalization", [x, *consts], "bn")

    def act(self, x: str, kind: str, c: int) -> str:
        if kind == "relu":
            return self.op("Relu", [x])
        if kind == "silu":
            return self.op("Mul", [x, self.op("Sigmoid", [x])], "silu")
        if kind == "hardswish":
            if self.opset < 14:  # HardSwish is opset 14: x * HardSigmoid(x) before
                return self.op("Mul", [x, self.op("HardSigmoid", [x], alpha=1 / 6, beta=0.5)], "hswish")
            return self.op("HardSwish", [x])
        if kind == "leakyrelu":
            return self.op("LeakyRelu", [x], alpha=0.1)
        if kind == "sigmoid":
            return self.op("Sigmoid", [x])
        if kind == "tanh":
            return self.op("Tanh", [x])
        if kind == "clip":
            lo = self.const("lo", np.array(0.0, np.float32))
            hi = self.const("hi", np.array(6.0, np.float32))
            return self.op("Clip", [x, lo, hi])
        if kind == "prelu":
            slope = self.rng.uniform(0.05, 0.3, (c, 1, 1)).astype(np.float32)
            return self.op("PRelu", [x, self.const("slope", slope)])
        return x

    def model(self, inp: onnx.ValueInfoProto, outputs: list[str]) -> onnx.ModelProto:
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        graph = helper.make_graph(self.nodes, "random_cnn", [inp], outs, initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model)
        return model


BLOCKS = (
    "conv",
    "residual",
    "concat",
    "split",
    "dw",
    "grouped",
    "se",
    "se_gemm",
    "affine",
    "pool",
    "pad",
    "resize",
    "sum3",
    "slice",
    "transpose",
    "deconv",
)


@st.composite
def random_cnn(draw: st.DrawFn, max_blocks: int = 5, opsets: tuple[int, ...] = (11, 13, 17, 18)) -> onnx.ModelProto:
    seed = draw(st.integers(0, 2**16))
    net = Net(seed, draw(st.sampled_from(opsets)))
    h = draw(st.sampled_from([5, 7]))
    w = draw(st.sampled_from([5, 6, 7]))
    c = draw(st.integers(2, 5))
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, h, w])
    c1 = draw(st.integers(4, 10))
    x = net.conv("input", c, c1, 3, bias=draw(st.booleans()))
    c = c1
    x = net.act(net.bn(x, c), draw(st.sampled_from(ACTS)), c)
    resized = False
    for kind in draw(st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=max_blocks)):
        act = draw(st.sampled_from(ACTS))
        if kind == "conv":
            cout = draw(st.integers(2, 12))
            x = net.act(
                net.bn(net.conv(x, c, cout, draw(st.sampled_from([1, 3])), bias=draw(st.booleans())), cout), act, cout
            )
            c = cout
        elif kind == "residual":
            mid = draw(st.integers(2, 10))
            y = net.act(net.bn(net.conv(x, c, mid, 3), mid), act, mid)
            y = net.bn(net.conv(y, mid, c, draw(st.sampled_from([1, 3]))), c)
            added = net.op("Add", [x, y] if draw(st.booleans()) else [y, x])
            x = net.act(added, draw(st.sampled_from(ACTS)), c)
        elif kind == "concat":
            a_c, b_c = draw(st.integers(1, 6)), draw(st.integers(1, 6))
            a = net.act(net.conv(x, c, a_c, 1, bias=True), act, a_c)
            b = net.act(net.bn(net.conv(x, c, b_c, 3), b_c), act, b_c)
            parts = [a, b] + ([x] if draw(st.booleans()) else [])
            x = net.op("Concat", parts, axis=1)
            c = a_c + b_c + (c if len(parts) == 3 else 0)
        elif kind == "split" and c >= 2:
            first = draw(st.integers(1, c - 1))
            if net.opset >= 13:
                sizes = net.const("sizes", np.array([first, c - first], np.int64))
                p0, p1 = net.op("Split", [x, sizes], n_out=2, axis=1)
            else:
                p0, p1 = net.op("Split", [x], n_out=2, axis=1, split=[first, c - first])
            y = net.act(net.bn(net.conv(p1, c - first, c - first, 3), c - first), act, c - first)
            if draw(st.booleans()):
                y = net.op("Add", [p1, y])
            x = net.op("Concat", [p0, y, p1] if draw(st.booleans()) else [p0, y], axis=1)
            c = c + (c - first if len(net.nodes[-1].input) == 3 else 0)
        elif kind == "dw":
            mult = draw(st.sampled_from([1, 1, 2]))
            y = net.conv(x, c, c * mult, 3, group=c, bias=draw(st.booleans()))
            x = net.act(net.bn(y, c * mult), act, c * mult)
            c = c * mult
        elif kind == "grouped":
            divisors = [g for g in range(2, c + 1) if c % g == 0]
            if divisors:
                g = draw(st.sampled_from(divisors))
                cout = g * draw(st.integers(1, 3))
                x = net.act(net.bn(net.conv(x, c, cout, 3, group=g), cout), act, cout)
                c = cout
        elif kind == "se":
            r = draw(st.integers(1, 4))
            s = net.op("GlobalAveragePool", [x])
            s = net.op("Relu", [net.conv(s, c, r, 1, bias=True)])
            s = net.op("Sigmoid", [net.conv(s, r, c, 1, bias=True)])
            x = net.op("Mul", [x, s], "se")
        elif kind == "se_gemm":
            r = draw(st.integers(1, 4))
            if net.opset >= 18:
                mean = net.op("ReduceMean", [x, net.const("axes", np.array([2, 3], np.int64))], keepdims=0)
            else:
                mean = net.op("ReduceMean", [x], axes=[2, 3], keepdims=0)
            s = net.op("Flatten", [mean], axis=1)
            w1 = net.const("fc", net.rng.standard_normal((r, c)).astype(np.float32))
            s = net.op("Relu", [net.op("Gemm", [s, w1, net.const("fcb", np.zeros(r, np.float32))], transB=1)])
            w2 = net.const("fc", net.rng.standard_normal((r, c)).astype(np.float32))
            s = net.op("HardSigmoid", [net.op("Gemm", [s, w2])])
            shape = net.const("shape", np.array([0, c, 1, 1], np.int64))
            x = net.op("Mul", [net.op("Reshape", [s, shape]), x], "se")
        elif kind == "affine":
            scale = net.const("scale", net.rng.uniform(0.5, 1.5, (c, 1, 1)).astype(np.float32))
            shift = net.const("shift", net.rng.normal(0, 0.1, (1, c, 1, 1)).astype(np.float32))
            x = net.op("Add", [net.op("Mul", [scale, x]), shift])
        elif kind == "pool":
            if draw(st.booleans()):
                x = net.op("MaxPool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
            else:
                x = net.op("AveragePool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)
        elif kind == "pad":
            pads = net.const("pads", np.array([0, 0, 1, 0, 0, 0, 0, 1], np.int64))
            x = net.op("Pad", [x, pads])
            h, w = h + 1, w + 1
        elif kind == "resize" and not resized:
            resized = True
            scales = net.const("scales", np.array([1, 1, 2, 2], np.float32))
            roi = "" if net.opset >= 13 else net.const("roi", np.zeros(0, np.float32))
            x = net.op("Resize", [x, roi, scales], mode="nearest")
            h, w = 2 * h, 2 * w
        elif kind == "sum3":
            y = net.bn(net.conv(x, c, c, 1), c)
            x = net.op("Sum", [x, y, net.op("Relu", [y])])
        elif kind == "slice" and c >= 2:
            lo = draw(st.integers(0, c - 1))
            hi = draw(st.integers(lo + 1, c))
            bounds = [net.const("b", np.array([v], np.int64)) for v in (lo, hi if hi < c else 2**62, 1)]
            y = net.op("Slice", [x, *bounds])
            y = net.act(net.conv(y, hi - lo, 3, 3, bias=True), act, 3)
            x = net.op("Concat", [y, x], axis=1)
            c = c + 3
        elif kind == "transpose":
            t = net.op("Transpose", [x], perm=[0, 2, 3, 1])
            t = net.op("Mul", [t, net.const("scale", net.rng.uniform(0.5, 1.5, c).astype(np.float32))])
            x = net.op("Transpose", [t], perm=[0, 3, 1, 2])
        elif kind == "deconv":
            cout = draw(st.integers(2, 8))
            wt = (net.rng.standard_normal((c, cout, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
            x = net.op(
                "ConvTranspose",
                [x, net.const("wt", wt), net.const("bt", np.zeros(cout, np.float32))],
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
            )
            x = net.act(net.bn(x, cout), act, cout)
            c = cout
    outputs = []
    head = draw(st.sampled_from(["gap_gemm", "flatten_gemm", "reshape_matmul", "conv"]))
    if head == "gap_gemm":
        f = net.op("Flatten", [net.op("GlobalAveragePool", [x])], axis=1)
        wt = net.const("fc", net.rng.standard_normal((3, c)).astype(np.float32))
        outputs.append(net.op("Gemm", [f, wt, net.const("fcb", np.zeros(3, np.float32))], transB=1))
    elif head == "flatten_gemm":
        pooled = net.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        hp, wp = h // 2, w // 2
        f = net.op("Flatten", [pooled], axis=1)
        wt = net.const("fc", (net.rng.standard_normal((c * hp * wp, 4)) / np.sqrt(c * hp * wp)).astype("f4"))
        outputs.append(net.op("Gemm", [f, wt]))
    elif head == "reshape_matmul":
        pooled = net.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
        hp, wp = h // 2, w // 2
        shape = net.const("shape", np.array([-1, c * hp * wp], np.int64))
        f = net.op("Reshape", [pooled, shape])
        wt = net.const("fc", (net.rng.standard_normal((c * hp * wp, 4)) / np.sqrt(c * hp * wp)).astype("f4"))
        outputs.append(net.op("Add", [net.op("MatMul", [f, wt]), net.const("fcb", np.ones(4, np.float32))]))
    else:
        outputs.append(net.conv(x, c, 2, 1, bias=True))
    if draw(st.booleans()):
        outputs.append(net.op("Relu", [x], "aux"))  # a second output: that stream cannot change
    return net.model(inp, outputs)


def zero_consumers(plan, removed: np.ndarray) -> int:
    """Zero every consumer weight reading a channel in ``removed``; returns how many slices were zeroed."""
    n = 0
    for m in plan.members:
        if m.role != "consumer":
            continue
        gone = ~plan.keep(m.elems, removed)
        if not gone.any():
            continue
        w = const_value(m.node.inputs[m.input]).copy()
        if m.kind == "param":
            index = [slice(None)] * w.ndim
            index[m.axis] = np.nonzero(gone)[0]
            w[tuple(index)] = 0
        elif m.kind == "grouped_in":
            groups = int(m.info["groups"])
            per = len(m.elems) // groups
            rows = w.shape[0] // groups
            for c in np.nonzero(gone)[0]:
                q, local = divmod(int(c), per)
                w[q * rows : (q + 1) * rows, local] = 0
        m.node.inputs[m.input].values = w
        n += int(gone.sum())
    return n


def zero_channels(model: onnx.ModelProto, ratio: float, seed: int = 0) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` in which ``ratio`` of every prunable group's channels contribute nothing and score
    lowest under every criterion: zero filters (L1/L2), zero BN gamma (bn), zero consumer weights."""
    graph = import_model(normalize(model))
    plan = analyze_channels(graph)
    rng = np.random.default_rng(seed)
    removed = np.zeros(plan.n_channels, dtype=bool)
    for g in plan.groups:
        if g.prunable:
            removed[g.offset : g.offset + g.size] = choose(g, rng.random(g.size), round(ratio * g.size))
    for m in plan.members:
        if m.role == PRODUCER or (m.node.op == "BatchNormalization" and m.input == 1):
            gone = ~plan.keep(m.elems, removed)
            t = m.node.inputs[m.input]
            values = const_value(t).copy()
            index = [slice(None)] * values.ndim
            index[m.axis] = np.nonzero(gone)[0]
            values[tuple(index)] = 0
            t.values = values
    zero_consumers(plan, removed)
    graph.cleanup().toposort()
    return export_model(graph), int(removed.sum())
