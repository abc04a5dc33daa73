"""Calibration / verification inputs: load .npz/.npy safely, check them against the model, generate inputs,
and capture intermediate activations with onnxruntime."""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from onnxcomp.errors import InputError, UsageError
from onnxcomp.graph import fresh_name

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

# (model input type, sample type) pairs cast on load: samples computed in a wider float type than the model's
FLOAT_NARROWING = {("float32", "float64"), ("float16", "float32"), ("float16", "float64")}


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


def stacked_batches(arrays: Mapping[str, np.ndarray], dims: Mapping[str, list[int | str | None]]) -> int:
    """How many batches of a fixed-batch model the arrays stack along axis 0: k >= 2 where every input of rank
    >= 1 has a fixed leading dim b_i (a model exported at batch 1, as most are) and its array holds k * b_i rows,
    or exactly its fixed shape (fed whole to every batch, as a state or a table), at least one stacking; else 1.
    Such arrays are run one batch at a time (:func:`onnxcomp.ort.run`) and the results concatenated on axis 0."""
    k = 1
    for name, d in dims.items():
        a = arrays.get(name)
        if not d or a is None or not a.ndim:
            continue
        b = d[0]
        if not isinstance(b, int) or a.ndim != len(d) or a.shape[0] % b:
            return 1
        n = a.shape[0] // b
        if n == 1 and tuple(a.shape) == tuple(d):
            continue
        if k not in (1, n):
            return 1
        k = n
    return k


def stacking(arrays: Mapping[str, np.ndarray], dims: Mapping[str, list[int | str | None]], k: int) -> dict[str, int]:
    """The inputs that stack ``k`` >= 2 batches (:func:`stacked_batches`) -> their fixed batch size; the others
    go whole to every batch."""
    out = {}
    for name, a in arrays.items():
        d = dims.get(name)
        if d and getattr(a, "ndim", 0) and isinstance(d[0], int) and a.shape[0] == k * d[0]:
            out[name] = d[0]
    return out


def split_batches(
    arrays: Mapping[str, np.ndarray], dims: Mapping[str, list[int | str | None]], k: int
) -> list[dict[str, np.ndarray]]:
    """The ``k`` batches of arrays stacked for a fixed-batch model (:func:`stacked_batches`)."""
    rows = stacking(arrays, dims, k)
    return [
        {name: a[i * rows[name] : (i + 1) * rows[name]] if name in rows else a for name, a in arrays.items()}
        for i in range(k)
    ]


def load_arrays(path: str | os.PathLike[str], model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Read ``.npz`` (arrays keyed by input name) or ``.npy`` (single-input models); never unpickles.

    The file is recognized by its content (numpy's magic or a zip archive), and every array header is checked
    against the bytes that really follow it before anything is allocated (a header may claim terabytes).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such calibration file")
    specs = input_specs(model)
    try:
        with open(p, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            if len(specs) != 1:
                raise InputError(
                    f"{p}: a .npy file feeds single-input models; this model has inputs {', '.join(specs)}: "
                    "use an .npz keyed by input name"
                )
            with open(p, "rb") as f:
                arrays = {next(iter(specs)): _read_npy(f, p.stat().st_size)}
        elif magic.startswith(b"PK"):
            arrays = _read_npz(p)
        else:
            raise InputError(f"{p}: not a .npy or .npz file (write calibration data with numpy.save or numpy.savez)")
    except InputError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, MemoryError) as err:
        raise InputError(f"{p}: cannot read calibration arrays ({' '.join(str(err).split())[:200]})") from err
    return check_arrays(arrays, model, where=str(p))


def _read_npy(f: BinaryIO, size: int, what: str = "") -> np.ndarray:
    """One array from an open .npy stream holding ``size`` bytes, its header checked before allocating
    (ValueError when it claims more bytes than follow it, or holds Python objects)."""
    import math

    import numpy as np

    fmt = np.lib.format
    start = f.tell()
    version = fmt.read_magic(f)
    if version == (1, 0):
        shape, _fortran, dtype = fmt.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _fortran, dtype = fmt.read_array_header_2_0(f)
    else:
        shape, _fortran, dtype = fmt._read_array_header(f, version)  # 3.0 (utf-8 names): no public reader
    name = f" array {what!r}" if what else ""
    if dtype.hasobject:
        raise ValueError(f"array{name} holds Python objects (dtype {dtype}); onnxcomp loads numeric arrays only")
    need = math.prod(shape) * dtype.itemsize
    have = size - (f.tell() - start)
    if need > have:
        raise ValueError(
            f"array{name}: its header claims shape {tuple(shape)} {dtype} ({need:,} bytes) but the file holds "
            f"{max(have, 0):,} bytes after it (truncated or corrupt)"
        )
    f.seek(start)
    return np.lib.format.read_array(f, allow_pickle=False)


def _read_npz(p: Path) -> dict[str, np.ndarray]:
    arrays = {}
    with zipfile.ZipFile(p) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"member {info.filename!r} is not a .npy array (not an .npz of arrays?)")
            with z.open(info) as f:
                arrays[info.filename[:-4]] = _read_npy(f, info.file_size, info.filename[:-4])
    return arrays


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
    from onnxcomp.weights import all_finite

    out = {}
    batch: dict[str, int] = {}
    # a model of fixed batch size (exported at batch 1): samples stacked on axis 0 are run one batch at a time
    stacked = stacked_batches(arrays, {k: d for k, (_, d) in specs.items()})
    for name, (dtype, dims) in specs.items():
        a = np.asarray(arrays[name])
        if a.dtype == object:
            raise InputError(f"{where}: array {name!r} has dtype object; numeric arrays only")
        if a.ndim and a.shape[0] == 0:
            raise InputError(f"{where}: array {name!r} has no samples (shape {a.shape})")
        if a.dtype.kind in "fc" and not all_finite(a):
            bad = int((~np.isfinite(a)).sum())
            raise InputError(f"{where}: array {name!r} holds {bad} NaN/Inf values; calibration data must be finite")
        if dims and a.ndim and not isinstance(dims[0], int):
            batch[name] = int(a.shape[0])
        if str(a.dtype) != dtype:
            if (dtype, str(a.dtype)) in FLOAT_NARROWING:
                # what the user's pipeline computes in float32 / float64 goes to the model in its float type
                with np.errstate(over="ignore", invalid="ignore"):
                    a = a.astype(dtype)
                    if not all_finite(a):
                        raise InputError(
                            f"{where}: array {name!r} has values beyond the range of {dtype}, the input's type"
                        )
            else:
                raise InputError(f"{where}: array {name!r} has dtype {a.dtype}, the model expects {dtype}")
        if dims and a.ndim != len(dims):
            raise InputError(
                f"{where}: array {name!r} has shape {a.shape}, the model expects rank {len(dims)} {_fmt(dims)}"
            )
        for i, d in enumerate(dims):
            if isinstance(d, int) and a.shape[i] != d and not (i == 0 and stacked > 1 and a.shape[0] == stacked * d):
                hint = ""
                if i == 0 and all(isinstance(x[1][0], int) for x in specs.values() if x[1]):
                    hint = (
                        f" (its batch is fixed: stack samples as a multiple of {d} rows, the same number of "
                        "batches for every input, or give an input its exact shape to feed it to every batch)"
                    )
                raise InputError(f"{where}: array {name!r} has shape {a.shape}, the model expects {_fmt(dims)}{hint}")
        out[name] = np.ascontiguousarray(a)
    if len(set(batch.values())) > 1:
        sizes = ", ".join(f"{k}: {v}" for k, v in batch.items())
        raise InputError(f"{where}: the arrays have different numbers of samples ({sizes})")
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
    default_dim: int | None = None,
) -> dict[str, np.ndarray]:
    """Random inputs for data-free verification and benchmarks.

    Dynamic dims come from ``input_shapes``, else from :func:`onnxcomp.shapes.resolve` (the model's own
    records and the documented, announced defaults); a dim nothing sizes is an :class:`InputError` naming it.
    ``default_dim`` (tests, internal checks) sizes every remaining dynamic dim instead.
    """
    import numpy as np

    from onnxcomp import shapes as shp

    if not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(seed)
    specs = input_specs(model)
    if default_dim is None:
        sized = shp.resolve(model, input_shapes).shapes()
    else:
        given = input_shapes or {}
        sized = {
            name: tuple(given[name]) if name in given else tuple(d if isinstance(d, int) else default_dim for d in dims)
            for name, (_, dims) in specs.items()
        }
    out = {}
    for name, (dtype, _) in specs.items():
        shape = sized[name]
        check_elements(shape, f"input {name!r}")
        if dtype.startswith("float"):
            out[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == "bool":
            out[name] = rng.random(shape) < 0.5
        elif dtype.startswith(("int", "uint")):
            out[name] = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            raise InputError(f"cannot generate data for input {name!r} of type {dtype}; pass --calib")
    return out


# Generated inputs larger than this are refused before allocating (a typo such as 1x3x224000x224000).
MAX_GENERATED_ELEMENTS = 1 << 31


def check_elements(shape: tuple[int, ...], what: str) -> None:
    """UsageError when ``shape`` holds more than :data:`MAX_GENERATED_ELEMENTS` elements."""
    import math

    n = math.prod(shape)
    if n > MAX_GENERATED_ELEMENTS:
        raise UsageError(
            f"{what}: shape {'x'.join(map(str, shape))} has {n:.3g} elements, more than onnxcomp generates "
            f"({MAX_GENERATED_ELEMENTS:.3g}); use smaller dims (--input-shape) or pass the data (--calib)"
        )


def first_samples(feeds: Mapping[str, np.ndarray], model: onnx.ModelProto, n: int) -> dict[str, np.ndarray]:
    """The first ``n`` samples of every input, along its sample axis (:func:`sample_axes`); inputs without one
    (a fixed batch dimension, which onnxruntime accepts at no other size, and scalars) are fed whole."""
    out = dict(feeds)
    dims = {k: d for k, (_, d) in input_specs(model).items()}
    stacked = stacked_batches(feeds, dims)
    if stacked > 1:
        # a fixed-batch model: whole batches, the first ceil(n / b) of them (b: the first stacking input's batch)
        rows = stacking(feeds, dims, stacked)
        keep = max(1, -(-n // next(iter(rows.values()))))
        return {k: v[: keep * rows[k]] if k in rows else v for k, v in feeds.items()}
    for k, axis in sample_axes(feeds, model).items():
        v = feeds[k]
        if axis is not None and v.shape[axis] > n:
            out[k] = v[(slice(None),) * axis + (slice(0, n),)]
    return out


def sample_axes(feeds: Mapping[str, np.ndarray], model: onnx.ModelProto) -> dict[str, int | None]:
    """Per input, the axis that holds the calibration samples, or None.

    The number of samples N is the commonest size of the inputs' leading axes where those are dynamic. An input's
    sample axis is its first dynamic axis of size N: axis 0 for most, axis 1 for a recurrent state fed as
    [layers, batch, hidden] (Silero VAD's ``state`` [2, N, 128] next to ``input`` [N, 576]).
    """
    specs = input_specs(model)
    dims = {k: d for k, (_, d) in specs.items()}
    stacked = stacked_batches(feeds, dims)
    if stacked > 1:  # a fixed-batch model's stacked batches: axis 0 of the inputs that stack them
        rows = stacking(feeds, dims, stacked)
        return {k: 0 if k in rows else None for k in feeds}
    count = sample_count(feeds, model)
    if count is None:
        return {k: None for k in feeds}
    return {
        k: next((a for a in range(v.ndim) if v.shape[a] == count and _dynamic(specs, k, a)), None)
        for k, v in feeds.items()
    }


def sample_count(feeds: Mapping[str, np.ndarray], model: onnx.ModelProto) -> int | None:
    """The number of calibration samples N (see :func:`sample_axes`), or None when no input has a dynamic
    leading axis."""
    specs = input_specs(model)
    leading = [v.shape[0] for k, v in feeds.items() if v.ndim and _dynamic(specs, k, 0)]
    if not leading:
        dims = {k: d for k, (_, d) in specs.items()}
        stacked = stacked_batches(feeds, dims)
        if stacked > 1:  # samples of a fixed-batch model, stacked batch by batch
            return feeds[next(iter(stacking(feeds, dims, stacked)))].shape[0]
    return max(sorted(set(leading)), key=leading.count) if leading else None


def _dynamic(specs: Mapping[str, tuple[str, list[int | str | None]]], name: str, axis: int) -> bool:
    dims = specs.get(name, (None, []))[1]
    return not (axis < len(dims) and isinstance(dims[axis], int))


# onnxruntime's graph optimizations while capturing: calibration statistics are not a verification, and the
# optimized session runs the calibration data faster (one setting for every pass that captures)
CAPTURE_OPTIMIZE = False


class Capture:
    """A session of ``model`` with the named intermediate tensors as extra outputs, to run on calibration data
    as often as needed. The model's value_info is dropped (onnxruntime infers the shapes): a graph being
    rewritten may carry stale ones.

    Tensors computed inside control flow are wired out of it (:func:`_wire_out`):
    - inside If branches (nested Ifs included; Silero VAD keeps its layers in the branches of an If on the
      sample rate): its branch outputs it, the other branch an empty tensor, the If an extra output. On data
      that takes the other branch it has no value and is left out of the result.
    - inside a Loop or Scan body (nested ones included, and If branches around them): an extra scan output of
      the body stacks its value of every iteration; the result merges the iterations into the leading (batch)
      axis, [trips * N, ...]. When its shape changes from one iteration to the next (onnxruntime cannot stack
      it) the session is rebuilt without these and they are left out (:attr:`unreachable`).
    """

    def __init__(self, model: onnx.ModelProto, names: list[str], loops: bool = True) -> None:
        import onnx

        from onnxcomp.ort import session

        self._source, self._names = model, list(names)
        m = onnx.ModelProto()
        m.CopyFrom(model)
        del m.graph.value_info[:]
        have = {o.name for o in m.graph.output}
        self.aliases: dict[str, tuple[str, int]] = {}  # a body tensor -> (main-graph output, iteration axes)
        self.unreachable: set[str] = set()
        main = {o for n in m.graph.node for o in n.output} | {i.name for i in m.graph.input}
        main |= {i.name for i in m.graph.initializer}
        taken = _all_names(m.graph)
        for name in dict.fromkeys(names):
            if name in have:
                continue
            if name not in main and name in taken:
                wired = _wire_out(m.graph, name, taken, loops)
                if wired is None:
                    self.unreachable.add(name)
                    continue
                self.aliases[name] = wired
                name = wired[0]
            m.graph.output.append(onnx.ValueInfoProto(name=name))
            have.add(name)
        self.model = m
        try:
            self.session = session(m, optimize=CAPTURE_OPTIMIZE)
        except InputError:
            if not any(steps for _, steps in self.aliases.values()):
                raise
            logger.info("capture: onnxruntime refused the loop bodies' extra outputs; captured without them")
            self.__dict__.update(Capture(model, names, loops=False).__dict__)

    def run(
        self, feeds: Mapping[str, np.ndarray], names: list[str], max_samples: int | None = None
    ) -> dict[str, np.ndarray]:
        """The named tensors on ``feeds`` (the first ``max_samples`` samples of them); tensors of an If branch
        the data did not take, and :attr:`unreachable` ones, are left out."""
        from onnxcomp.ort import run

        if max_samples is not None:
            feeds = first_samples(feeds, self.model, max_samples)
        names = [n for n in dict.fromkeys(names) if n not in self.unreachable]
        wanted = [self.aliases[n][0] if n in self.aliases else n for n in names]
        try:
            values = run(self.session, dict(feeds), wanted)
        except InputError:
            if not any(steps for _, steps in self.aliases.values()):
                raise
            # a Loop / Scan body tensor whose shape varies over the iterations: captured without those
            logger.info("capture: a loop body tensor changes shape over its iterations; left out")
            fallback = Capture(self._source, self._names, loops=False)
            self.__dict__.update(fallback.__dict__)
            return self.run(feeds, names, None)
        from onnxcomp.ort import Ragged

        out = {}
        for n, v in zip(names, values, strict=True):
            if isinstance(v, Ragged):
                raise InputError(
                    f"calibration: tensor {n!r} changes shape from one batch of the stacked samples to the next "
                    f"({', '.join(str(tuple(p.shape)) for p in v[:3])}); give samples of one shape"
                )
            steps = self.aliases[n][1] if n in self.aliases else 0
            if n in self.aliases and not v.size:
                continue  # the empty tensor of the branch not taken (or a loop of no iteration)
            out[n] = v.reshape((-1, *v.shape[steps + 1 :])) if steps and v.ndim > steps else v
        return out


def _all_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor and node name of a graph and of its bodies."""
    names: set[str] = set()
    stack = [graph]
    while stack:
        g = stack.pop()
        names.update(i.name for i in g.input)
        names.update(i.name for i in g.initializer)
        for node in g.node:
            names.update(node.output)
            names.add(node.name)
            for a in node.attribute:
                stack.extend([a.g] if a.HasField("g") else list(a.graphs))
    return names


def _wire_out(graph: onnx.GraphProto, name: str, taken: set[str], loops: bool = True) -> tuple[str, int] | None:
    """Make ``name``, a tensor of a body nested in ``graph``, an output of the control-flow node in ``graph``
    holding it (see :class:`Capture`); returns (its name in ``graph``, the iteration axes stacked in front of
    its value), or None when it cannot be reached (``loops=False``: inside a Loop / Scan body)."""
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "If":
            wired = _wire_out_of_if(node, name, taken, loops)
        elif node.op_type in ("Loop", "Scan") and loops:
            wired = _wire_out_of_loop(node, name, taken)
        else:
            continue
        if wired is not None:
            return wired
    return None


def _defines(body: onnx.GraphProto, name: str) -> bool:
    return any(name in n.output for n in body.node) or any(i.name == name for i in body.input)


def _elem_type(body: onnx.GraphProto, name: str) -> int:
    import onnx

    elem = next((v.type.tensor_type.elem_type for v in [*body.value_info, *body.input] if v.name == name), 0)
    return elem or onnx.TensorProto.FLOAT  # the inputs of weighted layers are float


def _wire_out_of_if(node: onnx.NodeProto, name: str, taken: set[str], loops: bool) -> tuple[str, int] | None:
    import onnx

    branches = {a.name: a.g for a in node.attribute if a.name in ("then_branch", "else_branch")}
    for attr, body in branches.items():
        inner = (name, 0) if _defines(body, name) else _wire_out(body, name, taken, loops)
        if inner is None:
            continue
        outs = [o.name for o in body.output]
        if inner[0] in outs:  # already a branch output: the If's output at that position carries it
            at = outs.index(inner[0])
            return (node.output[at], inner[1]) if at < len(node.output) and node.output[at] else None
        elem = _elem_type(body, inner[0])
        other = branches["else_branch" if attr == "then_branch" else "then_branch"]
        empty = fresh_name(f"{name}_not_taken", taken)
        value = onnx.helper.make_tensor(empty, elem, [0], [])  # the branches' shapes may differ, not their types
        other.node.append(onnx.helper.make_node("Constant", [], [empty], value=value, name=empty))
        body.output.append(onnx.helper.make_tensor_value_info(inner[0], elem, None))
        other.output.append(onnx.helper.make_tensor_value_info(empty, elem, None))
        outer = fresh_name(f"{name}_captured", taken)
        node.output.append(outer)
        return outer, inner[1]
    return None


def _wire_out_of_loop(node: onnx.NodeProto, name: str, taken: set[str]) -> tuple[str, int] | None:
    """A Loop / Scan body tensor as an extra scan output (its value at every iteration, stacked on axis 0)."""
    import onnx

    body = next((a.g for a in node.attribute if a.name == "body"), None)
    if body is None:
        return None
    inner = (name, 0) if _defines(body, name) else _wire_out(body, name, taken, True)
    if inner is None:
        return None
    # node outputs: the final loop-carried (Loop) / state (Scan) values, then the scan outputs; a Loop's body
    # also outputs its condition first. Optional trailing outputs left out would misplace a new one.
    if len(node.output) != len(body.output) - (1 if node.op_type == "Loop" else 0):
        return None
    elem = _elem_type(body, inner[0])
    step = fresh_name(f"{name}_step", taken)
    body.node.append(onnx.helper.make_node("Identity", [inner[0]], [step], name=step))
    body.output.append(onnx.helper.make_tensor_value_info(step, elem, None))
    for a in node.attribute:  # Scan: one axis / direction per scan output when given
        if a.name in ("scan_output_axes", "scan_output_directions"):
            a.ints.append(0)
    outer = fresh_name(f"{name}_captured", taken)
    node.output.append(outer)
    return outer, inner[1] + 1


def capture_activations(
    model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], names: list[str], max_samples: int | None = None
) -> dict[str, np.ndarray]:
    """Run ``model`` on ``feeds`` once (:class:`Capture`) and return the named intermediate tensors."""
    return Capture(model, names).run(feeds, names, max_samples)
