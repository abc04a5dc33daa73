"""Constant evaluation of graph regions with onnxruntime (used by normalization and ``fold-constants``).

A node is foldable when every input is a constant or produced by a foldable node, it is deterministic, it
has no subgraph, it is a standard-domain op and it does not decode stored quantized weights
(``STORED_FORMS``). All foldable nodes are evaluated in one onnxruntime run (optimizations off); if that
fails, node by node so that one bad node only blocks itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from onnxcomp.graph import is_const, is_empty, is_standard, static_shape, toposort

if TYPE_CHECKING:
    from collections.abc import Callable

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
# Ops whose output can be far larger than their inputs: constant "fills" (ConstantOfShape, Expand of a scalar,
# Tile of a constant, Range). Materializing a large one turns a few bytes of graph into megabytes of
# initializers (the model zoo's light models, whose weights are fills: vgg19 grew from 10 KB to 513 MB). So a
# fill with more than ``max_fill_elements`` output elements, FILL_GROWTH times its inputs' or more, is not
# folded: it stays the node that computes it (onnxruntime computes it when it runs the model), and nodes
# computed from it are not folded either. Smaller fills become initializers, and all of them when asked
# (``fold-constants(materialize-fills=true)``). Passes that need a kept fill's values skip with that reason.
# Loading a model (api.optimize, before the passes) folds fills up to LOAD_FILL_ELEMENTS only (shape
# arithmetic, small masks): materializing more is fold-constants' decision, under its options.
# A broadcasting Mul of constants is one too: kmeans' scaled codebooks compute their per-channel tables
# [outputs, 2**bits] as Mul(scales [outputs, 1], codebook [1, 2**bits]), and a re-loaded compressed model keeps them.
EXPANDING = {"ConstantOfShape", "Expand", "Tile", "Range", "Mul"}
FILL_GROWTH = 4
MAX_FILL_ELEMENTS = 1 << 16
LOAD_FILL_ELEMENTS = 1 << 10
# Any other constant computation that decodes stored data (standard-op decodes of packed codes: kmeans' function
# bodies after inline-functions, other tools' uint8 weights with a Cast and a Mul) is judged by its value once
# computed: a value of DECODE_MIN_BYTES or more, DECODE_GROWTH times the bytes of the stored constants it is
# computed from or more, stays the subgraph that computes it (onnxruntime folds it when it creates a session).
# Stored constants under DECODE_MIN_SOURCE bytes are no stored data but a fill's shape (the fill rule above).
# Folded, a 4-bit model inlined for a runtime without model-local functions went back to float32 on the next
# `onnxcomp optimize` (the digits CNN: 72,226 -> 416,762 bytes).
DECODE_GROWTH = 4
DECODE_MIN_BYTES = 1 << 12
DECODE_MIN_SOURCE = 1 << 10
SUBGRAPH_OPS = {"If", "Loop", "Scan", "SequenceMap"}
# Ops that decode a model's stored form: never folded. DequantizeLinear of an int8 / int4 weight is how a QDQ model
# stores its weights; onnxruntime fuses DequantizeLinear -> Conv / MatMul -> QuantizeLinear into integer kernels
# (QLinearConv), so folding it would store the weights 4-8x larger and run them in float, with other outputs than
# the quantized model's (an onnxruntime static-quantized digits CNN: 119,592 -> 428,059 bytes).
STORED_FORMS = {"DequantizeLinear"}


@dataclass
class FoldResult:
    folded: list[str] = field(default_factory=list)  # node names
    failed: dict[str, str] = field(default_factory=dict)  # node name -> reason
    shapes: int = 0
    #: decoded values left computed (``decodes_kept``): producing node name -> (value bytes, stored bytes)
    decodes: dict[str, tuple[int, int]] = field(default_factory=dict)


def foldable_nodes(graph: gs.Graph, max_fill_elements: int | None = MAX_FILL_ELEMENTS) -> list[gs.Node]:
    """Nodes computable from constants alone, in topological order.

    Large fills (:func:`large_fill`, more than ``max_fill_elements``; None: no limit) and the nodes computed
    from them are left out.
    """
    toposort(graph)
    const_tensors: set[int] = set()
    out: list[gs.Node] = []
    for node in graph.nodes:
        if not is_standard(node) or node.op in NONDETERMINISTIC or node.op in SUBGRAPH_OPS or node.op in STORED_FORMS:
            continue
        if node.op == "Constant" or all(is_empty(t) or is_const(t) or id(t) in const_tensors for t in node.inputs):
            if not node.outputs:
                continue
            if max_fill_elements is not None and large_fill(node, max_fill_elements) is not None:
                continue
            out.append(node)
            for t in node.outputs:
                const_tensors.add(id(t))
    return _without_stored_forms(graph, out)


def _without_stored_forms(graph: gs.Graph, nodes: list[gs.Node]) -> list[gs.Node]:
    """``nodes`` less those computing constants read only by com.onnxcomp ops (directly or through other such
    nodes): the ops' stored form, which the passes wrote to keep the file small (the Cast and Mul of kmeans'
    int8 and scaled codebooks; folded, an int8 table would be stored 4x larger). onnxruntime folds them when it
    creates a session."""
    from onnxcomp.ops.spec import DOMAIN

    outputs = {id(t) for t in graph.outputs}
    kept: set[int] = set()
    for node in reversed(nodes):
        readers = [c for t in node.outputs for c in t.outputs]
        if (
            readers
            and not any(id(t) in outputs for t in node.outputs)
            and all(c.domain == DOMAIN or id(c) in kept for c in readers)
        ):
            kept.add(id(node))
    return [n for n in nodes if id(n) not in kept] if kept else nodes


def large_fill(node: gs.Node, max_fill_elements: int = MAX_FILL_ELEMENTS) -> int | None:
    """The output element count of ``node`` if it is a fill too large to materialize (see EXPANDING), else None.

    A fill is an EXPANDING op whose static output has more than ``max_fill_elements`` elements and at least
    FILL_GROWTH times as many as its inputs together. An output of unknown shape is not judged (folded).
    """
    import math

    if node.op not in EXPANDING or not is_standard(node) or not node.outputs:
        return None
    shape = static_shape(node.outputs[0])
    if shape is None and node.op == "ConstantOfShape" and node.inputs and is_const(node.inputs[0]):
        dims = node.inputs[0].values.reshape(-1)
        shape = tuple(int(d) for d in dims) if all(d >= 0 for d in dims) else None
    if shape is None:
        return None
    out = math.prod(shape)
    inputs = sum(math.prod(s) for t in node.inputs if not is_empty(t) and (s := static_shape(t)) is not None)
    if out > max_fill_elements and out >= FILL_GROWTH * max(inputs, 1):
        return out
    return None


def kept_fill(tensor: gs.Tensor) -> gs.Node | None:
    """The fill node computing ``tensor`` when it was kept from constant inputs (not materialized), else None:
    passes that need a weight's values name it in their skip reason."""
    prod = tensor.inputs[0] if getattr(tensor, "inputs", None) else None
    if prod is None or prod.op not in EXPANDING or not is_standard(prod):
        return None
    return prod if all(is_empty(t) or is_const(t) for t in prod.inputs) else None


def _upstream(tensor: gs.Tensor, through: Callable[[gs.Node], bool]) -> tuple[list[gs.Constant], list[gs.Node]] | None:
    """The constants and the nodes ``tensor`` is computed from, walking up through the producers ``through``
    accepts (iteratively: decode chains can be deep); None when a tensor on the way has a producer it does not
    accept, or none (a graph input)."""
    consts: list[gs.Constant] = []
    nodes: dict[int, gs.Node] = {}
    stack, seen = [tensor], set()
    while stack:
        t = stack.pop()
        if id(t) in seen or is_empty(t):
            continue
        seen.add(id(t))
        if is_const(t):
            consts.append(t)
            continue
        prod = t.inputs[0] if getattr(t, "inputs", None) else None
        if prod is None or not through(prod):
            return None
        nodes[id(prod)] = prod
        stack.extend(prod.inputs)
    return consts, list(nodes.values())


def computed_from_constants(tensor: gs.Tensor) -> set[str] | None:
    """The ops computing ``tensor`` when standard, deterministic nodes compute it from constants alone (a kept
    fill or decode, a QDQ DequantizeLinear); None when it is a constant itself or reads anything else."""
    found = _upstream(tensor, lambda n: is_standard(n) and n.op not in NONDETERMINISTIC and n.op not in SUBGRAPH_OPS)
    if found is None:
        return None
    return {n.op for n in found[1]} or None


def fill_note(tensor: gs.Tensor) -> str:
    """`` (a ... fill kept as is ...)`` when ``tensor`` is a large constant fill that was not materialized,
    `` (decoded from stored constants ...)`` when it is a decode fold-constants keeps (DECODE_GROWTH), or
    `` (quantized ...)`` when it is read through DequantizeLinear: a pass that needs a weight's values says so in
    its skip reason; else ""."""
    fill = kept_fill(tensor)
    if fill is not None:
        return f" ({fill.op} fill kept as is to keep the model small; fold-constants(materialize-fills=true) folds it)"
    ops = computed_from_constants(tensor)
    if ops is None:
        return ""
    if ops & STORED_FORMS:
        return " (quantized: read through DequantizeLinear from integer constants, which fold-constants keeps)"
    return (
        " (decoded from stored constants by a subgraph left as is, as fold-constants keeps decodes to keep the "
        "model small; fold-constants(materialize-fills=true) folds it)"
    )


def fold(graph: gs.Graph, nodes: list[gs.Node] | None = None, decodes_kept: bool = True) -> FoldResult:
    """Replace the outputs of ``nodes`` (default: all foldable, large fills kept) by constants; the nodes
    become dead. ``decodes_kept``: values that decode stored constants (DECODE_GROWTH) stay computed."""
    import onnx_graphsurgeon as gs

    result = FoldResult()
    nodes = foldable_nodes(graph) if nodes is None else nodes
    if not nodes:
        return result
    node_set = {id(n) for n in nodes}
    # Tensors needed outside the folded region (or graph outputs): evaluate just those.
    graph_outputs = {id(t) for t in graph.outputs}
    in_subgraphs = _subgraph_inputs(graph)
    wanted: list[gs.Variable] = []
    for n in nodes:
        for t in n.outputs:
            if isinstance(t, gs.Constant):
                continue
            if id(t) in graph_outputs or id(t) in in_subgraphs or any(id(c) not in node_set for c in t.outputs):
                wanted.append(t)
    if not wanted:
        return result
    values = _evaluate(graph, nodes, wanted, result)
    stored = _stored_bytes(wanted, node_set) if decodes_kept else {}
    for t in wanted:
        if t.name not in values:
            continue
        size = int(values[t.name].nbytes)
        src = stored.get(id(t), 0)
        if decodes_kept and size >= DECODE_MIN_BYTES and src >= DECODE_MIN_SOURCE and size >= DECODE_GROWTH * src:
            result.decodes[t.inputs[0].name or t.inputs[0].op] = (size, src)
            continue
        _to_constant(t, values[t.name])
    result.folded = [n.name for n in nodes if all(isinstance(t, gs.Constant) or not t.outputs for t in n.outputs)]
    return result


def _stored_bytes(tensors: list[gs.Variable], region: set[int]) -> dict[int, int]:
    """Per tensor (by id): the bytes of the distinct constants it is computed from within the folded region
    (initializers and the values of Constant nodes)."""
    out = {}
    for t in tensors:
        consts, nodes = _upstream(t, lambda n: id(n) in region) or ([], [])
        values = [n.attrs.get("value") for n in nodes if n.op == "Constant"]
        out[id(t)] = sum(int(c.values.nbytes) for c in consts) + sum(
            int(getattr(getattr(v, "values", v), "nbytes", 0) or 0) for v in values
        )
    return out


def _subgraph_inputs(graph: gs.Graph) -> set[int]:
    """ids of the tensors read by nodes inside If/Loop/Scan bodies (one walk, not one per tensor)."""
    return {id(t) for sub in graph.subgraphs(recursive=True) for node in sub.nodes for t in node.inputs}


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
