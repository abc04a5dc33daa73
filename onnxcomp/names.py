"""Layer-name patterns in pass options (``protect=``, ``layers=``, ``ratios=``, ``bits-per-layer=``, ...): the one
matcher every pass uses.

A pattern is a name or an fnmatch glob. It matches a layer when it matches, exactly or as a glob:

- the node's name or its weight's name (``/conv1/Conv``, ``conv1.weight``), or
- the exporter's module path of either, or anything under that path. PyTorch names a node after the module
  that made it (``/layer1/layer1.0/conv1/Conv`` is module ``layer1.0.conv1``) and a weight after the module
  and the parameter (``layer1.0.conv1.weight``); Paddle names weights ``conv2d_0.w_0``. So ``conv1`` matches
  ``/conv1/Conv`` and ``conv1.weight``, ``layer1`` matches every layer of that block, and ``layer*.conv1``
  the first conv of every block.

Options holding patterns are found by name (:data:`PATTERN_OPTIONS`, and any ``*_per_layer`` map). Before a pass
runs, the pipeline checks every pattern against the graph: a pattern that matches no node, weight, tensor or
module path is a usage error listing the closest names (a typo must not silently protect or select nothing).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from onnxcomp.errors import UsageError

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

PATTERN_OPTIONS = ("protect", "layers", "ratios")


def module_path(name: str) -> str | None:
    """The exporter module path a node or weight name encodes, or None.

    ``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1`` (the last segment is the op; a segment that repeats
    its parent's path, as PyTorch writes children of Sequential, replaces it); ``layer1.0.conv1.weight`` ->
    ``layer1.0.conv1``; ``conv2d_0.w_0`` -> ``conv2d_0``.
    """
    if "/" in name:
        segments = [s for s in name.split("/") if s][:-1]
        path = ""
        for seg in segments:
            path = seg if not path or seg.startswith(path + ".") else f"{path}.{seg}"
        return path or None
    if "." in name:
        return name.rsplit(".", 1)[0] or None
    return None


def matches(pattern: str, *names: str) -> bool:
    """True when ``pattern`` matches one of ``names`` (node or weight names; see the module docstring)."""
    for name in names:
        if not name:
            continue
        if name == pattern or fnmatch.fnmatchcase(name, pattern):
            return True
        path = module_path(name)
        if path and (
            path == pattern or fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern + ".*")
        ):
            return True
    return False


def any_match(patterns: Iterable[str], *names: str) -> str | None:
    """The first of ``patterns`` matching one of ``names``, else None."""
    return next((p for p in patterns if matches(p, *names)), None)


def option_patterns(options: Any) -> dict[str, list[str]]:
    """Option name (kebab-case) -> the patterns it holds, for a pass's options dataclass."""
    out: dict[str, list[str]] = {}
    if not dataclasses.is_dataclass(options):
        return out
    for f in dataclasses.fields(options):
        if f.name not in PATTERN_OPTIONS and not f.name.endswith("_per_layer"):
            continue
        value = getattr(options, f.name)
        patterns = list(value) if isinstance(value, (list, tuple, dict)) else []
        if patterns:
            out[f.name.replace("_", "-")] = [str(p) for p in patterns]
    return out


def check_patterns(graph: gs.Graph, options: Any, pass_name: str) -> None:
    """UsageError when a pattern option of ``options`` matches nothing in ``graph``, listing the closest names."""
    wanted = option_patterns(options)
    if not wanted:
        return
    names = {n.name for n in graph.nodes if n.name} | {t for t in graph.tensors() if t}
    for option, patterns in wanted.items():
        for pattern in patterns:
            if any(matches(pattern, n) for n in names):
                continue
            candidates = sorted(names | {p for n in names if (p := module_path(n))})
            close = difflib.get_close_matches(pattern, candidates, n=5, cutoff=0.4)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise UsageError(
                f"pass {pass_name!r} option {option}: {pattern!r} matches no node, weight or module in the model" + hint
            )
