"""binary: weights a * sign(w) with one scale per output channel."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from onnxcomp.analysis.weights import collect_targets
from onnxcomp.passes_api import Pass, PassContext, PassResult, opt, register_pass

from ._calibration import data_free_layers, input_energy
from ._emit import EmitsOps, Encoded, ShareOptions, emit_weight, saves_bytes, store_table
from ._report import finish, record, rel_error

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs


@register_pass
class Binary(EmitsOps, Pass):
    """MatMul / Gemm / Conv  =>  CodebookMatMul / CodebookConv with 1-bit weights {-a, +a} (lossy).

    W ~ a * sign(W) with a = mean |w| per output channel (or per layer), the least-squares scale for the
    sign pattern (BinaryConnect / XNOR-Net weights); with calibration data and ``weighted``,
    a = sum(e * |w|) / sum(e) with e the input-feature activation energy. Stored as a 1-bit codebook op
    (codebook [channels, 2] = [-a, +a]): 1/32 of float32 plus the scales.
    """

    name = "binary"
    lossless = False

    @dataclasses.dataclass
    class Options(ShareOptions):
        per_channel: bool = opt(True, "one scale per output channel (else one per layer)")
        weighted: bool = opt(True, "with calibration data, weight the scale by input-feature activation energy")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        o = self.options
        result = self.new_result()
        targets = collect_targets(graph, o, result, half=True)
        energy = input_energy(graph, ctx, targets, o.calib_samples) if targets and o.weighted else {}
        if o.weighted:
            data_free_layers(ctx, targets, [t.x.name for t in targets if id(t) in energy], result)
        for t in ctx.track(targets, "binary", total=len(targets)):
            e = binary_encode(t.w2, t.out_axis, o.per_channel, energy.get(id(t)))
            if not saves_bytes(t, e):
                result.skip(t.name, f"{t.params} weights: 1-bit codes and their scales would not make it smaller")
                continue
            e = store_table(t, e, o.codebook_dtype, int8=False)  # as stored: w_hat is what the model decodes
            em = emit_weight(graph, ctx, t, e, result, pass_name=self.name, huffman=o.huffman)
            if em is None:
                continue
            w_hat = e.decoded(t.out_axis)
            record(result, t, "binary", e, em, rel_error(t.w2, w_hat), 0.0)
        return finish(graph, ctx, result, o)


def binary_encode(
    w2: np.ndarray, out_axis: int, per_channel: bool = True, weights: np.ndarray | None = None
) -> Encoded:
    import numpy as np

    n_out = w2.shape[out_axis]
    gsz = 1 if per_channel else n_out
    wg = np.moveaxis(w2.astype(np.float64), out_axis, 0).reshape(n_out // gsz, -1)
    s = (
        np.ones_like(wg)
        if weights is None
        else np.moveaxis(np.asarray(weights, np.float64), out_axis, 0).reshape(wg.shape) + 1e-12
    )
    a = (s * np.abs(wg)).sum(1) / s.sum(1)  # argmin_a sum s (|w| - a)^2
    table = np.stack([-a, a], axis=1).astype(np.float32)
    codes = (w2 >= 0).astype(np.int64)
    return Encoded(table, codes, 1, gsz)
