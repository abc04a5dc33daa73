"""Run the command line in-process and check the one-line error contract."""

from __future__ import annotations

from pathlib import Path

import onnx

from onnxcomp.cli import main


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, without_notes(out.err)


def without_notes(err: str) -> str:
    """stderr without the once-per-installation ``note:`` that an install without the native runtime prints."""
    return "".join(line for line in err.splitlines(keepends=True) if not line.startswith("note: "))


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def assert_one_line_error(code: int, err: str, expected: int = 2) -> None:
    """Exit code as expected, stderr exactly one ``error: ...`` line, no traceback."""
    assert code == expected, (code, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
