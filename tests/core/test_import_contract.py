"""The import contract, checked on the source: the layering docs/design.md states.

1. The core (``onnxcomp/``) never imports a pass: it loads the pass library by name (``load_pass_library``).
2. No pass family imports another family's private modules (``passes/<family>/_name.py``); a family's public
   helpers are what its package re-exports.
3. Tests and benchmarks use public APIs: no pass-private module either.
4. No module uses another module's private name (``from onnxcomp.io import _x``, ``io._x``): a helper that other
   modules need is public.

Imports are read with ``ast`` (those inside functions included), relative ones resolved against the module's
package (``passes/`` is installed as ``onnxcomp.passes``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PASSES = "onnxcomp.passes"


def module_name(path: Path) -> str:
    """The dotted name a source file is imported as."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "passes":
        parts = ["onnxcomp", "passes", *parts[1:]]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, list[str]]]:
    """(line, absolute module names) of every import statement in ``source``: ``import X`` gives X,
    ``from X import y`` gives X and X.y (y may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield node.lineno, [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = from_target(node, package)
            yield node.lineno, [target, *(f"{target}.{a.name}" for a in node.names)]


def from_target(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a ``from ... import`` statement reads from (relative ones resolved in ``package``)."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join([*base, node.module] if node.module else base)


def is_module(name: str) -> bool:
    """Whether a dotted name is one of the project's modules or packages (``onnxcomp.passes`` is ``passes/``)."""
    parts = name.split(".")
    if parts[:2] == ["onnxcomp", "passes"]:
        parts = ["passes", *parts[2:]]
    elif parts[0] not in ("onnxcomp", "tests", "benchmarks", "models"):
        return False
    path = ROOT.joinpath(*parts)
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, ``module.name``) of every private name of another project module that ``source`` uses: imported
    (``from X import _y``) or read as an attribute of an imported module (``X._y``). Private modules are not
    names (rules 2 and 3 judge those)."""
    tree = ast.parse(source)
    bound: dict[str, str] = {}  # local name -> project module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if is_module(a.name):
                    bound[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            target = from_target(node, module if is_package else module.rpartition(".")[0])
            for a in node.names:
                full = f"{target}.{a.name}"
                if is_module(full):
                    bound[a.asname or a.name] = full
                elif is_private(a.name) and is_module(target) and target != module:
                    yield node.lineno, full
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and is_private(node.attr):
            owner = bound.get(node.value.id)
            if owner is not None and owner != module and not is_module(f"{owner}.{node.attr}"):
                yield node.lineno, f"{owner}.{node.attr}"


def pass_family(name: str) -> str | None:
    """The family of a module under onnxcomp.passes (``onnxcomp.passes.share._emit`` -> ``share``)."""
    parts = name.split(".")
    return parts[2] if name.startswith(PASSES + ".") and len(parts) > 2 else None


def is_private_pass_module(name: str) -> bool:
    """A family's private module (``onnxcomp.passes.<family>._x``, or anything inside one)."""
    parts = name.split(".")
    return name.startswith(PASSES + ".") and len(parts) > 3 and parts[3].startswith("_") and parts[3] != "__init__"


def violations(path: Path, source: str | None = None) -> list[str]:
    """The contract rules a source file breaks, one line each."""
    module = module_name(path)
    source = path.read_text() if source is None else source
    own = pass_family(module)
    core = module.startswith("onnxcomp.") and own is None and not module.startswith(PASSES)
    found = []
    for line, names in imports(source, module, path.name == "__init__.py"):
        for name in names:  # one finding per statement
            where = f"{path.relative_to(ROOT)}:{line}: {name}"
            if core and (name == PASSES or name.startswith(PASSES + ".")):
                found.append(f"{where}: the core imports a pass")
            elif own is not None and is_private_pass_module(name) and pass_family(name) != own:
                found.append(f"{where}: pass family {own!r} imports another family's private module")
            elif own is None and not core and is_private_pass_module(name):
                found.append(f"{where}: tests and benchmarks use public APIs, not a pass-private module")
            else:
                continue
            break
    for line, name in private_uses(source, module, path.name == "__init__.py"):
        found.append(f"{path.relative_to(ROOT)}:{line}: {name}: uses another module's private name")
    return found


def sources() -> list[Path]:
    trees = ("onnxcomp", "passes", "tests", "benchmarks", "models")
    return sorted(p for t in trees for p in (ROOT / t).rglob("*.py") if "build" not in p.parts)


def test_the_source_tree_keeps_the_import_contract():
    files = sources()
    assert len([f for f in files if f.parts[len(ROOT.parts)] == "passes"]) > 20  # the tree was really walked
    broken = [v for f in files for v in violations(f)]
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize(
    ("path", "source", "rule"),
    [
        ("onnxcomp/api.py", "from onnxcomp.passes.share import kmeans\n", "the core imports a pass"),
        ("onnxcomp/api.py", "def f():\n    import onnxcomp.passes\n", "the core imports a pass"),
        ("passes/share/kmeans.py", "from ..prune._apply import set_const\n", "another family's private module"),
        ("passes/share/kmeans.py", "from onnxcomp.passes.prune import _select\n", "another family's private module"),
        ("tests/passes/share/test_x.py", "from onnxcomp.passes.share._emit import FORMATS\n", "public APIs"),
        ("benchmarks/x.py", "import onnxcomp.passes.prune._recon\n", "public APIs"),
        ("onnxcomp/api.py", "def f():\n    from onnxcomp.ort import _quiet_logger\n", "private name"),
        ("tests/core/test_x.py", "from onnxcomp import io\nio._has_external(m)\n", "private name"),
        ("passes/share/kmeans.py", "from . import _emit\n_emit._private(g)\n", "private name"),
    ],
)
def test_a_violation_is_found(path, source, rule):
    found = violations(ROOT / path, source)
    assert len(found) == 1 and rule in found[0], found


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("onnxcomp/passes_api.py", "import importlib\nimportlib.import_module('onnxcomp.passes')\n"),
        ("passes/share/kmeans.py", "from ._emit import emit_encoded\nfrom onnxcomp.analysis.weights import Target\n"),
        ("passes/prune/prune_filters.py", "from onnxcomp.passes.share import kmeans_1d\n"),
        ("tests/passes/prune/test_x.py", "from onnxcomp.passes.prune import choose\n"),
        ("passes/share/kmeans.py", "from . import _gather\nfrom onnxcomp.ops import huffman as _huffman\n"),
        ("tests/core/test_x.py", "from onnxcomp import io\nio.save_external(m, p)\nio.__name__\n"),
    ],
)
def test_allowed_imports_pass(path, source):
    assert violations(ROOT / path, source) == []
