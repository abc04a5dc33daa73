"""select-conv: Conv 3x3 stride 1  =>  com.onnxcomp WinogradConv where the cost model predicts it faster
(lossless: float rounding only)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from onnxcomp.graph import STANDARD_DOMAINS, const_value, is_empty, is_graph_output, opset_version
from onnxcomp.ops import DOMAIN
from onnxcomp.passes_api import Pass, PassContext, PassResult, opt, register_pass

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

    from onnxcomp.estimator import AlgoCost, ConvShape

STANDARD = STANDARD_DOMAINS
TILES = (2, 4, 6)


def _label(node: gs.Node) -> str:
    if node.name:
        return node.name
    out = next((t.name for t in node.outputs if t.name), "")
    return f"{node.op}({out})" if out else node.op


# ---------------------------------------------------------------------------------------- fused activations
# Activation op -> its (leaky_alpha, clip_min, clip_max) in WinogradConv's terms
#   act(v) = min(max(v < 0 ? leaky_alpha v : v, clip_min), clip_max)
# or a reason it cannot be fused.
def _relu(node: gs.Node, opset: int) -> tuple[float, float, float] | str:
    return 0.0, -math.inf, math.inf


def _leaky_relu(node: gs.Node, opset: int) -> tuple[float, float, float] | str:
    return float(node.attrs.get("alpha", 0.01)), -math.inf, math.inf


def _clip(node: gs.Node, opset: int) -> tuple[float, float, float] | str:
    if opset < 11:  # min/max attributes
        lo, hi = float(node.attrs.get("min", -math.inf)), float(node.attrs.get("max", math.inf))
    else:
        bounds = []
        for i, default in ((1, -math.inf), (2, math.inf)):
            if len(node.inputs) <= i or is_empty(node.inputs[i]):
                bounds.append(default)
                continue
            v = const_value(node.inputs[i])
            if v is None or v.size != 1:
                return "its min/max are not constant scalars"
            bounds.append(float(v.reshape(-1)[0]))
        lo, hi = bounds
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        return f"its bounds [{lo}, {hi}] are not an interval"
    return 1.0, lo, hi


ACTIVATIONS: dict[str, Callable[[gs.Node, int], tuple[float, float, float] | str]] = {
    "Relu": _relu,
    "LeakyRelu": _leaky_relu,
    "Clip": _clip,
}


def _constant_derived(tensor: Any, depth: int = 0) -> bool:
    """An initializer, or the output of a com.onnxcomp decode op (HuffmanDecode, RunLengthDecode) of such: the
    same bytes at every run (the runtime transforms a CodebookConv's filter again only when they change)."""
    if const_value(tensor) is not None:
        return True
    producers = getattr(tensor, "inputs", [])
    if depth > 4 or len(producers) != 1:
        return False
    node = producers[0]
    return (
        node.domain == DOMAIN
        and node.op in ("HuffmanDecode", "RunLengthDecode")
        and all(_constant_derived(t, depth + 1) for t in node.inputs if not is_empty(t))
    )


# ---------------------------------------------------------------------------------------- layer geometry
@dataclasses.dataclass
class _Layer:
    node: gs.Node
    shape: ConvShape
    pads: list[int]  # top, left, bottom, right
    why_not: str = ""  # why Winograd cannot compute it ("" = it can)


def _conv_attrs(node: gs.Node, w_shape: list[int]) -> tuple[list[int], list[int], list[int], int, list[int] | str]:
    """(kernel, strides, dilations, group, pads or the reason the pads are unknown) of a 2-D Conv node."""
    kernel = [int(k) for k in node.attrs.get("kernel_shape", w_shape[2:])]
    strides = [int(s) for s in node.attrs.get("strides", [1, 1])]
    dilations = [int(d) for d in node.attrs.get("dilations", [1, 1])]
    group = int(node.attrs.get("group", 1))
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad in ("", "NOTSET"):
        pads: list[int] | str = [int(p) for p in node.attrs.get("pads", [0, 0, 0, 0])]
    elif auto_pad == "VALID":
        pads = [0, 0, 0, 0]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER") and strides == [1, 1] and dilations == [1, 1]:
        total = [k - 1 for k in kernel]
        small = [t // 2 for t in total]
        big = [t - s for t, s in zip(total, small)]
        pads = [*small, *big] if auto_pad == "SAME_UPPER" else [*big, *small]
    else:
        pads = f"auto_pad={auto_pad} with strides {strides}"
    return kernel, strides, dilations, group, pads


def _layer(node: gs.Node, shapes: dict[str, tuple[int, ...]]) -> _Layer | str:
    """The geometry of a Conv / CodebookConv node, or why it has none (not 2-D, shapes unknown)."""
    if node.op == "CodebookConv":
        w_shape = [int(v) for v in node.attrs.get("weight_shape", [])]
    else:
        w = node.inputs[1] if len(node.inputs) > 1 else None
        w_shape = [int(v) for v in (shapes.get(w.name) or ())] if w is not None else []
    if len(w_shape) != 4:
        return "not a 2-D convolution"
    x, y = node.inputs[0], node.outputs[0]
    xs, ys = shapes.get(x.name), shapes.get(y.name)
    if xs is None or ys is None or len(xs) != 4 or len(ys) != 4:
        return "input or output shape unknown"
    kernel, strides, dilations, group, pads = _conv_attrs(node, w_shape)
    from onnxcomp.estimator import ConvShape

    shape = ConvShape(
        xs[0], xs[1], xs[2], xs[3], ys[1], kernel[0], kernel[1], ys[2], ys[3], tuple(strides), tuple(dilations), group
    )
    why = ""
    if isinstance(pads, str):
        why, pads = pads, []
    elif not shape.winograd_eligible:
        why = (
            f"kernel {kernel[0]}x{kernel[1]}, strides {strides}, dilations {dilations}, group {group}: Winograd "
            "needs 3x3, stride 1, dilation 1, one group"
        )
    return _Layer(node, shape, pads, why)


def _tensor_shapes(graph: gs.Graph, ctx: PassContext) -> dict[str, tuple[int, ...]] | str:
    """Concrete shapes of every tensor (dynamic input dims sized as for verification), or why there are none."""
    from onnxcomp import cost, shapes
    from onnxcomp.errors import InputError
    from onnxcomp.graph import export_model

    model = export_model(graph, ctx)
    plan = shapes.resolve(model, ctx.input_shapes, ctx.calib)
    try:
        sized = cost.concrete(model, plan.cost_shapes())
    except InputError as err:
        return str(err)
    out: dict[str, tuple[int, ...]] = {}
    for vi in [*sized.graph.input, *sized.graph.value_info, *sized.graph.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            out[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
    for t in sized.graph.initializer:
        out[t.name] = tuple(int(d) for d in t.dims)
    return out


# ---------------------------------------------------------------------------------------- the pass
@register_pass
class SelectConv(Pass):
    """Conv 3x3 stride 1  =>  com.onnxcomp WinogradConv where the cost model predicts it faster (lossless).

    Per convolution layer, the estimator (onnxcomp.estimator) predicts the time of onnxruntime's own Conv
    (``im2col``: its NCHWc direct and im2col GEMM kernels) and of Winograd F(m x m, 3 x 3) for each tile m in
    ``tiles``, on the hardware profile (``--hardware`` or ``hardware=``: a built-in name or a file from
    ``onnxcomp hardware probe``). ``algorithm=auto`` rewrites a layer when the best Winograd tile is predicted at
    least ``margin`` faster; ``winograd`` rewrites every layer Winograd can compute (best predicted tile);
    ``im2col`` rewrites none. Winograd computes 3x3 convolutions with strides 1, dilations 1 and one group, float32
    with constant weights; a following Relu, LeakyRelu or Clip (constant bounds) read by nothing else is fused
    into the WinogradConv. A CodebookConv (from the share passes, constant codes) gets the attribute
    ``winograd_tile`` instead: the runtime decodes and transforms its filter once. The result differs from the
    original by float32 rounding only (within the lossless verification tolerance for F(2,3) and F(4,3);
    F(6,3) is less accurate: only considered when ``tiles`` names it). The speed-up needs the native runtime;
    without it the function bodies (Conv + activation) run. Run it last: the share passes do not compress a
    WinogradConv. The report lists every convolution with its choice and predicted times.
    """

    name = "select-conv"
    lossless = True

    @dataclasses.dataclass
    class Options:
        algorithm: Literal["auto", "winograd", "im2col"] = opt(
            "auto", "auto: per layer, the predicted fastest; winograd: every layer it can compute; im2col: none"
        )
        hardware: str = opt("", "hardware profile (built-in name or probe file); default: the --hardware option")
        margin: float = opt(0.1, "auto: Winograd only where predicted at least this fraction faster")
        tiles: list[int] = opt([2, 4], "Winograd tile sizes m to consider (2, 4, 6; F(6,3) is the least accurate)")
        fuse_activation: bool = opt(True, "fuse a following Relu, LeakyRelu or Clip into the WinogradConv")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        from onnxcomp import estimator, hardware
        from onnxcomp.errors import UsageError
        from onnxcomp.ops import emit, raise_opset

        o = self.options
        result = self.new_result()
        tiles = sorted(set(o.tiles))
        if not tiles or any(t not in TILES for t in tiles):
            raise UsageError(f"select-conv: tiles must be among {', '.join(map(str, TILES))}, got {o.tiles}")
        if not 0.0 <= o.margin < 1.0:
            raise UsageError(f"select-conv: margin must be in [0, 1), got {o.margin}")
        hw = hardware.resolve(o.hardware or ctx.hardware)
        convs = [
            n
            for n in graph.nodes
            if (n.op == "Conv" and n.domain in STANDARD) or (n.op == "CodebookConv" and n.domain == DOMAIN)
        ]
        if not convs:
            result.skip("model", "no convolutions")
            return result
        shapes = _tensor_shapes(graph, ctx)
        if isinstance(shapes, str):
            result.skip("model", f"shapes unknown: {shapes}")
            return result
        algorithms = ("im2col", *(f"winograd{t}" for t in tiles))
        before = after = 0.0
        plan: list[tuple[_Layer, dict[str, AlgoCost], str, str]] = []
        for node in convs:
            layer = _layer(node, shapes)
            if isinstance(layer, str):
                result.skip(_label(node), layer)
                continue
            costs = estimator.estimate(layer.shape, hw, algorithms)
            why = layer.why_not or self._why_not_winograd(node)
            if why:
                costs = {"im2col": costs["im2col"]}
            choice = self._choose(costs, o.algorithm, o.margin)
            before += costs["im2col"].seconds
            after += costs[choice].seconds
            plan.append((layer, costs, choice, why))
        if any(estimator.winograd_tile(c) and la.node.op == "Conv" for la, _, c, _ in plan):
            # the function body needs ai.onnx >= 16; an upgrade rebuilds the graph's nodes (found again by output)
            why_not = raise_opset(graph, ctx, result)
            if why_not is not None:
                result.skip("model", why_not)
                return result
            by_output = {n.outputs[0].name: n for n in graph.nodes if n.outputs}
            for layer, *_ in plan:
                layer.node = by_output.get(layer.node.outputs[0].name, layer.node)
        for layer, costs, choice, why in plan:
            tile = estimator.winograd_tile(choice)
            act_name = ""
            if tile:
                act_name = self._rewrite(graph, ctx, layer, tile, result, emit)
            elif layer.node.op == "CodebookConv" and int(layer.node.attrs.get("winograd_tile", 0)):
                del layer.node.attrs["winograd_tile"]
            self._record(result, layer, costs, choice, why, act_name)
        result.counters["predicted_ms_before"] = round(before * 1e3, 4)
        result.counters["predicted_ms_after"] = round(after * 1e3, 4)
        return result

    @staticmethod
    def _why_not_winograd(node: gs.Node) -> str:
        """Why this node's weights rule Winograd out ("" if they do not)."""
        if node.op == "CodebookConv":
            for i, what in ((1, "codebook"), (2, "codes")):
                if len(node.inputs) <= i or not _constant_derived(node.inputs[i]):
                    return f"its {what} is not computed from constants (the runtime transforms fixed filters only)"
            return ""
        w = node.inputs[1]
        wv = const_value(w)
        if wv is None:
            return "its weights are not constant"
        if str(wv.dtype) != "float32":
            return f"its weights are {wv.dtype}, not float32"
        if len(node.inputs) > 2 and not is_empty(node.inputs[2]):
            b = const_value(node.inputs[2])
            if b is None or str(b.dtype) != "float32":
                return "its bias is not a float32 constant"
        return ""

    @staticmethod
    def _choose(costs: dict[str, AlgoCost], algorithm: str, margin: float) -> str:
        from onnxcomp.estimator import choose

        wino = {k: v for k, v in costs.items() if k != "im2col"}
        if algorithm == "im2col" or not wino:
            return "im2col"
        if algorithm == "winograd":
            return min(wino, key=lambda k: wino[k].seconds)
        return choose(costs, margin)

    def _rewrite(self, graph: gs.Graph, ctx: PassContext, layer: _Layer, tile: int, result: PassResult, emit) -> str:
        """Rewrite the layer for Winograd F(tile, 3); returns the fused activation's op ("" if none)."""
        node = layer.node
        if node.op == "CodebookConv":
            node.attrs["winograd_tile"] = tile
            ctx.tag(node, self.name, [node.name])
            result.count("codebook_conv_winograd")
            return ""
        attrs: dict[str, Any] = {
            "kernel_shape": [3, 3],
            "strides": [1, 1],
            "dilations": [1, 1],
            "group": 1,
            "pads": list(layer.pads),
            "tile": tile,
        }
        act = self._fusable_activation(graph, node) if self.options.fuse_activation else None
        act_name = ""
        sources = [node.name]
        if act is not None:
            leaky, lo, hi = ACTIVATIONS[act.op](act, opset_version(graph))
            attrs.update(leaky_alpha=leaky, clip_min=lo, clip_max=hi)
            act_name = act.op
            sources.append(act.name)
            out = act.outputs[0]
            act.inputs.clear()
            act.outputs.clear()
            node.outputs[0] = out
        inputs = [node.inputs[0], node.inputs[1]]
        if len(node.inputs) > 2 and not is_empty(node.inputs[2]):
            inputs.append(node.inputs[2])
        new = emit(graph, node, "WinogradConv", inputs, attrs, f"winograd{tile}")
        ctx.tag(new, self.name, sources)
        result.count("winograd_conv")
        if act_name:
            result.count("activations_fused")
        return act_name

    @staticmethod
    def _fusable_activation(graph: gs.Graph, node: gs.Node) -> gs.Node | None:
        y = node.outputs[0]
        if len(y.outputs) != 1 or is_graph_output(graph, y):
            return None
        act = y.outputs[0]
        if act.op not in ACTIVATIONS or act.domain not in STANDARD or not act.outputs or act.inputs[0] is not y:
            return None
        if isinstance(ACTIVATIONS[act.op](act, opset_version(graph)), str):
            return None
        return act

    @staticmethod
    def _record(result: PassResult, layer: _Layer, costs: dict[str, AlgoCost], choice: str, why: str, act: str):
        from onnxcomp.estimator import winograd_tile

        s = layer.shape
        tile = winograd_tile(choice)
        decision = f"winograd F({tile},3)" if tile else "im2col"
        if tile and act:
            decision += f" + {act}"
        if not tile and why:
            decision += f" ({why})"
        rec = result.layer(
            _label(layer.node),
            op=layer.node.op,
            decision=decision,
            flops_before=costs["im2col"].flops,
            flops_after=costs[choice].flops,
        )
        rec.extra["shape"] = f"{s.C}->{s.M} {s.OH}x{s.OW} k{s.kh}x{s.kw} s{s.strides[0]} g{s.group} n{s.N}"
        rec.extra["algorithm"] = choice
        rec.extra["predicted_us"] = {k: round(v.seconds * 1e6, 2) for k, v in costs.items()}
