"""Models over protobuf's 2 GB limit, exercised on small models with io.PROTO_LIMIT lowered: the weights stay
in their files, onnxruntime and onnx.checker get paths, nothing is serialized whole, output files are written
with external data one tensor at a time; serialization failures are clean errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxcomp import io
from onnxcomp.api import optimize
from onnxcomp.cli import main
from onnxcomp.errors import InputError
from tests.support.run import outputs

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_large  # the benchmark's streaming MLP builder

DIM = 64
LIMIT = 20_000  # bytes: the 3-layer MLP below (~50 KB of weights) is "over 2 GB"


@pytest.fixture
def big(tmp_path, monkeypatch):
    """A 3 x [64x64] MLP with external data, and PROTO_LIMIT lowered below its size."""
    path = tmp_path / "in" / "model.onnx"
    path.parent.mkdir()
    bench_large.build(path, 3 * DIM * DIM, DIM)
    monkeypatch.setattr(io, "PROTO_LIMIT", LIMIT)
    return path


def _feeds():
    return {"x": np.random.default_rng(3).standard_normal((1, DIM)).astype(np.float32)}


def _run(path: Path) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, _feeds())[0]


def test_loading_leaves_the_weights_in_their_files(big):
    model = io.load_model(big)
    assert io.on_disk(model)
    w = next(t for t in model.graph.initializer if t.name == "w1")
    location = {e.key: e.value for e in w.external_data}["location"]
    assert w.data_location == onnx.TensorProto.EXTERNAL and not w.raw_data
    assert Path(location).is_absolute() and Path(location) == (big.parent / "model.onnx.data").resolve()
    with pytest.raises(io.TooLargeError):
        io.serialize(model)


def test_default_pipeline_writes_external_data_and_round_trips(big, tmp_path):
    before = {p.name: p.read_bytes() for p in big.parent.iterdir()}
    out, report = optimize(big)
    assert report.serialized is None  # never serialized whole
    # checked and loaded from a temporary graph file beside the weights: gone, the input untouched
    assert {p.name: p.read_bytes() for p in big.parent.iterdir()} == before
    fuse_affine = next(p for p in report.passes if p.name == "fuse-affine")
    assert fuse_affine.counters["fused"] == 1  # fuse-affine rewrote w0 (read from the file)
    untouched = next(t for t in out.graph.initializer if t.name == "w1")
    assert untouched.data_location == onnx.TensorProto.EXTERNAL  # still in the input's data file
    dst = tmp_path / "out.onnx"
    written = io.save_model(out, dst, protect=big)
    assert (tmp_path / "out.onnx.data").stat().st_size >= 3 * DIM * DIM * 4  # the weights; biases inline
    assert written == io.file_size(dst)
    onnx.checker.check_model(str(dst))  # by path
    np.testing.assert_allclose(_run(dst), _run(big), rtol=1e-5, atol=1e-6)
    for t in onnx.load(str(dst), load_external_data=False).graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in t.external_data}
            assert info["location"] == "out.onnx.data" and int(info["offset"]) % 4096 == 0


def test_verification_and_cli_commands(big, tmp_path, capsys):
    _, report = optimize(big, verify=True)
    assert report.verification.ok
    dst = tmp_path / "o.onnx"
    assert main(["optimize", str(big), str(dst), "--verify", "--report", str(tmp_path / "r.json")]) == 0
    assert main(["verify", str(big), str(dst)]) == 0
    assert main(["inspect", str(dst)]) == 0
    assert main(["diff", str(big), str(dst)]) == 0
    assert main(["bench", str(big), str(dst), "--runs", "2", "--warmup", "0"]) == 0
    assert main(["optimize", str(big), str(tmp_path / "k.onnx"), "--passes", "kmeans(bits=4)", "--verify"]) == 0
    err = capsys.readouterr().err
    assert "error" not in err, err


def test_same_model_same_bytes(big, tmp_path):
    out, _ = optimize(big)
    a, b = tmp_path / "a" / "m.onnx", tmp_path / "b" / "m.onnx"
    for p in (a, b):
        p.parent.mkdir()
        io.save_model(out, p)
    assert a.read_bytes() == b.read_bytes()
    assert (a.parent / "m.onnx.data").read_bytes() == (b.parent / "m.onnx.data").read_bytes()


def test_in_memory_model_over_the_limit(big, tmp_path):
    """A ModelProto given to the API (weights in memory) over the limit: sessions and checks go through files."""
    model = onnx.load(str(big))  # weights in memory
    assert not io.on_disk(model) and not io.fits(model)
    out, report = optimize(model, verify=True)
    assert report.serialized is None and report.verification.ok
    dst = tmp_path / "m.onnx"
    io.save_model(out, dst)
    np.testing.assert_allclose(outputs(model, _feeds())["y"], _run(dst), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "link.bin"])
def test_external_data_outside_the_directory_is_refused(big, location):
    outside = big.parent.parent / "outside.bin"
    outside.write_bytes(b"\0" * 100_000)
    (big.parent / "link.bin").symlink_to(outside)
    model = onnx.load(str(big), load_external_data=False)
    for e in model.graph.initializer[0].external_data:
        if e.key == "location":
            e.value = location
    bad = big.parent / "bad.onnx"
    bad.write_bytes(model.SerializeToString())
    with pytest.raises(InputError):
        io.load_model(bad, check=False)


def test_serialization_failures_are_clean_errors(monkeypatch):
    from google.protobuf.message import EncodeError

    class Unserializable:
        graph = onnx.GraphProto()

        def ByteSize(self):
            return 10

        def SerializeToString(self, deterministic=False):
            raise EncodeError("Failed to serialize proto")

    with pytest.raises(io.TooLargeError, match="cannot serialize"):
        io.serialize(Unserializable())
    # onnxruntime sessions and the checker turn it into a one-line input error, not a traceback
    monkeypatch.setattr(io, "serialize", lambda m: Unserializable().SerializeToString())
    from onnxcomp.ort import session

    with pytest.raises(InputError, match="onnxruntime cannot load the model"):
        session(onnx.ModelProto())


def test_read_only_passes_leave_weights_unloaded(big):
    """eliminate's duplicate search and fuse-affine's checks read weights without keeping numpy copies."""
    from onnx_graphsurgeon.ir.tensor import LazyValues

    from onnxcomp.graph import import_model
    from onnxcomp.passes_api import PassContext, get_pass

    graph = import_model(io.normalize(io.load_model(big), copy=False))
    for name in ("eliminate", "fuse-bn", "fuse-affine"):
        get_pass(name)()(graph, PassContext())
    consts = {t.name: t for t in graph.tensors().values() if t.__class__.__name__ == "Constant"}
    assert isinstance(consts["w1"]._values, LazyValues) and isinstance(consts["w2"]._values, LazyValues)


def test_output_whose_data_file_is_the_inputs_weights_is_refused(big, capsys):
    """a.onnx reads model.onnx.data: writing model.onnx (data: model.onnx.data) would overwrite the input."""
    renamed = big.parent / "a.onnx"
    renamed.write_bytes(big.read_bytes())
    before = (big.parent / "model.onnx.data").read_bytes()
    assert main(["optimize", str(renamed), str(big)]) == 2
    assert "holds the input's weights" in capsys.readouterr().err
    assert (big.parent / "model.onnx.data").read_bytes() == before


def test_nonfinite_weights_on_disk_are_reported(big, monkeypatch):
    """NaN/Inf in a weight left in its file are found by a chunked scan (issue 9 item 3), the chunk edges
    included."""
    from onnxcomp import weights

    model = onnx.load(str(big), load_external_data=False)
    w2 = next(t for t in model.graph.initializer if t.name == "w2")
    offset = int({e.key: e.value for e in w2.external_data}["offset"])
    data = big.parent / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    for index, value in ((0, np.nan), (1023, np.inf), (1024, np.nan), (DIM * DIM - 1, -np.inf)):
        raw[offset + 4 * index : offset + 4 * index + 4] = np.float32(value).tobytes()
    data.write_bytes(bytes(raw))
    monkeypatch.setattr(weights, "CHUNK_BYTES", 4096)  # 1024 values a chunk
    _, report = optimize(big)
    assert report.warnings == [f"non-finite weights in the input model: w2 (2 NaN and 2 Inf of {DIM * DIM:,} values)"]


def test_compressed_model_on_disk_is_validated_and_optimized(big, tmp_path, monkeypatch):
    """A com.onnxcomp model whose codes stayed in their file: validated on load (issue 9 item 5) and run
    through the lossless pipeline; onnx's own reader refuses the absolute locations a loaded model holds."""
    out, _ = optimize(big, "kmeans(bits=4)")
    dst = tmp_path / "k" / "k.onnx"
    dst.parent.mkdir()
    io.save_model(out, dst)
    monkeypatch.setattr(io, "PROTO_LIMIT", 6000)  # the graph (~3.6 KB) fits, the graph with its codes does not
    model = io.load_model(dst)
    assert io.on_disk(model)
    assert io.check_compressed_ops(model) is None  # every node checked by content, codes read from the file
    again, report = optimize(dst)
    assert report.warnings == []
    np.testing.assert_allclose(outputs(again, _feeds())["y"], _run(dst), rtol=1e-5, atol=1e-6)
    # codes cut short in the file: an input error on load
    raw = bytearray((dst.parent / "k.onnx.data").read_bytes())
    codes = next(t for t in model.graph.initializer if t.name.endswith("codes"))
    info = {e.key: e.value for e in codes.external_data}
    start, length = int(info["offset"]), int(info["length"])
    (dst.parent / "k.onnx.data").write_bytes(bytes(raw[:start]) + bytes(raw[start : start + length // 2]))
    with pytest.raises(InputError):
        io.load_model(dst)
