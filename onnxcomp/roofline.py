"""Roofline data of a model (what ``onnxcomp inspect --json`` carries and ``--plot`` draws).

Every layer is a point (arithmetic intensity FLOP/byte, attainable GFLOP/s) under the hardware's two ceilings,
compute (``peak_gflops``) and memory (``bandwidth_gbs`` x intensity). A convolution gets one point per algorithm
that can compute it (onnxcomp.estimator: onnxruntime's ``im2col``, Winograd F(m,3)), at that algorithm's own
FLOPs, bytes and predicted time; the algorithm the model uses now is marked ``current``. Other layers get the
plain roofline point of onnxcomp.cost.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

    from onnxcomp.cost import Hardware
    from onnxcomp.estimator import ConvShape

CONV_OPS = ("Conv", "FusedConv", "CodebookConv", "WinogradConv")


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def conv_shape(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> ConvShape | None:
    """The 2-D convolution geometry of a Conv / FusedConv / CodebookConv / WinogradConv node, if its shapes
    are known."""
    from onnxcomp.estimator import ConvShape

    a = _attrs(node)
    if node.op_type == "CodebookConv":
        w = tuple(int(v) for v in a.get("weight_shape", ()))
    else:
        w = shapes.get(node.input[1]) if len(node.input) > 1 else None
    x, y = shapes.get(node.input[0]), shapes.get(node.output[0])
    if w is None or x is None or y is None or len(w) != 4 or len(x) != 4 or len(y) != 4:
        return None
    return ConvShape(
        x[0], x[1], x[2], x[3], y[1], w[2], w[3], y[2], y[3],
        tuple(int(v) for v in a.get("strides", (1, 1))),
        tuple(int(v) for v in a.get("dilations", (1, 1))),
        int(a.get("group", 1)),
    )  # fmt: skip


def current_algorithm(node: onnx.NodeProto) -> str:
    a = _attrs(node)
    if node.op_type == "WinogradConv":
        return f"winograd{int(a.get('tile', 4))}"
    if node.op_type == "CodebookConv" and int(a.get("winograd_tile", 0)):
        return f"winograd{int(a['winograd_tile'])}"
    return "im2col"


def analyze(model: onnx.ModelProto, hw: Hardware) -> list[dict[str, Any]]:
    """Per top-level node of a shape-inferred model: name, op, current algorithm, and per algorithm its FLOPs,
    bytes, intensity and predicted seconds (convolutions), or the plain roofline point (other layers)."""
    from onnxcomp import cost, estimator

    shapes: dict[str, tuple[int, ...]] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
    for t in model.graph.initializer:
        shapes[t.name] = tuple(int(d) for d in t.dims)
    layers = cost.analyze(model)
    out = []
    for node, c in zip(model.graph.node, layers):
        row: dict[str, Any] = {"name": c.name, "op": c.op}
        s = conv_shape(node, shapes) if node.op_type in CONV_OPS else None
        if s is not None:
            cur = current_algorithm(node)
            costs = estimator.estimate(s, hw)
            if cur not in costs:  # e.g. a Winograd tile the estimator was not asked about
                cur = "im2col"
            row["algorithm"] = cur
            row["algorithms"] = {k: v.to_dict() for k, v in costs.items()}
            row["seconds"] = costs[cur].seconds
        else:
            row["algorithm"] = None
            row["algorithms"] = {
                "roofline": {
                    "algorithm": "roofline",
                    "flops": c.flops,
                    "bytes": c.bytes,
                    "intensity": c.intensity,
                    "seconds": c.seconds(hw),
                }
            }
            row["seconds"] = c.seconds(hw)
        out.append(row)
    return out


def plot(series: list[tuple[str, list[dict[str, Any]]]], hw: Hardware, path: Path, title: str = "") -> None:
    """Roofline chart: ceilings, and each layer's point for every (label, layers) series: the algorithm the model
    uses (filled) and, for the first series, the alternatives the estimator considered (hollow). Format from the
    suffix (.svg, .png, .pdf); the file is written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    points = [
        (a["intensity"], a["flops"] / a["seconds"] / 1e9)
        for _, layers in series
        for row in layers
        for a in row["algorithms"].values()
        if a["seconds"] > 0 and a["flops"] > 0 and a["bytes"] > 0
    ]
    ridge = hw.peak_gflops / hw.bandwidth_gbs
    lo = min([p[0] for p in points] + [ridge / 100]) / 2
    hi = max([p[0] for p in points] + [ridge * 100]) * 2
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(xs, [min(hw.peak_gflops, hw.bandwidth_gbs * x) for x in xs], color="black", lw=1.5)
    ax.annotate(f"peak {hw.peak_gflops:.0f} GFLOP/s", (hi / 2, hw.peak_gflops), ha="right", va="bottom")
    ax.annotate(f"{hw.bandwidth_gbs:.0f} GB/s", (ridge / 10, hw.bandwidth_gbs * ridge / 10), rotation=30, va="bottom")
    markers = {"im2col": "o", "winograd2": "s", "winograd4": "^", "winograd6": "D", "roofline": "."}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, layers) in enumerate(series):
        color = colors[i % len(colors)]
        for algo, marker in markers.items():
            for current in (True, False) if i == 0 else (True,):  # alternatives: of the first model only
                pts = [
                    (a["intensity"], a["flops"] / a["seconds"] / 1e9)
                    for row in layers
                    for name, a in row["algorithms"].items()
                    if name == algo
                    and (row["algorithm"] == name or (row["algorithm"] is None)) == current
                    and a["seconds"] > 0
                    and a["flops"] > 0
                    and a["bytes"] > 0
                ]
                if not pts:
                    continue
                ax.scatter(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    marker=marker,
                    s=36 if algo != "roofline" else 20,
                    facecolors=color if current else "none",
                    edgecolors=color,
                    label=f"{label}: {algo}{'' if current else ' (alternative)'}",
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("attainable GFLOP/s (predicted)")
    ax.set_title(title or f"roofline on {hw.name}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ymin = min([p[1] for p in points] + [hw.peak_gflops / 1000])
    ax.set_ylim(max(ymin / 2, 1e-3), hw.peak_gflops * 2)
    fig.tight_layout()
    import io as _io

    from onnxcomp.io import atomic_write

    buf = _io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".").lower())
    plt.close(fig)
    atomic_write(Path(path), buf.getvalue())


def total_seconds(layers: list[dict[str, Any]]) -> float:
    return math.fsum(r["seconds"] for r in layers)
