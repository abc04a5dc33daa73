"""Golden output bytes: every lossy pass and the default pipeline on the bundled digits model.

The sha256 of each output model (``io.serialize``, the bytes ``save_model`` writes) must equal the value
recorded in ``golden.json``. This pins behaviour across refactorings: a change that moves code around must not
change a single output byte.

A deliberate change of a pass's output (new defaults, a better algorithm) changes its hash. Then:

1. check the new output is what you want (accuracy, size: ``benchmarks/share_table.py``, ``prune_accuracy.py``);
2. rewrite the recorded hashes: ``python -m tests.e2e.test_golden --update`` from the repository root
   (``--update CASE ...`` for some cases only);
3. commit ``tests/e2e/golden.json`` with the change, saying in the message which outputs changed and why.

The hashes depend on the numerics libraries (numpy/BLAS, onnx, onnxruntime): ``golden.json`` records the versions
they were made with, and the test is skipped (saying which version differs) in another environment. BLAS runs on
one thread here, so the bytes do not depend on the machine's core count.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).with_name("golden.json")
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
CALIB_SAMPLES = 128

# case name -> (pass spec, None = the default pipeline; uses the calibration data)
CASES: dict[str, tuple[str | None, bool]] = {
    "default": (None, False),
    "fuse-activation": ("fold-constants,eliminate,fuse-bn,fuse-activation", False),
    "lowrank": ("lowrank(energy=0.8)", False),
    "lowrank-rank": ("lowrank(rank=4,min_params=0)", False),
    "prune-filters": ("prune-filters(ratio=0.5)", False),
    "prune-filters-calib": ("fuse-bn,prune-filters(target_flops=0.5,correction=lstsq)", True),
    "prune-filters-random": ("prune-filters(criterion=random,ratio=0.3,round_to=1)", False),
    "prune-channels": ("prune-channels(target_flops=0.5)", True),
    "prune-weights": ("prune-weights(ratio=0.5)", False),
    "prune-weights-wanda-lsq": ("prune-weights(ratio=0.8,scope=global,update=lsq)", True),
    "kmeans": ("kmeans(bits=4)", False),
    "kmeans-calib": ("kmeans(bits=3,group_size=8)", True),
    "kmeans-store-inline": ("kmeans(bits=5,huffman=store,inline=true)", False),
    "prune-kmeans-huffman": ("prune-weights(ratio=0.8),kmeans(bits=4,sparse=always),huffman", False),
    "ternary": ("ternary", False),
    "ternary-calib": ("ternary(method=twn,per_channel=false)", True),
    "binary": ("binary", True),
    "pow2": ("pow2(bits=4)", False),
    "pow2-lsq": ("pow2(bits=3,scale=lsq)", True),
    "inline-functions": ("kmeans(bits=2),inline-functions", False),
    "select-conv": ("fuse-bn,select-conv(algorithm=winograd)", False),
    "kmeans-select-conv": ("kmeans(bits=4),select-conv(algorithm=winograd,tiles=4)", False),
    "readme-pipeline": (
        "fuse-bn,prune-channels(ratio=0.3),prune-weights(ratio=0.88,scope=global,update=lsq),kmeans(bits=4,huffman=store)",
        True,
    ),
}


def environment() -> dict[str, str]:
    """The library versions the output bytes depend on."""
    import onnx
    import onnxruntime

    return {"numpy": np.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def output_hash(case: str) -> str:
    """sha256 of the serialized output of one case (BLAS on one thread)."""
    from threadpoolctl import threadpool_limits

    import onnxcomp
    from onnxcomp import io

    spec, uses_calib = CASES[case]
    calib = None
    if uses_calib:
        with np.load(MODELS_DIR / "digits_heldout.npz") as z:
            calib = {"input": z["input"][:CALIB_SAMPLES]}
    with threadpool_limits(1):
        model, _ = onnxcomp.optimize(str(MODELS_DIR / "digits_cnn.onnx"), spec, calib=calib)
    return hashlib.sha256(io.serialize(model)).hexdigest()


def _recorded() -> dict:
    return json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {"environment": {}, "hashes": {}}


@pytest.fixture(scope="module")
def recorded() -> dict:
    data = _recorded()
    differ = {k: (v, data["environment"].get(k)) for k, v in environment().items() if data["environment"].get(k) != v}
    if differ:
        pytest.skip(
            "golden hashes were recorded with other library versions: "
            + ", ".join(f"{k} {old} (here {new})" for k, (new, old) in differ.items())
            + "; rerun `python -m tests.e2e.test_golden --update` to re-record them"
        )
    return data["hashes"]


@pytest.mark.parametrize("case", list(CASES))
def test_output_bytes_unchanged(case, recorded):
    assert case in recorded, f"no golden hash for {case!r}: run `python -m tests.e2e.test_golden --update {case}`"
    got = output_hash(case)
    assert got == recorded[case], (
        f"the output bytes of {case!r} ({CASES[case][0] or 'default pipeline'}) changed. If that is deliberate, "
        f"rerun `python -m tests.e2e.test_golden --update {case}` and commit tests/e2e/golden.json, saying why "
        "(see this module's docstring); a refactoring must not change them"
    )


def test_every_pass_has_a_golden_case():
    """A new pass gets a golden case (so that later refactorings are checked against its bytes too)."""
    from onnxcomp.passes_api import registry
    from onnxcomp.pipeline import DEFAULT_PIPELINE, parse_spec

    covered = {s.name for spec, _ in CASES.values() for s in parse_spec(spec or DEFAULT_PIPELINE)}
    missing = sorted(set(registry()) - covered)
    assert not missing, f"passes without a golden case: {missing}; add one to CASES in {__file__} and --update"


def update(cases: list[str]) -> None:
    data = _recorded()
    if data["environment"] and data["environment"] != environment() and set(cases) != set(CASES):
        sys.exit("the library versions changed: re-record every case (--update without case names)")
    data["environment"] = environment()
    for case in cases:
        if case not in CASES:
            sys.exit(f"unknown case {case!r}; cases: {', '.join(CASES)}")
        data["hashes"][case] = output_hash(case)
        print(f"{case}: {data['hashes'][case]}")
    data["hashes"] = {k: data["hashes"][k] for k in CASES if k in data["hashes"]}
    GOLDEN.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] != "--update":
        sys.exit("usage: python -m tests.e2e.test_golden --update [CASE ...]")
    from onnxcomp.passes_api import load_pass_library

    load_pass_library()
    update(args[1:] or list(CASES))
