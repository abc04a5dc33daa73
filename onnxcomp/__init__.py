"""onnxcomp: ONNX graph-to-graph optimizer and compressor.

    import onnxcomp
    model, report = onnxcomp.optimize("model.onnx", passes="fold-constants,eliminate,fuse-bn", verify=True)

Heavy dependencies (onnx, onnxruntime, numpy) are imported lazily, on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_model", "optimize", "save_model"]


def __getattr__(name: str) -> Any:
    if name == "optimize":
        from onnxcomp.api import optimize

        return optimize
    if name in ("load_model", "save_model"):
        from onnxcomp import io

        return getattr(io, name)
    raise AttributeError(f"module 'onnxcomp' has no attribute {name!r}")
