"""float16 weights: a MatMul / Gemm / Conv weight stored float16 -> Cast(CodebookDecode(codebook, codes)) (lossy;
kmeans, pow2, ternary and binary write them so, through ``_emit.emit_weight``).

    W fp16 [..]  ->  Cast<float16>(layout of W (CodebookDecode(codebook, codes [outputs, inputs])))

The com.onnxcomp weight ops compute in float32, and a float16 model's layer runs in float16, so a float16 weight
is not replaced by a weight op: its codes are decoded whole in the graph (a CodebookDecode of one row per output
channel, the rows' codebook groups as the weight ops' output groups), put back in the weight's layout (the Conv
filter shape, or the MatMul / Gemm orientation) and Cast to float16, in front of the original node. The decode
has no native kernel: onnxruntime folds it when it loads the model, so the layer runs as before, on the decoded
weight. The file stores the codes and the codebook (a 4-bit layer: about a quarter of its float16 bytes). Block
codebooks and a Gemm's alpha are not written this way (skipped, with the reason).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxcomp import ops

from ._emit import Emitted, Encoded

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

    from onnxcomp.analysis.weights import Target
    from onnxcomp.passes_api import PassContext


def why_not(t: Target, e: Encoded) -> str | None:
    """Why ``e`` cannot be written in front of the float16 layer ``t``, or None."""
    if e.block_size:
        return "block codebooks are not written for float16 weights"
    if t.node.op == "Gemm" and float(t.node.attrs.get("alpha", 1.0)) != 1.0:
        return "a float16 Gemm with alpha != 1 (folded into its weights) is not written"
    return None


def stored_bytes(t: Target, e: Encoded) -> int:
    """Bytes of the codebook (as written: float16 or float32) and of the packed codes, one row per output."""
    rows, cols = (t.w2.shape[1], t.w2.shape[0]) if t.kind == "matmul" else t.w2.shape
    return _table(e).nbytes + rows * ops.packed_row_bytes(cols, e.bits)


def _table(e: Encoded):
    """The codebook as written: float16 when its values are float16 values, else float32 (an int8 codebook's
    products and a scaled codebook's per-channel table too); ternary scales [G, 2] as their codebook
    [G, 4] = [0, a_p, -a_n, 0]."""
    import numpy as np

    e = e.effective()
    table = ops.ternary_lut(np.asarray(e.table, np.float32)) if e.ternary else e.table
    return np.asarray(table, np.float16 if e.table_dtype == "float16" else np.float32)


def emit_half(graph: gs.Graph, ctx: PassContext, t: Target, e: Encoded, pass_name: str) -> Emitted:
    """Decode ``e`` into the float16 weight input of ``t``'s node (module docstring); the byte accounting."""
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.graph import make_constant, unique_name

    ops.ensure_function(graph, "CodebookDecode")
    home = t.owner if t.owner is not None else graph
    base = t.weight.name
    eff = e.effective()
    codes = eff.codes.T if t.kind == "matmul" else eff.codes  # [outputs, inputs]
    rows, cols = codes.shape
    book = make_constant(graph, f"{base}_codebook", _table(e))
    packed = make_constant(graph, f"{base}_codes", ops.pack_codes(codes, e.bits))
    flat = gs.Variable(unique_name(graph, f"{base}_decoded"), dtype=np.float32, shape=[rows, cols])
    decode = gs.Node(
        "CodebookDecode",
        unique_name(graph, f"{base}_codebook"),
        attrs={"bits": e.bits, "D": int(cols), "group_size": eff.group_size},
        inputs=[book, packed],
        outputs=[flat],
        domain=ops.DOMAIN,
    )
    nodes, w = [decode], flat
    shape = tuple(int(d) for d in t.weight.shape)
    if t.kind == "conv":  # [O, C/g * kh * kw] -> the filters [O, C/g, kh, kw]
        w = gs.Variable(unique_name(graph, f"{base}_filters"), dtype=np.float32, shape=list(shape))
        dims = make_constant(graph, f"{base}_shape", np.asarray(shape, np.int64))
        nodes.append(gs.Node("Reshape", unique_name(graph, f"{base}_reshape"), inputs=[flat, dims], outputs=[w]))
    elif not (t.node.op == "Gemm" and int(t.node.attrs.get("transB", 0))):  # [N, K] -> [K, N]
        w = gs.Variable(unique_name(graph, f"{base}_kn"), dtype=np.float32, shape=list(shape))
        nodes.append(
            gs.Node("Transpose", unique_name(graph, f"{base}_t"), attrs={"perm": [1, 0]}, inputs=[flat], outputs=[w])
        )
    half = gs.Variable(unique_name(graph, f"{base}_fp16"), dtype=np.float16, shape=list(shape))
    nodes.append(gs.Node("Cast", unique_name(graph, f"{base}_cast"), attrs={"to": 10}, inputs=[w], outputs=[half]))
    home.nodes.extend(nodes)
    t.node.inputs[1] = half
    ctx.tag(decode, pass_name, [t.name])
    stored = stored_bytes(t, e)
    return Emitted("decode", 2 * t.params, stored, stored, stored, decode.name)
