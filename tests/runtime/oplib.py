"""Reference encoders and one-node model builders for the com.onnxcomp ops (test helper).

Each builder returns a ModelProto with a single com.onnxcomp node and a model-local function of the
same name whose body computes the op with standard ONNX ops (opset 18), following the op contract.
Without the runtime, onnxruntime inlines that body; with it, the native kernel runs. Self-contained
on purpose: it is the reference the runtime tests are checked against.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DOMAIN = "com.onnxcomp"
OPSET = 18
_I64 = TensorProto.INT64


# ---------------------------------------------------------------------------------------- encoders
def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Packs integer codes [R, n] little-endian at `bits` bits into uint8 [R, ceil(n*bits/8)]."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim == 1:
        return pack_bits(codes[None, :], bits)[0]
    r, n = codes.shape
    stream = ((codes[..., None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(r, n * bits)
    nbytes = (n * bits + 7) // 8
    stream = np.pad(stream, ((0, 0), (0, nbytes * 8 - n * bits)))
    return np.packbits(stream, axis=1, bitorder="little").reshape(r, nbytes)


def unpack_bits(packed: np.ndarray, n: int, bits: int) -> np.ndarray:
    packed = np.asarray(packed, dtype=np.uint8)
    r = packed.shape[0]
    stream = np.unpackbits(packed, axis=1, bitorder="little")[:, : n * bits].reshape(r, n, bits)
    return (stream.astype(np.int64) << np.arange(bits)).sum(-1)


def group_of(n: int, group_size: int) -> np.ndarray:
    return np.arange(n) // group_size


def decode_codebook(codebook: np.ndarray, codes: np.ndarray, group_size: int) -> np.ndarray:
    """W[r, j] = codebook[group(j), codes[r, j]] for column groups (matmul weights [K, N])."""
    g = group_of(codes.shape[1], group_size)
    return codebook[g[None, :], codes].astype(np.float32)


def encode_sparse(codes: np.ndarray, index_bits: int):
    """EIE layout of a [K, N] code matrix whose zero entries (code 0) are absent.

    Returns row_ptr int32 [K+1], deltas (ints), entry codes (ints); filler entries (code 0) are
    inserted where a gap exceeds 2^index_bits - 1.
    """
    k_rows, _ = codes.shape
    max_gap = (1 << index_bits) - 1
    row_ptr = [0]
    deltas: list[int] = []
    ecodes: list[int] = []
    for k in range(k_rows):
        p = -1
        for col in np.nonzero(codes[k])[0]:
            gap = int(col) - p - 1
            while gap > max_gap:
                deltas.append(max_gap)
                ecodes.append(0)
                p += max_gap + 1
                gap = int(col) - p - 1
            deltas.append(gap)
            ecodes.append(int(codes[k, col]))
            p = int(col)
        row_ptr.append(len(deltas))
    return np.array(row_ptr, np.int32), np.array(deltas, np.int64), np.array(ecodes, np.int64)


def decode_sparse(codebook, row_ptr, deltas, ecodes, n, group_size):
    k_rows = len(row_ptr) - 1
    w = np.zeros((k_rows, n), np.float32)
    for k in range(k_rows):
        p = -1
        for e in range(row_ptr[k], row_ptr[k + 1]):
            p += int(deltas[e]) + 1
            w[k, p] = codebook[p // group_size, ecodes[e]]
    return w


# ------------------------------------------------------------------------------- body building
class _Body:
    """Accumulates function-body nodes with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self._n = 0

    def tmp(self, stem: str) -> str:
        self._n += 1
        return f"_{stem}{self._n}"

    def op(self, op_type: str, inputs: list[str], stem: str = "t", **attrs) -> str:
        out = self.tmp(stem)
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def const(self, value: np.ndarray, stem: str = "c") -> str:
        out = self.tmp(stem)
        self.nodes.append(helper.make_node("Constant", [], [out], value=numpy_helper.from_array(np.asarray(value))))
        return out

    def unpack(self, packed: str, rows: int, n: int, bits: int) -> str:
        """uint8 [rows, ceil(n*bits/8)] -> int64 codes [rows, n] (generic bit expansion)."""
        nbytes = (n * bits + 7) // 8
        x = self.op("Unsqueeze", [packed, self.const(np.array([2], np.int64))])
        x = self.op("BitShift", [x, self.const(np.arange(8, dtype=np.uint8))], direction="RIGHT")
        x = self.op("BitwiseAnd", [x, self.const(np.array(1, np.uint8))])
        x = self.op("Reshape", [x, self.const(np.array([rows, nbytes * 8], np.int64))])
        x = self.op(
            "Slice",
            [
                x,
                self.const(np.array([0], np.int64)),
                self.const(np.array([n * bits], np.int64)),
                self.const(np.array([1], np.int64)),
            ],
        )
        x = self.op("Reshape", [x, self.const(np.array([rows, n, bits], np.int64))])
        x = self.op("Cast", [x], to=_I64)
        x = self.op("Mul", [x, self.const((1 << np.arange(bits)).astype(np.int64))])
        return self.op("ReduceSum", [x, self.const(np.array([-1], np.int64))], keepdims=0)

    def lookup(self, codebook: str, codes: str, col_groups: np.ndarray, entries: int) -> str:
        """codebook [G, C] gathered at (group(col), code) for int64 codes [..., ncols]."""
        # a float16 codebook (OPS.md "Codebook type") decodes to its float32 values
        flat = self.op(
            "Reshape", [self.op("Cast", [codebook], to=TensorProto.FLOAT), self.const(np.array([-1], np.int64))]
        )
        idx = self.op("Add", [codes, self.const((col_groups * entries).astype(np.int64))])
        return self.op("Gather", [flat, idx], axis=0)


def _model(node_inputs, node_attrs, op_type, inits, graph_inputs, body: _Body, fn_inputs, out_shape, name):
    fn = helper.make_function(
        DOMAIN,
        op_type,
        fn_inputs,
        ["Y"],
        body.nodes,
        opset_imports=[helper.make_opsetid("", OPSET)],
        attributes=sorted(node_attrs),
    )
    node = helper.make_node(op_type, node_inputs, ["Y"], domain=DOMAIN, name=name, **node_attrs)
    graph = helper.make_graph(
        [node],
        "g",
        graph_inputs,
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)], functions=[fn]
    )
    model.ir_version = 10
    return model


def _split_inputs(tensors: dict, as_inputs: set[str], x_shape):
    """Weights become initializers unless named in as_inputs (then graph inputs, i.e. not constant)."""
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    inits = {}
    for k, v in tensors.items():
        if k in as_inputs:
            graph_inputs.append(
                helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype), list(v.shape))
            )
        else:
            inits[k] = v
    return inits, graph_inputs


def _bias_and_out(body: _Body, y: str, has_bias: bool) -> None:
    if has_bias:
        y = body.op("Add", [y, "B"])
    body.nodes.append(helper.make_node("Identity", [y], ["Y"]))


# --------------------------------------------------------------------------------------- builders
def codebook_matmul(
    x_shape, codebook, codes, *, bits, n, group_size=None, bias=None, attrs=None, as_inputs=(), name="cbmm"
):
    """One CodebookMatMul node. codes: packed uint8 [K, ceil(n*bits/8)]."""
    k = codes.shape[0]
    gs = group_size or n
    node_attrs = {"bits": bits, "N": n}
    if group_size is not None:
        node_attrs["group_size"] = group_size
    node_attrs.update(attrs or {})
    body = _Body()
    idx = body.unpack("codes", k, n, bits)
    w = body.lookup("codebook", idx, group_of(n, gs), codebook.shape[1])
    _bias_and_out(body, body.op("MatMul", ["X", w]), bias is not None)
    tensors = {"codebook": codebook, "codes": codes}
    if bias is not None:
        tensors["B"] = bias
    inits, ginputs = _split_inputs(tensors, set(as_inputs), list(x_shape))
    names = ["X", "codebook", "codes"] + (["B"] if bias is not None else [])
    return _model(names, node_attrs, "CodebookMatMul", inits, ginputs, body, names, None, name)


def ternary_matmul(x_shape, scales, codes, *, n, group_size=None, bias=None, attrs=None, as_inputs=(), name="tmm"):
    k = codes.shape[0]
    gs = group_size or n
    node_attrs = {"N": n}
    if group_size is not None:
        node_attrs["group_size"] = group_size
    node_attrs.update(attrs or {})
    body = _Body()
    ap = body.op(
        "Slice",
        [
            "scales",
            body.const(np.array([0], np.int64)),
            body.const(np.array([1], np.int64)),
            body.const(np.array([1], np.int64)),
        ],
    )
    an = body.op(
        "Slice",
        [
            "scales",
            body.const(np.array([1], np.int64)),
            body.const(np.array([2], np.int64)),
            body.const(np.array([1], np.int64)),
        ],
    )
    zero = body.op("Mul", [ap, body.const(np.array(0.0, np.float32))])
    cb = body.op("Concat", [zero, ap, body.op("Neg", [an]), zero], axis=1)
    idx = body.unpack("codes", k, n, 2)
    w = body.lookup(cb, idx, group_of(n, gs), 4)
    _bias_and_out(body, body.op("MatMul", ["X", w]), bias is not None)
    tensors = {"scales": scales, "codes": codes}
    if bias is not None:
        tensors["B"] = bias
    inits, ginputs = _split_inputs(tensors, set(as_inputs), list(x_shape))
    names = ["X", "scales", "codes"] + (["B"] if bias is not None else [])
    return _model(names, node_attrs, "TernaryMatMul", inits, ginputs, body, names, None, name)


def codebook_conv(
    x_shape,
    codebook,
    codes,
    *,
    bits,
    weight_shape,
    group_size=None,
    bias=None,
    strides=None,
    pads=None,
    dilations=None,
    group=1,
    attrs=None,
    as_inputs=(),
    name="cbconv",
):
    m = weight_shape[0]
    ckk = int(np.prod(weight_shape[1:]))
    gs = group_size or m
    s = len(weight_shape) - 2
    conv_attrs = {
        "kernel_shape": list(weight_shape[2:]),
        "strides": list(strides or [1] * s),
        "pads": list(pads or [0] * (2 * s)),
        "dilations": list(dilations or [1] * s),
        "group": group,
    }
    node_attrs = {"bits": bits, "weight_shape": list(weight_shape), **conv_attrs}
    if group_size is not None:
        node_attrs["group_size"] = group_size
    node_attrs.update(attrs or {})
    body = _Body()
    idx = body.unpack("codes", m, ckk, bits)  # [M, CKK]
    # group over rows (output channels): offsets per row
    flat = body.op(
        "Reshape", [body.op("Cast", ["codebook"], to=TensorProto.FLOAT), body.const(np.array([-1], np.int64))]
    )
    offs = (group_of(m, gs) * codebook.shape[1]).astype(np.int64)[:, None]
    w = body.op("Gather", [flat, body.op("Add", [idx, body.const(offs)])], axis=0)
    w = body.op("Reshape", [w, body.const(np.array(weight_shape, np.int64))])
    conv_in = ["X", w] + (["B"] if bias is not None else [])
    body.nodes.append(helper.make_node("Conv", conv_in, ["Y"], **conv_attrs))
    tensors = {"codebook": codebook, "codes": codes}
    if bias is not None:
        tensors["B"] = bias
    inits, ginputs = _split_inputs(tensors, set(as_inputs), list(x_shape))
    names = ["X", "codebook", "codes"] + (["B"] if bias is not None else [])
    return _model(names, node_attrs, "CodebookConv", inits, ginputs, body, names, None, name)


def sparse_codebook_matmul(
    x_shape,
    codebook,
    row_ptr,
    deltas,
    codes,
    *,
    bits,
    index_bits,
    n,
    group_size=None,
    bias=None,
    attrs=None,
    as_inputs=(),
    name="spmm",
):
    """deltas / codes: packed uint8 flat rows (E entries each)."""
    k = len(row_ptr) - 1
    e = int(row_ptr[-1])
    gs = group_size or n
    node_attrs = {"bits": bits, "index_bits": index_bits, "N": n}
    if group_size is not None:
        node_attrs["group_size"] = group_size
    node_attrs.update(attrs or {})
    body = _Body()
    c = lambda v: body.const(np.asarray(v, np.int64))  # noqa: E731
    d = body.unpack(body.op("Reshape", ["deltas", c([1, -1])]), 1, e, index_bits)
    d = body.op("Reshape", [d, c([-1])])  # int64 [E]
    ec = body.unpack(body.op("Reshape", ["codes", c([1, -1])]), 1, e, bits)
    ec = body.op("Reshape", [ec, c([-1])])
    rp = body.op("Cast", ["row_ptr"], to=_I64)
    # row of each entry: cumulative count of row starts at or before it
    marks = body.op(
        "ScatterElements",
        [
            body.const(np.zeros(e + 1, np.int64)),
            body.op("Slice", [rp, c([1]), c([k]), c([0])]),
            body.const(np.ones(max(k - 1, 0), np.int64)),
        ],
        axis=0,
        reduction="add",
    )
    row = body.op("Slice", [body.op("CumSum", [marks, c(0)]), c([0]), c([e]), c([0])])
    steps = body.op("Add", [d, c(1)])
    excl = body.op("CumSum", [steps, c(0)], exclusive=1)
    start = body.op("Gather", [rp, row], axis=0)
    base = body.op("Gather", [body.op("Concat", [excl, c([0])], axis=0), start], axis=0)
    pos = body.op("Add", [body.op("Sub", [excl, base]), d])
    grp = body.op("Div", [pos, c(gs)])
    flat_cb = body.op("Reshape", [body.op("Cast", ["codebook"], to=TensorProto.FLOAT), c([-1])])
    vals = body.op("Gather", [flat_cb, body.op("Add", [body.op("Mul", [grp, c(codebook.shape[1])]), ec])], axis=0)
    widx = body.op("Add", [body.op("Mul", [row, c(n)]), pos])
    wflat = body.op("ScatterElements", [body.const(np.zeros(k * n, np.float32)), widx, vals], axis=0)
    w = body.op("Reshape", [wflat, c([k, n])])
    _bias_and_out(body, body.op("MatMul", ["X", w]), bias is not None)
    tensors = {"codebook": codebook, "row_ptr": row_ptr, "deltas": deltas, "codes": codes}
    if bias is not None:
        tensors["B"] = bias
    inits, ginputs = _split_inputs(tensors, set(as_inputs), list(x_shape))
    names = ["X", "codebook", "row_ptr", "deltas", "codes"] + (["B"] if bias is not None else [])
    return _model(names, node_attrs, "SparseCodebookMatMul", inits, ginputs, body, names, None, name)


# ----------------------------------------------------------------------------- random problems
def random_codebook_problem(rng, k, n, bits, group_size=None, entries=None):
    gs = group_size or n
    g = -(-n // gs)
    e = entries or (1 << bits)
    codebook = rng.standard_normal((g, e)).astype(np.float32)
    codes = rng.integers(0, e, size=(k, n))
    return codebook, codes, pack_bits(codes, bits)


def random_sparse_problem(rng, k, n, bits, index_bits, density, group_size=None):
    gs = group_size or n
    g = -(-n // gs)
    codebook = rng.standard_normal((g, 1 << bits)).astype(np.float32)
    codebook[:, 0] = 0.0
    dense_codes = rng.integers(1, 1 << bits, size=(k, n)) if bits > 0 else None
    mask = rng.random((k, n)) < density
    dense_codes = np.where(mask, dense_codes, 0)
    row_ptr, deltas, ecodes = encode_sparse(dense_codes, index_bits)
    return codebook, row_ptr, deltas, ecodes, pack_bits(deltas, index_bits), pack_bits(ecodes, bits)


def winograd_conv(
    x_shape,
    w,
    *,
    bias=None,
    pads=(0, 0, 0, 0),
    tile=4,
    leaky_alpha=None,
    clip=None,
    attrs=None,
    as_inputs=(),
    name="wconv",
):
    """One WinogradConv node; its body is Conv(X, W, B) -> LeakyRelu(leaky_alpha) -> Clip(clip) (each optional)."""
    node_attrs = {"pads": list(pads), "tile": tile, "kernel_shape": [3, 3]}
    if leaky_alpha is not None:
        node_attrs["leaky_alpha"] = float(leaky_alpha)
    if clip is not None:
        node_attrs["clip_min"], node_attrs["clip_max"] = float(clip[0]), float(clip[1])
    node_attrs.update(attrs or {})
    body = _Body()
    conv_in = ["X", "W"] + (["B"] if bias is not None else [])
    y = body.op("Conv", conv_in, pads=list(pads))
    if leaky_alpha is not None:
        y = body.op("LeakyRelu", [y], alpha=float(leaky_alpha))
    if clip is not None:
        lo, hi = (body.const(np.array(v, np.float32)) for v in clip)
        y = body.op("Clip", [y, lo, hi])
    body.nodes.append(helper.make_node("Identity", [y], ["Y"]))
    tensors = {"W": w}
    if bias is not None:
        tensors["B"] = bias
    inits, ginputs = _split_inputs(tensors, set(as_inputs), list(x_shape))
    return _model(conv_in, node_attrs, "WinogradConv", inits, ginputs, body, conv_in, None, name)
