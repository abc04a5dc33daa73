"""Model building for pass tests: a small onnx.helper builder and hypothesis strategies for random graphs.

``Builder`` writes models by hand in unit tests. ``models()`` is a hypothesis strategy producing random
CNN-style graphs (Conv/ConvTranspose/BatchNormalization/activations/per-channel Mul-Add/Concat/residual Add,
no-op Identity/Dropout/Reshape/Transpose pairs, then a 2-D head with Gemm/MatMul/BatchNormalization) with odd
channel counts and spatial sizes, at opsets 7..17 (opset-dependent signatures of Dropout, Clip, Squeeze,
BatchNormalization handled), sometimes with an intermediate tensor as an extra graph output.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

OPSETS = (7, 9, 11, 13, 17)
IR_FOR_OPSET = {7: 3, 8: 3, 9: 4, 10: 5, 11: 6, 12: 7, 13: 7, 14: 7, 15: 8, 16: 8, 17: 8}


class Builder:
    """Append-only model builder: ``b.node("Conv", [x, w], kernel_shape=[3, 3])`` returns the output name."""

    def __init__(self, opset: int = 17, seed: int = 0) -> None:
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.functions: list[onnx.FunctionProto] = []
        self.domains: dict[str, int] = {}
        self._n = 0

    def fresh(self, base: str = "t") -> str:
        self._n += 1
        return f"{base}{self._n}"

    def input(self, name: str, shape: list[Any], dtype: int = TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def const(self, value: Any, name: str | None = None, dtype: Any = np.float32) -> str:
        name = name or self.fresh("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def weight(self, shape: tuple[int, ...], scale: float | None = None, name: str | None = None) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        return self.const(self.rng.standard_normal(shape) * scale, name)

    def node(
        self,
        op: str,
        inputs: list[str],
        n_out: int = 1,
        name: str | None = None,
        domain: str = "",
        outputs: list[str] | None = None,
        **attrs: Any,
    ) -> Any:
        outs = outputs or [self.fresh(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name or self.fresh(f"{op}_"), domain=domain, **attrs))
        return outs[0] if len(outs) == 1 else outs

    def output(self, name: str, shape: list[Any] | None = None, dtype: int = TensorProto.FLOAT) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, dtype, shape))

    # -- layers used by many tests
    def conv(self, x: str, cin: int, cout: int, k: int = 3, bias: bool = True, group: int = 1, **attrs: Any) -> str:
        w = self.weight((cout, cin // group, k, k))
        ins = [x, w] + ([self.const(self.rng.standard_normal(cout) * 0.1)] if bias else [])
        return self.node("Conv", ins, kernel_shape=[k, k], group=group, **attrs)

    def bn(self, x: str, c: int, eps: float = 1e-5, **attrs: Any) -> str:
        r = self.rng
        params = [
            self.const(r.uniform(0.5, 1.5, c)),  # gamma
            self.const(r.standard_normal(c) * 0.2),  # beta
            self.const(r.standard_normal(c) * 0.2),  # mean
            self.const(r.uniform(0.5, 2.0, c)),  # var
        ]
        if self.opset < 9:
            attrs.setdefault("spatial", 1)
        return self.node("BatchNormalization", [x, *params], epsilon=eps, **attrs)

    def model(self) -> onnx.ModelProto:
        inputs = list(self.inputs)
        ir = IR_FOR_OPSET.get(self.opset, 8)
        if ir < 4:  # IR 3: initializers are listed as graph inputs too
            inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in self.inits]
        g = helper.make_graph(self.nodes, "g", inputs, self.outputs, self.inits)
        ops = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, v) for d, v in self.domains.items()]
        m = helper.make_model(g, opset_imports=ops, functions=self.functions)
        m.ir_version = ir
        return m


# ---------------------------------------------------------------------------------------- random graphs
@dataclasses.dataclass
class _State:
    b: Builder
    x: str
    shape: list[int]  # [N, C, H, W] or [N, F]
    pool: list[tuple[str, tuple[int, ...]]]  # earlier tensors for residual adds


ODD = (1, 3, 5, 7)


def _conv(d: _Draw, s: _State) -> None:
    n, c, h, w = s.shape
    cout = d.draw(st.sampled_from(ODD), label="cout")
    k = d.draw(st.sampled_from((1, 3)), label="k")
    pad = d.draw(st.sampled_from((0, k // 2)), label="pad")
    group = c if (cout == c and c > 1 and d.draw(st.booleans(), label="depthwise")) else 1
    if h + 2 * pad < k or w + 2 * pad < k:
        pad = k // 2
    s.x = s.b.conv(s.x, c, cout, k=k, bias=d.draw(st.booleans(), label="bias"), group=group, pads=[pad] * 4)
    s.shape = [n, cout, h + 2 * pad - k + 1, w + 2 * pad - k + 1]


def _convt(d: _Draw, s: _State) -> None:
    n, c, h, w = s.shape
    group = d.draw(st.sampled_from((c, 1)), label="group")
    cog = d.draw(st.sampled_from((1, 2, 3)), label="cout/group")
    wt = s.b.weight((c, cog, 2, 2))
    ins = [s.x, wt] + ([s.b.const(s.b.rng.standard_normal(cog * group))] if d.draw(st.booleans()) else [])
    s.x = s.b.node("ConvTranspose", ins, kernel_shape=[2, 2], group=group, strides=[1, 1])
    s.shape = [n, cog * group, h + 1, w + 1]


def _bn(d: _Draw, s: _State) -> None:
    s.x = s.b.bn(s.x, s.shape[1])


def _act(d: _Draw, s: _State) -> None:
    b = s.b
    op = d.draw(st.sampled_from(("Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "Clip")), label="act")
    if op == "LeakyRelu":
        s.x = b.node(op, [s.x], alpha=0.1)
    elif op == "HardSigmoid":
        s.x = b.node(op, [s.x], alpha=0.3, beta=0.4)
    elif op == "Clip":
        lo, hi = -0.5, 0.7
        s.x = b.node(op, [s.x], min=lo, max=hi) if b.opset < 11 else b.node(op, [s.x, b.const(lo), b.const(hi)])
    else:
        s.x = b.node(op, [s.x])


def _affine(d: _Draw, s: _State) -> None:
    b = s.b
    c = s.shape[1]
    rank = len(s.shape)
    kinds = ("chan", "chan4", "scalar") + (("spatial",) if rank == 4 else ())
    kind = d.draw(st.sampled_from(kinds), label="const shape")
    if rank == 2:
        shape = {"chan": (c,), "chan4": (1, c), "scalar": ()}[kind]
    else:
        shape = {"chan": (c, 1, 1), "chan4": (1, c, 1, 1), "scalar": (), "spatial": (1, 1, 1, s.shape[3])}[kind]
    op = d.draw(st.sampled_from(("Mul", "Add", "Sub", "Div")), label="op")
    value = b.rng.uniform(0.5, 1.5, shape) * b.rng.choice([-1, 1], shape)
    ins = [s.x, b.const(value)]
    if op in ("Mul", "Add", "Sub") and d.draw(st.booleans(), label="const first"):
        ins.reverse()
    s.x = b.node(op, ins)


def _noop(d: _Draw, s: _State) -> None:
    b = s.b
    kind = d.draw(st.sampled_from(("identity", "dropout", "reshape", "transpose_pair", "squeeze_pair")), label="noop")
    if kind == "identity":
        s.x = b.node("Identity", [s.x])
    elif kind == "dropout":
        if b.opset < 12:
            s.x = b.node("Dropout", [s.x], ratio=0.3)
        else:
            s.x = b.node("Dropout", [s.x, b.const(0.3), b.const(False, dtype=np.bool_)])
    elif kind == "reshape":
        s.x = b.node("Reshape", [s.x, b.const(list(s.shape), dtype=np.int64)])
    elif kind == "transpose_pair":
        perm = list(range(len(s.shape)))
        perm = perm[:1] + perm[1:][::-1]
        inv = [perm.index(i) for i in range(len(perm))]
        s.x = b.node("Transpose", [b.node("Transpose", [s.x], perm=perm)], perm=inv)
    else:
        axis = len(s.shape)
        if b.opset < 13:
            s.x = b.node("Squeeze", [b.node("Unsqueeze", [s.x], axes=[axis])], axes=[axis])
        else:
            ax = b.const([axis], dtype=np.int64)
            s.x = b.node("Squeeze", [b.node("Unsqueeze", [s.x, ax]), ax])


def _residual(d: _Draw, s: _State) -> None:
    same = [t for t, shp in s.pool if list(shp) == s.shape and t != s.x]
    if same:
        s.x = s.b.node("Add", [s.x, d.draw(st.sampled_from(same), label="residual")])
    else:
        s.x = s.b.node("Relu", [s.x])


def _concat(d: _Draw, s: _State) -> None:
    n, c, h, w = s.shape
    other = s.b.conv(s.x, c, 3, k=1)
    s.x = s.b.node("Concat", [s.x, other], axis=1)
    s.shape = [n, c + 3, h, w]


def _gemm(d: _Draw, s: _State) -> None:
    b = s.b
    n, f = s.shape
    out = d.draw(st.sampled_from((3, 5, 7)), label="features")
    trans_b = d.draw(st.booleans(), label="transB")
    w = b.weight((out, f) if trans_b else (f, out), scale=1 / np.sqrt(f))
    cshape = d.draw(st.sampled_from(("none", "scalar", "vec", "row", "full")), label="C")
    if cshape == "none" and b.opset < 11:
        cshape = "vec"
    cval = {"scalar": (), "vec": (out,), "row": (1, out), "full": (n, out)}.get(cshape)
    ins = [s.x, w] + ([b.const(b.rng.standard_normal(cval))] if cval is not None else [])
    s.x = b.node("Gemm", ins, transB=int(trans_b), alpha=0.7, beta=1.3)
    s.shape = [n, out]


def _matmul(d: _Draw, s: _State) -> None:
    b = s.b
    n, f = s.shape
    out = d.draw(st.sampled_from((3, 5, 7)), label="features")
    s.x = b.node("MatMul", [s.x, b.weight((f, out))])
    if d.draw(st.booleans(), label="bias"):
        s.x = b.node("Add", [s.x, b.const(b.rng.standard_normal(out))])
    s.shape = [n, out]


def _hardswish(d: _Draw, s: _State) -> None:
    """x * Clip(x + 3, 0, 6) / 6 as exporters below opset 14 write it (either order of the Mul by x and the
    scaling, Div by 6 or Mul by 1/6); sometimes Clip(., 0, 5), which is not a HardSwish."""
    b = s.b
    x = s.x
    hi = d.draw(st.sampled_from((6.0, 6.0, 6.0, 5.0)), label="clip max")
    a = b.node("Add", [x, b.const(np.float32(3.0))])
    clip = b.node("Clip", [a], min=0.0, max=hi) if b.opset < 11 else b.node("Clip", [a, b.const(0.0), b.const(hi)])

    def scaled(t: str) -> str:
        if d.draw(st.booleans(), label="div"):
            return b.node("Div", [t, b.const(np.float32(6.0))])
        return b.node("Mul", [b.const(np.float32(1.0 / 6.0)), t])

    if d.draw(st.booleans(), label="mul first"):
        s.x = scaled(b.node("Mul", [x, clip]))
    else:
        s.x = b.node("Mul", [scaled(clip), x])


CONV_BLOCKS = {
    "conv": _conv,
    "conv_bn": lambda d, s: (_conv(d, s), _bn(d, s)),
    "convt": _convt,
    "convt_affine": lambda d, s: (_convt(d, s), _bn(d, s) if d.draw(st.booleans()) else _affine(d, s)),
    "bn": _bn,
    "act": _act,
    "affine": _affine,
    "noop": _noop,
    "residual": _residual,
    "concat": _concat,
    "hardswish": _hardswish,
}
FC_BLOCKS = {"gemm": _gemm, "matmul": _matmul, "bn": _bn, "affine": _affine, "act": _act, "identity": _noop}


class _Draw:
    """``d.draw(strategy, label=...)`` inside a composite strategy (labels document the choices)."""

    def __init__(self, draw: Any) -> None:
        self._draw = draw

    def draw(self, strategy: Any, label: str | None = None) -> Any:
        return self._draw(strategy)


@st.composite
def models(draw: Any, opsets: tuple[int, ...] = OPSETS) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A random model and a feed for it."""
    d = _Draw(draw)
    opset = d.draw(st.sampled_from(opsets), label="opset")
    seed = d.draw(st.integers(0, 2**16), label="seed")
    b = Builder(opset, seed)
    n = d.draw(st.sampled_from((1, 3)), label="batch")
    shape = [
        n,
        d.draw(st.sampled_from((1, 3, 5)), label="C"),
        d.draw(st.sampled_from((5, 7)), label="H"),
        d.draw(st.sampled_from((5, 9)), label="W"),
    ]
    x = b.input("x", list(shape))
    s = _State(b, x, list(shape), [(x, tuple(shape))])
    extra: list[tuple[str, list[int]]] = []
    for _ in range(d.draw(st.integers(2, 8), label="conv blocks")):
        block = d.draw(st.sampled_from(sorted(CONV_BLOCKS)), label="block")
        CONV_BLOCKS[block](d, s)
        s.pool.append((s.x, tuple(s.shape)))
        if d.draw(st.integers(0, 9), label="extra output") == 0 and s.x != x:
            extra.append((s.x, list(s.shape)))
    if d.draw(st.booleans(), label="fc head"):
        s.x = b.node("GlobalAveragePool", [s.x])
        s.x = b.node("Flatten", [s.x], axis=1)
        s.shape = [s.shape[0], s.shape[1]]
        for _ in range(d.draw(st.integers(1, 3), label="fc blocks")):
            FC_BLOCKS[d.draw(st.sampled_from(sorted(FC_BLOCKS)), label="fc block")](d, s)
    b.output(s.x, list(s.shape))
    for name, shp in extra:
        if name != s.x and all(o.name != name for o in b.outputs):
            b.output(name, shp)
    feeds = {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}
    return b.model(), feeds
