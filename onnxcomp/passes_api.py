"""The pass contract: typed options, a result object, a context, and the registry.

A pass is a class registered under a kebab-case name::

    @register_pass
    class FuseBatchNorm(Pass):
        '''Conv -> BatchNormalization  =>  Conv (lossless). ...'''
        name = "fuse-bn"
        lossless = True

        @dataclasses.dataclass
        class Options:
            min_size: int = 0   # typed, defaulted fields; docs come from the field metadata "help"

        def run(self, graph, ctx) -> PassResult: ...

``run`` mutates the onnx-graphsurgeon graph in place and returns a :class:`PassResult`; calling the pass
(``pass(graph, ctx)``, as the pipeline does) checks :meth:`Pass.requires` first and runs ``cleanup().toposort()``
and :meth:`Pass.ensures` after it. Not applying is data (``result.skip(node, reason)``), not an exception.
The pass library lives in the ``onnxcomp.passes`` package; the core imports it lazily through
:func:`load_pass_library` and never imports a concrete pass itself.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import logging
import sys
import time
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args, get_origin

from onnxcomp.errors import PassError, UsageError

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- results
@dataclasses.dataclass
class LayerRecord:
    """What a pass did to one layer (node): the decision and its cost before/after."""

    name: str
    op: str = ""
    decision: str = ""
    params_before: int | None = None
    params_after: int | None = None
    flops_before: int | None = None
    flops_after: int | None = None
    error: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Skip:
    """A place where a pass did not apply, and why (shown in the report)."""

    node: str
    reason: str


@dataclasses.dataclass
class PassResult:
    """Counters, per-layer records and skips of one pass run."""

    name: str
    lossless: bool = True
    counters: dict[str, float] = dataclasses.field(default_factory=dict)
    layers: list[LayerRecord] = dataclasses.field(default_factory=list)
    skips: list[Skip] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def count(self, key: str, n: float = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def skip(self, node: str, reason: str) -> None:
        logger.debug("%s: skip %s: %s", self.name, node, reason)
        self.skips.append(Skip(node, reason))

    def merge_before(self, earlier: PassResult) -> None:
        """Put the counters and skips of ``earlier`` (the preconditions' result) before this result's own."""
        counters = dict(earlier.counters)
        for k, v in self.counters.items():
            counters[k] = counters.get(k, 0) + v
        self.counters = counters
        self.skips[:0] = earlier.skips
        self.layers[:0] = earlier.layers

    def layer(self, name: str, **fields: Any) -> LayerRecord:
        rec = LayerRecord(name=name, **fields)
        self.layers.append(rec)
        return rec

    @property
    def changed(self) -> bool:
        return any(v for v in self.counters.values()) or bool(self.layers)

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


def jsonable(obj: Any) -> Any:
    """Plain JSON types only (numpy scalars, tuples, paths converted)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return obj.item()
    return obj


# --------------------------------------------------------------------------------------------- context
@dataclasses.dataclass
class PassContext:
    """What passes may need besides the graph.

    ``calib``: calibration inputs (name -> array), or None in data-free mode.
    ``input_shapes``: concrete shapes for dynamic inputs (from ``--input-shape``).
    ``hardware``: the hardware profile name for the cost model.
    ``seed``: RNG seed; passes derive their RNG from it (``ctx.rng()``), never from global state.
    ``progress``: ``track(iterable, description, total)`` wrapper (rich progress in the CLI, identity in tests).
    ``provenance``: node name -> "pass: derived from ..." (written to the node's doc_string at export).
    """

    calib: dict[str, np.ndarray] | None = None
    input_shapes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    hardware: str = "zen5-1t"
    seed: int = 0
    progress: Callable[..., Iterable[Any]] | None = None
    provenance: dict[str, str] = dataclasses.field(default_factory=dict)
    model_meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def rng(self, salt: int = 0) -> np.random.Generator:
        import numpy as np

        return np.random.default_rng([self.seed, salt])

    def track(self, items: Iterable[Any], description: str = "", total: int | None = None) -> Iterable[Any]:
        if self.progress is None:
            return items
        return self.progress(items, description=description, total=total)

    def tag(self, node: gs.Node, pass_name: str, sources: Iterable[str] = ()) -> None:
        """Record the provenance of a node a pass created or rewrote."""
        src = ", ".join(s for s in sources if s)
        self.provenance[node.name] = f"onnxcomp {pass_name}" + (f" from {src}" if src else "")

    def capture(self, graph: gs.Graph, names: Iterable[str], max_samples: int | None = None) -> dict[str, np.ndarray]:
        """Run the current graph on the calibration data and return the named intermediate tensors."""
        from onnxcomp.calib import capture_activations
        from onnxcomp.graph import export_model

        if self.calib is None:
            raise UsageError("this pass needs calibration data (--calib FILE.npz)")
        return capture_activations(export_model(graph, self), self.calib, list(names), max_samples=max_samples)


# --------------------------------------------------------------------------------------------- the pass
GraphInterface = tuple[tuple[str, ...], tuple[str, ...]]


def graph_interface(graph: gs.Graph) -> GraphInterface:
    """The names of the graph's inputs and outputs, in order."""
    return tuple(t.name for t in graph.inputs), tuple(t.name for t in graph.outputs)


class Pass:
    """Base class of every pass. Subclasses set ``name``, ``lossless``, ``Options`` and ``run``."""

    name: ClassVar[str] = ""
    lossless: ClassVar[bool] = True
    needs_calib: ClassVar[bool] = False  # True: requires calibration data; False: data-free (may still use it)

    @dataclasses.dataclass
    class Options:
        pass

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        if options is None:
            options = build_options(type(self), kwargs)
        elif kwargs:
            raise TypeError("pass either an Options instance or keyword options, not both")
        self.options = options

    def __call__(self, graph: gs.Graph, ctx: PassContext | None = None) -> PassResult:
        """Check the preconditions (:meth:`requires`), run the pass and its epilogue (cleanup + toposort),
        check the postconditions (:meth:`ensures`), timing it all. A pipeline calls its passes this way, so a
        pass called directly is held to the same contract."""
        from onnxcomp.graph import toposort

        ctx = ctx or PassContext()
        t0 = time.perf_counter()
        before = graph_interface(graph)
        pre = self.new_result()
        reason = self.requires(graph, ctx, pre)
        if reason is not None:
            pre.skip("model", reason)
            result = pre
        else:
            result = self.run(graph, ctx)
            result.merge_before(pre)
        toposort(graph.cleanup(remove_unused_graph_inputs=False))
        self.ensures(graph, ctx, result, before)
        result.seconds = time.perf_counter() - t0
        result.lossless = self.lossless
        result.options = dataclasses.asdict(self.options)
        return result

    def requires(self, graph: gs.Graph, ctx: PassContext, result: PassResult) -> str | None:
        """Preconditions, checked before :meth:`run` (as onnx_ir passes have them).

        Raises :class:`UsageError` when the pass cannot run as asked (``needs_calib`` without calibration data);
        returns a reason when it does not apply to this graph (``run`` is skipped, the reason recorded); may
        establish a precondition (the share passes upgrade an old opset), counting it in ``result``, whose
        counters and skips come before those of ``run``. Subclasses extend it (call ``super()``).
        """
        if self.needs_calib and ctx.calib is None:
            raise UsageError(f"pass {self.name!r} needs calibration data: pass --calib FILE.npz")
        return None

    def ensures(self, graph: gs.Graph, ctx: PassContext, result: PassResult, before: GraphInterface) -> None:
        """Postconditions, checked after :meth:`run` and the cleanup; raises :class:`PassError` when one is broken.

        Every pass keeps the graph's interface: the same input and output names, in order (``before``: the
        interface when the pass started). Subclasses extend it (call ``super()``).
        """
        after = graph_interface(graph)
        if after != before:
            raise PassError(f"pass {self.name!r} changed the graph's inputs or outputs: {before} -> {after}")

    def new_result(self) -> PassResult:
        return PassResult(name=self.name, lossless=self.lossless)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


# --------------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Pass]] = {}
_LIBRARY_LOADED = False


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: add a pass to the registry under ``cls.name``."""
    if not cls.name or cls.name != cls.name.lower() or " " in cls.name or "_" in cls.name:
        raise ValueError(f"pass name must be kebab-case, got {cls.name!r}")
    other = _REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"pass name {cls.name!r} registered twice ({other.__module__}, {cls.__module__})")
    if not dataclasses.is_dataclass(cls.Options):
        raise TypeError(f"{cls.__name__}.Options must be a dataclass")
    _REGISTRY[cls.name] = cls
    return cls


def load_pass_library() -> None:
    """Import ``onnxcomp.passes`` (which registers every pass), from the install or a source checkout."""
    global _LIBRARY_LOADED
    if _LIBRARY_LOADED:
        return
    try:
        importlib.import_module("onnxcomp.passes")
    except ModuleNotFoundError as err:
        if err.name != "onnxcomp.passes":
            raise
        # Source checkout: passes/ sits beside onnxcomp/ and is mapped to onnxcomp.passes at install time.
        src = Path(__file__).resolve().parent.parent / "passes" / "__init__.py"
        if not src.is_file():
            raise ModuleNotFoundError("onnxcomp.passes is not installed and no source passes/ found") from err
        spec = importlib.util.spec_from_file_location(
            "onnxcomp.passes", src, submodule_search_locations=[str(src.parent)]
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["onnxcomp.passes"] = module
        import onnxcomp

        onnxcomp.passes = module  # type: ignore[attr-defined]
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop("onnxcomp.passes", None)
            raise
    _LIBRARY_LOADED = True


def registry() -> dict[str, type[Pass]]:
    load_pass_library()
    return dict(sorted(_REGISTRY.items()))


def get_pass(name: str) -> type[Pass]:
    passes = registry()
    try:
        return passes[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(passes), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unknown pass {name!r}{hint}; valid passes: {', '.join(passes)}") from None


# --------------------------------------------------------------------------------------------- options
def option_fields(cls: type[Pass]) -> list[dataclasses.Field]:
    return list(dataclasses.fields(cls.Options))


def option_types(cls: type[Pass]) -> dict[str, Any]:
    module = sys.modules.get(cls.__module__)
    # localns, not globalns: each base Options resolves its annotations in its own module first (a pass
    # inheriting ShareOptions need not import the typing names the base uses)
    return typing.get_type_hints(cls.Options, localns=vars(module) if module else None)


def describe_type(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "|".join(str(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in get_args(tp) if a is not type(None))
    if origin in (list, tuple):
        return f"list of {describe_type(get_args(tp)[0])}"
    if origin is dict:
        k, v = get_args(tp)
        return f"map {describe_type(k)}:{describe_type(v)}"
    return getattr(tp, "__name__", str(tp))


def build_options(cls: type[Pass], raw: dict[str, Any]) -> Any:
    """Options instance from raw values (strings from a pass spec, or TOML values), type-checked."""
    fields = {f.name: f for f in option_fields(cls)}
    hints = option_types(cls)
    values = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in fields:
            valid = ", ".join(f.replace("_", "-") for f in fields) or "none"
            close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0].replace('_', '-')}?" if close else ""
            raise UsageError(f"pass {cls.name!r} has no option {key!r}{hint}; valid options: {valid}")
        if name in values:
            raise UsageError(f"pass {cls.name!r}: option {key!r} is given twice")
        try:
            values[name] = coerce(value, hints[name])
        except (TypeError, ValueError) as err:
            raise UsageError(
                f"pass {cls.name!r} option {name.replace('_', '-')}={value!r}: {err} "
                f"(expected {describe_type(hints[name])})"
            ) from err
    return cls.Options(**values)


def coerce(value: Any, tp: Any) -> Any:
    """Convert ``value`` (a string from the command line, or a TOML value) to the type ``tp``."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "")):
            if type(None) in get_args(tp):
                return None
        errors = []
        for a in args:
            try:
                return coerce(value, a)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError("; ".join(errors))
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(map(str, choices))}")
        return value
    if origin in (list, tuple):
        (inner, *_) = get_args(tp) or (str,)
        items = _split_list(value)
        out = [coerce(v, inner) for v in items]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        ktp, vtp = get_args(tp)
        if isinstance(value, dict):
            pairs = list(value.items())
        else:
            pairs = []
            for item in _split_list(value):
                if ":" not in item:
                    raise ValueError(f"expected key:value pairs separated by ';', got {item!r}")
                k, v = item.rsplit(":", 1)
                pairs.append((k.strip(), v.strip()))
        return {coerce(k, ktp): coerce(v, vtp) for k, v in pairs}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("must be true or false")
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be an integer")
        try:
            return int(value)
        except ValueError:
            raise ValueError("must be an integer") from None
    if tp is float:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        try:
            return float(value)
        except ValueError:
            raise ValueError("must be a number") from None
    if tp is str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value
    return tp(value)


def _split_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        return [v.strip() for v in value.replace("|", ";").split(";") if v.strip()]
    return [value]


def iter_option_docs(cls: type[Pass]) -> Iterator[tuple[str, str, Any, str]]:
    """(name, type, default, help) per option, for ``onnxcomp passes``."""
    hints = option_types(cls)
    for f in option_fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        yield f.name.replace("_", "-"), describe_type(hints[f.name]), default, f.metadata.get("help", "")


def opt(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field with a help text: ``ratio: float = opt(0.5, "fraction of filters to remove")``."""
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)
