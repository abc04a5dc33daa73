"""The hostile-input suite, calibration data (issue 9 items 10 and 18): every bad file is exit 2, one line,
before anything large is allocated, and no output is written."""

from __future__ import annotations

import io as pyio
import struct
import zipfile

import numpy as np
import pytest

from tests.support import models
from tests.support.cli import assert_one_line_error, run, save


@pytest.fixture
def model_path(tmp_path):
    return save(models.conv(dims=("N", 3, 8, 8)), tmp_path / "m.onnx")


def _npy_bytes(shape: tuple[int, ...], body: bytes = b"") -> bytes:
    """A .npy v1.0 file whose header claims ``shape`` float32, followed by ``body``."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape!r}, }}".encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body


def _calib_case(tmp_path, case: str):
    p = tmp_path / "calib.npz"
    if case == "zero samples":
        np.savez(p, x=np.zeros((0, 3, 8, 8), np.float32))
    elif case == "NaN":
        x = np.zeros((2, 3, 8, 8), np.float32)
        x[1, 0, 0, 0] = np.nan
        np.savez(p, x=x)
    elif case == "Inf":
        np.savez(p, x=np.full((2, 3, 8, 8), np.inf, np.float32))
    elif case == "64 TB npy header":
        p = tmp_path / "calib.npy"
        p.write_bytes(_npy_bytes((1 << 36, 3, 8, 8), b"\0" * 64))  # 2**36 samples of 3x8x8 float32: 53 TB
    elif case == "64 TB npz member":
        p = tmp_path / "calib.npz"
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("x.npy", _npy_bytes((1 << 36, 3, 8, 8), b"\0" * 64))
    elif case == "truncated npy":
        p = tmp_path / "calib.npy"
        p.write_bytes(_npy_bytes((4, 3, 8, 8), b"\0" * 100))
    elif case == "pickle":
        p = tmp_path / "calib.npy"
        np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif case == "not numpy":
        p = tmp_path / "calib.npz"
        p.write_text("x,y\n1,2\n")
    elif case == "zip of text":
        buf = pyio.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("notes.txt", "hello")
        p.write_bytes(buf.getvalue())
    return p


CASES = {
    "zero samples": "has no samples",
    "NaN": "1 NaN/Inf values",
    "Inf": "384 NaN/Inf values",
    "64 TB npy header": "header claims shape",
    "64 TB npz member": "header claims shape",
    "truncated npy": "header claims shape",
    "pickle": "Python objects",
    "not numpy": "not a .npy or .npz file",
    "zip of text": "not a .npy array",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_calibration_data_exit_2_one_line(tmp_path, capsys, model_path, case):
    calib = _calib_case(tmp_path, case)
    out = tmp_path / "o.onnx"
    code, _, err = run(capsys, "optimize", model_path, out, "--calib", calib, "--verify")
    assert_one_line_error(code, err)
    assert CASES[case] in err, err
    assert "pickled" not in err or case == "pickle"
    assert not out.exists()


def test_inputs_with_different_sample_counts(tmp_path, capsys):
    p = save(models.text(), tmp_path / "t.onnx")
    np.savez(tmp_path / "c.npz", input_ids=np.zeros((3, 5), np.int64), attention_mask=np.ones((2, 5), np.int64))
    code, _, err = run(capsys, "optimize", p, tmp_path / "o.onnx", "--calib", tmp_path / "c.npz", "--verify")
    assert_one_line_error(code, err)
    assert "different numbers of samples (input_ids: 3, attention_mask: 2)" in err
