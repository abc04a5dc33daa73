"""Per-layer sensitivity lives in the core (onnxcomp.analysis.sensitivity): the prune family uses it too."""

from onnxcomp.analysis.sensitivity import OutputErrors, weight_proxy

__all__ = ["OutputErrors", "weight_proxy"]
