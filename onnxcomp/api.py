"""The Python API: ``onnxcomp.optimize(model_or_path, passes=..., calib=..., verify=...)``.

Data flow (docs/design.md): load -> normalize -> graph IR -> fold weight subgraphs -> passes (each followed by
cleanup + toposort) -> export -> check -> verify -> report. Saving is the caller's (``save_model``), so the
CLI can refuse to write a model that failed verification.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxcomp.errors import InputError, UsageError, VerificationError
from onnxcomp.pipeline import DEFAULT_PIPELINE, PassSpec, instantiate, load_recipe, parse_spec, run_passes

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from onnxcomp.report import Report
    from onnxcomp.shapes import InputShapes
    from onnxcomp.verify import Tolerance

logger = logging.getLogger(__name__)


def optimize(
    model: onnx.ModelProto | str | os.PathLike[str],
    passes: str | list[PassSpec] | None = None,
    *,
    recipe: str | os.PathLike[str] | None = None,
    calib: Mapping[str, np.ndarray] | str | os.PathLike[str] | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    verify: bool = False,
    tolerance: Tolerance | None = None,
    labels: np.ndarray | None = None,
    seed: int = 0,
    hardware: str = "zen5-1t",
    progress: Callable[..., Iterable[Any]] | None = None,
) -> tuple[onnx.ModelProto, Report]:
    """Optimize a model; returns ``(optimized_model, report)``.

    ``passes``: a spec string (``"fuse-bn,prune-filters(ratio=0.5)"``) or a list of PassSpec; None runs the
    default lossless pipeline (or the recipe's). ``verify=True`` compares the result with the original on
    the calibration data (or generated inputs) and raises :class:`VerificationError` beyond ``tolerance``.
    """
    from onnxcomp import io
    from onnxcomp import shapes as shp
    from onnxcomp.calib import check_arrays, load_arrays
    from onnxcomp.determinism import pinned
    from onnxcomp.fold import LOAD_FILL_ELEMENTS, fold, foldable_nodes
    from onnxcomp.graph import export_model, import_model, toposort
    from onnxcomp.passes_api import PassContext
    from onnxcomp.report import Report
    from onnxcomp.weights import nonfinite_weights

    t0 = time.perf_counter()
    from onnxcomp.hardware import resolve as resolve_hardware

    resolve_hardware(hardware)  # a built-in name or a readable profile file, checked before any work
    if not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    original = io.as_model(model)
    settings: dict[str, Any] = {}
    if recipe is not None:
        if passes is not None:
            raise UsageError("give either passes or a recipe, not both")
        specs, settings = load_recipe(recipe)
    elif passes is None:
        specs = parse_spec(DEFAULT_PIPELINE)
    elif isinstance(passes, str):
        specs = parse_spec(passes)
    else:
        specs = list(passes)
    pass_objs = instantiate(specs)  # unknown passes/options fail here, before any work

    shapes = dict(input_shapes or {})
    stages: dict[str, float] = {"load": time.perf_counter() - t0}
    # A model loaded here from a path is ours: normalized in place, and, when nothing needs it after the
    # passes (no verification), its weights are handed over to the result one by one at export. Models of
    # several GB are then never held twice.
    owned = isinstance(model, (str, os.PathLike))
    run_verify = verify or settings.get("verify", {}).get("enabled", False)
    meta = _model_meta(original)
    with _timed(stages, "normalize"):
        norm = io.normalize(original, shapes, copy=not owned)
    calib_arrays = None
    if calib is not None:
        calib_arrays = load_arrays(calib, norm) if isinstance(calib, (str, os.PathLike)) else check_arrays(calib, norm)
    plan = shp.resolve(norm, shapes, calib_arrays)
    if run_verify:
        plan.require("verification")  # before any work: never verify on made-up dims
    nonfinite = nonfinite_weights(norm)
    with _timed(stages, "cost"):
        before = _cost(norm, plan)  # before the passes: the export may hand norm's weights over to the result

    ctx = PassContext(
        calib=calib_arrays,
        input_shapes=shapes,
        hardware=hardware,
        seed=seed,
        progress=progress,
        model_meta=meta,
    )
    with _timed(stages, "import"):
        graph = import_model(norm)
    with pinned():  # the same bytes on any core count (onnxcomp.determinism)
        with _timed(stages, "import"):
            # weight subgraphs (Constant nodes, shape arithmetic, small fills) become initializers; larger
            # constant fills are fold-constants' to materialize or keep (materialize-fills, max-fill-elements)
            fold(graph, foldable_nodes(graph, max_fill_elements=LOAD_FILL_ELEMENTS))
            toposort(graph.cleanup(remove_unused_graph_inputs=False))
        results = run_passes(graph, pass_objs, ctx)
    with _timed(stages, "export"):
        out = export_model(graph, ctx, release=owned and not run_verify)
        del graph
    with _timed(stages, "shape inference"):
        del out.graph.value_info[:]
        out = io.infer_shapes(out)
    with _timed(stages, "check"):
        shape_warning = None
        for retry in (False, True):
            try:
                data, load_warning = _check(out, shapes, model, stages)
                break
            except InputError as err:
                if retry:
                    raise
                # onnx's data propagation can infer a wrong static shape (a Slice whose start it cannot compute
                # taken as 0): onnxruntime then rejects the value_info written from it; inferred without it, the
                # model may load
                io.strip_value_info(out.graph)
                io.infer_shapes(out, data_prop=False)
                shape_warning = (
                    f"the output did not load with the shapes onnx infers with data propagation ({err}); its "
                    "value_info comes from shape inference without it"
                )

    report = Report(pipeline=",".join(str(s) for s in specs), passes=results, inputs=plan, stages=stages)
    report.warnings = [f"non-finite weights in the input model: {w.describe()}" for w in nonfinite]
    report.warnings += [w for w in (shape_warning, load_warning) if w]
    report.before = before
    with _timed(stages, "cost"):
        report.after = _cost(out, plan)
    if isinstance(model, (str, os.PathLike)):
        report.bytes_before = io.file_size(model)
    else:
        report.source = original  # sized only if the report is read (ByteSize costs a pass over the weights)
    report.bytes_after = len(data) if data is not None else None
    report.serialized = data
    verify_settings = settings.get("verify", {})
    if run_verify:
        from onnxcomp.verify import Tolerance

        tol = (
            tolerance
            or _tolerance_from(verify_settings)
            or (Tolerance.lossless() if report.lossless else Tolerance.lossy())
        )
        with _timed(stages, "verify"):
            report.verification = verify_models(norm, out, calib_arrays, plan, tol, labels, seed)
    report.seconds = time.perf_counter() - t0
    if report.verification is not None and not report.verification.ok:
        err = VerificationError("verification failed: " + "; ".join(report.verification.failures()))
        err.report = report  # type: ignore[attr-defined]
        raise err
    return out, report


@contextlib.contextmanager
def _timed(stages: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time of the block to ``stages[name]`` (the report's per-stage times)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - t0


def verify_models(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    calib: Mapping[str, np.ndarray] | None,
    input_shapes: InputShapes | Mapping[str, tuple[int, ...]] | None,
    tolerance: Tolerance,
    labels: np.ndarray | None = None,
    seed: int = 0,
    runtime: bool | str | None = None,
) -> Any:
    """Compare the models on ``calib`` or, without it, on inputs generated at ``input_shapes`` (a plan from
    :func:`onnxcomp.shapes.resolve`, or the user's shapes, resolved here); the shapes go into the result."""
    from onnxcomp import shapes as shp
    from onnxcomp.calib import generate_inputs
    from onnxcomp.verify import verify

    plan = input_shapes if isinstance(input_shapes, shp.InputShapes) else shp.resolve(reference, input_shapes, calib)
    if calib is not None:
        feeds, source = dict(calib), "calibration data"
    else:
        feeds, source = generate_inputs(reference, plan.shapes(), seed=seed), "generated inputs"
        labels = None
    result = verify(reference, candidate, feeds, tolerance=tolerance, labels=labels, source=source, runtime=runtime)
    result.inputs = plan.to_dict()["inputs"]
    return result


def _tolerance_from(settings: Mapping[str, Any]) -> Tolerance | None:
    from onnxcomp.verify import Tolerance

    keys = {"atol", "rtol", "min_cosine"}
    if not keys & set(settings):
        return None
    unknown = set(settings) - keys - {"enabled"}
    if unknown:
        raise UsageError(
            f"[verify]: unknown settings {', '.join(sorted(unknown))}; valid: enabled, atol, rtol, min_cosine"
        )
    return Tolerance(**{k: settings.get(k) for k in keys})


def _model_meta(model: onnx.ModelProto) -> dict[str, Any]:
    return {
        "ir_version": max(model.ir_version, 4),
        "producer_name": model.producer_name,
        "producer_version": model.producer_version,
        "domain": model.domain,
        "model_version": model.model_version,
        "doc_string": model.doc_string,
        "metadata_props": [(p.key, p.value) for p in model.metadata_props],
        "opset_import": {op.domain: op.version for op in model.opset_import},
    }


def _cost(model: onnx.ModelProto, plan: InputShapes) -> Any:
    """The model's cost at the plan's shapes; a shape-inferred model whose inputs already have exactly those
    static shapes is summarized as it is (no second shape inference)."""
    from onnxcomp import cost

    if not plan.complete:
        return cost.model_cost(model, plan)
    want = plan.cost_shapes()
    for vi in model.graph.input:
        dims = tuple(d.dim_value if d.HasField("dim_value") else 0 for d in vi.type.tensor_type.shape.dim)
        if vi.name in want and tuple(want[vi.name]) != dims:
            return cost.model_cost(model, plan)
    return cost.summarize(model)


def _serialized(model: onnx.ModelProto) -> bytes | None:
    """The model's bytes, or None when protobuf cannot serialize it in memory (over 2 GB)."""
    from onnxcomp import io

    try:
        return io.serialize(model)
    except io.TooLargeError:
        return None


def _check(
    out: onnx.ModelProto, shapes: Mapping, source: Any, stages: dict[str, float]
) -> tuple[bytes | None, str | None]:
    """The checker and the onnxruntime load check of the optimized model: (its bytes, None over protobuf's limit;
    the load check's warning)."""
    from onnxcomp import io

    data = _serialized(out)  # once, for the checker, the onnxruntime load check, the report and the save
    if data is not None:
        io.check_model(data, "optimized model")
        with _timed(stages, "onnxruntime load"):
            return data, _check_loads(out, data, shapes=shapes, source=source)
    # over protobuf's limit: written once with external data, checked and loaded from that file
    with io.model_file(out) as path:
        io.check_model(str(path), "optimized model")
        with _timed(stages, "onnxruntime load"):
            return None, _check_loads(out, path=path, shapes=shapes, source=source)


def _check_loads(
    model: onnx.ModelProto,
    data: bytes | None = None,
    path: Path | None = None,
    shapes: Mapping | None = None,
    source: onnx.ModelProto | str | os.PathLike[str] | None = None,
) -> str | None:
    """The optimized model loads in onnxruntime as a user loads it: with its graph optimizations (constant folding
    and the shape inference over the folded values find type errors a load without them lets through: Silero
    VAD given a 16 kHz chunk by --input-shape has an If branch, the 8 kHz one, whose LSTM input then has the
    wrong rank). Verification's own sessions run without them, so this check runs with --verify too. Where the input
    model (``source``, as given) does not load that way either, the output is only held to what the input does
    (a load without them): returns the warning that says so, else None."""
    from onnxcomp.ops import uses_ops
    from onnxcomp.ort import runtime_available, session

    custom = uses_ops(model)

    def load(optimize: bool) -> None:
        if path is not None:  # a model written with external data
            session(path, optimize=optimize, runtime=custom and runtime_available())
        else:
            # bytes skip a second serialization; a model with com.onnxcomp ops goes as a proto so that the
            # session registers the native runtime when it is available
            session(data if data is not None and not custom else model, optimize=optimize)

    try:
        load(optimize=True)
        return None
    except InputError as err:
        failed = err
    if source is not None:
        try:
            session(source, optimize=True)
        except InputError:
            try:
                load(optimize=False)
            except InputError as err:
                raise InputError(f"the optimized model does not load in onnxruntime: {err}") from err
            return (
                "the input model does not load in onnxruntime with its graph optimizations on, nor does the "
                f"output: {failed}; the output was checked to load without them, as the input does"
            )
    hint = ""
    if shapes:
        given = " ".join(f"--input-shape {k}:{'x'.join(str(d) for d in v)}" for k, v in shapes.items())
        hint = f" (the model takes exactly the shapes {given} gives it; without it the dims stay dynamic)"
    raise InputError(f"the optimized model does not load in onnxruntime: {failed}{hint}") from failed
