"""Emitting an encoded weight as its com.onnxcomp node: the encoding, the storage format, the byte accounting.

An :class:`Encoded` weight (codes into per-group tables) is written in one of the formats of ``FORMATS``, keyed
by name: ``conv`` (CodebookConv, ternary included), ``ternary`` (TernaryMatMul), ``sparse`` (SparseCodebookMatMul,
the EIE layout, when it stores fewer bytes) or ``dense`` (CodebookMatMul).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from onnxcomp import ops
from onnxcomp.analysis.weights import SelectOptions, Target, collect_targets
from onnxcomp.passes_api import opt

from .huffman import HUFFMAN_MIN_GAIN, huffman_form

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.passes_api import PassContext, PassResult


@dataclasses.dataclass
class ShareOptions(SelectOptions):
    """Options of the passes that emit com.onnxcomp ops."""

    huffman: Literal["report", "store"] = opt(
        "report",
        "report: report the Huffman-coded size per layer; store: also write the code bytes "
        "Huffman-coded on disk (a HuffmanDecode op that onnxruntime folds at load time)",
    )
    inline: bool = opt(
        False,
        "write only standard ONNX ops (function bodies inlined) for runtimes without model-local function support",
    )
    calib_samples: int = opt(256, "calibration samples used for activation statistics")
    codebook_dtype: Literal["auto", "float32", "float16", "int8"] = opt(
        "auto",
        "element type of the stored codebooks: float16 halves their bytes (a 4-bit per-channel codebook of a "
        "128-input layer: 2 instead of 4 bits per weight); int8 stores each codebook row as int8 entries times "
        "one float16 scale (coremltools' int8 LUT; 1.1 bits per weight there), computed in the model by a Cast "
        "and a Mul, rounded so that each row's weights keep their sum, for k-means codebooks of several rows "
        "(per-channel, grouped, block) and 5 bits or fewer (others, pow2, binary and ternary keep float entries); "
        "auto = int8 for those where that stores fewer bytes and adds at most 1% to the layer's "
        "squared weight error, else float16 where every codebook row rounds to float16 within 2^-10 of its "
        "largest magnitude (and none exceeds 65504), else float32. The reported "
        "errors and sizes are those of the stored values",
    )


class EmitsOps:
    """Mixin of the passes that write com.onnxcomp ops (``class KMeans(EmitsOps, Pass)``): the ops' function
    bodies need ai.onnx >= ops.MIN_OPSET. The precondition: when the pass has something to write
    (:meth:`emits`), an older graph is upgraded (onnx.version_converter, outputs checked equal), or the pass is
    skipped with the reason it cannot be. Their layers with float16 weights are written by :func:`emit_weight`."""

    def emits(self, graph: gs.Graph, ctx: PassContext) -> bool:
        """Whether the pass has layers to write: weight targets under its selection options."""
        from onnxcomp.passes_api import PassResult

        probe = PassResult(name="probe")
        return bool(collect_targets(graph, self.options, probe, half=True))  # type: ignore[attr-defined]

    def requires(self, graph: gs.Graph, ctx: PassContext, result: PassResult) -> str | None:
        from onnxcomp.graph import opset_version

        reason = super().requires(graph, ctx, result)  # type: ignore[misc]
        if reason is not None or opset_version(graph) >= ops.MIN_OPSET or not self.emits(graph, ctx):
            return reason
        return ops.raise_opset(graph, ctx, result)


def saves_bytes(t: Target, e: Encoded) -> bool:
    """Table plus packed codes smaller than the float32 weight (ternary convolutions store [G, 4] tables); a
    float16 weight: the codebook and codes as _half writes them, smaller than its float16 bytes."""
    if t.half:
        from ._half import stored_bytes

        return stored_bytes(t, e) < 2 * t.params
    rows, cols = t.w2.shape
    table = e.entry_bytes * e.table.shape[0] * 4 if e.ternary and t.kind == "conv" else e.table_bytes
    return table + rows * ops.packed_row_bytes(cols, e.bits) < 4 * t.params


FP16_MAX = 65504.0  # the largest finite float16
FP16_ROW_TOLERANCE = 2.0**-10  # auto: a row's float16 rounding error bound, relative to its largest magnitude


def codebook_dtype(table: np.ndarray, option: str) -> str:
    """The element type a codebook [rows, entries] is stored as under ``option`` (ShareOptions.codebook_dtype).

    # auto: float16 iff for every row r, max_i |c_ri - fp16(c_ri)| <= 2^-10 * max_i |c_ri|, and every |c| <= 65504
    (a row of tiny values that float16 flushes towards zero, or a value past its range, keeps float32).
    """
    import numpy as np

    if option != "auto":
        return option
    c = np.asarray(table, np.float64)
    if c.size == 0:
        return "float16"
    c = c.reshape(c.shape[0], -1) if c.ndim else c.reshape(1, 1)  # one row per codebook group
    if not np.isfinite(c).all() or float(np.abs(c).max()) > FP16_MAX:
        return "float32"
    err = np.abs(c - c.astype(np.float16).astype(np.float64)).max(axis=1)
    return "float16" if bool((err <= FP16_ROW_TOLERANCE * np.abs(c).max(axis=1)).all()) else "float32"


FP16_MIN_NORMAL = 2.0**-14


def scaled_dtype(table: np.ndarray, scales: np.ndarray, option: str) -> str:
    """The element type of a scaled codebook's values and channel scales (one for both): under auto, float16 where
    the codebook passes ``codebook_dtype``'s rule and every nonzero scale is a normal float16 (relative rounding
    below 2^-11; near-dead channels' tiny scales keep float32)."""
    import numpy as np

    dtype = codebook_dtype(table, option)
    if option != "auto" or dtype != "float16":
        return dtype
    a = np.abs(np.asarray(scales, np.float64))
    a = a[a != 0]
    ok = bool(np.isfinite(a).all()) and (a.size == 0 or (a.min() >= FP16_MIN_NORMAL and a.max() <= FP16_MAX))
    return "float16" if ok else "float32"


# int8 entries only for codebooks of at most 2^5 entries: a 256-entry codebook on the int8 grid is a uniform int8
# quantizer (codebook-dtype=int8 on every codebook took the layout detector's 8-bit layers there: 0.000 boxes)
INT8_MAX_BITS = 5
INT8_MAX_ADDED = 0.01  # auto: int8 entries may add at most 1% to the layer's squared weight error (5% let through
# tables that cost the text detector's compensated 4-bit model its mask IoU, 0.954 -> 0.911)


@dataclasses.dataclass(frozen=True)
class Int8Rows:
    """A codebook [rows, entries] as int8 entries and one scale per row."""

    q: np.ndarray  # int8 [rows, entries]
    scales: np.ndarray  # float32 [rows]: float16 values where ``scale_dtype`` is float16
    scale_dtype: str
    values: np.ndarray  # float32 [rows, entries]: scales[r] * q[r], the table the model computes


def int8_rows(table: np.ndarray, counts: np.ndarray | None = None) -> Int8Rows | None:
    """The int8 form of a codebook, or None where a value or a scale is not a finite nonzero float32.

    # s_r = max_i |c_ri| / 127 (float16 where every s_r is a normal float16, else float32; an all-zero row: 1)
    # q_ri = clip(round(c_ri / s_r), -127, 127);  T_ri = s_r * q_ri  in float32, as the model's Mul computes it
    ``counts`` [rows, entries] (the weights decoding to each entry): rounding that keeps each row's weight sum,
    see _balanced.
    """
    import numpy as np

    c = np.asarray(table, np.float64).reshape(np.shape(table)[0], -1)
    if not np.isfinite(c).all():
        return None
    m = np.abs(c).max(axis=1) if c.size else np.zeros(c.shape[0])
    s = np.where(m > 0, m / 127.0, 1.0)
    normal = bool(((s >= FP16_MIN_NORMAL) & (s <= FP16_MAX)).all())
    scale_dtype = "float16" if normal else "float32"
    s32 = s.astype(np.float16).astype(np.float32) if normal else s.astype(np.float32)
    if not (np.isfinite(s32).all() and (s32 > 0).all()):
        return None  # a scale past float32's range
    q = np.clip(np.rint(c / s32[:, None].astype(np.float64)), -127, 127)
    if counts is not None:
        for r in range(q.shape[0]):
            q[r] = _balanced(c[r], float(s32[r]), q[r], np.asarray(counts[r], np.float64))
    q = q.astype(np.int8)
    values = s32[:, None] * q.astype(np.float32)
    return Int8Rows(q, s32, scale_dtype, values.reshape(np.shape(table)).astype(np.float32))


def _balanced(c: np.ndarray, s: float, q: np.ndarray, n: np.ndarray) -> np.ndarray:
    """One row's int8 entries, rounded so that the row's weights keep their sum: an entry's rounding error moves
    every weight decoding to it alike, which the next layer sees as a shift of its input's mean (GPTQ's
    compensation does not know of it; on the layout detector, nearest rounding of its per-channel codebooks
    raised the output error from 0.041 to 0.063).

    # D = sum_i n_i (s q_i - c_i) -> ~0: greedily move entries to their other neighbour (q_i - sign(D)), the
    # least added squared error n_i ((d_i - sign(D) s)^2 - d_i^2) per unit of |D| removed first, while |D| falls
    """
    import numpy as np

    q = q.copy()
    d = q * s - c
    total = float((n * d).sum())
    while total != 0.0:
        sign = 1.0 if total > 0 else -1.0
        after = total - sign * s * n
        ok = (n > 0) & (d * sign > 0) & (np.abs(q - sign) <= 127) & (np.abs(after) < abs(total))
        if not ok.any():
            break
        gain = abs(total) - np.abs(after)
        cost = np.where(ok, n * ((d - sign * s) ** 2 - d**2) / np.where(ok, gain, 1.0), np.inf)
        i = int(np.argmin(cost))
        q[i] -= sign
        d[i] -= sign * s
        total = float(after[i])
    return q


def entry_counts(e: Encoded, out_axis: int) -> np.ndarray:
    """[rows, entries]: how many weights decode to each codebook entry."""
    import numpy as np

    index = np.arange(e.table.size, dtype=np.float64).reshape(e.table.shape)  # exact in float32 below 2^24
    flat = ops.decode_codebook(index, e.codes, e.group_size, out_axis, e.block_size)
    return np.bincount(np.asarray(flat, np.int64).ravel(), minlength=e.table.size).reshape(e.table.shape)


def int8_choice(t: Target | None, e: Encoded, option: str, int8: bool = True) -> Int8Rows | None:
    """The int8 form a codebook is stored as under ``option`` (ShareOptions.codebook_dtype), or None: its entries
    stay float (float16 / float32 by codebook_dtype).

    int8 only for a weight's plain k-means codebooks of several rows (per channel, grouped, blocks: one row saves
    a few bytes, and a layer's codebook spans all its channels' scales, which int8 steps blur) of at most
    2^INT8_MAX_BITS entries (``int8``; not pow2, binary or ternary tables, whose values are their point, scaled
    codebooks or Gather tables), and under auto only where int8 stores fewer bytes and
    # ||W - W_int8||^2 <= (1 + INT8_MAX_ADDED) * ||W - W_float||^2
    (W_float: the weights decoded from the float16 / float32 table auto would store otherwise).
    """
    import numpy as np

    if not int8 or option not in ("auto", "int8") or t is None or e.ternary or e.scales is not None:
        return None
    if e.bits > INT8_MAX_BITS or np.shape(e.table)[0] < 2:
        return None
    rows = int8_rows(e.table, entry_counts(e, t.out_axis))
    if rows is None or option == "int8":
        return rows
    floating = codebook_dtype(e.table, "auto")
    scale_bytes = 2 if rows.scale_dtype == "float16" else 4
    float_bytes = 2 if floating == "float16" else 4
    if rows.q.size + scale_bytes * rows.q.shape[0] >= float_bytes * rows.q.size:
        return None
    alt = np.asarray(e.table, np.float16 if floating == "float16" else np.float32).astype(np.float32)
    w = np.asarray(t.w2, np.float64)

    def err(table: np.ndarray) -> float:
        w_hat = ops.decode_codebook(table, e.codes, e.group_size, t.out_axis, e.block_size)
        return float(np.square(w - np.asarray(w_hat, np.float64)).sum())

    return rows if err(rows.values) <= (1.0 + INT8_MAX_ADDED) * err(alt) else None


def store_table(t: Target | None, e: Encoded, option: str, int8: bool = True) -> Encoded:
    """``e`` with its table rounded to the element type it will be stored as (``e.table_dtype``): the values the
    model decodes, so the errors a pass reports, and any later fit, are those of the stored codebook. TernaryMatMul
    scales (a ternary MatMul: ``t.kind`` "matmul") stay float32; ``t`` None: a Gather table; ``int8``: whether
    int8 entries may be stored (k-means codebooks; see int8_choice)."""
    import numpy as np

    if e.ternary and (t is None or t.kind != "conv"):
        e.table_dtype, e.row_scales = "float32", None
        return e
    if e.scales is not None:
        e.row_scales = None
        e.table_dtype = scaled_dtype(e.table, e.scales, option)
        if e.table_dtype == "float16":
            e.table = np.asarray(e.table, np.float16).astype(np.float32)
            e.scales = np.asarray(e.scales, np.float16).astype(np.float32)
        return e
    if e.stored_int8():
        return e  # stored already (the rounding is idempotent only through its scales)
    rows = int8_choice(t, e, option, int8)
    if rows is not None:
        e.table_dtype = "int8"
        e.table, e.row_scales, e.row_scale_dtype = rows.values, rows.scales, rows.scale_dtype
        return e
    e.row_scales = None
    e.table_dtype = codebook_dtype(e.table, "auto" if option == "int8" else option)
    if e.table_dtype == "float16":
        e.table = np.asarray(e.table, np.float16).astype(np.float32)
    return e


@dataclasses.dataclass
class Encoded:
    """A weight as codes into per-group tables (codebook [G, 2**bits], or ternary scales [G, 2])."""

    table: np.ndarray
    codes: np.ndarray  # int64, shape of the storage matrix
    bits: int
    group_size: int
    ternary: bool = False
    zero_code: bool = False  # code 0 decodes to exactly 0.0 in every group (sparse layout possible)
    # input features per codebook block (0: none): table row = (output // group_size) * nblocks + input // block_size
    block_size: int = 0
    # the element type the table is written as ("float16": its values are float16 values, see store_table)
    table_dtype: str = "float32"
    # scaled codebooks: [outputs], output channel j decodes scales[j] * table[0, code] (one codebook
    # [1, 2**bits] for the layer, no blocks), stored in ``table_dtype`` as the codebook; the model computes the
    # per-channel table [outputs, 2**bits] in float32 with one Mul (``effective``), so the file stores the
    # codebook and the scales only
    scales: np.ndarray | None = None
    # int8 tables (``table_dtype`` "int8"): row r decodes row_scales[r] * q[r] with int8 entries q (``table`` holds
    # these float32 products), the scales stored as ``row_scale_dtype``
    row_scales: np.ndarray | None = None
    row_scale_dtype: str = "float16"

    @property
    def entry_bytes(self) -> int:
        """Stored bytes per table entry."""
        return {"int8": 1, "float16": 2}.get(self.table_dtype, 4)

    @property
    def table_bytes(self) -> int:
        """Stored bytes of the table (and of the channel scales of a scaled codebook, the row scales of an int8
        one)."""
        scales = 0 if self.scales is None else int(self.scales.size)
        rows = (
            0
            if self.row_scales is None
            else int(self.row_scales.size) * (2 if self.row_scale_dtype == "float16" else 4)
        )
        return self.entry_bytes * (int(self.table.size) + scales) + rows

    def stored_int8(self) -> bool:
        """An int8 table whose values are still its row scales times int8 entries (a refit table is not)."""
        import numpy as np

        if self.table_dtype != "int8" or self.row_scales is None:
            return False
        s = np.asarray(self.row_scales, np.float32).reshape(-1, *([1] * (np.ndim(self.table) - 1)))
        q = np.rint(np.asarray(self.table, np.float64) / s)
        return bool(np.abs(q).max(initial=0) <= 127 and np.array_equal(s * q.astype(np.float32), self.table))

    def effective(self) -> Encoded:
        """The encoding as the com.onnxcomp op reads it: a scaled codebook as its per-channel table, else
        itself."""
        import numpy as np

        if self.scales is None:
            return self
        # T[j, l] = s_j * c_l  (float32, as the model's Mul computes it)
        s = np.asarray(self.scales, np.float32)[:, None]
        table = s * np.asarray(self.table, np.float32).reshape(1, -1)
        return dataclasses.replace(self, table=table, group_size=1, scales=None, table_dtype="float32")

    def decoded(self, out_axis: int) -> np.ndarray:
        import numpy as np

        e = self.effective()
        table = ops.ternary_lut(e.table) if e.ternary else e.table
        w = ops.decode_codebook(table, e.codes, e.group_size, out_axis, e.block_size)
        return np.asarray(w, np.float32)

    def block_attrs(self) -> dict[str, int]:
        """The ops' ``block_size`` attribute, only for block codebooks (other models keep their bytes)."""
        return {"block_size": self.block_size} if self.block_size else {}


@dataclasses.dataclass
class Emitted:
    format: str
    bytes_before: int
    bytes_packed: int
    bytes_huffman: int
    bytes_stored: int  # packed: the Huffman store (huffman=store) is decided for all layers in finish()
    node: str  # the com.onnxcomp node written


@dataclasses.dataclass(frozen=True)
class Format:
    """How a storage format is written: its op, node-name suffix, table, attributes and extra inputs."""

    op_type: str
    suffix: str
    attrs: Callable[[Target, Encoded, ops.SparseRows | None], dict[str, Any]]
    describe: Callable[[ops.SparseRows | None], str]  # the report's "format"
    table_name: str = "codebook"
    table: Callable[[Encoded], np.ndarray] = lambda e: e.table
    # inputs between the table and the codes (SparseCodebookMatMul's row pointers)
    extra_inputs: Callable[[gs.Graph, str, ops.SparseRows | None], list[Any]] = lambda graph, w_name, layout: []


def _row_ptr(graph: gs.Graph, w_name: str, layout: ops.SparseRows | None) -> list[Any]:
    from onnxcomp.graph import make_constant

    assert layout is not None
    return [make_constant(graph, f"{w_name}_row_ptr", layout.row_ptr)]


FORMATS: dict[str, Format] = {
    # ternary convolutions are CodebookConv with codebook rows [0, a_p, -a_n, 0]
    "conv": Format(
        "CodebookConv",
        "codebook",
        lambda t, e, _: {
            "bits": 2 if e.ternary else e.bits,
            "group_size": e.group_size,
            "weight_shape": list(t.weight_shape),
            **t.conv_attrs,
            **e.block_attrs(),
        },
        lambda _: "conv",
        table=lambda e: ops.ternary_lut(e.table) if e.ternary else e.table,
    ),
    "ternary": Format(
        "TernaryMatMul",
        "ternary",
        lambda t, e, _: {"N": t.outputs, "group_size": e.group_size},
        lambda _: "ternary",
        table_name="scales",
    ),
    "sparse": Format(
        "SparseCodebookMatMul",
        "sparse",
        lambda t, e, s: {"bits": e.bits, "index_bits": s.index_bits, "N": t.outputs, "group_size": e.group_size},
        lambda s: f"sparse(index_bits={s.index_bits}, fillers={s.fillers})",
        extra_inputs=_row_ptr,
    ),
    "dense": Format(
        "CodebookMatMul",
        "codebook",
        lambda t, e, _: {"bits": e.bits, "N": t.outputs, "group_size": e.group_size, **e.block_attrs()},
        lambda _: "dense",
    ),
}


def format_name(t: Target, e: Encoded, layout: ops.SparseRows | None) -> str:
    """The storage format of an encoded layer (``layout``: the EIE rows when that layout was chosen)."""
    if t.kind == "conv":
        return "conv"
    return "ternary" if e.ternary else "sparse" if layout is not None else "dense"


def emit_weight(
    graph: gs.Graph,
    ctx: PassContext,
    t: Target,
    e: Encoded,
    result: PassResult,
    *,
    pass_name: str,
    sparse: Literal["auto", "never", "always"] = "never",
    huffman: str = "report",
) -> Emitted | None:
    """:func:`emit_encoded` for a float32 weight; a float16 weight (``t.half``) is decoded in front of its layer
    instead (passes/share/_half.py: dense codes, whatever ``sparse`` and ``huffman`` say), or skipped with the
    reason (None) where that cannot be written."""
    if not t.half:
        return emit_encoded(graph, ctx, t, e, pass_name=pass_name, sparse=sparse, huffman=huffman)
    from . import _half

    why = _half.why_not(t, e)
    if why is not None:
        result.skip(t.name, why)
        return None
    return _half.emit_half(graph, ctx, t, e, pass_name)


def emit_encoded(
    graph: gs.Graph,
    ctx: PassContext,
    t: Target,
    e: Encoded,
    *,
    pass_name: str,
    sparse: Literal["auto", "never", "always"] = "never",
    huffman: str = "report",
) -> Emitted:
    """Replace the target by the com.onnxcomp node of its encoding; returns the byte accounting."""
    import numpy as np

    from onnxcomp.graph import make_constant

    w_name = t.weight.name
    bias_bytes = 0 if t.bias is None else 4 * t.bias.size
    before = 4 * t.params + bias_bytes
    layout, streams = _layout(t, e, sparse, huffman)
    fmt = FORMATS[format_name(t, e, layout)]
    if e.scales is not None:
        # T [outputs, 2**bits] = Mul(scales [outputs, 1], codebook [1, 2**bits])
        table = _table_product(
            graph,
            t,
            f"{w_name}_{fmt.table_name}",
            (e.scales.reshape(-1, 1), e.table_dtype),
            (e.table.reshape(1, -1), e.table_dtype),
        )
        table_bytes = e.table_bytes
        e = e.effective()
    elif e.table_dtype == "int8":
        assert e.row_scales is not None
        # T [rows, entries] = Mul(row scales [rows, 1], int8 entries [rows, entries])
        q = np.rint(e.table / e.row_scales.reshape(-1, 1)).astype(np.int8)
        table = _table_product(
            graph, t, f"{w_name}_{fmt.table_name}", (e.row_scales.reshape(-1, 1), e.row_scale_dtype), (q, "int8")
        )
        table_bytes = e.table_bytes
    else:
        table_value = fmt.table(e)
        table = make_constant(graph, f"{w_name}_{fmt.table_name}", np.asarray(table_value, e.table_dtype))
        table_bytes = e.entry_bytes * int(np.asarray(table_value).size)
    extra_fixed = 4 * layout.row_ptr.size if layout is not None else 0
    bias_after = 4 * t.outputs  # B is always written (zeros when the layer had none)
    packed = table_bytes + extra_fixed + sum(s.size for s, _ in streams) + bias_after
    huff = table_bytes + extra_fixed + _stream_bytes(streams, "store") + bias_after
    consts = [
        make_constant(graph, f"{w_name}_{'deltas' if layout is not None and i == 0 else 'codes'}", s)
        for i, (s, _) in enumerate(streams)
    ]
    # B is always written: the MatMul bodies add it unconditionally, and a Conv with an empty bias input
    # keeps onnxruntime from fusing a following BatchNormalization and from its NCHWc layout.
    bias = t.bias if t.bias is not None else np.zeros(t.outputs, np.float32)
    b_const = [make_constant(graph, f"{w_name}_bias", np.asarray(bias, np.float32))]
    inputs = [t.x, table, *fmt.extra_inputs(graph, w_name, layout), *consts, *b_const]
    node = ops.emit(graph, t.node, fmt.op_type, inputs, fmt.attrs(t, e, layout), fmt.suffix, into=t.owner)
    if t.absorbed is not None:
        # MatMul + Add(bias): the new node writes the Add's output
        out = t.absorbed.outputs[0]
        t.absorbed.inputs.clear()
        t.absorbed.outputs.clear()
        node.outputs[0] = out
    ctx.tag(node, pass_name, [t.name, t.absorbed.name if t.absorbed is not None else ""])
    return Emitted(fmt.describe(layout), before, packed, huff, packed, node.name)


def _table_product(graph: gs.Graph, t: Target, name: str, *factors: tuple[np.ndarray, str]) -> Any:
    """A codebook the model computes from what is stored: Mul(a, b) in float32, each factor (values, element
    type) stored as its type and Cast to float32 (exact: float16 and int8 values are float32 values). Scaled
    codebooks: channel scales [outputs, 1] times the layer's codebook [1, 2**bits]; int8 codebooks: row scales
    [rows, 1] times the int8 entries [rows, entries]. onnxruntime folds it once when the session is created;
    onnxcomp keeps it (onnxcomp.fold: a constant read only by com.onnxcomp ops is their stored form)."""
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.graph import make_constant, unique_name

    into = t.owner if t.owner is not None else graph
    inputs = []
    for (values, dtype), what in zip(factors, ("scales", "values"), strict=True):
        stored = np.dtype(dtype)
        c = make_constant(graph, f"{name}_{what}", np.asarray(values).astype(stored))
        if stored != np.float32:
            out = gs.Variable(unique_name(graph, f"{c.name}_float"), dtype=np.float32, shape=list(c.shape))
            into.nodes.append(
                gs.Node("Cast", unique_name(graph, f"{c.name}_cast"), {"to": 1}, inputs=[c], outputs=[out])
            )
            c = out
        inputs.append(c)
    shape = np.broadcast_shapes(*(np.shape(v) for v, _ in factors))
    out = gs.Variable(unique_name(graph, name), dtype=np.float32, shape=[int(d) for d in shape])
    into.nodes.append(gs.Node("Mul", unique_name(graph, f"{name}_scale"), inputs=inputs, outputs=[out]))
    return out


Streams = list[tuple["np.ndarray", "tuple[int, int] | None"]]  # packed tensors, each with its code layout


def _layout(t: Target, e: Encoded, sparse: str, huffman: str) -> tuple[ops.SparseRows | None, Streams]:
    """The EIE rows when a MatMul's codes are stored sparse (None: dense), and the packed streams to store."""
    if (
        t.kind == "matmul"
        and e.zero_code
        and not e.ternary
        and not e.block_size
        and sparse != "never"
        and (sparse == "always" or _sparse_may_win(e, huffman))
    ):
        candidate = ops.best_sparse(e.codes, e.bits)
        s_streams: Streams = [
            (ops.pack_codes(candidate.deltas, candidate.index_bits)[0], None),
            (ops.pack_codes(candidate.codes, e.bits)[0], None),
        ]
        # the dense side is costed without the zero-run form: at equal-ish size the EIE layout wins, since
        # the native runtime skips its zeros and its decode at load touches only the nonzero entries
        d_streams: Streams = [(ops.pack_codes(e.codes, e.bits), None)]
        if sparse == "always" or _stream_bytes(s_streams, huffman) + 4 * candidate.row_ptr.size < _stream_bytes(
            d_streams, huffman
        ):
            return candidate, s_streams
    return None, [(ops.pack_codes(e.codes, e.bits), (e.bits, e.codes.shape[1]))]


def _sparse_may_win(e: Encoded, huffman: str) -> bool:
    """Cheap bound before building the EIE layout: an entry costs at least bits + 4 bits (+ row pointers)."""
    import numpy as np

    nnz = int(np.count_nonzero(e.codes))
    rows, cols = e.codes.shape
    if huffman == "store":
        return nnz <= 0.5 * e.codes.size
    return 4 * (rows + 1) + nnz * (e.bits + 4) // 8 < rows * ops.packed_row_bytes(cols, e.bits)


def _stream_bytes(streams: list[tuple[np.ndarray, tuple[int, int] | None]], huffman: str) -> int:
    """Stored bytes of packed streams, each with its code layout (bits, codes per row) or None."""
    if huffman != "store":
        return sum(int(s.size) for s, _ in streams)
    return sum(_huffman_or_packed(s, layout) for s, layout in streams)


def _huffman_or_packed(stream: np.ndarray, layout: tuple[int, int] | None) -> int:
    coded = huffman_form(stream, layout)[0]
    return coded if int(stream.size) - coded >= HUFFMAN_MIN_GAIN else int(stream.size)


# A HuffmanDecode node and its three initializers cost about 300 bytes of graph: code a tensor only when
