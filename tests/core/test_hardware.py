"""Hardware profiles: built-in names, profile files (load/save/errors), the probe and --hardware."""

from __future__ import annotations

import pytest

from onnxcomp import hardware
from onnxcomp.cli import main
from onnxcomp.cost import HARDWARE, Hardware
from onnxcomp.errors import InputError, UsageError


def test_resolve_builtin_and_unknown():
    assert hardware.resolve("zen4-1t") is HARDWARE["zen4-1t"]
    with pytest.raises(UsageError, match="unknown hardware 'nope'"):
        hardware.resolve("nope")


def test_profile_round_trip(tmp_path):
    hw = Hardware("box", 123.4, 21.5, efficiency={"im2col": 0.8, "winograd4.gemm": 0.9}, llc_bytes=8 << 20)
    path = tmp_path / "box.json"
    hardware.save(hw, path, {"measurements": []})
    back = hardware.resolve(str(path))
    assert (back.name, back.peak_gflops, back.bandwidth_gbs, back.llc_bytes) == ("box", 123.4, 21.5, 8 << 20)
    assert back.efficiency == {"im2col": 0.8, "winograd4.gemm": 0.9}


@pytest.mark.parametrize(
    "text,word",
    [
        ("not json", "not a readable JSON"),
        ('{"peak_gflops": 1}', "not an onnxcomp hardware profile"),
        ('{"format": "onnxcomp-hardware/1", "bandwidth_gbs": 1}', "missing or invalid"),
        ('{"format": "onnxcomp-hardware/1", "peak_gflops": -1, "bandwidth_gbs": 1}', "must be positive"),
        ('{"format": "onnxcomp-hardware/1", "peak_gflops": 1, "bandwidth_gbs": 1, "efficiency": {"x": 0}}', "positive"),
    ],
)
def test_bad_profiles_are_input_errors(tmp_path, text, word):
    path = tmp_path / "hw.json"
    path.write_text(text)
    with pytest.raises(InputError, match=word):
        hardware.resolve(str(path))
    with pytest.raises(InputError, match="does not exist"):
        hardware.resolve(str(tmp_path / "missing.json"))


def test_probe_cli_errors(tmp_path, capsys):
    assert main(["hardware", "probe", "--output", str(tmp_path / "no" / "dir.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
