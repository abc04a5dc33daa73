"""Hardware profiles for the cost model: the built-in ones (``cost.HARDWARE``), profile files, and the probe.

``--hardware`` takes a built-in name or the path of a profile file (JSON) that ``onnxcomp hardware probe``
wrote. The probe measures, on the calling thread (1 thread, thread CPU time, so other work on the machine does
not count): the FMA peak (the native runtime's register-only FMA loop), the memory bandwidth (a copy of a
256 MB array), the last-level cache size (sysfs), onnxruntime's 3x3 Conv on a set of layer shapes, and the
native Winograd kernels on the same shapes; from these it fits the estimator's efficiency factors
(onnxcomp.estimator: onnxruntime's e_max, k_half, m_half; per Winograd tile the GEMM and transform fractions).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onnxcomp.cost import HARDWARE, Hardware
from onnxcomp.errors import InputError, UsageError

logger = logging.getLogger(__name__)

FORMAT = "onnxcomp-hardware/1"

# Layers the probe times: (C, M, H = W), 3x3, pads 1, batch 1. Channel counts from a first layer to 512, sizes
# of ImageNet stages.
PROBE_LAYERS: tuple[tuple[int, int, int], ...] = (
    (3, 64, 112),
    (16, 16, 112),
    (32, 32, 56),
    (64, 64, 56),
    (128, 128, 28),
    (256, 256, 14),
    (512, 512, 14),
    (512, 512, 7),
)
TILES = (2, 4, 6)


def resolve(spec: str) -> Hardware:
    """A built-in profile by name, or a profile file by path."""
    if spec in HARDWARE:
        return HARDWARE[spec]
    path = Path(spec).expanduser()
    if path.suffix == ".json" or path.is_file():
        return load(path)
    raise UsageError(
        f"unknown hardware {spec!r}; valid: {', '.join(HARDWARE)}, or a profile file from `onnxcomp hardware probe`"
    )


def load(path: Path) -> Hardware:
    """Read a profile file (the format ``save`` writes)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise InputError(f"hardware profile {path} does not exist") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"hardware profile {path} is not a readable JSON file: {err}") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"hardware profile {path} is not an onnxcomp hardware profile (format {FORMAT!r})")
    try:
        eff = {str(k): float(v) for k, v in dict(data.get("efficiency", {})).items()}
        hw = Hardware(
            name=str(data.get("name") or Path(path).stem),
            peak_gflops=float(data["peak_gflops"]),
            bandwidth_gbs=float(data["bandwidth_gbs"]),
            efficiency=eff,
            llc_bytes=int(data.get("llc_bytes", 32 << 20)),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"hardware profile {path}: missing or invalid field ({err})") from err
    # fractions of the peak are positive; the shape constants (*_half) may be 0
    bad = [k for k, v in eff.items() if not (v >= 0 if k.endswith("_half") else v > 0) or v == float("inf")]
    if not hw.peak_gflops > 0 or not hw.bandwidth_gbs > 0 or bad or hw.llc_bytes <= 0:
        raise InputError(
            f"hardware profile {path}: peak, bandwidth, cache and efficiencies must be positive"
            + (f" (efficiency {', '.join(bad)})" if bad else "")
        )
    return hw


def to_dict(hw: Hardware, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "format": FORMAT,
        "name": hw.name,
        "peak_gflops": round(hw.peak_gflops, 3),
        "bandwidth_gbs": round(hw.bandwidth_gbs, 3),
        "llc_bytes": int(hw.llc_bytes),
        "efficiency": {k: round(float(v), 4) for k, v in sorted(hw.efficiency.items())},
    }
    out.update(extra or {})
    return out


def save(hw: Hardware, path: Path, extra: dict[str, Any] | None = None) -> None:
    from onnxcomp.io import atomic_write

    atomic_write(Path(path), (json.dumps(to_dict(hw, extra), indent=2) + "\n").encode())


# ------------------------------------------------------------------------------------------------ probe
def _library() -> Any:
    import ctypes

    from onnxcomp import runtime

    lib = ctypes.CDLL(str(runtime.library_path()))
    lib.OnnxcompKernelIsa.restype = ctypes.c_char_p
    f = lib.OnnxcompTimeKernel
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_char_p, *[ctypes.c_int64] * 7, *[ctypes.POINTER(ctypes.c_double)] * 2]
    f.argtypes += [ctypes.c_char_p, ctypes.c_size_t]
    return lib


def kernel_isa() -> str:
    """The kernel set the native runtime uses on this CPU ("avx512", "avx2" or "scalar")."""
    return _library().OnnxcompKernelIsa().decode()


def time_kernel(
    what: str, *, n: int = 1, c: int = 0, h: int = 0, w: int = 0, m: int = 0, a: int = 0, runs: int = 5
) -> tuple[float, float]:
    """(median thread CPU seconds, FLOPs of one run) of a native kernel on random data, outside onnxruntime:
    ``fma`` (n iterations of 16 vector FMAs: the peak), ``winograd`` (X [n, c, h, w], W [m, c, 3, 3], tile a),
    ``im2col`` (kernel a x a, stride 1, same pads). See OnnxcompTimeKernel in runtime/src/bench.cc."""
    import ctypes

    secs, flops = ctypes.c_double(), ctypes.c_double()
    err = ctypes.create_string_buffer(512)
    rc = _library().OnnxcompTimeKernel(
        what.encode(), n, c, h, w, m, a, runs, ctypes.byref(secs), ctypes.byref(flops), err, len(err)
    )
    if rc != 0:
        raise UsageError(f"native kernel timing {what}: {err.value.decode(errors='replace')}")
    return secs.value, flops.value


def _llc_bytes() -> int:
    best = 0
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in sorted(base.glob("index*")) if base.is_dir() else []:
        try:
            text = (idx / "size").read_text().strip().upper()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            best = max(best, int(digits) * mult)
    return best or (32 << 20)


def _median_thread_time(fn: Callable[[], Any], runs: int) -> float:
    import statistics
    import time

    fn()
    times = []
    for _ in range(runs):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return statistics.median(times)


def _bandwidth_gbs() -> float:
    import time

    import numpy as np

    a = np.ones(64 << 20, np.float32)  # 256 MB, far past any cache
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(5):
        t0 = time.thread_time()
        np.copyto(b, a)
        best = min(best, time.thread_time() - t0)
    return 2 * a.nbytes / best / 1e9  # read + write


def _ort_conv_seconds(c: int, m: int, h: int, runs: int) -> float:
    """onnxruntime's 3x3 Conv (all graph optimizations: NCHWc), marginal time of one layer in a chain."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def model(depth: int) -> bytes:
        nodes, inits, cin, x = [], [], c, "X"
        for i in range(depth):
            w = (rng.standard_normal((m, cin, 3, 3)) * np.sqrt(2.0 / (9 * cin))).astype(np.float32)
            inits.append(numpy_helper.from_array(w, f"W{i}"))
            nodes.append(helper.make_node("Conv", [x, f"W{i}"], [f"Y{i}"], pads=[1, 1, 1, 1]))
            x, cin = f"Y{i}", m
        g = helper.make_graph(
            nodes,
            "probe",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, c, h, h])],
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, m, h, h])],
            inits,
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    feeds = {"X": rng.standard_normal((1, c, h, h)).astype(np.float32)}
    if c != m:  # a first layer: one Conv alone (onnxruntime takes its NCHW input directly)
        s = ort.InferenceSession(model(1), so, providers=["CPUExecutionProvider"])
        return _median_thread_time(lambda: s.run(None, feeds), runs)
    one = ort.InferenceSession(model(1), so, providers=["CPUExecutionProvider"])
    three = ort.InferenceSession(model(3), so, providers=["CPUExecutionProvider"])
    t1 = _median_thread_time(lambda: one.run(None, feeds), runs)
    t3 = _median_thread_time(lambda: three.run(None, feeds), runs)
    return max((t3 - t1) / 2, t1 / 3)  # the layout changes at the ends of the chain do not count


def _fit_im2col(samples: list[tuple[int, int, float]]) -> dict[str, float]:
    """e(K, M) = e_max K/(K + k_half) M/(M + m_half) by least squares in log space over a grid of the halves."""
    import numpy as np

    k = np.array([s[0] for s in samples], float)
    m = np.array([s[1] for s in samples], float)
    e = np.array([s[2] for s in samples], float)
    best = (float("inf"), 0.9, 16.0, 4.0)
    for kh in np.geomspace(1, 400, 60):
        for mh in np.concatenate([[0.0], np.geomspace(0.5, 64, 30)]):
            shape = k / (k + kh) * m / (m + mh)
            log_emax = float(np.mean(np.log(e) - np.log(shape)))
            err = float(np.sum((np.log(e) - np.log(shape) - log_emax) ** 2))
            if err < best[0]:
                best = (err, float(np.exp(log_emax)), float(kh), float(mh))
    return {"im2col": min(best[1], 1.0), "im2col.k_half": best[2], "im2col.m_half": best[3]}


def _fit_winograd(m: int, samples: list[tuple[int, float, float, float]]) -> dict[str, float]:
    """Samples (C, GEMM flops, transform flops, compute flop-time = seconds * peak); model
    t * peak = gemm (1 + c_half / C) / e_gemm + transform / e_transform: least squares with 1/e >= 1, c_half on a
    grid, relative errors (every layer counts alike)."""
    import numpy as np

    c = np.array([s[0] for s in samples], float)
    g = np.array([s[1] for s in samples], float)
    tr = np.array([s[2] for s in samples], float)
    y = np.array([s[3] for s in samples], float)
    best = (float("inf"), 1.0, 0.0, 1.0)
    for ch in np.concatenate([[0.0], np.geomspace(0.25, 64, 40)]):
        a = np.stack([g * (1 + ch / c), tr], 1) / y[:, None]  # relative: a @ x ~ 1
        x, *_ = np.linalg.lstsq(a, np.ones_like(y), rcond=None)
        x = np.maximum(x, 1.0)  # an efficiency is at most 1
        err = float(np.sum((a @ x - 1.0) ** 2))
        if err < best[0]:
            best = (err, float(x[0]), float(ch), float(x[1]))
    _, xg, ch, xt = best
    return {f"winograd{m}.gemm": 1.0 / xg, f"winograd{m}.c_half": ch, f"winograd{m}.transform": 1.0 / xt}


def probe(name: str = "probed", runs: int = 7, progress: Callable[[str], None] | None = None) -> tuple[Hardware, dict]:
    """Measure this machine (1 thread). Returns the profile and the raw measurements."""
    import platform

    from onnxcomp import estimator, runtime

    say = progress or (lambda _msg: None)
    if not runtime.available():
        raise UsageError("hardware probe needs the native runtime (libonnxcomp_ops.so), which is not built here")
    say("FMA peak")
    secs, flops = time_kernel("fma", n=20_000_000, runs=3)
    peak = flops / secs / 1e9
    say("memory bandwidth")
    bandwidth = _bandwidth_gbs()
    llc = _llc_bytes()
    measurements: list[dict[str, Any]] = []
    ort_samples: list[tuple[int, int, float]] = []
    wino: dict[int, list[tuple[int, float, float, float]]] = {m: [] for m in TILES}
    for c, m, h in PROBE_LAYERS:
        shape = estimator.ConvShape(1, c, h, h, m, 3, 3, h, h)
        say(f"layer {c}->{m} @ {h}x{h}")
        t_ort = _ort_conv_seconds(c, m, h, runs)
        eff = shape.direct_flops / t_ort / (peak * 1e9)
        ort_samples.append((c * 9, m, eff))
        row: dict[str, Any] = {"C": c, "M": m, "H": h, "onnxruntime_conv_s": t_ort}
        for tile in TILES:
            t, _ = time_kernel("winograd", n=1, c=c, h=h, w=h, m=m, a=tile, runs=runs)
            row[f"winograd{tile}_s"] = t
            gemm, transform, _ = estimator.winograd_terms(shape, tile)
            stream = estimator.winograd_stream_bytes(shape, tile, llc) / (bandwidth * 1e9)
            if stream < 0.5 * t:  # mostly compute: the fit's domain
                wino[tile].append((c, gemm, transform, (t - stream) * peak * 1e9))
        measurements.append(row)
    efficiency = _fit_im2col(ort_samples)
    for tile in TILES:
        if len(wino[tile]) >= 3:
            efficiency.update(_fit_winograd(tile, wino[tile]))
    hw = Hardware(name, peak_gflops=peak, bandwidth_gbs=bandwidth, efficiency=efficiency, llc_bytes=llc)
    extra = {
        "cpu": platform.processor() or platform.machine(),
        "kernel_set": kernel_isa(),
        "threads": 1,
        "measurements": measurements,
    }
    return hw, extra
