"""pow2: weights rounded to {0, +-s * 2**k} (shift-only multiplies: INQ, ADMM low-bit)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

from onnxcomp.analysis.weights import bits_for, collect_targets
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
class Pow2(EmitsOps, Pass):
    """MatMul / Gemm / Conv  =>  CodebookMatMul / CodebookConv with weights in {0, +-s * 2**k} (lossy).

    Each weight becomes the nearest value of {0} U {+-s * 2**k : k_min <= k <= k_max}: multiplies turn into
    shifts (INQ, the ADMM low-bit paper). With ``bits`` bits there are (2**bits - 1) // 2 exponents; the top
    one follows INQ, k_max = floor(log2(4/3 * max|w| / s)), unless ``max_exp`` fixes it. ``scale=none`` keeps
    s = 1 (pure powers of two); ``scale=lsq`` fits one float s per layer (a grid over one octave, then
    alternating least squares), which the ADMM paper allows. Stored as a codebook op, code 0 = 0.0.

    With calibration data (``compensate``, on by default there) the weights are rounded onto the same
    levels in GPTQ's order, each input's rounding error moved onto the inputs not yet rounded (``_gptq``),
    and a fitted scale is re-fitted by least squares on the layer output; a layer keeps plain rounding when
    that has the lower output error on the calibration data.
    """

    name = "pow2"
    lossless = False

    @dataclasses.dataclass
    class Options(ShareOptions):
        bits: int = opt(4, "code bits, 2..8: (2**bits - 1) // 2 exponents")
        bits_per_layer: dict[str, int] = opt({}, "bits for layers matching a name pattern")
        max_exp: int | None = opt(None, "largest exponent k (default: from max|w| per layer, as INQ)")
        scale: Literal["none", "lsq"] = opt("none", "none: pure powers of two; lsq: a fitted scale per layer")
        sparse: Literal["auto", "never", "always"] = opt(
            "auto", "EIE sparse layout for MatMul layers with many zeros (auto: when smaller)"
        )
        weighted: bool = opt(True, "with calibration data, weight the scale fit by input-feature energy")
        compensate: bool | None = opt(
            None,
            "error-compensated rounding (GPTQ's order onto the power-of-two levels): each input's rounding "
            "error moved onto the inputs not yet rounded through the inverse Hessian of the layer output "
            "(H = X^T X + damp * mean(diag H) * I); with scale=lsq the scale is then re-fitted on the output. Default "
            "(unset): on when calibration data is given. Layers with fewer sampled input positions than "
            "inputs, or a factorization over max_refine_flops, keep plain rounding (counters layers_plain_*)",
        )
        damp: float = opt(GPTQ_DAMP, DAMP_HELP)
        max_refine_flops: float = opt(
            2e10, "compensated mode: layers whose Hessian factorization costs more keep plain rounding"
        )

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        import numpy as np

        o = self.options
        for b in [o.bits, *o.bits_per_layer.values()]:
            if not 2 <= int(b) <= 8:
                raise UsageError(f"pow2: bits must be 2..8, got {b}")
        result = self.new_result()
        targets = collect_targets(graph, o, result, half=True)
        acts, energy, hessians = calibration(graph, ctx, targets, o, 17, result)
        for t in ctx.track(targets, "pow2", total=len(targets)):
            bits = bits_for(t, o.bits, o.bits_per_layer)
            e, (kmin, kmax), s = pow2_encode(t.w2, bits, t.out_axis, o.max_exp, o.scale, energy.get(id(t)))
            how = ""
            if hessians is not None:
                refit = _refit_scale if o.scale == "lsq" else _fixed
                e, how = compensate(t, acts.get(t.x.name), e, hessians, pow2_grid, refit, result)
                s = float(e.table[0, 1]) / 2.0**kmin if e.table[0, 1] else s  # the re-fitted scale
            if not saves_bytes(t, e):
                result.skip(t.name, f"{t.params} weights: a {bits}-bit codebook would not make it smaller")
                continue
            e = store_table(t, e, o.codebook_dtype, int8=False)  # as stored: w_hat is what the model decodes
            em = emit_weight(graph, ctx, t, e, result, pass_name=self.name, sparse=o.sparse, huffman=o.huffman)
            if em is None:
                continue
            w_hat = e.decoded(t.out_axis)
            record(
                result,
                t,
                f"pow2 {bits}-bit{how}",
                e,
                em,
                rel_error(t.w2, w_hat),
                float(np.mean(e.codes == 0)),
                exponents=[kmin, kmax],
                scale=s,
            )
        return finish(graph, ctx, result, o)


def _round_pow2(x: np.ndarray, kmin: int, kmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest of {0, +-2**k, kmin <= k <= kmax} to x: (exponent index 0..n-1 or -1 for zero, sign)."""
    import numpy as np

    a = np.abs(x)
    with np.errstate(divide="ignore"):
        lo = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    lo = np.clip(lo, kmin, kmax)
    # nearer of 2**lo and 2**(lo+1) (linear distance), clipped into the range
    up = np.minimum(lo + 1, kmax)
    k = np.where(np.abs(a - 2.0**up) < np.abs(a - 2.0**lo), up, lo)
    zero = a < 2.0**kmin / 2  # nearer to 0 than to the smallest power
    idx = np.where(zero, -1, (k - kmin)).astype(np.int64)
    return idx, np.sign(x)


def pow2_encode(
    w2: np.ndarray,
    bits: int,
    out_axis: int = 1,
    max_exp: int | None = None,
    scale: str = "none",
    weights: np.ndarray | None = None,
) -> tuple[Encoded, tuple[int, int], float]:
    """Codebook [1, 2**bits]: code 0 = 0, codes 1..n = +s*2**k (k ascending), n+1..2n = -s*2**k."""
    import numpy as np

    n_exp = (1 << bits) // 2 - 1  # (2**bits - 1) // 2 exponents, each with both signs, plus 0
    w = w2.astype(np.float64)
    sw = np.ones_like(w) if weights is None else np.asarray(weights, np.float64) + 1e-12
    wmax = float(np.abs(w).max()) or 1.0

    def quantize(s: float) -> tuple[np.ndarray, np.ndarray, int, float]:
        kmax = int(np.floor(np.log2(4.0 / 3.0 * wmax / s))) if max_exp is None else int(max_exp)
        kmin = kmax - n_exp + 1
        idx, sign = _round_pow2(w / s, kmin, kmax)
        q = np.where(idx >= 0, sign * 2.0 ** (idx + kmin), 0.0)
        err = float((sw * (w - s * q) ** 2).sum())
        return idx, sign, kmax, err

    s = 1.0
    if scale == "lsq":
        # s and 2s give the same levels shifted by one exponent: search one octave, then refine s by LS
        grid = 2.0 ** (np.arange(32) / 32.0)
        s = float(min(grid, key=lambda c: quantize(c)[3]))
        for _ in range(20):
            idx, sign, kmax, _ = quantize(s)
            q = np.where(idx >= 0, sign * 2.0 ** (idx + kmax - n_exp + 1), 0.0)
            den = float((sw * q * q).sum())
            if den <= 0:
                break
            new = float((sw * w * q).sum()) / den  # argmin_s sum sw (w - s q)^2
            if abs(new - s) <= 1e-9 * s:
                break
            s = new
    elif scale != "none":
        raise UsageError(f"pow2: unknown scale {scale!r}")
    idx, sign, kmax, _ = quantize(s)
    kmin = kmax - n_exp + 1
    levels = s * 2.0 ** np.arange(kmin, kmax + 1)
    table = np.zeros((1, 1 << bits), np.float32)
    table[0, 1 : n_exp + 1] = levels
    table[0, n_exp + 1 : 2 * n_exp + 1] = -levels
    codes = np.where(idx < 0, 0, np.where(sign > 0, idx + 1, idx + 1 + n_exp)).astype(np.int64)
    return Encoded(table, codes, bits, w2.shape[out_axis], zero_code=True), (kmin, kmax), s


def pow2_grid(e: Encoded, rows: int) -> Grid:
    """The levels of ``pow2_encode``'s table sorted, with their codes: -s*2**kmax .. -s*2**kmin, 0,
    s*2**kmin .. s*2**kmax (one grid for all rows)."""
    import numpy as np

    n_exp = (1 << e.bits) // 2 - 1
    codes = np.concatenate([np.arange(2 * n_exp, n_exp, -1), [0], np.arange(1, n_exp + 1)])
    return Grid(e.table[0, codes][None, :].astype(np.float64), codes[None, :])


def _fixed(e: Encoded, codes: np.ndarray, wo: np.ndarray, hs: list[np.ndarray]) -> None:
    """Pure powers of two: nothing to re-fit."""
    return None


def _refit_scale(e: Encoded, codes: np.ndarray, wo: np.ndarray, hs: list[np.ndarray]) -> np.ndarray:
    """The layer's scale re-fitted on the output for the chosen codes: with Q the current levels,
    # f = tr(Q H W^T) / tr(Q H Q^T),  table' = f * table"""
    import numpy as np

    q = e.table[0].astype(np.float64)[codes]
    g = len(hs)
    q3, w3 = q.reshape(g, -1, q.shape[1]), wo.reshape(g, -1, wo.shape[1])
    qh = q3 @ np.stack(hs)
    den = float(np.sum(qh * q3))
    f = float(np.sum(qh * w3)) / den if den > 0 else 1.0
    return (e.table * f).astype(np.float32) if np.isfinite(f) and f > 0 else e.table
