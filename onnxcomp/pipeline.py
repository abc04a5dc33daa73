"""Pipelines: parse a pass spec or a TOML recipe, run the passes over the graph IR, collect the report.

Spec syntax (docs/design.md): comma-separated passes, options in parentheses, list values separated by ``;`` or
``|``, map values as ``key:value`` pairs::

    fold-constants,eliminate,fuse-bn,prune-filters(ratio=0.5,criterion=l1,protect=conv1|fc),kmeans(bits=4)

Recipe (TOML), kept in a team's repository::

    [[pass]]
    name = "fuse-bn"

    [[pass]]
    name = "prune-filters"
    ratio = 0.5
    protect = ["conv1", "fc*"]

    [verify]          # optional: the same options as the CLI flags
    enabled = true
    min_cosine = 0.99
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxcomp.errors import OnnxcompError, PassError, UsageError
from onnxcomp.names import check_patterns
from onnxcomp.passes_api import Pass, PassContext, PassResult, get_pass

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

logger = logging.getLogger(__name__)

DEFAULT_PIPELINE = "fold-constants,eliminate(duplicate_nodes=false),fuse-bn,fuse-hardswish,fuse-affine,eliminate"


@dataclasses.dataclass
class PassSpec:
    name: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def instantiate(self) -> Pass:
        cls = get_pass(self.name)
        return cls(**self.options)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        opts = ",".join(f"{k}={_fmt_value(v)}" for k, v in self.options.items())
        return f"{self.name}({opts})"


def _fmt_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ";".join(map(str, v))
    if isinstance(v, dict):
        return ";".join(f"{k}:{x}" for k, x in v.items())
    return str(v).lower() if isinstance(v, bool) else str(v)


def parse_spec(spec: str) -> list[PassSpec]:
    """``"a,b(x=1,y=2),c"`` -> [PassSpec('a'), PassSpec('b', {x: '1', y: '2'}), PassSpec('c')]."""
    out: list[PassSpec] = []
    for item in _split_top(spec, ","):
        item = item.strip()
        if not item:
            continue
        name, paren, rest = item.partition("(")
        name = name.strip()
        options: dict[str, Any] = {}
        if paren:
            if not rest.endswith(")"):
                raise UsageError(f"pass spec {item!r}: missing ')'")
            body = rest[:-1]
            for kv in _split_top(body, ","):
                if not kv.strip():
                    continue
                key, eq, value = kv.partition("=")
                if not eq or not key.strip():
                    raise UsageError(f"pass spec {item!r}: options are key=value, got {kv.strip()!r}")
                if key.strip() in options:
                    raise UsageError(f"pass spec {item!r}: option {key.strip()!r} is given twice")
                options[key.strip()] = value.strip()
        elif ")" in name:
            raise UsageError(f"pass spec {item!r}: unbalanced ')'")
        if not name:
            raise UsageError(f"pass spec {spec!r}: empty pass name")
        out.append(PassSpec(name, options))
    if not out:
        raise UsageError("empty pass spec")
    return out


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise UsageError(f"pass spec {text!r}: unbalanced ')'")
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise UsageError(f"pass spec {text!r}: unbalanced '('")
    parts.append("".join(cur))
    return parts


def load_recipe(path: str | os.PathLike[str]) -> tuple[list[PassSpec], dict[str, Any]]:
    """A TOML recipe -> (passes, settings such as [verify])."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError as err:
        raise UsageError(f"{p}: no such recipe file") from err
    except IsADirectoryError as err:
        raise UsageError(f"{p}: is a directory, expected a recipe .toml file") from err
    except OSError as err:
        raise UsageError(f"{p}: cannot read the recipe ({err.strerror or err})") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"{p}: invalid TOML ({err})") from err
    passes = data.get("pass")
    if not isinstance(passes, list) or not passes:
        raise UsageError(f"{p}: a recipe needs at least one [[pass]] table with a name")
    specs = []
    for i, table in enumerate(passes):
        if not isinstance(table, dict) or "name" not in table:
            raise UsageError(f"{p}: [[pass]] #{i + 1} has no name")
        opts = {k: v for k, v in table.items() if k != "name"}
        specs.append(PassSpec(str(table["name"]), opts))
    unknown = set(data) - {"pass", "verify"}
    if unknown:
        raise UsageError(f"{p}: unknown recipe sections {', '.join(sorted(unknown))}; valid: pass, verify")
    settings = {k: data[k] for k in ("verify",) if k in data}
    _check_verify_settings(p, settings.get("verify", {}))
    return specs, settings


def _check_verify_settings(p: Path, table: Any) -> None:
    """[verify]: known keys with values of the right type (a typo must not silently skip verification)."""
    if not isinstance(table, dict):
        raise UsageError(f"{p}: [verify] must be a table")
    unknown = set(table) - {"enabled", "atol", "rtol", "min_cosine"}
    if unknown:
        raise UsageError(
            f"{p}: [verify]: unknown settings {', '.join(sorted(unknown))}; valid: enabled, atol, rtol, min_cosine"
        )
    if not isinstance(table.get("enabled", False), bool):
        raise UsageError(f"{p}: [verify] enabled must be true or false")
    for key in ("atol", "rtol", "min_cosine"):
        value = table.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{p}: [verify] {key} must be a number")


def instantiate(specs: list[PassSpec]) -> list[Pass]:
    """Instantiate every pass first, so an unknown pass or option fails before any work."""
    return [s.instantiate() for s in specs]


def run_passes(graph: gs.Graph, passes: list[Pass], ctx: PassContext) -> list[PassResult]:
    """Run the passes in order; their numerics are pinned to 1 thread (:mod:`onnxcomp.determinism`)."""
    from onnxcomp.determinism import pinned

    with pinned():
        return _run_passes(graph, passes, ctx)


def _run_passes(graph: gs.Graph, passes: list[Pass], ctx: PassContext) -> list[PassResult]:
    results = []
    for p in passes:
        logger.info("running %s", p.name)
        check_patterns(graph, p.options, p.name)  # protect=/layers= patterns that match nothing are typos
        try:
            results.append(p(graph, ctx))
        except OnnxcompError:
            raise
        except Exception as err:
            raise PassError(
                f"pass {p.name!r} failed: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
            ) from err
    return results
