"""Graph helpers over onnx-graphsurgeon: import/export, constants, rewiring, naming.

Passes mutate a ``gs.Graph`` freely and the pipeline runs ``cleanup().toposort()`` after each one
(the onnx-graphsurgeon way). The helpers here hold the few rewrites every pass needs, so that graph outputs
keep their names and new tensors get names derived from the ones they replace.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import onnx_graphsurgeon as gs

    from onnxcomp.passes_api import PassContext

logger = logging.getLogger(__name__)


def import_model(model: onnx.ModelProto) -> gs.Graph:
    """ModelProto -> gs.Graph (the model should be normalized first, see :func:`onnxcomp.io.normalize`)."""
    quiet_graphsurgeon()
    import onnx_graphsurgeon as gs

    return gs.import_onnx(model)


def quiet_graphsurgeon() -> None:
    """onnx-graphsurgeon logs warnings to stdout; keep only its errors (our own logging reports skips)."""
    import onnx_graphsurgeon as gs

    gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR


def export_model(graph: gs.Graph, ctx: PassContext | None = None) -> onnx.ModelProto:
    """gs.Graph -> ModelProto, keeping opset imports, IR version, metadata and provenance tags."""
    import onnx
    import onnx_graphsurgeon as gs

    model = gs.export_onnx(graph, do_type_check=False)
    meta = ctx.model_meta if ctx is not None else {}
    if meta.get("ir_version"):
        model.ir_version = max(model.ir_version if model.ir_version else 0, meta["ir_version"])
    for key in ("producer_name", "producer_version", "domain", "doc_string"):
        if meta.get(key):
            setattr(model, key, meta[key])
    if meta.get("model_version"):
        model.model_version = meta["model_version"]
    if meta.get("metadata_props"):
        del model.metadata_props[:]
        for k, v in meta["metadata_props"]:
            model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    _fix_opset_imports(model, meta.get("opset_import", {}))
    if ctx is not None and ctx.provenance:
        for node in model.graph.node:
            tag = ctx.provenance.get(node.name)
            if tag:
                node.doc_string = tag
    return model


def _fix_opset_imports(model: onnx.ModelProto, original: dict[str, int]) -> None:
    """Keep every original domain version, add ones that new nodes use (custom domain: version 1)."""
    import onnx

    have = {op.domain: op.version for op in model.opset_import}
    for domain, version in original.items():
        have[domain] = max(have.get(domain, 0), version)
    used = {n.domain for n in model.graph.node} | {n.domain for f in model.functions for n in f.node}
    for f in model.functions:
        used.add(f.domain)
    for domain in used:
        if domain not in have:
            have[domain] = 1
    del model.opset_import[:]
    for domain in sorted(have, key=lambda d: (d not in ("", "ai.onnx"), d)):
        model.opset_import.append(onnx.helper.make_opsetid(domain, have[domain]))


def opset_version(graph: gs.Graph, domain: str = "") -> int:
    """The ai.onnx (or given domain) opset the graph imports."""
    if domain in ("", "ai.onnx"):
        return int(graph.opset)
    return int((graph.import_domains and {d.domain: d.version for d in graph.import_domains}.get(domain)) or 0)


# ------------------------------------------------------------------------------------------- tensors
def const_value(tensor: Any) -> np.ndarray | None:
    """The value of a constant tensor (initializer or folded), else None."""
    import onnx_graphsurgeon as gs

    if isinstance(tensor, gs.Constant):
        return tensor.values
    return None


def is_const(tensor: Any) -> bool:
    import onnx_graphsurgeon as gs

    return isinstance(tensor, gs.Constant)


def is_empty(tensor: Any) -> bool:
    """An omitted optional input (empty name)."""
    return tensor is None or (not tensor.name and not is_const(tensor))


def producer(tensor: Any) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def consumers(tensor: Any) -> list[gs.Node]:
    return list(tensor.outputs)


def is_graph_output(graph: gs.Graph, tensor: Any) -> bool:
    return any(t is tensor for t in graph.outputs)


def is_graph_input(graph: gs.Graph, tensor: Any) -> bool:
    return any(t is tensor for t in graph.inputs)


def unique_name(graph: gs.Graph, base: str, taken: set[str] | None = None) -> str:
    """``base`` if unused in the graph (tensors and nodes), else ``base_1``, ``base_2``..."""
    names = taken if taken is not None else _all_names(graph)
    name, i = base, 0
    while name in names:
        i += 1
        name = f"{base}_{i}"
    names.add(name)
    return name


def _all_names(graph: gs.Graph) -> set[str]:
    names = set(graph.tensors().keys())
    names.update(n.name for n in graph.nodes if n.name)
    return names


def make_constant(graph: gs.Graph, base: str, values: np.ndarray) -> gs.Constant:
    """A new initializer named after ``base``."""
    import numpy as np
    import onnx_graphsurgeon as gs

    return gs.Constant(unique_name(graph, base), np.ascontiguousarray(values))


def replace_uses(graph: gs.Graph, old: Any, new: Any) -> None:
    """Every consumer of ``old`` (nodes, subgraph captures) reads ``new`` instead (graph outputs excluded)."""
    for node in list(old.outputs):
        for i, t in enumerate(node.inputs):
            if t is old:
                node.inputs[i] = new
    for sub in graph.subgraphs(recursive=True) if hasattr(graph, "subgraphs") else ():
        for node in sub.nodes:
            for i, t in enumerate(node.inputs):
                if t is old:
                    node.inputs[i] = new


def bypass(graph: gs.Graph, node: gs.Node, keep: Any = None) -> str | None:
    """Remove a node whose output equals its input ``keep`` (default: first input).

    Returns None on success, or a reason why it cannot be removed (a graph output that would have to be
    renamed onto a graph input or another output).
    """
    src = keep if keep is not None else node.inputs[0]
    out = node.outputs[0]
    if is_graph_output(graph, out):
        prod = producer(src)
        if prod is None or is_graph_output(graph, src) or is_graph_input(graph, src):
            return "its output is a graph output fed directly by a graph input, output or constant"
        if not any(n is prod for n in graph.nodes):
            # src comes from an enclosing graph (a subgraph's outer-scope capture): renaming the outer
            # producer's output would break the enclosing graph.
            return "its output is a subgraph output fed directly by an outer-scope tensor"
        # The producer writes the graph output directly; other readers of src read it too.
        idx = next(i for i, t in enumerate(prod.outputs) if t is src)
        for c in list(src.outputs):
            if c is not node:
                for i, t in enumerate(c.inputs):
                    if t is src:
                        c.inputs[i] = out
        prod.outputs[idx] = out
        node.inputs.clear()
        node.outputs.clear()
        return None
    replace_uses(graph, out, src)
    node.inputs.clear()
    node.outputs.clear()
    return None


def node_attr(node: gs.Node, name: str, default: Any = None) -> Any:
    return node.attrs.get(name, default)


def shape_of(tensor: Any) -> tuple[Any, ...] | None:
    shape = getattr(tensor, "shape", None)
    return tuple(shape) if shape is not None else None


def static_shape(tensor: Any) -> tuple[int, ...] | None:
    """The tensor's shape if every dimension is a known int."""
    shape = shape_of(tensor)
    if shape is None or any(not isinstance(d, int) or d < 0 for d in shape):
        return None
    return tuple(int(d) for d in shape)


def nodes_by_op(graph: gs.Graph, ops: Iterable[str]) -> list[gs.Node]:
    wanted = set(ops)
    return [n for n in graph.nodes if n.op in wanted and n.domain in ("", "ai.onnx", None)]


def replace_graph(graph: gs.Graph, new: gs.Graph) -> None:
    """Make ``graph`` (the object the pipeline holds) the same graph as ``new``."""
    graph.nodes = new.nodes
    graph.inputs = new.inputs
    graph.outputs = new.outputs
    graph.opset = new.opset
    graph.import_domains = new.import_domains
    graph.functions = list(new.functions)


def toposort(graph: gs.Graph) -> gs.Graph:
    """``graph.toposort()`` that also works on graphs with both model-local functions and If/Loop/Scan bodies.

    onnx-graphsurgeon (0.5, 0.6) sorts functions by walking the *main* graph's subgraphs from inside
    themselves, which recurses without end as soon as the graph has a subgraph and a function (a kmeans'd
    model with an If). There the nodes are sorted by onnx-graphsurgeon and the functions here: every function
    after the functions its body calls.
    """
    if not graph.functions or not any(True for _ in graph.subgraphs()):
        return graph.toposort()
    graph.toposort(mode="nodes")
    by_id = {(f.domain, f.name): f for f in graph.functions}
    ordered: list[Any] = []
    state: dict[tuple[str, str], bool] = {}  # False: being visited, True: placed

    def place(key: tuple[str, str]) -> None:
        if state.get(key) is not None:
            return  # placed, or a call cycle (invalid ONNX; the checker reports it)
        state[key] = False
        for node in by_id[key].nodes:
            callee = (node.domain, node.op)
            if callee in by_id:
                place(callee)
        state[key] = True
        ordered.append(by_id[key])

    for key in by_id:
        place(key)
    graph.functions = ordered
    return graph


def subgraph_nodes(graph: gs.Graph, ops: Iterable[str] | None = None) -> list[tuple[gs.Node, str]]:
    """Nodes inside If/Loop/Scan bodies (nested ones included), optionally only standard ops of ``ops``,
    each with where it lives ("If If_0 then_branch"), so that passes that rewrite the main graph only can
    say what they left alone."""
    import onnx_graphsurgeon as gs

    wanted = set(ops) if ops is not None else None
    found: list[tuple[gs.Node, str]] = []
    for node in graph.nodes:
        for attr, value in node.attrs.items():
            bodies = value if isinstance(value, list) else [value]
            for body in bodies:
                if not isinstance(body, gs.Graph):
                    continue
                where = f"{node.op} {node.name or '(unnamed)'} {attr}"
                found.extend(
                    (n, where)
                    for n in body.nodes
                    if wanted is None or (n.op in wanted and n.domain in ("", "ai.onnx", None))
                )
                found.extend(subgraph_nodes(body, wanted))
    return found


def single_consumer(tensor: Any, graph: gs.Graph) -> gs.Node | None:
    """The only consumer of ``tensor``, when it has exactly one and is not a graph output."""
    if len(tensor.outputs) != 1 or is_graph_output(graph, tensor):
        return None
    return tensor.outputs[0]


def param_count(node: gs.Node) -> int:
    """Number of constant (weight) elements a node reads."""
    import numpy as np

    return int(sum(np.prod(t.shape) for t in node.inputs if is_const(t) and t.shape is not None))
