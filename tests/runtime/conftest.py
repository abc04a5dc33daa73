"""Fixtures for the native runtime tests: the library is built on demand in a source checkout."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def runtime_lib() -> Path:
    from onnxcomp import runtime

    if not runtime.available():
        try:
            runtime.build(quiet=True)
        except Exception as e:  # pragma: no cover - depends on the machine
            msg = f"native runtime not available and could not be built: {e}"
            if os.environ.get("CI"):
                pytest.fail(msg)
            pytest.skip(msg)
    return runtime.library_path()


@pytest.fixture(scope="session")
def ep_devices():
    """The OnnxcompExecutionProvider's devices (the EP library registered once for the process)."""
    from onnxcomp import runtime

    if not runtime.ep_available():
        if os.environ.get("CI"):
            pytest.fail("libonnxcomp_ep.so is not built")
        pytest.skip("libonnxcomp_ep.so is not built")
    return runtime.register_ep()


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: long-running test (still part of CI)")
