"""Random and malformed inputs for every com.onnxcomp op (run by test_asan_fuzz.py under ASan/UBSan).

Usage: python fuzz_driver.py SEED SECONDS
Every case runs with the custom-op library and, when the EP library is found (ONNXCOMP_EP_LIBRARY for the
sanitizer build), again with the OnnxcompExecutionProvider added (it claims the cases with constant weights, and
convolution chains with random pools and residual adds). Each run either succeeds (and, when valid, matches a numpy
reference) or fails with an onnxruntime error; the sanitizers abort the process on any out-of-bounds access or
undefined behaviour. Prints "fuzz: N cases, E errors reported cleanly, V checked against numpy, P EP runs".
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oplib

from onnxcomp import ops, runtime

EP = runtime.ep_available()
BAD_INTS = [0, -1, -(2**31), 2**31 + 1, 2**40 + 1, 2**62, 9, 3, 1]


def _symbolic(model):
    """Every graph input gets symbolic dims so that any shape can be fed."""
    for i, vi in enumerate(model.graph.input):
        for j, d in enumerate(vi.type.tensor_type.shape.dim):
            d.Clear()
            d.dim_param = f"d{i}_{j}"
    return model


def _freeze(model, feeds):
    """Turns every weight input into a constant initializer (exercises the prepacked paths)."""
    weights = {k: v for k, v in feeds.items() if k != "X"}
    keep = [vi for vi in model.graph.input if vi.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items())
    return model, {"X": feeds["X"]}


def _run(model, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 4
    runtime.register(so)
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _run_ep(model, feeds):
    """Under the OnnxcompExecutionProvider (claiming even tiny layers), with the custom-op library for what it
    declines."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 4
    so.add_session_config_entry("ep.onnxcomp.min_weights", "0")
    runtime.register(so)
    so.add_provider_for_devices(runtime.register_ep(), {})
    return ort.InferenceSession(model.SerializeToString(), so).run(None, feeds)[0]


def _half_values(rng, cb: np.ndarray) -> np.ndarray:
    """Sometimes the codebook's values rounded to float16 (still float32): _finish may then feed it as float16,
    and the numpy reference of the float32 values is exact for both."""
    return cb.astype(np.float16).astype(np.float32) if rng.random() < 0.5 else cb


def _codebook_type(model, feeds, rng, stats):
    """Feeds a float16-representable codebook as float16 (often), or any float32 codebook as int32 (rarely: it must
    be refused). Returns (model, feeds, wrong) with the graph input's element type set to match."""
    from onnx import helper

    cb = feeds.get("codebook")
    if cb is None or cb.dtype != np.float32:
        return model, feeds, False
    r = rng.random()
    if r < 0.05:
        new, wrong = cb.astype(np.int32), True
    elif r < 0.8 and np.array_equal(cb.astype(np.float16).astype(np.float32), cb):
        new, wrong = cb.astype(np.float16), False
        stats["half"] += 1
    else:
        return model, feeds, False
    for vi in model.graph.input:
        if vi.name == "codebook":
            vi.type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(new.dtype)
    return model, {**feeds, "codebook": new}, wrong


def _mutate_bytes(rng, a: np.ndarray) -> np.ndarray:
    a = a.copy()
    flat = a.reshape(-1)
    if flat.size:
        for _ in range(int(rng.integers(1, 4))):
            flat[int(rng.integers(0, flat.size))] = rng.integers(0, 256)
    return a


def _reshape_wrong(rng, a: np.ndarray) -> np.ndarray:
    kind = int(rng.integers(0, 3))
    if kind == 0 and a.size:
        return a.reshape(-1)[:-1].copy()
    if kind == 1:
        return np.concatenate([a.reshape(-1), np.zeros(int(rng.integers(1, 9)), a.dtype)])
    return a.reshape(-1).copy()


def case_codebook(rng, stats):
    bits = int(rng.integers(1, 9))
    k = int(rng.integers(0, 40))
    n = int(rng.integers(1, 300))
    gs = int(rng.choice([n, 1, int(rng.integers(1, n + 5))]))
    batch = [int(rng.integers(0, 5)) for _ in range(int(rng.integers(0, 3)))]
    cb, codes, packed = oplib.random_codebook_problem(rng, k, n, bits, gs)
    cb = _half_values(rng, cb)
    bias = rng.standard_normal(n).astype(np.float32) if rng.random() < 0.5 else None
    attrs = {}
    bsz = 0
    if rng.random() < 0.3 and k > 0:  # block codebooks: [G * nblocks, C]
        bsz = int(rng.integers(1, k + 3))
        cb = _half_values(rng, rng.standard_normal((cb.shape[0] * -(-k // bsz), cb.shape[1])).astype(np.float32))
        attrs["block_size"] = bsz
    x = rng.standard_normal((*batch, k)).astype(np.float32)
    valid = True
    r = rng.random()
    if r < 0.1:
        attrs[str(rng.choice(["bits", "N", "group_size", "block_size"]))] = int(rng.choice(BAD_INTS))
        valid = False
    elif r < 0.2:
        packed = _reshape_wrong(rng, packed)
        valid = False
    elif r < 0.3:
        cb = rng.standard_normal((int(rng.integers(0, 4)), int(rng.integers(0, 300)))).astype(np.float32)
        valid = False
    elif r < 0.35 and bias is not None:
        bias = bias[: int(rng.integers(0, n))]
        valid = False
    elif r < 0.45:
        x = rng.standard_normal((*batch, int(rng.integers(0, 50)))).astype(np.float32)
        valid = x.shape[-1] == k
    elif r < 0.55:
        cb = cb[:, : int(rng.integers(1, cb.shape[1] + 1))].copy()  # smaller codebook: codes may exceed it
        valid = False
    elif r < 0.6:
        x = np.float32(1.0).reshape(())
        valid = False
    ternary = rng.random() < 0.25
    if ternary:
        g = -(-n // gs)
        scales = np.abs(rng.standard_normal((g, 2))).astype(np.float32)
        tcodes = rng.integers(0, 4 if rng.random() < 0.5 else 3, size=(k, n))
        tpacked = oplib.pack_bits(tcodes, 2) if valid or rng.random() < 0.5 else _reshape_wrong(rng, packed)
        model = oplib.ternary_matmul(
            list(x.shape),
            scales,
            oplib.pack_bits(np.zeros((1, 1), np.int64), 2),
            n=n,
            group_size=gs,
            bias=bias,
            attrs={k2: v for k2, v in attrs.items() if k2 not in ("bits", "block_size")},
            as_inputs={"scales", "codes", "B"},
        )
        feeds = {"X": x, "scales": scales, "codes": tpacked}
        if bias is not None:
            feeds["B"] = bias
        valid = valid and not (tcodes == 3).any()
        cbf = np.stack([np.zeros(g), scales[:, 0], -scales[:, 1], np.zeros(g)], 1).astype(np.float32)
        ref_w = (lambda: oplib.decode_codebook(cbf, tcodes, gs)) if valid else None
    else:
        model = oplib.codebook_matmul(
            list(x.shape),
            np.zeros((1, 1), np.float32),
            np.zeros((1, 1), np.uint8),
            bits=bits,
            n=n,
            group_size=gs,
            bias=bias,
            attrs=attrs,
            as_inputs={"codebook", "codes", "B"},
        )
        feeds = {"X": x, "codebook": cb, "codes": packed}
        if bias is not None:
            feeds["B"] = bias
        ref_w = (lambda: ops.decode_codebook(cb, codes, gs, 1, bsz).astype(np.float32)) if valid else None
    _finish(_symbolic(model), feeds, ref_w, bias, stats, rng)


def case_sparse(rng, stats):
    bits = int(rng.integers(1, 9))
    ib = int(rng.choice([4, 8]))
    k = int(rng.integers(1, 30))
    n = int(rng.integers(1, 200))
    gs = int(rng.choice([n, 1, int(rng.integers(1, n + 5))]))
    density = float(rng.choice([0.0, 0.05, 0.3, 1.0]))
    if rng.random() < 0.1:  # long, nearly empty layers: windows more than 255 rows apart (filler steps)
        k, n, density = int(rng.integers(256, 1200)), int(rng.integers(1, 40)), float(rng.choice([0.0003, 0.002]))
    cb, row_ptr, deltas, ecodes, dp, cp = oplib.random_sparse_problem(rng, k, n, bits, ib, density, gs)
    if rng.random() < 0.3:
        cb[:, 0] = 0.5  # entry 0 not reserved: the 16-bit window layout
    cb = _half_values(rng, cb)
    attrs = {}
    valid = True
    r = rng.random()
    if r < 0.1:
        attrs[str(rng.choice(["bits", "N", "group_size", "index_bits"]))] = int(rng.choice(BAD_INTS))
        valid = False
    elif r < 0.25:
        row_ptr = row_ptr.copy()
        row_ptr[int(rng.integers(0, len(row_ptr)))] = int(rng.choice([-5, 2**31 - 1, -(2**31), 1, 1000]))
        valid = False
    elif r < 0.4:
        dp = _mutate_bytes(rng, dp)  # positions may run past N
        valid = False
    elif r < 0.5:
        dp = dp[: int(rng.integers(0, dp.size + 1))].copy()
        valid = False
    elif r < 0.6:
        cp = cp[: int(rng.integers(0, cp.size + 1))].copy()
        valid = False
    elif r < 0.7:
        cb = cb[:, : int(rng.integers(1, cb.shape[1] + 1))].copy()
        valid = False
    elif r < 0.75:
        row_ptr = row_ptr[:-1].copy()
        valid = False
    x = rng.standard_normal((int(rng.integers(1, 7)), k)).astype(np.float32)
    x[:, rng.random(k) < 0.3] = 0.0
    model = oplib.sparse_codebook_matmul(
        list(x.shape),
        np.zeros((1, 1), np.float32),
        np.zeros(2, np.int32),
        np.zeros(1, np.uint8),
        np.zeros(1, np.uint8),
        bits=bits,
        index_bits=ib,
        n=n,
        group_size=gs,
        attrs=attrs,
        as_inputs={"codebook", "row_ptr", "deltas", "codes"},
    )
    feeds = {"X": x, "codebook": cb, "row_ptr": row_ptr, "deltas": dp, "codes": cp}
    ref_w = (lambda: oplib.decode_sparse(cb, row_ptr, deltas, ecodes, n, gs)) if valid else None
    _finish(_symbolic(model), feeds, ref_w, None, stats, rng)


def case_conv(rng, stats):
    bits = int(rng.integers(1, 9))
    s = int(rng.integers(1, 4))
    group = int(rng.choice([1, 2]))
    cg = int(rng.integers(1, 4))
    m = group * int(rng.integers(1, 5))
    ks = [int(rng.integers(1, 4)) for _ in range(s)]
    ws = [m, cg, *ks]
    x_shape = [int(rng.integers(1, 3)), cg * group] + [int(rng.integers(1, 9)) for _ in range(s)]
    strides = [int(rng.integers(1, 3)) for _ in range(s)]
    pads = [int(rng.integers(0, 3)) for _ in range(2 * s)]
    dil = [int(rng.integers(1, 3)) for _ in range(s)]
    gs = int(rng.choice([m, 1, 2]))
    ckk = int(np.prod(ws[1:]))
    g = -(-m // gs)
    attrs = {}
    if rng.random() < 0.3:  # block codebooks over the C/group * prod(k) inputs: [G * nblocks, 2^bits]
        attrs["block_size"] = int(rng.integers(1, ckk + 3))
        g *= -(-ckk // attrs["block_size"])
    cb = _half_values(rng, rng.standard_normal((g, 1 << bits)).astype(np.float32))
    packed = oplib.pack_bits(rng.integers(0, 1 << bits, size=(m, ckk)), bits)
    r = rng.random()
    if r < 0.3:
        name = str(rng.choice(["strides", "pads", "dilations", "weight_shape", "kernel_shape"]))
        vals = {"strides": strides, "pads": pads, "dilations": dil, "weight_shape": ws, "kernel_shape": ks}[name]
        vals = list(vals)
        vals[int(rng.integers(0, len(vals)))] = int(rng.choice(BAD_INTS))
        if rng.random() < 0.3 and len(vals) > 1:
            vals = vals[:-1]
        attrs[name] = vals
    elif r < 0.4:
        attrs[str(rng.choice(["group", "bits", "group_size", "block_size"]))] = int(rng.choice(BAD_INTS))
    elif r < 0.5:
        packed = _reshape_wrong(rng, packed)
    elif r < 0.6:
        x_shape = x_shape[:-1] if rng.random() < 0.5 else [*x_shape, 2]
    elif r < 0.7:
        x_shape[1] += 1
    elif r < 0.75:
        attrs["auto_pad"] = "SAME_UPPER"
    bias = rng.standard_normal(m if rng.random() < 0.8 else m + 1).astype(np.float32)
    model = oplib.codebook_conv(
        [1] * len(x_shape),
        cb,
        np.zeros((1, 1), np.uint8),
        bits=bits,
        weight_shape=ws,
        group_size=gs,
        bias=bias,
        strides=strides,
        pads=pads,
        dilations=dil,
        group=group,
        attrs=attrs,
        as_inputs={"codebook", "codes", "B"},
    )
    feeds = {"X": rng.standard_normal(x_shape).astype(np.float32), "codebook": cb, "codes": packed, "B": bias}
    _finish(_symbolic(model), feeds, None, None, stats, rng)


def case_absurd(rng, stats):
    """Sizes claimed without data behind them: a huge N (or huge leading dims of X) with K = 0, huge conv
    pads on a tiny input. Must be refused with INVALID_ARGUMENT before anything is allocated (under ASan a
    multi-TiB request aborts the process)."""
    kind = int(rng.integers(0, 4))
    huge = int(rng.choice([2**35, 2**40, 2**40 - 1]))
    empty = np.zeros(0, np.uint8)
    if kind == 0:
        model = oplib.codebook_matmul(
            [1, 0], np.zeros((1, 16), np.float32), np.zeros((0, 1), np.uint8), bits=4, n=2, attrs={"N": huge},
            as_inputs={"codes"},
        )  # fmt: skip
        feeds = {"X": np.zeros((1, 0), np.float32), "codes": np.zeros((0, -(-huge * 4 // 8)), np.uint8)}
    elif kind == 1:
        model = oplib.codebook_matmul(
            [1, 1, 0], np.zeros((1, 16), np.float32), np.zeros((0, 1), np.uint8), bits=4, n=2, as_inputs={"codes"}
        )
        feeds = {"X": np.zeros((2**20, 2**20, 0), np.float32), "codes": np.zeros((0, 1), np.uint8)}
    elif kind == 2:
        rp = np.zeros(1, np.int32)
        model = oplib.sparse_codebook_matmul(
            [1, 0], np.zeros((1, 16), np.float32), rp, empty, empty, bits=4, index_bits=4, n=2, attrs={"N": huge},
            as_inputs={"row_ptr", "deltas", "codes"},
        )  # fmt: skip
        feeds = {"X": np.zeros((1, 0), np.float32), "row_ptr": rp, "deltas": empty, "codes": empty}
    else:
        cb = np.zeros((1, 16), np.float32)
        packed = np.zeros((8, 1), np.uint8)
        model = oplib.codebook_conv([1, 1, 1], cb, packed, bits=4, weight_shape=[8, 1, 1], pads=[2**31, 2**31])
        feeds = {"X": np.ones((1, 1, 1), np.float32)}
    stats["cases"] += 1
    try:
        _run(_symbolic(model), feeds)
    except Exception as e:
        if "INVALID_ARGUMENT" not in str(e) or "2^34" not in str(e):
            raise AssertionError(f"an absurd size was not refused up front: {e}") from e
        stats["errors"] += 1
        return
    raise AssertionError("an absurd size ran")


def _conv3x3_ref(x, w, b, pads):
    """Direct 3x3 stride-1 convolution in float64 (numpy), pads (top, left, bottom, right)."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh, ow = xp.shape[2] - 2, xp.shape[3] - 2
    cols = np.stack([xp[:, :, i : i + oh, j : j + ow] for i in range(3) for j in range(3)], 2)  # N, C, 9, OH, OW
    y = np.einsum("nckhw,mck->nmhw", cols, w.reshape(w.shape[0], w.shape[1], 9).astype(np.float64))
    return y + (0 if b is None else b.astype(np.float64)[None, :, None, None])


def case_winograd(rng, stats):
    """WinogradConv (and CodebookConv with winograd_tile): random valid and malformed cases."""
    n, c, m = int(rng.integers(0, 3)), int(rng.integers(1, 40)), int(rng.integers(1, 40))
    h, w = int(rng.integers(1, 20)), int(rng.integers(1, 20))
    pads = [int(rng.integers(0, 3)) for _ in range(4)]
    tile = int(rng.choice([2, 4, 6]))
    wt = (rng.standard_normal((m, c, 3, 3)) * 0.3).astype(np.float32)
    bias = rng.standard_normal(m).astype(np.float32) if rng.random() < 0.7 else None
    x_shape = [n, c, h, w]
    attrs: dict = {}
    valid = h + pads[0] + pads[2] >= 3 and w + pads[1] + pads[3] >= 3
    r = rng.random()
    if r < 0.1:
        attrs[str(rng.choice(["tile", "group"]))] = int(rng.choice(BAD_INTS))
        valid = False
    elif r < 0.2:
        name = str(rng.choice(["strides", "dilations", "kernel_shape", "pads"]))
        vals = list(pads) if name == "pads" else [3, 3] if name == "kernel_shape" else [1, 1]
        vals[int(rng.integers(0, len(vals)))] = int(rng.choice(BAD_INTS))
        if rng.random() < 0.3:
            vals = vals[:-1]
        attrs[name] = vals
        valid = False
    elif r < 0.3:
        wt = wt.reshape(-1)[: int(rng.integers(0, wt.size))].copy()
        wt = wt.reshape(-1, 1, 1, 1) if wt.size and rng.random() < 0.5 else wt
        valid = False
    elif r < 0.4:
        x_shape[1] += 1
        valid = False
    elif r < 0.45 and bias is not None:
        bias = bias[: int(rng.integers(0, m))].copy()
        valid = False
    elif r < 0.5:
        attrs["clip_min"], attrs["clip_max"] = float(rng.standard_normal()), float(rng.standard_normal())
        valid = valid and attrs["clip_min"] <= attrs["clip_max"]
    feeds = {"X": rng.standard_normal(x_shape).astype(np.float32), "W": wt}
    if bias is not None:
        feeds["B"] = bias
    if rng.random() < 0.25 and wt.ndim == 4 and wt.shape[2:] == (3, 3) and not attrs:
        # the same convolution as a CodebookConv whose 8-bit codebook holds the weights exactly
        vals, codes = np.unique(wt, return_inverse=True)
        if vals.size <= 256:
            cb = np.zeros((1, 256), np.float32)
            cb[0, : vals.size] = vals
            packed = oplib.pack_bits(codes.reshape(wt.shape[0], -1), 8)
            model = oplib.codebook_conv(
                [1] * 4,
                cb,
                packed,
                bits=8,
                weight_shape=list(wt.shape),
                bias=bias,
                pads=pads,
                attrs={"winograd_tile": tile},
                as_inputs={"codebook", "codes", "B"} if bias is not None else {"codebook", "codes"},
            )
            feeds = {"X": feeds["X"], "codebook": cb, "codes": packed, **({"B": bias} if bias is not None else {})}
            ref = (lambda: _conv3x3_ref(feeds["X"], wt, bias, pads)) if valid else None
            _finish(_symbolic(model), feeds, None, None, stats, rng, ref=ref)
            return
    model = oplib.winograd_conv(
        [1] * 4,
        np.zeros((1, 1, 3, 3), np.float32),
        bias=bias,
        pads=pads,
        tile=tile,
        attrs=attrs,
        as_inputs={"W", "B"} if bias is not None else {"W"},
    )
    lo, hi = attrs.get("clip_min", -np.inf), attrs.get("clip_max", np.inf)
    ref = (lambda: np.clip(_conv3x3_ref(feeds["X"], wt, bias, pads), lo, hi)) if valid else None
    _finish(_symbolic(model), feeds, None, None, stats, rng, ref=ref)


def _finish(model, feeds, ref_w, bias, stats, rng=None, ref=None):
    stats["cases"] += 1
    ref_feeds = feeds
    wrong = False
    if rng is not None:
        model, feeds, wrong = _codebook_type(model, feeds, rng, stats)
        if wrong:
            ref_w = ref = None
    if rng is not None and rng.random() < 0.5:
        model, feeds = _freeze(model, feeds)
        stats["frozen"] += 1
    if ref_w is not None:
        ref = lambda: ref_feeds["X"] @ ref_w() + (0 if bias is None else bias)  # noqa: E731
    runners = [_run] + ([_run_ep] if EP else [])
    for run in runners:
        try:
            y = run(model, feeds)
        except Exception as e:  # an onnxruntime error status is the expected answer to bad input
            msg = str(e)
            if "Segmentation" in msg or "AddressSanitizer" in msg:
                raise
            if ref is not None:
                raise AssertionError(f"a valid case failed ({run.__name__}): {msg}") from e
            stats["errors"] += 1
            continue
        stats["ep"] += run is _run_ep
        if wrong:
            raise AssertionError(f"an int32 codebook was accepted ({run.__name__})")
        if ref is not None:
            np.testing.assert_allclose(y, ref(), rtol=1e-3, atol=1e-3)
            stats["checked"] += 1


def case_ep_chain(rng, stats):
    """A convolution chain for the EP: CodebookConv (winograd_tile) -> [BatchNormalization] -> activation ->
    MaxPool / AveragePool (random, sometimes invalid, windows) -> residual Add -> GlobalAveragePool, against
    onnxruntime's own kernels."""
    from onnx import TensorProto, helper

    n, c, m = int(rng.integers(1, 3)), int(rng.integers(1, 12)), int(rng.integers(1, 12))
    h, w = int(rng.integers(3, 16)), int(rng.integers(3, 16))
    cb = (rng.standard_normal((1, 256)) * 0.3).astype(np.float32)
    codes = rng.integers(0, 256, size=(m, c * 9))
    wt = cb[0][codes].reshape(m, c, 3, 3)
    packed = oplib.pack_bits(codes, 8)
    if rng.random() < 0.15:
        packed = _mutate_bytes(rng, packed) if rng.random() < 0.5 else _reshape_wrong(rng, packed)
        cb = cb[:, : int(rng.integers(1, 257))].copy()
    conv = oplib.codebook_conv(
        [n, c, h, w], cb, packed, bits=8, weight_shape=[m, c, 3, 3], pads=[1, 1, 1, 1], attrs={"winograd_tile": 2}
    )
    node = conv.graph.node[0]
    node.output[0] = "c"
    k = [int(rng.integers(1, 5)), int(rng.integers(1, 5))]
    pool_attrs = {
        "kernel_shape": k,
        "strides": [int(rng.integers(1, 4)), int(rng.integers(1, 4))],
        "pads": [int(rng.integers(0, k[i % 2] + (1 if rng.random() < 0.1 else 0))) for i in range(4)],
        "ceil_mode": int(rng.integers(0, 2)),
    }
    op = str(rng.choice(["MaxPool", "AveragePool"]))
    if op == "AveragePool":
        pool_attrs["count_include_pad"] = int(rng.integers(0, 2))
    act_in, bn = "c", []
    # half the chains: a BatchNormalization the EP folds into the filter (or leaves: a negative var, a wrong size)
    if rng.random() < 0.5:
        size = m + (1 if rng.random() < 0.1 else 0)
        var = rng.uniform(0.01, 2.0, size) * (-1.0 if rng.random() < 0.1 else 1.0)
        params = [rng.standard_normal(size), rng.standard_normal(size), rng.standard_normal(size), var]
        names = [f"bn{i}" for i in range(4)]
        conv.graph.initializer.extend(numpy_helper.from_array(v.astype(np.float32), n) for v, n in zip(params, names))
        bn = [helper.make_node("BatchNormalization", ["c", *names], ["cb"], epsilon=float(rng.uniform(1e-6, 1e-2)))]
        act_in = "cb"
    nodes = [
        node,
        *bn,
        helper.make_node(str(rng.choice(["Relu", "LeakyRelu"])), [act_in], ["r"]),
        helper.make_node(op, ["r"], ["p"], **pool_attrs),
        helper.make_node("Add", ["p", "skip"], ["a"]),
        helper.make_node("Relu", ["a"], ["ar"]),
        helper.make_node("GlobalAveragePool", ["ar"], ["Y"]),
    ]
    g = conv.graph
    del g.node[:]
    g.node.extend(nodes)
    g.input.append(helper.make_tensor_value_info("skip", TensorProto.FLOAT, None))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("Y", TensorProto.FLOAT, None))
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    stats["cases"] += 1
    # onnxruntime's own Conv and pool decide the skip shape (and whether the window is valid at all)
    probe = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("Conv", ["X", "W"], ["c"], pads=[1, 1, 1, 1]),
                helper.make_node(op, ["c"], ["p"], **pool_attrs),
            ],
            "probe",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("p", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(wt, "W")],
        ),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    probe.ir_version = 10
    try:
        shape = (
            ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
            .run(None, {"X": x})[0]
            .shape
        )
    except Exception:
        stats["errors"] += 1
        return
    # a pooling window larger than the padded input (the conv keeps h x w): ONNX's shape rule gives 0 rows without
    # ceil_mode; onnxruntime truncates toward zero and pools one window, dividing by the kernel size in its NCHWc
    # kernel and by the clipped window in its plain one. The EP refuses it (INVALID_ARGUMENT naming the pool).
    degenerate = any(e + pool_attrs["pads"][i] + pool_attrs["pads"][i + 2] < k[i] for i, e in enumerate((h, w)))
    feeds = {"X": x, "skip": rng.standard_normal(shape).astype(np.float32)}
    try:
        want = _run(conv, feeds)
    except Exception:  # corrupt weights: the custom op refuses them; the EP must too (or decline)
        want = None
    try:
        got = _run_ep(conv, feeds) if EP else None
    except Exception as e:
        if (want is not None and not (degenerate and "smaller than the pooling window" in str(e))) or (
            "Segmentation" in str(e)
        ):
            raise AssertionError(f"a valid chain failed under the EP: {e}") from e
        stats["errors"] += 1
        return
    if EP:
        stats["ep"] += 1
    if want is not None and got is not None:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"{op} {pool_attrs} on X {x.shape}")
        stats["checked"] += 1


def case_gather(rng, stats):
    """CodebookGather: random tables (narrow codebooks, float16), indices of any shape (out of range sometimes),
    codes corrupted or reshaped wrong."""
    from onnx import TensorProto, helper

    bits = int(rng.integers(1, 9))
    v = int(rng.integers(1, 80))
    d = int(rng.integers(1, 70))
    group = int(rng.choice([v, 1, int(rng.integers(1, v + 3))]))
    g = -(-v // group)
    c = int(rng.choice([1 << bits, int(rng.integers(1, (1 << bits) + 1))]))
    book = _half_values(rng, rng.standard_normal((g, c)).astype(np.float32))
    codes = rng.integers(0, c, size=(v, d))
    packed = ops.pack_codes(codes, bits)
    idx_type = np.int64 if rng.random() < 0.7 else np.int32
    shape = tuple(int(x) for x in rng.integers(0, 5, size=int(rng.integers(0, 3))))
    ids = rng.integers(-v, v, size=shape).astype(idx_type)
    valid = True
    r = rng.random()
    if r < 0.1 and ids.size:
        ids.reshape(-1)[0] = int(rng.choice([v, -v - 1, 2**31 - 1 if idx_type == np.int32 else 2**62]))
        valid = False
    elif r < 0.2:
        packed = _mutate_bytes(rng, packed)  # codes past a narrow codebook, or just other codes: no reference
        valid = False
    elif r < 0.27:
        packed = _reshape_wrong(rng, packed)
        valid = False
    elif r < 0.32:
        book = book.reshape(-1).copy()
        valid = False
    attrs = {"bits": bits, "D": d}
    if rng.random() < 0.7:
        attrs["group_size"] = group
    elif group != v:
        valid = False
    if rng.random() < 0.05:
        attrs["D"] = int(rng.choice(BAD_INTS))
        valid = False
    node = helper.make_node("CodebookGather", ["codebook", "codes", "X"], ["y"], domain=ops.DOMAIN, **attrs)
    graph = helper.make_graph(
        [node],
        "gather",
        [
            helper.make_tensor_value_info("codebook", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("codes", TensorProto.UINT8, None),
            helper.make_tensor_value_info("X", helper.np_dtype_to_tensor_dtype(np.dtype(idx_type)), None),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(ops.DOMAIN, 1)],
        functions=ops.function_protos("CodebookGather", 18),
        ir_version=9,
    )
    feeds = {"X": ids, "codebook": book, "codes": packed}
    ref = None
    if valid:
        rows = np.where(ids < 0, ids + v, ids).astype(np.int64)
        ref = lambda: book[rows[..., None] // group, codes[rows]]  # noqa: E731
    _finish(model, feeds, None, None, stats, rng, ref=ref)


def main() -> int:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    rng = np.random.default_rng(seed)
    stats = {"cases": 0, "errors": 0, "checked": 0, "frozen": 0, "ep": 0, "half": 0}
    cases = [case_codebook, case_sparse, case_conv, case_winograd] * 3 + [case_absurd]
    cases += [case_ep_chain, case_gather] * 3
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        cases[int(rng.integers(0, len(cases)))](rng, stats)
    print(
        f"fuzz: {stats['cases']} cases ({stats['frozen']} with constant weights, {stats['half']} with float16 "
        f"codebooks), {stats['errors']} errors reported cleanly, {stats['checked']} checked against numpy, "
        f"{stats['ep']} EP runs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
