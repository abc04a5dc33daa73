"""eliminate: no-op nodes, duplicate initializers, duplicate nodes, dead nodes  =>  removed (lossless).

The pass runs three pieces, each in its own module, in rounds until nothing changes:
``_noops.remove_noops`` (one handler per op type), ``_duplicates.merge_initializers`` and
``_duplicates.merge_nodes`` (CSE); dead nodes are removed (and counted) between rounds.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from onnxcomp.graph import label, opset_version, toposort
from onnxcomp.passes_api import Pass, PassContext, PassResult, opt, register_pass

from ._duplicates import merge_initializers, merge_nodes
from ._noops import remove_noops

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

logger = logging.getLogger(__name__)

_MAX_ROUNDS = 10


@register_pass
class Eliminate(Pass):
    """No-op nodes, duplicate initializers and nodes, dead nodes  =>  removed (lossless).

    No-ops: Identity; Dropout in inference (training_mode absent or constant false, mask output unused);
    Reshape to the input's own shape (and Reshape of a Reshape -> one Reshape); Transpose with the identity
    permutation (and Transpose pairs composed or cancelled); Cast/CastLike to the input's type; Pad with
    all-zero pads; Slice over the full range; Expand to the input's own shape; Concat of one input; Split
    into one output; Squeeze/Unsqueeze pairs that cancel; x*1, x/1, x+0, x-0 that keep the shape.
    Pass-through nodes are removed with ``bypass``, so graph outputs keep their names. Duplicate
    initializers (same dtype, shape and bytes) become the first one in node order; duplicate nodes (same op,
    attributes and inputs; deterministic ops only, no subgraph attributes) are merged in topological order
    (common subexpression elimination). Dead nodes are removed by the pipeline's cleanup and counted here.
    If/Loop/Scan bodies are processed too (``subgraphs``); model-local function bodies are left as they are.
    """

    name = "eliminate"
    lossless = True

    @dataclasses.dataclass
    class Options:
        identity: bool = opt(True, "remove Identity nodes")
        dropout: bool = opt(True, "remove inference-mode Dropout (mask output unused)")
        reshape: bool = opt(True, "remove Reshape to the input's shape; merge Reshape chains")
        transpose: bool = opt(True, "remove identity Transpose; merge or cancel Transpose pairs")
        cast: bool = opt(True, "remove Cast/CastLike to the input's own type")
        pad: bool = opt(True, "remove Pad with all-zero pads")
        slice: bool = opt(True, "remove Slice covering the full range")
        expand: bool = opt(True, "remove Expand to the input's own shape")
        concat: bool = opt(True, "remove Concat of a single input")
        split: bool = opt(True, "remove Split into a single output")
        squeeze_pairs: bool = opt(True, "remove Squeeze/Unsqueeze pairs that cancel")
        neutral: bool = opt(True, "remove x*1, x/1, x+0, x-0 (shape-preserving)")
        duplicate_initializers: bool = opt(True, "merge initializers with equal dtype, shape and bytes")
        duplicate_nodes: bool = opt(True, "merge nodes computing the same op on the same inputs (CSE)")
        subgraphs: bool = opt(True, "also eliminate inside If/Loop/Scan bodies")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = self.new_result()
        reported: set[tuple[str, str]] = set()

        def skip(node: gs.Node, reason: str) -> None:
            key = (label(node), reason)
            if key not in reported:
                reported.add(key)
                result.skip(*key)

        def enabled(kind: str) -> bool:
            return bool(getattr(self.options, kind))

        opset = opset_version(graph)
        dead = _cleanup(graph)
        for _ in range(_MAX_ROUNDS):
            graphs = [graph, *(graph.subgraphs(recursive=True) if self.options.subgraphs else ())]
            changed = False
            for g in graphs:
                changed |= remove_noops(g, opset, enabled, result, skip)
            if self.options.duplicate_initializers:
                changed |= merge_initializers(graph, result)
            if self.options.duplicate_nodes:
                for g in graphs:
                    changed |= merge_nodes(g, result, skip)
            if not changed:
                break
            # nodes that became dead through the rewrites (e.g. the first of a cancelled Transpose pair)
            dead += _cleanup(graph)
        result.count("dead_nodes", dead)
        return result


def _cleanup(graph: gs.Graph) -> int:
    """Remove dead nodes (cleanup + toposort); returns how many, not counting nodes emptied by a rewrite."""
    shells = sum(1 for n in graph.nodes if not n.outputs)
    n = len(graph.nodes)
    toposort(graph.cleanup(remove_unused_graph_inputs=False))
    return n - len(graph.nodes) - shells
