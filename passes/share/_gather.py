"""Embedding tables: a constant Gather table -> CodebookGather (the gathered rows decoded on the fly).

A token or position embedding ``Gather(table [V, D], indices)`` (axis 0, float32 constant table of its own)
is a weight like any other: its rows get k-means codebooks (one per ``group_size`` rows, or one for the
table), and the table is stored as bit-packed codes. CodebookGather's function body gathers the packed rows
first and decodes only those, at every inference; the native kernel does the same without the temporaries.
In a sentence encoder the 30522 x 384 word table is about half of the weights.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from onnxcomp import ops
from onnxcomp.analysis.weights import SelectOptions, matches
from onnxcomp.graph import is_standard, label

from ._emit import Emitted, Encoded

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.passes_api import PassContext, PassResult


@dataclasses.dataclass
class TableTarget:
    node: gs.Node
    table: Any  # gs.Constant
    w2: np.ndarray  # float32 [V, D]
    indices: Any
    owner: gs.Graph | None = None  # the If/Loop/Scan body holding the Gather; None: the main graph
    where: str = ""  # that body, e.g. "If If_0 then_branch"

    @property
    def name(self) -> str:
        return label(self.node)

    @property
    def params(self) -> int:
        return int(self.w2.size)


def _reason(graph: gs.Graph, node: gs.Node) -> str | None:
    from onnxcomp.graph import is_const

    if len(node.inputs) != 2:
        return "unexpected Gather inputs"
    table, indices = node.inputs
    if not is_const(table) or is_const(indices):
        return "not a constant table gathered by data-dependent indices"
    if int(node.attrs.get("axis", 0)) != 0:
        return "Gather along an axis other than 0"
    if table.values.dtype != "float32" or table.values.ndim != 2:
        return f"table {table.name} is {table.values.dtype} of rank {table.values.ndim} (float32 [V, D] only)"
    if any(c is not node for c in table.outputs):
        return f"table {table.name} is shared with other nodes"
    return None


def table_targets(graph: gs.Graph, opts: SelectOptions, result: PassResult) -> list[TableTarget]:
    """Every constant float32 [V, D] Gather table (axis 0), those inside If/Loop/Scan bodies included (a table
    held by a Constant node of a body read as an initializer of the body), filtered by the selection options."""
    import numpy as np

    from onnxcomp.graph import inline_constant_node, producer, scoped_nodes

    found = []
    for node, owner, where in scoped_nodes(graph):
        if node.op != "Gather" or not is_standard(node):
            continue
        if where is not None and node.inputs and _float_table_node(producer(node.inputs[0])):
            inline_constant_node(owner, node.inputs[0])
        if _reason(owner, node) is not None:
            continue  # most Gathers are shape arithmetic: not worth a skip line each
        table, indices = node.inputs
        t = TableTarget(node, table, np.asarray(table.values, np.float32), indices)
        if where is not None:
            t.owner, t.where = owner, where
        names = (node.name, table.name)
        if opts.layers and not matches(opts.layers, *names):
            continue
        if matches(opts.protect, *names):
            result.skip(t.name, "protected by name")
        elif t.params < max(opts.min_params, 1024):
            continue
        else:
            found.append(t)
    return found


def _float_table_node(node: gs.Node | None) -> bool:
    """A Constant node holding a float32 [V, D] table (not the small integer constants of shape arithmetic)."""
    value = node.attrs.get("value") if node is not None and node.op == "Constant" else None
    values = getattr(value, "values", None)
    return values is not None and values.dtype == "float32" and values.ndim == 2


def table_bytes(t: TableTarget, e: Encoded) -> int:
    rows, cols = t.w2.shape
    return e.entry_bytes * int(e.table.size) + rows * ops.packed_row_bytes(cols, e.bits)


def emit_table(graph: gs.Graph, ctx: PassContext, t: TableTarget, e: Encoded, pass_name: str) -> Emitted:
    """Replace the Gather by CodebookGather(codebook, codes, indices); returns the byte accounting."""
    import numpy as np

    from onnxcomp.graph import make_constant

    before = 4 * t.params
    book = make_constant(graph, f"{t.table.name}_codebook", np.asarray(e.table, e.table_dtype))
    codes = make_constant(graph, f"{t.table.name}_codes", ops.pack_codes(e.codes, e.bits))
    attrs = {"bits": e.bits, "D": int(t.w2.shape[1]), "group_size": e.group_size}
    node = ops.emit(graph, t.node, "CodebookGather", [book, codes, t.indices], attrs, "codebook", into=t.owner)
    ctx.tag(node, pass_name, [t.name])
    stored = table_bytes(t, e)
    return Emitted("gather", before, stored, stored, stored, node.name)
