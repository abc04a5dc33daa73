"""WinogradConv native vs its function body for one kernel set (run with ONNXCOMP_ISA set; test helper).

Usage: ONNXCOMP_ISA=avx2 python winograd_isa_check.py  -> prints "ok <isa> <cases>" or fails with details.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oplib
from rtutil import run
from winograd_util import assert_lossless

from onnxcomp import runtime

CASES = [
    # N, C, M, H, W, pads, tile, leaky, clip
    (1, 1, 1, 3, 3, (0, 0, 0, 0), 4, None, None),
    (2, 5, 7, 9, 11, (1, 1, 1, 1), 4, 0.0, None),
    (1, 17, 33, 13, 6, (0, 2, 1, 0), 2, None, (-0.5, 0.7)),
    (3, 24, 16, 15, 15, (1, 1, 1, 1), 6, 0.1, None),
    (1, 40, 20, 31, 29, (2, 0, 0, 2), 4, 0.0, (0.0, 6.0)),
    (2, 64, 72, 8, 37, (1, 1, 1, 1), 2, None, None),
]


def main() -> int:
    rng = np.random.default_rng(7)
    for n, c, m, h, w, pads, tile, leaky, clip in CASES:
        wt = (rng.standard_normal((m, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
        b = rng.standard_normal(m).astype(np.float32)
        model = oplib.winograd_conv([n, c, h, w], wt, bias=b, pads=pads, tile=tile, leaky_alpha=leaky, clip=clip)
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        assert_lossless(run(model, {"X": x}, native=True, threads=2), run(model, {"X": x}, native=False))
    lib = ctypes.CDLL(str(runtime.library_path()))
    lib.OnnxcompKernelIsa.restype = ctypes.c_char_p
    print("ok", lib.OnnxcompKernelIsa().decode(), len(CASES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
