"""prune-filters: structured filter pruning by a weight criterion, propagated through the whole graph."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Literal

from onnxcomp.analysis.channels import CONSUMER
from onnxcomp.passes_api import Pass, PassResult, opt, register_pass

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

    from onnxcomp.passes_api import PassContext

logger = logging.getLogger(__name__)


@register_pass
class PruneFilters(Pass):
    """Conv/ConvTranspose/Gemm/MatMul filters  =>  fewer filters and consumer input channels (lossy).

    Channels are removed per dependency group (onnxcomp.analysis.channels): a residual stream loses the same
    channels in all its producers, BatchNormalizations, depthwise convolutions, Concat offsets, Split sizes, Reshape
    targets and consumers together, so the pruned model is a plain, smaller ONNX model. Criteria: ``l1``/``l2``
    filter norm (Li et al. 2017), ``bn`` |gamma| of the following BatchNormalization (Network Slimming; groups
    without one fall back to L1), ``random`` (a baseline). ``scope=layer`` removes ``ratio`` of every group
    (``ratios`` overrides per layer name or pattern); ``scope=global`` ranks all channels by scores normalized by
    their group's mean and removes ``ratio`` of them, or those below ``threshold``. ``target_flops`` removes that
    fraction of the model's FLOPs (``target_time``: of its roofline time): with ``scope=layer`` split over the
    groups by measured sensitivity (with calibration data the model-output error when only that group loses
    channels, with ``reconstruct`` and ``correction=lstsq|bias`` the consumers refitted in each trial as written,
    without data the consumers' weight energy removed; a knapsack picks the counts with the least summed error,
    passes/prune/_budget.py), with ``allocation=uniform`` or ``scope=global`` by bisection on the ratio. With
    calibration data and ``reconstruct=true`` every consumer is refitted afterwards so that its outputs match the
    original's: least squares (``correction=lstsq``), a bias shift (``bias``: b' = b + mean(Y - Y')), or
    BatchNormalization statistics re-estimated on the pruned activations (``bn``; a bias shift where no
    BatchNormalization follows).
    """

    name = "prune-filters"
    lossless = False
    needs_calib = False

    @dataclasses.dataclass
    class Options:
        criterion: Literal["l1", "l2", "bn", "random"] = opt("l1", "filter importance: l1, l2, bn, random")
        ratio: float = opt(0.3, "fraction of channels to remove (per group; of all channels if scope=global)")
        ratios: dict[str, float] = opt({}, "per-layer ratios: producer name or pattern -> ratio")
        scope: Literal["layer", "global"] = opt("layer", "layer: one ratio per group; global: one ranking")
        threshold: float | None = opt(None, "global: remove channels whose normalized score is below this")
        target_flops: float | None = opt(None, "fraction of the model's FLOPs to remove (searches the ratio)")
        target_time: float | None = opt(
            None,
            "fraction of the predicted run time to remove, in place of target-flops: each node's roofline time on "
            "the hardware profile (FLOPs at the peak onnxruntime's convolutions reach with their input count, or "
            "bytes at the memory bandwidth), so channels whose depthwise convolutions and activations cost time "
            "but few FLOPs count for that time",
        )
        hardware: str = opt("", "target-time: hardware profile (built-in name or probe file); default: --hardware")
        round_to: int = opt(16, "round kept channel counts to a multiple of this (ORT CPU kernels; 1: exact ratios)")
        min_channels: int = opt(1, "never keep fewer channels than this in a layer")
        protect: list[str] = opt([], "layers (names or patterns) whose filters are kept")
        normalize: bool = opt(True, "global scope: divide scores by their group's mean before ranking")
        reconstruct: bool = opt(False, "with calibration data: refit consumer layers to the original outputs")
        correction: Literal["lstsq", "bias", "bn"] = opt(
            "lstsq", "refit: least-squares weights+bias, bias shift, or re-estimated BatchNorm statistics"
        )
        samples: int = opt(4096, "refit: sampled positions (patches) per layer")
        max_calib: int = opt(256, "refit: calibration samples used")
        ridge: float = opt(1e-3, "refit: ridge towards the current weights, relative to the data's scale")
        allocation: Literal["sensitivity", "uniform"] = opt(
            "sensitivity",
            "target-flops: channels removed per group from measured sensitivity (with --calib: the model-output "
            "error when only that group is pruned, at each candidate ratio; without: the consumers' weight "
            "energy removed), or one uniform ratio (bisection)",
        )
        candidate_ratios: list[float] = opt(
            [0.125, 0.25, 0.375, 0.5, 0.625, 0.75], "target-flops, allocation=sensitivity: per-group ratios measured"
        )
        sensitivity_samples: int = opt(4, "target-flops with --calib: calibration samples per sensitivity trial")
        mean_replace: bool = opt(
            True,
            "target-flops with --calib and reconstruct: a trial keeps the removed channels' mean contribution in "
            "the bias of a consumer Conv it does not refit as written (correction=bn) instead of dropping it",
        )

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        import numpy as np

        from onnxcomp.graph import label

        from ._apply import apply_removal
        from ._budget import Written
        from ._common import budget_target, check_options, decide, decide_by_sensitivity, prepare, record_error, report
        from ._recon import Refitter
        from ._select import Schedule, scores_for

        o = self.options
        check_options(
            o.ratio,
            o.round_to,
            o.min_channels,
            o.target_flops,
            target_time=o.target_time,
            ratios=dict(o.ratios),
            ridge=o.ridge,
            counts={"sensitivity_samples": o.sensitivity_samples, "samples": o.samples, "max_calib": o.max_calib},
        )
        result = self.new_result()
        target, hardware = budget_target(graph, o.target_flops, o.target_time, o.hardware, ctx)
        prep = prepare(graph, result, list(o.protect), hardware)
        if not prep.groups:
            return result
        scores, fallback = scores_for(prep.plan, prep.groups, o.criterion, ctx.rng(31))
        schedule = Schedule(
            scope=o.scope,
            ratio=o.ratio,
            ratios=dict(o.ratios),
            threshold=o.threshold,
            normalize=o.normalize,
            round_to=o.round_to,
            min_channels=o.min_channels,
        )
        budget_notes = {}
        refitter = None
        if o.reconstruct and ctx.calib is not None:
            refitter = Refitter(
                graph, prep.plan, ctx, samples=o.samples, max_calib=o.max_calib, ridge=o.ridge, seed_salt=32
            )
        if target is not None and o.allocation == "sensitivity" and o.scope == "layer" and o.threshold is None:
            # trials as written where the refit can be simulated in closed form (bn: today's zeroed trial)
            written = Written(refitter, o.correction, lasso=False) if refitter and o.correction != "bn" else None
            removed, budget_notes = decide_by_sensitivity(
                graph,
                ctx,
                prep,
                schedule,
                scores,
                target,
                result,
                list(o.candidate_ratios),
                o.sensitivity_samples,
                o.mean_replace and refitter is not None,  # without a refit nothing keeps the removed means
                written,
            )
        else:
            removed = decide(prep, schedule, scores, target, result)
        if o.reconstruct and ctx.calib is None:
            result.skip("reconstruct", "no calibration data (--calib): consumer layers are not refitted")
        if not removed.any():
            refitter = None
        touched = [g for g in prep.groups if removed[g.offset : g.offset + g.size].any()]
        members = [m for g in touched for m in g.members]
        apply_removal(graph, prep.plan, removed, ctx, self.name)
        notes = {
            name: f"criterion {o.criterion} unavailable (no BatchNormalization): scored by L1"
            for g in prep.groups
            if g.name in fallback
            for name in [label(p.node) for p in g.producers]
        }
        for name, note in budget_notes.items():
            notes[name] = f"{note}; {notes[name]}" if name in notes else note
        report(result, graph, prep, removed, scores, notes)
        if refitter is not None:
            nodes = refitter.consumers(members)
            for node in ctx.track(nodes, "refitting layers", len(nodes)):
                before, after = refitter.refit(node, o.correction, removed)
                record_error(result, label(node), before, after)
                result.count("layers_refitted")
            seen = {id(n) for n in nodes}
            for m in members:
                if m.role == CONSUMER and id(m.node) not in seen:
                    seen.add(id(m.node))
                    result.skip(label(m.node), f"not refitted: {refitter.reason(m.node) or 'grouped input'}")
        del np
        return result
