"""Per-layer cost: parameters, FLOPs, bytes moved, arithmetic intensity and a roofline time estimate.

FLOPs count a multiply-add as 2. Bytes moved = every input (activations and weights) read once + every
output written once, at its element size: the compulsory traffic, a lower bound that ignores cache reuse.
Roofline time = max(FLOPs / peak_flops, bytes / bandwidth) on a :class:`Hardware` profile.
A node computed from constants only (a weight decode: DequantizeLinear of an initializer, the com.onnxcomp
HuffmanDecode / RunLengthDecode, a Transpose of a weight) costs no FLOPs and no bytes: onnxruntime folds it
at session creation, it never runs per inference.
Per-op knowledge lives in the ``FLOPS`` registry keyed by op type (the com.onnxcomp ops: their op records,
:mod:`onnxcomp.ops`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from onnxcomp.graph import AI_ONNX

if TYPE_CHECKING:
    import onnx

    from onnxcomp.shapes import InputShapes


@dataclasses.dataclass(frozen=True)
class Hardware:
    """A hardware profile: built-in (``HARDWARE``) or a file written by ``onnxcomp hardware probe``
    (onnxcomp.hardware). ``efficiency``: measured fractions of the FMA peak per kernel (onnxcomp.estimator;
    absent keys take the estimator's defaults); ``llc_bytes``: last-level cache size."""

    name: str
    peak_gflops: float
    bandwidth_gbs: float
    efficiency: dict[str, float] = dataclasses.field(default_factory=dict, compare=False, hash=False)
    llc_bytes: int = 32 << 20


HARDWARE = {
    # Measured on this project's machines (docs/design.md): AMD Zen 5, 1 thread, AVX-512.
    "zen5-1t": Hardware("zen5-1t", peak_gflops=250.0, bandwidth_gbs=35.0),
    "zen5-2t": Hardware("zen5-2t", peak_gflops=500.0, bandwidth_gbs=50.0),
    "avx2-1t": Hardware("avx2-1t", peak_gflops=100.0, bandwidth_gbs=20.0),
    # `onnxcomp hardware probe` on the project's AMD EPYC (family 25: Zen 4, one 512-bit FMA per cycle),
    # 1 thread, AVX-512, thread CPU time
    "zen4-1t": Hardware("zen4-1t", peak_gflops=116.0, bandwidth_gbs=26.0, llc_bytes=32 << 20),
}


@dataclasses.dataclass
class LayerCost:
    name: str
    op: str
    out_shape: tuple[Any, ...] | None
    params: int
    flops: int
    bytes: int

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else 0.0

    def seconds(self, hw: Hardware) -> float:
        return max(self.flops / (hw.peak_gflops * 1e9), self.bytes / (hw.bandwidth_gbs * 1e9))

    def bound(self, hw: Hardware) -> str:
        ridge = hw.peak_gflops / hw.bandwidth_gbs
        return "compute" if self.intensity >= ridge else "memory"


_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}

Shape = tuple[int, ...]
FlopFn = Callable[[Any, list[Shape | None], list[Shape | None]], int]
FLOPS: dict[str, FlopFn] = {}


def _registrar(table: dict[str, Any], ops: tuple[str, ...]) -> Callable[[Any], Any]:
    """A decorator that files a function in ``table`` under each op type."""

    def deco(fn: Any) -> Any:
        for op in ops:
            table[op] = fn
        return fn

    return deco


def flops_for(*ops: str) -> Callable[[FlopFn], FlopFn]:
    return _registrar(FLOPS, ops)


def _n(shape: Shape | None) -> int:
    return int(math.prod(shape)) if shape is not None else 0


@flops_for("Conv", "FusedConv")
def _conv(node: Any, ins: list[Shape | None], outs: list[Shape | None]) -> int:
    w, y = ins[1], outs[0]
    if w is None or y is None:
        return 0
    per_out = 2 * _n(w[1:])  # C/group * k... multiply-adds per output element
    bias = _n(y) if len(ins) > 2 and ins[2] is not None else 0
    return _n(y) * per_out + bias


@flops_for("ConvTranspose")
def _convt(node: Any, ins: list[Shape | None], outs: list[Shape | None]) -> int:
    x, w = ins[0], ins[1]
    if x is None or w is None:
        return 0
    return 2 * _n(x) * _n(w[1:])


@flops_for("MatMul", "Gemm")
def _matmul(node: Any, ins: list[Shape | None], outs: list[Shape | None]) -> int:
    a, y = ins[0], outs[0]
    if a is None or y is None:
        return 0
    trans_a = _attr(node, "transA", 0) if node.op_type == "Gemm" else 0
    k = a[-2] if trans_a and len(a) >= 2 else a[-1]
    return 2 * _n(y) * int(k) + (_n(y) if len(ins) > 2 else 0)


@flops_for("BatchNormalization", "InstanceNormalization", "LayerNormalization")
def _norm(node: Any, ins: list[Shape | None], outs: list[Shape | None]) -> int:
    return 2 * _n(outs[0])


@flops_for("MaxPool", "AveragePool")
def _pool(node: Any, ins: list[Shape | None], outs: list[Shape | None]) -> int:
    k = _attr(node, "kernel_shape", [1])
    return _n(outs[0]) * int(math.prod(k))


@flops_for("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax")
def _reduce(node: Any, ins: list[Shape | None], outs: list[Shape | None]) -> int:
    return _n(ins[0])


@flops_for(
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Gelu",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Sum",
    "Erf",
    "Sqrt",
    "Pow",
    "Exp",
    "Softmax",
    "Elu",
    "Selu",
    "Mish",
)
def _elementwise(node: Any, ins: list[Shape | None], outs: list[Shape | None]) -> int:
    return _n(outs[0])


# The fraction of the FMA peak an op reaches (roofline time: FLOPs / (peak x fraction), or bytes / bandwidth),
# keyed by op type; ops not listed reach the peak.
PeakFn = Callable[[Any, list[Shape | None], "Hardware"], float]
PEAK_FRACTION: dict[str, PeakFn] = {}


def peak_fraction_for(*ops: str) -> Callable[[PeakFn], PeakFn]:
    return _registrar(PEAK_FRACTION, ops)


@peak_fraction_for("Conv", "FusedConv")
def _conv_fraction(node: Any, ins: list[Shape | None], hw: Hardware) -> float:
    from onnxcomp.estimator import im2col_efficiency

    w = ins[1] if len(ins) > 1 else None
    if w is None or len(w) < 3:
        return 1.0
    groups = max(1, int(_attr(node, "group", 1)))
    return im2col_efficiency(hw, _n(w[1:]), w[0] // groups)


def roofline_seconds(node: Any, ins: list[Shape | None], outs: list[Shape | None], flops: int, hw: Hardware) -> float:
    """A node's roofline time: max(FLOPs / (peak x its op's PEAK_FRACTION), bytes / bandwidth), bytes = every
    input and output once at 4 bytes per element (e.g. a depthwise convolution: K = kh kw inputs per output, far
    from the peak; an activation: memory-bound)."""
    frac = PEAK_FRACTION.get(node.op_type)
    peak = hw.peak_gflops * 1e9 * (frac(node, ins, hw) if frac is not None else 1.0)
    nbytes = 4 * (sum(_n(s) for s in ins) + sum(_n(s) for s in outs))
    return max(flops / peak if flops else 0.0, nbytes / (hw.bandwidth_gbs * 1e9))


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


# ops whose output is not a function of their inputs: never constant-folded
NOT_FOLDED = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)


def analyze(model: onnx.ModelProto) -> list[LayerCost]:
    """Cost of every top-level node of a shape-inferred model (value_info must hold the shapes).

    Nodes computed from constants only are folded at load time: 0 FLOPs and 0 bytes moved per inference.
    """
    shapes: dict[str, tuple[Shape | None, int]] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            shapes.setdefault(vi.name, (None, tt.elem_type))
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        shape = tuple(dims) if all(d is not None for d in dims) else None
        if vi.name not in shapes or shapes[vi.name][0] is None:
            shapes[vi.name] = (shape, tt.elem_type)
    inits = {}
    for t in model.graph.initializer:
        shapes[t.name] = (tuple(t.dims), t.data_type)
        inits[t.name] = t
    for node in model.graph.node:  # weights held in Constant nodes (Paddle, spox) count as parameters too
        t = _constant_tensor(node)
        if t is not None and node.output and node.output[0] not in inits:
            shapes[node.output[0]] = (tuple(t.dims), t.data_type)
            inits[node.output[0]] = t
    folded = set(inits)  # tensors known at load time: initializers and the outputs of folded nodes
    out = []
    for node in model.graph.node:
        outs = [shapes.get(o, (None, 1))[0] for o in node.output]
        params = sum(_n(tuple(inits[i].dims)) for i in node.input if i in inits)
        # an If/Loop/Scan node holds the weights of its bodies (their FLOPs depend on the branch and trip count)
        params += sum(_n(tuple(t.dims)) for g in _bodies(node) for t in weight_tensors(g))
        flops = nbytes = 0
        if node.op_type not in NOT_FOLDED and all(not i or i in folded for i in node.input):
            folded.update(o for o in node.output if o)  # computed once, at session creation
        else:
            for name in [*node.input, *node.output]:
                if not name:
                    continue
                shape, et = shapes.get(name, (None, 1))
                if name in inits:
                    nbytes += _init_bytes(inits[name])
                elif shape is not None:
                    nbytes += _n(shape) * _ITEMSIZE.get(et, 4)
            fn = _flop_fn(node)
            ins = [shapes.get(i, (None, 1))[0] if i else None for i in node.input]
            try:
                flops = fn(node, ins, outs) if fn else 0
            except (TypeError, ValueError, IndexError):
                flops = 0
        out.append(
            LayerCost(
                node.name or node.output[0], node.op_type, outs[0] if outs else None, params, int(flops), int(nbytes)
            )
        )
    return out


def node_count(graph: onnx.GraphProto) -> int:
    """Nodes of the graph and of its If/Loop/Scan bodies (nested ones included)."""
    return sum(1 + sum(node_count(g) for g in _bodies(n)) for n in graph.node)


def _bodies(node: Any) -> list[onnx.GraphProto]:
    """The graphs of a node's GRAPH / GRAPHS attributes (If branches, Loop and Scan bodies)."""
    return [g for a in node.attribute for g in ([a.g] if a.type == 5 else list(a.graphs) if a.type == 10 else [])]


def _constant_tensor(node: Any) -> onnx.TensorProto | None:
    """The tensor of a standard Constant node's ``value`` attribute, else None."""
    if node.op_type != "Constant" or node.domain not in AI_ONNX:
        return None
    return next((a.t for a in node.attribute if a.name == "value" and a.type == 4), None)  # TENSOR


def _flop_fn(node: onnx.NodeProto) -> FlopFn | None:
    """The FLOP count of a node: the registry for standard ops, the op record for com.onnxcomp ops."""
    from onnxcomp import ops

    if node.domain == ops.DOMAIN:
        spec = ops.OPS.get(node.op_type)
        if spec is None or spec.flops is None:
            return None
        count = spec.flops
        return lambda n, ins, outs: count(ops.node_attributes(n), ins, outs)
    return FLOPS.get(node.op_type)


def weight_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers and Constant-node tensors (exporters such as Paddle's and spox store weights in Constant
    nodes), those inside If/Loop/Scan bodies included."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.type == 4 and node.op_type == "Constant" and node.domain in AI_ONNX:  # TENSOR
                yield a.t
            elif a.type == 5:  # GRAPH
                yield from weight_tensors(a.g)
            elif a.type == 10:  # GRAPHS
                for g in a.graphs:
                    yield from weight_tensors(g)


def _init_bytes(t: onnx.TensorProto) -> int:
    """Stored bytes of an initializer (from dims and type: reading raw_data would copy it)."""
    size = _ITEMSIZE.get(t.data_type)
    if size is None:
        return len(t.raw_data) if t.raw_data else _n(tuple(t.dims)) * 4
    return _n(tuple(t.dims)) * size


@dataclasses.dataclass
class ModelCost:
    """Totals of a model. ``flops`` and ``bytes`` are None when the input shapes are not known (dynamic dims
    nothing sized): they are never computed on made-up dims."""

    params: int
    flops: int | None
    bytes: int | None
    weight_bytes: int
    nodes: int

    def to_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)


def concrete(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> onnx.ModelProto:
    """Weightless copy (initializers keep names, types and dims, not data) with the inputs' dims set from
    ``input_shapes`` and shapes inferred: everything :func:`analyze` and :func:`summarize` read.

    Dims ``input_shapes`` does not give stay dynamic (their layers' FLOPs are then unknown): size them with
    :func:`onnxcomp.shapes.resolve` first, or use :func:`model_cost`.
    """
    from onnxcomp.io import infer_shapes, weightless

    m = weightless(model)
    del m.graph.value_info[:]
    shapes = input_shapes or {}
    for vi in m.graph.input:
        fixed = shapes.get(vi.name)
        if fixed is None:
            continue
        dims = vi.type.tensor_type.shape.dim
        del dims[:]
        for v in fixed:
            dims.add().dim_value = int(v)
    return infer_shapes(m)


def summarize(model: onnx.ModelProto) -> ModelCost:
    """Totals of a shape-inferred model with static input shapes (see :func:`concrete`, :func:`model_cost`)."""
    layers = analyze(model)
    weights = list(weight_tensors(model.graph))
    weight_bytes = sum(_init_bytes(t) for t in weights)
    params = sum(_n(tuple(t.dims)) for t in weights)
    return ModelCost(
        params, sum(c.flops for c in layers), sum(c.bytes for c in layers), weight_bytes, node_count(model.graph)
    )


def model_cost(model: onnx.ModelProto, plan: InputShapes) -> ModelCost:
    """Totals at the plan's cost shapes; FLOPs and bytes None when the plan has unsized dims."""
    if plan.complete:
        return summarize(concrete(model, plan.cost_shapes()))
    weights = list(weight_tensors(model.graph))
    return ModelCost(
        sum(_n(tuple(t.dims)) for t in weights),
        None,
        None,
        sum(_init_bytes(t) for t in weights),
        node_count(model.graph),
    )
