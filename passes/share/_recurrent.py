"""Recurrent weights: LSTM / GRU / RNN ``W`` and ``R`` -> a CodebookDecode of the rows, reshaped back (lossy).

    W [..., K]  ->  Reshape(CodebookDecode(codebook, codes), shape of W)

A recurrent node reads its input weights ``W`` and its recurrence weights ``R`` whole at every step, and no
com.onnxcomp kernel runs a recurrence on codes, so the weight is stored as codes and decoded whole in the
graph, where the constant was: the file shrinks as for any other layer, the recurrence runs on float weights.
The constant is the node's input, or the weight that input is cut from by layout ops only (Slice, Concat,
Unsqueeze, Reshape, Transpose...: PyTorch's LSTM export reorders the gates of ``weight_ih`` with Slices and a
Concat, inside If branches in Silero VAD) when every use of that weight ends in a recurrent ``W`` or ``R``.
Its rows (the last axis is K, the inputs) are the gate units, encoded as embedding table rows are (one
codebook per ``group-size`` rows, or one for the weight; ``_gather``). The decode is written in the graph that
held the constant. CodebookDecode has a function body and no native kernel: its inputs are all constants, and
onnxruntime inlines and folds it when it loads the model, under the custom-op library and the EP too, so the
recurrent op gets (and prepacks) a float initializer. With CodebookGather of every row (until stop 22) the
library's native kernel decoded the 4.2M weights of ddddocr's recognizer at every run: 0.80x of the original
with the library registered (onnxruntime folds no node it runs with a custom kernel).

In CRNN text recognizers (a CNN, then a bidirectional LSTM over the columns) the LSTM holds a large share of
the weights: ddddocr's recognizer (54 MB) kept its W and R, 2 x [2, 2048, 512] floats (17 MB), when they were
no target; at 4 bits the file went from 21.7 to 7.1 MB.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from onnxcomp import ops
from onnxcomp.analysis.weights import SelectOptions, matches
from onnxcomp.graph import constant_node_value, is_const, is_standard, label, producer

from ._emit import Emitted, Encoded
from ._gather import TableTarget, table_bytes

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

    from onnxcomp.passes_api import PassContext, PassResult

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
SLOTS = {1: "W", 2: "R"}
# layout ops a weight may pass through on its way to W / R: op -> its data inputs (None: all; the others are
# shape / axes / starts parameters, which must be constants)
LAYOUT = {
    "Concat": None,
    "Slice": (0,),
    "Unsqueeze": (0,),
    "Squeeze": (0,),
    "Reshape": (0,),
    "Transpose": (0,),
    "Identity": (0,),
    "Flatten": (0,),
}
MIN_PARAMS = 1024  # as embedding tables: smaller weights are not worth a codebook


@dataclasses.dataclass
class RecurrentTarget(TableTarget):
    """A constant read (directly, or cut by layout ops) only as recurrent ``W`` / ``R`` (``table``; ``w2``: its rows
    ``[-1, K]``); ``node`` / ``slot``: the first recurrent input it feeds; ``label``: the report's name."""

    slot: int = 1
    label: str = ""

    @property
    def name(self) -> str:
        return self.label


def _constant_source(t: Any) -> bool:
    """A constant, or the output of a standard Constant node holding a tensor."""
    return is_const(t) or constant_node_value(t) is not None


def _values(t: Any) -> Any:
    return t.values if is_const(t) else constant_node_value(t).values


def _sources(t: Any) -> list[Any] | None:
    """The constants a recurrent input is cut from by layout ops only (None: computed from other data)."""
    if _constant_source(t):
        return [t]
    p = producer(t)
    if p is None or p.op not in LAYOUT or not is_standard(p):
        return None
    data = range(len(p.inputs)) if LAYOUT[p.op] is None else LAYOUT[p.op]
    found = []
    for i, x in enumerate(p.inputs):
        if i not in data:
            if x.name and not _constant_source(x):
                return None  # a shape or slice bound computed at run time
            continue
        inner = _sources(x)
        if inner is None:
            return None
        found.extend(inner)
    return found


def _only_recurrent(t: Any, outputs: set[int]) -> bool:
    """Every use of ``t`` ends in a recurrent node's W or R (through layout ops, as their data input)."""
    if id(t) in outputs or not t.outputs:
        return False
    for c in t.outputs:
        slots = [i for i, x in enumerate(c.inputs) if x is t]
        if c.op in RECURRENT_OPS and is_standard(c):
            if not set(slots) <= set(SLOTS):
                return False
        elif c.op in LAYOUT and is_standard(c):
            data = range(len(c.inputs)) if LAYOUT[c.op] is None else LAYOUT[c.op]
            if not set(slots) <= set(data) or not all(_only_recurrent(o, outputs) for o in c.outputs):
                return False
        else:
            return False
    return True


def _home(t: Any, owner_of: dict[int, gs.Graph], parent: dict[int, gs.Graph], graph: gs.Graph) -> gs.Graph:
    """The graph to decode ``t`` in: the one holding its Constant node, else the innermost graph enclosing every
    node that reads it (a main-graph weight read in one If branch is decoded in that branch)."""
    p = producer(t)
    if p is not None:
        return owner_of[id(p)]

    def chain(g: gs.Graph) -> list[gs.Graph]:
        out = [g]
        while id(out[-1]) in parent:
            out.append(parent[id(out[-1])])
        return out

    chains = [chain(owner_of[id(c)]) for c in t.outputs]
    common = [g for g in chains[0] if all(any(g is h for h in c) for c in chains[1:])]
    return common[0] if common else graph


def recurrent_targets(graph: gs.Graph, opts: SelectOptions, result: PassResult) -> list[RecurrentTarget]:
    """The constants read only as ``W`` / ``R`` of LSTM / GRU / RNN nodes (module docstring), inside If/Loop/Scan
    bodies too, by the selection options; a Constant node's tensor becomes an initializer of its graph."""
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.graph import inline_constant_node, scoped_nodes

    scoped = scoped_nodes(graph)
    owner_of = {id(n): g for n, g, _ in scoped}
    where_of = {id(g): w for _, g, w in scoped}
    parent: dict[int, gs.Graph] = {}
    outputs = {id(o) for o in graph.outputs}
    for n, g, _ in scoped:
        for value in n.attrs.values():
            for body in value if isinstance(value, list) else [value]:
                if isinstance(body, gs.Graph):
                    parent[id(body)] = g
                    outputs.update(id(o) for o in body.outputs)
    found: list[RecurrentTarget] = []
    seen: set[int] = set()
    for node, _, _ in scoped:
        if node.op not in RECURRENT_OPS or not is_standard(node):
            continue
        for slot, what in SLOTS.items():
            if len(node.inputs) <= slot or not node.inputs[slot].name:
                continue
            where = f"{label(node)}.{what}"
            srcs = _sources(node.inputs[slot])
            if srcs is None:
                result.skip(where, f"{what} is computed in the graph, not cut from a constant by layout ops")
                continue
            for src in srcs:
                if id(src) in seen:  # (one weight cut into several gates: its tensor, and the initializer it became)
                    continue
                values = _values(src)
                names = (node.name, src.name)
                if opts.layers and not matches(opts.layers, *names):
                    continue
                if values.dtype != np.float32 or values.ndim < 2:
                    result.skip(where, f"{what} {src.name} is {values.dtype} of rank {values.ndim} (float32 only)")
                    continue
                if not _only_recurrent(src, outputs):
                    result.skip(where, f"{what} {src.name} is shared with other nodes")
                    continue
                if matches(opts.protect, *names):
                    result.skip(where, "protected by name")
                    continue
                if values.size < max(opts.min_params, MIN_PARAMS):
                    continue
                home = _home(src, owner_of, parent, graph)
                const = src if is_const(src) else inline_constant_node(home, src)
                direct = node.inputs[slot] is const
                rows = np.asarray(values, np.float32).reshape(-1, values.shape[-1])
                name = where if direct else f"{src.name} ({where})"
                t = RecurrentTarget(node, const, rows, None, slot=slot, label=name)
                if home is not graph:
                    t.owner, t.where = home, where_of.get(id(home)) or ""
                found.append(t)
                seen.update((id(src), id(const)))
    return found


def emit_weight(graph: gs.Graph, ctx: PassContext, t: RecurrentTarget, e: Encoded, pass_name: str) -> Emitted:
    """Replace the weight by its decoded codes (module docstring); returns the byte accounting."""
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.graph import make_constant, replace_uses, unique_name

    rows = int(t.w2.shape[0])
    shape = tuple(int(d) for d in t.table.shape)
    base = t.table.name
    ops.ensure_function(graph, "CodebookDecode")
    book = make_constant(graph, f"{base}_codebook", np.asarray(e.table, e.table_dtype))
    codes = make_constant(graph, f"{base}_codes", ops.pack_codes(e.codes, e.bits))
    flat = gs.Variable(unique_name(graph, f"{base}_decoded"), dtype=np.float32, shape=[rows, shape[-1]])
    attrs = {"bits": e.bits, "D": int(t.w2.shape[1]), "group_size": e.group_size}
    decode = gs.Node(
        "CodebookDecode",
        unique_name(graph, f"{base}_codebook"),
        attrs=attrs,
        inputs=[book, codes],
        outputs=[flat],
        domain=ops.DOMAIN,
    )
    # the decoded rows [rows, K] back to the weight's shape
    w = gs.Variable(unique_name(graph, f"{base}_weight"), dtype=np.float32, shape=list(shape))
    back = gs.Node(
        "Reshape",
        unique_name(graph, f"{base}_reshape"),
        inputs=[flat, make_constant(graph, f"{base}_shape", np.asarray(shape, np.int64))],
        outputs=[w],
    )
    (t.owner if t.owner is not None else graph).nodes.extend([decode, back])
    replace_uses(graph, t.table, w)
    ctx.tag(decode, pass_name, [t.name])
    stored = table_bytes(t, e)
    return Emitted("decode", 4 * t.params, stored, stored, stored, decode.name)
