"""Model I/O: load (with external data), normalize, infer shapes, check, atomic deterministic save."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxcomp.errors import InputError, UsageError

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

TWO_GB = 2**31 - 1


def load_model(path: str | os.PathLike[str], *, check: bool = True) -> onnx.ModelProto:
    """Load an ONNX file (and its external data) or raise :class:`InputError` with a one-line reason."""
    import onnx
    from google.protobuf.message import DecodeError

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected an .onnx file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: empty file")
    try:
        data = p.read_bytes()
        model = onnx.load_model_from_string(data)
    except (DecodeError, RuntimeError, ValueError, OSError) as err:
        raise InputError(f"{p}: not a valid ONNX model ({_one_line(err)})") from err
    if not model.graph.node and not model.graph.output:
        raise InputError(f"{p}: not a valid ONNX model (no graph: truncated or not ONNX)")
    if check:
        check_model(str(p), str(p))  # onnx checks the file itself: no re-serialization, external data found
    try:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(p.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as err:
        raise InputError(f"{p}: cannot load external data ({_one_line(err)})") from err
    if check:
        check_compressed_ops(model, str(p))
    return model


def as_model(model_or_path: Any) -> onnx.ModelProto:
    """The model of a ModelProto, serialized bytes or a path (:func:`load_model`); com.onnxcomp ops checked."""
    import onnx

    if isinstance(model_or_path, onnx.ModelProto):
        check_compressed_ops(model_or_path)
        return model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        return load_model(model_or_path)
    if isinstance(model_or_path, (bytes, bytearray)):
        m = onnx.ModelProto()
        try:
            m.ParseFromString(bytes(model_or_path))
        except Exception as err:
            raise InputError(f"not a valid ONNX model ({_one_line(err)})") from err
        check_compressed_ops(m)
        return m
    raise UsageError(f"expected an onnx.ModelProto or a path, got {type(model_or_path).__name__}")


def check_model(model: onnx.ModelProto | bytes | str, where: str = "model") -> None:
    """onnx.checker on the model, its serialized bytes (saves serializing it again) or its file path."""
    import onnx

    try:
        if not isinstance(model, (bytes, str)):
            try:
                model = serialize(model)
            except ValueError:  # over protobuf's 2 GB limit: the checker cannot take it in memory
                return
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise InputError(f"{where}: invalid ONNX model ({_one_line(err)})") from err


def check_compressed_ops(model: onnx.ModelProto, where: str = "model") -> None:
    """The native runtime's checks of every com.onnxcomp node (codes, layouts, attributes), as an InputError."""
    from onnxcomp.ops import validate_model

    try:
        validate_model(model)
    except ValueError as err:
        raise InputError(f"{where}: {_one_line(err)}") from err


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] + ("..." if len(text) > 300 else "")


# --------------------------------------------------------------------------------------------- normalize
def normalize(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> onnx.ModelProto:
    """Copy of ``model`` ready for the graph IR.

    - initializers listed as graph inputs (IR < 4 exporters) become plain initializers (IR >= 4);
    - ``--input-shape`` overrides are applied to graph inputs;
    - shapes are inferred (onnx shape inference with data propagation) into value_info.
    Weight subgraphs (Constant, ConstantOfShape, ...) are folded by the pipeline's constant folding.
    """
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name for i in m.graph.initializer}
    if any(i.name in inits for i in m.graph.input):
        kept = [i for i in m.graph.input if i.name not in inits]
        del m.graph.input[:]
        m.graph.input.extend(kept)
        m.ir_version = max(m.ir_version, 4)
    if input_shapes:
        set_input_shapes(m, input_shapes)
    return infer_shapes(m)


def set_input_shapes(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> None:
    names = {i.name: i for i in model.graph.input}
    for name, shape in shapes.items():
        if name not in names:
            raise UsageError(f"--input-shape: model has no input {name!r}; inputs: {', '.join(names)}")
        vi = names[name]
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and len(dims) != len(shape):
            raise UsageError(f"--input-shape {name}: rank {len(shape)} but the model's input has rank {len(dims)}")
        for d, (old, new) in enumerate(zip(list(dims) or [None] * len(shape), shape)):
            # dim_value -1 or 0 (Paddle's and some converters' way of writing a dynamic dim) is dynamic
            if old is not None and old.HasField("dim_value") and old.dim_value > 0 and old.dim_value != new:
                raise UsageError(f"--input-shape {name}: dim {d} is fixed to {old.dim_value} in the model, got {new}")
        del vi.type.tensor_type.shape.dim[:]
        for s in shape:
            vi.type.tensor_type.shape.dim.add().dim_value = int(s)


# Initializers above this many elements are stubbed out for shape inference: only their type and dims matter
# (data propagation reads small shape tensors only), and serializing their values dominated its run time.
_STUB_ELEMENTS = 1024


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx shape inference (with data propagation), written into ``model`` in place; returns it.

    Runs on a weightless skeleton (large main-graph initializers replaced by external-data stubs with their
    names, types and dims), then copies the inferred nodes, value_info and outputs back: the same result
    without copying or serializing the weights, and for models over 2 GB too. Best effort: when inference
    fails the model is returned unchanged (passes that need shapes skip with a reason).
    """
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(
            weightless(model), check_type=False, strict_mode=False, data_prop=True
        )
    except Exception as err:  # onnx raises several exception types here
        logger.warning("shape inference failed: %s", _one_line(err))
        return model
    g, ig = model.graph, inferred.graph
    for field in ("node", "value_info", "output"):
        del getattr(g, field)[:]
        getattr(g, field).extend(getattr(ig, field))
    return model


def weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose large initializers carry no data (stubs with name, type and dims)."""
    import math

    import onnx

    skeleton = onnx.ModelProto()
    _copy_fields(model, skeleton, skip="graph")
    g = skeleton.graph
    _copy_fields(model.graph, g, skip="initializer")
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL or math.prod(t.dims) <= _STUB_ELEMENTS:
            g.initializer.append(t)
            continue
        stub = g.initializer.add()
        stub.name, stub.data_type = t.name, t.data_type
        stub.dims.extend(t.dims)
        stub.data_location = onnx.TensorProto.EXTERNAL
        entry = stub.external_data.add()
        entry.key, entry.value = "location", "onnxcomp-shape-inference-stub"
    return skeleton


def _copy_fields(src: Any, dst: Any, skip: str) -> None:
    """Copy every set field of protobuf message ``src`` into ``dst`` except ``skip``."""
    for field, value in src.ListFields():
        if field.name == skip:
            continue
        if hasattr(value, "extend"):  # repeated field
            getattr(dst, field.name).extend(value)
        elif field.message_type:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def upgrade_opset(
    model: onnx.ModelProto,
    target: int,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = 0,
) -> onnx.ModelProto:
    """The model converted to ai.onnx ``target`` by onnx.version_converter, checked to give identical outputs
    under onnxruntime on generated inputs. Raises ValueError when it cannot be converted losslessly."""
    import numpy as np
    import onnx

    from onnxcomp.calib import generate_inputs
    from onnxcomp.verify import run_model

    try:
        after = onnx.version_converter.convert_version(model, target)
        onnx.checker.check_model(after)
    except Exception as err:  # the converter raises assorted C++ errors
        raise ValueError(" ".join(str(err).split())[:200]) from err
    try:
        feeds = generate_inputs(normalize(model, input_shapes), input_shapes, seed=seed)
        ref, new = run_model(model, feeds), run_model(after, feeds)
    except InputError as err:
        raise ValueError(str(err)) from err
    for name, r in ref.items():
        if not np.array_equal(r, new[name], equal_nan=True):
            raise ValueError(f"output {name!r} changed after conversion")
    return after


def parse_input_shapes(specs: list[str] | None) -> dict[str, tuple[int, ...]]:
    """``["input:1x3x224x224", ...]`` -> ``{"input": (1, 3, 224, 224)}``."""
    from onnxcomp.calib import check_elements

    out: dict[str, tuple[int, ...]] = {}
    for spec in specs or []:
        name, sep, dims = spec.rpartition(":")
        if not sep or not name:
            raise UsageError(f"--input-shape {spec!r}: expected NAME:D1xD2x... (e.g. input:1x3x224x224)")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError as err:
            raise UsageError(f"--input-shape {spec!r}: dimensions must be integers separated by 'x'") from err
        if any(d <= 0 for d in shape):
            raise UsageError(
                f"--input-shape {spec!r}: dimensions must be positive sizes (-1 or 0 cannot keep a dim dynamic: "
                "give the size to use, e.g. 1 for the batch; inputs left out keep their dynamic dims)"
            )
        if name in out:
            raise UsageError(f"--input-shape {spec!r}: input {name!r} is given twice")
        check_elements(shape, f"--input-shape {spec}")
        out[name] = shape
    return out


# ------------------------------------------------------------------------------------------------- save
def serialize(model: onnx.ModelProto) -> bytes:
    """Deterministic bytes (map fields sorted)."""
    return model.SerializeToString(deterministic=True)


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike[str],
    *,
    protect: str | os.PathLike[str] | None = None,
    data: bytes | None = None,
) -> int:
    """Write ``model`` atomically (temp file + rename); external data when over 2 GB. Returns bytes written.

    ``protect``: a path that must not be overwritten (the input model). ``data``: the model already serialized
    with :func:`serialize` (saves serializing it again).
    """

    out = Path(path)
    if protect is not None and _same_file(out, Path(protect)):
        raise UsageError(f"output path {out} is the input file; choose another output path")
    if out.is_dir():
        raise UsageError(f"output path {out} is a directory")
    if not out.parent.exists():
        raise UsageError(f"output directory {out.parent} does not exist")
    if data is None and not _has_external(model):
        try:
            data = serialize(model)
        except ValueError:  # over protobuf's 2 GB limit
            data = None
    if data is None or _has_external(model):
        return _save_external(model, out)
    _atomic_write(out, data)
    return len(data)


def _has_external(model: onnx.ModelProto) -> bool:
    import onnx

    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def _save_external(model: onnx.ModelProto, out: Path) -> int:
    """Weights to ``<out>.data`` (written first, atomically), then the graph file."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    location = out.name + ".data"
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".onnxcomp-") as tmp:
        tmp_model = Path(tmp) / out.name
        onnx.save_model(
            m,
            str(tmp_model),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=location,
            size_threshold=1024,
        )
        data = Path(tmp) / location
        total = tmp_model.stat().st_size
        if data.exists():
            total += data.stat().st_size
            os.replace(data, out.parent / location)
        os.replace(tmp_model, out)
    return total


def _atomic_write(out: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def file_size(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of a model, its external data files included."""
    p = Path(path)
    total = p.stat().st_size
    data = p.parent / (p.name + ".data")
    if data.exists():
        total += data.stat().st_size
    return total
