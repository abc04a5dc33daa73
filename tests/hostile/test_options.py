"""The hostile-input suite, options: tolerances of `verify` (issue 9 item 16)."""

from __future__ import annotations

import pytest

from tests.hostile.cli import assert_one_line_error, run, save
from tests.util import MODELS_DIR


@pytest.fixture(scope="module")
def lossy_pair(tmp_path_factory):
    """The bundled digits model and its 4-bit k-means version (cosine ~0.999, far beyond lossless atol)."""
    import onnxcomp

    d = tmp_path_factory.mktemp("lossy")
    a = MODELS_DIR / "digits_cnn.onnx"
    model, _ = onnxcomp.optimize(str(a), "kmeans(bits=4)")
    return a, save(model, d / "k.onnx")


def test_verify_min_cosine_alone_suffices_for_a_lossy_model(capsys, lossy_pair):
    a, b = lossy_pair
    code, stdout, _ = run(capsys, "verify", a, b)  # lossless by default: fails on max abs error
    assert code == 3 and "max abs error" in stdout
    code, stdout, err = run(capsys, "verify", a, b, "--min-cosine", "0.95")
    assert code == 0, stdout + err
    code, stdout, err = run(capsys, "verify", a, b, "--lossy")
    assert code == 0, stdout + err
    code, stdout, _ = run(capsys, "verify", a, b, "--min-cosine", "0.9999999")
    assert code == 3  # the cosine is still checked


def test_verify_lossy_and_tolerances_together_are_refused(capsys, lossy_pair):
    a, b = lossy_pair
    code, _, err = run(capsys, "verify", a, b, "--lossy", "--atol", "1")
    assert_one_line_error(code, err)
