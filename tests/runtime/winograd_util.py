"""The lossless tolerance WinogradConv is held to: the one `--verify` applies to lossless pipelines."""

from __future__ import annotations

import numpy as np

from onnxcomp.verify import Tolerance, compare_arrays


def assert_lossless(got: np.ndarray, ref: np.ndarray, what: str = "Y") -> None:
    m = compare_arrays(what, np.asarray(ref), np.asarray(got), Tolerance.lossless())
    assert m.ok, f"{what}: {m.why} (max|ref| {m.ref_max:.3g}, cosine {m.cosine:.7f})"
