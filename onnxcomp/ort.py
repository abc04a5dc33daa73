"""onnxruntime sessions: optimizations off for verification, 1 thread for benchmarks, runtime auto-loaded."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from onnxcomp.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import onnxruntime as ort

logger = logging.getLogger(__name__)


def session(
    model: onnx.ModelProto | bytes | str | os.PathLike[str],
    *,
    optimize: bool = False,
    threads: int | None = None,
    runtime: bool | str | None = None,
    providers: list[str] | None = None,
) -> ort.InferenceSession:
    """An InferenceSession on CPU, of a model (over protobuf's limit: through a file), its bytes or its path.

    ``optimize=False`` disables onnxruntime's graph optimizations so they can neither hide nor cause a
    difference (verification). ``runtime``: ``"ops"`` or True registers libonnxcomp_ops.so (required);
    ``"ort"`` or False never (function bodies run); ``"ep"`` adds the OnnxcompExecutionProvider (see
    onnxcomp.runtime.session); None: ``"ops"`` when the model uses com.onnxcomp ops and the library is
    available, else ``"ort"``; ``"auto"``: ``"ep"`` where its library is built too (what users get by default:
    bench, verify, onnxcomp.runtime.session). ``providers``: onnxruntime's (default: CPU) for the runtimes other
    than ``"ep"``.
    """
    import onnx
    import onnxruntime as ort

    from onnxcomp.determinism import native_kernels_allowed, session_threads

    if threads is None:
        threads = session_threads()  # 1 while passes decide the output (see onnxcomp.determinism)
    if runtime is None and not native_kernels_allowed():
        runtime = "ort"  # decisions never depend on the native runtime's presence, version or ISA
    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    # onnxruntime's own logger prints colored multi-line errors to stderr before the exception that says the
    # same; onnxcomp reports that exception as one line, so only fatal log records remain
    _quiet_logger(ort)
    so.log_severity_level = 4
    if threads is not None:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if isinstance(model, (str, os.PathLike)):
        proto = onnx.load(os.fspath(model), load_external_data=False)
    else:
        proto = model if isinstance(model, onnx.ModelProto) else onnx.load_model_from_string(model)
    name = resolve_runtime(proto, runtime)
    from onnxcomp import runtime as rt

    if name == "ep" and rt.coded_decoder_bytes(proto) > rt.DECODER_FOLD_LIMIT:
        # big weight decoders would fold slowly through their function bodies: decoded once natively here
        # (runtime.predecoded), else by the custom-op library registered next to the EP
        if isinstance(model, (str, os.PathLike)) and proto is not None:
            proto = onnx.load(os.fspath(model))  # the weights too, for the copy
        decoded = rt.predecoded(proto)
        if decoded is not None:
            model = decoded
        else:
            rt.register(so)
    if name == "ops":
        rt.register(so)
    try:
        with _source(model) as data:
            if name == "ep":
                so.add_provider_for_devices(rt.register_ep(), {})
                return ort.InferenceSession(data, so)
            return ort.InferenceSession(data, so, providers=providers or ["CPUExecutionProvider"])
    except InputError:
        raise
    except Exception as err:  # onnxruntime raises its own exception types
        raise InputError(f"onnxruntime cannot load the model: {' '.join(str(err).split())[:400]}") from err


@contextlib.contextmanager
def _source(model: onnx.ModelProto | bytes | str | os.PathLike[str]) -> Iterator[bytes | str]:
    """What onnxruntime is given: the model's bytes, its path, or, for a model over protobuf's limit (or with
    its weights left in their files), a temporary file written with external data (onnxruntime reads the
    weights at load; the file is removed once the session exists)."""
    import onnx

    from onnxcomp import io

    if isinstance(model, (str, os.PathLike)):
        yield os.fspath(model)
    elif not isinstance(model, onnx.ModelProto):
        yield model
    else:
        try:
            data = io.serialize(model)
        except io.TooLargeError:
            with io.model_file(model) as path:
                yield str(path)
            return
        yield data


def resolve_runtime(model: onnx.ModelProto, runtime: bool | str | None) -> str:
    """The runtime a session of ``model`` gets: "ort", "ops" or "ep" (see :func:`session`)."""
    from onnxcomp.ops import uses_ops

    if runtime == "auto":
        # what a user gets unless they choose (bench, verify, runtime.session): the EP where it is built. On
        # convolution networks the custom-op library alone runs slower than the fp32 original (its kernels break
        # onnxruntime's blocked-layout chains), the EP faster (benchmarks/bench_ep.py)
        if uses_ops(model) and runtime_available() and ep_available():
            return "ep"
        runtime = None
    if runtime is None:  # the passes' own runs (captures, folding, load checks)
        return "ops" if uses_ops(model) and runtime_available() else "ort"
    if runtime is True or runtime is False:
        return "ops" if runtime else "ort"
    if runtime not in ("ort", "ops", "ep"):
        raise InputError(f"runtime must be ort, ops or ep, got {runtime!r}")
    return runtime


def runtime_available() -> bool:
    """Whether the native custom-op library (libonnxcomp_ops.so) can be loaded here."""
    try:
        from onnxcomp import runtime as rt
    except ImportError:
        return False
    return rt.available()


def ep_available() -> bool:
    """Whether the execution provider library (libonnxcomp_ep.so) can be found here."""
    try:
        from onnxcomp import runtime as rt
    except ImportError:
        return False
    return rt.ep_available()


def _quiet_logger(ort: Any) -> None:
    global _LOGGER_QUIET
    if not _LOGGER_QUIET:
        ort.set_default_logger_severity(4)
        _LOGGER_QUIET = True


_LOGGER_QUIET = False


def run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[Any]:
    """``sess.run`` with onnxruntime's errors as one-line InputErrors. Samples stacked on axis 0 for a model of fixed
    batch size (:func:`onnxcomp.calib.stacked_batches`) run one batch at a time, their outputs concatenated on
    axis 0 (a scalar output stacked)."""
    from onnxcomp.calib import split_batches, stacked_batches

    dims = {i.name: list(i.shape) for i in sess.get_inputs()}
    k = stacked_batches(feeds, dims)
    if k > 1:
        import numpy as np

        parts = [_run_once(sess, part, outputs) for part in split_batches(feeds, dims, k)]
        out: list[Any] = []
        for vs in zip(*parts, strict=True):
            if isinstance(vs[0], list):
                out.append([x for p in vs for x in p])
            elif not np.ndim(vs[0]):
                out.append(np.stack(vs))
            elif len({np.shape(v)[1:] for v in vs}) > 1:
                out.append(Ragged(vs))  # e.g. a detector's boxes after NMS: a count of its own per batch
            else:
                out.append(np.concatenate(vs))
        return out
    return _run_once(sess, feeds, outputs)


class Ragged(list):
    """An output of stacked batches (:func:`run`) whose shape changes from one batch to the next beyond axis 0:
    the batches' arrays, in order (verification compares them batch by batch)."""


def _run_once(sess: ort.InferenceSession, feeds: dict[str, np.ndarray], outputs: list[str] | None) -> list[Any]:
    import onnxruntime as ort

    ro = ort.RunOptions()
    ro.log_severity_level = 4  # kernel errors come back as the exception below, in one line
    try:
        return sess.run(outputs, feeds, ro)
    except Exception as err:
        raise InputError(f"onnxruntime failed to run the model: {' '.join(str(err).split())[:400]}") from err
