"""Loader for the native com.onnxcomp runtime: libonnxcomp_ops.so (an onnxruntime custom-op library) and
libonnxcomp_ep.so (the OnnxcompExecutionProvider plugin execution provider).

Models whose compressed layers use ``com.onnxcomp`` ops also carry each op's standard-op function
body, so they run in plain onnxruntime; registering this library makes onnxruntime run the native
kernels instead. onnxruntime is imported lazily (only by :func:`register` and :func:`session`).

Three runtimes run a compressed model (:func:`session`, ``runtime=``; unset: ``"ep"`` where its library is
built and the model has com.onnxcomp ops, the fastest of the three on convolution networks: a 4-bit k-means
ResNet-18 ran 1.78x its fp32 original under the EP, 0.80x with the custom-op library, whose kernels break
onnxruntime's blocked-layout chains; benchmarks/bench_ep.py):

- ``"ort"``: plain onnxruntime; each com.onnxcomp op runs its function body (onnxruntime folds the weight
  decode at load, so convolutions run in its own kernels);
- ``"ops"``: the custom-op library registered: native kernels for every com.onnxcomp op;
- ``"ep"``: the execution provider registered: it claims the compressed matmuls and their weight decoders
  where its kernels win and declines the rest, which then runs as under ``"ort"`` (big weight decoders are
  decoded once natively when the session is made: :func:`predecoded`).

Where a library is looked for, first hit wins (the EP library the same way, with ``$ONNXCOMP_EP_LIBRARY``):

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
    "RUNTIMES",
    "RuntimeNotBuiltError",
    "RuntimeStatus",
    "available",
    "build",
    "build_info",
    "ep_available",
    "get_ep_library_path",
    "get_ep_name",
    "library_path",
    "predecoded",
    "register",
    "register_ep",
    "session",
    "status",
    "uses_runtime_ops",
]

LIBRARY_NAME = "libonnxcomp_ops.so"
ENV_LIBRARY = "ONNXCOMP_RUNTIME_LIBRARY"
BUILD_INFO = "runtime_build.json"  # written by runtime/CMakeLists.txt beside the library: built or not, and why
EP_LIBRARY_NAME = "libonnxcomp_ep.so"
ENV_EP_LIBRARY = "ONNXCOMP_EP_LIBRARY"
EP_NAME = "OnnxcompExecutionProvider"
RUNTIMES = ("ort", "ops", "ep")

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _PACKAGE_DIR.parent


class RuntimeNotBuiltError(RuntimeError):
    """The native runtime library is not installed or built."""


def _source_build_dir() -> Path | None:
    """The build directory of a source checkout, or None when running from an installed package."""
    if (_REPO_ROOT / "runtime" / "CMakeLists.txt").is_file():
        return _REPO_ROOT / "build" / "runtime"
    return None


def _candidates(name: str = LIBRARY_NAME) -> list[Path]:
    out = [_PACKAGE_DIR / name]
    build_dir = _source_build_dir()
    if build_dir is not None:
        out.append(build_dir / name)
        installed = _installed_library(name)  # a source checkout imported while the wheel is also installed
        if installed is not None and installed not in out:
            out.append(installed)
    return out


def _installed_library(name: str = LIBRARY_NAME) -> Path | None:
    """Where the installed distribution put a library, if onnxcomp is installed."""
    from importlib import metadata

    try:
        dist = metadata.distribution("onnxcomp")
    except metadata.PackageNotFoundError:
        return None
    return Path(str(dist.locate_file(f"onnxcomp/{name}"))).resolve()


def _find(name: str, env_var: str) -> Path:
    env = os.environ.get(env_var)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise RuntimeNotBuiltError(f"{env_var}={env} does not name a file")
        return p.resolve()
    candidates = _candidates() if name == LIBRARY_NAME else _candidates(name)
    for p in candidates:
        if p.is_file():
            return p
    looked = ", ".join(str(p) for p in candidates)
    hint = (
        "build it with `python -m onnxcomp.runtime build`"
        if _source_build_dir() is not None
        else "reinstall onnxcomp where the onnxruntime headers can be found (see runtime/README.md)"
    )
    raise RuntimeNotBuiltError(
        f"the onnxcomp native runtime ({name}) is not built: looked in {looked}; {hint}, "
        f"or point {env_var} at a built library"
    )


def library_path() -> Path:
    """Path of libonnxcomp_ops.so; raises RuntimeNotBuiltError when there is none."""
    return _find(LIBRARY_NAME, ENV_LIBRARY)


def get_ep_library_path() -> Path:
    """Absolute path of libonnxcomp_ep.so (the execution provider); raises RuntimeNotBuiltError when there is none."""
    return _find(EP_LIBRARY_NAME, ENV_EP_LIBRARY)


def get_ep_name() -> str:
    """The execution provider's name, as onnxruntime lists it: ``OnnxcompExecutionProvider``."""
    return EP_NAME


def ep_available() -> bool:
    """True when libonnxcomp_ep.so can be found (it is not loaded)."""
    try:
        get_ep_library_path()
    except RuntimeNotBuiltError:
        return False
    return True


def register_ep() -> list[Any]:
    """Registers the execution provider library with onnxruntime (process-wide, once) and returns its
    ``OrtEpDevice`` list, for ``SessionOptions.add_provider_for_devices``.

    Once registered, onnxruntime's automatic selection policies (``set_provider_selection_policy``) may
    pick this EP for every policy-based session of the process; it only claims com.onnxcomp nodes.
    """
    import onnxruntime as ort

    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    if not devices:
        path = get_ep_library_path()
        try:
            ort.register_execution_provider_library(EP_NAME, str(path))
        except Exception as err:  # onnxruntime raises its own exception types
            raise RuntimeNotBuiltError(f"onnxruntime cannot load {path}: {' '.join(str(err).split())[:300]}") from err
        devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    if not devices:
        raise RuntimeNotBuiltError(f"{EP_NAME} offers no device on this machine (it runs on x86-64 CPUs)")
    return devices


def available() -> bool:
    """True when the native runtime library can be found (it is not loaded)."""
    try:
        library_path()
    except RuntimeNotBuiltError:
        return False
    return True


def build_info() -> dict[str, str] | None:
    """What the build recorded in runtime_build.json (``{"runtime": "built" | "not built", "reason": ...}``).

    Read beside the library in use, else from the first place the library is looked for that has the file;
    None when no build left one (a source checkout never built).
    """
    import json

    places = []
    try:
        places.append(library_path().parent)
    except RuntimeNotBuiltError:
        pass
    places += [p.parent for p in _candidates()]
    for place in places:
        f = place / BUILD_INFO
        if f.is_file():
            try:
                data = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                return {str(k): str(v) for k, v in data.items()} | {"file": str(f)}
    return None


class RuntimeStatus:
    """The native runtime as this installation has it: built or not (and why), the library, its kernels' ISA."""

    def __init__(self, library: Path | None, reason: str, isa: str | None) -> None:
        self.library, self.reason, self.isa = library, reason, isa

    @property
    def built(self) -> bool:
        return self.library is not None

    def describe(self) -> str:
        if self.library is None:
            return f"not built ({self.reason}); compressed models run through their standard-op function bodies"
        return f"built ({self.library}), kernels: {self.isa or 'unknown'}"


def status() -> RuntimeStatus:
    """The runtime's status: the library found (and the ISA its kernels dispatch to on this CPU), or why not."""
    try:
        lib = library_path()
    except RuntimeNotBuiltError as err:
        info = build_info()
        if info is not None and info.get("runtime") == "not built" and info.get("reason"):
            return RuntimeStatus(None, f"at install: {info['reason']}", None)
        return RuntimeStatus(None, str(err), None)
    return RuntimeStatus(lib, "", kernel_isa(lib))


def kernel_isa(lib: Path) -> str | None:
    """The instruction set the library's kernels dispatch to on this CPU (its ``OnnxcompKernelIsa()``):
    "avx512", "avx2" or "scalar" (capped by $ONNXCOMP_ISA); None when the library cannot be loaded."""
    import ctypes

    try:
        handle = ctypes.CDLL(str(lib))
        fn = handle.OnnxcompKernelIsa
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_char_p
    return fn().decode()


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
    """True when the model (ModelProto, serialized bytes or path) has com.onnxcomp nodes
    (:func:`onnxcomp.ops.uses_ops`: subgraphs and functions included)."""
    from onnxcomp.ops import uses_ops

    return uses_ops(_load_model(model_or_path))


# Coded bytes above which folding the decoders' function bodies at load gets slow (~80 bytes of temporaries per
# coded bit: 1 MB of streams folds through ~0.6 GB)
DECODER_FOLD_LIMIT = 1 << 18


def coded_decoder_bytes(model_or_path: Any) -> int:
    """Bytes of the constant streams and symbols read by the main graph's HuffmanDecode / RunLengthDecode nodes."""
    model = _load_model(model_or_path)
    sizes = {t.name: len(t.raw_data) for t in model.graph.initializer}
    total = 0
    for n in model.graph.node:
        if n.domain == DOMAIN and n.op_type in ("HuffmanDecode", "RunLengthDecode") and n.input:
            total += sizes.get(n.input[0], 0)
    return total


def predecoded(model: Any) -> Any:
    """A copy of ``model`` (a ModelProto) whose main-graph HuffmanDecode / RunLengthDecode nodes over initializers
    are replaced by their outputs, decoded once by the custom-op library, as initializers; None when it has none or
    keeps weights in external files (which a copy loaded from bytes could not find).

    For the EP runtime: the library registered for the decoders alone would also run every CodebookConv the EP
    declines with its own kernels, on codes decoded at every run (a Deep-Compressed PP-LCNet orientation classifier
    ran 0.39x of its original so); with the codes as initializers onnxruntime folds the declined layers' function
    bodies at load and runs them in its own convolutions, and the EP sees constant codes."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer):
        return None
    # decoders over initializers, or over the outputs of such decoders (Huffman-coded run lengths), in graph order
    at: list[int] = []
    known = set(inits)
    for k, n in enumerate(graph.node):
        if (
            n.domain == DOMAIN
            and n.op_type in ("HuffmanDecode", "RunLengthDecode")
            and all(i in known for i in n.input if i)
        ):
            at.append(k)
            known.update(o for o in n.output if o)
    decoders = [graph.node[k] for k in at]
    if not decoders:
        return None
    reads = {i for n in decoders for i in n.input if i and i in inits}
    sub = onnx.helper.make_graph(
        [onnx.NodeProto.FromString(n.SerializeToString()) for n in decoders],
        "decoders",
        [],
        [onnx.ValueInfoProto(name=o) for n in decoders for o in n.output if o],
        [inits[i] for i in sorted(reads)],
    )
    sub_model = onnx.helper.make_model(sub, opset_imports=list(model.opset_import))
    sub_model.ir_version = model.ir_version
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    so.intra_op_num_threads = 1
    register(so)
    try:
        sess = ort.InferenceSession(sub_model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        values = dict(zip(names, sess.run(names, {}), strict=True))
    except Exception as err:  # onnxruntime raises its own exception types
        from onnxcomp.errors import InputError

        raise InputError(f"onnxruntime cannot decode the model's weights: {' '.join(str(err).split())[:300]}") from err
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    gone = set(at)
    keep = [n for k, n in enumerate(g.node) if k not in gone]
    del g.node[:]
    g.node.extend(keep)
    still = _reads(g) | {o.name for o in g.output}
    kept = [t for t in g.initializer if t.name not in reads or t.name in still]
    del g.initializer[:]
    g.initializer.extend(kept)
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in values.items() if k in still)
    return out


def _reads(graph: Any) -> set[str]:
    """Every tensor name the nodes of ``graph`` and of its bodies (If / Loop / Scan, nested) read."""
    names: set[str] = set()
    stack = [graph]
    while stack:
        g = stack.pop()
        for n in g.node:
            names.update(n.input)
            for a in n.attribute:
                stack.extend([a.g] if a.HasField("g") else list(a.graphs))
    return names


def session(
    model_or_path: Any,
    *,
    threads: int | None = None,
    optimize: bool = True,
    providers: list[str] | None = None,
    runtime: str | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` for a model on the chosen runtime (see the module docstring):

    - unset (None): ``"ep"`` for a model with com.onnxcomp ops where the EP library is built, else ``"ops"``;
    - ``runtime="ops"``: the custom-op library is registered when the model uses com.onnxcomp
      ops (RuntimeNotBuiltError if it does and the library is missing);
    - ``runtime="ep"``: the OnnxcompExecutionProvider is added; nodes it declines fall back to onnxruntime's
      own kernels through the ops' folded function bodies (where the model's HuffmanDecode / RunLengthDecode
      nodes read more than 256 kB, which would fold slowly, they are decoded once first: :func:`predecoded`);
    - ``runtime="ort"``: plain onnxruntime.

    ``threads`` sets intra-op threads (None: onnxruntime's default); ``optimize=False`` turns
    onnxruntime's graph optimizations off. The session is :func:`onnxcomp.ort.session`'s (one place sets
    onnxruntime's options; a model it cannot load is an :class:`onnxcomp.errors.InputError`).
    """
    from onnxcomp import ort

    if runtime is None:
        if not uses_runtime_ops(model_or_path):
            runtime = "ort"  # nothing for the library or the EP to run
        else:
            runtime = "ep" if available() and ep_available() else "ops"
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "ops" and not uses_runtime_ops(model_or_path):
        runtime = "ort"  # nothing for the library to run
    return ort.session(model_or_path, optimize=optimize, threads=threads, runtime=runtime, providers=providers)


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
    if not lib.is_file() or not (out / EP_LIBRARY_NAME).is_file():
        raise RuntimeNotBuiltError(f"the build did not produce {lib} and {EP_LIBRARY_NAME}; see the CMake output")
    return lib


def _main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "path"
    if cmd == "build":
        print(build(argv[1] if len(argv) > 1 else None))
        return 0
    if cmd == "status":
        print(status().describe())
        return 0
    if cmd in ("path", "ep-path"):
        try:
            print(library_path() if cmd == "path" else get_ep_library_path())
        except RuntimeNotBuiltError as e:
            print(e, file=sys.stderr)
            return 1
        return 0
    print("usage: python -m onnxcomp.runtime [path | ep-path | status | build [BUILD_DIR]]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
