"""Run a one-node model natively (runtime registered) and through its inlined function body."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from onnxcomp import runtime


def make_session(model, native: bool, threads: int = 1):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 4
    if native:
        runtime.register(so)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run(model, feeds, native: bool, threads: int = 1):
    return make_session(model, native, threads).run(None, feeds)[0]


def check(model, feeds, *, rtol=1e-4, atol=None, threads=1):
    """Native output == function-body output (within float32 summation-order tolerance)."""
    body = run(model, feeds, native=False)
    native = run(model, feeds, native=True, threads=threads)
    assert native.shape == body.shape
    scale = max(1.0, float(np.abs(body).max()) if body.size else 1.0)
    np.testing.assert_allclose(native, body, rtol=rtol, atol=atol if atol is not None else 2e-5 * scale)
    return native
