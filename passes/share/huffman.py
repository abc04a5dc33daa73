"""huffman: Deep Compression stage 3, the packed code bytes of com.onnxcomp ops Huffman-coded on disk.

Also the Huffman store of the weight-sharing passes (``huffman=store``): :func:`huffman_store` codes the packed
inputs of the nodes a pass wrote, :func:`huffman_form` says what coding would save (for their reports).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from onnxcomp import ops
from onnxcomp.passes_api import Pass, PassContext, PassResult, opt, register_pass

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

# A HuffmanDecode node and its three initializers cost about 300 bytes of graph: code a tensor only when
# the coded stream (with its table and chunk offsets) is at least this much smaller than the packed bytes.
HUFFMAN_MIN_GAIN = 256
# What a RunLengthDecode node adds to the graph (name, attributes, one more tensor name): the zero-run form
# is chosen only when it is smaller by more than this.
RUN_LENGTH_NODE_BYTES = 96
RUN_LENGTH_MIN_ZEROS = 0.5


def huffman_form(packed: np.ndarray, layout: tuple[int, int] | None) -> tuple[int, np.ndarray | None]:
    """(coded bytes, zero-run symbols or None): the smaller of two Huffman codings of a packed tensor.

    Either the packed bytes themselves are the Huffman symbols, or, for packed codes (``layout`` = (bits,
    codes per row)), the zero-run symbols of :func:`zero_run_form`.
    """
    from onnxcomp.ops import huffman as _huffman

    size = _huffman.coded_size(packed)
    runs = zero_run_form(packed, layout)
    return (runs[0], runs[1]) if runs is not None and runs[0] < size else (size, None)


def zero_run_form(packed: np.ndarray, layout: tuple[int, int] | None) -> tuple[int, np.ndarray] | None:
    """(Huffman-coded bytes + :data:`RUN_LENGTH_NODE_BYTES`, symbols) of packed codes as zero runs, or None.

    For packed codes (``layout`` = (bits, codes per row), bits <= 7): the (zero run, code) symbols of
    :func:`ops.run_length_encode` (Deep Compression's "relative index" coding, which gets close to the
    entropy of a pruned layer: a byte symbol cannot cost less than one bit, a long zero run in one symbol
    can). Only tried when at least :data:`RUN_LENGTH_MIN_ZEROS` of the codes are zero (pruned layers): with
    fewer, one symbol per nonzero code is no gain over a byte symbol holding 8 / bits codes, and building
    it costs ~40 ns per code.
    """
    import numpy as np

    from onnxcomp.ops import huffman as _huffman

    if layout is None or layout[0] > 7 or not packed.size:
        return None
    bits, n = layout
    codes = ops.unpack_codes(packed, bits, n)
    if np.count_nonzero(codes) > (1 - RUN_LENGTH_MIN_ZEROS) * codes.size:
        return None
    runs = ops.run_length_encode(codes, bits)
    return (_huffman.coded_size(runs) + RUN_LENGTH_NODE_BYTES, runs) if runs.size else None


@dataclasses.dataclass
class _Coding:
    """How one packed input of a com.onnxcomp node is stored by the Huffman store."""

    node: gs.Node
    index: int
    values: np.ndarray
    layout: tuple[int, int] | None
    gain: int  # packed bytes - coded bytes (stream, table, offsets; + RUN_LENGTH_NODE_BYTES for runs)
    runs: np.ndarray | None  # zero-run symbols, or None: the packed bytes are the symbols


def huffman_store(
    graph: gs.Graph,
    ctx: PassContext,
    nodes: list[gs.Node],
    pass_name: str,
    min_gain: int = HUFFMAN_MIN_GAIN,
    owners: Mapping[int, gs.Graph] | None = None,
) -> dict[str, int]:
    """Huffman-code the packed uint8 constant inputs of com.onnxcomp nodes (HuffmanDecode in front).

    ``owners``: the If/Loop/Scan body holding a node (by id) when it is not the main graph ``graph``; the
    decoders are written next to it.

    Per tensor, the smaller of the two codings of :func:`huffman_form` (the packed codes of a pruned layer
    as zero runs: RunLengthDecode after the HuffmanDecode); a tensor that would not shrink by at least
    ``min_gain`` bytes stays packed. The decoders' function bodies are stored once per model (HuffmanDecode
    ~3.5 kB, RunLengthDecode ~1.5 kB): the zero-run form, and Huffman coding at all, are used only when the
    coded tensors save more than the bodies the model does not carry yet. Returns the bytes saved per node
    name (coded tensors vs packed, bodies not counted).
    """
    import numpy as np

    from onnxcomp.graph import is_const, opset_version
    from onnxcomp.ops import huffman as _huffman

    plans: list[tuple[_Coding, _Coding | None]] = []  # (coded bytes, coded zero runs if smaller)
    for node in nodes:
        code_input = _code_input(node.op)
        for i, tensor in enumerate(node.inputs):
            if not is_const(tensor) or tensor.values.dtype != np.uint8 or tensor.values.size == 0:
                continue
            values = np.asarray(tensor.values)
            layout = None
            if code_input is not None and code_input[0] == i and values.ndim == 2:
                layout = code_input[1](node.attrs)
            plain = _Coding(node, i, values, layout, values.size - _huffman.coded_size(values), None)
            runs = zero_run_form(values, layout)
            zr = None if runs is None else _Coding(node, i, values, layout, values.size - runs[0], runs[1])
            plans.append((plain, zr))

    present = {f.name for f in graph.functions if f.domain == ops.DOMAIN}

    def body(op: str) -> int:
        return 0 if op in present else len(ops.function_proto(op, opset_version(graph)).SerializeToString())

    best: tuple[int, list[_Coding]] = (0, [])
    for allow_runs in (False, True):
        chosen = []
        for plain, runs in plans:
            c = runs if allow_runs and runs is not None and runs.gain > plain.gain else plain
            if c.gain >= min_gain:
                chosen.append(c)
        net = sum(c.gain for c in chosen)
        if chosen:
            net -= body("HuffmanDecode")
        if any(c.runs is not None for c in chosen):
            net -= body("RunLengthDecode")
        if net > best[0]:
            best = (net, chosen)
    saved: dict[str, int] = {}
    for c in best[1]:
        into = (owners or {}).get(id(c.node), graph)
        saved[c.node.name] = saved.get(c.node.name, 0) + _store_one(graph, ctx, c, pass_name, into)
    return saved


def _code_input(op_type: str) -> tuple[int, Callable[[dict[str, Any]], tuple[int, int]]] | None:
    """The packed-code input of a com.onnxcomp op and its layout (what may be coded as zero runs)."""
    spec = ops.OPS.get(op_type)
    return spec.code_input if spec is not None else None


def _store_one(graph: gs.Graph, ctx: PassContext, c: _Coding, pass_name: str, into: gs.Graph) -> int:
    """Replace one packed input by HuffmanDecode (-> RunLengthDecode), written into ``into`` (the graph holding
    the node); returns the bytes saved."""
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.graph import make_constant, unique_name
    from onnxcomp.ops import huffman as _huffman

    coded = _huffman.encode(c.values if c.runs is None else c.runs)
    base = c.node.inputs[c.index].name
    ins = [
        make_constant(graph, f"{base}_huff", coded.stream),
        make_constant(graph, f"{base}_huff_table", coded.table),
        make_constant(graph, f"{base}_huff_offsets", coded.offsets),
    ]
    out = gs.Variable(unique_name(graph, f"{base}_decoded"), dtype=np.uint8, shape=list(c.values.shape))
    decoded = out
    if c.runs is not None:
        assert c.layout is not None
        decoded = gs.Variable(unique_name(graph, f"{base}_runs"), dtype=np.uint8, shape=[int(c.runs.size)])
        ops.ensure_function(graph, "RunLengthDecode")
        rl = gs.Node(
            "RunLengthDecode",
            unique_name(graph, f"{base}_zero_runs"),
            attrs={
                "bits": int(c.layout[0]),
                "count": int(c.layout[1]),
                "shape": [int(v) for v in c.values.shape],
            },
            inputs=[decoded],
            outputs=[out],
            domain=ops.DOMAIN,
        )
        into.nodes.append(rl)
        ctx.tag(rl, pass_name, [base])
    ops.ensure_function(graph, "HuffmanDecode")
    dec = gs.Node(
        "HuffmanDecode",
        unique_name(graph, f"{base}_huffman"),
        attrs={"shape": list(decoded.shape)},
        inputs=ins,
        outputs=[decoded],
        domain=ops.DOMAIN,
    )
    into.nodes.append(dec)
    ctx.tag(dec, pass_name, [base])
    c.node.inputs[c.index] = out
    return int(c.values.size - coded.nbytes)


@register_pass
class Huffman(Pass):
    """com.onnxcomp op(packed codes)  =>  com.onnxcomp op(HuffmanDecode(coded stream)) (lossless).

    Every packed uint8 input of a com.onnxcomp op (codes, EIE deltas) is replaced by a canonical Huffman
    stream over its bytes (lengths <= 16 bits, a [2, n] symbol/length table, one int32 bit offset per 1024
    bytes) and a ``HuffmanDecode`` node that rebuilds the identical bytes. The codes of a pruned layer are
    coded instead as EIE-style (zero run, code) byte symbols, with a ``RunLengthDecode`` node after the
    HuffmanDecode, when that is smaller (Deep Compression's relative-index coding: one symbol stands for a
    run of zeros and a code, where a packed byte symbol cannot cost less than one bit). Both function
    bodies are standard ops that onnxruntime constant-folds at load time, so the file gets smaller while
    the session is the same. Run it after kmeans / pow2 / ternary / binary (or use their ``huffman=store``).
    A tensor is coded only when that saves at least ``min_gain`` bytes.
    """

    name = "huffman"
    lossless = True

    @dataclasses.dataclass
    class Options:
        min_gain: int = opt(
            HUFFMAN_MIN_GAIN,
            "code a tensor only when that saves at least this many bytes "
            "(a HuffmanDecode node and its initializers cost ~300 bytes of graph)",
        )

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        from onnxcomp.graph import scoped_nodes

        result = self.new_result()
        found = [(n, g) for n, g, _ in scoped_nodes(graph) if n.domain == ops.DOMAIN and ops.is_weight_op(n.op)]
        nodes = [n for n, _ in found]
        if not nodes:
            result.skip("model", "no com.onnxcomp weight ops (run kmeans, pow2, ternary or binary first)")
        packed = {n.name: sum(int(t.values.size) for t in n.inputs if _is_packed(t)) for n in nodes}
        owners = {id(n): g for n, g in found}
        saved = huffman_store(graph, ctx, nodes, self.name, min_gain=self.options.min_gain, owners=owners)
        for node in nodes:
            if not saved.get(node.name):
                result.skip(
                    node.name,
                    f"Huffman coding would not save {self.options.min_gain} bytes "
                    "(or the model's coded tensors would not pay for the decoder's function body)",
                )
                continue
            before = packed[node.name]
            result.layer(
                node.name,
                op=node.op,
                decision="huffman",
                extra={"bytes_packed": before, "bytes_huffman": before - saved[node.name]},
            )
            result.count("tensors_coded")
            result.count("bytes_saved", saved[node.name])
        return result


def _is_packed(t: object) -> bool:
    import numpy as np

    from onnxcomp.graph import is_const

    return is_const(t) and t.values.dtype == np.uint8  # type: ignore[attr-defined]
