"""The hostile-input suite, files (issue 9 items 10, 11, 12, 15): output paths that cannot be written, both
outputs or neither, the umask, recipes that are not files, invalid models, onnxruntime's own log lines."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from onnxcomp import io
from tests.support import models
from tests.support.cli import assert_one_line_error, run, save, without_notes


@pytest.fixture
def model_path(tmp_path):
    return save(models.conv(dims=("N", 3, 8, 8)), tmp_path / "m.onnx")


@pytest.mark.parametrize("where", ["parent is a file", "/proc", "missing directory"])
@pytest.mark.parametrize("which", ["OUT", "--report"])
def test_unwritable_output_paths_exit_2_before_any_work(tmp_path, capsys, model_path, where, which):
    (tmp_path / "afile").write_text("x")
    bad = {
        "parent is a file": tmp_path / "afile" / "o.onnx",
        "/proc": "/proc/onnxcomp-test.onnx",
        "missing directory": tmp_path / "nodir" / "o.onnx",
    }[where]
    out = tmp_path / "o.onnx"
    args = [bad, "--report", tmp_path / "r.json"] if which == "OUT" else [out, "--report", bad]
    code, _, err = run(capsys, "optimize", model_path, *args)
    assert_one_line_error(code, err)
    assert not out.exists() and not (tmp_path / "r.json").exists()


def test_a_failing_report_leaves_no_model(tmp_path, capsys, model_path, monkeypatch):
    # the report path passes the up-front check, then fails at write time (disk full, a race): no OUT either
    real = io.atomic_write

    def failing(path, data):
        if str(path).endswith(".json"):
            raise io.UsageError(f"cannot write {path} (No space left on device)")
        real(path, data)

    monkeypatch.setattr(io, "atomic_write", failing)
    out = tmp_path / "o.onnx"
    code, _, err = run(capsys, "optimize", model_path, out, "--report", tmp_path / "r.json")
    assert_one_line_error(code, err)
    assert not out.exists()


def test_outputs_respect_the_umask(tmp_path, capsys, model_path):
    old = os.umask(0o027)
    try:
        code, _, err = run(capsys, "optimize", model_path, tmp_path / "o.onnx", "--report", tmp_path / "r.json")
    finally:
        os.umask(old)
    assert code == 0, err
    for name in ("o.onnx", "r.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name  # mkstemp gave 0600


def test_external_data_respects_the_umask(tmp_path, model_path):
    m = io.load_model(model_path)
    m.graph.initializer.append(__import__("onnx").numpy_helper.from_array(np.ones(4096, np.float32), "big"))
    old = os.umask(0o022)
    try:
        io.save_external(m, tmp_path / "x.onnx")
    finally:
        os.umask(old)
    for name in ("x.onnx", "x.onnx.data"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_recipe_that_is_a_directory(tmp_path, capsys, model_path):
    code, _, err = run(capsys, "optimize", model_path, tmp_path / "o.onnx", "--recipe", tmp_path)
    assert_one_line_error(code, err)
    assert "is a directory" in err


@pytest.mark.parametrize("command", ["optimize", "verify", "inspect", "bench"])
def test_invalid_model_is_rejected_on_load(tmp_path, capsys, command):
    # Conv group=3 over 4 input channels: onnx.checker and shape inference pass it, onnxruntime loads it; a
    # lossless pipeline used to write it back with exit 0
    p = save(models.bad_group_conv(), tmp_path / "bad.onnx")
    args = {
        "optimize": ["optimize", p, tmp_path / "o.onnx"],
        "verify": ["verify", p, p],
        "inspect": ["inspect", p],
        "bench": ["bench", p, "--runs", "1"],
    }[command]
    code, _, err = run(capsys, *args)
    assert_one_line_error(code, err)
    assert "invalid model: node 'conv' (Conv): the input has 4 channels but the weight reads 1 x group=3" in err
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("command", ["verify", "bench"])
def test_onnxruntime_errors_are_one_line_exit_2(tmp_path, capfd, command):
    # onnxruntime's own logger printed colored lines to the C-level stderr before onnxcomp's error; bench exited 1
    from onnxcomp.cli import main

    p = save(models.bad_reshape(), tmp_path / "r.onnx")
    args = [command, str(p), str(p)] if command == "verify" else [command, str(p), "--runs", "1"]
    code = main(args)
    err = without_notes(capfd.readouterr().err)
    assert_one_line_error(code, err)
    assert "onnxruntime" in err
