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

AI_ONNX = ("", "ai.onnx")  # the standard domain as opset imports name it
STANDARD_DOMAINS = (*AI_ONNX, None)  # ... and as nodes carry it (onnx-graphsurgeon may leave it None)


def import_model(model: onnx.ModelProto) -> gs.Graph:
    """ModelProto -> gs.Graph (the model should be normalized first, see :func:`onnxcomp.io.normalize`).

    Initializers whose data stayed in their files (a model over 2 GB, :func:`onnxcomp.io.on_disk`) are read
    from the file when a pass asks for their values; untouched, they are exported as the same file reference.
    """
    quiet_graphsurgeon()
    import onnx
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    _keep_declared_shapes(model, graph)
    for t in graph.tensors().values():
        lazy = getattr(t, "_values", None)
        if isinstance(t, gs.Constant) and _is_lazy(lazy) and lazy.tensor.data_location == onnx.TensorProto.EXTERNAL:
            t._values = _file_values(lazy.tensor)
            t.data_location = None  # new values a pass gives it are stored in the model, not in that file
    return graph


def _keep_declared_shapes(model: onnx.ModelProto, graph: gs.Graph) -> None:
    """Graph inputs and outputs keep the shape the graph declares where a shapeless ``value_info`` entry of the
    same name took it (onnx-graphsurgeon prefers value_info): onnxruntime's quantizer writes its output once with
    a shape and once without, and the optimized model's output had none, which the checker refuses."""
    declared = {v.name: v.type.tensor_type for v in (*model.graph.input, *model.graph.output)}
    for t in (*graph.inputs, *graph.outputs):
        tt = declared.get(t.name)
        if t.shape is None and tt is not None and tt.HasField("shape"):
            t.shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]


def _is_lazy(values: Any) -> bool:
    from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues

    return isinstance(values, LazyValues) and not isinstance(values, SparseValues)


def _file_values(tensor: onnx.TensorProto) -> Any:
    """onnx-graphsurgeon LazyValues that read an external tensor from its (absolute) file location."""
    from onnx_graphsurgeon.ir.tensor import LazyValues

    class FileValues(LazyValues):
        def load(self) -> Any:
            from onnxcomp.io import tensor_values

            return tensor_values(self.tensor)

        def sample(self, n: int) -> bytes | None:
            """The bytes of ``n`` evenly spaced elements, read through a memory map (a few pages, not the
            whole tensor); None for element types numpy cannot map."""
            import numpy as np
            import onnx

            try:
                dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.tensor.data_type))
            except (KeyError, TypeError, ValueError):
                return None
            if dtype.kind not in "biuf":
                return None
            info = {e.key: e.value for e in self.tensor.external_data}
            count = int(np.prod(self.tensor.dims))
            if count == 0:
                return b""
            flat = np.memmap(info["location"], dtype=dtype, mode="r", offset=int(info.get("offset", 0)), shape=(count,))
            index = np.linspace(0, count - 1, min(n, count)).astype(np.int64) if count > n else slice(None)
            return np.array(flat[index]).tobytes()

    return FileValues(tensor)


def quiet_graphsurgeon() -> None:
    """onnx-graphsurgeon logs warnings to stdout; keep only its errors (our own logging reports skips)."""
    import onnx_graphsurgeon as gs

    gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR


def export_model(graph: gs.Graph, ctx: PassContext | None = None, *, release: bool = False) -> onnx.ModelProto:
    """gs.Graph -> ModelProto, keeping opset imports, IR version, metadata and provenance tags.

    Initializers still held by the imported model (weights no pass touched) are copied into the result once,
    tensor by tensor (onnx-graphsurgeon's export would copy them twice, through make_graph and make_model,
    and rename the source tensors). ``release=True`` empties each source tensor once copied: the imported
    model is then spent, and the weights are never held twice (models of several GB).
    """
    import onnx
    import onnx_graphsurgeon as gs

    sources = _stub_lazy_constants(graph)
    try:
        model = gs.export_onnx(graph, do_type_check=False)
    finally:
        for const, lazy in sources.values():
            const._values = lazy
    for t in model.graph.initializer:
        entry = sources.get(t.name)
        if entry is not None:
            src = entry[1].tensor
            t.CopyFrom(src)
            t.name = entry[0].name
            if release:
                src.Clear()
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
    _hoist_shared_body_initializers(model)
    if ctx is not None and ctx.provenance:
        for node in model.graph.node:
            tag = ctx.provenance.get(node.name)
            if tag:
                node.doc_string = tag
    return model


def _stub_lazy_constants(graph: gs.Graph) -> dict[str, tuple[gs.Constant, Any]]:
    """Main-graph constants whose values are still the imported TensorProto (not loaded into numpy) get a
    data-less stand-in for the export; returns {name: (constant, its LazyValues)} to put the data back."""
    import onnx
    import onnx_graphsurgeon as gs
    from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues

    # a constant read inside an If/Loop/Scan body is exported with the body too: left as it is
    in_bodies = {id(t) for sub in graph.subgraphs(recursive=True) for n in sub.nodes for t in n.inputs}
    out: dict[str, tuple[gs.Constant, Any]] = {}
    for name, t in graph.tensors().items():
        lazy = getattr(t, "_values", None)
        if not isinstance(t, gs.Constant) or type(lazy) is not LazyValues or isinstance(lazy, SparseValues):
            continue
        if id(t) in in_bodies:
            continue
        src = lazy.tensor
        stub = onnx.TensorProto(name=name, data_type=src.data_type, dims=list(src.dims))
        out[name] = (t, lazy)
        t._values = LazyValues(stub)
    return out


def _hoist_shared_body_initializers(model: onnx.ModelProto) -> None:
    """One copy of a weight that several If/Loop/Scan bodies read from the outer scope.

    onnx-graphsurgeon writes a constant as an initializer of every graph whose nodes read it: a main-graph
    weight read by both branches of an If is written twice, into each branch (the file grows by a copy). The
    copies of one name with the same contents go back to the main graph, once, the bodies reading it from the
    outer scope, when no scope defines that name otherwise (a node output or a graph input).
    """
    bodies: list[onnx.GraphProto] = []
    stack = [model.graph]
    defined: set[str] = set()
    while stack:
        g = stack.pop()
        defined.update(o for n in g.node for o in n.output)
        defined.update(i.name for i in g.input)
        for node in g.node:
            for a in node.attribute:
                inner = [a.g] if a.HasField("g") else list(a.graphs)
                bodies.extend(inner)
                stack.extend(inner)
    copies: dict[str, list[tuple[onnx.GraphProto, int]]] = {}
    for body in bodies:
        for i, init in enumerate(body.initializer):
            copies.setdefault(init.name, []).append((body, i))
    main = {init.name: init for init in model.graph.initializer}
    drop: dict[int, tuple[onnx.GraphProto, list[int]]] = {}
    for name, where in copies.items():
        if (len(where) < 2 and name not in main) or name in defined:
            continue
        first = main.get(name) or where[0][0].initializer[where[0][1]]
        data = first.SerializeToString()
        if any(g.initializer[i].SerializeToString() != data for g, i in where if g.initializer[i] is not first):
            continue  # different tensors under one name (sibling scopes): left as they are
        if name not in main:
            model.graph.initializer.append(first)
        for g, i in where:
            drop.setdefault(id(g), (g, []))[1].append(i)
    for g, idx in drop.values():
        for i in sorted(idx, reverse=True):
            del g.initializer[i]


def _fix_opset_imports(model: onnx.ModelProto, original: dict[str, int]) -> None:
    """Keep every original domain version, add ones that new nodes use (custom domain: version 1)."""
    import onnx

    have = {op.domain: op.version for op in model.opset_import}
    for domain, version in original.items():
        have[domain] = max(have.get(domain, 0), version)
    # nodes of If/Loop/Scan bodies count too: a com.onnxcomp node written inside a body needs the model's import
    used = {n.domain for n in _proto_nodes(model.graph)} | {n.domain for f in model.functions for n in f.node}
    for f in model.functions:
        used.add(f.domain)
    for domain in used:
        if domain not in have:
            have[domain] = 1
    del model.opset_import[:]
    for domain in sorted(have, key=lambda d: (d not in AI_ONNX, d)):
        model.opset_import.append(onnx.helper.make_opsetid(domain, have[domain]))


def _proto_nodes(graph: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    """Every node of a GraphProto and of its subgraph attributes (nested bodies included), without recursion."""
    stack = [graph]
    while stack:
        g = stack.pop()
        for node in g.node:
            yield node
            for a in node.attribute:
                if a.HasField("g"):
                    stack.append(a.g)
                stack.extend(a.graphs)


def opset_version(graph: gs.Graph, domain: str = "") -> int:
    """The ai.onnx (or given domain) opset the graph imports."""
    if domain in AI_ONNX:
        return int(graph.opset)
    return int((graph.import_domains and {d.domain: d.version for d in graph.import_domains}.get(domain)) or 0)


# ------------------------------------------------------------------------------------------- tensors
def const_value(tensor: Any) -> np.ndarray | None:
    """The value of a constant tensor (initializer or folded), else None."""
    import onnx_graphsurgeon as gs

    if isinstance(tensor, gs.Constant):
        return tensor.values
    return None


def peek_values(tensor: Any) -> np.ndarray:
    """A constant's values, without keeping them in the graph.

    onnx-graphsurgeon converts an imported initializer to numpy on first access and keeps the array: the
    weight is then held twice (the model's TensorProto and the array) and re-encoded at export. A pass that
    only reads a weight (hashing, sampling, checking) reads it here; a weight no pass changes stays the
    imported TensorProto to the end.
    """
    lazy = getattr(tensor, "_values", None)
    if _is_lazy(lazy):
        return lazy.load()
    return tensor.values


def is_const(tensor: Any) -> bool:
    import onnx_graphsurgeon as gs

    return isinstance(tensor, gs.Constant)


def is_empty(tensor: Any) -> bool:
    """An omitted optional input (empty name)."""
    return tensor is None or (not tensor.name and not is_const(tensor))


def producer(tensor: Any) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def is_graph_output(graph: gs.Graph, tensor: Any) -> bool:
    return any(t is tensor for t in graph.outputs)


def is_graph_input(graph: gs.Graph, tensor: Any) -> bool:
    return any(t is tensor for t in graph.inputs)


def unique_name(graph: gs.Graph, base: str, taken: set[str] | None = None) -> str:
    """``base`` if unused in the graph (tensors and nodes), else ``base_1``, ``base_2``..."""
    return fresh_name(base, taken if taken is not None else _all_names(graph))


def fresh_name(base: str, taken: set[str]) -> str:
    """``base`` if not in ``taken``, else ``base_1``, ``base_2``...; the name is added to ``taken``."""
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def _all_names(graph: gs.Graph) -> set[str]:
    """Tensor and node names of the graph and of its If/Loop/Scan bodies: a new name must not shadow, nor be
    shadowed by, a name of another scope (ONNX names are unique across the model's scopes)."""
    names: set[str] = set()
    for g, _ in scopes(graph):
        names.update(g.tensors().keys())
        names.update(n.name for n in g.nodes if n.name)
    return names


def make_constant(graph: gs.Graph, base: str, values: np.ndarray) -> gs.Constant:
    """A new initializer named after ``base``."""
    import numpy as np
    import onnx_graphsurgeon as gs

    return gs.Constant(unique_name(graph, base), np.ascontiguousarray(values))


def replace_uses(graph: gs.Graph, old: Any, new: Any) -> None:
    """Every consumer of ``old`` (nodes, subgraph captures) reads ``new`` instead (graph outputs excluded).

    onnx-graphsurgeon keeps ``old.outputs`` in sync with every node input, subgraph nodes that capture
    ``old`` from an outer scope included (they share the tensor object), so the consumers are found without
    walking the graph: O(uses), not O(graph) per call.
    """
    for node in list(old.outputs):
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


def shape_of(tensor: Any) -> tuple[Any, ...] | None:
    shape = getattr(tensor, "shape", None)
    return tuple(shape) if shape is not None else None


def static_shape(tensor: Any) -> tuple[int, ...] | None:
    """The tensor's shape if every dimension is a known int."""
    shape = shape_of(tensor)
    if shape is None or any(not isinstance(d, int) or d < 0 for d in shape):
        return None
    return tuple(int(d) for d in shape)


def replace_graph(graph: gs.Graph, new: gs.Graph) -> None:
    """Make ``graph`` (the object the pipeline holds) the same graph as ``new``."""
    graph.nodes = new.nodes
    graph.inputs = new.inputs
    graph.outputs = new.outputs
    graph.opset = new.opset
    graph.import_domains = new.import_domains
    graph.functions = list(new.functions)


def toposort(graph: gs.Graph) -> gs.Graph:
    """Topologically sort the graph's nodes (and its functions, If/Loop/Scan bodies) in place; returns it.

    The order is onnx-graphsurgeon's (``Graph.toposort``): every node gets a level, 1 + the highest level of
    the nodes producing its inputs (outer-scope captures of its subgraphs included), and the nodes are sorted
    stably by level, ties in the post-order of a depth-first walk from the nodes in list order. It is computed
    here without recursion, in time linear in the graph: onnx-graphsurgeon recurses once per node of a chain
    (a RecursionError on a long chain listed out of order) and costs seconds per call on 20,000 nodes.

    Model-local functions are placed after the functions their bodies call (onnx-graphsurgeon 0.5, 0.6 sort
    functions by walking the main graph's subgraphs from inside themselves, which recurses without end as soon
    as the graph has a subgraph and a function, so that order is computed here when there are subgraphs).
    """
    for func in graph.functions:
        _sort_nodes(func)
    _sort_nodes(graph)
    if not graph.functions:
        return graph
    if not any(True for _ in graph.subgraphs()):
        return graph.toposort(mode="functions")
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


def _sort_nodes(graph: gs.Graph) -> None:
    """Sort ``graph.nodes`` (and its subgraphs' nodes) in onnx-graphsurgeon's level order, iteratively."""
    import onnx_graphsurgeon as gs

    nodes = list(graph.nodes)
    bodies = {id(n): subs for n in nodes if (subs := _bodies(n))}
    for subs in bodies.values():
        for sub in subs:
            _sort_nodes(sub)
    # A tensor is local (its producers order this graph's nodes) when a node here produces it, it is a
    # graph input, or it is a constant: by name, as onnx-graphsurgeon decides it.
    local = {t.name for n in nodes for t in n.outputs if not t.is_empty()}
    local.update(t.name for t in graph.inputs)
    in_graph = {id(n) for n in nodes}

    def producers(node: gs.Node) -> list[gs.Node]:
        found: dict[int, gs.Node] = {}
        tensors = list(node.inputs)
        for sub in bodies.get(id(node), ()):
            tensors.extend(_foreign_tensors(sub).values())
        for t in tensors:
            if t.inputs and (t.name in local or isinstance(t, gs.Constant)):
                for p in t.inputs:
                    if id(p) in in_graph:
                        found.setdefault(id(p), p)
        return list(found.values())

    level: dict[int, int] = {}  # id(node) -> level; insertion order is the depth-first post-order
    inputs: dict[int, list[gs.Node]] = {}
    for root in nodes:
        if id(root) in level:
            continue
        inputs[id(root)] = producers(root)
        stack = [(root, iter(inputs[id(root)]))]
        open_ids = {id(root)}
        while stack:
            node, pending = stack[-1]
            for p in pending:
                if id(p) in level:
                    continue
                if id(p) in open_ids:
                    raise ValueError(f"cycle in graph {graph.name!r} through node {p.name or p.op!r}")
                inputs[id(p)] = producers(p)
                stack.append((p, iter(inputs[id(p)])))
                open_ids.add(id(p))
                break
            else:
                stack.pop()
                open_ids.discard(id(node))
                level[id(node)] = 1 + max((level[id(p)] for p in inputs[id(node)]), default=-1)
    by_id = {id(n): n for n in nodes}
    order = sorted(level, key=level.__getitem__)  # stable: ties keep the post-order
    graph.nodes = [by_id[i] for i in order]


def _bodies(node: gs.Node) -> list[gs.Graph]:
    """The node's subgraphs (If/Loop/Scan bodies), from its attributes."""
    import onnx_graphsurgeon as gs

    found: list[gs.Graph] = []
    for value in node.attrs.values():
        if isinstance(value, gs.Graph):
            found.append(value)
        elif isinstance(value, list):
            found.extend(v for v in value if isinstance(v, gs.Graph))
    return found


def _foreign_tensors(graph: gs.Graph) -> dict[str, Any]:
    """Tensors a (sub)graph reads from enclosing scopes, nested bodies included (onnx-graphsurgeon's rule)."""
    import onnx_graphsurgeon as gs

    local = {t.name for n in graph.nodes for t in n.outputs if not t.is_empty()}
    local.update(t.name for t in graph.inputs)
    found: dict[str, Any] = {}
    for node in graph.nodes:
        for t in node.inputs:
            if t.name not in local and not isinstance(t, gs.Constant):
                found[t.name] = t
        for sub in _bodies(node):
            found.update((k, t) for k, t in _foreign_tensors(sub).items() if k not in local)
    return found


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
                found.extend((n, where) for n in body.nodes if wanted is None or (n.op in wanted and is_standard(n)))
                found.extend(subgraph_nodes(body, wanted))
    return found


def scopes(graph: gs.Graph) -> list[tuple[gs.Graph, str | None]]:
    """The graph and its If/Loop/Scan bodies, nested ones included, depth first in node order; each with where
    it lives ("If If_0 then_branch"; None for ``graph`` itself)."""
    import onnx_graphsurgeon as gs

    found: list[tuple[gs.Graph, str | None]] = []
    stack: list[tuple[gs.Graph, str | None]] = [(graph, None)]
    while stack:
        g, where = stack.pop()
        found.append((g, where))
        inner = []
        for node in g.nodes:
            for attr, value in node.attrs.items():
                for body in value if isinstance(value, list) else [value]:
                    if isinstance(body, gs.Graph):
                        inner.append((body, f"{node.op} {node.name or '(unnamed)'} {attr}"))
        stack.extend(reversed(inner))
    return found


def scoped_nodes(graph: gs.Graph) -> list[tuple[gs.Node, gs.Graph, str | None]]:
    """Every node of the graph and of its If/Loop/Scan bodies in execution-like order (a control-flow node's
    bodies right after it), each with the (sub)graph holding it and where that is (None: ``graph``)."""
    import onnx_graphsurgeon as gs

    found: list[tuple[gs.Node, gs.Graph, str | None]] = []
    stack: list[tuple[gs.Graph, str | None, int]] = [(graph, None, 0)]
    while stack:
        g, where, i = stack.pop()
        if i >= len(g.nodes):
            continue
        node = g.nodes[i]
        found.append((node, g, where))
        stack.append((g, where, i + 1))
        inner = [
            (body, f"{node.op} {node.name or '(unnamed)'} {attr}", 0)
            for attr, value in node.attrs.items()
            for body in (value if isinstance(value, list) else [value])
            if isinstance(body, gs.Graph)
        ]
        stack.extend(reversed(inner))
    return found


def constant_node_value(tensor: Any) -> gs.Constant | None:
    """The tensor value of the standard Constant node (``value`` attribute only) that writes ``tensor``, or None."""
    import onnx_graphsurgeon as gs

    prod = producer(tensor)
    if prod is None or prod.op != "Constant" or not is_standard(prod) or set(prod.attrs) != {"value"}:
        return None
    value = prod.attrs["value"]
    return value if isinstance(value, gs.Constant) else None


def inline_constant_node(graph: gs.Graph, tensor: Any) -> Any:
    """``tensor`` as a constant when a standard Constant node (``value`` attribute) writes it: the node's readers
    read the value as an initializer of their graph instead (lossless; the Constant node is removed); else
    ``tensor`` itself. Weights inside If/Loop/Scan bodies are often Constant nodes (the pipeline's constant
    folding covers the main graph only). ``graph``: the (sub)graph holding the Constant node."""
    import onnx_graphsurgeon as gs

    value = constant_node_value(tensor)
    if value is None or is_graph_output(graph, tensor):
        return tensor
    prod = producer(tensor)
    at = next((i for i, n in enumerate(graph.nodes) if n is prod), None)
    if at is None:
        return tensor
    const = gs.Constant(tensor.name, value.values)
    prod.outputs.clear()
    del graph.nodes[at]  # not left dead: a graph exported before the next cleanup must load
    replace_uses(graph, tensor, const)
    return const


def single_consumer(tensor: Any, graph: gs.Graph) -> gs.Node | None:
    """The only consumer of ``tensor``, when it has exactly one and is not a graph output."""
    if len(tensor.outputs) != 1 or is_graph_output(graph, tensor):
        return None
    return tensor.outputs[0]


def param_count(node: gs.Node) -> int:
    """Number of constant (weight) elements a node reads."""
    import numpy as np

    return int(sum(np.prod(t.shape) for t in node.inputs if is_const(t) and t.shape is not None))


# ------------------------------------------------------------------------------------------- vocabulary
def is_standard(node: Any) -> bool:
    """A node of the standard (ai.onnx) domain."""
    return node.domain in STANDARD_DOMAINS


def label(node: gs.Node) -> str:
    """A node's name for reports, notes and errors: its name, else op(first output) (unique per node)."""
    if node.name:
        return str(node.name)
    out = next((t.name for t in node.outputs if t.name), "")
    return f"{node.op}({out})" if out else str(node.op)


def set_const(
    graph: gs.Graph, node: gs.Node, index: int, values: np.ndarray, name: str, taken: set[str] | None = None
) -> None:
    """Input ``index`` of ``node`` holds the constant ``values`` from now on.

    In place when ``node`` is the constant's only reader (reading it once) and it is not a graph output; else a
    new initializer named ``name`` (made unique; ``taken``: the name set of :func:`unique_name`) for this node
    only, so that the other readers keep theirs. Absent optional inputs before ``index`` become empty ones.
    """
    import numpy as np
    import onnx_graphsurgeon as gs

    values = np.ascontiguousarray(values)
    old = node.inputs[index] if index < len(node.inputs) else None
    if old is not None and is_const(old) and _only_reader(graph, old, node):
        old.values = values
        return
    new = gs.Constant(unique_name(graph, name, taken), values)
    while len(node.inputs) < index:
        node.inputs.append(gs.Variable.empty())
    if index < len(node.inputs):
        node.inputs[index] = new
    else:
        node.inputs.append(new)


def _only_reader(graph: gs.Graph, tensor: Any, node: gs.Node) -> bool:
    readers = {id(n): n for n in tensor.outputs}.values()
    uses = sum(1 for n in readers for x in n.inputs if x is tensor)
    return uses <= 1 and all(n is node for n in readers) and not is_graph_output(graph, tensor)
