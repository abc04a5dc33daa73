"""Data-free codebook granularity for the kmeans pass (``group-size=auto``): per layer, one codebook for the
layer or one per output channel, and which layers keep 8 bits, chosen from the weights' channel SQNR.

A layer's output channel j feeds the next layer at its own scale (after BatchNorm folding, channel scales of
one layer span 10x or more), so what a codebook costs a channel is its error relative to the channel:

    # SQNR_ch = -10 log10( mean_j ||w_j - q_j||^2 / ||w_j||^2 )   over the live channels j

(a channel whose largest weight is below 1e-6 of the layer's is dead and left out). One codebook per layer
spends its levels where most weights are and leaves small-scale channels few levels; one codebook per
channel costs 2**bits floats per channel. The per-channel codebooks are taken when the layer's codebook
leaves SQNR_ch below GOOD_DB (at 8 bits it rarely does), they raise it by at least GAIN_DB and store at most
MAX_BITS bits per weight (float32 codebooks counted), and they pay for themselves: where they would store more
bits than one PROTECT_BITS codebook for the layer (64-entry codebooks at 6 bits on fewer than ~512 inputs), the
layer takes that codebook instead, so kmeans(bits=6) never stores a layer in more bits than kmeans(bits=8).
Layers whose SQNR_ch stays PROTECT_DB below the median of the model's layers keep 8 bits (at 8 bits they are
left as they are). Last, the small layers one codebook per layer leaves below GOOD_DB (depthwise and stem
convolutions, whose 9-25 inputs per channel cannot pay for per-channel codebooks) are raised to PROTECT_BITS,
cheapest first, while the raises cost at most SMALL_SHARE of the model's stored bits; a layer where a
PROTECT_BITS codebook would not be smaller than its float32 weights is left float32 (the report's skip says
why). A stem depthwise conv of 144 weights whose channel scales span 500x had SQNR_ch 21 dB at 6 bits, near
the detector's median, and cost it half its box agreement (layout_det 0.37; 0.94 kept float).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from onnxcomp.analysis.weights import Target

from ._emit import Encoded, store_table
from ._encode import encoded_bytes, kmeans_encode, stored_bytes

if TYPE_CHECKING:
    import numpy as np

GOOD_DB = 30.0  # one codebook per layer is kept when it leaves the channels this SQNR or better
GAIN_DB = 6.0  # per-channel codebooks only for a 4x lower channel error
MAX_BITS = 16.0  # ... and at least 2x smaller than float32, codebooks counted
PROTECT_DB = 6.0  # layers this far below the median channel SQNR (4x the error) keep 8 bits
PROTECT_BITS = 8
DEAD_REL = 1e-6
CHANNEL_STARTS = ("linear", "quantile", "kmeans++")  # per-channel rows are short: two swap rounds
DB_PER_BIT = 6.02  # the block candidates' price of one stored bit per weight
SMALL_SHARE = 0.01  # small poor layers are raised to PROTECT_BITS within 1% of the model's stored bits
FLOAT_BITS = 32.0


@dataclasses.dataclass
class Choice:
    group_size: int  # 0: one codebook for the layer, 1: one per output channel
    bits: int
    sqnr: float  # SQNR_ch of the chosen encoding, dB
    reason: str
    encoded: Encoded
    block_size: int = 0  # input features per codebook block (0: none)


def stored_bits(t: Target, e: Encoded, dtype: str = "auto") -> float:
    """Stored bits per weight of an encoding, codebooks counted as they would be written (``dtype``:
    ShareOptions.codebook_dtype: int8, float16 or float32 entries)."""
    return 8.0 * encoded_bytes(t, store_table(t, dataclasses.replace(e), dtype)) / t.params


def with_blocks(
    t: Target,
    base: Choice,
    block_size: int,
    init: str,
    max_iter: int,
    rng: np.random.Generator,
    dtype: str = "auto",
    max_bits: float = MAX_BITS,
) -> Choice:
    """``base`` or a block-codebook encoding of the layer (same bits, at most ``max_bits`` stored bits per weight),
    whichever scores higher (module docstring)."""
    from ._encode import block_encode

    inputs = t.w2.shape[1 - t.out_axis]
    if not 0 < block_size < inputs or base.encoded.zero_code:
        return base
    base_bits = stored_bits(t, base.encoded, dtype)
    best, best_score = base, base.sqnr - DB_PER_BIT * base_bits
    for gsz in sorted({0, base.group_size}):
        whole = base.encoded.table if gsz == base.group_size else None
        e = block_encode(t.w2, base.bits, gsz, t.out_axis, block_size, None, rng, whole)
        bits = stored_bits(t, e, dtype)
        if bits > max_bits:
            continue
        sq = channel_sqnr(t.w2, e.decoded(t.out_axis), t.out_axis)
        score = sq - DB_PER_BIT * bits
        if score > best_score:
            per = "per channel" if gsz == 1 else "per layer"
            why = (
                f"blocks of {block_size} inputs {per} (channel SQNR {sq:.1f} dB at {bits:.2f} bits/weight vs "
                f"{base.sqnr:.1f} dB at {base_bits:.2f} without blocks)"
            )
            best, best_score = Choice(gsz, base.bits, sq, why, e, block_size), score
    if best is base:
        base.reason += f"; blocks of {block_size} inputs gain less than {DB_PER_BIT:g} dB per stored bit"
    return best


def channel_sqnr(w2: np.ndarray, q: np.ndarray, out_axis: int) -> float:
    """SQNR_ch in dB: the mean over live output channels of ||w_j - q_j||^2 / ||w_j||^2."""
    import numpy as np

    w = np.asarray(w2, np.float64)
    d = w - np.asarray(q, np.float64)
    if out_axis == 1:
        w, d = w.T, d.T
    peak = np.abs(w).max(axis=1)
    live = peak > DEAD_REL * float(peak.max(initial=0.0))
    if not live.any():
        return float("inf")
    rel = (d[live] ** 2).sum(axis=1) / (w[live] ** 2).sum(axis=1)
    mean = float(rel.mean())
    return float("inf") if mean <= 0 else -10.0 * float(np.log10(mean))


def channel_encode(w2: np.ndarray, bits: int, out_axis: int, rng: np.random.Generator) -> Encoded:
    """One k-means codebook per output channel, all channels at once (``_rowkmeans.row_kmeans``)."""
    import numpy as np

    from ._rowkmeans import row_kmeans

    rows = np.asarray(w2, np.float64)
    rows = rows.T if out_axis == 1 else rows
    km = row_kmeans(rows, 1 << bits, starts=CHANNEL_STARTS, swaps=2, rng=rng)
    codes = km.labels.T if out_axis == 1 else km.labels
    return Encoded(km.centroids.astype(np.float32), np.ascontiguousarray(codes), bits, 1)


def choose(
    t: Target,
    bits: int,
    init: str,
    max_iter: int,
    rng: np.random.Generator,
    block_size: int = 0,
    dtype: str = "auto",
    fallback: bool = True,
) -> Choice:
    """Per-layer or per-channel codebooks for one layer at ``bits``, then (``block_size``) block codebooks where
    they score higher (see the module docstring); ``dtype``: the codebooks' stored type option. ``fallback``
    (data-free and calibrated auto; off in the budget mode, which prices its candidates itself): per-channel
    codebooks that would store more bits than one PROTECT_BITS codebook per layer give way to that codebook."""
    base = _choose(t, bits, init, max_iter, rng, dtype, fallback)
    if not block_size:
        return base
    cap = MAX_BITS
    if fallback and base.bits < PROTECT_BITS:
        entry = 4 if dtype == "float32" else 2  # one-row codebooks: never int8
        cap = min(cap, 8.0 * stored_bytes(t, PROTECT_BITS, 1, entry) / t.params)
    return with_blocks(t, base, block_size, init, max_iter, rng, dtype, cap)


def _choose(
    t: Target, bits: int, init: str, max_iter: int, rng: np.random.Generator, dtype: str, fallback: bool = True
) -> Choice:
    import numpy as np

    layer = kmeans_encode(t.w2, bits, 0, t.out_axis, init, None, max_iter)
    s_layer = channel_sqnr(t.w2, layer.decoded(t.out_axis), t.out_axis)
    if layer.zero_code:
        return Choice(0, bits, s_layer, f"per layer (pruned: zero code), channel SQNR {s_layer:.1f} dB", layer)
    if s_layer >= GOOD_DB:
        return Choice(0, bits, s_layer, f"per layer (channel SQNR {s_layer:.1f} dB)", layer)
    # the cap on per-channel codebooks is on their float32 cost (4 + 32 * 2^bits / inputs bits per weight), whatever
    # they are stored as: counted in float16 it would also take them for layers of 22-42 inputs per channel at 4
    # bits, which on ocr_cls raised kmeans(bits=4) from 6.2 to 10.1 stored bits per weight
    per_weight = 8.0 * stored_bytes(t, bits, t.outputs) / t.params
    if per_weight > MAX_BITS:
        why = f"per layer (per-channel float32 codebooks would store {per_weight:.1f} bits/weight)"
        return Choice(0, bits, s_layer, f"{why}, channel SQNR {s_layer:.1f} dB", layer)
    chan = channel_encode(t.w2, bits, t.out_axis, rng)
    s_chan = channel_sqnr(t.w2, chan.decoded(t.out_axis), t.out_axis)
    versus = f"channel SQNR {s_chan:.1f} dB per channel vs {s_layer:.1f} dB per layer"
    if not (s_chan >= s_layer + GAIN_DB or (np.isinf(s_chan) and not np.isinf(s_layer))):
        return Choice(0, bits, s_layer, f"per layer ({versus})", layer)
    stored = stored_bits(t, chan, dtype)  # as written (float16 codebooks where they pass the rule)
    if not fallback:  # (the budget mode: its allocator prices every candidate itself)
        return Choice(1, bits, s_chan, f"per channel ({versus}, {stored:.1f} bits/weight)", chan)
    # per-channel codebooks pay for themselves only where they store fewer bits than the one PROTECT_BITS
    # codebook per layer they compete with; else that codebook is cheaper (and at PROTECT_BITS the layer needs
    # no per-channel tables): kmeans(bits=6) never stores a layer in more bits than kmeans(bits=8) does
    if bits < PROTECT_BITS:
        up = kmeans_encode(t.w2, PROTECT_BITS, 0, t.out_axis, init, None, max_iter)
        up_bits = stored_bits(t, up, dtype)
        if stored > up_bits:
            s_up = channel_sqnr(t.w2, up.decoded(t.out_axis), t.out_axis)
            why = (
                f"kept at {PROTECT_BITS} bits: per-channel codebooks would raise the channel SQNR from {s_layer:.1f} "
                f"to {s_chan:.1f} dB but store {stored:.1f} bits/weight, one {PROTECT_BITS}-bit codebook "
                f"{up_bits:.1f} (channel SQNR {s_up:.1f} dB)"
            )
            return Choice(0, PROTECT_BITS, s_up, why, up)
    return Choice(1, bits, s_chan, f"per channel ({versus}, {stored:.1f} bits/weight)", chan)


def choose_all(
    targets: list[Target],
    bits_of: dict[int, int],
    fixed: set[int],
    init: str,
    max_iter: int,
    rng: np.random.Generator,
    block_size: int = 0,
    dtype: str = "auto",
) -> dict[int, Choice]:
    """``choose`` for every layer, then the layers PROTECT_DB below the median SQNR_ch kept at 8 bits, then the
    small poor layers raised within SMALL_SHARE of the model's stored bits (``_small_layers``); not the layers in
    ``fixed``: their bits were set by name."""
    import numpy as np

    # (a layer whose bits were set by name keeps them: no fallback to PROTECT_BITS)
    picks = {
        id(t): choose(t, bits_of[id(t)], init, max_iter, rng, block_size, dtype, id(t) not in fixed) for t in targets
    }
    finite = [c.sqnr for c in picks.values() if np.isfinite(c.sqnr)]
    if not finite:
        return picks
    median = float(np.median(finite))
    for t in targets:
        c = picks[id(t)]
        if c.sqnr >= median - PROTECT_DB or id(t) in fixed:
            continue
        low = f"channel SQNR {c.sqnr:.1f} dB is over {PROTECT_DB:g} dB below the median {median:.1f} dB"
        if c.bits >= PROTECT_BITS:
            c.reason += f"; {low} (already {c.bits} bits)"
            continue
        up = choose(t, PROTECT_BITS, init, max_iter, rng, block_size, dtype)
        up.reason = f"kept at {PROTECT_BITS} bits: {low}; {up.reason}"
        picks[id(t)] = up
    _small_layers(targets, picks, fixed, init, max_iter, rng, block_size, dtype)
    return picks


def _small_layers(
    targets: list[Target],
    picks: dict[int, Choice],
    fixed: set[int],
    init: str,
    max_iter: int,
    rng: np.random.Generator,
    block_size: int,
    dtype: str,
) -> None:
    """The layers one codebook per layer leaves below GOOD_DB, cheapest first, raised to PROTECT_BITS (left
    float where that codebook would not be smaller) while the raises together cost at most SMALL_SHARE of the
    model's stored bits: the small layers (depthwise and stem convolutions) where per-channel codebooks cannot pay
    for their tables cost the model next to nothing kept precise (coremltools' palettization likewise leaves
    weights under its weight_threshold, 2048 elements by default, uncompressed)."""
    total = sum(stored_bits(t, picks[id(t)].encoded, dtype) * t.params for t in targets)
    weights = sum(t.params for t in targets)
    entry = 4 if dtype == "float32" else 2  # one-row codebooks: never int8
    raises = []
    for t in targets:
        c = picks[id(t)]
        if id(t) in fixed or c.bits >= PROTECT_BITS or c.group_size or c.block_size or c.sqnr >= GOOD_DB:
            continue
        up = min(FLOAT_BITS, 8.0 * stored_bytes(t, PROTECT_BITS, 1, entry) / t.params)
        raises.append(((up - stored_bits(t, c.encoded, dtype)) * t.params, t))
    left = SMALL_SHARE * total
    for extra, t in sorted(raises, key=lambda r: r[0]):
        if extra > left:
            break
        left -= extra
        c = picks[id(t)]
        up = choose(t, PROTECT_BITS, init, max_iter, rng, block_size, dtype)
        floats = stored_bits(t, up.encoded, dtype) >= FLOAT_BITS
        how = f"kept at {PROTECT_BITS} bits"
        if floats:
            how = f"left float32 (a {PROTECT_BITS}-bit codebook is not smaller)"
        up.reason = (
            f"{how}, a small layer: one {c.bits}-bit codebook leaves it channel SQNR "
            f"{c.sqnr:.1f} dB, below {GOOD_DB:g} dB, and {PROTECT_BITS} bits cost the model "
            f"{extra / weights:.4f} bits/weight (small layers get up to {100 * SMALL_SHARE:g}% of its bits); "
            f"{up.reason}"
        )
        picks[id(t)] = up
