"""The hostile-input suite, options: tolerances of `verify` (issue 9 item 16)."""

from __future__ import annotations

import pytest

from tests.support.cli import assert_one_line_error, run, save
from tests.support.run import MODELS_DIR


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


# --------------------------------------------------------------------- item 13: usage errors in one line
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["optimize", "a.onnx", "b.onnx", "--pases", "x"], "did you mean --passes?"),
        (["verify", "a.onnx", "b.onnx", "--atol", "abc"], "invalid value for '--atol'"),
        (["optimise", "a.onnx", "b.onnx"], "did you mean 'optimize'?"),
        (["optimize", "a.onnx"], "missing argument"),
        (["inspect", "a.onnx", "--hardwar", "x"], "did you mean --hardware?"),
    ],
)
def test_usage_errors_are_one_line_with_the_closest_option(capsys, args, expected):
    code, out, err = run(capsys, *args)
    assert_one_line_error(code, err)
    assert expected in err and out == ""


def test_pass_option_errors_are_kebab_case_with_the_closest(tmp_path, capsys):
    p = MODELS_DIR / "digits_cnn.onnx"
    code, _, err = run(capsys, "optimize", p, tmp_path / "o.onnx", "--passes", "prune-filters(target_flop=0.5)")
    assert_one_line_error(code, err)
    assert "did you mean target-flops?" in err and "round-to" in err and "round_to" not in err
    code, _, err = run(capsys, "optimize", p, tmp_path / "o.onnx", "--passes", "prune-filters(round_to=0)")
    assert_one_line_error(code, err)
    assert "round-to and min-channels must be at least 1" in err
    code, _, err = run(capsys, "optimize", p, tmp_path / "o.onnx", "--passes", "kmean")
    assert_one_line_error(code, err)
    assert "did you mean kmeans?" in err


# ------------------------------------------------------------------------ item 14: layer-name patterns
def test_module_paths_and_globs_match_nodes_and_weights():
    from onnxcomp.names import matches, module_path

    assert module_path("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert module_path("layer1.0.conv1.weight") == "layer1.0.conv1"
    assert module_path("conv2d_0.w_0") == "conv2d_0"
    assert matches("conv1", "/conv1/Conv") and matches("conv1", "conv1.weight")
    assert matches("layer1", "/layer1/layer1.0/conv1/Conv") and matches("layer1.0.conv*", "layer1.0.conv2.weight")
    assert matches("fc*", "/fc1/Gemm") and matches("/fc1/Gemm", "/fc1/Gemm")
    assert not matches("conv1", "/conv10/Conv") and not matches("conv1", "/layer1/layer1.0/conv1/Conv")


@pytest.mark.parametrize(
    "spec",
    [
        "prune-filters(ratio=0.5,protect=conv1|fc*)",
        "prune-channels(ratio=0.3,protect=conv1)",
        "kmeans(protect=conv1)",
        "kmeans(layers=conv1)",
        "lowrank(protect=fc1.weight,min_params=10)",
    ],
)
def test_patterns_select_the_layers_they_name(tmp_path, spec):
    import numpy as np

    import onnxcomp

    calib = {"input": np.load(MODELS_DIR / "digits_calib.npz")["input"][:32]}
    _, rep = onnxcomp.optimize(str(MODELS_DIR / "digits_cnn.onnx"), spec, calib=calib)
    (p,) = rep.passes
    protected = {s.node for s in p.skips if "protect" in s.reason}
    if spec.startswith("prune"):  # protected: its filters (output channels) are all kept
        assert protected & {"/conv1/Conv", "/fc1/Gemm"}, p.skips
        kept = {r.name for r in p.layers if r.extra.get("channels", [0, 0])[0] == r.extra.get("channels", [0, 1])[1]}
        assert protected <= kept | {"/fc2/Gemm"}, (protected, kept)
        return
    touched = {r.name for r in p.layers}
    if "layers=" in spec:
        assert touched == {"/conv1/Conv"}, touched
    else:
        assert protected & {"/conv1/Conv", "/fc1/Gemm"}, p.skips
        assert not touched & protected


@pytest.mark.parametrize(
    ("spec", "closest"),
    [
        ("prune-filters(ratio=0.5,protect=conv3)", "conv2"),
        ("kmeans(layers=fc9)", "fc1"),
        ("kmeans(bits_per_layer=fcc*:2)", ""),
        ("prune-filters(ratios=conv7:0.5)", "conv1"),
        ("lowrank(protect=fc)", "fc1"),
    ],
)
def test_a_pattern_that_matches_nothing_is_exit_2_with_the_closest_names(tmp_path, capsys, spec, closest):
    p = MODELS_DIR / "digits_cnn.onnx"
    code, _, err = run(capsys, "optimize", p, tmp_path / "o.onnx", "--passes", spec)
    assert_one_line_error(code, err)
    assert "matches no node, weight or module" in err and closest in err
