"""fuse-affine: Conv/ConvTranspose/Gemm/MatMul/BatchNorm -> Mul/Add/Sub/Div by a per-channel constant  =>
one op with folded constants (lossless)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, NamedTuple

from onnxcomp.graph import STANDARD_DOMAINS, const_value, is_graph_output, label, param_count
from onnxcomp.passes_api import Pass, PassContext, PassResult, opt, register_pass

from ._affine import TARGETS, Rewriter, channel_vector, find_target, fold

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs


class Affine(NamedTuple):
    """An elementwise op with one constant operand: y = x * c, x / c, x + c, x - c or c - x."""

    x: Any
    c: np.ndarray
    kind: str  # "mul" | "div" | "add" | "sub" | "rsub"


# op -> ((x index, constant index, kind), ...): the operand orders that are affine in x
_FORMS: dict[str, tuple[tuple[int, int, str], ...]] = {
    "Mul": ((0, 1, "mul"), (1, 0, "mul")),
    "Div": ((0, 1, "div"),),
    "Add": ((0, 1, "add"), (1, 0, "add")),
    "Sub": ((0, 1, "sub"), (1, 0, "rsub")),
}
_FAMILY = {"mul": "mul", "div": "mul", "add": "add", "sub": "add", "rsub": None}


def affine_form(node: gs.Node) -> Affine | None:
    """The node as an affine map of its one non-constant input, or None."""
    forms = _FORMS.get(node.op)
    if forms is None or node.domain not in STANDARD_DOMAINS or len(node.inputs) != 2 or len(node.outputs) != 1:
        return None
    for xi, ci, kind in forms:
        c = const_value(node.inputs[ci])
        if c is not None and const_value(node.inputs[xi]) is None:
            return Affine(node.inputs[xi], c, kind)
    return None


# kind -> (s, t) of y = x * s + t, from the channel vector v of the constant
_SCALE_SHIFT: dict[str, Any] = {
    "mul": lambda v, one, zero: (v, zero),  # x * c
    "div": lambda v, one, zero: (1.0 / v, zero),  # x / c = x * (1 / c)
    "add": lambda v, one, zero: (one, v),  # x + c
    "sub": lambda v, one, zero: (one, -v),  # x - c
    "rsub": lambda v, one, zero: (-one, v),  # c - x
}


def scale_shift(kind: str, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (s, t) with y = x * s + t for the elementwise ``kind`` and channel vector ``v``."""
    import numpy as np

    return _SCALE_SHIFT[kind](v, np.ones_like(v), np.zeros_like(v))


@register_pass
class FuseAffine(Pass):
    """Conv/ConvTranspose/Gemm/MatMul/BatchNorm -> Mul/Add/Sub/Div(per-channel constant)  =>  one op (lossless).

    ``y = P(x) * c`` (or ``/ c``, ``+ c``, ``- c``, ``c - P(x)``) where the constant broadcasts along the
    channel axis only (Conv: shapes like [C,1,1], [1,C,1,1] or a scalar; Gemm/MatMul: [N] or [1,N] on the last
    axis) is folded into P's weights and bias (W' = W * s, b' = b * s + t; see ``_affine``). A MatMul followed
    by a constant bias Add counts as one op (b' = b * s + t); a bare MatMul followed by an Add is already
    minimal and is left alone. Chains fold one after another (Conv -> Mul -> Add -> Mul becomes one Conv);
    with ``merge_chains``, chains of constant Mul/Div (or Add/Sub) that follow no foldable op merge into one
    node (x * a * b -> x * (a*b)). Exact up to float rounding: the constants are combined in float64.
    """

    name = "fuse-affine"
    lossless = True

    @dataclasses.dataclass
    class Options:
        mul: bool = opt(True, "fold Mul/Div by a per-channel constant")
        add: bool = opt(True, "fold Add/Sub of a per-channel constant")
        batchnorm: bool = opt(True, "also fold into a preceding BatchNormalization (gamma, beta)")
        merge_chains: bool = opt(True, "merge chains of constant Mul/Div or Add/Sub into one node")
        matmul_to_gemm: bool = opt(True, "a MatMul with 2-D input that gains a bias becomes Gemm")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        import numpy as np

        result = self.new_result()
        rw = Rewriter(graph, ctx, self.name)
        ops = {"Conv", "ConvTranspose", "Gemm", "MatMul"} | (
            {"BatchNormalization"} if self.options.batchnorm else set()
        )
        for node in list(graph.nodes):
            if not node.outputs:
                continue
            form = affine_form(node)
            if form is None or form.c.dtype.kind != "f":
                continue
            fam = _FAMILY[form.kind]
            if (fam == "mul" and not self.options.mul) or (fam != "mul" and not self.options.add):
                continue
            if not np.all(np.isfinite(form.c)) or (form.kind == "div" and not np.all(form.c)):
                result.skip(label(node), "its constant has zeros (Div), infinities or NaNs")
                continue
            match, why = find_target(graph, form.x, ops)
            if match is not None:
                target = TARGETS[match.node.op]
                v = channel_vector(form.c, target.out_rank(match.node), target.axis, target.channels(match.node))
                s, t = scale_shift(form.kind, v) if v is not None else (None, None)
                if v is None:
                    why = f"its constant varies along a non-channel axis of {label(match.node)}"
                elif match.node.op == "MatMul" and match.bias_add is None and t.any():
                    why = None  # MatMul + Add is already the minimal form of a biased MatMul
                else:
                    name, before = label(match.node), param_count(match.node) + param_count(node)
                    fold(rw, match, s, t, node, self.options.matmul_to_gemm)
                    result.count("fused")
                    result.layer(
                        name,
                        op=match.node.op,
                        decision=f"fused {node.op} {label(node)}",
                        params_before=before,
                        params_after=param_count(match.node),
                    )
                    continue
            if self.options.merge_chains and self._merge_chain(rw, node, form):
                result.count("chains_merged")
                continue
            if why:
                result.skip(label(node), why)
        return result

    def _merge_chain(self, rw: Rewriter, node: gs.Node, form: Affine) -> bool:
        """(x op1 a) op2 b  =>  x op (a ∘ b) for two constant Mul/Div or two constant Add/Sub."""
        import numpy as np
        import onnx_graphsurgeon as gs

        inner_node = form.x.inputs[0] if form.x.inputs else None
        if inner_node is None or len(form.x.outputs) != 1 or is_graph_output(rw.graph, form.x):
            return False
        inner = affine_form(inner_node)
        fam = _FAMILY[form.kind]
        if inner is None or fam is None or _FAMILY[inner.kind] != fam or inner.c.dtype != form.c.dtype:
            return False
        if not np.all(np.isfinite(inner.c)) or (inner.kind == "div" and not np.all(inner.c)):
            return False
        a, b = inner.c.astype(np.float64), form.c.astype(np.float64)
        if fam == "mul":
            # (x * a) * b = x * (a * b);  x / a = x * (1 / a)
            merged = (1.0 / a if inner.kind == "div" else a) * (1.0 / b if form.kind == "div" else b)
            op = "Mul"
        else:
            # (x + a) + b = x + (a + b);  x - a = x + (-a)
            merged = (-a if inner.kind == "sub" else a) + (-b if form.kind == "sub" else b)
            op = "Add"
        if merged.size > max(a.size, b.size):
            return False  # would materialize a larger constant
        const = gs.Constant(rw.name(f"{rw.ensure_name(node)}_const"), np.asarray(merged, dtype=form.c.dtype))
        node.op = op
        node.inputs.clear()
        node.inputs.extend([inner.x, const])
        rw.tag(node, [inner_node])
        return True
