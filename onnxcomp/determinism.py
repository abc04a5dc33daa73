"""Same input and options -> the same output bytes on any core count, with or without the native runtime.

BLAS (numpy's OpenBLAS), OpenMP (scikit-learn) and onnxruntime's intra-op thread pool split reductions by
their thread count, so a least-squares refit, an SVD, a k-means or an activation captured with 2 threads
differs in the last bits from the one computed with 1 (``taskset -c 0``, ``OMP_NUM_THREADS=1``), and pruning
or clustering decisions made on those numbers can flip. Everything that decides the output (constant
folding, every pass, their onnxruntime captures) therefore runs inside :func:`pinned`: BLAS and OpenMP
limited to 1 thread with threadpoolctl, and onnxruntime sessions created meanwhile given 1 intra-op thread.
Those sessions also run com.onnxcomp ops through their standard-op function bodies, never the native kernels
of libonnxcomp_ops.so: an activation captured after a compressed layer would otherwise depend on whether the
runtime is installed, on its version and on the CPU's ISA (AVX-512 and AVX2 kernels sum in different orders).
Verification and benchmarks decide nothing about the output and keep their own settings.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_SESSION_THREADS: contextvars.ContextVar[int | None] = contextvars.ContextVar("onnxcomp_session_threads", default=None)


@contextlib.contextmanager
def pinned() -> Iterator[None]:
    """BLAS/OpenMP at 1 thread and onnxruntime sessions at 1 intra-op thread for the enclosed code."""
    # threadpoolctl limits the BLAS libraries loaded when the limit is set: scipy ships its own OpenBLAS and
    # loads it on first import, so a pass importing scipy.linalg inside the block would run it unpinned
    # (thread-dependent sums, and a 2-thread Cholesky fighting for busy cores). Load it first.
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    token = _SESSION_THREADS.set(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        _SESSION_THREADS.reset(token)


def session_threads() -> int | None:
    """The intra-op thread count sessions created now must use (1 inside :func:`pinned`), else None."""
    return _SESSION_THREADS.get()


def native_kernels_allowed() -> bool:
    """False inside :func:`pinned`: sessions then run com.onnxcomp ops through their function bodies."""
    return _SESSION_THREADS.get() is None
