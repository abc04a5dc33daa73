"""The README's numbers on the bundled digits CNN, produced by the commands the README shows.

Every row runs, through the command line exactly as a user types it (in-process):

    onnxcomp optimize models/digits_cnn.onnx OUT --calib models/digits_calib.npz --passes SPEC --report R
    onnxcomp verify models/digits_cnn.onnx OUT --inputs models/digits_heldout.npz \
        --labels models/digits_labels.npy --lossy

Calibration uses 256 training-split images (models/digits_calib.py); accuracy is measured on the 450 held-out
images, which no pass sees. The table between the README's ``<!-- digits-numbers:begin -->`` and
``<!-- digits-numbers:end -->`` markers is this script's output, and tests/e2e/test_readme_numbers.py reruns it
and compares, so the README cannot drift from what a user gets.

    python benchmarks/readme_numbers.py            # print the table
    python benchmarks/readme_numbers.py --write    # rewrite the README's table
"""

from __future__ import annotations

import argparse
import contextlib
import io as pyio
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN, END = "<!-- digits-numbers:begin -->", "<!-- digits-numbers:end -->"

ROWS = [
    ("channel pruning, 50% of FLOPs", "prune-channels(target_flops=0.5)"),
    ("filter pruning (L1), 50% of FLOPs", "prune-filters(target_flops=0.5)"),
    ("4-bit k-means", "fuse-bn,kmeans(bits=4)"),
    (
        "prune 80% + 4-bit k-means + Huffman",
        "fuse-bn,prune-weights(ratio=0.8,scope=global,update=lsq),kmeans(bits=4,huffman=store)",
    ),
    (
        "Deep Compression: channels, then 88% of the weights, 4-bit k-means, Huffman",
        "fuse-bn,prune-channels(ratio=0.3),prune-weights(ratio=0.88,scope=global,update=lsq),kmeans(bits=4,huffman=store)",
    ),
]


def _cli(*args: str) -> tuple[int, str]:
    """Run the onnxcomp command line in this process; (exit code, stdout)."""
    from onnxcomp.cli import main

    out = pyio.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(pyio.StringIO()):  # verify exits 3 below 0.9
        code = main([str(a) for a in args])
    return code, out.getvalue()


def measure(spec: str, workdir: Path) -> dict[str, float]:
    """FLOPs removed, file-size ratio and held-out accuracy (original and optimized) for one pipeline."""
    models = ROOT / "models"
    out, rep = workdir / "out.onnx", workdir / "report.json"
    code, text = _cli(
        "optimize", models / "digits_cnn.onnx", out, "--calib", models / "digits_calib.npz", "--passes", spec,
        "--report", rep, "-q",
    )  # fmt: skip
    if code != 0:
        raise RuntimeError(f"optimize {spec}: exit {code}")
    report = json.loads(rep.read_text())["model"]
    code, text = _cli(
        "verify", models / "digits_cnn.onnx", out, "--inputs", models / "digits_heldout.npz",
        "--labels", models / "digits_labels.npy", "--lossy",
    )  # fmt: skip
    acc = re.search(r"top-1 accuracy: original ([\d.]+)%\s+optimized ([\d.]+)%", text)
    if acc is None:
        raise RuntimeError(f"verify {spec}: exit {code}, no accuracy in its output")
    return {
        "flops_removed": 1.0 - report["after"]["flops"] / report["before"]["flops"],
        "size_ratio": report["bytes_before"] / report["bytes_after"],
        "accuracy_before": float(acc.group(1)),
        "accuracy_after": float(acc.group(2)),
    }


def table() -> str:
    """The README's markdown table, measured now."""
    from onnxcomp.passes_api import load_pass_library

    load_pass_library()
    lines = [
        "| what (`--passes`) | FLOPs removed | file size | held-out accuracy |",
        "|---|---|---|---|",
    ]
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for label, spec in ROWS:
            m = measure(spec, Path(tmp))
            base = m["accuracy_before"]
            delta = m["accuracy_after"] - m["accuracy_before"]
            lines.append(
                f"| {label}: `{spec}` | {m['flops_removed']:.1%} | {m['size_ratio']:.2f}x smaller "
                f"| {m['accuracy_after']:.2f}% ({delta:+.2f} points) |"
            )
    lines.append("")
    lines.append(f"Unoptimized: {base:.2f}% held-out accuracy.")
    return "\n".join(lines)


def readme_table(text: str | None = None) -> str:
    """The table the README holds now (between the markers)."""
    text = README.read_text() if text is None else text
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite the README's table")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    new = table()
    print(new)
    if args.write:
        text = README.read_text()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        README.write_text(text[:start] + "\n" + new + "\n" + text[end:])
        print(f"wrote {README}")


if __name__ == "__main__":
    main()
