"""Weight sharing and low-bit weights: file size on disk, accuracy, pass speed, onnxruntime latency.

    python benchmarks/share_table.py            # everything (about 5 minutes on the 2-core machine)
    python benchmarks/share_table.py --skip-vgg # without the 138M-parameter VGG-16

1. The bundled digits CNN with its held-out data: file-size ratio on disk and top-1 accuracy for k-means
   8/6/4/3/2 bits, ternary, binary, pow2, prune 80% + k-means 4 bits + Huffman, and the full pipeline
   (channel pruning, then weight pruning, k-means, Huffman). Calibration uses 256
   images of the model's training split (scikit-learn's digits, the split of models/train_digits.py), never
   the held-out images the accuracy is measured on.
2. Deep Compression on VGG-16 (random weights; 138M parameters, 3 large fully connected layers): prune,
   k-means (8-bit conv, 5-bit fc), Huffman; bytes on disk.
3. Pass speed: kmeans(bits=4) over a 26M-parameter MLP.
4. Latency in plain onnxruntime (graph optimizations on, 1 thread, interleaved runs, medians): compressed vs
   original. onnxruntime inlines the com.onnxcomp function bodies and folds the weight decode at load time.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models import builders  # noqa: E402
from onnxcomp import bench, io  # noqa: E402
from onnxcomp.api import optimize  # noqa: E402
from onnxcomp.passes_api import registry  # noqa: E402
from onnxcomp.verify import run_model  # noqa: E402

DIGITS = ROOT / "models" / "digits_cnn.onnx"
PRUNE_SHARE_HUFFMAN = "prune-weights(ratio=0.8,scope=global,update=lsq),kmeans(bits=4,huffman=store)"
# The whole pruning toolbox before sharing: channels removed (LASSO + least squares; ratio 0.3 rounded to
# multiples of 16 keeps 49k of the 104k weights), then 88% of what is left (sequential Wanda + lsq), then
# 4-bit k-means and Huffman.
FULL_PIPELINE = (
    "prune-channels(ratio=0.3),prune-weights(ratio=0.88,scope=global,update=lsq),kmeans(bits=4,huffman=store)"
)
DIGITS_CONFIGS = [
    ("original", None),
    ("kmeans 8-bit", "kmeans(bits=8)"),
    ("kmeans 6-bit", "kmeans(bits=6)"),
    ("kmeans 4-bit", "kmeans(bits=4)"),
    ("kmeans 3-bit", "kmeans(bits=3)"),
    ("kmeans 2-bit", "kmeans(bits=2)"),
    ("ternary (lsq, per channel)", "ternary"),
    ("binary (per channel)", "binary"),
    ("pow2 (4-bit, shifts only)", "pow2(bits=4)"),
    ("prune 80% + kmeans 4-bit + Huffman", PRUNE_SHARE_HUFFMAN),
    ("prune channels + 88% of weights + kmeans 4-bit + Huffman", FULL_PIPELINE),
]
VGG_SPEC = (
    "prune-weights(ratio=0.96,ratio_per_layer=features*:0.65),kmeans(bits=5,bits_per_layer=features*:8,huffman=store)"
)


# ------------------------------------------------------------------------------------------------ helpers
def fold_batchnorm(model: onnx.ModelProto) -> onnx.ModelProto:
    """Conv -> BatchNormalization folded into the Conv (used when the fuse-bn pass is not installed).

    W' = W * gamma / sqrt(var + eps) per output channel, B' = (B - mean) * gamma / sqrt(var + eps) + beta.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name: t for t in m.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    drop = []
    for conv in list(m.graph.node):
        if conv.op_type != "Conv" or len(consumers.get(conv.output[0], [])) != 1:
            continue
        bn = consumers[conv.output[0]][0]
        if bn.op_type != "BatchNormalization" or any(i not in inits for i in bn.input[1:]):
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[i]).astype(np.float64) for i in bn.input[1:5])
        scale = gamma / np.sqrt(var + eps)
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(conv.input) > 2 else 0.0
        inits[conv.input[1]].CopyFrom(
            numpy_helper.from_array((w * scale.reshape(-1, *[1] * (w.ndim - 1))).astype(np.float32), conv.input[1])
        )
        bias_name = conv.input[1] + "_bn_bias"
        m.graph.initializer.append(numpy_helper.from_array(((b - mean) * scale + beta).astype(np.float32), bias_name))
        del conv.input[2:]
        conv.input.append(bias_name)
        conv.output[0] = bn.output[0]
        drop.append(bn)
    for bn in drop:
        m.graph.node.remove(bn)
    used = {i for n in m.graph.node for i in n.input}
    kept = [t for t in m.graph.initializer if t.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(kept)
    return m


def digits_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(calibration images, held-out images, held-out labels, where the calibration images come from)."""
    heldout = np.load(ROOT / "models" / "digits_heldout.npz")["input"]
    labels = np.load(ROOT / "models" / "digits_labels.npy")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    x_train, x_test, _, y_test = train_test_split(
        images, digits.target, test_size=450, random_state=0, stratify=digits.target
    )
    mean, std = x_train.mean(), x_train.std()
    x_test = ((x_test - mean) / std)[:, None].astype(np.float32)
    if np.allclose(x_test, heldout, atol=1e-5) and np.array_equal(y_test, labels):
        x_train = ((x_train - mean) / std)[:, None].astype(np.float32)
        return x_train[:256], heldout, labels, "256 training-split images"
    return heldout[:256], heldout, labels, "the first 256 held-out images (training split not reproducible)"


def accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    logits = next(iter(run_model(model, {"input": x}).values()))
    return float((logits.argmax(1) == y).mean())


def saved_size(model: onnx.ModelProto, tmp: Path, name: str) -> int:
    path = tmp / f"{name}.onnx"
    io.save_model(model, path)
    return io.file_size(path)


def latency_ratio(
    original: onnx.ModelProto, compressed: onnx.ModelProto, feeds: dict[str, np.ndarray], runs: int = 200
) -> tuple[float, float, float]:
    fns = {
        "original": bench.model_runner(original, feeds, threads=1, runtime=False),
        "compressed": bench.model_runner(compressed, feeds, threads=1, runtime=False),
    }
    t = bench.interleaved(fns, runs=runs, warmup=max(5, runs // 10), min_seconds=1.0)
    a, b = t["original"].median_ms, t["compressed"].median_ms
    return a, b, b / a


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ sections
def digits_table(tmp: Path) -> list[list[str]]:
    original = io.load_model(DIGITS)
    orig_bytes = io.file_size(DIGITS)
    calib, x, y, source = digits_data()
    base_acc = accuracy(original, x, y)
    have_fuse_bn = "fuse-bn" in registry()
    prepared = original if have_fuse_bn else fold_batchnorm(original)
    prefix = "fuse-bn," if have_fuse_bn else ""
    print(f"\n## Digits CNN ({DIGITS.name}, {orig_bytes:,} bytes, held-out accuracy {100 * base_acc:.2f}%)")
    print(
        f"calibration: {source}; BatchNormalization folded first "
        f"({'fuse-bn pass' if have_fuse_bn else 'fuse-bn not installed: folded by this script'})\n"
    )
    rows = []
    lat_rows = []
    for label, spec in DIGITS_CONFIGS:
        if spec is None:
            rows.append([label, f"{orig_bytes:,}", "1.00x", "-", f"{100 * base_acc:.2f}", "-", "-"])
            continue
        t0 = time.perf_counter()
        out, report = optimize(prepared, prefix + spec, calib={"input": calib})
        seconds = time.perf_counter() - t0
        size = saved_size(out, tmp, label.replace(" ", "_").replace("%", ""))
        acc = accuracy(out, x, y)
        share = report.passes[-1]
        w_ratio = share.counters.get("bytes_before", 0) / max(1, share.counters.get("bytes_stored", 1))
        rows.append(
            [
                label,
                f"{size:,}",
                f"{orig_bytes / size:.2f}x",
                f"{w_ratio:.1f}x",
                f"{100 * acc:.2f}",
                f"{100 * (acc - base_acc):+.2f}",
                f"{seconds:.1f}",
            ]
        )
        if spec in ("kmeans(bits=4)", PRUNE_SHARE_HUFFMAN, FULL_PIPELINE, "ternary"):
            for batch in (1, 64):
                a, b, r = latency_ratio(original, out, {"input": x[:batch]})
                lat_rows.append([f"digits, {label}", str(batch), f"{a:.4f}", f"{b:.4f}", f"{r:.3f}"])
    print(
        table(
            [
                "config",
                "bytes on disk",
                "file ratio",
                "weights ratio",
                "accuracy %",
                "delta (points)",
                "optimize s",
            ],
            rows,
        )
    )
    print(
        "\nweights ratio: the layers' float32 weights + biases vs their stored encoding (codebooks, packed "
        "or "
        "Huffman-coded codes, biases); file ratio: whole files on disk."
    )
    for spec in (PRUNE_SHARE_HUFFMAN, FULL_PIPELINE):
        per_layer(prepared, prefix + spec, calib)
    return lat_rows


def per_layer(model: onnx.ModelProto, spec: str, calib: np.ndarray) -> None:
    _, report = optimize(model, spec, calib={"input": calib})
    share = report.passes[-1]
    print(f"\nper layer, {spec}:\n")
    rows = []
    for r in share.layers:
        e = r.extra
        rows.append(
            [
                r.name,
                str(e["bits"]),
                str(e["codebook_size"]),
                f"{100 * e['sparsity']:.1f}%",
                e["format"],
                f"{e['bytes_before']:,}",
                f"{e['bytes_packed']:,}",
                f"{e['bytes_huffman']:,}",
                f"{e['bytes_stored']:,}",
                f"{r.error:.4f}",
            ]
        )
    c = share.counters
    rows.append(
        [
            "total",
            "",
            "",
            "",
            "",
            f"{int(c['bytes_before']):,}",
            f"{int(c['bytes_packed']):,}",
            f"{int(c['bytes_huffman']):,}",
            f"{int(c['bytes_stored']):,}",
            "",
        ]
    )
    print(
        table(
            [
                "layer",
                "bits",
                "codebook",
                "sparsity",
                "format",
                "bytes before",
                "packed",
                "Huffman",
                "stored",
                "rel. error",
            ],
            rows,
        )
    )


def vgg_table(tmp: Path) -> None:
    print("\n## Deep Compression on VGG-16 (random weights)\n")
    model = builders.vgg16()
    orig = saved_size(model, tmp, "vgg16")
    t0 = time.perf_counter()
    out, report = optimize(model, VGG_SPEC)
    seconds = time.perf_counter() - t0
    size = saved_size(out, tmp, "vgg16_dc")
    share = report.passes[-1]
    print(f"pipeline: {VGG_SPEC}\n")
    rows = [
        [
            f"{builders.param_count(model):,}",
            f"{orig:,}",
            f"{size:,}",
            f"{orig / size:.1f}x",
            f"{share.counters['bytes_before'] / share.counters['bytes_stored']:.1f}x",
            f"{seconds:.0f}",
        ]
    ]
    print(
        table(
            ["params", "original bytes", "compressed bytes", "file ratio", "weights ratio", "optimize s"],
            rows,
        )
    )
    rows = []
    for r in share.layers:
        e = r.extra
        rows.append(
            [
                r.name,
                str(e["bits"]),
                f"{100 * e['sparsity']:.1f}%",
                e["format"].split("(")[0],
                f"{e['bytes_before']:,}",
                f"{e['bytes_packed']:,}",
                f"{e['bytes_stored']:,}",
            ]
        )
    print()
    print(table(["layer", "bits", "sparsity", "format", "bytes before", "packed", "stored (Huffman)"], rows))


def speed_table() -> list[list[str]]:
    print("\n## Pass speed: kmeans(bits=4) over a 26M-parameter MLP (1024-4096-4096-1024-1000)\n")
    model = builders.mlp(in_features=1024, hidden=(4096, 4096, 1024), out_features=1000)
    t0 = time.perf_counter()
    out, report = optimize(model, "kmeans(bits=4)")
    total = time.perf_counter() - t0
    print(
        table(
            ["params", "kmeans pass s", "optimize() total s", "file ratio"],
            [
                [
                    f"{builders.param_count(model):,}",
                    f"{report.passes[0].seconds:.1f}",
                    f"{total:.1f}",
                    f"{len(io.serialize(model)) / len(io.serialize(out)):.2f}x",
                ]
            ],
        )
    )
    feeds = builders.random_inputs(model, batch=1)
    a, b, r = latency_ratio(model, out, feeds, runs=60)
    rows = [["mlp 26M, kmeans 4-bit", "1", f"{a:.3f}", f"{b:.3f}", f"{r:.3f}"]]
    conv = builders.resnet(depth=18, width=0.5, image_size=64)
    out, _ = optimize(conv, "prune-weights(ratio=0.7),kmeans(bits=4),huffman")
    a, b, r = latency_ratio(conv, out, builders.random_inputs(conv, batch=1), runs=100)
    rows.append(["resnet18 x0.5 @64, prune 70% + kmeans 4 + Huffman", "1", f"{a:.3f}", f"{b:.3f}", f"{r:.3f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-vgg", action="store_true", help="skip the VGG-16 Deep Compression run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="onnxcomp-share-") as tmp:
        lat = digits_table(Path(tmp))
        if not args.skip_vgg:
            vgg_table(Path(tmp))
        lat += speed_table()
    print("\n## Latency in plain onnxruntime (optimizations on, 1 thread, medians of interleaved runs)\n")
    print(table(["model", "batch", "original ms", "compressed ms", "ratio"], lat))


if __name__ == "__main__":
    main()
