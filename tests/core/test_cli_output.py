"""What the command line prints (issue 9 items 13, 18): piped output, warnings, the inspect table."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
from onnx import helper

from onnxcomp.cli import main
from tests.support import models
from tests.support.cli import without_notes
from tests.support.run import MODELS_DIR

ROOT = Path(__file__).resolve().parents[2]
LONG = "fold-constants,eliminate(duplicate_nodes=false),fuse-bn,fuse-affine,eliminate," * 3 + "eliminate"


# the command line as a user pipes it, in a subprocess (no pytest capture, no warning filters): the optimize
# call first triggers a numpy RuntimeWarning, as real numerics sometimes do, then runs as usual
_PIPED = """
import sys
import numpy as np
import onnxcomp.api as api
real = api.optimize
def noisy(*args, **kwargs):
    np.log(np.zeros(1))  # RuntimeWarning: divide by zero encountered in log
    return real(*args, **kwargs)
api.optimize = noisy
from onnxcomp.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_piped_output_is_clean(tmp_path):
    import sys

    out = tmp_path / "o.onnx"
    proc = subprocess.run(
        [sys.executable, "-c", _PIPED, "optimize", str(MODELS_DIR / "digits_cnn.onnx"), str(out), "--passes", LONG],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"onnxcomp: {LONG}"  # a table title wrapped it mid-word
    assert without_notes(proc.stderr) == ""  # no progress bar's blank lines, no RuntimeWarning


def test_inspect_counts_weights_held_in_constant_nodes(tmp_path, capsys):
    m = models.conv(dims=(1, 3, 8, 8))
    w = m.graph.initializer.pop()
    m.graph.node.insert(0, helper.make_node("Constant", [], [w.name], name="wconst", value=w))  # Paddle style
    p = tmp_path / "c.onnx"
    onnx.save(m, str(p))
    assert main(["inspect", str(p), "--json", str(tmp_path / "i.json")]) == 0
    rows = json.loads((tmp_path / "i.json").read_text())["layers"]
    conv = next(r for r in rows if r["op"] == "Conv")
    assert conv["params"] == 4 * 3 * 3 * 3  # was 0
    assert sum(r["params"] for r in rows) == json.loads((tmp_path / "i.json").read_text())["summary"]["params"]
    capsys.readouterr()


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_quick_start_outputs_are_ignored_by_git():
    for name in ("digits.opt.onnx", "digits.report.json"):
        proc = subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT, check=False)
        if proc.returncode == 128:
            pytest.skip("not a git checkout")
        assert proc.returncode == 0, name
