"""Concrete input shapes for verification, benchmarks and cost summaries, never made up silently.

Every dynamic dimension of every graph input is sized from, in this order:

1. ``--input-shape NAME:1x3x224x224`` (the user's; ``optimize`` also writes it into the output model);
2. the calibration data (its arrays' shapes; cost summaries count one sample: batch 1);
3. the model itself: a dim_param shared with an input already sized, a ``value_info`` entry of the input
   with concrete dims, the image size an exporter records in ``metadata_props`` (Ultralytics' ``imgsz``,
   ``image_size``, ``img_size``, ``input_size``) for an image input's H and W;
4. documented defaults, each announced: the batch axis (dim 0, or a dim named like ``batch``/``N``) = 1;
   the H and W of an image input (rank 4 float, NCHW with 1/3/4 channels at dim 1 or NHWC at dim 3) =
   224 (ImageNet's size); the sequence axis of a text input (a dim named like ``seq``/``sequence``/
   ``tokens``, or dim 1 of a rank-2 integer input such as token ids) = 128.

A dim none of these sizes is an input error (exit 2) naming it and the ``--input-shape`` that sets it: a
dim of 1 where the model expects 640 verifies nothing (a detector checked on 1x3x1x1 pixels).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from onnxcomp.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import onnx

BATCH_DEFAULT = 1
IMAGE_DEFAULT = 224  # ImageNet's input size: what most image classifiers and backbones are trained at
SEQUENCE_DEFAULT = 128

_BATCH_NAME = re.compile(r"^(n|b|bs|batch|batch_?size|.*batch.*)$", re.IGNORECASE)
_SEQ_NAME = re.compile(r"(seq|sequence|token|length|len)", re.IGNORECASE)
_IMAGE_META_KEYS = ("imgsz", "image_size", "img_size", "input_size")
_IMAGE_CHANNELS = (1, 3, 4)


@dataclasses.dataclass
class InputShape:
    """The concrete shape used for one graph input, where it came from and which dims were guessed."""

    name: str
    shape: tuple[int, ...]
    source: str  # "--input-shape" | "calibration data" | "model" | "defaults"
    defaults: list[str] = dataclasses.field(default_factory=list)  # announced guesses, e.g. "dim 0 (batch) = 1"
    per_sample: bool = False  # calibration data: cost summaries count one sample (dim 0 = 1)

    def describe(self) -> str:
        text = f"{self.name} {'x'.join(map(str, self.shape)) or 'scalar'} ({self.source}"
        return text + (f": {'; '.join(self.defaults)})" if self.defaults else ")")


@dataclasses.dataclass
class InputShapes:
    """Shapes of every graph input (see the module docstring), and the dims none of the rules could size."""

    inputs: dict[str, InputShape] = dataclasses.field(default_factory=dict)
    missing: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # input -> unsized dims
    examples: dict[str, str] = dataclasses.field(default_factory=dict)  # input -> --input-shape to suggest

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def guessed(self) -> bool:
        return any(i.defaults for i in self.inputs.values())

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Input name -> shape (complete plans only)."""
        self.require()
        return {k: v.shape for k, v in self.inputs.items()}

    def cost_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shapes one inference is costed at: calibration data counts one sample (batch 1)."""
        self.require()
        return {k: ((1, *v.shape[1:]) if v.per_sample and v.shape else v.shape) for k, v in self.inputs.items()}

    def require(self, purpose: str = "") -> None:
        """InputError naming every dim no rule could size and the --input-shape that sets it."""
        if not self.missing:
            return
        dims = "; ".join(f"input {k!r} {', '.join(v)}" for k, v in self.missing.items())
        hint = " ".join(f"--input-shape {self.examples[k]}" for k in self.missing)
        raise InputError(
            f"{purpose + ': ' if purpose else ''}the model has dynamic dims that onnxcomp cannot size ({dims}); "
            f"give the sizes to use with {hint}, or pass calibration data"
        )

    def summary(self) -> str:
        """One line for the terminal: the shapes used and, for guessed dims, how to override them."""
        parts = [i.describe() for i in self.inputs.values()]
        line = "input shapes: " + ", ".join(parts)
        guessed = [i for i in self.inputs.values() if i.defaults]
        if guessed:
            line += "; to use other sizes: " + " ".join(
                f"--input-shape {i.name}:{'x'.join(map(str, i.shape))}" for i in guessed
            )
        return line

    def flops_note(self) -> str:
        """Why FLOPs are not given (a plan with unsized dims)."""
        dims = "; ".join(f"{k} {', '.join(v)}" for k, v in self.missing.items())
        return f"FLOPs not computed: dynamic dims unsized ({dims}); set them with --input-shape"

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": {k: dataclasses.asdict(v) for k, v in self.inputs.items()},
            "missing": {k: list(v) for k, v in self.missing.items()},
        }


def resolve(
    model: onnx.ModelProto,
    user: Mapping[str, tuple[int, ...]] | None = None,
    calib: Mapping[str, np.ndarray] | None = None,
) -> InputShapes:
    """Size every dynamic input dim of ``model`` (rules in the module docstring); never raises for unsized
    dims: they are listed in ``missing`` (call :meth:`InputShapes.require` where a shape is needed)."""
    from onnxcomp.calib import input_specs

    specs = input_specs(model)
    user = dict(user or {})
    out = InputShapes()
    symbols: dict[str, int] = {}
    for name, (_, dims) in specs.items():
        given = user.get(name)
        source = "--input-shape"
        if given is None and calib is not None and name in calib:
            given, source = tuple(int(d) for d in calib[name].shape), "calibration data"
        if given is None:
            continue
        given = tuple(int(d) for d in given)
        per_sample = source == "calibration data" and bool(dims) and not isinstance(dims[0], int)
        out.inputs[name] = InputShape(name, given, source, per_sample=per_sample)
        for d, v in zip(dims, given):
            if isinstance(d, str):
                symbols.setdefault(d, v)
    recorded = _recorded_dims(model)
    image_hw = _metadata_image_size(model)
    for name, (dtype, dims) in specs.items():
        if name in out.inputs:
            continue
        shape: list[int] = []
        guesses: dict[str, tuple[int, list[int]]] = {}  # what -> (value, dims)
        unsized: list[str] = []
        from_model = False
        for i, d in enumerate(dims):
            if isinstance(d, int):
                shape.append(d)
                continue
            label = f"dim {i}" + (f" ({d})" if d else "")
            value: int | None = None
            if d and d in symbols:
                value, from_model = symbols[d], True
            elif recorded.get(name, {}).get(i):
                value, from_model = recorded[name][i], True
            else:
                role = _role(dtype, dims, i, d)
                if role == "image" and image_hw is not None:
                    value, from_model = image_hw[_spatial_index(dims, i)], True
                    guesses.setdefault(f"image H/W {value} from the model's metadata", (value, []))[1].append(i)
                elif role is not None:
                    value = _DEFAULTS[role]
                    guesses.setdefault(f"{_ROLE_TEXT[role]} {value}", (value, []))[1].append(i)
            if value is None:
                unsized.append(label)
                shape.append(0)
                continue
            shape.append(value)
            if d:
                symbols.setdefault(d, value)
        if unsized:
            out.missing[name] = unsized
            example = [str(v) if v else (dims[i] or f"D{i}") for i, v in enumerate(shape)]
            out.examples[name] = f"{name}:{'x'.join(str(e) for e in example)}"
            continue
        notes = [
            f"{what} (dim{'s' if len(ix) > 1 else ''} {', '.join(map(str, ix))})" for what, (_, ix) in guesses.items()
        ]
        source = "model" if not notes else "model and defaults" if from_model else "defaults"
        out.inputs[name] = InputShape(name, tuple(shape), source, notes)
    return out


_DEFAULTS = {"batch": BATCH_DEFAULT, "image": IMAGE_DEFAULT, "sequence": SEQUENCE_DEFAULT}
_ROLE_TEXT = {"batch": "batch", "image": "image H/W", "sequence": "sequence length"}


def _role(dtype: str, dims: list[Any], i: int, name: str | None) -> str | None:
    """What a dynamic dim most likely is: "batch", "image" (an image's H or W), "sequence", or None."""
    if i == 0 or (name and _BATCH_NAME.match(name)):
        return "batch"
    if _image_layout(dtype, dims) is not None and _spatial_index(dims, i) is not None:
        return "image"
    if name and _SEQ_NAME.search(name):
        return "sequence"
    if len(dims) == 2 and i == 1 and dtype.startswith(("int", "uint")):
        return "sequence"  # [batch, tokens] ids / masks
    return None


def _image_layout(dtype: str, dims: list[Any]) -> str | None:
    if len(dims) != 4 or not dtype.startswith("float"):
        return None
    if isinstance(dims[1], int) and dims[1] in _IMAGE_CHANNELS:
        return "NCHW"
    if isinstance(dims[3], int) and dims[3] in _IMAGE_CHANNELS:
        return "NHWC"
    return None


def _spatial_index(dims: list[Any], i: int) -> int | None:
    """0 for H, 1 for W of an image input, else None."""
    layout = _image_layout("float", dims)
    spatial = (2, 3) if layout == "NCHW" else (1, 2) if layout == "NHWC" else ()
    return spatial.index(i) if i in spatial else None


def _metadata_image_size(model: onnx.ModelProto) -> tuple[int, int] | None:
    """(H, W) from an exporter's metadata: ``imgsz`` = "[640, 640]" or "640" (Ultralytics), and alike."""
    for p in model.metadata_props:
        if p.key.lower() not in _IMAGE_META_KEYS:
            continue
        values = [int(v) for v in re.findall(r"\d+", p.value)]
        if len(values) == 1 and 0 < values[0] <= 65536:
            return values[0], values[0]
        if len(values) == 2 and all(0 < v <= 65536 for v in values):
            return values[0], values[1]
    return None


def _recorded_dims(model: onnx.ModelProto) -> dict[str, dict[int, int]]:
    """Concrete dims a ``value_info`` entry records for a graph input name (tools that made an input dynamic
    in ``graph.input`` often leave the traced shape there)."""
    names = {i.name for i in model.graph.input}
    out: dict[str, dict[int, int]] = {}
    for vi in model.graph.value_info:
        if vi.name in names and vi.type.HasField("tensor_type"):
            dims = vi.type.tensor_type.shape.dim
            out[vi.name] = {
                i: int(d.dim_value) for i, d in enumerate(dims) if d.HasField("dim_value") and d.dim_value > 0
            }
    return out
