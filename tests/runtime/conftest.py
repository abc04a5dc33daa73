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


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: long-running test (still part of CI)")
