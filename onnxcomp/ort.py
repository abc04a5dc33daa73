"""onnxruntime sessions: optimizations off for verification, 1 thread for benchmarks, runtime auto-loaded."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from onnxcomp.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import onnxruntime as ort

logger = logging.getLogger(__name__)


def uses_custom_ops(model: onnx.ModelProto) -> bool:
    from onnxcomp.ops import DOMAIN

    return any(n.domain == DOMAIN for n in model.graph.node)


def session(
    model: onnx.ModelProto | bytes,
    *,
    optimize: bool = False,
    threads: int | None = None,
    runtime: bool | None = None,
) -> ort.InferenceSession:
    """An InferenceSession on CPU.

    ``optimize=False`` disables onnxruntime's graph optimizations so they can neither hide nor cause a
    difference (verification). ``runtime``: register libonnxcomp_ops.so (None: when the model uses
    com.onnxcomp ops and the library is available; True: required; False: never, so function bodies run).
    """
    import onnx
    import onnxruntime as ort

    from onnxcomp.determinism import session_threads

    if threads is None:
        threads = session_threads()  # 1 while passes decide the output (see onnxcomp.determinism)
    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    so.log_severity_level = 3
    if threads is not None:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    proto = model if isinstance(model, onnx.ModelProto) else None
    if runtime is None:
        runtime = proto is not None and uses_custom_ops(proto) and _runtime_available()
    if runtime:
        from onnxcomp import runtime as rt

        rt.register(so)
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    try:
        return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        raise InputError(f"onnxruntime cannot load the model: {' '.join(str(err).split())[:400]}") from err


def _runtime_available() -> bool:
    try:
        from onnxcomp import runtime as rt
    except ImportError:
        return False
    return rt.available()


def run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[Any]:
    try:
        return sess.run(outputs, feeds)
    except Exception as err:
        raise InputError(f"onnxruntime failed to run the model: {' '.join(str(err).split())[:400]}") from err
