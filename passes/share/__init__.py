"""Weight sharing and low-bit weights: kmeans, ternary, binary, pow2, prune-weights, huffman (one pass per module).

The family's helpers are private modules; what other code (tests, benchmarks) may use is re-exported here: the
1-D k-means (``kmeans_1d``, ``init_centroids``), the calibration statistics and least-squares fits of weight
targets (``im2col``, ``im2col_pair``, ``positions``, ``sequential_waves``, ``paired_grams``, ``dense_refit``,
``lsq_update``), the bit budget allocation (``allocate``, ``Option``, ``BudgetError``) and the error-compensated
quantization (``compensated_quantize``, ``row_kmeans``, ``output_error``, ``inverse_factors``; for fixed grids,
``gptq_round`` and ``Grid``), the block codebooks (``block_encode`` and ``kmeans_encode`` data-free,
``compensated_quantize_blocks`` and ``decode_blocks`` error-compensated), the scaled codebooks (``scaled_encode``,
stored as ``scaled_dtype`` says), the channel SQNR that picks codebook granularity (``channel_sqnr``) and the
data-free sum-keeping codes (``keep_row_sums``).
"""

from ._budget import BudgetError, Option, allocate
from ._calibration import (
    dense_refit,
    im2col,
    im2col_pair,
    lsq_update,
    paired_grams,
    positions,
    sequential_waves,
)
from ._emit import scaled_dtype
from ._encode import block_encode, kmeans_encode, scaled_encode
from ._gptq import Grid, gptq_round
from ._gptvq import compensated_quantize, compensated_quantize_blocks, decode_blocks, inverse_factors, output_error
from ._granularity import channel_sqnr
from ._kmeans import init_centroids, kmeans_1d
from ._rowkmeans import row_kmeans
from ._sums import keep_row_sums

__all__ = [
    "BudgetError",
    "Grid",
    "Option",
    "allocate",
    "block_encode",
    "channel_sqnr",
    "compensated_quantize",
    "compensated_quantize_blocks",
    "decode_blocks",
    "dense_refit",
    "gptq_round",
    "im2col",
    "im2col_pair",
    "init_centroids",
    "inverse_factors",
    "keep_row_sums",
    "kmeans_1d",
    "kmeans_encode",
    "lsq_update",
    "output_error",
    "paired_grams",
    "positions",
    "row_kmeans",
    "scaled_dtype",
    "scaled_encode",
    "sequential_waves",
]
