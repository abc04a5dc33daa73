"""fold-constants: nodes computable from constants -> initializers (lossless)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from onnxcomp.fold import fold, foldable_nodes
from onnxcomp.graph import static_shape
from onnxcomp.passes_api import Pass, PassContext, PassResult, opt, register_pass

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


@register_pass
class FoldConstants(Pass):
    """Constant subgraphs -> initializers; Shape of a statically shaped tensor -> constant (lossless).

    Every node whose inputs are all constants is evaluated once with onnxruntime (graph optimizations off,
    so the values are exactly what the original model computes at run time) and replaced by its value.
    ``Shape`` (and ``Size``) of a tensor whose inferred shape is fully static becomes a constant, which lets
    exporter shape arithmetic (Shape -> Gather -> Concat -> Reshape) fold away.
    """

    name = "fold-constants"
    lossless = True

    @dataclasses.dataclass
    class Options:
        fold_shapes: bool = opt(True, "replace Shape/Size of statically shaped tensors by constants")
        max_elements: int = opt(1 << 26, "do not materialize constants with more elements than this")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        import numpy as np

        result = self.new_result()
        if self.options.fold_shapes:
            for node in list(graph.nodes):
                if node.op not in ("Shape", "Size") or not node.inputs or not node.outputs:
                    continue
                shape = static_shape(node.inputs[0])
                if shape is None:
                    continue
                if node.op == "Size":
                    value = np.array(int(np.prod(shape)), dtype=np.int64)
                else:
                    start, end = node.attrs.get("start", 0), node.attrs.get("end", None)
                    value = np.array(shape[start:end], dtype=np.int64)
                out = node.outputs[0]
                node.outputs.clear()
                out.to_constant(value)
                result.count("shapes_folded")
        nodes = foldable_nodes(graph)
        big = []
        for n in nodes:
            if n.op == "Constant":
                continue
            for t in n.outputs:
                shape = static_shape(t)
                if shape is not None and int(np.prod(shape)) > self.options.max_elements:
                    big.append(n)
        for n in big:
            result.skip(n.name, f"output larger than max-elements={self.options.max_elements}")
        keep = [n for n in nodes if n not in big]
        folded = fold(graph, keep)
        result.count("nodes_folded", len([n for n in keep if n.name in set(folded.folded)]))
        for name, reason in folded.failed.items():
            result.skip(name, f"could not evaluate: {reason}")
        return result
