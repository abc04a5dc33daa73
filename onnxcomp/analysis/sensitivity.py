"""Per-layer sensitivity: the model-output error when only one layer's weights are changed.

Used by the budget modes of the lossy passes (kmeans target-bits, prune-weights target-sparsity, the per-layer
ratios of prune-channels / prune-filters target-flops) to measure each layer's error curve.

One onnxruntime session serves every trial: the weights under test are declared as graph inputs as well as
initializers (onnxruntime then lets a feed override an initializer), so a trial is one run with one weight
fed, not a new session. The error of a trial is the relative squared error of the model's float outputs
against the unchanged model's, sum ||y - y_ref||^2 / sum ||y_ref||^2 over the outputs, on the first
``samples`` calibration samples.

Without calibration data the proxy is the weight's relative squared error ||W - W'||^2 / ||W||^2 (its
noise-to-signal ratio; in a deep network such relative noises add up at the output to first order).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import onnx_graphsurgeon as gs

    from onnxcomp.passes_api import PassContext


def weight_proxy(w: np.ndarray, w_new: np.ndarray) -> float:
    """||W - W'||^2 / ||W||^2."""
    import numpy as np

    den = float(np.sum(np.square(w, dtype=np.float64)))
    return float(np.sum(np.square(w.astype(np.float64) - w_new))) / den if den > 0 else 0.0


class OutputErrors:
    """Model-output error of single-weight substitutions, on a few calibration samples."""

    def __init__(
        self, graph: gs.Graph, ctx: PassContext, weights: Iterable[str], samples: int, outputs: Iterable[str] = ()
    ) -> None:
        """``outputs``: the tensors the error is measured on, graph outputs or tensors computed in the main graph
        (e.g. a classifier's logits: its softmax saturates on confident samples and hides the change); all
        float graph outputs when empty."""
        import onnx

        from onnxcomp.calib import first_samples, sample_count
        from onnxcomp.errors import UsageError
        from onnxcomp.graph import export_model
        from onnxcomp.ort import run, session

        if ctx.calib is None:
            raise ValueError("output errors need calibration data")
        model = export_model(graph, ctx)
        names = set(weights)
        _hoist_body_initializers(model, names)
        inits = {i.name: i for i in model.graph.initializer}
        missing = names - set(inits)
        if missing:
            raise ValueError(f"not initializers: {sorted(missing)[:3]}")
        # a trial's weight is fed in its initializer's type (float16 weights: kmeans' _half)
        self._dtypes = {n: onnx.helper.tensor_dtype_to_np_dtype(inits[n].data_type) for n in names}
        declared = {i.name for i in model.graph.input}
        for name in sorted(names - declared):
            init = inits[name]
            model.graph.input.append(onnx.helper.make_tensor_value_info(name, init.data_type, list(init.dims)))
        self._feeds = first_samples(dict(ctx.calib), model, samples)
        total = sample_count(dict(ctx.calib), model)
        #: calibration samples in all (None: no sample axis) and the first ``taken`` of them measured on
        # (a fixed-batch model's samples are cut in whole batches: as many as the cut feeds hold)
        cut = sample_count(self._feeds, model) if total is not None else None
        self.total, self.taken = total, (cut or min(samples, total) if total is not None else None)
        wanted = list(dict.fromkeys(outputs))
        graph_outs = [o.name for o in model.graph.output]
        computed = {o for n in model.graph.node for o in n.output}
        unknown = [n for n in wanted if n not in graph_outs and n not in computed]
        if unknown:
            raise UsageError(f"sensitivity outputs {unknown} are not tensors of the model (its outputs: {graph_outs})")
        for name in wanted:
            if name not in graph_outs:  # an intermediate tensor: fetched as an extra output (as calib.Capture)
                model.graph.output.append(onnx.ValueInfoProto(name=name))
        self._sess = session(model, optimize=True, runtime=False)
        self._run = run
        outs = wanted or graph_outs
        ref = run(self._sess, dict(self._feeds), outs)
        from onnxcomp.ort import Ragged

        ragged = [n for n, v in zip(outs, ref, strict=True) if isinstance(v, Ragged)]
        if ragged:
            raise UsageError(
                f"sensitivity: output(s) {', '.join(ragged)} change shape from one batch of the stacked calibration "
                "samples to the next (as boxes after NMS); name fixed-shape tensors with sensitivity-outputs (a "
                "detector's raw head outputs)"
            )
        self._outs = [n for n, v in zip(outs, ref, strict=True) if _is_float(v)]
        self._ref = [v for v in ref if _is_float(v)]
        self._scale = sum(float((v.astype("float64") ** 2).sum()) for v in self._ref) or 1.0

    def error(self, name: str, value: np.ndarray) -> float:
        """sum ||y - y_ref||^2 / sum ||y_ref||^2 with ``value`` as the initializer ``name``."""
        return self.error_of({name: value})

    def error_of(self, values: Mapping[str, np.ndarray]) -> float:
        """The same with several initializers replaced at once (a pruned channel's consumers)."""
        import numpy as np

        feeds = {**self._feeds, **{k: np.asarray(v, self._dtypes.get(k, np.float32)) for k, v in values.items()}}
        got = self._run(self._sess, feeds, self._outs)
        num = sum(float(((g.astype(np.float64) - r) ** 2).sum()) for g, r in zip(got, self._ref, strict=True))
        return num / self._scale

    def errors(self, trials: Mapping[str, Iterable[np.ndarray]]) -> Iterator[tuple[str, list[float]]]:
        for name, values in trials.items():
            yield name, [self.error(name, v) for v in values]


def _hoist_body_initializers(model: onnx.ModelProto, names: set[str]) -> None:
    """Initializers of If/Loop/Scan bodies named in ``names`` become main-graph initializers (the body reads them
    from the outer scope, same values: names are unique across the model's scopes), so that a trial can feed
    them as graph inputs like any other weight."""
    stack = [n for n in model.graph.node]
    while stack:
        node = stack.pop()
        for a in node.attribute:
            for body in [a.g] if a.HasField("g") else list(a.graphs):
                moved = [i for i, init in enumerate(body.initializer) if init.name in names]
                for i in reversed(moved):
                    model.graph.initializer.append(body.initializer[i])
                    del body.initializer[i]
                stack.extend(body.node)


def _is_float(v: object) -> bool:
    import numpy as np

    return isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.size > 0
