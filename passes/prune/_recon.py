"""Data-driven parts of pruning: activation capture, patch sampling, LASSO channel ranking (He et al. 2017)
and the least-squares refit of consumer layers.

A consumer layer (Conv with group 1, Gemm, MatMul) is seen as ``Y[s, o] = sum_{c,k} P[s, c, k] W[o, c, k]
+ b[o]``: ``P`` holds sampled input patches (``k`` runs over the kernel taps; one tap for Gemm/MatMul),
``W`` the weights. Adapters (``_adapters.ADAPTERS``, keyed by op type) read and write ``W``/``b`` in that form.

- Refit: with ``X'`` the pruned network's input and ``Y`` the original network's output of the layer,
  ``min ||P' W'^T + b' - Y||^2 + lam ||W' - W0||^2`` (ridge towards the current weights, closed form).
- Bias correction: ``b' = b + mean(Y - Y')`` per output channel.
- LASSO ranking: the contribution of channel ``j`` is ``Z_j[s, o] = sum_{c in j, k} P W``; the LASSO path of
  ``min ||T - sum_j beta_j Z_j||^2 + alpha |beta|_1`` (computed from the Gram matrix, LARS) ranks channels by
  the order in which they enter.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from onnxcomp.analysis.channels import CONSUMER, PARAM, PRODUCER
from onnxcomp.graph import const_value

from ._adapters import ADAPTERS

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.passes_api import PassContext

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- solvers
def ridge_refit(
    p: np.ndarray, t: np.ndarray, w0: np.ndarray, b0: np.ndarray | None, fit_bias: bool, ridge: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """``min ||p w^T + b - t||^2 + lam ||w - w0||^2`` with ``lam = ridge * mean(diag(p^T p))``.

    p [S, F], t [S, O], w0 [O, F]; returns (w [O, F], b [O] or None). Normal equations in float64.
    """
    gram, pt = normal_equations(p, t, fit_bias)
    return ridge_solve(gram, pt, w0, b0, fit_bias, ridge)


def normal_equations(p: np.ndarray, t: np.ndarray, fit_bias: bool) -> tuple[np.ndarray, np.ndarray]:
    """(p^T p, p^T t) in float64 from float32 products, ``p`` with a column of ones appended when ``fit_bias``."""
    import numpy as np

    p = p.astype(np.float32)
    t = t.astype(np.float32)
    if fit_bias:
        p = np.concatenate([p, np.ones((p.shape[0], 1), dtype=np.float32)], axis=1)
    return (p.T @ p).astype(np.float64), (p.T @ t).astype(np.float64)  # products in float32 (fast)


def ridge_solve(
    gram: np.ndarray, pt: np.ndarray, w0: np.ndarray, b0: np.ndarray | None, fit_bias: bool, ridge: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`ridge_refit` from its normal equations (:func:`normal_equations`; the bias column last)."""
    import numpy as np

    f = gram.shape[0] - (1 if fit_bias else 0)
    if fit_bias:
        w0 = np.concatenate([w0, (b0 if b0 is not None else np.zeros(len(w0)))[:, None]], axis=1)
    lam = ridge * max(float(np.mean(np.diag(gram)[:f])), 1e-12)
    reg = np.full(gram.shape[0], lam)
    if fit_bias:
        reg[-1] = 0.0
    rhs = pt + reg[:, None] * w0.T.astype(np.float64)
    try:
        sol = np.linalg.solve(gram + np.diag(reg), rhs)
    except np.linalg.LinAlgError:
        sol = np.linalg.lstsq(gram + np.diag(reg), rhs, rcond=None)[0]
    w = sol[:f].T
    return w, (sol[f] if fit_bias else None)


def lasso_ranking(gram: np.ndarray, xy: np.ndarray, n_rows: int, n_keep: int) -> np.ndarray:
    """Channel scores from the LASSO path (higher = more important): channels active where the path first
    holds ``n_keep`` channels rank first (by |beta|), then the others by the step they enter."""
    return path_scores(lasso_path(gram, xy, n_rows), n_keep)


def lasso_path(gram: np.ndarray, xy: np.ndarray, n_rows: int) -> np.ndarray:
    """The LASSO path's coefficients [channels, steps] (LARS from the Gram matrix)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import lars_path_gram

    n = len(xy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        _, _, coefs = lars_path_gram(Xy=xy, Gram=gram, n_samples=max(n_rows, 1), method="lasso", max_iter=4 * n + 10)
    return coefs


def path_scores(coefs: np.ndarray, n_keep: int) -> np.ndarray:
    """:func:`lasso_ranking`'s scores for ``n_keep`` kept channels from the path (:func:`lasso_path`)."""
    import numpy as np

    nz = coefs != 0
    entered = np.where(nz.any(axis=1), nz.argmax(axis=1), coefs.shape[1] + 1).astype(np.float64)
    score = -entered
    counts = nz.sum(axis=0)
    fits = np.nonzero(counts <= n_keep)[0]
    if fits.size:
        col = fits[-1]
        active = nz[:, col]
        score[active] = 1e9 + np.abs(coefs[active, col])
    return score


# ---------------------------------------------------------------------------------------------- driver
class Refitter:
    """Compares consumer layers of the graph being pruned with the same layers of the original model on
    calibration data, and refits them (least squares or bias correction) or ranks channels (LASSO)."""

    def __init__(
        self,
        graph: gs.Graph,
        plan: Any,
        ctx: PassContext,
        *,
        samples: int,
        max_calib: int,
        ridge: float,
        seed_salt: int,
    ) -> None:
        self.graph = graph
        self.plan = plan
        self.ctx = ctx
        self.samples = samples
        self.ridge = ridge
        self.rng = ctx.rng(seed_salt)
        from onnxcomp.calib import Capture, first_samples
        from onnxcomp.graph import export_model

        model = export_model(graph, ctx)
        self.max_calib = max_calib
        self.feeds = first_samples(ctx.calib or {}, model, max_calib)
        wanted = [m.node.outputs[0].name for m in plan.members if m.role == CONSUMER]
        made = {t.name for n in graph.nodes for t in n.outputs}
        # the inputs of the prunable groups' consumers, for the sensitivity trials (GroupTrial)
        wanted += [
            m.node.inputs[0].name
            for g in plan.groups
            if g.prunable
            for m in g.members
            if m.role == CONSUMER and m.node.inputs[0].name in made
        ]
        self.original = Capture(model, wanted)  # one session for every reference
        self._reference: dict[str, np.ndarray] = {}
        self.producer_of = {id(p.node): p for g in plan.groups for p in g.producers}
        self.order = {id(n): i for i, n in enumerate(graph.nodes)}

    # -- what can be refitted -------------------------------------------------------------------
    def reason(self, node: gs.Node) -> str | None:
        ad = ADAPTERS.get(node.op)
        if ad is None:
            return f"{node.op} layers are not refitted"
        return ad.unsupported(node)

    def consumers(self, members: list[Any]) -> list[gs.Node]:
        """Distinct refittable consumer nodes of ``members`` in topological order."""
        nodes = {id(m.node): m.node for m in members if m.role == CONSUMER and m.kind == PARAM}
        ok = [n for n in nodes.values() if self.reason(n) is None]
        return sorted(ok, key=lambda n: self.order.get(id(n), 0))

    # -- activations ----------------------------------------------------------------------------
    def forget(self) -> None:
        """Drop cached reference outputs (they are kept while one group is processed)."""
        self._reference.clear()

    def current(self, names: list[str]) -> dict[str, np.ndarray]:
        return self.ctx.capture(self.graph, names, max_samples=self.max_calib)

    def reference(self, nodes: list[gs.Node], removed: np.ndarray) -> dict[str, np.ndarray]:
        """Original outputs of ``nodes``, restricted to the filters they still have."""
        import numpy as np

        missing = [n.outputs[0].name for n in nodes if n.outputs[0].name not in self._reference]
        if missing:
            self._reference.update(self.original.run(self.feeds, missing))
        out = {}
        for n in nodes:
            y = self._reference[n.outputs[0].name]
            p = self.producer_of.get(id(n))
            if p is not None:
                keep = self.plan.keep(p.elems, removed)
                y = np.compress(keep, y, axis=ADAPTERS[n.op].out_axis(y))
            out[n.name] = y
        return out

    # -- refit ----------------------------------------------------------------------------------
    def refit(self, node: gs.Node, mode: str, removed: np.ndarray) -> tuple[float, float]:
        """Refit one consumer; returns its relative output error (before, after) on the sampled data."""
        import numpy as np

        ad = ADAPTERS[node.op]
        y = self.reference([node], removed)[node.name]
        if mode == "bn":
            bn = self._following_bn(node)
            if bn is not None:
                return self._restat(node, bn, y)
            mode = "bias"
        if mode == "bias":
            y_new = self.current([node.outputs[0].name])[node.outputs[0].name]
            axes = ad.mean_axes(y)
            shift = (y - y_new).astype(np.float64).mean(axis=axes)
            b0 = ad.bias(node)
            before = _rel(y_new, y)
            if not ad.can_bias(node):
                return before, before
            self.set_bias(node, (b0 if b0 is not None else 0.0) + shift)
            shape = [1] * y.ndim
            shape[ad.out_axis(y)] = -1
            return before, _rel(y_new + shift.reshape(shape), y)
        x = self.current([node.inputs[0].name])[node.inputs[0].name]
        idx = ad.sample(x, y, self.samples, self.rng)
        p = ad.patches(node, x, idx)
        p = p.reshape(p.shape[0], -1)
        t = ad.targets(y, idx)
        w0 = ad.weights(node)
        b0 = ad.bias(node)
        fit_bias = ad.can_bias(node)
        before = _rel(p @ w0.reshape(len(w0), -1).T + (b0 if b0 is not None else 0.0), t)
        w, b = ridge_refit(p, t, w0.reshape(len(w0), -1), b0, fit_bias, self.ridge)
        after = _rel(p @ w.T + (b if b is not None else 0.0), t)
        if after >= before:
            return before, before  # nothing to gain (already exact, or too few samples)
        ad.set_weights(self.graph, node, w.reshape(w0.shape))
        if fit_bias and b is not None:
            self.set_bias(node, b)
        return before, after

    def _following_bn(self, node: gs.Node) -> gs.Node | None:
        from onnxcomp.graph import single_consumer

        nxt = single_consumer(node.outputs[0], self.graph)
        if nxt is None or nxt.op != "BatchNormalization" or len(nxt.inputs) < 5:
            return None
        if any(const_value(nxt.inputs[i]) is None for i in (1, 2, 3, 4)) or node.op != "Conv":
            return None
        return nxt

    def _restat(self, node: gs.Node, bn: gs.Node, y: np.ndarray) -> tuple[float, float]:
        """BatchNormalization statistics re-estimated on the pruned network's activations:
        mean' = E[y'], var' = Var[y'] per channel, so the normalized output keeps its trained distribution."""
        import numpy as np

        y_new = self.current([node.outputs[0].name])[node.outputs[0].name].astype(np.float64)
        gamma, beta, mean, var = (const_value(bn.inputs[i]).astype(np.float64) for i in (1, 2, 3, 4))
        eps = float(bn.attrs.get("epsilon", 1e-5))
        shape = [1, -1] + [1] * (y.ndim - 2)

        def norm(v: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
            return (v - m.reshape(shape)) / np.sqrt(s.reshape(shape) + eps) * gamma.reshape(shape) + beta.reshape(shape)

        axes = (0, *range(2, y.ndim))
        new_mean, new_var = y_new.mean(axis=axes), y_new.var(axis=axes)
        target = norm(y.astype(np.float64), mean, var)
        before = _rel(norm(y_new, mean, var), target)
        after = _rel(norm(y_new, new_mean, new_var), target)
        if after >= before:
            return before, before
        dtype = const_value(bn.inputs[3]).dtype
        from ._apply import set_const

        set_const(self.graph, bn, 3, new_mean.astype(dtype))
        set_const(self.graph, bn, 4, new_var.astype(dtype))
        return before, after

    def set_bias(self, node: gs.Node, b: np.ndarray) -> None:
        """Write a bias; a new bias input of a producer joins the plan (its filters may be removed later)."""
        ad = ADAPTERS[node.op]
        had = ad.bias(node) is not None
        ad.set_bias(self.graph, node, b)
        if had:
            return
        from onnxcomp.analysis.channels import Member

        for m in list(self.plan.members):
            if m.node is node and m.kind == PARAM and m.role == PRODUCER and m.input == 1:
                new = Member(node, PARAM, PRODUCER, m.elems, input=2, axis=0)
                self.plan.members.append(new)
                for g in self.plan.groups:
                    if any(x is m for x in g.members):
                        g.members.append(new)
                return

    # -- LASSO ----------------------------------------------------------------------------------
    def lasso_scores(
        self,
        group: Any,
        members: list[Any],
        removed: np.ndarray,
        n_keep: int,
        max_outputs: int = 128,
        max_rows: int = 1 << 15,
    ) -> np.ndarray | None:
        """He et al.'s channel selection for one group over all its refittable consumers."""
        coefs = self.lasso_path(group, members, removed, max_outputs, max_rows)
        return None if coefs is None else path_scores(coefs, n_keep)

    def lasso_path(
        self,
        group: Any,
        members: list[Any],
        removed: np.ndarray,
        max_outputs: int = 128,
        max_rows: int = 1 << 15,
        data: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None = None,
    ) -> np.ndarray | None:
        """The LASSO path of one group's channels (:func:`lasso_path`) on the consumers' inputs in the graph
        pruned so far, towards their original outputs; ``data``: those (inputs by tensor, outputs by node name)
        captured already."""
        import numpy as np

        nodes = self.consumers(members)
        if not nodes:
            return None
        if data is None:
            xs = self.current([n.inputs[0].name for n in nodes])
            ys = self.reference(nodes, removed)
        else:
            xs, ys = data
        size = group.size
        gram = np.zeros((size, size))
        xy = np.zeros(size)
        rows = 0
        by_node = {id(m.node): m for m in members if m.role == CONSUMER and m.kind == PARAM}
        for node in nodes:
            ad = ADAPTERS[node.op]
            m = by_node[id(node)]
            x, y = xs[node.inputs[0].name], ys[node.name]
            idx = ad.sample(x, y, self.samples, self.rng)
            p = ad.patches(node, x, idx)
            w = ad.weights(node)
            b0 = ad.bias(node)
            t = ad.targets(y, idx) - (b0 if b0 is not None else 0.0)
            outs = np.arange(w.shape[0])
            if len(outs) > max_outputs:
                outs = np.sort(self.rng.choice(outs, size=max_outputs, replace=False))
            w, t = w[outs], t[:, outs]
            rows_per_node = max(1, max_rows // (len(outs) * len(nodes)))
            if len(p) > rows_per_node:  # rows = samples x outputs; Gram cost ~ rows x channels^2
                pick = np.sort(self.rng.choice(len(p), size=rows_per_node, replace=False))
                p, t = p[pick], t[pick]
            chans = self.plan.channels(m.elems)
            mine = (chans >= group.offset) & (chans < group.offset + size)
            onehot = np.zeros((len(chans), size), dtype=np.float32)
            onehot[np.nonzero(mine)[0], chans[mine] - group.offset] = 1.0
            step = max(1, (1 << 22) // max(1, w.shape[0] * w.shape[1] * w.shape[2]))
            for s in range(0, len(p), step):
                contrib = np.einsum("sck,ock->soc", p[s : s + step], w, optimize=True)
                z = (contrib @ onehot).reshape(-1, size)
                rest = contrib[..., ~mine].sum(axis=-1).reshape(-1)
                target = (t[s : s + step].reshape(-1) - rest).astype(np.float32)
                gram += (z.T @ z).astype(np.float64)
                xy += (z.T @ target).astype(np.float64)
                rows += len(target)
        return lasso_path(gram, xy, rows)


# ---------------------------------------------------------------------------------------------- trials
class _Fit:
    """One consumer's normal equations on the original network's sampled patches and outputs."""

    def __init__(self, node: gs.Node, p: np.ndarray, t: np.ndarray, fit_bias: bool) -> None:
        import numpy as np

        ad = ADAPTERS[node.op]
        self.w0 = ad.weights(node).astype(np.float64)  # [O, C, K]
        self.b0 = ad.bias(node)
        self.fit_bias = fit_bias
        flat = p.reshape(p.shape[0], -1)
        self.gram, self.pt = normal_equations(flat, t, fit_bias)
        self.tt = float(np.square(t, dtype=np.float64).sum())
        self.pmean = flat.mean(axis=0, dtype=np.float64)
        self.tmean = t.mean(axis=0, dtype=np.float64)

    def _sq(self, idx: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> float:
        """||P[:, idx] w^T + b - T||^2 from the normal equations (b ignored without a bias column)."""
        import numpy as np

        if self.fit_bias:
            idx = np.append(idx, self.gram.shape[0] - 1)
            w = np.concatenate([w, (b if b is not None else np.zeros(len(w)))[:, None]], axis=1)
        g, pt = self.gram[np.ix_(idx, idx)], self.pt[idx]
        return float(np.sum(w * (w @ g)) - 2.0 * np.sum(w * pt.T) + self.tt)

    def solve(self, keep: np.ndarray, mode: str, ridge: float) -> tuple[np.ndarray, np.ndarray | None]:
        """Weights [O, C, K] (0 on the removed input channels) and bias as :meth:`Refitter.refit` writes them
        when the consumer's input loses the channels not in ``keep``."""
        import numpy as np

        o, _, k = self.w0.shape
        idx = np.nonzero(np.repeat(keep, k))[0]
        w0 = self.w0[:, keep].reshape(o, -1)
        w, b = w0, self.b0
        if mode == "bias":
            if self.fit_bias:  # b' = b + mean(Y - Y') over the sampled positions
                b = self.tmean - w0 @ self.pmean[idx]
        elif mode == "lstsq":
            cols = np.append(idx, len(self.gram) - 1) if self.fit_bias else idx
            sol = ridge_solve(self.gram[np.ix_(cols, cols)], self.pt[cols], w0, self.b0, self.fit_bias, ridge)
            if self._sq(idx, sol[0], sol[1]) < self._sq(idx, w0, self.b0):  # as refit(): only when it gains
                w, b = sol
        full = np.zeros_like(self.w0)
        full[:, keep] = w.reshape(o, -1, k)
        return full, b


class GroupTrial:
    """One group's removals measured as the pass writes them, with only this group pruned: for each count
    the channels the pass's own scores pick (the LASSO path of :meth:`Refitter.lasso_path` for
    prune-channels), and each refittable consumer refitted as :meth:`Refitter.refit` does (``lstsq``: ridge
    least squares on the original network's input without the removed channels, towards the original output;
    ``bias``: the mean output shift; ``none``: only the removal), one closed-form solve from the normal
    equations captured once."""

    def __init__(
        self, refitter: Refitter, group: Any, mode: str, lasso: bool, max_outputs: int, allowed: set[int]
    ) -> None:
        import numpy as np

        self.refitter = refitter
        self.group = group
        self.mode = mode
        plan = refitter.plan
        every = refitter.consumers(group.members)
        self.nodes = [n for n in every if id(n) in allowed]  # the others are zeroed
        self.coefs = None
        self.fits: dict[int, _Fit] = {}
        if not every:
            return
        none = np.zeros(plan.n_channels, dtype=bool)
        names = [n.inputs[0].name for n in every]
        xs = refitter.original.run(refitter.feeds, [k for k in names if k not in refitter.feeds])
        xs.update({k: refitter.feeds[k] for k in names if k in refitter.feeds})
        ys = refitter.reference(every, none)
        refitter.forget()
        if lasso:
            self.coefs = refitter.lasso_path(group, group.members, none, max_outputs, data=(xs, ys))
        for node in self.nodes:
            ad = ADAPTERS[node.op]
            x, y = xs[node.inputs[0].name], ys[node.name]
            idx = ad.sample(x, y, refitter.samples, refitter.rng)
            p = ad.patches(node, x, idx)
            self.fits[id(node)] = _Fit(node, p, ad.targets(y, idx), ad.can_bias(node))

    def scores(self, n_remove: int, default: np.ndarray) -> np.ndarray:
        """The group's channel scores when ``n_remove`` channels go (the LASSO's for that count)."""
        return default if self.coefs is None else path_scores(self.coefs, self.group.size - n_remove)

    def refitted(self, removed: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
        """(weights [O, C, K], bias) of every refittable consumer by id(node), the rows of filters this group
        removes from the consumer itself set to 0."""
        import numpy as np

        plan = self.refitter.plan
        out = {}
        for node in self.nodes:
            keep = np.ones(self.fits[id(node)].w0.shape[1], dtype=bool)
            for m in self.group.members:
                if m.node is node and m.role == CONSUMER and m.kind == PARAM:
                    keep &= plan.keep(m.elems, removed)
            if keep.all():
                continue
            w, b = self.fits[id(node)].solve(keep, self.mode, self.refitter.ridge)
            for p in self.group.producers:
                if p.node is node:
                    gone = ~plan.keep(p.elems, removed)
                    w[gone] = 0.0
                    if b is not None:
                        b = np.where(gone, 0.0, b)
            out[id(node)] = (w, b)
        return out


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    import numpy as np

    den = float(np.linalg.norm(ref))
    return float(np.linalg.norm(a - ref)) / den if den > 0 else float(np.linalg.norm(a))
