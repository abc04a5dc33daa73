"""fold-constants: nodes computable from constants -> initializers (lossless)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from onnxcomp.fold import MAX_FILL_ELEMENTS, fold, foldable_nodes, large_fill
from onnxcomp.graph import is_const, is_empty, static_shape
from onnxcomp.passes_api import Pass, PassContext, PassResult, opt, register_pass

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


@register_pass
class FoldConstants(Pass):
    """Constant subgraphs -> initializers; Shape of a statically shaped tensor -> constant (lossless).

    Every node whose inputs are all constants is evaluated once with onnxruntime (graph optimizations off,
    so the values are exactly what the original model computes at run time) and replaced by its value.
    ``Shape`` (and ``Size``) of a tensor whose inferred shape is fully static becomes a constant, which lets
    exporter shape arithmetic (Shape -> Gather -> Concat -> Reshape) fold away. Constant fills
    (ConstantOfShape, Expand, Tile, Range) with more than ``max-fill-elements`` outputs are kept as they are,
    so that a compact model does not grow by their size (``materialize-fills=true`` folds them too). So are
    decodes of stored data: a constant value at least ``DECODE_GROWTH`` (4) times the bytes of the stored
    constants it is computed from (standard-op decodes of packed codes, e.g. after inline-functions), and
    DequantizeLinear of a quantized weight (a QDQ model's int8 weights) is never folded.
    """

    name = "fold-constants"
    lossless = True

    @dataclasses.dataclass
    class Options:
        fold_shapes: bool = opt(True, "replace Shape/Size of statically shaped tensors by constants")
        max_elements: int = opt(1 << 26, "do not materialize constants with more elements than this")
        materialize_fills: bool = opt(
            False,
            "also materialize large constant fills (ConstantOfShape/Expand/Tile/Range outputs) and decodes of "
            "stored data (values 4x the bytes they are computed from)",
        )
        max_fill_elements: int = opt(MAX_FILL_ELEMENTS, "constant fills up to this many elements are materialized")

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
        limit = None if self.options.materialize_fills else self.options.max_fill_elements
        nodes = foldable_nodes(graph, max_fill_elements=limit)
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
        big_ids = {id(n) for n in big}
        keep = [n for n in nodes if id(n) not in big_ids]
        folded = fold(graph, keep, decodes_kept=not self.options.materialize_fills)
        done = set(folded.folded)
        for name, (size, stored) in folded.decodes.items():
            result.count("decodes_kept")
            result.skip(
                name,
                f"a decode of {stored:,} stored bytes into {size:,} bytes kept as is (materialize-fills=true folds it)",
            )
        result.count("nodes_folded", sum(1 for n in keep if n.name in done))
        for name, reason in folded.failed.items():
            result.skip(name, f"could not evaluate: {reason}")
        if limit is not None:  # the fills left computed from constants (their inputs are folded by now)
            for n in graph.nodes:
                size = large_fill(n, limit) if all(is_empty(t) or is_const(t) for t in n.inputs) else None
                if size is not None:
                    result.count("fills_kept")
                    result.skip(
                        n.name or n.op,
                        f"a constant fill of {size:,} elements kept as is (materialize-fills=true folds it)",
                    )
        return result
