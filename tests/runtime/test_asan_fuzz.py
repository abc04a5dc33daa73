"""Fuzz every com.onnxcomp op, and the OnnxcompExecutionProvider, with random and malformed inputs under
AddressSanitizer + UBSan.

Builds the runtime (both libraries) with -fsanitize=address,undefined into a temporary directory, then runs
fuzz_driver.py in a python process with libasan (and libstdc++, so that ASan can intercept C++
exceptions) preloaded, once per kernel set (scalar, AVX2, AVX-512): every case runs with the custom-op library,
and again with the EP added (its claimed matmuls, convolutions and chains). Passes when every case either
ran correctly or was rejected with an onnxruntime error, and no sanitizer reported anything.
Takes about 1.5 minutes (ONNXCOMP_FUZZ_SECONDS sets the time per kernel set, default 15).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.slow


def _gcc_lib(name: str) -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or "g++"
    out = subprocess.run([cxx, f"-print-file-name={name}"], capture_output=True, text=True, check=True).stdout.strip()
    return out


@pytest.fixture(scope="module")
def asan_library(tmp_path_factory, runtime_lib) -> Path:
    if shutil.which("cmake") is None or shutil.which("g++") is None:
        pytest.fail("the ASan fuzz test needs cmake and g++")
    build = tmp_path_factory.mktemp("asan-build")
    cfg = [
        "cmake",
        "-S",
        str(REPO / "runtime"),
        "-B",
        str(build),
        "-DONNXCOMP_SANITIZE=ON",
        "-DCMAKE_BUILD_TYPE=Debug",
    ]
    if shutil.which("ninja"):
        cfg += ["-G", "Ninja"]
    subprocess.run(cfg, check=True, capture_output=True)
    res = subprocess.run(
        ["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    lib = build / "libonnxcomp_ops.so"
    assert lib.is_file(), "the sanitizer build produced no library (onnxruntime headers missing?)"
    assert (build / "libonnxcomp_ep.so").is_file(), "the sanitizer build produced no EP library"
    return lib


@pytest.mark.parametrize("isa", ["avx512", "avx2", "scalar"])
def test_fuzz_under_asan(asan_library, isa):
    libasan = _gcc_lib("libasan.so")
    libstdcxx = _gcc_lib("libstdc++.so.6")
    assert os.path.isabs(libasan), f"libasan not found ({libasan})"
    seconds = os.environ.get("ONNXCOMP_FUZZ_SECONDS", "15")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "ONNXCOMP_RUNTIME_LIBRARY": str(asan_library),
        "ONNXCOMP_EP_LIBRARY": str(asan_library.parent / "libonnxcomp_ep.so"),
        "ONNXCOMP_ISA": isa,
        "LD_PRELOAD": f"{libasan} {libstdcxx}",
        # leaks: python and onnxruntime keep allocations alive at exit; mismatch/odr: uninstrumented libs
        "ASAN_OPTIONS": "detect_leaks=0:allocator_may_return_null=1:alloc_dealloc_mismatch=0:"
        "detect_odr_violation=0:halt_on_error=1:abort_on_error=0",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    seed = {"avx512": 1, "avx2": 2, "scalar": 3}[isa]
    res = subprocess.run(
        [sys.executable, str(HERE / "fuzz_driver.py"), str(seed), seconds],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = res.stdout + res.stderr
    for marker in ("ERROR: AddressSanitizer", "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer"):
        assert marker not in log, log[-8000:]
    assert res.returncode == 0, log[-8000:]
    assert "fuzz:" in res.stdout
    summary = res.stdout.strip().splitlines()[-1]
    assert " 0 EP runs" not in summary, summary  # the EP path was exercised
    print(summary)
