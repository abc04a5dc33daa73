"""lowrank: MatMul/Gemm/Conv with constant weights -> two thin layers from a truncated SVD (lossy)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from onnxcomp.errors import UsageError
from onnxcomp.graph import (
    const_value,
    inline_constant_node,
    is_const,
    is_empty,
    is_standard,
    make_constant,
    scoped_nodes,
    toposort,
    unique_name,
)
from onnxcomp.names import any_match
from onnxcomp.passes_api import Pass, PassContext, PassResult, opt, register_pass
from onnxcomp.weights import nonfinite_reason

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _Plan:
    """A layer's weight as a 2-D matrix W [rows, cols] and how to rebuild the two factors as nodes."""

    matrix: np.ndarray
    # (main graph, node, A, B, ctx, the (sub)graph holding the node) -> the new nodes
    rebuild: Callable[[gs.Graph, gs.Node, np.ndarray, np.ndarray, PassContext, gs.Graph], list[gs.Node]]
    flops_per_row: int  # output positions per weight application (for FLOPs accounting)
    input_axis: int = 0  # the axis of ``matrix`` that runs over the layer's input features


@register_pass
class LowRank(Pass):
    """W -> U V (truncated SVD): MatMul/Gemm -> MatMul + MatMul/Gemm, Conv -> Conv(k x k, r) + Conv 1x1 (lossy).

    W [K, N] = U S V^T; keeping the r largest singular values gives the best rank-r approximation
    (Eckart-Young): ||W - W_r||_F^2 = sum_{i>r} s_i^2. The factors are split evenly, A = U_r sqrt(S_r),
    B = sqrt(S_r) V_r^T, so both layers have similar scales. A Conv weight [M, C, kh, kw] is treated as the matrix
    [M, C*kh*kw]: the first Conv keeps the kernel, strides, pads and dilations with r filters, the second is a
    1x1 Conv r -> M holding the bias. A layer is factorized only when it saves parameters.

    ``param_ratio=p`` gives every layer the rank that keeps p of its parameters, r = floor(p * K * N / (K + N))
    (p = 0.5: 2x fewer parameters in the factorized layers).

    With calibration data the truncation is activation-aware (the whitening of SVD-LLM / ASVD): with
    G = X^T X / n + lambda * mean(diag) * I = L L^T over the layer's inputs X (im2col patches for a Conv),
    minimizing ||X (W - W_r)||_F instead of ||W - W_r||_F gives W_r = L^-T [L^T W]_r (the truncated SVD of
    L^T W = U S V^T): A = L^-T U_r sqrt(S_r), B = sqrt(S_r) V_r^T. The energy criterion then reads the
    singular values of L^T W (the output energy kept), and each layer's reported error is the relative output
    error on the calibration inputs, sqrt(sum_{i>r} s_i^2 / sum s_i^2).
    """

    name = "lowrank"
    lossless = False

    @dataclasses.dataclass
    class Options:
        energy: float = opt(0.9, "keep the smallest rank whose singular values hold this fraction of sum(s^2)")
        rank: int | None = opt(None, "fixed rank for every layer (overrides energy)")
        max_param_ratio: float = opt(0.8, "factorize only if params(U)+params(V) <= this x params(W)")
        min_params: int = opt(4096, "skip layers with fewer weight elements")
        ops: list[str] = opt(["MatMul", "Gemm", "Conv"], "op types to factorize")
        protect: list[str] = opt([], "node names or fnmatch patterns to leave alone")
        param_ratio: float | None = opt(
            None, "rank that keeps this fraction of each layer's parameters (0.5: 2x fewer; overrides energy)"
        )
        calib_samples: int = opt(32, "with --calib: calibration samples for the input statistics")
        damp: float = opt(0.01, "with --calib: ridge on the input Gram matrix, relative to its mean diagonal")
        max_rows: int = opt(20000, "with --calib: sampled input rows (positions) per layer")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        import numpy as np

        result = self.new_result()
        o = self.options
        if o.rank is not None and o.rank < 1:
            raise UsageError(f"lowrank: rank must be >= 1, got {o.rank}")
        if not 0.0 < o.energy <= 1.0:
            raise UsageError(f"lowrank: energy must be in (0, 1], got {o.energy}")
        if o.param_ratio is not None and not 0.0 < o.param_ratio < 1.0:
            raise UsageError(f"lowrank: param-ratio must be in (0, 1), got {o.param_ratio}")
        if o.calib_samples < 1 or o.max_rows < 1 or not o.damp >= 0:
            raise UsageError("lowrank: calib-samples and max-rows must be >= 1, damp >= 0")
        # layers of If/Loop/Scan bodies too (their Constant-node weights read as initializers of the body)
        candidates, owners = [], {}
        for node, owner, where in scoped_nodes(graph):
            if node.op in set(o.ops) and is_standard(node):
                if where is not None:
                    for t_in in list(node.inputs[1:]):
                        inline_constant_node(owner, t_in)
                candidates.append(node)
                owners[id(node)] = (owner, where)
        stats = _InputStats(graph, ctx, candidates, o) if ctx.calib is not None else None
        for node in ctx.track(candidates, "lowrank", len(candidates)):
            owner, where = owners[id(node)]
            if any_match(o.protect, node.name, node.inputs[1].name if len(node.inputs) > 1 else ""):
                result.skip(node.name, "protected")
                continue
            planner = PLANNERS.get(node.op)
            plan_or_reason = planner(node) if planner else f"op {node.op} not supported"
            if isinstance(plan_or_reason, str):
                result.skip(node.name, plan_or_reason)
                continue
            plan = plan_or_reason
            weight = node.inputs[1]
            if any(c is not node for c in weight.outputs):
                # each consumer would get its own factors while the others keep W: the model would grow
                result.skip(node.name, f"weight {weight.name} is shared with other nodes")
                continue
            w = plan.matrix.astype(np.float64)
            rows, cols = w.shape
            if w.size < o.min_params:
                result.skip(node.name, f"{w.size} weights < min-params={o.min_params}")
                continue
            bad = nonfinite_reason(w)
            if bad is not None:  # an SVD of NaN/Inf does not converge
                result.skip(node.name, bad)
                continue
            gram = stats.gram(node, plan) if stats is not None else None
            if stats is not None and where is not None and not stats.captured(node):
                result.count("layers_data_free_subgraph")  # inside a body: its input is not captured
            # the input-major matrix W_in [inputs, outputs], whitened by L^T when input statistics exist
            w_in = w if plan.input_axis == 0 else w.T
            chol = None
            if gram is not None:
                g = gram + o.damp * max(float(np.mean(np.diag(gram))), 1e-12) * np.eye(len(gram))
                try:
                    chol = np.linalg.cholesky(g)
                except np.linalg.LinAlgError:
                    result.skip(node.name, "input Gram matrix not positive definite: data-free SVD")
            # data-free: the SVD of W itself (as it always was); activation-aware: of L^T W_in
            u, s, vt = np.linalg.svd(w if chol is None else chol.T @ w_in, full_matrices=False)
            if o.rank is not None:
                r = o.rank
            elif o.param_ratio is not None:
                r = max(1, int(o.param_ratio * rows * cols / (rows + cols)))
            else:
                r = _rank_for_energy(s, o.energy)
            r = min(r, len(s))
            new_params = r * (rows + cols)
            if new_params > o.max_param_ratio * w.size:
                result.skip(node.name, f"rank {r} keeps {new_params / w.size:.2f}x the params > {o.max_param_ratio}")
                continue
            root = np.sqrt(s[:r])
            a, b = u[:, :r] * root, root[:, None] * vt[:r]  # [rows, r], [r, cols]
            if chol is not None:
                a = np.linalg.solve(chol.T, a)  # L^-T U_r sqrt(S_r): [inputs, r]
                if plan.input_axis == 1:  # W = (A_in B_in)^T = B_in^T A_in^T
                    a, b = b.T, a.T
            a, b = a.astype(plan.matrix.dtype), b.astype(plan.matrix.dtype)
            total = float(np.sum(s**2))
            err = float(np.sqrt(np.sum(s[r:] ** 2) / total)) if total > 0 else 0.0
            name = node.name
            plan.rebuild(graph, node, a, b, ctx, owner)
            result.count("layers_factorized")
            result.count("params_removed", w.size - new_params)
            result.layer(
                name,
                op=node.op,
                decision=f"rank {r} of {min(rows, cols)}" + (", activation-aware" if chol is not None else ""),
                params_before=int(w.size),
                params_after=int(new_params),
                flops_before=2 * int(w.size) * plan.flops_per_row if plan.flops_per_row else None,
                flops_after=2 * int(new_params) * plan.flops_per_row if plan.flops_per_row else None,
                error=err,
                extra={
                    "rank": int(r),
                    "energy_kept": float(np.sum(s[:r] ** 2) / total) if total > 0 else 1.0,
                    **({"subgraph": where} if where else {}),
                },
            )
        return result


def _rank_for_energy(s: np.ndarray, energy: float) -> int:
    import numpy as np

    e = np.cumsum(s.astype(np.float64) ** 2)
    if e[-1] == 0:
        return 1
    return int(np.searchsorted(e / e[-1], energy - 1e-12) + 1)


# ----------------------------------------------------------------------------------------------- per op
def _plan_matmul(node: gs.Node) -> _Plan | str:
    if len(node.inputs) != 2 or not is_const(node.inputs[1]) or is_const(node.inputs[0]):
        return "weight (second input) is not a constant"
    w = const_value(node.inputs[1])
    if w.ndim != 2 or w.dtype.kind != "f":
        return f"weight must be a 2-D float matrix, got shape {w.shape} {w.dtype}"
    # Y = X @ W, W [K, N] = A [K, r] @ B [r, N]
    return _Plan(w, _rebuild_matmul, _rows(node.outputs[0]))


def _rebuild_matmul(
    graph: gs.Graph, node: gs.Node, a: np.ndarray, b: np.ndarray, ctx: PassContext, into: gs.Graph
) -> list[gs.Node]:
    import onnx_graphsurgeon as gs

    orig = node.name
    mid = gs.Variable(unique_name(graph, f"{node.name}_lowrank_mid"), dtype=a.dtype)
    first = gs.Node(
        "MatMul",
        unique_name(graph, f"{node.name}_lowrank_u"),
        inputs=[node.inputs[0], make_constant(graph, f"{node.inputs[1].name}_u", a)],
        outputs=[mid],
    )
    node.inputs[0] = mid
    node.inputs[1] = make_constant(graph, f"{node.inputs[1].name}_v", b)
    node.name = unique_name(graph, f"{node.name}_lowrank_v")
    into.nodes.append(first)
    ctx.tag(first, "lowrank", [orig])
    ctx.tag(node, "lowrank", [orig])
    return [first, node]


def _plan_gemm(node: gs.Node) -> _Plan | str:
    if node.attrs.get("transA", 0):
        return "Gemm with transA=1 not supported"
    if len(node.inputs) < 2 or not is_const(node.inputs[1]) or is_const(node.inputs[0]):
        return "weight (B) is not a constant"
    w = const_value(node.inputs[1])
    if w.ndim != 2 or w.dtype.kind != "f":
        return f"weight must be a 2-D float matrix, got {w.shape} {w.dtype}"
    if node.attrs.get("transB", 0):
        w = w.T  # B^T is the [K, N] matrix applied to X
    return _Plan(w, _rebuild_gemm, _rows(node.outputs[0]))


def _rebuild_gemm(
    graph: gs.Graph, node: gs.Node, a: np.ndarray, b: np.ndarray, ctx: PassContext, into: gs.Graph
) -> list[gs.Node]:
    # Y = alpha * X @ W + beta * C, W = A @ B  =>  Y = Gemm(MatMul(X, A), B; alpha, beta, C), B not transposed
    nodes = _rebuild_matmul(graph, node, a, b, ctx, into)
    node.attrs["transB"] = 0
    return nodes


def _plan_conv(node: gs.Node) -> _Plan | str:
    if len(node.inputs) < 2 or not is_const(node.inputs[1]):
        return "weight is not a constant"
    if node.attrs.get("group", 1) != 1:
        return "grouped/depthwise convolution not factorized"
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return "auto_pad not supported (explicit pads only)"
    w = const_value(node.inputs[1])
    if w.ndim < 3 or w.dtype.kind != "f":
        return f"weight must be a float conv kernel, got {w.shape} {w.dtype}"
    # W [M, C, k...] as the matrix [M, C*prod(k)] = A [M, r] @ B [r, C*prod(k)]
    plan = _Plan(w.reshape(w.shape[0], -1), _rebuild_conv, _spatial(node.outputs[0]), input_axis=1)
    return plan


def _rebuild_conv(
    graph: gs.Graph, node: gs.Node, a: np.ndarray, b: np.ndarray, ctx: PassContext, into: gs.Graph
) -> list[gs.Node]:
    import onnx_graphsurgeon as gs

    orig = node.name
    w = const_value(node.inputs[1])
    r = a.shape[1]
    kernel = b.reshape((r, *w.shape[1:]))  # r filters with the original kernel, strides, pads, dilations
    point = a.reshape((w.shape[0], r) + (1,) * (w.ndim - 2))  # 1x1 conv r -> M
    mid = gs.Variable(unique_name(graph, f"{node.name}_lowrank_mid"), dtype=a.dtype)
    first = gs.Node(
        "Conv",
        unique_name(graph, f"{node.name}_lowrank_k"),
        attrs=dict(node.attrs),
        inputs=[node.inputs[0], make_constant(graph, f"{node.inputs[1].name}_k", kernel)],
        outputs=[mid],
    )
    first.attrs["kernel_shape"] = list(w.shape[2:])
    bias = node.inputs[2] if len(node.inputs) > 2 and not is_empty(node.inputs[2]) else None
    new_inputs = [mid, make_constant(graph, f"{node.inputs[1].name}_p", point)] + ([bias] if bias is not None else [])
    node.inputs.clear()
    node.inputs.extend(new_inputs)
    node.attrs = {"kernel_shape": [1] * (w.ndim - 2)}
    node.name = unique_name(graph, f"{node.name}_lowrank_p")
    into.nodes.append(first)
    ctx.tag(first, "lowrank", [orig])
    ctx.tag(node, "lowrank", [orig])
    return [first, node]


def _rows(t: gs.Tensor) -> int:
    """Rows of a MatMul output (product of all but the last dim), 0 when unknown."""
    import math

    shape = getattr(t, "shape", None)
    if not shape or any(not isinstance(d, int) for d in shape[:-1]):
        return 0
    return int(math.prod(shape[:-1]))


def _spatial(t: gs.Tensor) -> int:
    """Output positions of a Conv (batch x spatial), 0 when unknown."""
    import math

    shape = getattr(t, "shape", None)
    if not shape or any(not isinstance(d, int) for d in shape):
        return 0
    return int(shape[0] * math.prod(shape[2:]))


class _InputStats:
    """Input Gram matrices X^T X / n of the candidate layers on the calibration data (im2col patches for a
    Conv, in the order of W[m].ravel()), captured a few tensors per onnxruntime run to bound memory."""

    CHUNK = 8

    def __init__(self, graph: gs.Graph, ctx: PassContext, candidates: list[gs.Node], o: LowRank.Options) -> None:
        from onnxcomp.analysis.weights import SelectOptions, collect_targets

        self._graph, self._ctx, self._o = graph, ctx, o
        scratch = PassResult(name="lowrank-stats")
        wanted = {id(n) for n in candidates}
        found = collect_targets(graph, SelectOptions(), scratch)
        self._targets = {id(t.node): t for t in found if id(t.node) in wanted}
        self._pending = [n for n in candidates if id(n) in self._targets]
        self._grams: dict[int, np.ndarray] = {}
        self._rng = ctx.rng(53)

    def captured(self, node: gs.Node) -> bool:
        """Whether the layer's input was captured (not for a layer in an If branch the calibration data does not
        take; call after :meth:`gram`)."""
        return self._grams.get(id(node)) is not None

    def gram(self, node: gs.Node, plan: _Plan) -> np.ndarray | None:
        key = id(node)
        if key not in self._grams and key in self._targets:
            chunk = [n for n in self._pending if id(n) not in self._grams][: self.CHUNK]
            if node not in chunk:
                chunk = [node, *chunk[: self.CHUNK - 1]]
            names = sorted({self._targets[id(n)].x.name for n in chunk})
            # layers factorized so far appended their first factor at the end of their graph: sorted, since
            # onnxruntime wants the nodes of If/Loop/Scan bodies in order
            toposort(self._graph)
            acts = self._ctx.capture(self._graph, names, max_samples=self._o.calib_samples)
            for n in chunk:
                t = self._targets[id(n)]
                x = acts.get(t.x.name)
                self._grams[id(n)] = self._rows_gram(t, x) if x is not None else None
        g = self._grams.get(key)
        features = plan.matrix.shape[plan.input_axis]
        return g if g is not None and g.shape == (features, features) else None

    def _rows_gram(self, t: Any, x: np.ndarray) -> np.ndarray | None:
        import numpy as np

        if t.kind == "conv":
            from onnxcomp.passes.share import im2col

            blocks = im2col(x, t, self._o.max_rows, self._rng)
            if len(blocks) != 1:
                return None
            rows = blocks[0]
        else:
            rows = np.asarray(x).reshape(-1, x.shape[-1])
            if len(rows) > self._o.max_rows:
                rows = rows[self._rng.choice(len(rows), self._o.max_rows, replace=False)]
        rows = rows.astype(np.float64)
        return rows.T @ rows / max(len(rows), 1)


PLANNERS: dict[str, Callable[[gs.Node], _Plan | str]] = {
    "MatMul": _plan_matmul,
    "Gemm": _plan_gemm,
    "Conv": _plan_conv,
}
