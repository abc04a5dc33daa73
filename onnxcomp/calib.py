"""Calibration / verification inputs: load .npz/.npy safely, check them against the model, generate inputs,
and capture intermediate activations with onnxruntime."""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from onnxcomp.errors import InputError, UsageError

if TYPE_CHECKING:
    import numpy as np
    import onnx

logger = logging.getLogger(__name__)

# ONNX TensorProto elem_type -> numpy dtype name
_ELEM_DTYPE = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
}


def input_specs(model: onnx.ModelProto) -> dict[str, tuple[str, list[int | str | None]]]:
    """Graph inputs that are not initializers: name -> (dtype, dims with None/str for dynamic)."""
    inits = {i.name for i in model.graph.initializer}
    specs = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dtype = _ELEM_DTYPE.get(tt.elem_type, f"elem_type {tt.elem_type}")
        dims: list[int | str | None] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or None)
        specs[vi.name] = (dtype, dims)
    return specs


def load_arrays(path: str | os.PathLike[str], model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Read ``.npz`` (arrays keyed by input name) or ``.npy`` (single-input models); never unpickles."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such calibration file")
    specs = input_specs(model)
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
            if len(specs) != 1:
                raise InputError(
                    f"{p}: a .npy file feeds single-input models; this model has inputs {', '.join(specs)}: "
                    "use an .npz keyed by input name"
                )
            arrays = {next(iter(specs)): arr}
        else:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
    except InputError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise InputError(f"{p}: cannot read calibration arrays ({' '.join(str(err).split())[:200]})") from err
    return check_arrays(arrays, model, where=str(p))


def check_arrays(
    arrays: Mapping[str, np.ndarray], model: onnx.ModelProto, where: str = "calibration data"
) -> dict[str, np.ndarray]:
    """Every model input present with the right dtype, rank and fixed dims; all share the batch size."""
    import numpy as np

    specs = input_specs(model)
    unknown = sorted(set(arrays) - set(specs))
    if unknown:
        raise InputError(f"{where}: arrays {', '.join(unknown)} match no model input; inputs: {', '.join(specs)}")
    missing = [n for n in specs if n not in arrays]
    if missing:
        raise InputError(f"{where}: missing arrays for model inputs {', '.join(missing)}")
    out = {}
    for name, (dtype, dims) in specs.items():
        a = np.asarray(arrays[name])
        if a.dtype == object:
            raise InputError(f"{where}: array {name!r} has dtype object; numeric arrays only")
        if str(a.dtype) != dtype:
            if dtype == "float32" and a.dtype == np.float64:
                a = a.astype(np.float32)
            else:
                raise InputError(f"{where}: array {name!r} has dtype {a.dtype}, the model expects {dtype}")
        if dims and a.ndim != len(dims):
            raise InputError(
                f"{where}: array {name!r} has shape {a.shape}, the model expects rank {len(dims)} {_fmt(dims)}"
            )
        for i, d in enumerate(dims):
            if isinstance(d, int) and a.shape[i] != d:
                raise InputError(f"{where}: array {name!r} has shape {a.shape}, the model expects {_fmt(dims)}")
        out[name] = np.ascontiguousarray(a)
    return out


def _fmt(dims: list[int | str | None]) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in dims) + "]"


def batches(arrays: Mapping[str, np.ndarray], batch_size: int | None = None) -> list[dict[str, np.ndarray]]:
    """Split along axis 0 when the model's batch dim is dynamic; one batch otherwise."""
    if not arrays:
        return [{}]
    n = min(a.shape[0] if a.ndim else 1 for a in arrays.values())
    if batch_size is None or batch_size >= n:
        return [dict(arrays)]
    return [{k: v[i : i + batch_size] for k, v in arrays.items()} for i in range(0, n, batch_size)]


def generate_inputs(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = 0,
    default_dim: int = 1,
) -> dict[str, np.ndarray]:
    """Random inputs for data-free verification (dynamic dims: ``input_shapes`` or ``default_dim``)."""
    import numpy as np

    if not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(seed)
    out = {}
    for name, (dtype, dims) in input_specs(model).items():
        if input_shapes and name in input_shapes:
            shape = tuple(input_shapes[name])
        else:
            shape = tuple(d if isinstance(d, int) else default_dim for d in dims)
        if dtype.startswith("float"):
            out[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == "bool":
            out[name] = rng.random(shape) < 0.5
        elif dtype.startswith(("int", "uint")):
            out[name] = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            raise InputError(f"cannot generate data for input {name!r} of type {dtype}; pass --calib")
    return out


def first_samples(feeds: Mapping[str, np.ndarray], model: onnx.ModelProto, n: int) -> dict[str, np.ndarray]:
    """The first ``n`` samples of every input whose batch dimension is dynamic; inputs with a fixed batch
    dimension (onnxruntime accepts no other size) and scalars are fed whole."""
    specs = input_specs(model)
    out = {}
    for k, v in feeds.items():
        dims = specs.get(k, (None, []))[1]
        fixed = bool(dims) and isinstance(dims[0], int)
        out[k] = v if fixed or v.ndim == 0 else v[:n]
    return out


def capture_activations(
    model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], names: list[str], max_samples: int | None = None
) -> dict[str, np.ndarray]:
    """Run ``model`` on ``feeds`` (optimizations off) and return the named intermediate tensors."""
    import onnx

    from onnxcomp.ort import run, session

    m = onnx.ModelProto()
    m.CopyFrom(model)
    outs = {o.name for o in m.graph.output}
    for n in names:
        if n not in outs:
            m.graph.output.append(onnx.ValueInfoProto(name=n))
    if max_samples is not None:
        feeds = first_samples(feeds, m, max_samples)
    sess = session(m, optimize=False)
    values = run(sess, dict(feeds), list(names))
    return dict(zip(names, values))
