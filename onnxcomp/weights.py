"""Non-finite weights: found on load and reported, never passed through unnoticed.

A NaN or Inf in a weight makes every output it reaches NaN/Inf; a lossless pipeline keeps them (equal outputs),
but the report says where they are, and lossy passes skip such layers with a reason instead of failing inside
an SVD or a k-means.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import onnx


@dataclasses.dataclass
class NonFinite:
    """A weight tensor holding NaN or Inf values."""

    name: str
    nan: int
    inf: int
    size: int

    def describe(self) -> str:
        parts = [f"{n} {k}" for n, k in ((self.nan, "NaN"), (self.inf, "Inf")) if n]
        return f"{self.name} ({' and '.join(parts)} of {self.size:,} values)"


def nonfinite_reason(values: np.ndarray) -> str | None:
    """Why a weight cannot be compressed (it holds NaN/Inf), or None when it is all finite."""
    import numpy as np

    if values.dtype.kind not in "fc" or all_finite(values):
        return None
    nan = int(np.isnan(values).sum())
    inf = int(np.isinf(values).sum())
    return f"its weights hold {nan} NaN and {inf} Inf of {values.size} values (left unchanged)"


def all_finite(values: np.ndarray) -> bool:
    """True when ``values`` holds no NaN/Inf; a float64 sum (NaN and Inf propagate, finite float32/float16
    values cannot overflow it), so no boolean copy of a large tensor is made."""
    import numpy as np

    if values.dtype.kind not in "fc" or values.size == 0:
        return True
    if values.dtype.kind == "c" or values.dtype.itemsize >= 8:
        return bool(np.isfinite(values).all())
    return bool(np.isfinite(np.add.reduce(values.reshape(-1), dtype=np.float64)))


def nonfinite_weights(model: onnx.ModelProto) -> list[NonFinite]:
    """Every floating-point initializer or Constant tensor (subgraphs included) holding NaN or Inf."""
    import numpy as np
    from onnx import numpy_helper

    from onnxcomp.cost import weight_tensors

    found = []
    for t in weight_tensors(model.graph):
        if t.data_type not in _FLOAT_TYPES or t.data_location == 1:  # EXTERNAL: not loaded
            continue
        try:
            values = numpy_helper.to_array(t)
        except (ValueError, TypeError):
            continue  # an unreadable tensor is the checker's business
        if values.dtype.kind not in "fc":  # bfloat16 (ml_dtypes)
            values = values.astype(np.float32)
        if all_finite(values):
            continue
        found.append(NonFinite(t.name, int(np.isnan(values).sum()), int(np.isinf(values).sum()), int(values.size)))
    return found


_FLOAT_TYPES = frozenset({1, 10, 11, 16})  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
