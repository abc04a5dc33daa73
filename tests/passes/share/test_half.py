"""float16 weights (passes/share/_half.py): kmeans, pow2, ternary and binary decode them in front of the float16
layer; a weight its encoding represents exactly (at most 2**bits distinct values; powers of two; +-a or 0 per
channel) decodes to itself, so the model's outputs equal the original's; the bytes the report gives are the bytes
written; prune-weights zeroes float16 weights in float16."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcomp.api import optimize
from tests.support.run import outputs


def _half_model(levels: int = 0, seed: int = 0) -> onnx.ModelProto:
    """x fp16 [N, 3, 7, 9] -> Conv -> Relu -> Flatten -> MatMul -> Gemm(transB=1) -> Gemm(transB=0), float16
    weights; ``levels`` > 0: each weight takes at most that many distinct values."""
    rng = np.random.default_rng(seed)

    def w(shape, scale):
        v = rng.standard_normal(shape) * scale
        if levels:
            v = rng.choice(np.linspace(-2 * scale, 2 * scale, levels), size=shape)
        return v.astype(np.float16)

    inits = {
        "wc": w((12, 3, 3, 3), 0.3),
        "bc": np.zeros(12, np.float16),
        "wm": w((12 * 5 * 7, 40), 0.05),
        "wg": w((24, 40), 0.2),
        "wh": w((24, 10), 0.2),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wc", "bc"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "wm"], ["m"], name="fc"),
        helper.make_node("Gemm", ["m", "wg"], ["g"], name="gemm_t", transB=1),
        helper.make_node("Gemm", ["g", "wh"], ["y"], name="gemm"),
    ]
    graph = helper.make_graph(
        nodes,
        "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 3, 7, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 10])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _feeds(n: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(7).standard_normal((n, 3, 7, 9)).astype(np.float16)}


@pytest.mark.parametrize("bits", [2, 4])
def test_few_valued_float16_weights_decode_exactly(bits):
    model = _half_model(levels=1 << bits)
    out, report = optimize(model, f"kmeans(bits={bits},group-size=0,min-params=0)")
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("CodebookDecode") == 4 and ops.count("Cast") == 4
    assert {i.name for i in out.graph.initializer}.isdisjoint({"wc", "wm", "wg", "wh"})
    np.testing.assert_array_equal(outputs(out, _feeds())["y"], outputs(model, _feeds())["y"])
    inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    by_name = {n.name: n for n in out.graph.node}
    params = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    for row, w in zip(report.passes[-1].layers, ("wc", "wm", "wg", "wh"), strict=True):
        assert row.extra["bytes_before"] == 2 * params[w]
        node = by_name[row.extra["node"]]
        assert row.extra["bytes_stored"] == sum(inits[i].nbytes for i in node.input)
    assert out.ByteSize() < model.ByteSize()


def test_continuous_float16_weights_within_the_codebook_reach():
    model = _half_model()
    out, report = optimize(model, "kmeans(bits=4,min-params=0)")
    for row in report.passes[-1].layers:
        assert row.error < 0.15, (row.name, row.error)
    got, ref = outputs(out, _feeds())["y"].astype(np.float32), outputs(model, _feeds())["y"].astype(np.float32)
    cosine = float((got * ref).sum() / np.linalg.norm(got) / np.linalg.norm(ref))
    assert cosine > 0.97


@pytest.mark.parametrize("spec", ["kmeans(bits=4,min-params=0)", "kmeans(target-bits=4,min-params=0)"])
def test_calibrated_and_budget_modes_on_float16_weights(spec):
    model = _half_model()
    calib = {"x": np.random.default_rng(3).standard_normal((48, 3, 7, 9)).astype(np.float16)}
    out, _ = optimize(model, spec, calib=calib)
    assert [n.op_type for n in out.graph.node].count("CodebookDecode") >= 2
    got, ref = outputs(out, _feeds())["y"].astype(np.float32), outputs(model, _feeds())["y"].astype(np.float32)
    assert float((got * ref).sum() / np.linalg.norm(got) / np.linalg.norm(ref)) > 0.95


def _exact_model(kind: str, seed: int = 0) -> onnx.ModelProto:
    """``_half_model`` with weights that ``kind`` (pow2 / ternary / binary) represents exactly: powers of two (and
    0) at one scale, or per output channel +-a (and 0 for ternary)."""
    model = _half_model(seed=seed)
    rng = np.random.default_rng(seed)
    out_axis = {"wc": 0, "wm": 1, "wg": 0, "wh": 1}  # Conv, MatMul [K, N], Gemm transB=1, Gemm transB=0
    for init in model.graph.initializer:
        if init.name not in out_axis:
            continue
        shape = tuple(init.dims)
        if kind == "pow2":
            v = 0.25 * rng.choice([0.0, 0.125, 0.25, 0.5, 1.0, -0.125, -0.25, -0.5, -1.0], size=shape)
        else:
            a = rng.uniform(0.05, 0.3, shape[out_axis[init.name]]).astype(np.float16).astype(np.float64)
            a = a.reshape(-1, *[1] * (len(shape) - 1)) if out_axis[init.name] == 0 else a.reshape(1, -1)
            v = a * rng.choice([-1.0, 0.0, 1.0] if kind == "ternary" else [-1.0, 1.0], size=shape)
        init.CopyFrom(numpy_helper.from_array(v.astype(np.float16), init.name))
    return model


@pytest.mark.parametrize("kind", ["pow2", "ternary", "binary"])
def test_fixed_grid_passes_decode_float16_weights_exactly(kind):
    model = _exact_model(kind)
    out, report = optimize(model, f"{kind}(min-params=0)")
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("CodebookDecode") == 4 and ops.count("Cast") == 4
    np.testing.assert_array_equal(outputs(out, _feeds())["y"], outputs(model, _feeds())["y"])
    inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    by_name = {n.name: n for n in out.graph.node}
    for row in report.passes[-1].layers:
        assert row.error == 0.0
        assert row.extra["bytes_stored"] == sum(inits[i].nbytes for i in by_name[row.extra["node"]].input)


@pytest.mark.parametrize("kind", ["pow2", "ternary"])
def test_compensated_fixed_grids_on_float16_weights(kind):
    model = _half_model()
    calib = {"x": np.random.default_rng(3).standard_normal((48, 3, 7, 9)).astype(np.float16)}
    out, report = optimize(model, f"{kind}(min-params=0)", calib=calib)
    plain, _ = optimize(model, f"{kind}(min-params=0,compensate=false)", calib=calib)
    assert report.passes[-1].counters.get("layers_compensated", 0) >= 1
    assert [n.op_type for n in out.graph.node].count("CodebookDecode") == 4
    ref = outputs(model, calib)["y"].astype(np.float64)

    def rel_err(m: onnx.ModelProto) -> float:
        return float(np.linalg.norm(outputs(m, calib)["y"].astype(np.float64) - ref) / np.linalg.norm(ref))

    # the decoded float16 weights are the compensated ones: a lower output error than plain rounding
    # (pow2 0.34 vs 0.37, ternary 0.68 vs 0.77 when written)
    assert rel_err(out) < rel_err(plain) < 1.0


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name.startswith("w")}


def test_prune_weights_prunes_float16_weights_in_float16():
    # the weights stay float16 initializers of the same layers: half of each is 0, the rest bit-identical, and the
    # model computes what the original does with those weights zeroed
    model = _half_model()
    out, report = optimize(model, "prune-weights(ratio=0.5,min-params=0)")
    before, after = _weights(model), _weights(out)
    assert set(after) == set(before) == {"wc", "wm", "wg", "wh"}
    for name, w in after.items():
        assert w.dtype == np.float16
        assert abs(float((w == 0).mean()) - 0.5) < 0.01, name
        np.testing.assert_array_equal(w[w != 0], before[name][w != 0])
        # the smallest magnitudes went: every kept |w| >= every pruned |w|
        assert np.abs(w[w != 0]).min() >= np.abs(before[name][w == 0]).max()
    rows = {r.name: r for r in report.passes[-1].layers}
    assert rows["conv"].extra["sparsity"] == pytest.approx(0.5, abs=0.01) and not report.passes[-1].skips
    zeroed = onnx.ModelProto()
    zeroed.CopyFrom(model)
    for init in zeroed.graph.initializer:
        if init.name in after:
            init.CopyFrom(numpy_helper.from_array(after[init.name], init.name))
    np.testing.assert_array_equal(outputs(out, _feeds())["y"], outputs(zeroed, _feeds())["y"])


def test_prune_weights_float16_with_calibration_and_then_kmeans():
    # Wanda scores and the least-squares update of the kept weights (rounded to float16) lose less than magnitude
    # pruning; kmeans after it keeps the zeros exactly (Deep Compression on a float16 model)
    model = _half_model()
    calib = {"x": np.random.default_rng(3).standard_normal((96, 3, 7, 9)).astype(np.float16)}
    ref = outputs(model, _feeds(5))["y"].astype(np.float64)

    def rel_err(m: onnx.ModelProto) -> float:
        return float(np.linalg.norm(outputs(m, _feeds(5))["y"].astype(np.float64) - ref) / np.linalg.norm(ref))

    magnitude, _ = optimize(model, "prune-weights(ratio=0.5,min-params=0)")
    lsq, report = optimize(model, "prune-weights(ratio=0.5,min-params=0,update=lsq)", calib=calib)
    assert all(w.dtype == np.float16 for w in _weights(lsq).values())
    assert "+ lsq" in {r.name: r for r in report.passes[-1].layers}["fc"].decision
    assert rel_err(lsq) < 0.9 * rel_err(magnitude), (rel_err(lsq), rel_err(magnitude))
    both, report = optimize(model, "prune-weights(ratio=0.5,min-params=0),kmeans(bits=4,min-params=0)")
    from onnxcomp import ops

    decoded = ops.decode_model(both)
    inits = {i.name: numpy_helper.to_array(i) for i in decoded.graph.initializer}
    made = {o: n for n in decoded.graph.node for o in n.output}
    pruned = _weights(magnitude)
    for node in magnitude.graph.node:
        if len(node.input) < 2 or node.input[1] not in pruned:
            continue
        w = pruned[node.input[1]]
        (layer,) = [n for n in decoded.graph.node if n.name == node.name]
        name = layer.input[1]
        while name not in inits:  # the decoded weight, through its Cast to float16 (and a Reshape or Transpose)
            name = made[name].input[0]
        got = inits[name].reshape(-1) if inits[name].size == w.size else None
        assert got is not None, node.name
        assert int((got == 0).sum()) >= int((w == 0).sum()), node.name  # every pruned zero decodes to 0
    assert rel_err(both) < 1.0


def test_prune_weights_keeps_float16_weights_a_refit_would_overflow():
    # x2 = 70 x1: keeping w1 alone, the least-squares re-fit wants w1 + 70 w2 (about 3.7x w1 under the ridge),
    # beyond float16's 65504 for w ~ 20000: those kept weights stay as they were, not inf, and the report says so
    w = np.array([[20016.0, 20000.0], [20000.0, 20016.0]], np.float16)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 2])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    x1 = np.random.default_rng(0).standard_normal((64, 1)) * 0.01
    calib = {"x": np.concatenate([x1, 70 * x1], 1).astype(np.float16)}
    spec = "prune-weights(ratio=0.5,min-params=0,update=lsq,criterion=magnitude)"
    out, report = optimize(model, spec, calib=calib)
    got = numpy_helper.to_array(out.graph.initializer[0])
    np.testing.assert_array_equal(got, np.where(np.eye(2, dtype=bool), w, 0))
    p = report.passes[-1]
    assert [(s.node, s.reason) for s in p.skips] == [
        ("mm", "lsq update skipped: a re-fit weight exceeds float16's range")
    ]
    assert p.layers[0].decision == "magnitude layer"
    # at a scale float16 holds, the same weights are re-fitted
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array((w / 20).astype(np.float16), "w"))
    small, report = optimize(model, spec, calib=calib)
    assert report.passes[-1].layers[0].decision == "magnitude layer + lsq" and not report.passes[-1].skips
    assert abs(float(numpy_helper.to_array(small.graph.initializer[0])[0, 0])) > 2 * 1000


def test_float32_calibration_samples_of_a_float16_input_are_cast():
    # a user's pipeline computes its samples in float32; the float16 model gets them in float16 (as float64 samples
    # of a float32 input are cast), and values float16 cannot hold are an error, not inf
    from onnxcomp.errors import InputError

    model = _half_model()
    x = np.random.default_rng(3).standard_normal((48, 3, 7, 9))
    out16, _ = optimize(model, "kmeans(bits=4,min-params=0)", calib={"x": x.astype(np.float16)})
    out32, _ = optimize(model, "kmeans(bits=4,min-params=0)", calib={"x": x.astype(np.float32)})
    assert out32.SerializeToString() == out16.SerializeToString()
    with pytest.raises(InputError, match="beyond the range of float16"):
        optimize(model, "kmeans(bits=4,min-params=0)", calib={"x": (x * 1e5).astype(np.float32)})
