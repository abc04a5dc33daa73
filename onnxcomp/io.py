"""Model I/O: load (with external data), normalize, infer shapes, check, atomic deterministic save."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxcomp.errors import InputError, UsageError

if TYPE_CHECKING:
    import numpy as np
    import onnx

logger = logging.getLogger(__name__)

# protobuf cannot serialize a message larger than this. A model over it is never serialized whole: it is
# written with external data, one tensor at a time (write_model), and onnxruntime and onnx.checker get its
# path. A module attribute so that tests can lower it and exercise that path with small models.
PROTO_LIMIT = 2**31 - 1
EXTERNAL_THRESHOLD = 1024  # bytes: tensors at least this large go to the external data file
_ALIGN = 4096  # external data offsets are page-aligned (onnxruntime can map them)


class TooLargeError(ValueError):
    """The model is over PROTO_LIMIT: it cannot be serialized in memory."""


def load_model(path: str | os.PathLike[str], *, check: bool = True, weights: bool = True) -> onnx.ModelProto:
    """Load an ONNX file (and its external data) or raise :class:`InputError` with a one-line reason.

    ``weights=False``: external data is not read (the initializers keep their names, types and dims: enough
    for the cost model, and fast for models of several GB).
    """
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
    if not weights or model.ByteSize() + _external_bytes(model) > PROTO_LIMIT:
        if weights:  # over protobuf's limit once loaded: the weights stay in their files (see on_disk)
            _pin_external(model, p.parent)
        if check and not _has_external(model):  # every weight is in the file: the com.onnxcomp checks can run
            check_compressed_ops(model, str(p))
        return model
    try:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(p.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as err:
        raise InputError(f"{p}: cannot load external data ({_one_line(err)})") from err
    if check:
        check_compressed_ops(model, str(p))
    return model


def _external_bytes(model: onnx.ModelProto) -> int:
    """Bytes the main graph's external initializers declare (their 'length' entries, else their dims)."""
    import math

    import onnx

    total = 0
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in t.external_data}
            try:
                total += int(info["length"]) if "length" in info else math.prod(t.dims) * 4
            except ValueError:
                continue  # a bad length entry: the check on opening it says so
    return total


def _pin_external(model: onnx.ModelProto, base: Path) -> None:
    """Leave external weights on disk: each location becomes the absolute path of its file, after the same
    checks as loading it (inside the model's directory, no link, no '..', the data within the file)."""
    import onnx

    root = base.resolve()
    for t in model.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        where = f"{base / (info.get('location') or '?')}: tensor {t.name!r}"
        location = info.get("location", "")
        parts = Path(location).parts
        if not location or Path(location).is_absolute() or ".." in parts:
            raise InputError(f"{where}: external data must be a relative path inside the model's directory")
        full = base / location
        if any((base / Path(*parts[: i + 1])).is_symlink() for i in range(len(parts))):
            raise InputError(f"{where}: external data must not be a symbolic link")
        real = full.resolve()
        if root not in real.parents or not real.is_file():
            raise InputError(f"{where}: external data file not found inside the model's directory")
        try:
            offset, length = int(info.get("offset", 0)), info.get("length")
            size = real.stat().st_size
            if offset < 0 or offset > size or (length is not None and (int(length) < 0 or offset + int(length) > size)):
                raise InputError(f"{where}: external data range is outside the file ({size:,} bytes)")
        except ValueError as err:
            raise InputError(f"{where}: bad external data offset/length") from err
        for e in t.external_data:
            if e.key == "location":
                e.value = str(real)


def tensor_values(t: onnx.TensorProto) -> np.ndarray:
    """A tensor's values, read from its file when its data stayed on disk (a model over 2 GB: its external
    locations are absolute paths, checked on load by :func:`load_model`; onnx's own reader refuses those)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    if t.data_location != onnx.TensorProto.EXTERNAL:
        return numpy_helper.to_array(t)
    info = {e.key: e.value for e in t.external_data}
    with open(info["location"], "rb") as f:
        f.seek(int(info.get("offset", 0)))
        data = f.read(int(info["length"])) if "length" in info else f.read()
    inline = onnx.TensorProto()
    inline.data_type = t.data_type
    inline.dims.extend(t.dims)
    inline.name = t.name
    inline.raw_data = data
    return np.array(numpy_helper.to_array(inline))


def on_disk(model: onnx.ModelProto) -> bool:
    """True when some main-graph initializer is not in memory but in a file (a model over protobuf's limit,
    loaded by :func:`load_model`): such a model goes to onnxruntime and onnx.checker as a file, never as bytes."""
    return _has_external(model)


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
    """onnx.checker on the model, its serialized bytes (saves serializing it again) or its file path.

    A model over PROTO_LIMIT is written to a temporary file with external data and checked by path.
    """
    import onnx

    if not isinstance(model, (bytes, str)):
        try:
            model = serialize(model)
        except TooLargeError:
            with model_file(model) as path:
                check_model(str(path), where)
            return
    try:
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
def normalize(
    model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]] | None = None, *, copy: bool = True
) -> onnx.ModelProto:
    """Copy of ``model`` (``copy=False``: ``model`` itself, changed in place) ready for the graph IR.

    - initializers listed as graph inputs (IR < 4 exporters) become plain initializers (IR >= 4);
    - ``--input-shape`` overrides are applied to graph inputs;
    - shapes are inferred (onnx shape inference with data propagation) into value_info;
    - the structure is checked (:mod:`onnxcomp.validate`): an invalid model is an :class:`InputError`.
    Weight subgraphs (Constant, ConstantOfShape, ...) are folded by the pipeline's constant folding.
    ``copy=False`` is for a model the caller owns (loaded from a file): no second copy of the weights.
    """
    import onnx

    from onnxcomp.validate import validate

    if copy:
        m = onnx.ModelProto()
        m.CopyFrom(model)
    else:
        m = model
    inits = {i.name for i in m.graph.initializer}
    if any(i.name in inits for i in m.graph.input):
        kept = [i for i in m.graph.input if i.name not in inits]
        del m.graph.input[:]
        m.graph.input.extend(kept)
        m.ir_version = max(m.ir_version, 4)
    if input_shapes:
        set_input_shapes(m, input_shapes)
    infer_shapes(m)
    validate(m)  # what the checker and shape inference let through (a Conv whose group does not fit)
    return m


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


def infer_shapes(model: onnx.ModelProto, data_prop: bool = True) -> onnx.ModelProto:
    """onnx shape inference (with data propagation unless ``data_prop`` is False), written into ``model`` in place;
    returns it.

    Runs on a weightless skeleton (large main-graph initializers replaced by external-data stubs with their
    names, types and dims), then copies the inferred nodes, value_info and outputs back: the same result
    without copying or serializing the weights, and for models over 2 GB too. Best effort: when inference
    fails the model is returned unchanged (passes that need shapes skip with a reason).
    """
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(
            weightless(model), check_type=False, strict_mode=False, data_prop=data_prop
        )
    except Exception as err:  # onnx raises several exception types here
        logger.warning("shape inference failed: %s", _one_line(err))
        return model
    g, ig = model.graph, inferred.graph
    for field in ("node", "value_info", "output"):
        del getattr(g, field)[:]
        getattr(g, field).extend(getattr(ig, field))
    return model


def strip_value_info(graph: onnx.GraphProto) -> None:
    """Delete the value_info of ``graph`` and of every If / Loop / Scan body in it, in place."""
    stack = [graph]
    while stack:
        g = stack.pop()
        del g.value_info[:]
        for node in g.node:
            for a in node.attribute:
                if a.HasField("g"):
                    stack.append(a.g)
                stack.extend(a.graphs)


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
    """The model converted to ai.onnx ``target`` by onnx.version_converter, checked to give the same outputs
    under onnxruntime on generated inputs (within float rounding, as lossless passes). Raises ValueError when it
    cannot be converted losslessly."""
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
        if np.array_equal(r, new[name], equal_nan=True):
            continue
        # within float rounding, as lossless passes are verified (onnxcomp.verify.Tolerance.lossless): a float16
        # model's kernels may round differently after conversion (PP-OCRv5's detector in float16: 2e-7)
        a, b = np.asarray(r, np.float64), np.asarray(new[name], np.float64)
        finite = np.isfinite(a)
        top = float(np.max(np.abs(a[finite]), initial=0.0))
        same_specials = np.array_equal(a[~finite], b[~finite], equal_nan=True)
        if (
            r.dtype.kind != "f"
            or not same_specials
            or np.any(np.abs(a[finite] - b[finite]) > 1e-5 * max(1.0, top) + 1e-4 * top)
        ):
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
def fits(model: onnx.ModelProto) -> bool:
    """True when the model can be serialized in memory (at most PROTO_LIMIT bytes; ByteSize reads no data)."""
    return model.ByteSize() <= PROTO_LIMIT


def serialize(model: onnx.ModelProto) -> bytes:
    """Deterministic bytes (map fields sorted).

    :class:`TooLargeError` for a model over PROTO_LIMIT, or whose weights are left in their files
    (:func:`on_disk`): such a model is written with :func:`write_model` (or :func:`model_file`) instead.
    """
    if on_disk(model):
        raise TooLargeError("the model's weights are in their files (a model over 2 GB): written with external data")
    return _to_bytes(model)


def _to_bytes(model: onnx.ModelProto) -> bytes:
    from google.protobuf.message import EncodeError

    if not fits(model):
        raise TooLargeError(f"the model is {model.ByteSize():,} bytes, over protobuf's limit of {PROTO_LIMIT:,}")
    try:
        return model.SerializeToString(deterministic=True)
    except (EncodeError, ValueError) as err:  # protobuf 7 (upb) raises EncodeError, older ones ValueError
        raise TooLargeError(f"protobuf cannot serialize the model ({_one_line(err)})") from err


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
    check_writable(out, "output path")
    data_file = out.parent / (out.name + ".data")
    if data_file.exists() and any(_same_file(data_file, f) for f in _external_files(model)):
        raise UsageError(f"output path {out}: its data file {data_file.name} holds the input's weights")
    if data is None and not _has_external(model):
        try:
            data = serialize(model)
        except TooLargeError:
            data = None
    if data is None or _has_external(model):
        return save_external(model, out)
    atomic_write(out, data)
    return len(data)


def _external_files(model: onnx.ModelProto) -> set[Path]:
    """The files the model's external initializers are read from (absolute locations only)."""
    import onnx

    files = set()
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in t.external_data if e.key == "location"), "")
            if location and Path(location).is_absolute():
                files.add(Path(location))
    return files


def _has_external(model: onnx.ModelProto) -> bool:
    import onnx

    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def save_external(model: onnx.ModelProto, out: Path) -> int:
    """Weights to ``<out>.data`` (written first, atomically), then the graph file."""
    try:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".onnxcomp-") as tmp:
            tmp_model = Path(tmp) / out.name
            total = write_model(model, tmp_model)  # plain open()s: the files get 0666 & ~umask
            data = Path(tmp) / (out.name + ".data")
            if data.exists():
                os.replace(data, out.parent / data.name)
            os.replace(tmp_model, out)
    except OSError as err:
        raise UsageError(f"cannot write {out} ({err.strerror or err})") from err
    return total


def write_model(model: onnx.ModelProto, path: Path, *, base_dir: Path | None = None, refer: bool = False) -> int:
    """Write ``model`` to ``path`` with its large main-graph initializers in ``<path>.data``; returns bytes.

    One tensor at a time: the model is never serialized whole, neither copied nor changed (unlike
    ``onnx.save_model(save_as_external_data=True)``, which moves the data out of the model it is given).
    Initializers of at least EXTERNAL_THRESHOLD bytes go to the data file, in graph order, at page-aligned
    offsets; the rest stays in the graph file. Tensors already stored externally (a model loaded without its
    weights) are copied from their files under ``base_dir``. Deterministic: the same model, the same bytes.
    ``refer=True`` (a temporary file for onnxruntime or the checker): external tensors whose file is in
    ``path``'s directory are referred to where they are, not copied.
    """
    import onnx

    here = path.parent.resolve()
    links = {str(f): f.name for f in _external_files(model) if f.parent == here} if refer else {}
    skeleton = onnx.ModelProto()
    _copy_fields(model, skeleton, skip="graph")
    _copy_fields(model.graph, skeleton.graph, skip="initializer")
    data_name = path.name + ".data"
    written = 0
    with open(path.parent / data_name, "wb") as f:
        for t in model.graph.initializer:
            external = t.data_location == onnx.TensorProto.EXTERNAL
            if not external and _data_bytes(t) < EXTERNAL_THRESHOLD:
                skeleton.graph.initializer.append(t)
                continue
            linked = (
                links.get(next((e.value for e in t.external_data if e.key == "location"), "")) if external else None
            )
            if linked is not None:  # same bytes, same offsets, in the file beside the model
                stub = skeleton.graph.initializer.add()
                stub.CopyFrom(t)
                for e in stub.external_data:
                    if e.key == "location":
                        e.value = linked
                continue
            f.write(b"\0" * ((-f.tell()) % _ALIGN))
            offset = f.tell()
            if external:
                _copy_external(t, base_dir, f)
            else:
                f.write(_tensor_bytes(t))
            stub = skeleton.graph.initializer.add()
            for field, value in t.ListFields():  # everything but the data
                if field.name in _META_FIELDS:
                    if hasattr(value, "extend"):
                        getattr(stub, field.name).extend(value)
                    else:
                        setattr(stub, field.name, value)
            stub.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(f.tell() - offset))):
                entry = stub.external_data.add()
                entry.key, entry.value = key, value
        written = f.tell()
    if written == 0:
        (path.parent / data_name).unlink()
    graph_bytes = _to_bytes(skeleton)
    path.write_bytes(graph_bytes)
    return len(graph_bytes) + written


_META_FIELDS = ("name", "dims", "data_type", "doc_string", "metadata_props")


def _data_bytes(t: onnx.TensorProto) -> int:
    """Bytes of a tensor's data, from its fields' sizes (no copy)."""
    return t.ByteSize()


def _tensor_bytes(t: onnx.TensorProto) -> bytes:
    """The tensor's data as raw little-endian bytes (what an external data file holds)."""
    if t.HasField("raw_data"):
        return t.raw_data
    from onnx import numpy_helper

    return numpy_helper.to_array(t).tobytes()


def _copy_external(t: onnx.TensorProto, base_dir: Path | None, f: Any) -> None:
    """Append an externally stored tensor's bytes to ``f``, in chunks: from its absolute location (a model
    loaded by :func:`load_model` with its weights left on disk) or from under ``base_dir``."""
    info = {e.key: e.value for e in t.external_data}
    location = info.get("location")
    if location and Path(location).is_absolute():
        src = Path(location)
    elif base_dir is not None and location:
        src = (base_dir / location).resolve()
        if base_dir.resolve() not in src.parents:
            raise InputError(f"tensor {t.name!r}: external data {location!r} is outside the model's directory")
    else:
        raise InputError(f"tensor {t.name!r}: external data without a location to copy it from")
    offset, length = int(info.get("offset", 0)), info.get("length")
    with open(src, "rb") as g:
        g.seek(offset)
        left = int(length) if length is not None else None
        while left is None or left > 0:
            chunk = g.read(1 << 24 if left is None else min(1 << 24, left))
            if not chunk:
                break
            f.write(chunk)
            if left is not None:
                left -= len(chunk)


@contextlib.contextmanager
def model_file(model: onnx.ModelProto) -> Iterator[Path]:
    """A temporary copy of ``model`` on disk (external data: no whole serialization), removed afterwards.

    What onnxruntime and onnx.checker get for a model over PROTO_LIMIT: a path, not bytes. A model whose
    weights are in their files is written (when that directory is writable) as a hidden graph file beside
    them that refers to them, with only the weights the passes changed in its own data file: no copy of
    gigabytes of unchanged weights (relative locations in the model's directory are what onnxruntime and
    the checker accept).
    """
    files = _external_files(model)
    where = next(iter(files)).parent if len({f.parent for f in files}) == 1 else None
    if where is not None and os.access(where, os.W_OK):
        fd, name = tempfile.mkstemp(dir=where, prefix=".onnxcomp-check-", suffix=".onnx")
        os.close(fd)
        path = Path(name)
        try:
            write_model(model, path, refer=True)
            yield path
        finally:
            path.unlink(missing_ok=True)
            (path.parent / (path.name + ".data")).unlink(missing_ok=True)
        return
    with tempfile.TemporaryDirectory(prefix="onnxcomp-model-") as tmp:
        path = Path(tmp) / "model.onnx"
        write_model(model, path)
        yield path


def atomic_write(out: Path, data: bytes) -> None:
    """Write ``data`` to ``out`` through a temp file and a rename (readers see the old file or the new one, never a
    partial one), with the mode a plain write would give (0666 less the umask; mkstemp creates 0600). OSError
    becomes a one-line UsageError."""
    try:
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as err:
        raise UsageError(f"cannot write {out} ({err.strerror or err})") from err
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise UsageError(f"cannot write {out} ({err.strerror or err})") from err
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_writable(path: Path, what: str) -> None:
    """UsageError, before any work, when ``path`` cannot be written: a directory, a parent that is missing or
    not a directory, or a directory where no file can be created (read-only, immutable, /proc)."""
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory")
    parent = path.parent
    if not parent.exists():
        raise UsageError(f"{what}: directory {parent} does not exist")
    if not parent.is_dir():
        raise UsageError(f"{what}: {parent} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UsageError(f"{what}: cannot write in {parent} ({err.strerror or err})") from err


def remove_model(path: str | os.PathLike[str]) -> None:
    """Delete a model written by :func:`save_model` and its external data file (missing files are fine)."""
    p = Path(path)
    for f in (p, p.parent / (p.name + ".data")):
        with contextlib.suppress(FileNotFoundError):
            f.unlink()


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
