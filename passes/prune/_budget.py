"""Per-group removal counts for a FLOPs target from measured sensitivity (the AMC / HAWQ idea).

Every prunable group gets an error curve over candidate removal counts, each count's channels chosen by the
pass's own scores:

- with calibration data, the model-output error when only that group loses those channels,
  sum ||y - y_ref||^2 / sum ||y_ref||^2 on a few samples (onnxcomp.analysis.sensitivity), measured as the pass
  writes the removal (``Written``, passes/prune/_recon.GroupTrial): the channels are those the pass would
  pick for that count (prune-channels: the LASSO path on the original network's data, its active set at that
  count), and every refittable consumer (Conv with group 1, Gemm, MatMul) gets the weights and bias the
  pass's refit would write (``lstsq``: ridge least squares on the original network's input without the removed
  channels, towards the original output; prune-filters ``correction=bias``: the mean output shift), solved
  in closed form from the consumer's normal equations, captured once per group on the same sampled patches
  as the refit. The trial runs in one onnxruntime session by feeding weights: the refitted consumers, the
  other consumers' input channels and the producers' filters (and biases) of the removed channels set to 0.
  A consumer the refit can not handle (a grouped or 3-D convolution, a Gemm with a full C matrix, a bias
  computed at run time), a group with no refittable consumer, and prune-filters with ``correction=bn`` or
  without ``reconstruct`` keep the zeroed trial (counted in the report as ``sensitivity_trials_zeroed``); there
  a consumer Conv's bias can keep the removed channels' mean contribution (``mean_replace``, b' = b +
  sum W mean, the refit's first-order effect; off where nothing refits). With only one group pruned the
  predicted error is then the written model's error on those samples (tests/passes/prune/test_budget.py);
  the pass itself prunes the groups one after the other, each refitted on the network pruned so far, so the
  summed prediction is a first-order estimate;
- without data, a weight-space proxy: the share of the consumers' weight energy on the removed input
  channels, ||W[:, removed]||^2 / ||W||^2, averaged over the group's consumers (its producers' filters where
  it has none).

The FLOPs a group saves alone at each count come from the cost model. Savings of groups that meet in one
layer (its input and its output channels) do not add up exactly, (1 - a)(1 - b) != 1 - a - b, so the
multiple-choice knapsack (onnxcomp.analysis.budget.allocate: least summed error with the summed savings
reaching a level) is solved for the level found by bisection on the real FLOPs of the resulting removal, and
single groups are then moved one achievable count at a time, least error per FLOP first, towards the target.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from onnxcomp.analysis.channels import CONSUMER, GROUPED_IN, PARAM, PRODUCER
from onnxcomp.graph import const_value

from ._select import round_keep

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.analysis.channels import ChannelGroup, ChannelPlan
    from onnxcomp.passes_api import PassContext

    from ._common import Prepared
    from ._recon import Refitter
    from ._select import Schedule

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Curve:
    """One group's measured points: removal counts, FLOPs saved when only it is pruned, predicted error."""

    counts: list[int]
    saved: list[float]
    errors: list[float]

    def error_at(self, n: int) -> float:
        import numpy as np

        return float(np.interp(n, self.counts, self.errors))


def achievable(size: int, schedule: Schedule) -> list[int]:
    """Removal counts ``choose`` can produce for a group of ``size`` (kept counts rounded, at least min)."""
    return sorted({size - round_keep(size - r, size, schedule.round_to, schedule.min_channels) for r in range(size)})


def candidate_counts(size: int, schedule: Schedule, ratios: list[float]) -> list[int]:
    """The achievable count nearest to every candidate ratio (0 always included)."""
    levels = achievable(size, schedule)
    out = {0}
    for r in ratios:
        want = r * size
        out.add(min(levels, key=lambda n: (abs(n - want), n)))
    return sorted(out)


def _zeroed(
    plan: ChannelPlan,
    group: ChannelGroup,
    removed: np.ndarray,
    values: dict[str, np.ndarray],
    means: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Weights with the removed channels' consumer inputs and producer filters set to 0, by initializer name.

    ``means`` (channel means of the consumers' inputs, by tensor name): a Conv consumer with a constant bias
    keeps the removed channels' mean contribution in its bias, b' = b + sum_{c removed, k} W[:, c, k] mean_c
    (what the refit after the removal does to first order)."""
    import numpy as np

    for m in group.members:
        if means is None or m.kind != PARAM or m.role != CONSUMER or m.node.op != "Conv" or len(m.node.inputs) < 3:
            continue
        mu = means.get(m.node.inputs[0].name)
        b = const_value(m.node.inputs[2])
        w = const_value(m.node.inputs[1])
        keep = plan.keep(m.elems, removed)
        if mu is None or b is None or w is None or keep.all() or len(mu) != w.shape[1]:
            continue
        name = m.node.inputs[2].name
        base = values.get(name, np.array(b, dtype=np.float32))
        gone = ~keep
        # b' = b + sum_{c removed, k} W[:, c, k] * mean_c
        base = base + (w[:, gone].reshape(w.shape[0], int(gone.sum()), -1).sum(-1) @ mu[gone]).astype(np.float32)
        values[name] = base
    for m in group.members:
        if m.kind not in (PARAM, GROUPED_IN) or m.role not in (CONSUMER, PRODUCER):
            continue
        tensor = m.node.inputs[m.input]
        base = values.get(tensor.name)
        if base is None:
            base = const_value(tensor)
            if base is None:
                continue
            base = np.array(base, dtype=np.float32)
        keep = plan.keep(m.elems, removed)
        if keep.all():
            continue
        if m.kind == GROUPED_IN:
            groups = int(m.info["groups"])
            mask = keep.reshape(groups, -1)
            rows = base.shape[0] // groups
            for q in range(groups):
                block = base[q * rows : (q + 1) * rows]
                block[:, ~mask[q]] = 0
        else:
            index = [slice(None)] * base.ndim
            index[m.axis] = ~keep
            base[tuple(index)] = 0
        values[tensor.name] = base
    return values


def _proxy(plan: ChannelPlan, group: ChannelGroup, removed: np.ndarray) -> float:
    """Mean share of the consumers' (else the producers') weight energy on the removed channels."""
    import numpy as np

    def share(role: str) -> list[float]:
        out = []
        for m in group.members:
            if m.role != role or m.kind not in (PARAM, GROUPED_IN) or m.input != 1:
                continue
            w = const_value(m.node.inputs[m.input])
            if w is None:
                continue
            keep = plan.keep(m.elems, removed)
            w = np.asarray(w, np.float64)
            if m.kind == GROUPED_IN:
                groups = int(m.info["groups"])
                mask = keep.reshape(groups, -1)
                rows = w.shape[0] // groups
                gone = sum(float(np.square(w[q * rows : (q + 1) * rows][:, ~mask[q]]).sum()) for q in range(groups))
            else:
                gone = float(np.square(np.compress(~keep, w, axis=m.axis)).sum())
            total = float(np.square(w).sum())
            out.append(gone / total if total > 0 else 0.0)
        return out

    shares = share(CONSUMER) or share(PRODUCER)
    return float(np.mean(shares)) if shares else 0.0


def _channel_means(graph: gs.Graph, ctx: PassContext, nodes: list[gs.Node], samples: int) -> dict[str, np.ndarray]:
    """Per-channel (axis 1) means of the nodes' first inputs on the first calibration samples, a few tensors
    per onnxruntime run."""
    import numpy as np

    names = sorted({n.inputs[0].name for n in nodes})
    out = {}
    for i in range(0, len(names), 8):
        acts = ctx.capture(graph, names[i : i + 8], max_samples=samples)
        for k, v in acts.items():
            v = np.asarray(v, np.float64)
            if v.ndim >= 2:
                out[k] = v.mean(axis=tuple(a for a in range(v.ndim) if a != 1))
    return out


@dataclasses.dataclass
class Written:
    """How the pass writes a removal, for sensitivity trials measured as written (_recon.GroupTrial)."""

    refitter: Refitter
    mode: str  # the consumers' refit: "lstsq" or "bias"
    lasso: bool  # channels chosen by the LASSO (prune-channels), else by the pass's scores
    max_outputs: int = 128


def _probe_graph(graph: gs.Graph, nodes: dict[int, gs.Node]) -> tuple[gs.Graph, dict[int, gs.Node], set[int]]:
    """The graph the trials run: ``graph``, or a copy of it where a refitted consumer that can take a bias
    has none (or a broadcast one) gets a full bias initializer of the same effect (zeros, or the broadcast
    values), so that a trial can feed the refitted bias. Returns (graph, the consumers in it by id of the
    original node, ids of consumers a trial can not feed: a bias that is not an initializer)."""
    import numpy as np

    from onnxcomp.graph import is_const, is_empty

    from ._adapters import ADAPTERS

    def has_full_bias(n: gs.Node) -> bool:
        b = ADAPTERS[n.op].bias(n)
        return b is not None and const_value(n.inputs[2]).size == len(b)

    bad = {k for k, n in nodes.items() if len(n.inputs) > 2 and not is_empty(n.inputs[2]) and not is_const(n.inputs[2])}
    slots = [k for k, n in nodes.items() if k not in bad and ADAPTERS[n.op].can_bias(n) and not has_full_bias(n)]
    if not slots:
        return graph, dict(nodes), bad
    copy = graph.copy()
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    mapped = {k: copy.nodes[index[k]] for k in nodes}
    for k in slots:
        n, c = nodes[k], mapped[k]
        ad = ADAPTERS[n.op]
        b = ad.bias(n)
        rows = len(ad.weights(n))
        ad.set_bias(copy, c, (b if b is not None else np.zeros(rows)).astype(np.float32))
    return copy, mapped, bad


def measure(
    graph: gs.Graph,
    ctx: PassContext,
    prep: Prepared,
    schedule: Schedule,
    scores: dict[int, np.ndarray],
    ratios: list[float],
    samples: int,
    fixed: dict[int, int],
    mean_replace: bool = True,
    written: Written | None = None,
) -> tuple[dict[int, Curve], str, dict[str, int]]:
    """Every prunable group's curve (one point for the groups in ``fixed``: a set count), how its errors
    were measured, and counts of the trials (measured as written, zeroed)."""
    import numpy as np

    from onnxcomp.analysis.sensitivity import OutputErrors
    from onnxcomp.graph import is_const

    from ._adapters import ADAPTERS
    from ._recon import GroupTrial

    plan = prep.plan
    probe, means = None, None
    refit_nodes: dict[int, gs.Node] = {}
    probe_nodes: dict[int, gs.Node] = {}
    if ctx.calib is not None:
        if written is not None:
            refit_nodes = {id(n): n for g in prep.groups for n in written.refitter.consumers(g.members)}
        probe_graph, probe_nodes, bad = _probe_graph(graph, refit_nodes)
        for k in bad:
            del refit_nodes[k]
        names = sorted(
            {
                m.node.inputs[m.input].name
                for g in prep.groups
                for m in g.members
                if m.kind in (PARAM, GROUPED_IN) and m.role in (CONSUMER, PRODUCER) and is_const(m.node.inputs[m.input])
            }
        )
        consumers_bias = [
            m.node
            for g in prep.groups
            for m in g.members
            if m.kind == PARAM and m.role == CONSUMER and m.node.op == "Conv" and len(m.node.inputs) > 2
        ]
        names += sorted({n.inputs[2].name for n in consumers_bias if is_const(n.inputs[2])} - set(names))
        names += sorted(
            {probe_nodes[k].inputs[2].name for k in refit_nodes if len(probe_nodes[k].inputs) > 2} - set(names)
        )
        probe = OutputErrors(probe_graph, ctx, names, samples)
        zeroed_means = [n for n in consumers_bias if id(n) not in refit_nodes]  # the others are refitted
        means = _channel_means(graph, ctx, zeroed_means, samples) if mean_replace and zeroed_means else None
    base = prep.base_amount
    curves = {}
    stats = {"written": 0, "zeroed": 0}
    for g in ctx.track(prep.groups, "pruning sensitivity", len(prep.groups)):
        trial = None
        if probe is not None and written is not None:
            trial = GroupTrial(written.refitter, g, written.mode, written.lasso, written.max_outputs, set(refit_nodes))
            if not trial.nodes and trial.coefs is None:
                trial = None
        counts, saved, errors = [], [], []
        for n in [fixed[g.id]] if g.id in fixed else candidate_counts(g.size, schedule, ratios):
            counts.append(n)
            if n == 0:
                saved.append(0.0)
                errors.append(0.0)
                continue
            mine = {**scores, g.id: trial.scores(n, scores[g.id])} if trial is not None else scores
            removed = schedule.mask(plan, [g], mine, {g.id: n})
            saved.append(base - prep.amount(removed))
            if probe is None:
                errors.append(_proxy(plan, g, removed))
                continue
            values = _zeroed(plan, g, removed, {}, means)
            if trial is not None:
                for k, (w, b) in trial.refitted(removed).items():
                    node, ad = refit_nodes[k], ADAPTERS[refit_nodes[k].op]
                    values[node.inputs[1].name] = ad.raw_weights(node, w).astype(np.float32)
                    if b is not None and len(probe_nodes[k].inputs) > 2:
                        values[probe_nodes[k].inputs[2].name] = ad.raw_bias(probe_nodes[k], b).astype(np.float32)
            stats["written" if trial is not None and trial.nodes else "zeroed"] += 1
            errors.append(probe.error_of(values))
        # an error curve that falls with more removal is noise: keep it non-decreasing
        errors = list(np.maximum.accumulate(np.asarray(errors, np.float64)))
        curves[g.id] = Curve(counts, saved, errors)
    how = "weight error proxy" if probe is None else "output error" + (" as written" if written else "")
    return curves, how, stats


def allocate_flops(
    prep: Prepared,
    schedule: Schedule,
    scores: dict[int, np.ndarray],
    curves: dict[int, Curve],
    target: float,
    tol: float = 0.002,
) -> tuple[np.ndarray, float, dict[int, int]]:
    """Removal mask removing ``target`` of the FLOPs (of the predicted time where ``prep`` counts time) with the
    least summed predicted error.

    Returns (mask, achieved fraction, removal count per group id)."""
    from onnxcomp.analysis.budget import Option, allocate

    groups = [g for g in prep.groups if g.id in curves]
    base = prep.base_amount
    top = {g.id: max(curves[g.id].saved) for g in groups}
    layers = [
        [Option(top[g.id] - s, e) for s, e in zip(curves[g.id].saved, curves[g.id].errors, strict=True)] for g in groups
    ]
    full = sum(top.values())

    def fraction(counts: dict[int, int]) -> tuple[float, np.ndarray]:
        rem = schedule.mask(prep.plan, groups, scores, counts)
        return 1.0 - prep.amount(rem) / base, rem

    def counts_for(level: float) -> dict[int, int]:
        choice = allocate(layers, max(full - level, 0.0))
        return {g.id: curves[g.id].counts[c] for g, c in zip(groups, choice, strict=True)}

    lo, hi = 0.0, full
    best = ({g.id: 0 for g in groups}, 0.0)
    for _ in range(30):
        mid = (lo + hi) / 2
        counts = counts_for(mid)
        f, _ = fraction(counts)
        if abs(f - target) < abs(best[1] - target):
            best = (counts, f)
        if abs(f - target) < tol:
            break
        if f < target:
            lo = mid
        else:
            hi = mid
    counts, f = best
    # single groups to their next achievable count, the least predicted error per FLOP of progress first
    levels = {  # never beyond the measured range (a group with a fixed ratio has one point)
        g.id: [n for n in achievable(g.size, schedule) if curves[g.id].counts[0] <= n <= curves[g.id].counts[-1]]
        for g in groups
    }
    for _ in range(4 * len(groups) + 8):
        if abs(f - target) < tol:
            break
        step = 1 if f < target else -1
        move = None
        for g in groups:
            lv = levels[g.id]
            i = lv.index(counts[g.id]) if counts[g.id] in lv else 0
            j = i + step
            if not 0 <= j < len(lv):
                continue
            trial = dict(counts)
            trial[g.id] = lv[j]
            ft, _ = fraction(trial)
            progress = (ft - f) * step
            if progress <= 0 or abs(ft - target) >= abs(f - target):
                continue
            cost = (curves[g.id].error_at(lv[j]) - curves[g.id].error_at(counts[g.id])) * step / progress
            if move is None or cost < move[0]:
                move = (cost, trial, ft)
        if move is None:
            break
        _, counts, f = move
    if abs(f - target) > 0.02:  # stuck far off (coarse levels): one group past the target, others back
        counts, f = _overshoot(groups, levels, counts, f, target, fraction)
    f, rem = fraction(counts)
    return rem, f, counts


def _overshoot(
    groups: list[ChannelGroup],
    levels: dict[int, list[int]],
    counts: dict[int, int],
    f: float,
    target: float,
    fraction: Callable[[dict[int, int]], tuple[float, np.ndarray]],
) -> tuple[dict[int, int], float]:
    """Where no single step gets closer to the target (a group's next level jumps past it), each group in
    turn steps past it and the others then step back one level at a time while that gets closer; the
    closest result wins (e.g. 18% and 48% reachable alone, 38% only with one group up and two down)."""
    step = 1 if f < target else -1
    best = (abs(f - target), counts, f)
    for g in groups:
        lv = levels[g.id]
        i = lv.index(counts[g.id]) if counts[g.id] in lv else 0
        if not 0 <= i + step < len(lv):
            continue
        trial = dict(counts)
        trial[g.id] = lv[i + step]
        ft, _ = fraction(trial)
        while True:
            back = None
            for h in groups:
                lh = levels[h.id]
                k = lh.index(trial[h.id]) if trial[h.id] in lh else 0
                if h.id == g.id or not 0 <= k - step < len(lh):
                    continue
                t2 = dict(trial)
                t2[h.id] = lh[k - step]
                f2, _ = fraction(t2)
                if abs(f2 - target) < abs(ft - target) and (back is None or abs(f2 - target) < back[0]):
                    back = (abs(f2 - target), t2, f2)
            if back is None:
                break
            _, trial, ft = back
        if abs(ft - target) < best[0] - 1e-9:
            best = (abs(ft - target), trial, ft)
    return best[1], best[2]
