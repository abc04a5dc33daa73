"""Constant evaluation of graph regions with onnxruntime (used by normalization and ``fold-constants``).

A node is foldable when every input is a constant or produced by a foldable node, it is deterministic, it
has no subgraph, and it is a standard-domain op. All foldable nodes are evaluated in one onnxruntime run
(optimizations off); if that fails, node by node so that one bad node only blocks itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from onnxcomp.graph import is_const, is_empty, is_standard, toposort

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

logger = logging.getLogger(__name__)

NONDETERMINISTIC = {
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "Dropout",  # folded by `eliminate` when inference-mode; never evaluated here
}
# Ops whose output is large from small inputs: folded only when the result feeds a weight input or is small.
EXPANDING = {"ConstantOfShape", "Expand", "Tile", "Range"}
SUBGRAPH_OPS = {"If", "Loop", "Scan", "SequenceMap"}


@dataclass
class FoldResult:
    folded: list[str] = field(default_factory=list)  # node names
    failed: dict[str, str] = field(default_factory=dict)  # node name -> reason
    shapes: int = 0


def foldable_nodes(graph: gs.Graph, max_elements: int = 1 << 26) -> list[gs.Node]:
    """Nodes computable from constants alone, in topological order."""
    toposort(graph)
    const_tensors: set[int] = set()
    out: list[gs.Node] = []
    for node in graph.nodes:
        if not is_standard(node) or node.op in NONDETERMINISTIC or node.op in SUBGRAPH_OPS:
            continue
        if node.op == "Constant" or all(is_empty(t) or is_const(t) or id(t) in const_tensors for t in node.inputs):
            if not node.outputs:
                continue
            out.append(node)
            for t in node.outputs:
                const_tensors.add(id(t))
    return out


def fold(graph: gs.Graph, nodes: list[gs.Node] | None = None) -> FoldResult:
    """Replace the outputs of ``nodes`` (default: all foldable) by constants; the nodes become dead."""
    import onnx_graphsurgeon as gs

    result = FoldResult()
    nodes = foldable_nodes(graph) if nodes is None else nodes
    if not nodes:
        return result
    node_set = {id(n) for n in nodes}
    # Tensors needed outside the folded region (or graph outputs): evaluate just those.
    graph_outputs = {id(t) for t in graph.outputs}
    wanted: list[gs.Variable] = []
    for n in nodes:
        for t in n.outputs:
            if isinstance(t, gs.Constant):
                continue
            if id(t) in graph_outputs or any(id(c) not in node_set for c in t.outputs) or _used_in_subgraph(graph, t):
                wanted.append(t)
    if not wanted:
        return result
    values = _evaluate(graph, nodes, wanted, result)
    for t in wanted:
        if t.name in values:
            _to_constant(t, values[t.name])
    result.folded = [n.name for n in nodes if all(isinstance(t, gs.Constant) or not t.outputs for t in n.outputs)]
    return result


def _used_in_subgraph(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    for sub in graph.subgraphs(recursive=True):
        for node in sub.nodes:
            if any(t is tensor for t in node.inputs):
                return True
    return False


def _to_constant(tensor: gs.Variable, value: np.ndarray) -> None:
    """Turn a Variable into a Constant in place (consumers keep pointing at the same object)."""
    import numpy as np

    for prod in list(tensor.inputs):
        for i, t in enumerate(prod.outputs):
            if t is tensor:
                # detach without touching the tensor's consumers
                prod.outputs[i] = _placeholder(tensor)
    tensor.to_constant(np.asarray(value))


def _placeholder(tensor: gs.Variable) -> gs.Variable:
    import onnx_graphsurgeon as gs

    return gs.Variable(f"{tensor.name}__folded")


def _evaluate(
    graph: gs.Graph, nodes: list[gs.Node], wanted: list[gs.Variable], result: FoldResult
) -> dict[str, np.ndarray]:
    """Run the foldable region in onnxruntime; on failure, node by node."""
    try:
        return _run_region(graph, nodes, [t.name for t in wanted])
    except Exception as err:  # isolate the failing node(s) below
        logger.debug("batched constant evaluation failed (%s); folding node by node", err)
    values: dict[str, np.ndarray] = {}
    import onnx_graphsurgeon as gs

    computed: dict[int, np.ndarray] = {}
    wanted_ids = {id(t) for t in wanted}
    for node in nodes:
        ins = []
        ok = True
        for t in node.inputs:
            if is_empty(t) or isinstance(t, gs.Constant):
                ins.append(t)
            elif id(t) in computed:
                ins.append(gs.Constant(t.name, computed[id(t)]))
            else:
                ok = False
        if not ok:
            result.failed[node.name] = "an input could not be evaluated"
            continue
        outs = [gs.Variable(t.name) for t in node.outputs]
        single = gs.Graph(
            nodes=[gs.Node(node.op, node.name, dict(node.attrs), ins, outs, node.domain)],
            inputs=[],
            outputs=outs,
            opset=graph.opset,
            import_domains=graph.import_domains,
        )
        try:
            vals = _run_graph(single, [t.name for t in outs])
        except Exception as err:
            result.failed[node.name] = " ".join(str(err).split())[:200]
            continue
        for t, v in zip(node.outputs, vals.values()):
            computed[id(t)] = v
            if id(t) in wanted_ids:
                values[t.name] = v
    return values


def _run_region(graph: gs.Graph, nodes: list[gs.Node], names: list[str]) -> dict[str, np.ndarray]:
    import onnx_graphsurgeon as gs

    region = gs.Graph(nodes=[], inputs=[], outputs=[], opset=graph.opset, import_domains=graph.import_domains)
    # Build a copy of the region sharing tensors: export with the original nodes is safe because we only
    # read them (export does not mutate).
    region.nodes = list(nodes)
    tensors = {t.name: t for n in nodes for t in n.outputs}
    region.outputs = [tensors[n] for n in names]
    return _run_graph(region, names)


def _run_graph(g: gs.Graph, names: list[str]) -> dict[str, np.ndarray]:
    import onnx
    import onnx_graphsurgeon as gs

    from onnxcomp.ort import session

    model = gs.export_onnx(g, do_type_check=False)
    del model.graph.output[:]
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    model.ir_version = max(model.ir_version, 4)
    if model.ir_version > 10:
        model.ir_version = 10
    sess = session(model, optimize=False)
    outs = sess.run(names, {})
    return dict(zip(names, outs))
