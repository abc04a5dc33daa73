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
        if t.data_type not in _FLOAT_TYPES:
            continue
        if t.data_location == 1:  # EXTERNAL: scanned on disk, chunk by chunk
            bad = _scan_external(t)
            if bad is not None:
                found.append(bad)
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


def _scan_external(t: onnx.TensorProto) -> NonFinite | None:
    """NaN/Inf counts of a weight stored in an external file, read in chunks of ``CHUNK_BYTES`` (a model of
    several GB is never held in memory for the check). Its location is an absolute path once the model is
    loaded through onnxcomp.io (checked to stay inside the model's directory); a relative location, an
    unreadable file or a bfloat16 tensor is left to the checker and to onnxruntime."""
    import math
    from pathlib import Path

    import numpy as np

    code = {1: "<f4", 10: "<f2", 11: "<f8"}.get(t.data_type)  # FLOAT, FLOAT16, DOUBLE (little-endian on disk)
    info = {e.key: e.value for e in t.external_data}
    location = Path(info.get("location", ""))
    if code is None or not location.is_absolute():
        return None
    dtype = np.dtype(code)
    count = math.prod(t.dims)
    nan = inf = 0
    per_chunk = max(1, CHUNK_BYTES // dtype.itemsize)
    try:
        with open(location, "rb") as f:
            f.seek(int(info.get("offset", 0)))
            done = 0
            while done < count:
                n = min(per_chunk, count - done)
                values = np.fromfile(f, dtype=dtype, count=n)
                if values.size < n:
                    return None  # truncated file: the checker says so
                if not all_finite(values):
                    nan += int(np.isnan(values).sum())
                    inf += int(np.isinf(values).sum())
                done += n
    except (OSError, ValueError):
        return None
    return NonFinite(t.name, nan, inf, count) if nan or inf else None


# bytes read at a time when scanning weights left in their files; a module attribute so that tests can lower it
CHUNK_BYTES = 1 << 26
_FLOAT_TYPES = frozenset({1, 10, 11, 16})  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
