"""`onnxcomp hardware probe`: measures this machine and writes a profile that --hardware accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxcomp import hardware
from onnxcomp.cli import main


@pytest.mark.usefixtures("runtime_lib")
def test_probe_writes_a_profile_that_hardware_accepts(tmp_path, monkeypatch, capsys):
    """`onnxcomp hardware probe` (on a reduced layer set) writes a profile; optimize/inspect take it."""
    monkeypatch.setattr(hardware, "PROBE_LAYERS", ((8, 16, 28), (32, 32, 14), (64, 64, 14), (16, 16, 28)))
    out = tmp_path / "me.json"
    assert main(["hardware", "probe", "--output", str(out), "--name", "me", "--runs", "2"]) == 0
    data = json.loads(out.read_text())
    assert data["format"] == hardware.FORMAT and data["name"] == "me"
    assert data["peak_gflops"] > 1 and data["bandwidth_gbs"] > 0.1 and data["kernel_set"] in ("avx512", "avx2")
    assert len(data["measurements"]) == 4
    assert {"im2col", "im2col.k_half", "winograd4.gemm", "winograd4.transform"} <= set(data["efficiency"])
    assert all(0 < v <= 1 for k, v in data["efficiency"].items() if not k.endswith("_half"))
    hw = hardware.resolve(str(out))
    assert hw.peak_gflops == pytest.approx(data["peak_gflops"])
    capsys.readouterr()
    digits = Path(__file__).resolve().parents[2] / "models" / "digits_cnn.onnx"
    assert main(["inspect", str(digits), "--hardware", str(out)]) == 0
    assert "on me" in capsys.readouterr().out
