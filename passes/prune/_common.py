"""Steps the prune passes share: analysis and protection, schedule (ratio or FLOPs target), the report."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from onnxcomp.analysis.channels import CONSUMER
from onnxcomp.errors import UsageError
from onnxcomp.graph import label

from ._select import producer_matches, search_flops

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.analysis.channels import ChannelGroup, ChannelPlan
    from onnxcomp.cost import Hardware
    from onnxcomp.passes_api import PassContext, PassResult

    from ._budget import Written
    from ._cost import CostModel, NodeCost
    from ._select import Schedule

logger = logging.getLogger(__name__)

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclasses.dataclass
class Prepared:
    plan: ChannelPlan
    groups: list[ChannelGroup]  # the prunable ones
    cost: CostModel
    base: dict[int, NodeCost]  # id(node) -> cost before
    base_flops: int
    in_channels: dict[int, tuple[Any, int]]  # id(member) -> (member, positions before)
    base_amount: float = 0.0  # what a target counts (FLOPs, or roofline seconds: by_time) with nothing removed

    @property
    def by_time(self) -> bool:
        """Targets count the roofline time on the cost model's hardware profile (target-time), not FLOPs."""
        return self.cost.hardware is not None

    @property
    def unit(self) -> str:
        return "predicted time" if self.by_time else "FLOPs"

    def amount(self, removed: np.ndarray) -> float:
        """The FLOPs (or roofline seconds) of the graph with ``removed`` channels gone."""
        return self.cost.seconds(removed) if self.by_time else float(self.cost.total(removed)[0])


def check_options(
    ratio: float,
    round_to: int,
    min_channels: int,
    target_flops: float | None,
    *,
    target_time: float | None = None,
    ratios: dict[str, float] | None = None,
    counts: dict[str, int] | None = None,
    ridge: float = 0.0,
) -> None:
    """Option ranges, checked before any work (``counts``: options that must be at least 1)."""
    if not 0.0 <= ratio <= 1.0:
        raise UsageError(f"ratio must be in [0, 1], got {ratio}")
    for pattern, r in (ratios or {}).items():
        if not 0.0 <= r <= 1.0:
            raise UsageError(f"ratios: {pattern}:{r} must be in [0, 1]")
    for key, n in (counts or {}).items():
        if n < 1:
            raise UsageError(f"{key.replace('_', '-')} must be at least 1, got {n}")
    if not ridge >= 0.0:
        raise UsageError(f"ridge must be >= 0, got {ridge}")
    if round_to < 1 or min_channels < 1:
        raise UsageError("round-to and min-channels must be at least 1")
    if target_flops is not None and not 0.0 < target_flops < 1.0:
        raise UsageError(f"target-flops is the fraction of FLOPs to remove, in (0, 1); got {target_flops}")
    if target_time is not None and not 0.0 < target_time < 1.0:
        raise UsageError(f"target-time is the fraction of the predicted time to remove, in (0, 1); got {target_time}")
    if target_flops is not None and target_time is not None:
        raise UsageError("give target-flops or target-time, not both")


def budget_target(
    graph: gs.Graph, target_flops: float | None, target_time: float | None, hardware: str, ctx: PassContext
) -> tuple[float | None, Hardware | None]:
    """What the passes remove: (the fraction, the hardware profile when it is a fraction of the roofline time).

    A FLOPs target can count dynamic dimensions as 1 (a convolution's FLOPs scale with its pixels); the roofline
    time can not (at one pixel the weights' bytes would dominate every layer): target-time needs every input
    dimension but the first (the batch) static."""
    if target_time is None:
        return target_flops, None
    from onnxcomp import hardware as hw_profiles

    for t in graph.inputs:
        dims = list(t.shape or [])
        if any(not isinstance(d, int) or d <= 0 for d in dims[1:]):
            shape = "x".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in dims)
            raise UsageError(
                f"target-time needs the input sizes the model runs at: input {t.name} is {shape}; pass "
                f"--input-shape {t.name}:..."
            )
    return target_time, hw_profiles.resolve(hardware or ctx.hardware)


def prepare(graph: gs.Graph, result: PassResult, protect: list[str], hardware: Hardware | None = None) -> Prepared:
    """Channel groups (protected ones blocked, blocked ones reported as skips) and the cost model (with
    ``hardware``: targets count the roofline time on that profile, not FLOPs)."""
    import numpy as np

    from onnxcomp.analysis.channels import analyze_channels
    from onnxcomp.graph import subgraph_nodes

    from ._cost import CostModel, current_costs

    plan = analyze_channels(graph)
    for g in plan.groups:
        hit = next((pat for pat in protect for p in g.producers if producer_matches(p, pat)), None)
        if hit is not None:
            g.block(f"protected (protect={hit})")
    for g in plan.groups:
        if not g.prunable:
            result.skip(g.name, "; ".join(g.blocked))
            result.count("groups_blocked")
    for node, where in subgraph_nodes(graph, ("Conv", "ConvTranspose", "Gemm", "MatMul")):
        result.skip(node.name, f"inside the {where} subgraph (only main-graph layers are pruned)")
    groups = [g for g in plan.groups if g.prunable]
    base = current_costs(graph)
    ins = {id(m): (m, len(m.elems)) for m in plan.members if m.role == CONSUMER}
    cost = CostModel(graph, plan, hardware)
    prep = Prepared(plan, groups, cost, base, sum(c.flops for c in base.values()), ins)
    if groups:
        prep.base_amount = prep.amount(np.zeros(plan.n_channels, dtype=bool))
    return prep


def decide(
    prep: Prepared, schedule: Schedule, scores: dict[int, np.ndarray], target_flops: float | None, result: PassResult
) -> np.ndarray:
    """The global removal mask: the schedule as given, or searched to remove ``target_flops`` of FLOPs (of the
    predicted time where ``prep`` counts time)."""
    if target_flops is None:
        return schedule.removal(prep.plan, prep.groups, scores)
    _check_amount(prep)
    t, removed, achieved = search_flops(
        prep.amount, schedule, prep.plan, prep.groups, scores, target_flops, prep.base_amount
    )
    result.counters["search_ratio"] = round(t, 4)
    if abs(achieved - target_flops) > 0.02:
        result.skip(
            _target_name(prep),
            f"asked to remove {target_flops:.1%} of {prep.unit}, reached {achieved:.1%} "
            "(blocked groups, min-channels or round-to limit it)",
        )
    return removed


def _target_name(prep: Prepared) -> str:
    return "target-time" if prep.by_time else "target-flops"


def _check_amount(prep: Prepared) -> None:
    if prep.base_flops <= 0 or prep.base_amount <= 0:
        raise UsageError(
            f"{_target_name(prep)} needs the model's {prep.unit}, which need static shapes: pass --input-shape "
            "NAME:1x3x224x224"
        )


def decide_by_sensitivity(
    graph: gs.Graph,
    ctx: PassContext,
    prep: Prepared,
    schedule: Schedule,
    scores: dict[int, np.ndarray],
    target_flops: float,
    result: PassResult,
    ratios: list[float],
    samples: int,
    mean_replace: bool = True,
    written: Written | None = None,
) -> tuple[np.ndarray, dict[str, str]]:
    """The removal mask for ``target_flops`` with per-group counts from measured sensitivity (passes/prune/
    _budget.py; ``written``: trials measured as the pass writes them), and a report note per producer (the
    group's removal and predicted error)."""
    from ._budget import allocate_flops, measure

    _check_amount(prep)
    if not ratios or not all(0.0 < r < 1.0 for r in ratios):
        raise UsageError(f"candidate-ratios must be in (0, 1), got {ratios}")
    fixed = {}
    for g in prep.groups:
        r = schedule.group_ratio(g, -1.0)
        if r >= 0:
            fixed[g.id] = int(schedule.mask(prep.plan, [g], scores, {g.id: round(r * g.size)}).sum())
    curves, how, stats = measure(graph, ctx, prep, schedule, scores, ratios, samples, fixed, mean_replace, written)
    removed, achieved, counts = allocate_flops(prep, schedule, scores, curves, target_flops)
    result.counters["sensitivity_trials"] = sum(1 for c in curves.values() for n in c.counts if n > 0)
    if written is not None and ctx.calib is not None:
        result.counters["sensitivity_trials_refitted"] = stats["written"]
        result.counters["sensitivity_trials_zeroed"] = stats["zeroed"]  # no refittable consumer
    predicted = sum(curves[gid].error_at(n) for gid, n in counts.items())
    result.counters["predicted_error"] = float(f"{predicted:.6g}")
    if abs(achieved - target_flops) > 0.02:
        result.skip(
            _target_name(prep),
            f"asked to remove {target_flops:.1%} of {prep.unit}, reached {achieved:.1%} "
            "(blocked groups, min-channels, round-to or the candidate ratios limit it)",
        )
    notes = {}
    for g in prep.groups:
        n = counts.get(g.id, 0)
        for p in g.producers:
            notes[label(p.node)] = (
                f"budget by {how}: {n}/{g.size} channels removed, predicted error {curves[g.id].error_at(n):.3g}"
            )
    return removed, notes


def report(
    result: PassResult,
    graph: gs.Graph,
    prep: Prepared,
    removed: np.ndarray,
    scores: dict[int, np.ndarray],
    notes: dict[str, str] | None = None,
) -> None:
    """Per-layer records (channels, params, FLOPs before/after, score summary) and model totals, from the
    graph as it is now (call after the removal is applied)."""
    from ._cost import current_costs

    plan = prep.plan
    after = current_costs(graph)
    producer_of = {id(p.node): (p, g) for g in plan.groups for p in g.producers}
    consumer_of: dict[int, list[tuple[Any, int]]] = {}
    for m, before in prep.in_channels.values():
        consumer_of.setdefault(id(m.node), []).append((m, before))
    notes = notes or {}
    for node in graph.nodes:
        if node.op not in LAYER_OPS or id(node) not in prep.base:
            continue
        b, a = prep.base[id(node)], after.get(id(node))
        prod = producer_of.get(id(node))
        cons = consumer_of.get(id(node), [])
        touched = a is None or (b.params, b.flops) != (a.params, a.flops)
        if not touched and (prod is None or not prod[1].prunable):
            continue
        extra: dict[str, Any] = {}
        decision = []
        if prod is not None:
            p, g = prod
            kept = int(plan.keep(p.elems, removed).sum())
            extra["channels"] = [len(p.elems), kept]
            extra["group"] = g.name
            if g.id in scores and g.prunable:
                s = scores[g.id]
                extra.update(score_min=float(s.min()), score_mean=float(s.mean()), score_max=float(s.max()))
                gone = removed[g.offset : g.offset + g.size]
                if gone.any():
                    extra["removed_score_max"] = float(s[gone].max())
            decision.append(f"filters {len(p.elems)}->{kept}" if kept < len(p.elems) else "filters kept")
        if cons:
            before_in = sum(bf for _, bf in cons)
            after_in = sum(len(m.elems) for m, _ in cons)
            extra["in_channels"] = [before_in, after_in]
            if after_in < before_in:
                decision.append(f"inputs {before_in}->{after_in}")
        if label(node) in notes:
            extra["note"] = notes[label(node)]
        result.layer(
            label(node),
            op=node.op,
            decision=", ".join(decision),
            params_before=b.params,
            params_after=a.params if a else None,
            flops_before=b.flops,
            flops_after=a.flops if a else None,
            extra=extra,
        )
    flops_after = sum(c.flops for c in after.values())
    params_before = sum(c.params for c in prep.base.values())
    params_after = sum(c.params for c in after.values())
    result.count("channels_removed", int(removed.sum()))
    result.count("groups_pruned", sum(1 for g in prep.groups if removed[g.offset : g.offset + g.size].any()))
    result.counters.update(
        flops_before=prep.base_flops, flops_after=flops_after, params_before=params_before, params_after=params_after
    )
    if prep.base_flops:
        result.counters["flops_removed"] = round(1.0 - flops_after / prep.base_flops, 4)
    if prep.by_time and prep.base_amount > 0:
        result.counters["time_removed_predicted"] = round(1.0 - prep.amount(removed) / prep.base_amount, 4)


def record_error(result: PassResult, name: str, before: float, after: float) -> None:
    """Attach a refit's relative output error to the layer's record."""
    for rec in result.layers:
        if rec.name == name:
            rec.error = after
            rec.extra["error_before_refit"] = before
            return
