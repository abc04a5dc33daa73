"""The optimization report: per pass counters, layers and skips; model cost before/after; verification.

Printed as rich tables by the CLI and saved as JSON (``--report``)."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from onnxcomp.passes_api import PassResult, jsonable

if TYPE_CHECKING:
    from rich.console import Console

    from onnxcomp.cost import ModelCost
    from onnxcomp.shapes import InputShapes
    from onnxcomp.verify import VerifyResult


@dataclasses.dataclass
class Report:
    pipeline: str
    passes: list[PassResult] = dataclasses.field(default_factory=list)
    before: ModelCost | None = None
    after: ModelCost | None = None
    bytes_before_: int | None = dataclasses.field(default=None, repr=False)
    bytes_after: int | None = None
    verification: VerifyResult | None = None
    seconds: float = 0.0
    stages: dict[str, float] = dataclasses.field(default_factory=dict)  # non-pass stages: name -> seconds
    inputs: InputShapes | None = None  # the input shapes verification and the cost summaries used
    warnings: list[str] = dataclasses.field(default_factory=list)  # e.g. non-finite weights in the input
    serialized: bytes | None = dataclasses.field(default=None, repr=False)  # the output's bytes (not in JSON)
    source: Any = dataclasses.field(default=None, repr=False)  # the input ModelProto, sized on first use

    @property
    def bytes_before(self) -> int | None:
        """Bytes of the input: its file size, or (in-memory input) its serialized size, computed when asked."""
        if self.bytes_before_ is None and self.source is not None:
            self.bytes_before_ = self.source.ByteSize()
            self.source = None
        return self.bytes_before_

    @bytes_before.setter
    def bytes_before(self, value: int | None) -> None:
        self.bytes_before_ = value

    @property
    def file_growth(self) -> float | None:
        """bytes after / bytes before when the output file is larger than the input (else None)."""
        before, after = self.bytes_before, self.bytes_after
        if before and after and after > before:
            return after / before
        return None

    @property
    def lossless(self) -> bool:
        return all(p.lossless for p in self.passes)

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "pipeline": self.pipeline,
                "lossless": self.lossless,
                "seconds": round(self.seconds, 4),
                "stages": {k: round(v, 4) for k, v in self.stages.items()},
                "model": {
                    "before": self.before.to_dict() if self.before else None,
                    "after": self.after.to_dict() if self.after else None,
                    "bytes_before": self.bytes_before,
                    "bytes_after": self.bytes_after,
                    "file_growth": round(self.file_growth, 4) if self.file_growth else None,
                },
                "inputs": self.inputs.to_dict() if self.inputs is not None else None,
                "warnings": list(self.warnings),
                "passes": [p.to_dict() for p in self.passes],
                "verification": self.verification.to_dict() if self.verification else None,
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str)

    def render(self, console: Console, *, layers: bool = True, max_skips: int = 8) -> None:
        from rich.markup import escape
        from rich.table import Table

        # the pipeline on a line of its own: a table title wraps mid-word at the table's width
        console.print(f"onnxcomp: {self.pipeline}", soft_wrap=True, markup=False, highlight=False)
        for w in self.warnings:
            console.print(f"[yellow]warning:[/yellow] {escape(w)}", soft_wrap=True)
        t = Table()
        t.add_column("pass")
        t.add_column("lossless")
        t.add_column("result")
        t.add_column("skipped", justify="right")
        t.add_column("time", justify="right")
        for p in self.passes:
            counters = ", ".join(f"{k}={format_count(v)}" for k, v in p.counters.items() if v) or "no change"
            t.add_row(p.name, "yes" if p.lossless else "no", counters, str(len(p.skips)), f"{p.seconds:.2f}s")
        console.print(t)
        if layers:
            for p in self.passes:
                if p.layers:
                    _render_layers(console, p)
        skips = [(p.name, s) for p in self.passes for s in p.skips]
        if skips:
            console.print(f"[dim]skipped ({len(skips)}):[/dim]")
            for name, s in skips[:max_skips]:
                console.print(f"[dim]  {name}: {s.node}: {s.reason}[/dim]", highlight=False)
            if len(skips) > max_skips:
                console.print(f"[dim]  ... {len(skips) - max_skips} more in the JSON report[/dim]")
        if self.inputs is not None and self.inputs.inputs:
            console.print(self.inputs.summary(), soft_wrap=True, markup=False, highlight=False)
        if self.inputs is not None and not self.inputs.complete:
            console.print(self.inputs.flops_note(), soft_wrap=True, markup=False, highlight=False)
        if self.before and self.after:
            m = Table(title="model", title_justify="left")
            for c in ("", "before", "after", "ratio"):
                m.add_column(c, justify="right" if c else "left")
            rows = [
                ("nodes", self.before.nodes, self.after.nodes),
                ("params", self.before.params, self.after.params),
                ("FLOPs", self.before.flops, self.after.flops),
                ("weight bytes", self.before.weight_bytes, self.after.weight_bytes),
            ]
            if self.bytes_before and self.bytes_after:
                rows.append(("file bytes", self.bytes_before, self.bytes_after))
            for label, a, b in rows:
                m.add_row(label, format_count(a), format_count(b), f"{a / b:.2f}x" if a is not None and b else "-")
            console.print(m)
        growth = self.file_growth
        if growth is not None and growth > 1.1 and self.bytes_after - self.bytes_before > 64 * 1024:
            console.print(
                f"note: the output file is {growth:.2f}x the size of the input "
                f"({self.bytes_before:,} -> {self.bytes_after:,} bytes)",
                highlight=False,
            )
        if self.verification is not None:
            render_verification(console, self.verification)


def _render_layers(console: Console, p: PassResult, limit: int = 40) -> None:
    from rich.table import Table

    t = Table(title=f"{p.name}: layers", title_justify="left")
    cols = ["layer", "op", "decision"]
    has_params = any(r.params_before is not None for r in p.layers)
    has_flops = any(r.flops_before is not None for r in p.layers)
    has_err = any(r.error is not None for r in p.layers)
    for c in cols:
        t.add_column(c)
    if has_params:
        t.add_column("params", justify="right")
    if has_flops:
        t.add_column("FLOPs", justify="right")
    if has_err:
        t.add_column("error", justify="right")
    for r in p.layers[:limit]:
        row = [r.name, r.op, r.decision]
        if has_params:
            row.append(
                f"{format_count(r.params_before)} -> {format_count(r.params_after)}"
                if r.params_before is not None
                else ""
            )
        if has_flops:
            row.append(
                f"{format_count(r.flops_before)} -> {format_count(r.flops_after)}" if r.flops_before is not None else ""
            )
        if has_err:
            row.append(f"{r.error:.3g}" if r.error is not None else "")
        t.add_row(*row)
    console.print(t)
    if len(p.layers) > limit:
        console.print(f"[dim]  ... {len(p.layers) - limit} more layers in the JSON report[/dim]")


def render_verification(console: Console, v: VerifyResult) -> None:
    from rich.table import Table

    t = Table(
        title=f"verification on {v.samples} sample(s) of {v.source}",
        title_justify="left",
        caption=f"compared model run by: {v.runtime}",
        caption_justify="left",
    )
    for c in ("output", "max abs err", "max rel err", "cosine", "status"):
        t.add_column(c, justify="left" if c in ("output", "status") else "right")
    for o in v.outputs:
        t.add_row(
            o.name,
            f"{o.max_abs:.3g}",
            f"{o.max_rel:.3g}",
            f"{o.cosine:.6f}",
            "[green]ok[/green]" if o.ok else f"[red]FAIL[/red] {o.why}",
        )
    console.print(t)
    if v.accuracy_ref is not None:
        delta = (v.accuracy_new - v.accuracy_ref) * 100
        console.print(
            f"top-1 accuracy: original {v.accuracy_ref * 100:.2f}%  optimized {v.accuracy_new * 100:.2f}%"
            f"  ({delta:+.2f} points)"
        )


def format_count(v: Any) -> str:
    """A count for tables: 1.23k, 4.56M, 7.89G; floats to 4 significant digits; None as "-"."""
    if v is None:
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.4g}"
    v = int(v)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.2f}{unit}"
    return str(v)
