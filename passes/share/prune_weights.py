"""prune-weights: unstructured sparsity by magnitude or by Wanda's activation-aware score."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Literal

from onnxcomp.analysis.weights import SelectOptions, Target, collect_targets, per_layer_value
from onnxcomp.errors import UsageError
from onnxcomp.passes_api import Pass, PassContext, PassResult, opt, register_pass

from ._calibration import (
    current_inputs,
    data_free_layers,
    dense_refit,
    dense_solve_flops,
    enough_rows,
    input_energy,
    layer_inputs,
    lsq_update,
    paired_grams,
    sequential_waves,
)
from ._report import rel_error

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

logger = logging.getLogger(__name__)


@register_pass
class PruneWeights(Pass):
    """MatMul / Gemm / Conv weight  =>  the same weight with its lowest-scored entries set to 0 (lossy).

    Deep Compression stage 1, post-training. Score per weight: |w| (``criterion=magnitude``) or, with
    calibration data, Wanda's |w| * ||x_k|| where ||x_k|| is the RMS of the weight's input feature
    (``criterion=wanda``; ``auto`` uses it when calibration data is given). The ``ratio`` lowest scores are
    zeroed per layer (``scope=layer``), per output channel (``scope=output``, Wanda's comparison group) or
    over all selected layers together (``scope=global``). The model keeps its ops and float weights: the
    zeros pay off in ``kmeans`` (reserved zero code, EIE sparse layout) and Huffman coding.

    ``update=lsq`` re-fits the kept weights by least squares on the calibration inputs. ``sequential``
    (with update=lsq; on by default when calibration data is given) does it as SparseGPT/OBC's
    sequential mode: the layers are taken in dependency order and every layer is fitted on its input
    X_c in the graph pruned so far, towards its output X_o W in the original graph, so it also makes up
    for the error of the layers before it. Its mask is then scored against W* (the weights that best map
    X_c to X_o W, from which the least-squares loss of a pruned w' is measured) with the energy of X_c.
    With ``scope=global`` the comparison over all layers needs every score up front, before any layer is
    changed: it fixes how many weights each layer loses from the first (original-input) scores, and each
    layer then drops that many of its own current scores, so the total sparsity is exactly ``ratio``.
    A layer whose dense re-fit would cost more than ``max_update_flops`` (its k x k Gram matrices alone
    are large), or with fewer than 2 sampled input positions per kept weight of an output, is fitted one-shot
    (on its original input; counter ``layers_one_shot``): chasing the earlier layers' error with so few
    positions fits the calibration samples, not the model.
    ``target_sparsity`` replaces the one ratio by per-layer ratios from measured sensitivity (the AMC / HAWQ
    idea): every layer's error is measured at the candidate ratios, with calibration data as the model-output
    error when only that layer is pruned, without as the weights' relative error; a multiple-choice knapsack
    then zeroes exactly ``target_sparsity`` of the weights with the least predicted error. The report lists
    each layer's sparsity and predicted error.
    Without update=lsq the layers keep their original weights and the original-input Wanda mask is kept
    (a mask chosen on the current inputs alone measured worse: digits CNN, 80% global, 88.4% -> 52.0%).
    """

    name = "prune-weights"
    lossless = False

    @dataclasses.dataclass
    class Options(SelectOptions):
        ratio: float = opt(0.5, "fraction of weights set to zero, 0..1")
        ratio_per_layer: dict[str, float] = opt({}, "ratio for layers matching a name pattern (scope layer/output)")
        target_sparsity: float | None = opt(
            None,
            "fraction of all selected weights set to zero, split over the layers by measured sensitivity "
            "(replaces ratio; layers in ratio-per-layer keep theirs)",
        )
        allocation: Literal["sensitivity", "uniform"] = opt(
            "sensitivity",
            "target-sparsity: per-layer ratios with the least predicted error (with --calib: the model-output "
            "error when only that layer is pruned, at each candidate ratio; without: the weights' relative "
            "error), or one uniform ratio",
        )
        candidate_ratios: list[float] = opt(
            [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95], "target-sparsity: per-layer ratios measured"
        )
        sensitivity_samples: int = opt(8, "target-sparsity with --calib: calibration samples per sensitivity trial")
        criterion: Literal["auto", "magnitude", "wanda"] = opt(
            "auto", "score: |w|, or Wanda's |w| * ||x|| (auto: wanda when calibration data is given)"
        )
        scope: Literal["layer", "output", "global"] = opt("layer", "where the lowest scores are compared")
        update: Literal["none", "lsq"] = opt(
            "none",
            "lsq: with calibration data, re-fit the kept weights of each output by least squares so the "
            "layer output on the calibration inputs changes least (optimal brain surgeon update of the mask)",
        )
        damp: float = opt(0.01, "lsq: ridge added to the input Gram matrix, relative to its mean diagonal")
        max_update_flops: float = opt(2e10, "lsq: skip the update of layers whose solves cost more than this")
        calib_samples: int = opt(256, "calibration samples used for activation statistics")
        sequential: bool | None = opt(
            None,
            "update=lsq: take the layers in dependency order, fit each on its input in the graph pruned "
            "so far towards its ORIGINAL output (it also corrects the earlier layers) and score its mask "
            "on that input. Default (unset): on when calibration data is given; true without "
            "calibration data is an error. Costs one onnxruntime run over the calibration data per "
            "layer level (a wave of layers reading no other pruned layer's output): on big models "
            "that can add minutes, set false to save it. Wants >= ~128 calibration samples (with fewer "
            "it can fit the samples rather than the model)",
        )

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        import numpy as np

        o = self.options
        result = self.new_result()
        for r in [o.ratio, *o.ratio_per_layer.values(), *o.candidate_ratios]:
            if not 0.0 <= float(r) < 1.0:
                raise UsageError(f"prune-weights: ratio must be in [0, 1), got {r}")
        if o.target_sparsity is not None:
            if not 0.0 <= o.target_sparsity < 1.0:
                raise UsageError(f"prune-weights: target-sparsity must be in [0, 1), got {o.target_sparsity}")
            if o.scope == "global":
                raise UsageError(
                    "prune-weights: target-sparsity allocates per-layer ratios; with scope=global use ratio"
                )
            if o.sensitivity_samples < 1:
                raise UsageError("prune-weights: sensitivity-samples must be at least 1")
        criterion = o.criterion
        if criterion == "auto":
            criterion = "wanda" if ctx.calib is not None else "magnitude"
        if criterion == "wanda" and ctx.calib is None:
            raise UsageError("prune-weights: criterion=wanda needs calibration data (--calib)")
        if o.sequential and ctx.calib is None:
            raise UsageError("prune-weights: sequential=true needs calibration data (--calib)")
        # unset: on with calibration data; only the lsq update uses it (see the class docstring)
        sequential = o.sequential is not False and o.update == "lsq" and ctx.calib is not None
        # float16 weights too: the zeros and the kept weights are written back in float16 (the kept ones
        # bit-identical, or the lsq re-fit rounded to float16)
        targets = collect_targets(graph, o, result, half=True)
        if not targets:
            return result
        if o.update == "lsq" and ctx.calib is None:
            raise UsageError("prune-weights: update=lsq needs calibration data (--calib)")
        uses_acts = ctx.calib is not None and (criterion == "wanda" or o.update == "lsq")
        # X_orig: every layer's input in the graph as it came in, captured before anything changes
        acts = layer_inputs(graph, ctx, targets, o.calib_samples) if uses_acts else {}
        energy = input_energy(graph, ctx, targets, o.calib_samples, acts) if criterion == "wanda" else {}
        scores = {id(t): score(t.w2, energy.get(id(t))) for t in targets}
        data_free_layers(ctx, targets, acts if uses_acts else [t.x.name for t in targets], result)
        self._ratios: dict[int, float] = {}
        self._predicted: dict[int, float] = {}
        self._how = ""
        if o.target_sparsity is not None:
            self._ratios = self._allocate(graph, ctx, targets, scores, result)
        drops: dict[int, int] = {}  # weights each layer loses
        if o.scope == "global":
            masks = _exact_global(scores, round(o.ratio * sum(s.size for s in scores.values())))
            drops = {key: int((~m).sum()) for key, m in masks.items()}
        else:
            masks = {}
            for t in targets:
                ratio = self._ratio_for(t)
                masks[id(t)] = keep_mask(scores[id(t)], ratio, t.out_axis if o.scope == "output" else None)
        waves = sequential_waves(targets) if sequential else [[t] for t in targets]
        rng = ctx.rng(7)
        changed = False
        for wave in waves:
            cur = acts
            if sequential and changed:
                # X_cur: the wave's inputs with every earlier layer already pruned (and re-fit)
                cur = current_inputs(graph, ctx, wave, o.calib_samples)
            for t in wave:
                x = cur.get(t.x.name)
                x_orig = acts.get(t.x.name) if cur is not acts else None  # none inside a body
                grams = None
                keep = masks[id(t)]
                if x_orig is not None and (
                    not enough_rows(t, x, _max_kept(t, keep))
                    or (o.update == "lsq" and dense_solve_flops(t) > o.max_update_flops)
                ):
                    # too few calibration positions per kept weight, or too large a layer for the dense
                    # re-fit: fitted one-shot, on its original input
                    x, x_orig = x_orig, None
                    result.count("layers_one_shot")
                if x_orig is not None and criterion == "wanda":
                    # the mask from the current inputs' energy; scope=global keeps its per-layer count
                    e_cur = input_energy(graph, ctx, [t], o.calib_samples, cur)[id(t)]
                    ref = t.w2
                    if o.update == "lsq":
                        # scored against the weights the layer would best have on its current input
                        grams = paired_grams(t, x, x_orig, rng)
                        ref = dense_refit(t, *grams, o.damp, o.max_update_flops)
                    s_cur = score(t.w2 if ref is None else ref, e_cur)
                    if o.scope == "global":
                        keep = keep_count(s_cur, drops[id(t)])
                    else:
                        axis = t.out_axis if o.scope == "output" else None
                        keep = keep_mask(s_cur, self._ratio_for(t), axis)
                # a body layer without a captured input (an If branch the data does not take): by magnitude
                crit = criterion if criterion != "wanda" or id(t) in energy else "magnitude"
                changed |= self._prune(t, keep, crit, x, x_orig, grams, rng, result, ctx)
        total = sum(t.params for t in targets)
        zeros = sum(int(t.params - np.count_nonzero(t.weight.values)) for t in targets)
        result.counters["sparsity"] = round(zeros / max(1, total), 4)
        return result

    def _ratio_for(self, t: Target) -> float:
        if id(t) in self._ratios:
            return self._ratios[id(t)]
        return float(per_layer_value(t, self.options.ratio, self.options.ratio_per_layer))

    def _allocate(
        self,
        graph: gs.Graph,
        ctx: PassContext,
        targets: list[Target],
        scores: dict[int, np.ndarray],
        result: PassResult,
    ) -> dict[int, float]:
        """Per-layer ratios (by id) zeroing ``target_sparsity`` of all weights with the least predicted error.

        Every layer's error curve is measured at the candidate ratios with its own mask (the same scores
        the pass prunes by): with calibration data the model-output error when only that layer is pruned,
        sum ||y - y_ref||^2 / sum ||y_ref||^2 (onnxcomp.analysis.sensitivity), else ||W - W'||^2 / ||W||^2.
        The multiple-choice knapsack (onnxcomp.analysis.budget) splits the zeros; ``allocation=uniform``
        gives every layer the same ratio instead (the baseline).
        """
        import numpy as np

        from onnxcomp.analysis.budget import BudgetError, allocate_counts
        from onnxcomp.analysis.sensitivity import OutputErrors, weight_proxy

        o = self.options
        assert o.target_sparsity is not None
        total = sum(t.params for t in targets)
        target = round(o.target_sparsity * total)
        fixed = {id(t): float(per_layer_value(t, -1.0, o.ratio_per_layer)) for t in targets}
        axis_of = {id(t): (t.out_axis if o.scope == "output" else None) for t in targets}
        if o.allocation == "uniform":
            free = [t for t in targets if fixed[id(t)] < 0]
            left = target - sum(round(fixed[id(t)] * t.params) for t in targets if fixed[id(t)] >= 0)
            r = left / max(1, sum(t.params for t in free))
            if not 0.0 <= r < 1.0:
                raise UsageError(f"prune-weights: target-sparsity {o.target_sparsity} is out of reach")
            result.counters["target_sparsity"] = o.target_sparsity
            return {id(t): r for t in free}
        cands = sorted({0.0, *(float(c) for c in o.candidate_ratios)})
        probe = None
        if ctx.calib is not None:
            probe = OutputErrors(graph, ctx, [t.weight.name for t in targets], o.sensitivity_samples)
        curves = []
        for t in ctx.track(targets, "prune-weights sensitivity", total=len(targets)):
            ratios = [fixed[id(t)]] if fixed[id(t)] >= 0 else cands
            w = np.asarray(t.weight.values)
            pts = []
            for r in ratios:
                if r == 0.0:
                    pts.append((0.0, 0.0))
                    continue
                keep = keep_mask(scores[id(t)], r, axis_of[id(t)])
                if probe is not None:
                    keep_orig = t.weight_as_original(keep).reshape(w.shape)
                    err = probe.error(t.weight.name, np.where(keep_orig, w, 0))
                else:
                    err = weight_proxy(t.w2, np.where(keep, t.w2, 0))
                # the ratio this mask really has (per-output rounding)
                pts.append((1.0 - float(keep.mean()), err))
            if probe is not None and fixed[id(t)] < 0 and not any(e for _, e in pts):
                # no calibration sample reaches the layer (e.g. an If branch the data never takes): its zero
                # output errors would prune it the most; it gets the target sparsity itself
                keep = keep_mask(scores[id(t)], o.target_sparsity, axis_of[id(t)])
                pts = [(0.0, 0.0), (1.0 - float(keep.mean()), 0.0)]
                result.count("budget_layers_not_reached")
            curves.append(pts)
        try:
            counts = allocate_counts([t.params for t in targets], curves, target)
        except BudgetError as err:
            raise UsageError(
                f"prune-weights: target-sparsity {o.target_sparsity} is above what the candidate ratios "
                f"(at most {max(cands)}) and ratio-per-layer allow"
            ) from err
        how = "output error" if probe is not None else "weight error proxy"
        result.counters["target_sparsity"] = o.target_sparsity
        result.counters["sensitivity_trials"] = sum(1 for pts in curves for r, _ in pts if r > 0)
        predicted = 0.0
        out = {}
        for t, pts, k in zip(targets, curves, counts, strict=True):
            xs, ys = zip(*sorted(pts), strict=True)
            err = float(np.interp(k / t.params, xs, ys))
            predicted += err
            out[id(t)] = k / t.params
            self._predicted[id(t)] = err
            self._how = f"budget by {how}"
        result.counters["predicted_error"] = float(np.float32(predicted))
        logger.info("prune-weights target-sparsity %.3f: per-layer ratios by %s", o.target_sparsity, how)
        return out

    def _prune(
        self,
        t: Target,
        keep: np.ndarray,
        criterion: str,
        x: np.ndarray | None,
        x_orig: np.ndarray | None,
        grams: tuple[list[np.ndarray], list[np.ndarray] | None] | None,
        rng: np.random.Generator,
        result: PassResult,
        ctx: PassContext,
    ) -> bool:
        """Zero one layer's dropped weights (re-fitting the kept ones with update=lsq); True if it changed."""
        import numpy as np

        o = self.options
        w = np.asarray(t.weight.values)
        keep_orig = t.weight_as_original(keep).reshape(w.shape)
        w2_new = np.where(keep, t.w2, 0).astype(np.float32)
        w_new = w  # kept weights stay bit-identical unless re-fit
        decision = f"{criterion} {o.scope}" + (" sequential" if x_orig is not None else "")
        if id(t) in self._predicted:
            decision += f", {self._how}"
        if o.update == "lsq" and x is None:
            result.skip(t.name, f"lsq update skipped: inside the {t.where} subgraph, its input is not captured")
        elif o.update == "lsq":
            refit = lsq_update(t, keep, x, o.damp, o.max_update_flops, rng, x_orig, grams)
            if refit is None:
                result.skip(t.name, "lsq update skipped: too expensive (max-update-flops)")
            else:
                w2_new, decision = refit, decision + " + lsq"
                w_new = t.weight_as_original(w2_new).reshape(w.shape)
                if t.node.op == "Gemm" and float(t.node.attrs.get("alpha", 1.0)) != 1.0:
                    w_new = w_new / np.float32(t.node.attrs["alpha"])  # the storage matrix holds alpha * W
        with np.errstate(over="ignore"):  # (float16: checked below)
            pruned = np.where(keep_orig, w_new, 0).astype(w.dtype)
        if t.half and not np.isfinite(pruned).all():
            # a re-fit weight beyond float16's range: the kept weights stay as they were
            result.skip(t.name, "lsq update skipped: a re-fit weight exceeds float16's range")
            pruned, w2_new = np.where(keep_orig, w, 0).astype(w.dtype), np.where(keep, t.w2, 0)
            decision = decision.removesuffix(" + lsq")
        if t.half:  # the error of the weights as written
            w2_new = np.where(keep, w2_new, 0).astype(np.float16).astype(np.float32)
        before_nz = int(np.count_nonzero(w))
        changed = not np.array_equal(pruned, w)
        t.weight.values = pruned
        after_nz = int(np.count_nonzero(pruned))
        result.layer(
            t.name,
            op=t.node.op,
            decision=decision,
            params_before=before_nz,
            params_after=after_nz,
            error=rel_error(t.w2, w2_new),
            extra={
                "sparsity": round(1 - after_nz / max(1, w.size), 6),
                "weights": int(w.size),
                **({"subgraph": t.where} if t.where else {}),
                **({"predicted_error": self._predicted[id(t)]} if id(t) in self._predicted else {}),
            },
        )
        ctx.tag(t.node, self.name, [t.node.name])
        result.count("layers")
        result.count("weights_zeroed", before_nz - after_nz)
        return changed


def _max_kept(t: Target, keep: np.ndarray) -> int:
    """The most weights any output keeps."""
    return int(keep.sum(axis=1 - t.out_axis).max()) if keep.size else 0


def keep_count(scores: np.ndarray, k: int) -> np.ndarray:
    """True for the weights kept: exactly the ``k`` lowest scores of the layer dropped."""
    import numpy as np

    flat = scores.ravel()
    keep = np.ones(flat.size, bool)
    if k:
        keep[np.argpartition(flat, k - 1)[:k]] = False
    return keep.reshape(scores.shape)


def score(w2: np.ndarray, energy: np.ndarray | None) -> np.ndarray:
    """|w|, or Wanda's |w| * RMS(x_k) of the weight's input feature."""
    import numpy as np

    s = np.abs(w2.astype(np.float64))
    return s if energy is None else s * np.sqrt(energy)


def keep_mask(scores: np.ndarray, ratio: float, axis: int | None) -> np.ndarray:
    """True for the weights kept: exactly round(ratio * n) lowest scores dropped per layer or per slice."""
    import numpy as np

    if axis is None:
        return keep_count(scores, round(ratio * scores.size))
    moved = np.moveaxis(scores, axis, 0)
    keep = np.ones(moved.shape, bool)
    per = moved.reshape(moved.shape[0], -1)
    k = round(ratio * per.shape[1])
    if k:
        idx = np.argpartition(per, k - 1, axis=1)[:, :k]
        flat_keep = keep.reshape(per.shape)
        np.put_along_axis(flat_keep, idx, False, axis=1)
        keep = flat_keep.reshape(moved.shape)
    return np.moveaxis(keep, 0, axis)


def _exact_global(scores: dict[int, np.ndarray], k: int) -> dict[int, np.ndarray]:
    """Exactly k lowest scores over all layers dropped (ties broken by position)."""
    import numpy as np

    keys = list(scores)
    sizes = [scores[key].size for key in keys]
    every = np.concatenate([scores[key].ravel() for key in keys])
    keep = np.ones(every.size, bool)
    if k:
        keep[np.argpartition(every, k - 1)[:k]] = False
    out, start = {}, 0
    for key, size in zip(keys, sizes, strict=True):
        out[key] = keep[start : start + size].reshape(scores[key].shape)
        start += size
    return out
