"""onnxcomp.runtime: locating, registering and using the native library; shape inference; ISAs."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import oplib
import pytest
from onnx import TensorProto, helper

from onnxcomp import runtime

pytestmark = pytest.mark.usefixtures("runtime_lib")
REPO = Path(__file__).resolve().parents[2]


def _model(k=16, n=24, x_shape=None):
    rng = np.random.default_rng(0)
    cb, _, packed = oplib.random_codebook_problem(rng, k, n, 4)
    return oplib.codebook_matmul(x_shape or ["batch", k], cb, packed, bits=4, n=n)


def test_import_is_lazy():
    code = "import sys, onnxcomp.runtime; assert 'onnxruntime' not in sys.modules and 'onnx' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_library_path_and_env_override(monkeypatch, runtime_lib):
    assert runtime.available()
    assert runtime.library_path().name == "libonnxcomp_ops.so"
    monkeypatch.setenv(runtime.ENV_LIBRARY, str(runtime_lib))
    assert runtime.library_path() == Path(runtime_lib).resolve()
    monkeypatch.setenv(runtime.ENV_LIBRARY, "/nonexistent/libonnxcomp_ops.so")
    assert not runtime.available()
    with pytest.raises(runtime.RuntimeNotBuiltError, match="does not name a file"):
        runtime.library_path()


def test_not_built_message(monkeypatch, tmp_path):
    monkeypatch.delenv(runtime.ENV_LIBRARY, raising=False)
    monkeypatch.setattr(runtime, "_candidates", lambda: [tmp_path / "libonnxcomp_ops.so"])
    with pytest.raises(runtime.RuntimeNotBuiltError, match="is not built: looked in"):
        runtime.library_path()
    with pytest.raises(runtime.RuntimeNotBuiltError):
        runtime.session(_model())


def test_session_helper_registers_when_needed(monkeypatch):
    model = _model()
    assert runtime.uses_runtime_ops(model)
    sess = runtime.session(model, threads=1)
    x = np.ones((3, 16), np.float32)
    assert sess.run(None, {"X": x})[0].shape == (3, 24)
    # a plain model never needs the library
    plain = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["X"], ["Y"])],
            "g",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])],
        ),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    assert not runtime.uses_runtime_ops(plain)
    monkeypatch.setenv(runtime.ENV_LIBRARY, "/nonexistent.so")
    out = runtime.session(plain, optimize=False).run(None, {"X": np.array([-1, 2], np.float32)})[0]
    np.testing.assert_array_equal(out, [0, 2])


def test_session_from_path(tmp_path):
    import onnx

    p = tmp_path / "m.onnx"
    onnx.save(_model(), p)
    sess = runtime.session(p)
    assert sess.run(None, {"X": np.ones((1, 16), np.float32)})[0].shape == (1, 24)


def _inferred(model):
    import onnxruntime as ort

    model.graph.output[0].type.tensor_type.ClearField("shape")
    so = ort.SessionOptions()
    runtime.register(so)
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.get_outputs()[0].shape


def test_shape_inference():
    assert _inferred(_model(x_shape=["batch", 7, 16])) == ["batch", 7, 24]
    assert _inferred(_model(x_shape=[3, 16])) == [3, 24]
    rng = np.random.default_rng(0)
    cb, _, packed = oplib.random_codebook_problem(rng, 4, 3 * 9, 4)
    conv = oplib.codebook_conv(
        ["n", 3, 9, 8], cb, packed, bits=4, weight_shape=[4, 3, 3, 3], pads=[1, 1, 1, 1], strides=[2, 1]
    )
    assert _inferred(conv) == ["n", 4, 5, 8]
    scales = np.ones((1, 2), np.float32)
    tern = oplib.ternary_matmul(["b", 16], scales, oplib.pack_bits(np.ones((16, 5), np.int64), 2), n=5)
    assert _inferred(tern) == ["b", 5]
    cb, rp, _, _, dp, cp = oplib.random_sparse_problem(rng, 16, 40, 4, 4, 0.3)
    sp = oplib.sparse_codebook_matmul([2, "s", 16], cb, rp, dp, cp, bits=4, index_bits=4, n=40)
    assert _inferred(sp) == [2, "s", 40]


def test_kernel_isa_reported(runtime_lib):
    lib = ctypes.CDLL(str(runtime_lib))
    lib.OnnxcompKernelIsa.restype = ctypes.c_char_p
    assert lib.OnnxcompKernelIsa().decode() in {"scalar", "avx2", "avx512"}


_ISA_SCRIPT = textwrap.dedent(
    """
    import ctypes, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    import oplib
    from rtutil import check
    from onnxcomp import runtime
    rng = np.random.default_rng(0)
    cases = [(4, 1, 1000, None), (2, 3, 512, 128), (3, 9, 300, 7), (8, 33, 200, None), (1, 2, 777, 1)]
    for bits, m, n, gs in cases:
        k = 70
        cb, codes, packed = oplib.random_codebook_problem(rng, k, n, bits, gs)
        check(oplib.codebook_matmul([m, k], cb, packed, bits=bits, n=n, group_size=gs),
              {{"X": rng.standard_normal((m, k)).astype(np.float32)}})
    for bits, m, k, n in [(4, 37, 800, 500), (3, 6, 390, 101)]:  # the float-panel GEMM: k and n blocks, odd rows
        cb, codes, packed = oplib.random_codebook_problem(rng, k, n, bits)
        bias = rng.standard_normal(n).astype(np.float32)
        model = oplib.codebook_matmul([m, k], cb, packed, bits=bits, n=n, bias=bias)
        check(model, {{"X": rng.standard_normal((m, k)).astype(np.float32)}})
    cb, _, packed = oplib.random_codebook_problem(rng, 16, 4 * 9, 5)
    ws, pads = [16, 4, 3, 3], [1, 0, 1, 2]
    conv = oplib.codebook_conv([2, 4, 11, 9], cb, packed, bits=5, weight_shape=ws, pads=pads)
    check(conv, {{"X": rng.standard_normal((2, 4, 11, 9)).astype(np.float32)}})
    cb, rp, d, e, dp, cp = oplib.random_sparse_problem(rng, 40, 90, 4, 4, 0.2)
    check(oplib.sparse_codebook_matmul([2, 40], cb, rp, dp, cp, bits=4, index_bits=4, n=90),
          {{"X": rng.standard_normal((2, 40)).astype(np.float32)}})
    lib = ctypes.CDLL(str(runtime.library_path()))
    lib.OnnxcompKernelIsa.restype = ctypes.c_char_p
    print(lib.OnnxcompKernelIsa().decode())
    """
)


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
def test_every_isa_matches(isa):
    import onnxcomp  # noqa: F401

    code = _ISA_SCRIPT.format(tests=str(Path(__file__).resolve().parent))
    env = {**os.environ, "ONNXCOMP_ISA": isa, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    got = out.stdout.strip().splitlines()[-1]
    if got != isa:
        # only a CPU without the instructions may run another table (an ignored ONNXCOMP_ISA must fail)
        assert not _cpu_has(isa), f"ONNXCOMP_ISA={isa} ran the {got} kernels on a CPU that has {isa}"
        pytest.skip(f"this CPU has no {isa}: ran {got}")


_VENDOR_SCRIPT = textwrap.dedent(
    """
    import ctypes, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    import oplib
    from rtutil import check
    from onnxcomp import runtime
    lib = ctypes.CDLL(str(runtime.library_path()))
    lib.OnnxcompKernelIsa.restype = lib.OnnxcompCpuVendor.restype = ctypes.c_char_p
    print(lib.OnnxcompKernelIsa().decode(), lib.OnnxcompCpuVendor().decode())
    rng = np.random.default_rng(1)
    # the 4-bit one-codebook GEMV: 1 row (two column blocks per pass, an odd block count and a partial block),
    # 2 and 3 rows, and a layer of one block
    for m, k, n in [(1, 70, 1000), (1, 3, 256), (2, 70, 1000), (3, 5, 130), (1, 33, 100)]:
        cb, codes, packed = oplib.random_codebook_problem(rng, k, n, 4, None)
        x = rng.standard_normal((m, k)).astype(np.float32)
        y = check(oplib.codebook_matmul([m, k], cb, packed, bits=4, n=n), {{"X": x}})
        np.testing.assert_allclose(y, x @ oplib.decode_codebook(cb, codes, n), rtol=1e-4, atol=1e-4)
    # the column-layout GEMV (codebooks that change within 16 columns), also with block codebooks of whole lines
    # (128 inputs) and of 16-row runs (48 inputs)
    for m, k, n, gs in [(1, 300, 40, 1), (2, 45, 70, 7), (3, 129, 17, 1)]:
        cb, codes, packed = oplib.random_codebook_problem(rng, k, n, 4, gs)
        x = rng.standard_normal((m, k)).astype(np.float32)
        y = check(oplib.codebook_matmul([m, k], cb, packed, bits=4, n=n, group_size=gs), {{"X": x}})
        np.testing.assert_allclose(y, x @ oplib.decode_codebook(cb, codes, gs), rtol=1e-4, atol=1e-4)
    from onnxcomp import ops
    from test_block_codebooks import _model, _three_ways
    for m, k, n, gs, bs in [(1, 300, 40, 1, 128), (3, 300, 40, 3, 48), (2, 100, 9, 1, 48)]:
        nb = -(-k // bs)
        cb = rng.standard_normal((-(-n // gs) * nb, 16)).astype(np.float32)
        codes = ops.pack_codes(rng.integers(0, 16, (k, n)), 4)
        inits = {{"cb": cb, "codes": codes, "b": rng.standard_normal(n).astype(np.float32)}}
        attrs = {{"bits": 4, "N": n, "group_size": gs, "block_size": bs}}
        x = rng.standard_normal((m, k)).astype(np.float32)
        _three_ways(_model("CodebookMatMul", attrs, inits, [m, k]), {{"x": x}})
    # the GEMM micro-kernel (B prefetched ahead on Intel): k and n blocks, odd rows, past a strip's end
    for m, k, n in [(37, 800, 500), (9, 33, 49)]:
        cb, codes, packed = oplib.random_codebook_problem(rng, k, n, 4, None)
        x = rng.standard_normal((m, k)).astype(np.float32)
        y = check(oplib.codebook_matmul([m, k], cb, packed, bits=4, n=n), {{"X": x}})
        np.testing.assert_allclose(y, x @ oplib.decode_codebook(cb, codes, n), rtol=1e-4, atol=1e-4)
    print("ok")
    """
)


@pytest.mark.parametrize("vendor", ["amd", "intel"])
def test_gemv4_decode_of_each_vendor(vendor):
    """The AVX-512 4-bit GEMVs (one codebook; the column layout) decode a line in the way measured faster on each
    vendor's cores (AMD: shifted in registers; Intel: offset loads, prefetched, two column blocks at a time), and
    the GEMM micro-kernel prefetches B on Intel only: both variants match on any CPU."""
    import onnxcomp  # noqa: F401

    code = _VENDOR_SCRIPT.format(tests=str(Path(__file__).resolve().parent))
    env = {**os.environ, "ONNXCOMP_CPU_VENDOR": vendor, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    isa, used = lines[0].split()
    assert used == vendor, f"ONNXCOMP_CPU_VENDOR={vendor} ran the {used} variants"
    assert lines[-1] == "ok"
    if isa != "avx512":
        pytest.skip(f"the {isa} kernels have no vendor variants: both runs took the same code")


# CPU flags each kernel table needs (runtime/src/cpu.cc isa_supported)
_ISA_FLAGS = {
    "scalar": set(),
    "avx2": {"avx2", "fma"},
    "avx512": {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma"},
}


def _cpu_has(isa: str) -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return isa == "scalar"
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    return _ISA_FLAGS[isa] <= flags


def test_baseline_code_is_plain_x86_64(runtime_lib):
    """Only the dispatched kernels (avx2::, avx512::) may use AVX/BMI instructions, so the library
    loads and registers on any x86-64 CPU."""
    import shutil

    if shutil.which("objdump") is None:
        pytest.skip("objdump not available")
    out = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", "-C", str(runtime_lib)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fn, bad = "", set()
    # VEX/EVEX (v...) and BMI1/2 / LZCNT mnemonics (a trailing space: SSE's andnps is baseline)
    simd = ("\tv", "\tshlx ", "\tshrx ", "\tsarx ", "\tandn ", "\tbzhi ", "\tpdep ", "\tpext ", "\ttzcnt ", "\tlzcnt ")
    for line in out.splitlines():
        if line.endswith(">:"):
            fn = line
        elif any(s in line for s in simd) and "avx512::" not in fn and "avx2::" not in fn:
            bad.add(fn)
    assert not bad, sorted(bad)[:10]


def test_registration_refuses_old_onnxruntime(runtime_lib):
    """RegisterCustomOps called by a runtime without C API 29 answers with a clear error status.

    Simulated with ctypes: a fake OrtApiBase that knows no API 29 and calls itself 1.28.0, backed by
    the real onnxruntime library for the older API (to create and read the status)."""
    import glob

    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    libs = sorted(glob.glob(str(capi / "libonnxruntime.so*")))
    if not libs:
        pytest.skip("no libonnxruntime.so in the onnxruntime package")
    ort_lib = ctypes.CDLL(libs[0])

    get_api_t = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)
    version_t = ctypes.CFUNCTYPE(ctypes.c_void_p)

    class ApiBase(ctypes.Structure):
        _fields_ = [("GetApi", get_api_t), ("GetVersionString", version_t)]

    ort_lib.OrtGetApiBase.restype = ctypes.POINTER(ApiBase)
    real = ort_lib.OrtGetApiBase().contents

    def fake_get_api(version):
        return None if version >= 29 else real.GetApi(version)

    old_version = ctypes.create_string_buffer(b"1.28.0")
    fake = ApiBase(get_api_t(fake_get_api), version_t(lambda: ctypes.addressof(old_version)))
    ours = ctypes.CDLL(str(runtime_lib))
    ours.RegisterCustomOps.restype = ctypes.c_void_p
    ours.RegisterCustomOps.argtypes = [ctypes.c_void_p, ctypes.POINTER(ApiBase)]
    status = ours.RegisterCustomOps(None, ctypes.byref(fake))
    assert status, "registration must fail on an old runtime"
    api1 = ctypes.cast(real.GetApi(1), ctypes.POINTER(ctypes.c_void_p))
    get_message = ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.c_void_p)(api1[2])  # OrtApi::GetErrorMessage
    msg = get_message(status).decode()
    assert "needs onnxruntime >= 1.29" in msg and "1.28.0" in msg, msg
