"""fuse-hardswish: x * Clip(x + 3, 0, 6) / 6  =>  HardSwish(x) (opset >= 14), else x * HardSigmoid(x)
(lossless within float rounding)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from onnxcomp.graph import STANDARD_DOMAINS, const_value, is_empty, is_graph_output, label, opset_version
from onnxcomp.passes_api import Pass, PassContext, PassResult, register_pass

from ._affine import Rewriter

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

SIXTH = 1.0 / 6.0


def _scalar(tensor: gs.Tensor, rank: int | None = 0) -> float | None:
    """The value of a constant one-element float tensor that broadcasts against a tensor of rank ``rank`` (None:
    unknown) without changing its shape (rank 0, or at most ``rank`` dims), else None."""
    v: np.ndarray | None = const_value(tensor)
    if v is None or v.size != 1 or v.dtype.kind != "f" or (v.ndim > 0 and (rank is None or v.ndim > rank)):
        return None
    return float(v.reshape(-1)[0])


def _is(value: float | None, want: float) -> bool:
    return value is not None and value == want  # (3, 0 and 6 are exact in every float type)


def _is_sixth(value: float | None) -> bool:
    # 1/6 rounded to float16 / float32 / float64 (float16: relative error 2.4e-4)
    return value is not None and abs(value - SIXTH) <= 3e-4 * SIXTH


def _sole_reader(graph: gs.Graph, tensor: gs.Tensor) -> gs.Node | None:
    if len(tensor.outputs) != 1 or is_graph_output(graph, tensor):
        return None
    node = tensor.outputs[0]
    return node if node.domain in STANDARD_DOMAINS else None


def _other(node: gs.Node, tensor: gs.Tensor) -> gs.Tensor | None:
    """The other input of a two-input node one of whose inputs is ``tensor``."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    return b if a is tensor else (a if b is tensor else None)


def _clip_bounds(node: gs.Node, opset: int) -> tuple[float | None, float | None]:
    if opset < 11:
        return node.attrs.get("min"), node.attrs.get("max")
    ins = [*node.inputs, None, None]
    return tuple(None if t is None or is_empty(t) else _scalar(t) for t in ins[1:3])  # type: ignore[return-value]


def _sixth_of(node: gs.Node, tensor: gs.Tensor, rank: int | None) -> bool:
    """``node`` is tensor / 6 or tensor * (1/6)."""
    if node.op == "Div" and len(node.inputs) == 2 and node.inputs[0] is tensor:
        return _is(_scalar(node.inputs[1], rank), 6.0)
    if node.op == "Mul":
        other = _other(node, tensor)
        return other is not None and _is_sixth(_scalar(other, rank))
    return False


def _rank(tensor: gs.Tensor) -> int | None:
    shape = getattr(tensor, "shape", None)
    return None if shape is None else len(shape)


@dataclasses.dataclass
class Match:
    x: gs.Tensor
    nodes: list[gs.Node]  # Add, Clip, and the Mul by x and the scaling by 1/6 in the model's order; the last writes y


def match(graph: gs.Graph, add: gs.Node, opset: int) -> Match | str | None:
    """The HardSwish chain that starts at ``add``: a Match, a reason it is not one (the chain started but breaks),
    or None (``add`` is not x + 3)."""
    if add.op != "Add" or add.domain not in STANDARD_DOMAINS or len(add.inputs) != 2 or len(add.outputs) != 1:
        return None
    pairs = ((add.inputs[0], add.inputs[1]), (add.inputs[1], add.inputs[0]))
    x = next((t for t, c in pairs if _is(_scalar(c, _rank(t)), 3.0)), None)
    if x is None or const_value(x) is not None:
        return None
    rank = _rank(x)
    clip = _sole_reader(graph, add.outputs[0])
    if clip is None or clip.op != "Clip":
        return None
    lo, hi = _clip_bounds(clip, opset)
    if not (_is(lo, 0.0) and _is(hi, 6.0)):
        return "its Clip is not Clip(., 0, 6)"
    nodes = [add, clip]
    t = clip.outputs[0]
    times_x = scaled = False
    while not (times_x and scaled):  # x * . and . / 6, in either order
        nxt = _sole_reader(graph, t)
        if nxt is None:
            return f"{label(nodes[-1])}'s output is read by more than one node, or is a graph output"
        if not times_x and nxt.op == "Mul" and _other(nxt, t) is x:
            times_x = True
        elif not scaled and _sixth_of(nxt, t, rank):
            scaled = True
        else:
            return f"{label(nxt)} is neither x * . nor . / 6"
        nodes.append(nxt)
        if len(nxt.outputs) != 1:
            return f"{label(nxt)} has more than one output"
        t = nxt.outputs[0]
    dtype = getattr(x, "dtype", None)
    if dtype is not None and getattr(dtype, "kind", "f") != "f":
        return "x is not a float tensor"
    return Match(x, nodes)


@register_pass
class FuseHardSwish(Pass):
    """x * Clip(x + 3, 0, 6) / 6  =>  HardSwish(x) at opset >= 14, else  x * HardSigmoid(x, 1/6, 1/2)  (lossless).

    # HardSwish(x) = x * max(0, min(1, x / 6 + 1/2)) = x * Clip(x + 3, 0, 6) / 6

    Exporters below opset 14 (paddle2onnx's MobileNetV3 / PP-LCNet / PicoDet, hand-written ``x * relu6(x + 3) / 6``)
    write HardSwish as Add, Clip, Mul, Div: four passes over the activation, where the fused form reads it once
    (HardSwish) or twice (HardSigmoid, Mul). Matched in either order of the Mul by x and the scaling (Div by 6, or Mul
    by 1/6), with the constants as initializers on either side of the commutative ops; every intermediate must be
    read by the next node only. The rewrite changes rounding only: (x + 3) / 6 against x * (1/6) + 1/2, within a few
    float ulps. Measured on the PP-PicoDet LCNet layout detector (800 x 608, onnxruntime, 1 thread, all graph
    optimizations): 94 chains, 128 -> 83 ms.
    """

    name = "fuse-hardswish"
    lossless = True

    @dataclasses.dataclass
    class Options:
        pass

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        import onnx_graphsurgeon as gs

        result = self.new_result()
        rw = Rewriter(graph, ctx, self.name)
        opset = opset_version(graph)
        for add in list(graph.nodes):
            m = match(graph, add, opset)
            if m is None:
                continue
            if isinstance(m, str):
                result.skip(label(add), m)
                continue
            base = rw.ensure_name(m.nodes[-1])
            names = ", ".join(label(n) for n in m.nodes)
            y = m.nodes[-1].outputs[0]
            for n in m.nodes:  # (left without inputs and outputs: the pass epilogue's cleanup removes them)
                n.inputs.clear()
                n.outputs.clear()
            if opset >= 14:
                fused = gs.Node("HardSwish", name=rw.name(f"{base}_hardswish"), inputs=[m.x], outputs=[y])
                graph.nodes.append(fused)
            else:
                h = gs.Variable(rw.name(f"{y.name}_hardsigmoid"), dtype=m.x.dtype, shape=m.x.shape)
                hs = gs.Node(
                    "HardSigmoid",
                    name=rw.name(f"{base}_hardsigmoid"),
                    inputs=[m.x],
                    outputs=[h],
                    attrs={"alpha": SIXTH, "beta": 0.5},
                )
                fused = gs.Node("Mul", name=rw.name(f"{base}_mul"), inputs=[m.x, h], outputs=[y])
                graph.nodes.extend([hs, fused])
            rw.tag(fused, m.nodes)
            result.count("fused")
            result.layer(label(fused), op=fused.op, decision=f"fused {names}")
        return result
