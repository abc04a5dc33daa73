"""inline-functions: model-local functions (the com.onnxcomp ops) replaced by their standard-op bodies."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from onnxcomp.passes_api import Pass, PassContext, PassResult, register_pass

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


@register_pass
class InlineFunctions(Pass):
    """Call of a model-local function  =>  the function body's nodes (lossless).

    For runtimes without model-local function support: every com.onnxcomp op (and any other model-local
    function) is expanded with onnx.inliner into standard ONNX ops, so the output imports no custom domain.
    The compressed weights stay compressed (the decode subgraph reads the packed initializers); onnxruntime
    still folds the decode at load time. The native runtime's kernels are no longer used.
    """

    name = "inline-functions"
    lossless = True

    @dataclasses.dataclass
    class Options:
        pass

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        from onnxcomp.ops import inline_functions

        result = self.new_result()
        if not graph.functions:
            result.skip("model", "the model has no model-local functions")
            return result
        result.count("calls_inlined", inline_functions(graph, ctx))
        return result
