"""Tests of the model builders and of the bundled digits CNN: validity, onnxruntime execution,
expected shapes, determinism, real-size parameter counts, held-out accuracy."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import models
from models import builders

# (id, builder, kwargs, expected output shapes at batch 2)
CASES = [
    ("resnet", "resnet", {}, [(2, 10)]),
    ("resnet18-odd", "resnet", dict(depth=18, image_size=(31, 29), num_classes=7), [(2, 7)]),
    (
        "resnet-bottleneck-odd",
        "resnet",
        dict(blocks=(1, 2, 1, 1), bottleneck=True, image_size=(31, 29)),
        [(2, 10)],
    ),
    ("mobilenet", "mobilenet", {}, [(2, 10)]),
    ("mobilenet-odd-opset21", "mobilenet", dict(image_size=(31, 29), opset=21), [(2, 10)]),
    (
        "mobilenet-v3-small-narrow",
        "mobilenet",
        dict(variant="v3_small", width=0.25, image_size=32),
        [(2, 10)],
    ),
    ("branchy", "branchy", {}, [(2, 10)]),
    ("branchy-odd-3modules", "branchy", dict(image_size=(31, 29), num_modules=3), [(2, 10)]),
    ("mlp", "mlp", {}, [(2, 10)]),
    ("mlp-gelu-opset20", "mlp", dict(activation="gelu", opset=20), [(2, 10)]),
    ("transformer", "transformer_block", {}, [(2, 16, 64)]),
    (
        "transformer-2blocks-symseq",
        "transformer_block",
        dict(num_blocks=2, seq_len="S", opset=21),
        [(2, 8, 64)],
    ),
    ("vgg", "vgg", {}, [(2, 10)]),
    ("vgg16-bn-narrow", "vgg", dict(config="vgg16", batch_norm=True, width=0.0625), [(2, 10)]),
    ("vgg-fc-only", "vgg", dict(fc_only=True), [(2, 10)]),
    ("yolo", "yolo", {}, [(2, 72, 8, 8), (2, 72, 4, 4), (2, 72, 2, 2)]),
    (
        "yolo-rect-fixed-batch",
        "yolo",
        dict(image_size=(64, 96), batch=2, num_classes=3),
        [(2, 67, 8, 12), (2, 67, 4, 6), (2, 67, 2, 3)],
    ),
]


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(("builder", "kwargs", "shapes"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_valid_and_runs(builder, kwargs, shapes):
    model = builders.build(builder, **kwargs)
    onnx.checker.check_model(model, full_check=True)
    assert 8 <= model.ir_version <= 10
    assert model.opset_import[0].version == kwargs.get("opset", builders.DEFAULT_OPSET)
    batch = kwargs.get("batch", "N")
    for out in model.graph.output:
        dim0 = out.type.tensor_type.shape.dim[0]
        assert (dim0.dim_param or dim0.dim_value) == batch
    # every weight is an initializer: no Constant nodes, no initializer listed as graph input
    assert not any(n.op_type == "Constant" for n in model.graph.node)
    assert {i.name for i in model.graph.input}.isdisjoint(t.name for t in model.graph.initializer)
    outs = _session(model).run(None, builders.random_inputs(model, batch=2))
    assert [o.shape for o in outs] == shapes
    for out in outs:
        assert out.dtype == np.float32
        assert np.isfinite(out).all()
        assert out.std() > 0


@pytest.mark.parametrize("builder", ["resnet", "mobilenet", "branchy", "mlp", "transformer_block", "vgg", "yolo"])
def test_deterministic(builder):
    first = builders.build(builder, seed=3).SerializeToString()
    assert builders.build(builder, seed=3).SerializeToString() == first
    assert builders.build(builder, seed=4).SerializeToString() != first


def test_weights_are_realistic():
    model = builders.resnet(seed=1)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    conv = weights["layer2.0.conv1.weight"]
    fan_in = np.prod(conv.shape[1:])
    assert np.std(conv) == pytest.approx(np.sqrt(2 / fan_in), rel=0.1)  # He init
    gammas = np.concatenate([v for k, v in weights.items() if k.endswith(".weight") and v.ndim == 1])
    assert gammas.min() >= 0.5 and gammas.max() <= 1.5
    variances = np.concatenate([v for k, v in weights.items() if k.endswith("running_var")])
    assert variances.min() >= 0.5 and variances.max() <= 2.0


def test_node_kinds():
    ops = lambda m: {n.op_type for n in m.graph.node}  # noqa: E731
    assert {
        "Conv",
        "BatchNormalization",
        "Relu",
        "MaxPool",
        "Add",
        "GlobalAveragePool",
        "Flatten",
        "Gemm",
    } <= ops(builders.resnet())
    mobile = builders.mobilenet()
    assert {"HardSwish", "HardSigmoid", "Clip", "Mul", "Add", "GlobalAveragePool"} <= ops(mobile)
    assert any(
        n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute) for n in mobile.graph.node
    )
    assert {"Concat", "Split", "MaxPool"} <= ops(builders.branchy())
    assert {"MatMul", "Add", "Gemm", "Relu", "Erf"} <= ops(builders.mlp())
    assert {"LayerNormalization", "Reshape", "Transpose", "Softmax", "MatMul"} <= ops(builders.transformer_block())
    assert {"Sigmoid", "Mul", "Split", "Concat", "Resize", "MaxPool"} <= ops(builders.yolo())


def test_real_sizes():
    """Full-size configurations have the reference architectures' parameter counts (BN stats excluded)."""

    def learnable(model):
        return sum(
            int(np.prod(t.dims))
            for t in model.graph.initializer
            if not t.name.endswith(("running_mean", "running_var")) and not t.name.startswith("const.")
        )

    assert learnable(builders.resnet50(image_size=32)) == 25_557_032
    assert learnable(builders.resnet(depth=18, width=1.0, num_classes=1000, image_size=32)) == 11_689_512
    assert learnable(builders.mobilenet("v2", num_classes=1000)) == 3_504_872
    assert learnable(builders.mobilenet("v3_small", num_classes=1000)) == 2_542_856
    assert learnable(builders.mobilenet("v3_large", num_classes=1000)) == 5_483_032
    assert learnable(builders.yolov8n(image_size=64)) == 3_157_184  # yolov8n without its fixed DFL conv


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        builders.build("alexnet")
    with pytest.raises(ValueError, match="opset"):
        builders.mlp(opset=13)
    with pytest.raises(ValueError, match="multiple of 32"):
        builders.yolo(image_size=48)
    with pytest.raises(ValueError, match="depth"):
        builders.resnet(depth=19)


def test_digits_bundle():
    model = onnx.load(models.DIGITS_MODEL)
    onnx.checker.check_model(model, full_check=True)
    producers = {out: n.op_type for n in model.graph.node for out in n.output}
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert bns and all(producers[n.input[0]] == "Conv" for n in bns)
    (input_name,) = [i.name for i in model.graph.input]
    with np.load(models.DIGITS_HELDOUT) as data:
        assert list(data.keys()) == [input_name]
        images = data[input_name]
    labels = np.load(models.DIGITS_LABELS)
    assert images.dtype == np.float32 and images.shape == (450, 1, 8, 8)
    assert labels.dtype == np.int64 and labels.shape == (450,)
    logits = _session(model).run(["logits"], {input_name: images})[0]
    assert logits.shape == (450, 10)
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    assert accuracy >= 0.95
