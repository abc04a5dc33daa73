"""Writing com.onnxcomp ops into an onnx-graphsurgeon graph: nodes, their functions, the opset they need,
and inlining them into standard ops."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .spec import DOMAIN, VERSION, function_proto, get_op

if TYPE_CHECKING:
    import onnx
    import onnx_graphsurgeon as gs

    from onnxcomp.passes_api import PassContext, PassResult

MIN_OPSET = 16  # ScatterElements(reduction=add), Shape(start, end), Unsqueeze(axes input)
# the version models below MIN_OPSET are converted to: the least change (converted to ai.onnx 18, PP-OCRv5's detector
# in float16 ran 0.79x in onnxruntime, its HardSwish expanded into Casts, Max and Min; converted to 16: 1.00x)
UPGRADE_OPSET = MIN_OPSET


def ensure_function(graph: gs.Graph, op_type: str, blocks: bool = False) -> None:
    """Add the model-local function of ``op_type`` to the graph once (it imports the graph's ai.onnx).

    ``blocks``: a node of the op has block codebooks (``block_size``): the body must be the one that decodes them
    (it replaces a plain body already there; it decodes nodes without the attribute the same way).
    """
    from onnx_graphsurgeon.importers.onnx_importer import OnnxImporter

    from onnxcomp.graph import opset_version

    for helper in get_op(op_type).helpers:
        ensure_function(graph, helper)
    blocks = blocks and get_op(op_type).block_function is not None
    for fn in list(graph.functions):
        if fn.name == op_type and fn.domain == DOMAIN:
            if not blocks or "block_size" in (fn.attrs or {}):
                return
            graph.functions.remove(fn)
    proto = function_proto(op_type, opset_version(graph), blocks)
    graph.functions.append(OnnxImporter.import_function(proto, model_opset=opset_version(graph)))
    ensure_domain(graph)


def ensure_domain(graph: gs.Graph) -> None:
    """The graph imports the com.onnxcomp domain (and, explicitly, ai.onnx)."""
    import onnx

    from onnxcomp.graph import AI_ONNX

    domains = list(graph.import_domains or [])
    if not any(d.domain == DOMAIN for d in domains):
        if not any(d.domain in AI_ONNX for d in domains):
            domains.append(onnx.helper.make_opsetid("", int(graph.opset)))
        domains.append(onnx.helper.make_opsetid(DOMAIN, VERSION))
        graph.import_domains = domains


def emit(
    graph: gs.Graph,
    old: gs.Node,
    op_type: str,
    inputs: list[Any],
    attrs: dict[str, Any],
    suffix: str,
    into: gs.Graph | None = None,
) -> gs.Node:
    """Replace ``old`` by a com.onnxcomp node writing the same output tensor(s).

    ``graph`` is the model's main graph (it holds the functions and the opset imports); ``into`` the If/Loop/Scan
    body holding ``old`` when it is not the main graph (the new node is written there)."""
    import onnx_graphsurgeon as gs

    from onnxcomp.graph import unique_name

    ensure_function(graph, op_type, blocks="block_size" in attrs)
    outputs = list(old.outputs)
    old.inputs.clear()
    old.outputs.clear()
    node = gs.Node(
        op_type,
        unique_name(graph, f"{old.name or (outputs[0].name if outputs else op_type)}_{suffix}"),
        attrs=attrs,
        inputs=inputs,
        outputs=outputs,
        domain=DOMAIN,
    )
    (into if into is not None else graph).nodes.append(node)
    return node


def raise_opset(graph: gs.Graph, ctx: PassContext, result: PassResult) -> str | None:
    """Upgrade a graph below MIN_OPSET to UPGRADE_OPSET (outputs checked equal; counted in ``result``); returns
    why it cannot be upgraded, else None."""
    from onnxcomp.graph import opset_version

    have = opset_version(graph)
    if have >= MIN_OPSET:
        return None
    try:
        upgrade_opset(graph, ctx, UPGRADE_OPSET)
    except (ValueError, RuntimeError) as err:
        return (
            f"the com.onnxcomp function bodies need ai.onnx opset >= {MIN_OPSET}; the model "
            f"has {have} and onnx.version_converter could not upgrade it losslessly ({err})"
        )
    result.count("opset_upgraded_to", UPGRADE_OPSET)
    return None


def upgrade_opset(graph: gs.Graph, ctx: PassContext, target: int) -> None:
    """Convert the graph to ai.onnx ``target`` (:func:`onnxcomp.io.upgrade_opset`: outputs checked equal)."""
    from onnxcomp.graph import export_model, import_model, replace_graph
    from onnxcomp.io import upgrade_opset as upgrade_model

    after = upgrade_model(export_model(graph, ctx), target, ctx.input_shapes, seed=ctx.seed)
    replace_graph(graph, import_model(after))


def inline_functions(graph: gs.Graph, ctx: PassContext) -> int:
    """Inline every model-local function (standard ops only); returns the number of nodes inlined."""
    import onnx

    from onnxcomp.graph import export_model, import_model, replace_graph, scoped_nodes

    funcs = {(f.domain, f.name) for f in graph.functions}
    calls = sum(1 for n, _, _ in scoped_nodes(graph) if (n.domain, n.op) in funcs)  # If/Loop/Scan bodies too
    if not graph.functions:
        return 0
    model = export_model(graph, ctx)
    import onnx.inliner

    _explicit_defaults(model)

    inlined = onnx.inliner.inline_local_functions(model)
    del inlined.functions[:]
    ops = [o for o in inlined.opset_import if o.domain != DOMAIN or any(n.domain == DOMAIN for n in inlined.graph.node)]
    del inlined.opset_import[:]
    inlined.opset_import.extend(ops)
    new = import_model(inlined)
    replace_graph(graph, new)
    graph.import_domains = [d for d in (graph.import_domains or []) if d.domain != DOMAIN]
    ctx.model_meta.get("opset_import", {}).pop(DOMAIN, None)
    return calls


def _explicit_defaults(model: onnx.ModelProto) -> None:
    """Write the default of every function attribute a call leaves out onto the call (onnx.inliner does not apply
    the defaults of FunctionProto.attribute_proto; onnxruntime does)."""
    defaults = {(f.domain, f.name): list(f.attribute_proto) for f in model.functions if f.attribute_proto}
    if not defaults:
        return
    graphs = [model.graph]
    while graphs:
        for node in graphs.pop().node:
            have = {a.name for a in node.attribute}
            for a in defaults.get((node.domain, node.op_type), []):
                if a.name not in have:
                    node.attribute.append(a)
            for a in node.attribute:  # If / Loop / Scan bodies
                graphs.extend([a.g] if a.HasField("g") else list(a.graphs))
