"""prune-channels: data-driven channel pruning (He et al. 2017), post-training, on calibration data."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Literal

from onnxcomp.passes_api import Pass, PassResult, opt, register_pass

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

    from onnxcomp.passes_api import PassContext

logger = logging.getLogger(__name__)


@register_pass
class PruneChannels(Pass):
    """Conv/Gemm/MatMul input channels  =>  those a LASSO on calibration data keeps, weights refitted (lossy).

    He et al. 2017, "Channel Pruning for Accelerating Very Deep Neural Networks", post-training.

    Group by group (onnxcomp.analysis.channels), front to back: capture the inputs of the group's consumer layers in
    the network pruned so far and the outputs of the same layers in the original network, sample patches, and rank
    the group's channels by the LASSO path of ``min ||Y - sum_j beta_j Z_j||^2 + alpha |beta|_1`` (``Z_j``: channel
    j's contribution to the consumers' outputs). The lowest-ranked channels are removed everywhere the group reaches
    (filters, BatchNormalization, Concat/Split/Reshape, consumers), then every consumer is refitted by
    ridge-regularized least squares so that its outputs match the original network's. How many channels each group
    loses: ``ratio`` / ``ratios``, or ``target_flops`` (a fraction of the model's FLOPs; ``target_time``: of its
    roofline time on the hardware profile): by default split over the groups by measured sensitivity (the
    model-output error when only that group loses channels, at each candidate ratio, measured as written: the
    channels the LASSO keeps at that count, the consumers refitted by the same least squares; a knapsack picks the
    counts with the least summed error, passes/prune/_budget.py), with ``allocation=uniform`` one ratio found by
    bisection.
    """

    name = "prune-channels"
    lossless = False
    needs_calib = True

    @dataclasses.dataclass
    class Options:
        ratio: float = opt(0.3, "fraction of every group's channels to remove")
        ratios: dict[str, float] = opt({}, "per-layer ratios: producer name or pattern -> ratio")
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
        reconstruct: bool = opt(True, "refit the consumer layers by least squares after each removal")
        samples: int = opt(2048, "sampled positions (patches) per layer")
        max_calib: int = opt(256, "calibration samples used")
        max_outputs: int = opt(128, "LASSO: output channels sampled per consumer layer")
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
            "target-flops with --calib: a trial keeps the removed channels' mean contribution in the bias of a "
            "consumer Conv it can not refit (the refittable ones are refitted as the pass writes them) instead of "
            "dropping it",
        )

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        import numpy as np

        from onnxcomp.graph import label

        from ._apply import apply_removal
        from ._budget import Written
        from ._common import budget_target, check_options, decide, decide_by_sensitivity, prepare, record_error, report
        from ._recon import Refitter
        from ._select import Schedule, choose, scores_for

        o = self.options
        check_options(
            o.ratio,
            o.round_to,
            o.min_channels,
            o.target_flops,
            target_time=o.target_time,
            ratios=dict(o.ratios),
            ridge=o.ridge,
            counts={
                "sensitivity_samples": o.sensitivity_samples,
                "samples": o.samples,
                "max_calib": o.max_calib,
                "max_outputs": o.max_outputs,
            },
        )
        result = self.new_result()
        target, hardware = budget_target(graph, o.target_flops, o.target_time, o.hardware, ctx)
        prep = prepare(graph, result, list(o.protect), hardware)
        if not prep.groups:
            return result
        plan = prep.plan
        # how many channels per group: the schedule on L1 scores (which ones: the LASSO, below)
        l1, _ = scores_for(plan, prep.groups, "l1", ctx.rng(41))
        schedule = Schedule(
            scope="layer", ratio=o.ratio, ratios=dict(o.ratios), round_to=o.round_to, min_channels=o.min_channels
        )
        refitter = Refitter(graph, plan, ctx, samples=o.samples, max_calib=o.max_calib, ridge=o.ridge, seed_salt=42)
        notes = {}
        if target is not None and o.allocation == "sensitivity":
            planned, notes = decide_by_sensitivity(
                graph,
                ctx,
                prep,
                schedule,
                l1,
                target,
                result,
                list(o.candidate_ratios),
                o.sensitivity_samples,
                o.mean_replace,
                # each trial as written: the LASSO's channels for its count, the consumers refitted
                Written(refitter, "lstsq" if o.reconstruct else "none", lasso=True, max_outputs=o.max_outputs),
            )
        else:
            planned = decide(prep, schedule, l1, target, result)
        counts = {g.id: int(planned[g.offset : g.offset + g.size].sum()) for g in prep.groups}
        order = {id(n): i for i, n in enumerate(graph.nodes)}

        def position(g):  # groups in the order of their first consumer (front to back)
            nodes = [m.node for m in g.consumers()] or [p.node for p in g.producers]
            return min(order.get(id(n), 0) for n in nodes)

        removed = np.zeros(plan.n_channels, dtype=bool)
        used, errors = {}, {}
        todo = sorted((g for g in prep.groups if counts[g.id]), key=position)
        for g in ctx.track(todo, "pruning channels", len(todo)):
            n_remove = counts[g.id]
            refitter.forget()
            scores = refitter.lasso_scores(g, g.members, removed, g.size - n_remove, o.max_outputs)
            if scores is None:
                scores = l1[g.id]
                for p in g.producers:
                    notes[label(p.node)] = "; ".join(
                        filter(None, [notes.get(label(p.node)), "no refittable consumer: channels chosen by L1"])
                    )
            used[g.id] = scores
            local = choose(g, scores, n_remove, 1, o.min_channels)
            step = np.zeros(plan.n_channels, dtype=bool)
            step[g.offset : g.offset + g.size] = local
            consumers = refitter.consumers(g.members)
            apply_removal(graph, plan, step, ctx, self.name)
            removed |= step
            if o.reconstruct:
                for node in consumers:
                    before, after = refitter.refit(node, "lstsq", removed)
                    first = errors.get(label(node), (before, after))[0]
                    errors[label(node)] = (first, after)
        for g in prep.groups:
            used.setdefault(g.id, l1[g.id])
        report(result, graph, prep, removed, used, notes)
        for name, (before, after) in errors.items():
            record_error(result, name, before, after)
        result.count("layers_refitted", len(errors))
        return result
