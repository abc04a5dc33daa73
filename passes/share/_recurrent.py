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

With calibration data the rows are rounded with error compensation (GPTQ, ``_gptvq``), as a MatMul's are: every
row of ``W`` multiplies the step's input x_t, every row of ``R`` of direction d the previous hidden state of that
direction, so the Hessians of the gate pre-activations' error are

    # W: H = sum_t x_t x_t^T / n           (X, the node's input 0; one H for all rows)
    # R: H_d = sum_t h_{t-1} h_{t-1}^T / n  (Y, its output 0: direction d's states one step before; one per d)

(``hessians``). Where the rows do not multiply those (a GRU's R with linear_before_reset=0 multiplies r * h; a
weight cut into R by ops that move its last axis) or the states were not captured, the codes stay plain.
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
    import numpy as np
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


# ============================================================================================ calibration
@dataclasses.dataclass(frozen=True)
class Rows:
    """``compensated_encode``'s view of a recurrent weight: its storage matrix has one row per gate unit."""

    kind: str = "rows"


ROWS = Rows()


def _axes(node: gs.Node, rank: int, slot: int = 1) -> list[int] | None:
    """A Slice / Unsqueeze / Squeeze node's axes, normalized for ``rank`` (None: not constant or absent)."""
    import numpy as np

    if "axes" in node.attrs:
        axes = list(node.attrs["axes"])
    elif len(node.inputs) > slot and node.inputs[slot].name and _constant_source(node.inputs[slot]):
        axes = [int(a) for a in np.asarray(_values(node.inputs[slot])).ravel()]
    else:
        return None
    return [a + rank if a < 0 else a for a in axes]


def _rank_after(node: gs.Node, rank: int) -> int | None:
    """The rank of a layout node's output when it keeps its data input's last axis whole and last (None: it may
    cut, move or merge that axis, so the rows' inputs are no longer the source's columns)."""
    op = node.op
    if op == "Identity":
        return rank
    if op == "Concat":
        axis = int(node.attrs.get("axis", 0))
        return rank if (axis + rank if axis < 0 else axis) != rank - 1 else None
    if op == "Slice":
        if "axes" in node.attrs or (len(node.inputs) > 3 and node.inputs[3].name):
            axes = _axes(node, rank, 3)
        elif "starts" in node.attrs:  # (Slice-1) no axes: the first len(starts) axes
            axes = list(range(len(node.attrs["starts"])))
        else:
            starts = node.inputs[1] if len(node.inputs) > 1 else None
            axes = list(range(_values(starts).size)) if starts is not None and _constant_source(starts) else None
        return rank if axes is not None and rank - 1 not in axes else None
    if op == "Unsqueeze":
        axes = _axes(node, rank + len(_axes(node, 0) or []))
        return rank + len(axes) if axes is not None and rank + len(axes) - 1 not in axes else None
    if op == "Squeeze":
        axes = _axes(node, rank)
        return rank - len(axes) if axes is not None and rank - 1 not in axes else None
    return None  # Reshape, Transpose, Flatten: may move the inputs axis


def _ends(t: Any, rank: int) -> list[tuple[gs.Node, int]] | None:
    """The (recurrent node, slot) pairs a source reaches through layout ops that keep its last axis (None: one
    path does not)."""
    found: list[tuple[gs.Node, int]] = []
    for c in t.outputs:
        if c.op in RECURRENT_OPS:
            found.extend((c, i) for i, x in enumerate(c.inputs) if x is t)
            continue
        after = _rank_after(c, rank)
        if after is None:
            return None
        for o in c.outputs:
            sub = _ends(o, after)
            if sub is None:
                return None
            found.extend(sub)
    return found


def _directions(node: gs.Node) -> int:
    return 2 if node.attrs.get("direction", "forward") == "bidirectional" else 1


def hessian_input(t: RecurrentTarget) -> tuple[list[gs.Node], list[str]] | str:
    """The recurrent nodes whose ``t.slot`` input ``t`` is (several: one weight read by more than one node, as
    Silero VAD's LSTMs are), and the tensors whose calibration values give the Hessians of its rows (X for W; Y
    and initial_h for R); or why the rows are rounded plain (module docstring)."""
    ends = _ends(t.table, t.table.values.ndim)
    if ends is None:
        return "cut into the weight by ops that may move its inputs axis"
    nodes: list[gs.Node] = []
    for n, s in ends:
        if s != t.slot:
            return "read as both W and R"
        if not any(n is m for m in nodes):
            nodes.append(n)
    names: list[str] = []
    for n in nodes:
        if n.op == "GRU" and t.slot == 2 and not int(n.attrs.get("linear_before_reset", 0)):
            return "GRU R with linear_before_reset=0 multiplies r * h, not the captured state"
        if _directions(n) != 1 and (len(nodes) > 1 or n.inputs[t.slot] is not t.table):
            return "cut into or shared by a bidirectional weight (rows of both directions)"
        if t.slot == 1:
            names.append(n.inputs[0].name)
            continue
        if not n.outputs or not n.outputs[0].name:
            return "the node's Y output (the hidden states) is not produced"
        names.append(n.outputs[0].name)
        init = n.inputs[5] if len(n.inputs) > 5 else None
        if init is not None and init.name and not _constant_source(init):
            names.append(init.name)
    return nodes, names


def _state_rows(node: gs.Node, y: np.ndarray, init: np.ndarray | None) -> list[np.ndarray]:
    """Per direction, the hidden states [steps x batch, hidden] that the recurrence multiplies by R: the node's
    initial state and its Y outputs but the last step's (reverse: but the first's)."""
    import numpy as np

    layout = int(node.attrs.get("layout", 0))
    # Y [seq, dirs, batch, hidden] (layout 1: [batch, seq, dirs, hidden]); initial_h [dirs, batch, hidden]
    # (layout 1: [batch, dirs, hidden])
    y = np.moveaxis(np.moveaxis(y, 0, 1), 2, 1) if layout else y
    if init is not None:
        init = np.moveaxis(init, 0, 1) if layout else init
    reverse = [False, True] if y.shape[1] == 2 else [node.attrs.get("direction", "forward") == "reverse"]
    out = []
    for d, back in enumerate(reverse):
        steps = y[1:, d] if back else y[:-1, d]
        rows = [steps.reshape(-1, y.shape[-1])]
        if init is not None:
            rows.append(np.broadcast_to(init[d], y.shape[2:]).reshape(-1, y.shape[-1]))
        out.append(np.concatenate(rows))
    return out


def hessians(
    t: RecurrentTarget, nodes: list[gs.Node], acts: dict[str, np.ndarray], max_rows: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], int] | None:
    """The Hessians of ``t``'s rows (module docstring) read by ``nodes`` (``hessian_input``) from the captured
    ``acts``: [H] for W, one per direction for R (rows split evenly over them, as over a conv's groups);
    H = X^T X / n over the steps of every node the calibration data runs (one in a branch it does not take has no
    tensors captured: Silero VAD runs one of its two LSTMs), at most ``max_rows`` sampled; and the fewest steps
    one of them was summed over. None where the data runs none of them."""
    import numpy as np

    per_dir: list[list[np.ndarray]] = []
    for n in nodes:
        if t.slot == 1:  # X [seq, batch, K] (layout 1: [batch, seq, K]): every step's input
            x = acts.get(n.inputs[0].name)
            if x is None:
                continue
            got = [x.reshape(-1, x.shape[-1])]
        else:
            y = acts.get(n.outputs[0].name)
            init = n.inputs[5] if len(n.inputs) > 5 and n.inputs[5].name else None
            h0 = None if init is None else (_values(init) if _constant_source(init) else acts.get(init.name))
            if y is None or (init is not None and h0 is None):
                continue
            got = _state_rows(n, y, None if h0 is None else np.asarray(h0))
        per_dir = [[*a, b] for a, b in zip(per_dir, got, strict=True)] if per_dir else [[b] for b in got]
    if not per_dir:
        return None
    out, fewest = [], None
    for parts in per_dir:
        rows = np.concatenate(parts)
        fewest = rows.shape[0] if fewest is None else min(fewest, rows.shape[0])
        if rows.shape[0] > max_rows:
            rows = rows[rng.choice(rows.shape[0], max_rows, replace=False)]
        rows = np.asarray(rows, np.float64)
        out.append(rows.T @ rows / max(1, rows.shape[0]))
    return out, int(fewest or 0)
