"""Loader for the native com.onnxcomp runtime (libonnxcomp_ops.so), an onnxruntime custom-op library.

Models whose compressed layers use ``com.onnxcomp`` ops also carry each op's standard-op function
body, so they run in plain onnxruntime; registering this library makes onnxruntime run the native
kernels instead. onnxruntime is imported lazily (only by :func:`register` and :func:`session`).

Where the library is looked for, first hit wins:

1. ``$ONNXCOMP_RUNTIME_LIBRARY`` (a path to the .so),
2. next to this module (``onnxcomp/libonnxcomp_ops.so``, where ``pip install .`` puts it),
3. a source-checkout build at ``<repo>/build/runtime/libonnxcomp_ops.so``
   (made by ``python -m onnxcomp.runtime build``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from onnxcomp.ops.spec import DOMAIN

__all__ = [
    "DOMAIN",
    "LIBRARY_NAME",
    "RuntimeNotBuiltError",
    "available",
    "build",
    "library_path",
    "register",
    "session",
    "uses_runtime_ops",
]

LIBRARY_NAME = "libonnxcomp_ops.so"
ENV_LIBRARY = "ONNXCOMP_RUNTIME_LIBRARY"

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _PACKAGE_DIR.parent


class RuntimeNotBuiltError(RuntimeError):
    """The native runtime library is not installed or built."""


def _source_build_dir() -> Path | None:
    """The build directory of a source checkout, or None when running from an installed package."""
    if (_REPO_ROOT / "runtime" / "CMakeLists.txt").is_file():
        return _REPO_ROOT / "build" / "runtime"
    return None


def _candidates() -> list[Path]:
    out = [_PACKAGE_DIR / LIBRARY_NAME]
    build_dir = _source_build_dir()
    if build_dir is not None:
        out.append(build_dir / LIBRARY_NAME)
        installed = _installed_library()  # a source checkout imported while the wheel is also installed
        if installed is not None and installed not in out:
            out.append(installed)
    return out


def _installed_library() -> Path | None:
    """Where the installed distribution put the library, if onnxcomp is installed."""
    from importlib import metadata

    try:
        dist = metadata.distribution("onnxcomp")
    except metadata.PackageNotFoundError:
        return None
    return Path(str(dist.locate_file(f"onnxcomp/{LIBRARY_NAME}"))).resolve()


def library_path() -> Path:
    """Path of libonnxcomp_ops.so; raises RuntimeNotBuiltError when there is none."""
    env = os.environ.get(ENV_LIBRARY)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise RuntimeNotBuiltError(f"{ENV_LIBRARY}={env} does not name a file")
        return p.resolve()
    for p in _candidates():
        if p.is_file():
            return p
    looked = ", ".join(str(p) for p in _candidates())
    hint = (
        "build it with `python -m onnxcomp.runtime build`"
        if _source_build_dir() is not None
        else "reinstall onnxcomp where the onnxruntime headers can be found (see runtime/README.md)"
    )
    raise RuntimeNotBuiltError(
        f"the onnxcomp native runtime ({LIBRARY_NAME}) is not built: looked in {looked}; {hint}, "
        f"or point {ENV_LIBRARY} at a built library"
    )


def available() -> bool:
    """True when the native runtime library can be found (it is not loaded)."""
    try:
        library_path()
    except RuntimeNotBuiltError:
        return False
    return True


def register(session_options: Any) -> Any:
    """Registers the com.onnxcomp kernels with an ``onnxruntime.SessionOptions``; returns it."""
    session_options.register_custom_ops_library(str(library_path()))
    return session_options


def _load_model(model_or_path: Any) -> Any:
    import onnx

    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    if isinstance(model_or_path, (bytes, bytearray)):
        return onnx.load_model_from_string(bytes(model_or_path))
    return onnx.load(os.fspath(model_or_path), load_external_data=False)


def uses_runtime_ops(model_or_path: Any) -> bool:
    """True when the model (ModelProto, serialized bytes or path) has com.onnxcomp nodes."""
    model = _load_model(model_or_path)

    def in_graph(graph: Any) -> bool:
        for node in graph.node:
            if node.domain == DOMAIN:
                return True
            for attr in node.attribute:
                if attr.g.node and in_graph(attr.g):
                    return True
                if any(in_graph(g) for g in attr.graphs):
                    return True
        return False

    if in_graph(model.graph):
        return True
    return any(f.domain != DOMAIN and any(n.domain == DOMAIN for n in f.node) for f in model.functions)


def session(
    model_or_path: Any,
    *,
    threads: int | None = None,
    optimize: bool = True,
    providers: list[str] | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` for a model, with the runtime registered when it uses
    com.onnxcomp ops (and raising RuntimeNotBuiltError if it does and the runtime is missing).

    ``threads`` sets intra-op threads (None: onnxruntime's default); ``optimize=False`` turns
    onnxruntime's graph optimizations off.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if isinstance(model_or_path, (str, os.PathLike)):
        source: Any = os.fspath(model_or_path)
        needs = uses_runtime_ops(source)
    else:
        model = _load_model(model_or_path)
        needs = uses_runtime_ops(model)
        source = model.SerializeToString()
    if needs:
        register(so)
    return ort.InferenceSession(source, so, providers=providers or ["CPUExecutionProvider"])


def build(build_dir: str | os.PathLike | None = None, *, build_type: str = "Release", quiet: bool = False) -> Path:
    """Builds the runtime from a source checkout with CMake (into build/runtime by default)."""
    src = _REPO_ROOT / "runtime"
    if not (src / "CMakeLists.txt").is_file():
        raise RuntimeNotBuiltError(f"no runtime sources at {src}: build() needs a source checkout")
    out = Path(build_dir) if build_dir is not None else _REPO_ROOT / "build" / "runtime"
    cmake = shutil.which("cmake")
    if cmake is None:
        raise RuntimeNotBuiltError("cmake is not on PATH (pip install cmake ninja)")
    cfg = [cmake, "-S", str(src), "-B", str(out), f"-DCMAKE_BUILD_TYPE={build_type}"]
    if shutil.which("ninja"):
        cfg += ["-G", "Ninja"]
    kw: dict[str, Any] = {"check": True}
    if quiet:
        kw.update(stdout=subprocess.DEVNULL)
    subprocess.run(cfg, **kw)
    subprocess.run([cmake, "--build", str(out), "-j", str(os.cpu_count() or 1)], **kw)
    lib = out / LIBRARY_NAME
    if not lib.is_file():
        raise RuntimeNotBuiltError(f"the build did not produce {lib}; see the CMake messages above")
    return lib


def _main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "path"
    if cmd == "build":
        print(build(argv[1] if len(argv) > 1 else None))
        return 0
    if cmd == "path":
        try:
            print(library_path())
        except RuntimeNotBuiltError as e:
            print(e, file=sys.stderr)
            return 1
        return 0
    print("usage: python -m onnxcomp.runtime [path | build [BUILD_DIR]]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
