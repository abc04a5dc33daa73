"""ternary: weights in {-a_n, 0, +a_p} (TWN threshold rule, or least-squares asymmetric scales)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

from onnxcomp.analysis.weights import collect_targets
from onnxcomp.errors import UsageError
from onnxcomp.passes_api import Pass, PassContext, PassResult, opt, register_pass

from ._emit import EmitsOps, Encoded, ShareOptions, emit_weight, saves_bytes, store_table
from ._gptq import DAMP_HELP, Grid, calibration, compensate
from ._gptvq import DAMP as GPTQ_DAMP
from ._report import finish, record, rel_error

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs


@register_pass
class Ternary(EmitsOps, Pass):
    """MatMul / Gemm / Conv  =>  TernaryMatMul / CodebookConv with weights in {-a_n, 0, +a_p} (lossy).

    ``method=twn`` (Ternary Weight Networks): threshold D = ``threshold`` * mean|w|, codes +1 where w > D,
    -1 where w < -D, else 0, one scale a_p = a_n = mean |w| over |w| > D (the least-squares scale for that
    assignment). ``method=lsq`` fits asymmetric scales post-training, as trained ternary quantization learns
    them: starting from the TWN assignment, a_p = mean of w over w > D_p and a_n = mean of -w over
    w < -D_n, then D_p = a_p / 2 and D_n = a_n / 2 (nearest value), repeated until the assignment is stable;
    each step lowers the squared error, activation-energy weighted with calibration data. Scales per output
    channel (``per_channel``) or per layer. Codes are 2 bits packed (1/16 of float32).

    With calibration data (``compensate``, on by default there) the weights are then re-rounded onto each
    channel's {-a_n, 0, +a_p} in GPTQ's order, each input's rounding error moved onto the inputs not yet
    rounded (``_gptq``), and (a_p, a_n) are re-fitted by least squares on the layer output; a layer keeps
    the plain assignment when that has the lower output error on the calibration data.
    """

    name = "ternary"
    lossless = False

    @dataclasses.dataclass
    class Options(ShareOptions):
        method: Literal["twn", "lsq"] = opt("lsq", "twn: symmetric TWN scale; lsq: asymmetric least-squares scales")
        threshold: float = opt(0.7, "TWN threshold factor: D = threshold * mean|w|")
        per_channel: bool = opt(True, "one (a_p, a_n) per output channel (else per layer)")
        weighted: bool = opt(True, "with calibration data, weight the fit by input-feature activation energy")
        max_iter: int = opt(50, "maximum lsq refinement steps")
        compensate: bool | None = opt(
            None,
            "error-compensated rounding (GPTQ's order onto each channel's {-a_n, 0, +a_p}): each input's "
            "rounding error moved onto the inputs not yet rounded through the inverse Hessian of the layer "
            "output (H = X^T X + damp * mean(diag H) * I), then (a_p, a_n) re-fitted on the output. Default "
            "(unset): on when calibration data is given. Layers with fewer sampled input positions than inputs, or a "
            "factorization over max_refine_flops, keep plain rounding (counters layers_plain_*)",
        )
        damp: float = opt(GPTQ_DAMP, DAMP_HELP)
        max_refine_flops: float = opt(
            2e10, "compensated mode: layers whose Hessian factorization costs more keep plain rounding"
        )

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        o = self.options
        if o.threshold < 0:
            raise UsageError("ternary: threshold must be >= 0")
        result = self.new_result()
        targets = collect_targets(graph, o, result, half=True)
        acts, energy, hessians = calibration(graph, ctx, targets, o, 19, result)
        for t in ctx.track(targets, "ternary", total=len(targets)):
            e = ternary_encode(t.w2, t.out_axis, o.method, o.threshold, o.per_channel, energy.get(id(t)), o.max_iter)
            how = ""
            if hessians is not None:
                e, how = compensate(t, acts.get(t.x.name), e, hessians, ternary_grid, _refit_scales, result)
            if not saves_bytes(t, e):
                result.skip(t.name, f"{t.params} weights: 2-bit codes and their scales would not make it smaller")
                continue
            e = store_table(t, e, o.codebook_dtype, int8=False)  # as stored: w_hat is what the model decodes
            em = emit_weight(graph, ctx, t, e, result, pass_name=self.name, huffman=o.huffman)
            if em is None:
                continue
            w_hat = e.decoded(t.out_axis)
            record(
                result,
                t,
                f"ternary {o.method}{how}",
                e,
                em,
                rel_error(t.w2, w_hat),
                float((e.codes == 0).mean()),
            )
        return finish(graph, ctx, result, o)


def ternary_encode(
    w2: np.ndarray,
    out_axis: int,
    method: str = "lsq",
    threshold: float = 0.7,
    per_channel: bool = True,
    weights: np.ndarray | None = None,
    max_iter: int = 50,
) -> Encoded:
    import numpy as np

    n_out = w2.shape[out_axis]
    gsz = 1 if per_channel else n_out
    # groups along the output axis: view as [groups, elements per group]
    wg = np.moveaxis(w2.astype(np.float64), out_axis, 0).reshape(n_out // gsz, -1)
    sg = None if weights is None else np.moveaxis(np.asarray(weights, np.float64), out_axis, 0).reshape(wg.shape)
    s = np.ones_like(wg) if sg is None else sg + 1e-12
    delta = threshold * np.abs(wg).mean(axis=1, keepdims=True)
    pos, neg = wg > delta, wg < -delta

    def mean_where(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        den = (s * mask).sum(1, keepdims=True)
        return np.where(den > 0, (s * values * mask).sum(1, keepdims=True) / np.maximum(den, 1e-300), 0.0)

    if method == "twn":
        a = mean_where(np.abs(wg), pos | neg)
        a_p = a_n = a
    elif method == "lsq":
        a_p, a_n = mean_where(wg, pos), mean_where(-wg, neg)
        for _ in range(max_iter):
            new_pos, new_neg = (wg > a_p / 2) & (a_p > 0), (wg < -a_n / 2) & (a_n > 0)
            if np.array_equal(new_pos, pos) and np.array_equal(new_neg, neg):
                break
            pos, neg = new_pos, new_neg
            a_p, a_n = mean_where(wg, pos), mean_where(-wg, neg)
    else:
        raise UsageError(f"ternary: unknown method {method!r}")
    codes_g = np.where(pos, 1, np.where(neg, 2, 0)).astype(np.int64)
    shape = np.moveaxis(w2, out_axis, 0).shape
    codes = np.moveaxis(codes_g.reshape(shape), 0, out_axis)
    scales = np.concatenate([a_p, a_n], axis=1).astype(np.float32)
    return Encoded(scales, np.ascontiguousarray(codes), 2, gsz, ternary=True, zero_code=True)


def ternary_grid(e: Encoded, rows: int) -> Grid:
    """Per row (output channel): {-a_n, 0, +a_p} of its group, sorted, with the codes 2, 0, 1."""
    import numpy as np

    t = np.repeat(e.table.astype(np.float64), e.group_size, axis=0)[:rows]  # [R, 2]: a_p, a_n
    values = np.stack([-t[:, 1], np.zeros(rows), t[:, 0]], axis=1)
    return Grid(values, np.broadcast_to(np.array([2, 0, 1]), values.shape))


def _refit_scales(e: Encoded, codes: np.ndarray, wo: np.ndarray, hs: list[np.ndarray]) -> np.ndarray:
    """(a_p, a_n) per group re-fitted on the layer output for the chosen codes. With P, N the indicators
    of codes 1 and 2 of row j (q_j = a_p p_j - a_n n_j), summed over the group's rows:
    # [p'Hp  -p'Hn] [a_p]   [ p'Hw]
    # [-n'Hp  n'Hn] [a_n] = [-n'Hw]
    A group whose solution is not positive keeps its scales."""
    import numpy as np

    g = len(hs)
    h = np.stack(hs)
    p3 = (codes == 1).astype(np.float64).reshape(g, -1, codes.shape[1])
    n3 = (codes == 2).astype(np.float64).reshape(g, -1, codes.shape[1])
    w3 = wo.reshape(p3.shape)
    hp, hn = p3 @ h, n3 @ h
    terms = [np.sum(a * b, axis=2).ravel() for a, b in ((hp, p3), (hp, n3), (hn, n3), (hp, w3), (hn, w3))]
    gsz = e.group_size
    pp, pn, nn, pw, nw = (x.reshape(-1, gsz).sum(axis=1) for x in terms)
    det = pp * nn - pn * pn
    ok = det > 1e-12 * np.maximum(pp * nn, 1e-300)
    safe = np.where(ok, det, 1.0)
    a_p = (pw * nn - pn * nw) / safe  # Cramer's rule on the system above
    a_n = (pn * pw - pp * nw) / safe
    keep = ok & np.isfinite(a_p) & np.isfinite(a_n) & (a_p > 0) & (a_n > 0)
    out = e.table.astype(np.float64).copy()
    out[keep, 0], out[keep, 1] = a_p[keep], a_n[keep]
    return out.astype(np.float32)
