"""Native com.onnxcomp runtime vs onnxruntime's own fp32 kernels on the same shapes.

Both sessions live in the same process with 1 intra-op thread; runs are interleaved (A, B, A, B, ...)
and medians reported with the speed ratio (baseline time / runtime time; > 1 means the runtime wins).

    python benchmarks/bench_runtime.py            # all cases
    python benchmarks/bench_runtime.py --quick    # smaller shapes, fewer repetitions
    python benchmarks/bench_runtime.py --only sparse,head --reps 50 --json out.json

Goals (AMD Zen 5, 1 thread): 4-bit codebook batch 1 (4096x4096, 25088x4096) >= 4x; 90% sparse + 4-bit
batch 1 >= 10x; 4-bit batch 32 no more than 10% slower (ratio >= 0.9); the VGG head faster.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import itertools

from onnxcomp import runtime
from onnxcomp.ops import DOMAIN, pack_codes


# ------------------------------------------------------------------------------------ encoders
def pack4(codes: np.ndarray) -> np.ndarray:
    """uint8 codes [R, n] (< 16) -> packed [R, ceil(n/2)], code j in nibble j % 2 of byte j // 2."""
    r, n = codes.shape
    if n % 2:
        codes = np.concatenate([codes, np.zeros((r, 1), np.uint8)], 1)
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)


def pack_flat(values: np.ndarray, bits: int) -> np.ndarray:
    """1-D values at 4 or 8 bits -> packed uint8 [ceil(E*bits/8)]."""
    values = values.astype(np.uint8)
    if bits == 8:
        return values
    return pack4(values[None, :])[0]


def encode_sparse(codes: np.ndarray, index_bits: int):
    """Vectorized EIE encoding of a [K, N] code matrix (code 0 = absent), with filler entries."""
    k_rows, _ = codes.shape
    rows, cols = np.nonzero(codes)
    first = np.ones(rows.size, bool)
    first[1:] = rows[1:] != rows[:-1]
    prev = np.where(first, -1, np.concatenate([[-1], cols[:-1]]))
    gap = cols - prev - 1
    span = 1 << index_bits
    fill = gap // span  # fillers of delta span-1 before the entry
    count = fill + 1
    ends = np.cumsum(count)
    total = int(ends[-1]) if ends.size else 0
    deltas = np.full(total, span - 1, np.int64)
    ecodes = np.zeros(total, np.int64)
    real = ends - 1
    deltas[real] = gap % span
    ecodes[real] = codes[rows, cols]
    per_row = np.bincount(rows, weights=count, minlength=k_rows).astype(np.int64)
    row_ptr = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int32)
    return row_ptr, pack_flat(deltas, index_bits), pack_flat(ecodes, 4)


# -------------------------------------------------------------------------------------- models
def _model(nodes, inputs, outputs, inits, custom=False):
    graph = helper.make_graph(nodes, "bench", inputs, outputs, initializer=inits)
    opsets = [helper.make_opsetid("", 18)] + ([helper.make_opsetid(DOMAIN, 1)] if custom else [])
    m = helper.make_model(graph, opset_imports=opsets)
    m.ir_version = 10
    return m


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def dense_matmul(w: np.ndarray, m: int):
    k, n = w.shape
    return _model(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        [_vi("X", [m, k])],
        [_vi("Y", [m, n])],
        [numpy_helper.from_array(w, "W")],
    )


def codebook_matmul(cb: np.ndarray, packed: np.ndarray, n: int, m: int, bits: int = 4, group_size: int = 0):
    k = packed.shape[0]
    groups = {"group_size": group_size} if group_size else {}
    node = helper.make_node("CodebookMatMul", ["X", "cb", "codes"], ["Y"], domain=DOMAIN, bits=bits, N=n, **groups)
    inits = [numpy_helper.from_array(cb, "cb"), numpy_helper.from_array(packed, "codes")]
    return _model([node], [_vi("X", [m, k])], [_vi("Y", [m, n])], inits, custom=True)


def sparse_matmul(cb, row_ptr, deltas, ecodes, k, n, m, index_bits):
    node = helper.make_node(
        "SparseCodebookMatMul",
        ["X", "cb", "row_ptr", "deltas", "codes"],
        ["Y"],
        domain=DOMAIN,
        bits=4,
        index_bits=index_bits,
        N=n,
    )
    inits = [
        numpy_helper.from_array(cb, "cb"),
        numpy_helper.from_array(row_ptr, "row_ptr"),
        numpy_helper.from_array(deltas, "deltas"),
        numpy_helper.from_array(ecodes, "codes"),
    ]
    return _model([node], [_vi("X", [m, k])], [_vi("Y", [m, n])], inits, custom=True)


def conv_models(rng, n, c, h, w, m, ksize, pad):
    cb = np.sort(rng.standard_normal((1, 16)) * 0.05, axis=1).astype(np.float32)
    codes = rng.integers(0, 16, size=(m, c * ksize * ksize), dtype=np.uint8)
    wt = cb[0][codes].reshape(m, c, ksize, ksize)
    attrs = {
        "kernel_shape": [ksize, ksize],
        "pads": [pad] * 4,
        "strides": [1, 1],
        "dilations": [1, 1],
        "group": 1,
    }
    oh = h + 2 * pad - ksize + 1
    base = _model(
        [helper.make_node("Conv", ["X", "W"], ["Y"], **attrs)],
        [_vi("X", [n, c, h, w])],
        [_vi("Y", [n, m, oh, oh])],
        [numpy_helper.from_array(wt, "W")],
    )
    node = helper.make_node(
        "CodebookConv",
        ["X", "cb", "codes"],
        ["Y"],
        domain=DOMAIN,
        bits=4,
        weight_shape=[m, c, ksize, ksize],
        **attrs,
    )
    comp = _model(
        [node],
        [_vi("X", [n, c, h, w])],
        [_vi("Y", [n, m, oh, oh])],
        [numpy_helper.from_array(cb, "cb"), numpy_helper.from_array(pack4(codes), "codes")],
        custom=True,
    )
    return base, comp


def vgg_head(rng, m: int, quick: bool):
    """Flatten -> fc6 (25088x4096) -> ReLU -> fc7 (4096x4096) -> ReLU -> fc8 (4096x1000), the VGG-16
    classifier; the compressed copy stores each FC as 4-bit CodebookMatMul (per-layer codebooks)."""
    dims = [25088, 4096, 4096, 1000] if not quick else [4608, 1024, 1024, 1000]
    base_nodes, comp_nodes, base_inits, comp_inits = [], [], [], []
    prev = "F"
    flat = helper.make_node("Flatten", ["X"], ["F"], axis=1)
    base_nodes.append(flat)
    comp_nodes.append(flat)
    for i, (k, n) in enumerate(itertools.pairwise(dims)):
        cb = np.sort(rng.standard_normal((1, 16)) / np.sqrt(k), axis=1).astype(np.float32)
        codes = rng.integers(0, 16, size=(k, n), dtype=np.uint8)
        bias = (rng.standard_normal(n) * 0.01).astype(np.float32)
        out = f"h{i}" if i < 2 else "Y"
        mm = f"mm{i}"
        base_inits += [numpy_helper.from_array(cb[0][codes], f"W{i}"), numpy_helper.from_array(bias, f"B{i}")]
        comp_inits += [
            numpy_helper.from_array(cb, f"cb{i}"),
            numpy_helper.from_array(pack4(codes), f"codes{i}"),
            numpy_helper.from_array(bias, f"B{i}"),
        ]
        base_nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"B{i}"], [mm if i < 2 else out]))
        comp_nodes.append(
            helper.make_node(
                "CodebookMatMul",
                [prev, f"cb{i}", f"codes{i}", f"B{i}"],
                [mm if i < 2 else out],
                domain=DOMAIN,
                bits=4,
                N=n,
            )
        )
        if i < 2:
            relu = helper.make_node("Relu", [mm], [out])
            base_nodes.append(relu)
            comp_nodes.append(relu)
        prev = out
    shape = [m, 512, 7, 7] if not quick else [m, 512, 3, 3]
    base = _model(base_nodes, [_vi("X", shape)], [_vi("Y", [m, 1000])], base_inits)
    comp = _model(comp_nodes, [_vi("X", shape)], [_vi("Y", [m, 1000])], comp_inits, custom=True)
    return base, comp, shape


# ------------------------------------------------------------------------------------- timing
def session(model: onnx.ModelProto, native: bool):
    """One intra-op thread, onnxruntime's graph optimizations on (its default); ``native``: the custom-op library."""
    return runtime.session(model, threads=1, optimize=True, runtime="ops" if native else "ort")


def compare(name, base_model, comp_model, feeds, reps, results, goal=None, check_tol=None):
    base, comp = session(base_model, False), session(comp_model, True)
    yb = base.run(None, feeds)[0]
    yc = comp.run(None, feeds)[0]
    if check_tol is not None:
        err = float(np.abs(yb - yc).max() / max(1e-6, float(np.abs(yb).max())))
        assert err < check_tol, f"{name}: outputs differ (relative max error {err:.2e})"
    for _ in range(2):  # warm-up
        base.run(None, feeds)
        comp.run(None, feeds)
    # wall clock and the calling thread's CPU time (1 intra-op thread: onnxruntime runs on this thread, so CPU time
    # leaves out what other processes take from the core; on the shared, loaded machine it is the steadier)
    tb, tc, cb, cc = [], [], [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.thread_time()
        base.run(None, feeds)
        t1, c1 = time.perf_counter(), time.thread_time()
        comp.run(None, feeds)
        t2, c2 = time.perf_counter(), time.thread_time()
        tb.append(t1 - t0)
        tc.append(t2 - t1)
        cb.append(c1 - c0)
        cc.append(c2 - c1)
    mb, mc = statistics.median(tb), statistics.median(tc)
    ratio = mb / mc
    cpu_ratio = statistics.median(cb) / max(1e-9, statistics.median(cc))
    verdict = ""
    if goal is not None:
        verdict = f"  goal {goal[0]}: wall {'MET' if ratio >= goal[1] else 'not met'}, "
        verdict += f"cpu {'MET' if cpu_ratio >= goal[1] else 'not met'}"
    print(
        f"{name:<52} ort fp32 {mb * 1e3:9.3f} ms   runtime {mc * 1e3:9.3f} ms   ratio {ratio:6.2f}x"
        f" | cpu {statistics.median(cb) * 1e3:9.3f} / {statistics.median(cc) * 1e3:8.3f} ms {cpu_ratio:6.2f}x{verdict}",
        flush=True,
    )
    results.append(
        {
            "case": name,
            "ort_ms": mb * 1e3,
            "runtime_ms": mc * 1e3,
            "ratio": ratio,
            "cpu_ratio": cpu_ratio,
            "goal": None if goal is None else goal[0],
            "goal_met": None if goal is None else ratio >= goal[1],
        }
    )
    del base, comp


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small shapes (smoke run)")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per case")
    ap.add_argument(
        "--only", default="", help="comma-separated subset: codebook,batch32,sparse,gemv_uncovered,conv,head"
    )
    ap.add_argument("--json", default=None, help="write the results to this file")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    want = lambda k: not only or k in only  # noqa: E731
    reps = args.reps or (5 if args.quick else 30)
    rng = np.random.default_rng(0)
    lib = runtime.library_path()
    print(f"onnxruntime {ort.__version__}; runtime {lib}; 1 intra-op thread; {reps} interleaved runs, medians")
    results: list[dict] = []
    shapes = [(4096, 4096), (25088, 4096)] if not args.quick else [(1024, 1024)]

    if want("gemv_uncovered"):
        # batch 1 codes that the shared 16-entry-codebook GEMV does not read: 3, 5..8 bits (codes widened to bytes,
        # byte-plane lookups with AVX512-VBMI) and one 4-bit codebook per output channel (column layout, along k)
        k, n = shapes[0]
        x = rng.standard_normal((1, k)).astype(np.float32)
        for bits in (8, 6, 3):
            codes = rng.integers(0, 1 << bits, size=(k, n), dtype=np.uint8)
            cb = np.sort(rng.standard_normal((1, 1 << bits)) / np.sqrt(k), axis=1).astype(np.float32)
            compare(
                f"CodebookMatMul {bits}-bit {k}x{n} batch 1",
                dense_matmul(cb[0][codes], 1),
                codebook_matmul(cb, pack_codes(codes, bits), n, 1, bits=bits),
                {"X": x},
                reps,
                results,
                check_tol=1e-4,
            )
        codes4 = rng.integers(0, 16, size=(k, n), dtype=np.uint8)
        cbc = np.sort(rng.standard_normal((n, 16)) / np.sqrt(k), axis=1).astype(np.float32)
        compare(
            f"CodebookMatMul 4-bit per-channel codebooks {k}x{n} batch 1",
            dense_matmul(cbc[np.arange(n)[None, :], codes4], 1),
            codebook_matmul(cbc, pack4(codes4), n, 1, bits=4, group_size=1),
            {"X": x},
            reps,
            results,
            check_tol=1e-4,
        )

    for k, n in shapes:
        if not (want("codebook") or want("batch32") or want("sparse")):
            break
        cb = np.sort(rng.standard_normal((1, 16)) / np.sqrt(k), axis=1).astype(np.float32)
        codes = rng.integers(0, 16, size=(k, n), dtype=np.uint8)
        w = cb[0][codes]
        if want("codebook"):
            x = rng.standard_normal((1, k)).astype(np.float32)
            compare(
                f"CodebookMatMul 4-bit {k}x{n} batch 1",
                dense_matmul(w, 1),
                codebook_matmul(cb, pack4(codes), n, 1),
                {"X": x},
                reps,
                results,
                goal=(">= 4x", 4.0),
                check_tol=1e-4,
            )
        if want("batch32") and k == shapes[0][0]:
            x = rng.standard_normal((32, k)).astype(np.float32)
            compare(
                f"CodebookMatMul 4-bit {k}x{n} batch 32",
                dense_matmul(w, 32),
                codebook_matmul(cb, pack4(codes), n, 32),
                {"X": x},
                max(5, reps // 2),
                results,
                goal=(">= 0.9x", 0.9),
                check_tol=1e-4,
            )
        if want("sparse"):
            mask = rng.random((k, n)) < 0.10
            scodes = np.where(mask, rng.integers(1, 16, size=(k, n), dtype=np.uint8), 0).astype(np.uint8)
            scb = cb.copy()
            scb[0, 0] = 0.0
            ws = scb[0][scodes]
            for ib in (4, 8):
                row_ptr, deltas, ecodes = encode_sparse(scodes, ib)
                comp = sparse_matmul(scb, row_ptr, deltas, ecodes, k, n, 1, ib)
                x = rng.standard_normal((1, k)).astype(np.float32)
                compare(
                    f"SparseCodebookMatMul 90% sparse 4-bit idx{ib} {k}x{n} b1",
                    dense_matmul(ws, 1),
                    comp,
                    {"X": x},
                    reps,
                    results,
                    goal=(">= 10x", 10.0),
                    check_tol=1e-4,
                )
            xr = np.maximum(rng.standard_normal((1, k)), 0).astype(np.float32)  # post-ReLU
            compare(
                "  same, idx8, ReLU'd input (50% zero activations)",
                dense_matmul(ws, 1),
                comp,
                {"X": xr},
                reps,
                results,
                check_tol=1e-4,
            )
            if k == shapes[0][0]:
                x32 = rng.standard_normal((32, k)).astype(np.float32)
                compare(
                    f"SparseCodebookMatMul 90% sparse 4-bit idx8 {k}x{n} b32",
                    dense_matmul(ws, 32),
                    sparse_matmul(scb, row_ptr, deltas, ecodes, k, n, 32, 8),
                    {"X": x32},
                    max(5, reps // 2),
                    results,
                    check_tol=1e-4,
                )
        del w, codes

    if want("conv"):
        cases = [(1, 64, 56, 56, 64, 3, 1), (1, 256, 28, 28, 256, 3, 1), (1, 512, 14, 14, 512, 3, 1)]
        if args.quick:
            cases = [(1, 32, 28, 28, 32, 3, 1)]
        for n, c, h, w_, m, ks, pad in cases:
            base, comp = conv_models(rng, n, c, h, w_, m, ks, pad)
            x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
            compare(
                f"CodebookConv 4-bit {c}->{m} {ks}x{ks} @{h}x{w_} batch {n}",
                base,
                comp,
                {"X": x},
                max(5, reps // 3),
                results,
                check_tol=1e-4,
            )

    if want("head"):
        for m in (1, 8):
            base, comp, shape = vgg_head(rng, m, args.quick)
            x = np.maximum(rng.standard_normal(shape), 0).astype(np.float32)
            compare(
                f"VGG-16 head (fc6-fc8), 4-bit CodebookMatMul, batch {m}",
                base,
                comp,
                {"X": x},
                reps,
                results,
                goal=("faster", 1.0) if m == 1 else None,
                check_tol=1e-3,
            )

    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
