"""The README's main job: optimize the bundled trained model with the default lossless pipeline, verified on its
held-out data, through the installed command line (a subprocess, as a user runs it)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import onnx

from tests.support.run import MODELS_DIR


def test_readme_command_on_bundled_model(tmp_path):
    exe = shutil.which("onnxcomp")
    cmd = [exe] if exe else [sys.executable, "-m", "onnxcomp"]
    out, rep = tmp_path / "digits.opt.onnx", tmp_path / "digits.report.json"
    proc = subprocess.run(
        [
            *cmd,
            "optimize",
            str(MODELS_DIR / "digits_cnn.onnx"),
            str(out),
            "--calib",
            str(MODELS_DIR / "digits_heldout.npz"),
            "--labels",
            str(MODELS_DIR / "digits_labels.npy"),
            "--verify",
            "--report",
            str(rep),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "top-1 accuracy: original 99.56%  optimized 99.56%" in proc.stdout
    report = json.loads(rep.read_text())
    assert report["lossless"] is True and report["verification"]["ok"] is True
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" not in ops  # every BN follows a Conv in this model and is folded
    assert report["model"]["after"]["nodes"] < report["model"]["before"]["nodes"]
