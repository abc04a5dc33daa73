"""Install without network or cached headers: CMake configures without the runtime and says why;
``onnxcomp --version`` and the first-use notice report the runtime's status."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from onnxcomp import cli, runtime

REPO = Path(__file__).resolve().parents[2]
UNREACHABLE = "http://127.0.0.1:9/onnxruntime.tgz"  # the discard port: connection refused at once


def _configure(tmp_path: Path, *defines: str, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Configure the top-level project (what pip's build runs) with an empty header cache."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake not on PATH")
    build = tmp_path / "build"
    cache = tmp_path / "cache"
    clean = {k: v for k, v in os.environ.items() if k not in ("ORT_INCLUDE_DIR", "ONNXCOMP_NO_DOWNLOAD")}
    clean.update(HOME=str(tmp_path), XDG_CACHE_HOME="", ONNXCOMP_CACHE_DIR=str(cache), **env)
    cmd = ["cmake", "-S", str(REPO), "-B", str(build), *defines]
    if shutil.which("ninja"):
        cmd += ["-G", "Ninja"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=clean, timeout=300)
    return res, build


def _info(build: Path) -> dict:
    return json.loads((build / "runtime_build.json").read_text())


def test_configure_offline_succeeds_without_the_runtime(tmp_path):
    """Downloads unreachable (offline): configure succeeds (it was a 'DOWNLOAD HASH mismatch' error)."""
    res, build = _configure(
        tmp_path, f"-DONNXCOMP_ORT_RELEASE_URL={UNREACHABLE}", f"-DONNXCOMP_ORT_NPM_URL={UNREACHABLE}"
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "HASH mismatch" not in out
    assert "onnxcomp: native runtime NOT built: no onnxruntime >= 1.29 headers" in out
    assert "neither download worked" in out
    info = _info(build)
    assert info["runtime"] == "not built" and "neither download worked" in info["reason"]


def test_configure_with_downloads_off(tmp_path):
    res, build = _configure(tmp_path, ONNXCOMP_NO_DOWNLOAD="1")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "fetching" not in out  # no download was tried
    assert "downloads are off (ONNXCOMP_NO_DOWNLOAD)" in _info(build)["reason"]


def test_configure_with_a_corrupt_npm_tarball(tmp_path):
    """A tarball whose sha256 is not the pinned one is refused, and configure still succeeds."""
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"not the onnxruntime package")
    res, build = _configure(
        tmp_path, f"-DONNXCOMP_ORT_RELEASE_URL={UNREACHABLE}", f"-DONNXCOMP_ORT_NPM_URL={junk.as_uri()}"
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "is not the pinned e59788788818" in out
    assert _info(build)["runtime"] == "not built"
    assert not any((tmp_path / "cache").rglob("*.h"))  # nothing unverified is cached


# ------------------------------------------------------------------------------------------- --version
def _version(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "onnxcomp", "--version", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_version_names_runtime_isa_and_onnxruntime():
    from importlib import metadata

    import onnxcomp

    if not runtime.available():
        pytest.skip("native runtime not built here")
    res = _version()
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == f"onnxcomp {onnxcomp.__version__}"
    assert lines[1] == f"native runtime: built ({runtime.library_path()}), kernels: {runtime.status().isa}"
    assert runtime.status().isa in ("avx512", "avx2", "scalar")
    assert f"onnxruntime {metadata.version('onnxruntime')}" in lines[2]
    capped = _version(ONNXCOMP_ISA="scalar")
    assert "kernels: scalar" in capped.stdout


def test_version_without_the_runtime_says_why(tmp_path):
    res = _version(ONNXCOMP_RUNTIME_LIBRARY=str(tmp_path / "missing.so"))
    assert res.returncode == 0
    assert "native runtime: not built (ONNXCOMP_RUNTIME_LIBRARY=" in res.stdout
    assert "standard-op function bodies" in res.stdout


def test_status_reports_the_install_time_reason(tmp_path, monkeypatch):
    """Installed without the runtime: the reason recorded by the build is what the status shows."""
    info = tmp_path / "runtime_build.json"
    info.write_text(json.dumps({"runtime": "not built", "reason": "downloads are off (ONNXCOMP_NO_DOWNLOAD)"}))
    monkeypatch.setattr(runtime, "_candidates", lambda: [tmp_path / runtime.LIBRARY_NAME])
    monkeypatch.delenv(runtime.ENV_LIBRARY, raising=False)
    st = runtime.status()
    assert not st.built
    assert st.describe().startswith("not built (at install: downloads are off (ONNXCOMP_NO_DOWNLOAD))")


def test_first_command_after_an_install_without_runtime_says_so_once(tmp_path, monkeypatch, capsys):
    info = tmp_path / "pkg" / "runtime_build.json"
    info.parent.mkdir()
    info.write_text(json.dumps({"runtime": "not built", "reason": "no headers and neither download worked"}))
    monkeypatch.setattr(runtime, "_candidates", lambda: [info.parent / runtime.LIBRARY_NAME])
    monkeypatch.delenv(runtime.ENV_LIBRARY, raising=False)
    monkeypatch.setenv("ONNXCOMP_CACHE_DIR", str(tmp_path / "cache"))
    assert cli.main(["passes"]) == 0
    err = capsys.readouterr().err
    assert "installed without its native runtime (no headers and neither download worked)" in err
    assert len(err.strip().splitlines()) == 1
    assert cli.main(["passes"]) == 0
    assert "native runtime" not in capsys.readouterr().err  # once
