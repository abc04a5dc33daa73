"""Numerical verification: run two models on the same inputs and compare every output.

Metrics per output: max absolute error, max relative error (|a-b| / (|a| + eps) over the elements
where |a| is not tiny), cosine similarity, and, with labels, top-1 accuracy of both models.
A comparison passes when ``max_abs <= atol + rtol * max|ref|`` for every output and the cosine is at least
``min_cosine`` (not asked of an output whose differences are all within ``atol`` alone). Non-finite values:
NaN/Inf in the candidate where the reference is finite fails; NaN/Inf in the reference must be matched exactly
(same positions, same values) and the metrics cover the finite rest; a reference that is NaN/Inf everywhere is
an input error (there is nothing to compare). Lossless
pipelines get tight defaults; lossy ones are checked by cosine only unless the user sets tolerances.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from onnxcomp.errors import InputError, UsageError

if TYPE_CHECKING:
    import numpy as np
    import onnx

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Tolerance:
    atol: float | None = 1e-5  # absolute, in units of max|ref|: err <= atol*scale + rtol*scale
    rtol: float | None = 1e-4
    min_cosine: float | None = 0.99999

    def __post_init__(self) -> None:
        # NaN makes every comparison false (verification would pass whatever the outputs)
        for key in ("atol", "rtol", "min_cosine"):
            v = getattr(self, key)
            if v is not None and (v != v or (key != "min_cosine" and v < 0)):
                raise UsageError(
                    f"tolerance {key.replace('_', '-')}={v}: must be a number"
                    + ("" if key == "min_cosine" else " >= 0")
                )

    @classmethod
    def lossless(cls) -> Tolerance:
        return cls()

    @classmethod
    def lossy(cls) -> Tolerance:
        return cls(atol=None, rtol=None, min_cosine=0.9)


# An output whose largest magnitude on generated inputs is below this is saturated there (failures() says so)
NEAR_ZERO = 1e-3


@dataclasses.dataclass
class OutputMetrics:
    name: str
    max_abs: float
    max_rel: float
    cosine: float
    ref_max: float
    ok: bool
    why: str = ""


@dataclasses.dataclass
class VerifyResult:
    outputs: list[OutputMetrics]
    samples: int
    source: str  # "calibration data" or "generated inputs"
    accuracy_ref: float | None = None
    accuracy_new: float | None = None
    tolerance: Tolerance = dataclasses.field(default_factory=Tolerance)
    inputs: dict[str, Any] = dataclasses.field(default_factory=dict)  # the input shapes used, and their source
    runtime: str = "ort"  # what ran the candidate: ort, ops or ep (onnxcomp.ort.resolve_runtime)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    def failures(self) -> list[str]:
        out = []
        for o in self.outputs:
            if o.ok:
                continue
            why = f"{o.name}: {o.why}"
            if self.source == "generated inputs" and 0.0 < o.ref_max < NEAR_ZERO:
                # a text detector's probability map on noise: ~1e-5 everywhere, relative errors of rounding size
                why += (
                    f" (on generated inputs the original's {o.name} peaks at {o.ref_max:.2g}: the inputs do not "
                    "exercise it; verify on real samples with --calib)"
                )
            out.append(why)
        return out

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ok"] = self.ok
        return d


def compare_arrays(name: str, ref: np.ndarray, new: np.ndarray, tol: Tolerance) -> OutputMetrics:
    import numpy as np

    from onnxcomp.ort import Ragged

    if isinstance(ref, Ragged) or isinstance(new, Ragged):
        # batches of a fixed-batch model whose output shape varies (boxes after NMS): compared batch by batch,
        # the values of batches of equal shapes as one
        a, b = list(ref) if isinstance(ref, list) else [ref], list(new) if isinstance(new, list) else [new]
        shapes_a, shapes_b = [np.shape(x) for x in a], [np.shape(x) for x in b]
        if shapes_a != shapes_b:
            pairs = zip(shapes_a, shapes_b, strict=False)
            differ = next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(a), len(b)))
            why = (
                f"batch {differ}: shape {shapes_b[differ]} != {shapes_a[differ]}"
                if differ < min(len(a), len(b))
                else f"{len(b)} batches != {len(a)}"
            )
            return OutputMetrics(name, float("inf"), float("inf"), 0.0, 0.0, False, why)
        ref = np.concatenate([np.ravel(x) for x in a])
        new = np.concatenate([np.ravel(x) for x in b])
    if ref.shape != new.shape:
        return OutputMetrics(name, float("inf"), float("inf"), 0.0, 0.0, False, f"shape {new.shape} != {ref.shape}")
    if ref.dtype.kind not in "fc":
        equal = bool(np.array_equal(ref, new))
        return OutputMetrics(
            name,
            0.0 if equal else float("inf"),
            0.0 if equal else float("inf"),
            1.0 if equal else 0.0,
            0.0,
            equal,
            "" if equal else "integer outputs differ",
        )
    a = ref.astype(np.float64).ravel()
    b = new.astype(np.float64).ravel()
    finite_a, finite_b = np.isfinite(a), np.isfinite(b)
    if a.size and not finite_a.any():
        # nothing to compare: equal NaNs would "pass" whatever the candidate computes
        raise InputError(
            f"output {name!r} of the original model is NaN/Inf everywhere on these inputs: nothing to compare "
            "(check the model's weights and the inputs)"
        )
    bad = finite_a & ~finite_b
    if bad.any():
        return OutputMetrics(
            name,
            float("inf"),
            float("inf"),
            0.0,
            0.0,
            False,
            f"{int(bad.sum())} NaN/Inf values where the original is finite",
        )
    if not np.array_equal(finite_a, finite_b) or not np.array_equal(a[~finite_a], b[~finite_b], equal_nan=True):
        return OutputMetrics(name, float("inf"), float("inf"), 0.0, 0.0, False, "non-finite values differ")
    # where both are finite (the non-finite positions match exactly)
    a, b = a[finite_a], b[finite_b]
    if a.size == 0:
        return OutputMetrics(name, 0.0, 0.0, 1.0, 0.0, True)
    diff = np.abs(a - b)
    scale = float(np.max(np.abs(a)))
    max_abs = float(diff.max())
    big = np.abs(a) > 1e-3 * max(scale, 1e-30)
    max_rel = float((diff[big] / np.abs(a[big])).max()) if big.any() else 0.0
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cosine = float(a @ b / (na * nb)) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0)
    ok, why = True, ""
    if tol.atol is not None or tol.rtol is not None:
        bound = (tol.atol or 0.0) * max(scale, 1.0) + (tol.rtol or 0.0) * scale
        if max_abs > bound:
            ok, why = False, f"max abs error {max_abs:.3g} > {bound:.3g}"
    # The cosine is scale-free: on an output that is ~0 everywhere (a saturated sigmoid on generated inputs)
    # it measures float32 rounding noise. Differences all within the absolute tolerance need no cosine.
    within_atol = tol.atol is not None and max_abs <= tol.atol * max(scale, 1.0)
    if tol.min_cosine is not None and cosine < tol.min_cosine and not within_atol:
        ok, why = False, (why + "; " if why else "") + f"cosine {cosine:.6f} < {tol.min_cosine}"
    return OutputMetrics(name, max_abs, max_rel, cosine, scale, ok, why)


def run_model(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    *,
    batch_size: int | None = 256,
    runtime: bool | str | None = None,
) -> dict[str, np.ndarray]:
    """All outputs of ``model`` on ``feeds`` (onnxruntime optimizations off), batched along axis 0."""
    import numpy as np

    from onnxcomp.calib import batches
    from onnxcomp.ort import run, session

    sess = session(model, optimize=False, runtime=runtime)
    names = [o.name for o in sess.get_outputs()]
    parts: list[list[np.ndarray]] = []
    dynamic_batch = all((not i.shape) or not isinstance(i.shape[0], int) for i in sess.get_inputs())
    chunks = batches(feeds, batch_size if dynamic_batch else None)
    for chunk in chunks:
        parts.append(run(sess, chunk))
    if len(parts) == 1:
        return dict(zip(names, parts[0]))
    return {n: np.concatenate([p[i] for p in parts], axis=0) for i, n in enumerate(names)}


def verify(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    *,
    tolerance: Tolerance | None = None,
    labels: np.ndarray | None = None,
    source: str = "generated inputs",
    runtime: bool | str | None = None,
) -> VerifyResult:
    """Compare every output of ``candidate`` with ``reference`` on ``feeds``."""
    import numpy as np

    from onnxcomp.ort import resolve_runtime

    tol = tolerance or Tolerance()
    ref = run_model(reference, feeds)
    # unset: the runtime a user gets (the EP where it is built, for a model with com.onnxcomp ops)
    used = resolve_runtime(candidate, "auto" if runtime is None else runtime)
    new = run_model(candidate, feeds, runtime=used)
    if list(ref) != list(new):
        missing = [n for n in ref if n not in new]
        if missing:
            raise InputError(f"the models' outputs differ: {', '.join(missing)} missing from the second model")
    outputs = [compare_arrays(n, ref[n], new[n], tol) for n in ref]
    samples = next(iter(feeds.values())).shape[0] if feeds and next(iter(feeds.values())).ndim else 1
    result = VerifyResult(outputs, samples, source, tolerance=tol, runtime=used)
    if labels is not None:
        first = next(iter(ref))
        lab = np.asarray(labels).reshape(-1)
        for attr, outs in (("accuracy_ref", ref), ("accuracy_new", new)):
            logits = outs[first]
            if isinstance(logits, list):
                raise InputError(f"labels: output {first!r} changes shape from batch to batch; no class scores")
            if logits.ndim < 2 or logits.shape[0] != lab.shape[0]:
                raise InputError(f"labels: {lab.shape[0]} labels but output {first!r} has shape {logits.shape}")
            setattr(result, attr, float((logits.reshape(logits.shape[0], -1).argmax(1) == lab).mean()))
    return result


def load_labels(path: str) -> np.ndarray:
    import numpy as np

    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise InputError(f"{path}: cannot read labels ({err})") from err
    if hasattr(arr, "files"):
        raise InputError(f"{path}: labels must be a .npy array of class indices")
    if arr.dtype.kind not in "iu":
        raise InputError(f"{path}: labels must be integers, got {arr.dtype}")
    return arr
