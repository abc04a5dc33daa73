"""The command line: a thin layer over the Python API.

Exit codes: 0 success, 2 usage or input error, 3 verification failed, 1 anything else. Errors are one line
(``error: ...``) unless ``--debug`` is given. Heavy libraries are imported inside the commands so that
``onnxcomp --help`` is instant.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from onnxcomp.errors import OnnxcompError, UsageError

app = typer.Typer(
    name="onnxcomp",
    help="ONNX graph optimizer and compressor: lossless rewrites, pruning, weight sharing, verified results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

InputShapeOpt = Annotated[
    list[str] | None,
    typer.Option("--input-shape", help="Concrete shape for a dynamic input, NAME:1x3x224x224 (repeatable)."),
]

RuntimeOpt = Annotated[
    str | None,
    typer.Option(
        "--runtime",
        help="ort (plain onnxruntime, function bodies), ops (libonnxcomp_ops.so) or ep (OnnxcompExecutionProvider); "
        "default: ep for models with com.onnxcomp ops when the runtime is built, else ort.",
    ),
]
_RUNTIME_HELP = {
    "ort": "plain onnxruntime",
    "ops": "onnxruntime + libonnxcomp_ops.so custom ops",
    "ep": "onnxruntime + OnnxcompExecutionProvider",
}


def _runtime_name(runtime: str | None) -> str | None:
    if runtime is not None and runtime not in _RUNTIME_HELP:
        raise UsageError(f"--runtime must be one of {', '.join(_RUNTIME_HELP)}, got {runtime!r}")
    return runtime


def _version_text() -> str:
    """onnxcomp's version, the native runtime's status (library, kernel ISA, or why it is not built),
    the onnxruntime and onnx versions (read from the installed metadata: nothing heavy is imported)."""
    import platform
    from importlib import metadata

    from onnxcomp import __version__, runtime

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return "\n".join(
        [
            f"onnxcomp {__version__}",
            f"native runtime: {runtime.status().describe()}",
            f"onnxruntime {version('onnxruntime')}, onnx {version('onnx')}, python {platform.python_version()}",
        ]
    )


def _show_version(value: bool) -> None:
    if value:
        print(_version_text())
        raise typer.Exit()


@app.callback()
def _main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_show_version, help="Show versions and the native runtime's status."
        ),
    ] = False,
) -> None:
    pass


def _runtime_notice() -> None:
    """Once per installation, on the first command: say that the install went on without the native runtime.

    pip hides the build's output unless it fails (or -v), so the first command says it (on stderr); a marker
    in the onnxcomp cache directory keeps later commands quiet.
    """
    import hashlib
    import os

    from onnxcomp import runtime

    info = runtime.build_info()
    if info is None or info.get("runtime") != "not built" or runtime.available():
        return
    cache = Path(
        os.environ.get("ONNXCOMP_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "onnxcomp"
    )
    key = hashlib.sha256(f"{info['file']}:{info.get('reason', '')}".encode()).hexdigest()[:16]
    marker = cache / f"runtime-notice-{key}"
    if marker.exists():
        return
    _console(stderr=True).print(
        f"note: this onnxcomp was installed without its native runtime ({info.get('reason', 'unknown reason')}); "
        "compressed models run through their standard-op function bodies. See `onnxcomp --version`.",
        markup=False,
        soft_wrap=True,
    )
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass  # a read-only cache: the note shows again next time


def _console(stderr: bool = False) -> Any:
    """Rich console; when output is not a terminal (CI logs, pipes), wide enough for the tables."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 160
    return Console(stderr=stderr, highlight=False, width=width)


def _progress_factory(console: Any) -> Any:
    """ctx.progress for passes: a rich progress bar over long loops."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    def track(items: Any, description: str = "", total: int | None = None) -> Any:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            yield from progress.track(items, total=total, description=description)

    return track


@app.command()
def optimize(
    input: Annotated[Path, typer.Argument(help="Input .onnx model (never modified).")],
    output: Annotated[Path, typer.Argument(help="Output .onnx path (written atomically).")],
    passes: Annotated[
        str | None,
        typer.Option(
            "--passes",
            "-p",
            help="Pass pipeline, e.g. 'fuse-bn,prune-filters(ratio=0.5)'. Default: the lossless pipeline.",
        ),
    ] = None,
    recipe: Annotated[Path | None, typer.Option("--recipe", help="TOML recipe file with [[pass]] tables.")] = None,
    calib: Annotated[
        Path | None, typer.Option("--calib", help="Calibration inputs: .npz keyed by input name, or .npy.")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="Integer class labels (.npy) for --calib: prints top-1 accuracy.")
    ] = None,
    input_shape: InputShapeOpt = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify", help="Compare outputs with the original; fail (exit 3, no output file) beyond tolerance."
        ),
    ] = False,
    atol: Annotated[float | None, typer.Option(help="Verification: absolute tolerance (x max(1, max|ref|)).")] = None,
    rtol: Annotated[float | None, typer.Option(help="Verification: tolerance relative to max|ref|.")] = None,
    min_cosine: Annotated[
        float | None, typer.Option(help="Verification: minimum cosine similarity per output.")
    ] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write the report as JSON.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for passes and generated inputs.")] = 0,
    hardware: Annotated[
        str, typer.Option(help="Hardware profile for the cost model: a built-in name or a `hardware probe` file.")
    ] = "zen5-1t",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
) -> None:
    """Optimize IN into OUT with a pass pipeline; optionally verify the result against the original."""
    from onnxcomp import io
    from onnxcomp.api import optimize as run_optimize
    from onnxcomp.errors import VerificationError
    from onnxcomp.verify import Tolerance, load_labels

    console = _console()
    if input.exists() and output.exists() and input.resolve() == output.resolve():
        raise UsageError(f"output path {output} is the input file; choose another output path")
    _check_writable(output, "output path")
    _check_writable(report, "--report")
    if report is not None and report.exists() and output.exists() and report.resolve() == output.resolve():
        raise UsageError("--report is the output model's path; choose another report path")
    tol = None
    if atol is not None or rtol is not None or min_cosine is not None:
        tol = Tolerance(atol=atol, rtol=rtol, min_cosine=min_cosine)
    lab = load_labels(str(labels)) if labels is not None else None
    if lab is not None and calib is None:
        raise UsageError("--labels needs --calib (the inputs the labels belong to)")
    try:
        out, rep = run_optimize(
            input,
            passes,
            recipe=recipe,
            calib=calib,
            input_shapes=io.parse_input_shapes(input_shape),
            verify=verify,
            tolerance=tol,
            labels=lab,
            seed=seed,
            hardware=hardware,
            # a progress bar only on a terminal (piped, it would leave blank lines)
            progress=None if quiet or not sys.stderr.isatty() else _progress_factory(_console(stderr=True)),
        )
    except VerificationError as err:
        rep = getattr(err, "report", None)
        if rep is not None and not quiet:
            rep.render(console, layers=False)
        if rep is not None and report is not None:
            io.atomic_write(report, rep.to_json().encode())
        raise
    rep.bytes_after = io.save_model(out, output, protect=input, data=rep.serialized)
    if report is not None:
        try:
            io.atomic_write(report, rep.to_json().encode())
        except BaseException:
            io.remove_model(output)  # both files or neither: no model without the report that was asked for
            raise
    if not quiet:
        rep.render(console)
        console.print(f"wrote {output} ({rep.bytes_after:,} bytes)")


@app.command("passes")
def list_passes() -> None:
    """List every pass with its options and whether it is lossless."""
    from rich.table import Table

    from onnxcomp.passes_api import iter_option_docs, registry
    from onnxcomp.pipeline import DEFAULT_PIPELINE

    console = _console()
    t = Table(title="onnxcomp passes", title_justify="left", show_lines=True)
    t.add_column("pass")
    t.add_column("lossless")
    t.add_column("what it does")
    t.add_column("options (default)")
    for name, cls in registry().items():
        opts = "\n".join(f"{n}: {tp} = {d!r}" + (f"  {h}" if h else "") for n, tp, d, h in iter_option_docs(cls))
        t.add_row(
            name,
            "yes" if cls.lossless else "no" + (" (needs --calib)" if cls.needs_calib else ""),
            cls.summary(),
            opts or "-",
        )
    console.print(t)
    console.print(f"default pipeline: {DEFAULT_PIPELINE}")


def _check_writable(path: Path | None, option: str) -> None:
    """A file a command will write (the output, a report): refused up front, before any work, when it cannot be."""
    from onnxcomp.io import check_writable

    if path is not None:
        check_writable(path, option)


@app.command()
def inspect(
    input: Annotated[Path, typer.Argument(help="Model to inspect.")],
    other: Annotated[
        Path | None, typer.Argument(help="A second model (e.g. the optimized one), compared and plotted beside it.")
    ] = None,
    input_shape: InputShapeOpt = None,
    hardware: Annotated[
        str, typer.Option(help="Hardware profile: a built-in name or a file from `onnxcomp hardware probe`.")
    ] = "zen5-1t",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the table as JSON.")] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Write a roofline chart (.svg, .png, .pdf); needs pip install 'onnxcomp[plot]'."),
    ] = None,
) -> None:
    """Per-layer table: op, output shape, params, FLOPs, bytes moved, arithmetic intensity, roofline bound and
    estimated time; convolutions also per algorithm (onnxruntime's im2col/direct, Winograd F(m,3))."""
    import json

    _check_writable(json_out, "--json")
    _check_writable(plot, "--plot")
    if plot is not None and plot.suffix.lower() not in (".svg", ".png", ".pdf"):
        raise UsageError(f"--plot {plot}: the file name must end in .svg, .png or .pdf")
    if plot is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib: pip install 'onnxcomp[plot]'")

    from rich.table import Table

    from onnxcomp import cost, io, roofline
    from onnxcomp import hardware as hwmod
    from onnxcomp.report import format_count
    from onnxcomp.shapes import resolve

    hw = hwmod.resolve(hardware)
    shapes = io.parse_input_shapes(input_shape)

    def load(path: Path) -> tuple[Any, Any, list[dict[str, Any]]]:
        norm = io.normalize(io.load_model(path, weights=False), shapes, copy=False)  # dims suffice: no weights
        plan = resolve(norm, shapes)
        plan.require("inspect")
        model = cost.concrete(norm, plan.shapes())
        return plan, model, roofline.analyze(model, hw)

    plan, model, rows = load(input)
    layers = cost.analyze(model)
    console = _console()
    console.print(plan.summary(), soft_wrap=True, markup=False, highlight=False)
    t = Table(title=f"{input.name} on {hw.name}", title_justify="left")
    for c in ("layer", "op", "output", "params", "FLOPs", "bytes", "FLOP/B", "bound", "algorithm", "est. us"):
        t.add_column(c, justify="left" if c in ("layer", "op", "output", "bound", "algorithm") else "right")
    for c, r in zip(layers, rows):
        t.add_row(
            c.name,
            c.op,
            "x".join(map(str, c.out_shape)) if c.out_shape else "?",
            format_count(c.params),
            format_count(c.flops),
            format_count(c.bytes),
            f"{c.intensity:.1f}",
            c.bound(hw),
            r["algorithm"] or "",
            f"{r['seconds'] * 1e6:.1f}",
        )
    console.print(t)
    s = cost.summarize(model)
    console.print(
        f"nodes {s.nodes}  params {format_count(s.params)}  FLOPs {format_count(s.flops)}"
        f"  weight bytes {format_count(s.weight_bytes)}"
        f"  est. {roofline.total_seconds(rows) * 1e3:.3f} ms"
    )
    other_doc = None
    series = [(input.name, rows)]
    if other is not None:
        _, model_b, rows_b = load(other)
        s_b = cost.summarize(model_b)
        est_a, est_b = roofline.total_seconds(rows), roofline.total_seconds(rows_b)
        console.print(
            f"{other.name}: nodes {s_b.nodes}  FLOPs {format_count(s_b.flops)}  est. {est_b * 1e3:.3f} ms"
            f"  ({est_a / est_b:.2f}x {input.name})"
        )
        other_doc = {"model": str(other), "layers": rows_b, "summary": s_b.to_dict()}
        series.append((other.name, rows_b))
    if json_out is not None:
        out_rows = []
        for c, r in zip(layers, rows):
            out_rows.append(
                {
                    "name": c.name,
                    "op": c.op,
                    "output": c.out_shape,
                    "params": c.params,
                    "flops": c.flops,
                    "bytes": c.bytes,
                    "intensity": c.intensity,
                    "bound": c.bound(hw),
                    "seconds": r["seconds"],
                    "algorithm": r["algorithm"],
                    "algorithms": r["algorithms"],
                }
            )
        doc: dict[str, Any] = {
            "inputs": plan.to_dict()["inputs"],
            "hardware": hwmod.to_dict(hw),
            "layers": out_rows,
            "summary": s.to_dict(),
        }
        if other_doc is not None:
            doc["other"] = other_doc
        io.atomic_write(json_out, json.dumps(doc, indent=2).encode())
    if plot is not None:
        roofline.plot(series, hw, plot, title=f"{' vs '.join(n for n, _ in series)} on {hw.name}")
        console.print(f"wrote {plot}")


hardware_app = typer.Typer(help="Hardware profiles for the cost model.", no_args_is_help=True)
app.add_typer(hardware_app, name="hardware")


@hardware_app.command("probe")
def hardware_probe(
    output: Annotated[Path, typer.Option("--output", "-o", help="Profile file to write (JSON).")] = Path(
        "hardware.json"
    ),
    name: Annotated[str, typer.Option(help="Profile name (shown in reports).")] = "probed",
    runs: Annotated[int, typer.Option(help="Timed runs per measurement (medians).")] = 7,
) -> None:
    """Measure this machine (1 thread): FMA peak, memory bandwidth, onnxruntime's Conv and the native Winograd
    kernels; write a profile that --hardware accepts (and select-conv's estimator uses)."""
    from onnxcomp import hardware as hwmod

    if runs < 1:
        raise UsageError("--runs must be at least 1")
    _check_writable(output, "--output")
    console = _console(stderr=True)
    hw, extra = hwmod.probe(name, runs=runs, progress=lambda msg: console.print(f"probe: {msg}", highlight=False))
    hwmod.save(hw, output, extra)
    out = _console()
    out.print(
        f"{hw.name}: peak {hw.peak_gflops:.1f} GFLOP/s, memory {hw.bandwidth_gbs:.1f} GB/s, "
        f"last-level cache {hw.llc_bytes >> 20} MB ({extra['kernel_set']})"
    )
    out.print("efficiency: " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(hw.efficiency.items())))
    out.print(f"wrote {output} (use: --hardware {output})")


@hardware_app.command("show")
def hardware_show(
    profile: Annotated[str, typer.Argument(help="A built-in name or a profile file.")] = "zen5-1t",
) -> None:
    """Print a hardware profile (built-in or file) as JSON; without an argument, also list the built-ins."""
    import json

    from onnxcomp import cost
    from onnxcomp import hardware as hwmod

    _console().print(json.dumps(hwmod.to_dict(hwmod.resolve(profile)), indent=2), markup=False, highlight=False)
    _console().print(f"built-in profiles: {', '.join(cost.HARDWARE)}")


@app.command("verify")
def verify_cmd(
    a: Annotated[Path, typer.Argument(help="Reference model.")],
    b: Annotated[Path, typer.Argument(help="Model to check against the reference.")],
    inputs: Annotated[
        Path | None, typer.Option("--inputs", "--calib", help="Inputs (.npz/.npy); default: generated.")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="Integer labels (.npy) for --inputs: top-1 accuracy.")
    ] = None,
    input_shape: InputShapeOpt = None,
    atol: Annotated[
        float | None, typer.Option(help="Absolute tolerance (x max(1, max|ref|)). Default 1e-5 (lossless).")
    ] = None,
    rtol: Annotated[float | None, typer.Option(help="Tolerance relative to max|ref|. Default 1e-4 (lossless).")] = None,
    min_cosine: Annotated[
        float | None,
        typer.Option(help="Minimum cosine similarity per output. Alone, it is the only check (lossy models)."),
    ] = None,
    lossy: Annotated[
        bool, typer.Option("--lossy", help="B is a lossy compression of A: check cosine >= 0.9 only.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for generated inputs.")] = 0,
    runtime: RuntimeOpt = None,
) -> None:
    """Compare every output of B with A; exit 3 when beyond tolerance.

    Without tolerance options the check is lossless (max abs err <= 1e-5 * max(1, max|ref|) + 1e-4 * max|ref|,
    cosine >= 0.99999); any of --atol/--rtol/--min-cosine replaces it (the others are then not checked), as in
    ``optimize``; --lossy checks cosine >= 0.9.
    """
    from onnxcomp import io
    from onnxcomp.api import verify_models
    from onnxcomp.calib import load_arrays
    from onnxcomp.errors import VerificationError
    from onnxcomp.report import render_verification
    from onnxcomp.shapes import resolve
    from onnxcomp.verify import Tolerance, load_labels

    if atol is not None or rtol is not None or min_cosine is not None:
        if lossy:
            raise UsageError("--lossy sets the tolerance itself: give it or --atol/--rtol/--min-cosine, not both")
        tol = Tolerance(atol, rtol, min_cosine)
    else:
        tol = Tolerance.lossy() if lossy else Tolerance.lossless()
    shapes = io.parse_input_shapes(input_shape)
    ma, mb = io.normalize(io.load_model(a), shapes, copy=False), io.normalize(io.load_model(b), shapes, copy=False)
    feeds = load_arrays(inputs, ma) if inputs is not None else None
    lab = load_labels(str(labels)) if labels is not None else None
    if lab is not None and feeds is None:
        raise UsageError("--labels needs --inputs (the inputs the labels belong to)")
    from onnxcomp.ort import resolve_runtime

    rt = resolve_runtime(mb, _runtime_name(runtime) or "auto")
    plan = resolve(ma, shapes, feeds)
    plan.require("verify")
    console = _console()
    console.print(plan.summary(), soft_wrap=True, markup=False, highlight=False)
    res = verify_models(ma, mb, feeds, plan, tol, lab, seed, runtime=rt)
    console.print(f"B runs on runtime: {rt} ({_RUNTIME_HELP[rt]}); A on ort")
    render_verification(console, res)
    if not res.ok:
        raise VerificationError("verification failed: " + "; ".join(res.failures()))


@app.command()
def diff(
    a: Annotated[Path, typer.Argument(help="Original model.")],
    b: Annotated[Path, typer.Argument(help="Optimized model.")],
    input_shape: InputShapeOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the diff as JSON.")] = None,
    limit: Annotated[int, typer.Option(help="Rows shown per section.")] = 30,
) -> None:
    """What changed: nodes removed/added/rewritten, op counts, params, FLOPs, size."""
    import json

    _check_writable(json_out, "--json")

    from rich.table import Table

    from onnxcomp import io
    from onnxcomp.diff import diff_models
    from onnxcomp.report import format_count
    from onnxcomp.shapes import resolve

    shapes = io.parse_input_shapes(input_shape)
    ma, mb = io.normalize(io.load_model(a), shapes, copy=False), io.normalize(io.load_model(b), shapes, copy=False)
    plan = resolve(ma, shapes)
    d = diff_models(ma, mb, plan)
    console = _console()
    if plan.complete:
        console.print(plan.summary(), soft_wrap=True, markup=False, highlight=False)
    else:
        console.print(plan.flops_note(), soft_wrap=True, markup=False, highlight=False)
    t = Table(title=f"{a.name} -> {b.name}", title_justify="left")
    for c in ("", "A", "B", "ratio"):
        t.add_column(c, justify="right" if c else "left")
    for label, (x, y) in (
        ("params", d.params),
        ("FLOPs", d.flops),
        ("weight bytes", d.weight_bytes),
        ("file bytes", (io.file_size(a), io.file_size(b))),
    ):
        t.add_row(label, format_count(x), format_count(y), f"{x / y:.2f}x" if x is not None and y else "-")
    for op, (x, y) in d.op_counts.items():
        t.add_row(f"#{op}", str(x), str(y), "")
    console.print(t)
    for title, rows in (("removed", d.removed), ("added", d.added), ("rewritten", d.rewritten)):
        if rows:
            console.print(
                f"{title} ({len(rows)}): "
                + ", ".join(f"{r[0]} ({'->'.join(r[1:])})" for r in rows[:limit])
                + (" ..." if len(rows) > limit else "")
            )
    if json_out is not None:
        io.atomic_write(json_out, json.dumps(d.to_dict(), indent=2).encode())


@app.command()
def bench(
    a: Annotated[Path, typer.Argument(help="Model to time (the baseline when B is given).")],
    b: Annotated[Path | None, typer.Argument(help="Second model, timed interleaved with A.")] = None,
    input_shape: InputShapeOpt = None,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads.")] = 1,
    runs: Annotated[int, typer.Option(help="Timed runs per model.")] = 50,
    warmup: Annotated[int, typer.Option(help="Untimed runs per model first.")] = 5,
    runtime: RuntimeOpt = None,
) -> None:
    """Latency of A (and B) in onnxruntime: same process, interleaved runs, medians and ratio."""
    from rich.table import Table

    from onnxcomp import io
    from onnxcomp.bench import interleaved, model_runner
    from onnxcomp.calib import generate_inputs
    from onnxcomp.shapes import resolve

    if runs < 1 or warmup < 0 or threads < 0:
        raise UsageError("bench: --runs must be at least 1, --warmup and --threads at least 0")
    shapes = io.parse_input_shapes(input_shape)
    models = {str(a): io.normalize(io.load_model(a), shapes, copy=False)}
    if b is not None:
        if str(b) == str(a):
            raise UsageError("bench A B: A and B are the same file")
        models[str(b)] = io.normalize(io.load_model(b), shapes, copy=False)
    from onnxcomp.ort import resolve_runtime

    first = next(iter(models.values()))
    plan = resolve(first, shapes)
    plan.require("bench")
    feeds = generate_inputs(first, plan.shapes())
    used = {name: resolve_runtime(m, _runtime_name(runtime) or "auto") for name, m in models.items()}
    fns = {name: model_runner(m, feeds, threads=threads, runtime=used[name]) for name, m in models.items()}
    timings = interleaved(fns, runs=runs, warmup=warmup)
    t = Table(title=f"latency, {threads} thread(s), {runs} interleaved runs", title_justify="left")
    for c in ("model", "runtime", "median ms", "p10 ms", "p90 ms"):
        t.add_column(c, justify="left" if c in ("model", "runtime") else "right")
    for tm in timings.values():
        t.add_row(tm.name, used[tm.name], f"{tm.median_ms:.3f}", f"{tm.p10_ms:.3f}", f"{tm.p90_ms:.3f}")
    console = _console()
    console.print(plan.summary(), soft_wrap=True, markup=False, highlight=False)
    console.print(t)
    for name in sorted(set(used.values())):
        console.print(f"runtime {name}: {_RUNTIME_HELP[name]}")
    if b is not None:
        ta, tb = timings[str(a)], timings[str(b)]
        console.print(f"speedup B vs A: {ta.median_ms / tb.median_ms:.3f}x")


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the typer app, turns errors into one line and an exit code.

    Every error is one ``error: ...`` line on stderr: usage errors (an unknown option with the closest valid
    one, a bad value, an unknown command) exit 2, onnxcomp errors exit with their code, anything unexpected is
    an internal error (exit 1), with the traceback under ``--debug``. Warnings (numpy's RuntimeWarnings among
    them) go to the debug log, never to the terminal.
    """
    import warnings

    usage_error, no_args, exit_, abort = (
        _click_classes(n) for n in ("UsageError", "NoArgsIsHelpError", "Exit", "Abort")
    )
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    err = _console(stderr=True)
    with warnings.catch_warnings():
        warnings.showwarning = _log_warning
        try:
            if "--version" not in args:
                _runtime_notice()
            command = typer.main.get_command(app)
            code = command.main(args=args, prog_name="onnxcomp", standalone_mode=False)
            return code if isinstance(code, int) else 0
        except no_args as e:
            if e.ctx is not None:
                err.print(e.ctx.get_help(), markup=False, highlight=False)
            return 2
        except usage_error as e:
            err.print(f"error: {_usage_message(e)}", markup=False, soft_wrap=True, highlight=False)
            return 2
        except exit_ as e:
            return e.exit_code
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except (*abort, KeyboardInterrupt):
            err.print("error: interrupted", markup=False)
            return 130
        except OnnxcompError as e:
            if debug:
                raise
            err.print(f"error: {e}", markup=False, soft_wrap=True, highlight=False)
            return e.exit_code
        except Exception as e:
            if debug:
                raise
            msg = " ".join(str(e).split())[:300]
            err.print(
                f"error: internal error: {type(e).__name__}: {msg} (rerun with --debug for details)",
                markup=False,
                soft_wrap=True,
                highlight=False,
            )
            return 1


def _log_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    logging.getLogger("onnxcomp.warnings").debug("%s:%s: %s: %s", filename, lineno, category.__name__, message)


def _click_classes(name: str) -> tuple[type, ...]:
    """The exception class ``name`` of click and of the copy of click that typer >= 0.29 vendors."""
    import importlib

    found = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if cls is not None:
            found.append(cls)
    return tuple(found)


def _usage_message(e: Any) -> str:
    """A click usage error as one line; an unknown option or command names the closest valid one."""
    import difflib

    where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
    if isinstance(e, _click_classes("NoSuchOption")) and e.ctx is not None:
        valid = sorted({o for p in e.ctx.command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")})
        close = difflib.get_close_matches(e.option_name, valid, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]}?" if close else f"; valid options: {', '.join(valid)}"
        return f"no such option {e.option_name} for '{e.ctx.command_path}'{hint}"
    text = " ".join(e.format_message().split()).rstrip(".").replace(". Did you mean", "; did you mean")
    return text[:1].lower() + text[1:] + where


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
