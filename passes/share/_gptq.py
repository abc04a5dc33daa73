"""Error-compensated rounding onto a fixed grid (GPTQ) for the passes whose values are given by a rule:
``pow2`` ({0, +-s * 2**k}) and ``ternary`` ({-a_n, 0, +a_p} per output channel).

kmeans fits its codebook inside the compensated loop (``_gptvq``); here the grid comes first, from the
pass's own rule, and GPTQ (Frantar et al. 2022) only chooses which grid value each weight takes. Inputs
are rounded one at a time in decreasing order of H_ii (act-order) and each one's error is moved onto the
inputs not yet rounded, through the upper Cholesky factor U of (H + l I)^-1 in that order:

    # e = (w_i - q_i) / U_ii ;  w_{i+1:} -= e * U_{i, i+1:}

Then the grid's free scales are re-fitted by least squares on the layer output for the chosen codes
(pow2 with a fitted scale: one s per layer; ternary: (a_p, a_n) per output group), and the result is
kept only when its output error tr((W - Q) H (W - Q)^T) is below plain nearest rounding's, so the
compensation never makes a layer worse on the calibration data.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from onnxcomp.analysis.weights import inputs_per_output
from onnxcomp.errors import UsageError

from ._calibration import (
    MAX_ROWS,
    data_free_layers,
    dense_solve_flops,
    im2col_grams,
    input_energy,
    layer_inputs,
    one_hot,
    positions,
)
from ._gptvq import DAMP, LAZY_BLOCK, gptq_span, inverse_factors, output_error, trace_whw

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.analysis.weights import Target
    from onnxcomp.passes_api import PassContext, PassResult

    from ._emit import Encoded


@dataclasses.dataclass
class Grid:
    """The values a row may take: ``values`` [1 or R, L] sorted ascending per row (one row: shared by all
    rows), and the stored code of each value ``codes`` (same shape)."""

    values: np.ndarray
    codes: np.ndarray


def gptq_round(
    w: np.ndarray,
    factors: tuple[np.ndarray, np.ndarray],
    grid: Grid,
    keep: np.ndarray | None = None,
) -> np.ndarray:
    """Codes [R, n] of the rows of ``w`` [R, n] (one per output channel) rounded to ``grid`` in GPTQ's
    order with error compensation; ``factors``: ``inverse_factors`` of the conv groups' Hessians (rows
    split evenly over them). ``keep``: where False (pruned weights) the weight stays 0 with the grid's
    0 code and takes no update."""
    import numpy as np

    perm, factor = factors
    groups, n = perm.shape
    r = w.shape[0]
    per = r // groups
    shared = grid.values.shape[0] == 1
    w3 = np.take_along_axis(np.asarray(w, np.float64).reshape(groups, per, n).copy(), perm[:, None, :], axis=2)
    k3 = None if keep is None else np.take_along_axis(keep.reshape(groups, per, n), perm[:, None, :], axis=2)
    c3 = np.zeros((groups, per, n), np.int64)  # indices into the sorted grid values
    for i1 in range(0, n, LAZY_BLOCK):
        gptq_span(w3, k3, c3, factor, i1, min(i1 + LAZY_BLOCK, n), grid.values, shared, 0)
    order = np.empty_like(c3)
    np.put_along_axis(order, perm[:, None, :], c3, axis=2)
    idx = order.reshape(r, n)
    codes = np.take_along_axis(np.broadcast_to(grid.codes, (r, grid.codes.shape[1])), idx, axis=1)
    if keep is not None:
        zero_code = int(grid.codes[0, int(np.argmin(np.abs(grid.values[0])))])
        codes = np.where(keep, codes, zero_code)
    return codes


# ============================================================================================ per layer
PLAIN = {  # why a layer keeps plain rounding (the counter) -> what the report adds to its decision
    "layers_plain_no_input": "",
    "layers_plain_too_large": " (plain: Hessian factorization over max_refine_flops)",
    "layers_plain_few_rows": " (plain: fewer calibration positions than inputs)",
    "layers_plain_one_hot": " (plain: a one-hot input, a table lookup)",
}


class Hessians:
    """The Hessians of a layer's output error H = X^T X / n (one per conv group) from its calibration input,
    and their GPTQ factors; the latest is shared with the next layers that read the same input the same way (a
    transformer's Q, K and V projections). A layer is left to plain rounding (``reason``: a key of ``PLAIN``)
    when its sampled input positions are fewer than its inputs per output (H rank-deficient: GPTQ would fit the
    samples, issue 13's squeeze-excitation convs) or when factorizing H costs more than ``max_flops``."""

    def __init__(self, max_flops: float, rng: np.random.Generator, damp: float = DAMP) -> None:
        self._max_flops, self._rng, self._damp = max_flops, rng, damp
        self._held: dict[str, Any] = {}

    def reason(self, t: Target, x: np.ndarray | None) -> str | None:
        """Why ``t`` with input ``x`` gets plain rounding (a key of ``PLAIN``), or None."""
        if x is None:
            return "layers_plain_no_input"
        if dense_solve_flops(t) > self._max_flops:
            return "layers_plain_too_large"
        if min(MAX_ROWS, positions(x, t)) < inputs_per_output(t):
            return "layers_plain_few_rows"
        if one_hot(x, -1 if t.kind == "matmul" else 1):
            # each position reads one row of W: H is diagonal (the rows' counts), so no input can absorb another's
            # rounding, and GPTQ's re-fit on the sampled positions would favour the rows they happen to select
            # (magika's byte embedding, 4 bits: output error over seeds 0-3 0.081 -> 0.074 on average)
            return "layers_plain_one_hot"
        return None

    def of(self, t: Target, x: np.ndarray) -> tuple[list[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """(Hessians, inverse factors) of ``t`` on its input ``x`` (where ``reason`` is None)."""
        key = (t.kind, repr(sorted(t.conv_attrs.items())))
        held = self._held
        if held.get("x") is not x or held.get("key") != key:  # the array itself is held: no id reuse
            hs = im2col_grams(x, t, MAX_ROWS, self._rng)
            self._held = held = {"x": x, "key": key, "value": (hs, inverse_factors(hs, self._damp))}
        return held["value"]


DAMP_HELP = (
    "compensated mode: the ridge added to each layer's Hessian, relative to its mean diagonal "
    "(H + damp * mean(diag H) * I; GPTQ's percdamp). Larger trusts the calibration samples less: 4-bit kmeans "
    "with 0.1 instead of 0.01 did better on the VAD, MiniLM, the recognizer and magika (where it then beats plain "
    "k-means) and worse on both detectors (benchmarks/QUALITY.md)"
)


def calibration(
    graph: gs.Graph, ctx: PassContext, targets: list[Target], o: Any, seed: int, result: PassResult
) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray], Hessians | None]:
    """A fixed-grid pass's calibration statistics from one capture of the layer inputs: the inputs by name,
    the input-feature energy per target (``o.weighted``) and, with ``o.compensate`` not False, the Hessians;
    ({}, {}, None) without calibration data. Body layers whose input was not captured are counted data-free."""
    if o.compensate and ctx.calib is None:
        raise UsageError(f"{result.name}: compensate=true needs calibration data (--calib)")
    if o.damp <= 0:  # before the capture: a bad option fails at once
        raise UsageError(f"{result.name}: damp must be > 0, got {o.damp}")
    on = o.compensate is not False and ctx.calib is not None
    acts = layer_inputs(graph, ctx, targets, o.calib_samples) if targets and (o.weighted or on) else {}
    energy = input_energy(graph, ctx, targets, o.calib_samples, acts) if o.weighted and acts else {}
    if o.weighted or on:
        data_free_layers(ctx, targets, acts, result)
    return acts, energy, (Hessians(o.max_refine_flops, ctx.rng(seed), o.damp) if on and acts else None)


def compensate(
    t: Target, x: np.ndarray | None, e: Encoded, hessians: Hessians, grid_of: Any, refit: Any, result: PassResult
) -> tuple[Encoded, str]:
    """``e`` (of ``t``, with calibration input ``x``) re-rounded with GPTQ onto its own grid
    (``grid_of(e, rows)``), its scales re-fitted (``refit(e, codes_rows, wo, hs)`` returns a new table or
    None), kept if its output error on the calibration data is lower than plain rounding's; (encoding, how it
    was chosen for the report)."""
    import numpy as np

    why = hessians.reason(t, x)
    if why is not None:
        result.count(why)
        return e, PLAIN[why]
    hs, factors = hessians.of(t, x)
    matmul = t.kind == "matmul"
    wo = np.asarray(t.w2.T if matmul else t.w2, np.float64)  # one row per output channel
    keep = wo != 0 if e.zero_code and bool(np.any(wo == 0)) else None
    codes = gptq_round(wo, factors, grid_of(e, wo.shape[0]), keep)
    table = refit(e, codes, wo, hs)
    cand = dataclasses.replace(e, codes=np.ascontiguousarray(codes.T if matmul else codes))
    if table is not None:
        cand.table = table
    den = trace_whw(wo, hs)

    def err_of(x: Encoded) -> float:
        q = x.decoded(t.out_axis)
        return output_error(wo, np.asarray(q.T if matmul else q, np.float64), hs, den)

    plain, comp = err_of(e), err_of(cand)
    if comp < plain:
        result.count("layers_compensated")
        return cand, " compensated"
    result.count("layers_plain_better")
    return e, " (plain: lower output error than compensated)"
