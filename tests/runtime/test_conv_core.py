"""The convolution kernel core's C++ API (runtime/src/conv) on its own: conv_core_check.cc, compiled here with
the Winograd sources, checks every kernel set, tile and layout (NCHW, NCHWc) against a float64 direct convolution
(the entry points a second consumer such as the execution provider calls, beyond what the custom op exercises)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "runtime" / "src"


@pytest.mark.skipif(shutil.which(os.environ.get("CXX") or "g++") is None, reason="needs a C++ compiler")
def test_winograd_core_all_isas_and_layouts(tmp_path):
    cxx = os.environ.get("CXX") or "g++"
    exe = tmp_path / "conv_core_check"
    sources = [Path(__file__).with_name("conv_core_check.cc")] + [
        SRC / "conv" / f for f in ("winograd.cc", "winograd_scalar.cc", "winograd_avx2.cc", "winograd_avx512.cc")
    ]
    cmd = [
        cxx,
        "-std=c++17",
        "-O2",
        "-Wall",
        "-Wno-maybe-uninitialized",
        f"-I{SRC}",
        *map(str, sources),
        "-o",
        str(exe),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert run.stdout.startswith("ok "), run.stdout
    assert int(run.stdout.split()[1]) >= 500  # cases: shapes x kernel sets x layouts
