"""The native runtime and the OnnxcompExecutionProvider on other onnxruntime releases, each in its own venv.

The project's venv has one onnxruntime (the newest allowed); the libraries promise C API 29 as the floor, i.e.
onnxruntime 1.29 through the newest. This script builds a fresh venv per version (in --dir, default a temporary
directory), installs onnxruntime==VERSION from PyPI with the project's other dependencies and pytest/hypothesis,
and runs the runtime and EP tests there on the libraries built in this checkout (build/runtime, or
$ONNXCOMP_RUNTIME_LIBRARY / $ONNXCOMP_EP_LIBRARY), with the repository on PYTHONPATH.

    python tests/runtime/ort_versions.py                    # 1.29.0
    python tests/runtime/ort_versions.py 1.29.0 1.30.0 --dir /tmp/ortvenvs -k ep
Exit status: 0 when every version passed, 1 otherwise (2 for usage errors).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = [
    "tests/runtime/test_ep.py",
    "tests/runtime/test_ep_conv.py",
    "tests/runtime/test_decoders.py",
    "tests/runtime/test_runtime_ops.py",
    "tests/runtime/test_winograd.py",
]


def requirements(version: str) -> list[str]:
    """The project's dependencies with onnxruntime pinned to `version`, plus the test runners."""
    block = re.search(r"^dependencies = \[(.*?)^\]", (REPO / "pyproject.toml").read_text(), re.S | re.M)
    deps = re.findall(r'"([^"]+)"', block.group(1)) if block else []
    out = [d for d in deps if not d.replace(" ", "").startswith("onnxruntime")]
    return [*out, f"onnxruntime=={version}", "pytest>=8", "hypothesis>=6.100"]


def run_version(version: str, root: Path, pytest_args: list[str]) -> bool:
    env_dir = root / f"ort-{version}"
    if not (env_dir / "bin" / "python").exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    py = str(env_dir / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", *requirements(version)], check=True)
    got = subprocess.run(
        [py, "-c", "import onnxruntime; print(onnxruntime.__version__)"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if got != version:
        print(f"onnxruntime {version}: the venv has {got}", file=sys.stderr)
        return False
    build = REPO / "build" / "runtime"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "ONNXCOMP_RUNTIME_LIBRARY": os.environ.get("ONNXCOMP_RUNTIME_LIBRARY", str(build / "libonnxcomp_ops.so")),
        "ONNXCOMP_EP_LIBRARY": os.environ.get("ONNXCOMP_EP_LIBRARY", str(build / "libonnxcomp_ep.so")),
        "CI": "1",  # a missing library fails instead of skipping
    }
    res = subprocess.run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS, *pytest_args], cwd=REPO, env=env)
    print(f"onnxruntime {version}: {'passed' if res.returncode == 0 else 'FAILED'}", flush=True)
    return res.returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("versions", nargs="*", default=["1.29.0"], help="onnxruntime versions (default 1.29.0)")
    ap.add_argument("--dir", default=None, help="where the venvs go (kept for reuse); default: a temporary directory")
    ap.add_argument("-k", default=None, help="pytest -k expression")
    args = ap.parse_args()
    for lib in ("libonnxcomp_ops.so", "libonnxcomp_ep.so"):
        if not (REPO / "build" / "runtime" / lib).is_file() and "ONNXCOMP_RUNTIME_LIBRARY" not in os.environ:
            print(f"no build/runtime/{lib}: build it first (python -m onnxcomp.runtime build)", file=sys.stderr)
            return 2
    extra = ["-k", args.k] if args.k else []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir) if args.dir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        ok = [run_version(v, root, extra) for v in args.versions]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    raise SystemExit(main())
