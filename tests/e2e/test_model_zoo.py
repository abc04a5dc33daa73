"""The nine onnx model-zoo "light" models through the default lossless pipeline (in memory).

Each optimized model must reproduce the reference output shipped with onnx on the onnx backend-test input
(``np.arange(n).reshape(shape) / n``, dynamic dims 1) within the onnx runner's tolerances
(onnx.backend.test.case.model: rtol 1e-3, densenet121 2e-3; atol 1e-7) and equal the original model under
onnxruntime (probabilities and the logits before the Softmax).

These models' weights are constant fills (ConstantOfShape): the files are kilobytes. The default pipeline keeps
the large fills as they are (materializing them grew vgg19 from 10 KB to 513 MB), so no initializer of the
output is larger than the fill limit, and the convolutions whose weights stay fills keep their
BatchNormalization (fuse-bn skips them, saying why). With ``fold-constants(materialize-fills=true)`` every BN
is folded: the pipeline folds BatchNormalization before ``eliminate`` merges duplicate nodes (these models'
convolutions compute the same thing); merging first leaves merged convs feeding several BNs in inception_v2,
which ``fuse-bn`` then folds only with ``clone_shared=true``.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxcomp.api import optimize
from onnxcomp.cli import main
from onnxcomp.fold import MAX_FILL_ELEMENTS
from onnxcomp.io import infer_shapes
from onnxcomp.pipeline import DEFAULT_PIPELINE
from tests.support.run import LIGHT_DIR, assert_same_outputs, outputs

NAMES = sorted(p.stem.removeprefix("light_") for p in LIGHT_DIR.glob("light_*.onnx"))
RTOL = {"densenet121": 2e-3}  # onnx's model_test tolerances; 1e-3 for the others
ATOL = 1e-7
MATERIALIZED = DEFAULT_PIPELINE.replace("fold-constants", "fold-constants(materialize-fills=true)", 1)
WITH_BN = ("densenet121", "inception_v2", "resnet50", "shufflenet")


def _onnx_test_input(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The onnx backend runner's dummy input for light models (generate_dummy_data, random=False)."""
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim)
        n = int(np.prod(shape))
        feeds[vi.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    return feeds


def _with_logits(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with the Softmax input as an extra output (the probabilities of these models are ~1e-3)."""
    inferred = infer_shapes(model)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    softmax = [n for n in m.graph.node if n.op_type == "Softmax"]
    infos = {vi.name: vi for vi in inferred.graph.value_info}
    for n in softmax:
        if n.input[0] in infos:
            m.graph.output.append(infos[n.input[0]])
    return m


def _bn_after_conv(model: onnx.ModelProto) -> int:
    producer = {t: n.op_type for n in model.graph.node for t in n.output}
    return sum(1 for n in model.graph.node if n.op_type == "BatchNormalization" and producer.get(n.input[0]) == "Conv")


def _largest_initializer(model: onnx.ModelProto) -> int:
    return max((int(np.prod(t.dims)) for t in model.graph.initializer), default=0)


@pytest.mark.parametrize("name", NAMES)
def test_light_model(name):
    path = LIGHT_DIR / f"light_{name}.onnx"
    model = _with_logits(onnx.load(str(path)))
    feeds = _onnx_test_input(model)
    ref = numpy_helper.to_array(onnx.load_tensor(str(path).replace(".onnx", "_output_0.pb")))
    out, report = optimize(model)  # the default lossless pipeline
    assert report.pipeline == DEFAULT_PIPELINE
    got = outputs(out, feeds)
    first = model.graph.output[0].name
    np.testing.assert_allclose(got[first], ref, rtol=RTOL.get(name, 1e-3), atol=ATOL)
    assert_same_outputs(model, out, feeds, rtol=1e-5, atol=1e-5)
    # the large fills stay fills: no initializer beyond the fill limit, a few MB at most (vgg19 was 513 MB)
    assert _largest_initializer(out) <= max(MAX_FILL_ELEMENTS, _largest_initializer(model))
    assert len(report.serialized) < 4_000_000, len(report.serialized)
    fold = report.passes[0]
    assert fold.counters.get("fills_kept", 0) > 0
    assert any("constant fill of" in s.reason and "materialize-fills=true" in s.reason for s in fold.skips)
    kinds = {n.op_type for n in out.graph.node}
    assert not kinds & {"Dropout", "Identity"}
    assert len(out.graph.node) < len(model.graph.node)
    if name in WITH_BN:  # BNs after fill-weighted convs are kept, with the reason
        fuse_bn = next(p for p in report.passes if p.name == "fuse-bn")
        assert any("ConstantOfShape fill kept as is" in s.reason for s in fuse_bn.skips)


@pytest.mark.parametrize("name", WITH_BN)
def test_light_model_materialized_fills_fold_every_bn(name):
    path = LIGHT_DIR / f"light_{name}.onnx"
    model = _with_logits(onnx.load(str(path)))
    feeds = _onnx_test_input(model)
    out, report = optimize(model, MATERIALIZED)
    assert_same_outputs(model, out, feeds, rtol=1e-5, atol=1e-5)
    before = _bn_after_conv(model)
    assert _bn_after_conv(out) == 0, (before, _bn_after_conv(out))
    assert "ConstantOfShape" not in {n.op_type for n in out.graph.node}
    if before:
        assert sum(p.counters.get("fused", 0) for p in report.passes if p.name == "fuse-bn") > 0


def test_inception_v2_shared_conv_bns_with_clone_shared():
    path = LIGHT_DIR / "light_inception_v2.onnx"
    model = onnx.load(str(path))
    feeds = _onnx_test_input(model)
    fold = "fold-constants(materialize-fills=true)"
    merged_first, _ = optimize(model, f"{fold},eliminate,fuse-bn,fuse-affine,eliminate")
    assert _bn_after_conv(merged_first) == 6  # merged convs feeding several BNs
    out, _ = optimize(model, f"{fold},eliminate,fuse-bn(clone_shared=true),fuse-affine,eliminate")
    assert _bn_after_conv(out) == 0 and "BatchNormalization" not in {n.op_type for n in out.graph.node}
    ref = numpy_helper.to_array(onnx.load_tensor(str(path).replace(".onnx", "_output_0.pb")))
    np.testing.assert_allclose(outputs(out, feeds)[model.graph.output[0].name], ref, rtol=1e-3, atol=ATOL)


def test_cli_optimize_verify(tmp_path, capsys):
    out = tmp_path / "squeezenet.onnx"
    code = main(["optimize", str(LIGHT_DIR / "light_squeezenet.onnx"), str(out), "--verify"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert "Dropout" not in {n.op_type for n in model.graph.node}
