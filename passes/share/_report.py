"""The per-layer report of the weight-sharing passes and their common epilogue (Huffman store, ratios, inlining)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from onnxcomp import ops

from .huffman import huffman_store

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.analysis.weights import Target
    from onnxcomp.passes_api import PassContext, PassResult

    from ._emit import Emitted, Encoded, ShareOptions


def rel_error(w: np.ndarray, w_hat: np.ndarray) -> float:
    """||W - W_hat||_F / ||W||_F."""
    import numpy as np

    den = float(np.linalg.norm(w.astype(np.float64)))
    num = float(np.linalg.norm(w.astype(np.float64) - w_hat.astype(np.float64)))
    return num / den if den > 0 else num


def record(
    result: PassResult,
    t: Target,
    decision: str,
    e: Encoded,
    em: Emitted,
    error: float,
    sparsity: float,
    **extra: Any,
) -> None:
    """The per-layer report row: bits, codebook size, sparsity, bytes before/after (packed, Huffman),
    reconstruction error."""
    result.layer(
        t.name,
        op=t.node.op,
        decision=decision,
        params_before=t.params,
        params_after=t.params,
        error=error,
        extra={
            "bits": e.bits,
            "codebook_size": 3 if e.ternary else 1 << e.bits,
            "groups": int(e.table.shape[0]),
            **({"channel_scales": int(e.scales.size)} if e.scales is not None else {}),
            "sparsity": round(sparsity, 6),
            "format": em.format,
            "bytes_before": em.bytes_before,
            "bytes_packed": em.bytes_packed,
            "bytes_huffman": em.bytes_huffman,
            "bytes_stored": em.bytes_stored,
            "node": em.node,
            **({"subgraph": t.where} if t.where else {}),
            **extra,
        },
    )
    result.count("layers")
    result.count("bytes_before", em.bytes_before)
    result.count("bytes_packed", em.bytes_packed)
    result.count("bytes_huffman", em.bytes_huffman)
    result.count("bytes_stored", em.bytes_stored)


def finish(graph: gs.Graph, ctx: PassContext, result: PassResult, o: ShareOptions) -> PassResult:
    """The Huffman store of every layer the pass encoded (``huffman=store``), totals (compression ratios)
    and the optional inlining into standard ops."""
    if o.huffman == "store" and result.layers:
        from onnxcomp.graph import scoped_nodes

        by_name = {n.name: (n, owner) for n, owner, _ in scoped_nodes(graph)}  # If/Loop/Scan bodies included
        rows = [r for r in result.layers if r.extra.get("node") in by_name]
        nodes = [by_name[r.extra["node"]][0] for r in rows]
        owners = {id(n): g for n, g in (by_name[r.extra["node"]] for r in rows)}
        saved = huffman_store(graph, ctx, nodes, result.name, owners=owners)
        for r in rows:
            cut = saved.get(r.extra["node"], 0)
            r.extra["bytes_stored"] -= cut
            result.count("bytes_stored", -cut)
    before = result.counters.get("bytes_before", 0)
    for key in ("packed", "huffman", "stored"):
        after = result.counters.get(f"bytes_{key}", 0)
        if before and after:
            result.counters[f"ratio_{key}"] = round(before / after, 3)
    if o.inline:
        result.count("functions_inlined", ops.inline_functions(graph, ctx))
    return result
