"""Recurrent weights: LSTM / GRU / RNN ``W`` and ``R`` -> a CodebookGather of every row, reshaped back (lossy).

    W [D, G*H, I]  ->  Reshape(CodebookGather(codebook, codes, arange(D*G*H)), [D, G*H, I])

A recurrent node reads its input weights ``W`` and its recurrence weights ``R`` whole at every step, and no
com.onnxcomp kernel runs a recurrence on codes, so the weight is stored as codes and decoded whole in the
graph, where it was a constant: the file shrinks as for any other layer, the recurrence runs on float weights.
The rows of the storage matrix ``[D*G*H, I]`` are the gate units of each direction, encoded as embedding table
rows are (one codebook per ``group-size`` rows, or one for the weight; ``_gather``). Where the function body
runs, every input of the decode is a constant and onnxruntime folds it at load; the native CodebookGather
decodes the rows at each run (measured in the kmeans row of the README).

In CRNN text recognizers (a CNN, then a bidirectional LSTM over the columns) the LSTMs hold most weights:
ddddocr's recognizer (54 MB) kept 2 x 2048 x 512 x 2 floats (17 MB) of them when they were no target.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from onnxcomp import ops
from onnxcomp.analysis.weights import SelectOptions, matches
from onnxcomp.graph import is_standard, label

from ._emit import Emitted, Encoded
from ._gather import TableTarget, table_bytes

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

    from onnxcomp.passes_api import PassContext, PassResult

RECURRENT_OPS = {"LSTM": 4, "GRU": 3, "RNN": 1}  # op type -> gates G (W is [D, G*H, I], R [D, G*H, H])
SLOTS = {1: "W", 2: "R"}
MIN_PARAMS = 1024  # as embedding tables: smaller weights are not worth a codebook


@dataclasses.dataclass
class RecurrentTarget(TableTarget):
    """A recurrent node's ``W`` or ``R`` (``slot`` 1 or 2) as a table of its gate rows (``table`` is the 3-D
    constant; ``w2`` its rows ``[D*G*H, I or H]``)."""

    slot: int = 1

    @property
    def name(self) -> str:
        return f"{label(self.node)}.{SLOTS[self.slot]}"


def _reason(node: gs.Node, slot: int) -> str | None:
    from onnxcomp.graph import is_const

    w = node.inputs[slot]
    if not is_const(w):
        return f"{SLOTS[slot]} is computed in the graph, not a constant"
    if w.values.dtype != "float32" or w.values.ndim != 3:
        return f"{SLOTS[slot]} {w.name} is {w.values.dtype} of rank {w.values.ndim} (float32 [D, G*H, K] only)"
    if any(c is not node for c in w.outputs):
        return f"{SLOTS[slot]} {w.name} is shared with other nodes"
    return None


def recurrent_targets(graph: gs.Graph, opts: SelectOptions, result: PassResult) -> list[RecurrentTarget]:
    """The ``W`` and ``R`` constants of every LSTM / GRU / RNN node (those inside If/Loop/Scan bodies included, a
    weight held by a Constant node of a body read as an initializer of the body), by the selection options."""
    import numpy as np

    from onnxcomp.graph import inline_constant_node, scoped_nodes

    found = []
    for node, owner, where in scoped_nodes(graph):
        if node.op not in RECURRENT_OPS or not is_standard(node):
            continue
        for slot in SLOTS:
            if len(node.inputs) <= slot:
                continue
            if where is not None:
                inline_constant_node(owner, node.inputs[slot])
            w = node.inputs[slot]
            names = (node.name, w.name)
            if opts.layers and not matches(opts.layers, *names):
                continue
            why = _reason(node, slot)
            if why is not None:
                result.skip(f"{label(node)}.{SLOTS[slot]}", why)
                continue
            values = np.asarray(w.values, np.float32)
            t = RecurrentTarget(node, w, values.reshape(-1, values.shape[-1]), None, slot=slot)
            if where is not None:
                t.owner, t.where = owner, where
            if matches(opts.protect, *names):
                result.skip(t.name, "protected by name")
            elif t.params >= max(opts.min_params, MIN_PARAMS):
                found.append(t)
    return found


def emit_weight(graph: gs.Graph, ctx: PassContext, t: RecurrentTarget, e: Encoded, pass_name: str) -> Emitted:
    """Replace the node's weight input by the decoded codes (module docstring); returns the byte accounting."""
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.graph import make_constant, unique_name

    rows = int(t.w2.shape[0])
    shape = tuple(int(d) for d in t.table.shape)
    base = t.table.name
    ops.ensure_function(graph, "CodebookGather")
    book = make_constant(graph, f"{base}_codebook", np.asarray(e.table, e.table_dtype))
    codes = make_constant(graph, f"{base}_codes", ops.pack_codes(e.codes, e.bits))
    rows_of = make_constant(graph, f"{base}_rows", np.arange(rows, dtype=np.int64))
    flat = gs.Variable(unique_name(graph, f"{base}_decoded"), dtype=np.float32, shape=[rows, shape[-1]])
    attrs = {"bits": e.bits, "D": int(t.w2.shape[1]), "group_size": e.group_size}
    decode = gs.Node(
        "CodebookGather",
        unique_name(graph, f"{base}_codebook"),
        attrs=attrs,
        inputs=[book, codes, rows_of],
        outputs=[flat],
        domain=ops.DOMAIN,
    )
    # the decoded rows [D*G*H, K] back to the node's [D, G*H, K]
    w = gs.Variable(unique_name(graph, f"{base}_weight"), dtype=np.float32, shape=list(shape))
    back = gs.Node(
        "Reshape",
        unique_name(graph, f"{base}_reshape"),
        inputs=[flat, make_constant(graph, f"{base}_shape", np.asarray(shape, np.int64))],
        outputs=[w],
    )
    (t.owner if t.owner is not None else graph).nodes.extend([decode, back])
    t.node.inputs[t.slot] = w
    ctx.tag(decode, pass_name, [t.name])
    stored = table_bytes(t, e)
    return Emitted("gather", 4 * t.params, stored, stored, stored, decode.name)
