"""fold-constants and constant fills: a large fill stays the node that computes it (the file keeps its size),
unless ``materialize-fills=true``; passes that need its values skip it, saying why."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import numpy_helper

from onnxcomp.api import optimize
from onnxcomp.fold import MAX_FILL_ELEMENTS
from tests.support.random_graphs import Builder
from tests.support.run import apply, op_counts, reasons

DEFAULT = "fold-constants,eliminate(duplicate_nodes=false),fuse-bn,fuse-affine,eliminate"
MATERIALIZED = DEFAULT.replace("fold-constants", "fold-constants(materialize-fills=true)")


def _fill(b: Builder, shape: list[int], value: float, how: str) -> str:
    """A constant fill of ``shape``: ConstantOfShape, Expand of a scalar, or Tile of a 1-element tensor."""
    if how == "ConstantOfShape":
        return b.node(
            "ConstantOfShape",
            [b.const(shape, dtype=np.int64)],
            value=numpy_helper.from_array(np.array([value], np.float32)),
        )
    if how == "Expand":
        return b.node("Expand", [b.const(np.float32(value)), b.const(shape, dtype=np.int64)])
    ones = b.const(np.full([1] * len(shape), value, np.float32))
    return b.node("Tile", [ones, b.const(shape, dtype=np.int64)])


def _matmul_on_fill(k: int, n: int, how: str = "ConstantOfShape"):
    """y = x @ W with W a constant fill of [k, n] (0.01 everywhere)."""
    b = Builder(opset=17)
    x = b.input("x", [3, k])
    b.node("MatMul", [x, _fill(b, [k, n], 0.01, how)], outputs=["y"])
    b.output("y", [3, n])
    return b.model()


def _feeds(k: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).standard_normal((3, k)).astype(np.float32)}


@pytest.mark.parametrize("how", ["ConstantOfShape", "Expand", "Tile"])
def test_large_fill_is_kept_and_the_file_stays_small(how):
    k, n = 1024, 512  # 524,288 elements: 2 MB of float32 once materialized
    model = _matmul_on_fill(k, n, how)
    out, report = optimize(model)
    assert how in op_counts(out)
    assert max(int(np.prod(t.dims)) for t in out.graph.initializer) <= 16
    assert len(report.serialized) < 10_000  # was 2 MB
    fold = report.passes[0]
    assert fold.counters["fills_kept"] == 1
    assert f"a constant fill of {k * n:,} elements kept as is (materialize-fills=true folds it)" in reasons(fold)
    apply(model, DEFAULT, _feeds(k))  # same outputs


def test_materialize_fills_folds_it():
    model = _matmul_on_fill(1024, 512)
    out, _ = apply(model, MATERIALIZED, _feeds(1024))
    assert "ConstantOfShape" not in op_counts(out)
    assert np.allclose(numpy_helper.to_array(out.graph.initializer[0]), 0.01)


def test_small_fill_is_materialized():
    k, n = 64, 32
    assert k * n <= MAX_FILL_ELEMENTS
    out, report = apply(_matmul_on_fill(k, n), DEFAULT, _feeds(k))
    assert "ConstantOfShape" not in op_counts(out)
    assert report.counters.get("fills_kept") is None  # (the last pass's result: eliminate)


def test_max_fill_elements_option():
    model = _matmul_on_fill(64, 32)  # 2,048 elements: loading the model leaves fills over 1,024 to the pass
    out, report = optimize(model, "fold-constants(max-fill-elements=1500)")
    assert "ConstantOfShape" in op_counts(out) and report.passes[0].counters["fills_kept"] == 1


def test_fill_of_a_growing_expand_only():
    """Expand that does not grow its input 4x is an ordinary constant computation: folded."""
    b = Builder(opset=17)
    x = b.input("x", [300, 400])
    w = b.node("Expand", [b.const(np.ones((300, 1), np.float32)), b.const([300, 2], dtype=np.int64)])
    b.node("Add", [x, b.node("Tile", [w, b.const([1, 200], dtype=np.int64)])], outputs=["y"])
    b.output("y", [300, 400])
    out, report = optimize(b.model())
    # Expand 300 -> 600 elements is folded; Tile 600 -> 120,000 is a fill and kept
    assert op_counts(out).get("Expand") is None and op_counts(out)["Tile"] == 1
    assert report.passes[0].counters["fills_kept"] == 1


def _conv_bn_on_fill():
    b = Builder(opset=17)
    x = b.input("x", [1, 64, 5, 5])
    w = _fill(b, [256, 64, 3, 3], 0.01, "ConstantOfShape")  # 147,456 elements
    y = b.bn(b.node("Conv", [x, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 256)
    b.node("Relu", [y], outputs=["y"])
    b.output("y", [1, 256, 5, 5])
    return b.model()


def test_fuse_bn_skips_a_fill_weighted_conv_and_says_why():
    model = _conv_bn_on_fill()
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 64, 5, 5)).astype(np.float32)}
    out, report = optimize(model)
    assert "BatchNormalization" in op_counts(out)
    fuse_bn = next(p for p in report.passes if p.name == "fuse-bn")
    assert "ConstantOfShape fill kept as is to keep the model small" in reasons(fuse_bn)
    assert "fold-constants(materialize-fills=true) folds it" in reasons(fuse_bn)
    out, _ = apply(model, MATERIALIZED, feeds, rtol=1e-4, atol=1e-5)
    assert "BatchNormalization" not in op_counts(out)


def test_report_notes_file_growth(tmp_path, capsys):
    from onnxcomp.cli import main

    src, dst = tmp_path / "in.onnx", tmp_path / "out.onnx"
    src.write_bytes(_matmul_on_fill(1024, 512).SerializeToString())
    report = tmp_path / "r.json"
    assert main(["optimize", str(src), str(dst), "--passes", MATERIALIZED, "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "note: the output file is" in out and "x the size of the input" in out
    assert json.loads(report.read_text())["model"]["file_growth"] > 1000
    assert main(["optimize", str(src), str(dst), "--report", str(report)]) == 0
    assert "note: the output file is" not in capsys.readouterr().out
    model = json.loads(report.read_text())["model"]
    assert model["bytes_after"] < 1000 and (model["file_growth"] or 1) < 1.5


def test_fill_with_unknown_shape_is_folded_as_before():
    """A ConstantOfShape whose shape is computed at run time is not a constant: nothing to decide."""
    b = Builder(opset=17)
    x = b.input("x", [2, 3])
    shape = b.node("Shape", [x])
    b.node("Add", [x, b.node("ConstantOfShape", [shape])], outputs=["y"])
    b.output("y", [2, 3])
    out, _ = apply(b.model(), DEFAULT, {"x": np.ones((2, 3), np.float32)})
    assert op_counts(out).get("ConstantOfShape") is None  # Shape of a static tensor folds, and so does the small fill


def test_prune_filters_names_the_kept_fill():
    import onnx

    from tests.support.run import LIGHT_DIR

    model = onnx.load(str(LIGHT_DIR / "light_squeezenet.onnx"))
    _, report = optimize(model, "prune-filters(ratio=0.3,round_to=1)")
    assert "fill kept as is to keep the model small" in reasons(report.passes[0])


def test_qdq_model_keeps_its_int8_weights(tmp_path):
    # onnxruntime's static quantizer (QDQ format) stores each weight as int8 behind a DequantizeLinear; folded,
    # the weights were stored as float32 (the bundled digits CNN: 119,592 -> 428,059 bytes) and onnxruntime
    # could no longer fuse them into integer kernels (QLinearConv): other outputs than the quantized model's
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from tests.support.run import MODELS_DIR, random_feeds

    fp32 = onnx.load(str(MODELS_DIR / "digits_cnn.onnx"))
    samples = [random_feeds(fp32, seed=s) for s in range(8)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(samples)

        def get_next(self):
            return next(self.left, None)

    quantize_static(
        str(MODELS_DIR / "digits_cnn.onnx"),
        str(tmp_path / "qdq.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        weight_type=QuantType.QInt8,
    )
    qdq = onnx.load(str(tmp_path / "qdq.onnx"))
    out, _ = optimize(qdq)

    def int8_weights(m: onnx.ModelProto) -> list[int]:  # (zero points are scalars, deduplicated by eliminate)
        return sorted(
            a.size for t in m.graph.initializer if (a := numpy_helper.to_array(t)).dtype == np.int8 and a.size > 1
        )

    def float_bytes(m: onnx.ModelProto) -> int:
        return sum(
            numpy_helper.to_array(t).nbytes for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT
        )

    assert op_counts(out)["DequantizeLinear"] == op_counts(qdq)["DequantizeLinear"]
    assert int8_weights(out) == int8_weights(qdq) != []
    assert float_bytes(out) <= float_bytes(qdq)
    # the same int8 kernels: equal outputs with onnxruntime's own optimizations on (the QDQ fusion)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1

    def run(m: onnx.ModelProto) -> list[np.ndarray]:
        sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return sess.run(None, samples[0])

    for a, b in zip(run(qdq), run(out), strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_inlined_decode_is_not_folded_back_to_float():
    # kmeans' ops inlined into standard ops (for runtimes without model-local functions) decode packed codes with
    # constant subgraphs; a later optimize folded them into float32 weights (the digits CNN: 72,226 -> 416,762
    # bytes). A value 4x its stored bytes or more stays computed, unless materialize-fills=true
    import onnx

    from tests.support.run import MODELS_DIR, assert_same_outputs, random_feeds

    model = onnx.load(str(MODELS_DIR / "digits_cnn.onnx"))
    packed, _ = optimize(model, "fuse-bn,kmeans(bits=4),inline-functions")
    assert "com.onnxcomp" not in {o.domain for o in packed.opset_import}
    again, report = optimize(packed)
    fold_result = report.passes[0]
    assert fold_result.counters["decodes_kept"] >= 2
    assert "stored bytes into" in reasons(fold_result)
    codes = {t.name for t in again.graph.initializer if t.name.endswith("_codes")}
    assert {"fc1.weight_codes", "down.0.weight_codes"} <= codes
    assert again.ByteSize() <= packed.ByteSize()
    assert_same_outputs(packed, again, random_feeds(packed, seed=3))
    # a pass that needs such a weight's values says why it skips it
    _, again_k = optimize(packed, "fold-constants,kmeans(bits=4)")
    assert "not a constant (decoded from stored constants" in reasons(again_k.passes[-1])
    # asked to: the decodes become float weights
    floats, _ = optimize(packed, MATERIALIZED)
    assert not any(t.name.endswith("_codes") for t in floats.graph.initializer)
    assert floats.ByteSize() > 4 * packed.ByteSize()


def test_fuse_bn_names_a_quantized_weight():
    # a QDQ Conv weight (int8 through DequantizeLinear, never folded) is no float constant: fuse-bn says why
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.integers(-100, 100, (4, 3, 3, 3)).astype(np.int8), "wq"),
        numpy_helper.from_array(np.array(0.01, np.float32), "s"),
        *(numpy_helper.from_array(v.astype(np.float32), n) for n, v in zip("gbmv", [np.ones(4), np.zeros(4)] * 2)),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("DequantizeLinear", ["wq", "s"], ["w"], name="dq"),
            helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
            helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"], name="bn"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    out, report = optimize(model, "fold-constants,fuse-bn")
    assert "quantized: read through DequantizeLinear" in reasons(report.passes[-1])
    assert op_counts(out)["DequantizeLinear"] == 1
