"""fuse-bn: Conv/ConvTranspose/Gemm/MatMul -> BatchNormalization  =>  one op with folded weights (lossless)."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from onnxcomp.fold import fill_note
from onnxcomp.graph import STANDARD_DOMAINS, const_value, is_empty, is_graph_output, label, param_count, shape_of
from onnxcomp.passes_api import Pass, PassContext, PassResult, opt, register_pass

from ._affine import TARGETS, Rewriter, bn_affine, channel_vector, find_target, fold, is_float_const
from .fuse_affine import affine_form, scale_shift

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs


@register_pass
class FuseBatchNorm(Pass):
    """Conv/ConvTranspose/Gemm/MatMul -> BatchNormalization  =>  Conv/ConvTranspose/Gemm (lossless).

    Inference-mode BatchNormalization is a per-channel affine map, y = x * s + t with
    s = gamma / sqrt(var + eps) and t = beta - mean * s, folded into the op before it:
    W' = W * s (per output channel; for ConvTranspose per group column), b' = (b - mean) * s + beta.
    A MatMul with a constant 2-D weight becomes Gemm (2-D input) or MatMul + Add. The op's output must be read
    by the BatchNormalization only and not be a graph output. A bias written as its own Add between the op and
    the BatchNormalization (Conv/ConvTranspose/Gemm -> Add(per-channel constant) -> BN, as Paddle exports
    them) is folded into the op's bias first (B' = B + c). With ``before``, a BatchNormalization whose
    output feeds only Conv (no padding: padded zeros are not normalized), Gemm (transA=0) or 2-D MatMul is
    folded into those consumers instead: W' = W * s over input channels, b' = b + sum(W * t).
    The math is done in float64 and cast to the weight dtype once; shared weights are copied, not mutated.
    """

    name = "fuse-bn"
    lossless = True

    @dataclasses.dataclass
    class Options:
        conv: bool = opt(True, "fold into a preceding Conv/ConvTranspose")
        gemm: bool = opt(True, "fold into a preceding Gemm or MatMul with a constant 2-D weight")
        before: bool = opt(True, "fold into following Conv (zero pads)/Gemm/MatMul when there is no op before")
        matmul_to_gemm: bool = opt(True, "a MatMul with 2-D input and a bias becomes Gemm (else MatMul + Add)")
        clone_shared: bool = opt(
            False, "an op whose output feeds only BatchNormalizations is copied per BN, each copy folded"
        )

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = self.new_result()
        rw = Rewriter(graph, ctx, self.name)
        self._main = {id(n) for n in graph.nodes}
        ops: set[str] = set()
        if self.options.conv:
            ops |= {"Conv", "ConvTranspose"}
        if self.options.gemm:
            ops |= {"Gemm", "MatMul"}
        for bn in list(graph.nodes):
            if bn.op != "BatchNormalization" or bn.domain not in STANDARD_DOMAINS or not bn.outputs:
                continue
            reason = TARGETS["BatchNormalization"].check(graph, bn)
            if reason is not None:
                result.skip(label(bn), reason)
                continue
            s, t = bn_affine(bn)
            reason = _nonfinite_reason(bn, s, t)
            if reason is not None:
                result.skip(label(bn), reason)
                result.count("left_unfused")
                continue
            match, why = find_target(graph, bn.inputs[0], ops)
            if match is None and self._absorb_bias_add(rw, bn, ops):
                match, why = find_target(graph, bn.inputs[0], ops)
            if match is None and self.options.clone_shared and self._clone_shared(rw, bn, ops):
                match, why = find_target(graph, bn.inputs[0], ops)
            if match is not None:
                target = TARGETS[match.node.op]
                rank = target.out_rank(match.node)
                if rank is None or target.axis % rank != 1:
                    why = f"{label(match.node)} output's feature axis is not the BatchNormalization channel axis"
                elif target.channels(match.node) != len(s):
                    why = f"{label(match.node)} has {target.channels(match.node)} channels, the BN {len(s)}"
                else:
                    before = param_count(match.node) + param_count(bn)
                    name = label(match.node)
                    fold(rw, match, s, t, bn, self.options.matmul_to_gemm)
                    result.count("fused")
                    result.layer(
                        name,
                        op=match.node.op,
                        decision=f"fused {label(bn)}",
                        params_before=before,
                        params_after=param_count(match.node) + (param_count(match.bias_add) if match.bias_add else 0),
                    )
                    continue
            if self.options.before:
                why_after = self._fold_into_consumers(rw, bn, s, t, result)
                if why_after is None:
                    continue
                why = why or f"no foldable op before it, and not after it: {why_after}"
            result.skip(label(bn), why or "no Conv/ConvTranspose/Gemm/MatMul produces its input")
        return result

    def _absorb_bias_add(self, rw: Rewriter, bn: gs.Node, ops: set[str]) -> bool:
        """P -> Add/Sub(per-channel constant c) -> BN  =>  P' -> BN with P's bias B' = B + c (or B - c)."""
        graph, x = rw.graph, bn.inputs[0]
        add = x.inputs[0] if x.inputs else None
        if add is None or id(add) not in self._main or len(x.outputs) != 1 or is_graph_output(graph, x):
            return False
        form = affine_form(add)
        if form is None or form.kind not in ("add", "sub") or form.c.dtype.kind != "f":
            return False
        # MatMul + bias Add is already one target of find_target; the others own a bias input
        match, _ = find_target(graph, form.x, ops - {"MatMul"})
        if match is None or id(match.node) not in self._main:
            return False
        target = TARGETS[match.node.op]
        v = channel_vector(form.c, target.out_rank(match.node), target.axis, target.channels(match.node))
        if v is None or not all(map(math.isfinite, v)):
            return False
        s, t = scale_shift(form.kind, v)  # s = 1, t = +-c: y = P(x) + t
        fold(rw, match, s, t, add, self.options.matmul_to_gemm)
        return True

    def _clone_shared(self, rw: Rewriter, bn: gs.Node, ops: set[str]) -> bool:
        """Op -> {BN1, BN2, ...} (only BNs): BN1 gets its own copy of the op (weights shared until folded)."""
        import onnx_graphsurgeon as gs

        graph, x = rw.graph, bn.inputs[0]
        prod = x.inputs[0] if x.inputs else None
        if prod is None or prod.op not in ops or prod.domain not in STANDARD_DOMAINS or len(prod.outputs) != 1:
            return False
        if is_graph_output(graph, x) or len(x.outputs) < 2 or TARGETS[prod.op].check(graph, prod) is not None:
            return False
        bn_check = TARGETS["BatchNormalization"].check
        for c in x.outputs:
            if c.op != "BatchNormalization" or c.domain not in STANDARD_DOMAINS or c.inputs[0] is not x:
                return False
            if id(c) not in self._main or bn_check(graph, c) is not None:
                return False
        out = gs.Variable(rw.name(f"{x.name}_{label(bn)}"), dtype=x.dtype, shape=x.shape)
        copy = gs.Node(
            prod.op,
            rw.name(f"{rw.ensure_name(prod)}_{label(bn)}"),
            dict(prod.attrs),
            list(prod.inputs),
            [out],
            prod.domain,
        )
        graph.nodes.append(copy)
        self._main.add(id(copy))
        bn.inputs[0] = out
        return True

    # ------------------------------------------------------------------------------ BN before the op
    def _fold_into_consumers(
        self, rw: Rewriter, bn: gs.Node, s: np.ndarray, t: np.ndarray, result: PassResult
    ) -> str | None:
        """x -> BN -> {Conv, Gemm, MatMul}*  =>  x -> {Conv', Gemm', ...}; None on success, else the reason."""
        graph = rw.graph
        y, x = bn.outputs[0], bn.inputs[0]
        if is_graph_output(graph, y):
            return "its output is a graph output"
        consumers = list({id(c): c for c in y.outputs}.values())
        if not consumers:
            return "its output is unused"
        for c in consumers:
            reason = "it is inside a subgraph" if id(c) not in self._main else _before_reason(graph, c, y, x, len(s))
            if reason is not None:
                return f"its consumer {label(c)}: {reason}"
        for c in consumers:
            before = param_count(c)
            _BEFORE[c.op](rw, c, s, t, self.options.matmul_to_gemm)
            c.inputs[0] = x
            rw.tag(c, [bn])
            result.layer(
                label(c),
                op=c.op,
                decision=f"fused preceding {label(bn)}",
                params_before=before,
                params_after=param_count(c),
            )
        bn.inputs.clear()
        bn.outputs.clear()
        result.count("fused_before")
        return None


def _nonfinite_reason(bn: gs.Node, s: np.ndarray, t: np.ndarray) -> str | None:
    """Why folding ``bn`` would write non-finite weights, or None.

    var + eps <= 0 makes 1 / sqrt(var + eps) NaN or Inf, and NaN/Inf parameters make s or t NaN/Inf: folded, a
    channel's every weight would become NaN/Inf (0 * Inf = NaN even where the BN's own output is finite), so
    the BN is left as it is and onnxruntime computes it as the original model does.
    """
    import numpy as np

    var = const_value(bn.inputs[4]).astype(np.float64)
    eps = float(bn.attrs.get("epsilon", 1e-5))
    bad_var = np.nonzero(~(var + eps > 0))[0]
    if bad_var.size:
        return (
            f"variance + epsilon <= 0 in {bad_var.size} channel(s) (first: {bad_var[:4].tolist()}): "
            "1/sqrt(var + eps) is not finite, left unfused"
        )
    with np.errstate(over="ignore"):
        finite = np.isfinite(s.astype(np.float32)) & np.isfinite(t.astype(np.float32))
    bad = np.nonzero(~finite)[0]
    if bad.size:
        return (
            f"its scale/shift is NaN/Inf in {bad.size} channel(s) (first: {bad[:4].tolist()}; NaN/Inf "
            "parameters or float32 overflow): left unfused"
        )
    return None


def _before_reason(graph: gs.Graph, c: gs.Node, y: Any, x: Any, channels: int) -> str | None:
    """Why BN output ``y`` cannot be folded into its consumer ``c``, or None."""
    if c.domain not in STANDARD_DOMAINS or c.op not in _BEFORE:
        return f"{c.op} is not Conv, Gemm or MatMul"
    if c.inputs[0] is not y or sum(1 for i in c.inputs if i is y) != 1:
        return "it reads the normalized tensor as a weight"
    if len(c.inputs) < 2 or not is_float_const(c.inputs[1]):
        return "its weight is not a floating-point constant" + (fill_note(c.inputs[1]) if len(c.inputs) > 1 else "")
    w = c.inputs[1]  # its shape only: the values are read when folding
    if len(c.inputs) > 2 and not is_empty(c.inputs[2]) and not is_float_const(c.inputs[2]):
        return "its bias is not a floating-point constant"
    if c.op == "Conv":
        if int(w.shape[1]) * int(c.attrs.get("group", 1)) != channels:
            return "channel count mismatch"
        if _conv_pads(c, w):
            return "it pads its input (padded zeros would not be normalized)"
        return None
    shape = shape_of(x)
    if shape is None or len(shape) != 2:
        return "its input is not known to be 2-D (the BN channel axis must be the contraction axis)"
    if len(w.shape) != 2:
        return "its weight is not 2-D"
    if c.op == "Gemm":
        if int(c.attrs.get("transA", 0)):
            return "transA=1 (the BN channel axis is not the contraction axis)"
        k = w.shape[1] if int(c.attrs.get("transB", 0)) else w.shape[0]
    else:
        k = w.shape[0]
    return None if k == channels else "channel count mismatch"


def _conv_pads(c: gs.Node, w: Any) -> bool:
    """True when the Conv may pad its input."""
    auto_pad = c.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad == "VALID":
        return False
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        # SAME pads nothing when the (dilated) kernel is 1 wide
        return any(int(k) != 1 for k in w.shape[2:])
    return any(int(p) != 0 for p in c.attrs.get("pads", []))


def _before_conv(rw: Rewriter, c: gs.Node, s: np.ndarray, t: np.ndarray, gemm: bool) -> None:
    import numpy as np

    w = const_value(c.inputs[1])
    co, cig = w.shape[0], w.shape[1]
    g = int(c.attrs.get("group", 1))
    # input channel read by W[o, j]: (o // (C_out/group)) * (C_in/group) + j
    idx = (np.arange(co)[:, None] // (co // g)) * cig + np.arange(cig)[None, :]
    expand = (co, cig) + (1,) * (w.ndim - 2)
    w64 = w.astype(np.float64)
    bias = _bias(c, 2, co)
    # Conv(x * s + t) = Conv(x, W * s) + sum_{j,k} W[o, j, k] * t[j]   (no padding: every tap reads x)
    bias = bias + (w64 * t[idx].reshape(expand)).reshape(co, -1).sum(axis=1)
    rw.set_const(c, 1, (w64 * s[idx].reshape(expand)).astype(w.dtype), "")
    rw.set_const(c, 2, bias.astype(w.dtype), f"{rw.ensure_name(c)}_bias")


def _before_gemm(rw: Rewriter, c: gs.Node, s: np.ndarray, t: np.ndarray, gemm: bool) -> None:
    import numpy as np

    b = const_value(c.inputs[1])
    trans_b = bool(int(c.attrs.get("transB", 0)))
    b64 = b.astype(np.float64)
    bk = b64.T if trans_b else b64  # B' as [K, N]
    alpha, beta = float(c.attrs.get("alpha", 1.0)), float(c.attrs.get("beta", 1.0))
    # alpha * (A * s + t) @ B' + beta * C = alpha * A @ (s[:, None] * B') + (alpha * t @ B' + beta * C)
    cc = alpha * (t @ bk)
    if len(c.inputs) > 2 and not is_empty(c.inputs[2]):
        cc = cc + beta * const_value(c.inputs[2]).astype(np.float64)
    rw.set_const(c, 1, (b64 * (s[None, :] if trans_b else s[:, None])).astype(b.dtype), "")
    rw.set_const(c, 2, cc.astype(b.dtype), f"{rw.ensure_name(c)}_bias")
    c.attrs["beta"] = 1.0


def _before_matmul(rw: Rewriter, c: gs.Node, s: np.ndarray, t: np.ndarray, gemm: bool) -> None:
    import numpy as np
    import onnx_graphsurgeon as gs

    w = const_value(c.inputs[1])
    w64 = w.astype(np.float64)
    # (A * s + t) @ W = A @ (s[:, None] * W) + t @ W
    rw.set_const(c, 1, (w64 * s[:, None]).astype(w.dtype), "")
    bias = (t @ w64).astype(w.dtype)
    if gemm:
        c.op = "Gemm"
        rw.set_const(c, 2, bias, f"{rw.ensure_name(c)}_bias")
        return
    out = c.outputs[0]
    mid = gs.Variable(rw.name(f"{out.name}_matmul"), dtype=out.dtype, shape=out.shape)
    c.outputs[0] = mid
    const = gs.Constant(rw.name(f"{rw.ensure_name(c)}_bias"), bias)
    rw.graph.nodes.append(gs.Node("Add", rw.name(f"{c.name}_bias_add"), {}, [mid, const], [out]))


def _bias(node: gs.Node, index: int, n: int) -> np.ndarray:
    import numpy as np

    if len(node.inputs) > index and not is_empty(node.inputs[index]):
        return np.broadcast_to(const_value(node.inputs[index]).astype(np.float64), (n,)).copy()
    return np.zeros(n)


# op type -> fold a preceding per-channel affine map (BN) into its input side
_BEFORE = {"Conv": _before_conv, "Gemm": _before_gemm, "MatMul": _before_matmul}
