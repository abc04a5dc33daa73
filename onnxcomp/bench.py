"""Latency measurement: sessions created in one process, runs interleaved, medians and ratios.

Interleaving (A, B, A, B, ...) exposes both models to the same machine noise, so their ratio holds on a noisy
2-core machine even when absolute times drift.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any


@dataclasses.dataclass
class Timing:
    name: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int


def interleaved(
    fns: Mapping[str, Callable[[], Any]], *, runs: int = 50, warmup: int = 5, min_seconds: float = 0.0
) -> dict[str, Timing]:
    """Time each callable ``runs`` times, round-robin, after ``warmup`` rounds; returns per-name medians."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    t_start = time.perf_counter()
    i = 0
    while i < runs or (time.perf_counter() - t_start) < min_seconds:
        order = names if i % 2 == 0 else names[::-1]
        for n in order:
            t0 = time.perf_counter()
            fns[n]()
            samples[n].append(time.perf_counter() - t0)
        i += 1
    return {n: _timing(n, s) for n, s in samples.items()}


def _timing(name: str, s: Sequence[float]) -> Timing:
    ms = sorted(x * 1e3 for x in s)
    q = statistics.quantiles(ms, n=10) if len(ms) >= 2 else [ms[0]] * 9
    return Timing(name, statistics.median(ms), q[0], q[-1], len(ms))


def model_runner(
    model: Any, feeds: Mapping[str, Any], *, threads: int = 1, optimize: bool = True, runtime: bool | str | None = None
) -> Callable[[], Any]:
    """A zero-argument callable running ``model`` once in onnxruntime (full graph optimizations)."""
    from onnxcomp.ort import run, session

    sess = session(model, optimize=optimize, threads=threads, runtime=runtime)
    feeds = dict(feeds)
    run(sess, feeds)  # a model that cannot run fails here, as an input error, not inside the timing loop
    return lambda: sess.run(None, feeds)
