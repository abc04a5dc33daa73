"""Convolution algorithm estimator: per layer, the FLOPs, bytes and predicted time of every algorithm that can
compute it, on a hardware profile (``cost.Hardware``).

Algorithms (``ALGORITHMS``, keyed by name):

- ``im2col``: onnxruntime's own Conv (its NCHWc direct and im2col GEMM kernels): what a layer runs when
  ``select-conv`` leaves it alone. Any convolution.
- ``winograd2``, ``winograd4``, ``winograd6``: Winograd F(m x m, 3 x 3), the native runtime's WinogradConv.
  3x3 kernels, stride 1, dilation 1, one group.

Model (per layer; FLOPs count a multiply-add as 2)::

    im2col:      flops = 2 N M (C/g) kh kw OH OW
                 time  = max(flops / (peak e(K, M)), 4 (X + Y + W) / bandwidth)
                 e(K, M) = e_max K / (K + k_half) M / (M + m_half),  K = (C/g) kh kw  (small layers run slower)
    winograd m:  T = N ceil(OH / m) ceil(OW / m) tiles, alpha = m + 2
                 GEMM flops      = 2 T alpha^2 C M    (alpha^2 / (9 m^2) of the direct multiplies, plus tile padding)
                 transform flops = 2 T (C ops_in(m) + M (ops_out(m) + 2 m^2))  (the matrices' non-zeros, bias, act)
                 bytes           = 4 (X + Y + alpha^2 C M)             (the transformed weights U)
                 compute = GEMM flops / (peak e_gemm C / (C + c_half)) + transform flops / (peak e_transform)
                 time = max(compute, bytes / bandwidth) + stream
                 stream = 4 alpha^2 C M / bandwidth when U exceeds half the last-level cache (read from memory at
                          every run, measured not to overlap with the GEMMs), else 0

The efficiencies (fractions of the FMA peak) come from the hardware profile's ``efficiency`` map, which
``onnxcomp hardware probe`` measures and fits on this machine; profiles without them use ``DEFAULT_EFFICIENCY``
(measured on the project's AMD Zen 4 machines, 1 thread, AVX-512).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onnxcomp.cost import Hardware

# Fractions of the FMA peak (and the shape constants of the small-layer slowdowns), fitted by
# `onnxcomp hardware probe` on the project's AMD EPYC (Zen 4) core, 1 thread, AVX-512 (the zen4-1t profile).
DEFAULT_EFFICIENCY: dict[str, float] = {
    "im2col": 0.92,
    "im2col.k_half": 17.0,
    "im2col.m_half": 0.0,
    "winograd2.gemm": 0.79,
    "winograd2.c_half": 3.7,
    "winograd2.transform": 1.0,
    "winograd4.gemm": 0.89,
    "winograd4.c_half": 4.3,
    "winograd4.transform": 0.96,
    "winograd6.gemm": 0.86,
    "winograd6.c_half": 5.0,
    "winograd6.transform": 1.0,
}


@dataclasses.dataclass(frozen=True)
class ConvShape:
    """A convolution layer's geometry (2-D: kh, kw; NCHW)."""

    N: int
    C: int
    H: int
    W: int
    M: int
    kh: int
    kw: int
    OH: int
    OW: int
    strides: tuple[int, int] = (1, 1)
    dilations: tuple[int, int] = (1, 1)
    group: int = 1

    @property
    def winograd_eligible(self) -> bool:
        return (
            (self.kh, self.kw) == (3, 3)
            and self.strides == (1, 1)
            and self.dilations == (1, 1)
            and self.group == 1
            and min(self.N, self.C, self.M, self.OH, self.OW) >= 1
        )

    @property
    def direct_flops(self) -> int:
        return 2 * self.N * self.M * (self.C // self.group) * self.kh * self.kw * self.OH * self.OW

    @property
    def io_elements(self) -> int:
        return self.N * self.C * self.H * self.W + self.N * self.M * self.OH * self.OW


@dataclasses.dataclass
class AlgoCost:
    """One algorithm's cost for one layer."""

    algorithm: str
    flops: int  # arithmetic the algorithm does (GEMM + transforms for Winograd)
    bytes: int  # compulsory memory traffic
    compute_s: float
    memory_s: float
    stream_s: float = 0.0  # weights streamed from memory at every run, not overlapped with compute

    @property
    def seconds(self) -> float:
        return max(self.compute_s, self.memory_s) + self.stream_s

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else 0.0

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "algorithm": self.algorithm,
            "flops": self.flops,
            "bytes": self.bytes,
            "intensity": self.intensity,
            "compute_s": self.compute_s,
            "memory_s": self.memory_s,
            "stream_s": self.stream_s,
            "seconds": self.seconds,
        }


def efficiency(hw: Hardware, key: str) -> float:
    eff: Mapping[str, float] = getattr(hw, "efficiency", None) or {}
    return float(eff.get(key, DEFAULT_EFFICIENCY[key]))


def im2col_efficiency(hw: Hardware, k: int, m: int) -> float:
    """e(K, M) = e_max K / (K + k_half) M / (M + m_half): the fraction of the FMA peak onnxruntime's Conv reaches
    with K = (C/g) kh kw inputs and M outputs per group."""
    k_half, m_half = efficiency(hw, "im2col.k_half"), efficiency(hw, "im2col.m_half")
    return efficiency(hw, "im2col") * k / (k + k_half) * m / (m + m_half) if k > 0 and m > 0 else 1.0


def _im2col(s: ConvShape, hw: Hardware) -> AlgoCost | None:
    e = im2col_efficiency(hw, (s.C // s.group) * s.kh * s.kw, s.M // s.group)
    flops = s.direct_flops
    nbytes = 4 * (s.io_elements + s.M * (s.C // s.group) * s.kh * s.kw)
    return AlgoCost("im2col", flops, nbytes, flops / (hw.peak_gflops * 1e9 * e), nbytes / (hw.bandwidth_gbs * 1e9))


def winograd_terms(s: ConvShape, m: int) -> tuple[int, int, int]:
    """(GEMM flops, transform flops, transformed weight floats) of F(m, 3) on a layer."""
    from onnxcomp.winograd import transform_ops

    alpha = m + 2
    tiles = s.N * math.ceil(s.OH / m) * math.ceil(s.OW / m)
    ops_in, ops_out = transform_ops(m)
    gemm = 2 * tiles * alpha * alpha * s.C * s.M
    transform = 2 * tiles * (s.C * ops_in + s.M * (ops_out + 2 * m * m))  # + bias and activation per output
    return gemm, transform, alpha * alpha * s.C * s.M


def winograd_stream_bytes(s: ConvShape, m: int, llc_bytes: int) -> int:
    """Bytes of transformed weights read from memory at every run: U when it exceeds half the cache."""
    u = 4 * (m + 2) ** 2 * s.C * s.M
    return u if u > llc_bytes // 2 else 0


def _winograd(m: int) -> Callable[[ConvShape, Hardware], AlgoCost | None]:
    def cost(s: ConvShape, hw: Hardware) -> AlgoCost | None:
        if not s.winograd_eligible:
            return None
        gemm, transform, u = winograd_terms(s, m)
        peak = hw.peak_gflops * 1e9
        e_gemm = efficiency(hw, f"winograd{m}.gemm") * s.C / (s.C + efficiency(hw, f"winograd{m}.c_half"))
        compute = gemm / (peak * e_gemm) + transform / (peak * efficiency(hw, f"winograd{m}.transform"))
        nbytes = 4 * (s.io_elements + u)
        bw = hw.bandwidth_gbs * 1e9
        stream = winograd_stream_bytes(s, m, hw.llc_bytes) / bw
        return AlgoCost(f"winograd{m}", gemm + transform, nbytes, compute, nbytes / bw, stream)

    return cost


ALGORITHMS: dict[str, Callable[[ConvShape, Hardware], AlgoCost | None]] = {
    "im2col": _im2col,
    "winograd2": _winograd(2),
    "winograd4": _winograd(4),
    "winograd6": _winograd(6),
}


def winograd_tile(algorithm: str) -> int:
    """The tile m of a ``winogradM`` algorithm name (0 for the others)."""
    return int(algorithm[len("winograd") :]) if algorithm.startswith("winograd") else 0


def estimate(shape: ConvShape, hw: Hardware, algorithms: tuple[str, ...] | None = None) -> dict[str, AlgoCost]:
    """Cost of every (named) algorithm that can compute the layer."""
    out = {}
    for name in algorithms or tuple(ALGORITHMS):
        c = ALGORITHMS[name](shape, hw)
        if c is not None:
            out[name] = c
    return out


def choose(costs: Mapping[str, AlgoCost], margin: float = 0.0, default: str = "im2col") -> str:
    """The fastest predicted algorithm; another than ``default`` only when it saves more than ``margin`` (a
    fraction of the default's time)."""
    if default not in costs:
        return min(costs, key=lambda a: costs[a].seconds)
    best = min(costs, key=lambda a: (costs[a].seconds, a != default))
    if best != default and costs[best].seconds > (1.0 - margin) * costs[default].seconds:
        return default
    return best
