"""fuse-activation: Conv -> Relu/Clip/LeakyRelu/Sigmoid/Tanh/HardSigmoid  =>  com.microsoft FusedConv
(lossless; runs in onnxruntime only)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from onnxcomp.graph import STANDARD_DOMAINS, const_value, is_empty, is_graph_output, label, opset_version
from onnxcomp.passes_api import Pass, PassContext, PassResult, opt, register_pass

from ._affine import Rewriter

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

MS_DOMAIN = "com.microsoft"
FLT_MAX = 3.4028234663852886e38


# Activation op -> its FusedConv activation_params, or a reason it cannot be fused. onnxruntime's CPU FusedConv
# (contrib_ops/cpu/fused_activation.cc) takes Relu, Tanh, Sigmoid without parameters, LeakyRelu [alpha],
# Clip [min, max], HardSigmoid [alpha, beta]; it applies them to the Conv output with the MLAS kernels that
# the standalone activation ops use.
def _no_params(node: gs.Node, opset: int) -> list[float] | str:
    return []


def _leaky_relu(node: gs.Node, opset: int) -> list[float] | str:
    return [float(node.attrs.get("alpha", 0.01))]


def _hard_sigmoid(node: gs.Node, opset: int) -> list[float] | str:
    return [float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))]


def _clip(node: gs.Node, opset: int) -> list[float] | str:
    if opset < 11:  # min/max attributes
        return [float(node.attrs.get("min", -FLT_MAX)), float(node.attrs.get("max", FLT_MAX))]
    bounds = []
    for i, default in ((1, -FLT_MAX), (2, FLT_MAX)):
        if len(node.inputs) <= i or is_empty(node.inputs[i]):
            bounds.append(default)
            continue
        v = const_value(node.inputs[i])
        if v is None or v.size != 1:
            return "its min/max are not constant scalars"
        bounds.append(float(v.reshape(-1)[0]))
    return bounds


ACTIVATIONS: dict[str, Callable[[gs.Node, int], list[float] | str]] = {
    "Relu": _no_params,
    "Sigmoid": _no_params,
    "Tanh": _no_params,
    "LeakyRelu": _leaky_relu,
    "HardSigmoid": _hard_sigmoid,
    "Clip": _clip,
}


@register_pass
class FuseActivation(Pass):
    """Conv -> Relu/Clip/LeakyRelu/Sigmoid/Tanh/HardSigmoid  =>  com.microsoft FusedConv (lossless).

    The Conv (float32, constant or dynamic weights, optional bias) and its activation become one onnxruntime
    contrib op ``FusedConv`` with attributes ``activation`` and ``activation_params`` (LeakyRelu: [alpha];
    HardSigmoid: [alpha, beta]; Clip: [min, max], constant bounds only). onnxruntime's CPU kernel applies the
    same activation kernels as the standalone ops, so outputs are equal. The Conv output must be read by the
    activation only and not be a graph output. Not in the default pipeline: the result runs in onnxruntime
    only (``com.microsoft`` domain, version 1, is added to the opset imports on export).
    """

    name = "fuse-activation"
    lossless = True

    @dataclasses.dataclass
    class Options:
        target: Literal["onnxruntime"] = opt("onnxruntime", "runtime whose fused Conv op to emit")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = self.new_result()
        rw = Rewriter(graph, ctx, self.name)
        opset = opset_version(graph)
        for act in list(graph.nodes):
            params_of = ACTIVATIONS.get(act.op)
            if params_of is None or act.domain not in STANDARD_DOMAINS or not act.outputs or not act.inputs:
                continue
            x = act.inputs[0]
            conv = x.inputs[0] if x.inputs else None
            if conv is None or conv.op != "Conv" or conv.domain not in STANDARD_DOMAINS or len(conv.outputs) != 1:
                continue
            if len(x.outputs) != 1 or is_graph_output(graph, x):
                result.skip(label(act), f"the output of {label(conv)} is also read elsewhere or a graph output")
                continue
            dtype = getattr(act.outputs[0], "dtype", None) or getattr(act.inputs[0], "dtype", None)
            w = conv.inputs[1]
            if str(getattr(w, "dtype", dtype)) != "float32" or (dtype is not None and str(dtype) != "float32"):
                result.skip(label(act), "FusedConv runs float32 only")
                continue
            params = params_of(act, opset)
            if isinstance(params, str):
                result.skip(label(act), params)
                continue
            out = act.outputs[0]
            act.inputs.clear()
            act.outputs.clear()
            conv.op = "FusedConv"
            conv.domain = MS_DOMAIN
            conv.attrs["activation"] = act.op
            if params:
                conv.attrs["activation_params"] = [float(p) for p in params]
            conv.outputs[0] = out
            rw.tag(conv, [act])
            result.count("fused")
            result.layer(label(conv), op="FusedConv", decision=f"fused {act.op} {label(act)}")
        return result
