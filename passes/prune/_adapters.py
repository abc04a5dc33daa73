"""Adapters of the layers pruning refits: each reads and writes a layer (Conv with group 1, Gemm, MatMul) as
``Y[s, o] = sum_{c,k} P[s, c, k] W[o, c, k] + b[o]``, with ``P`` sampled input patches (``k`` runs over the
kernel taps; one tap for Gemm/MatMul) and ``W`` the weights. ``ADAPTERS`` is keyed by op type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from onnxcomp.graph import const_value, is_empty, make_constant

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs


class Adapter:
    """Reads and writes a layer as patches ``P [S, C, K]``, weights ``W [O, C, K]`` and bias ``b [O]``."""

    def unsupported(self, node: gs.Node) -> str | None:
        return None

    def sample(self, x: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator) -> Any:
        raise NotImplementedError

    def patches(self, node: gs.Node, x: np.ndarray, idx: Any) -> np.ndarray:
        raise NotImplementedError

    def targets(self, y: np.ndarray, idx: Any) -> np.ndarray:
        raise NotImplementedError

    def weights(self, node: gs.Node) -> np.ndarray:
        raise NotImplementedError

    def raw_weights(self, node: gs.Node, w: np.ndarray) -> np.ndarray:
        """``W [O, C, K]`` in the layout of the layer's weight initializer."""
        raise NotImplementedError

    def set_weights(self, graph: gs.Graph, node: gs.Node, w: np.ndarray) -> None:
        _write(graph, node, 1, self.raw_weights(node, w))

    def bias(self, node: gs.Node) -> np.ndarray | None:
        return None

    def raw_bias(self, node: gs.Node, b: np.ndarray) -> np.ndarray:
        """``b [O]`` in the layout of the layer's bias initializer (which it has)."""
        return b

    def can_bias(self, node: gs.Node) -> bool:
        return False

    def set_bias(self, graph: gs.Graph, node: gs.Node, b: np.ndarray) -> None:
        raise NotImplementedError

    def mean_axes(self, y: np.ndarray) -> tuple[int, ...]:
        """Axes of the output to average for a per-channel bias correction."""
        raise NotImplementedError

    def out_axis(self, y: np.ndarray) -> int:
        """The output's channel axis."""
        raise NotImplementedError


ADAPTERS: dict[str, Adapter] = {}


def adapter(op: str):
    def deco(cls: type[Adapter]) -> type[Adapter]:
        ADAPTERS[op] = cls()
        return cls

    return deco


def _write(graph: gs.Graph, node: gs.Node, index: int, values: np.ndarray) -> None:
    from ._apply import set_const

    set_const(graph, node, index, values.astype(const_value(node.inputs[index]).dtype))


@adapter("Conv")
class _Conv(Adapter):
    def unsupported(self, node: gs.Node) -> str | None:
        w = const_value(node.inputs[1])
        if w is None or w.ndim != 4:
            return "only 2-D convolutions are refitted"
        if int(node.attrs.get("group", 1)) != 1:
            return "grouped convolutions are not refitted"
        return None

    def sample(self, x: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator) -> Any:
        import numpy as np

        total = y.shape[0] * y.shape[2] * y.shape[3]
        flat = np.arange(total) if total <= n else rng.choice(total, size=n, replace=False)
        n_i, oh, ow = np.unravel_index(np.sort(flat), (y.shape[0], y.shape[2], y.shape[3]))
        return n_i, oh, ow, (y.shape[2], y.shape[3])

    def _geometry(self, node: gs.Node, x: np.ndarray, kh: int, kw: int, y: tuple[int, int]) -> tuple:
        strides = list(node.attrs.get("strides", [1, 1]))
        dil = list(node.attrs.get("dilations", [1, 1]))
        pads = list(node.attrs.get("pads", [0, 0, 0, 0]))
        auto = node.attrs.get("auto_pad", "NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = [0, 0, 0, 0]
            for i, (size, k, s, d) in enumerate(zip(x.shape[2:], (kh, kw), strides, dil, strict=True)):
                need = max((y[i] - 1) * s + (k - 1) * d + 1 - size, 0)
                lo = need // 2 if auto == "SAME_UPPER" else need - need // 2
                pads[i], pads[i + 2] = lo, need - lo
        elif auto == "VALID":
            pads = [0, 0, 0, 0]
        return strides, dil, pads

    def patches(self, node: gs.Node, x: np.ndarray, idx: Any) -> np.ndarray:
        import numpy as np

        w = const_value(node.inputs[1])
        kh, kw = w.shape[2], w.shape[3]
        n, oh, ow, y_hw = idx
        (sh, sw), (dh, dw), pads = self._geometry(node, x, kh, kw, y_hw)
        xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
        rows = oh[:, None] * sh + np.arange(kh)[None, :] * dh
        cols = ow[:, None] * sw + np.arange(kw)[None, :] * dw
        c = np.arange(x.shape[1])
        p = xp[n[:, None, None, None], c[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]
        return p.reshape(len(n), x.shape[1], kh * kw)

    def targets(self, y: np.ndarray, idx: Any) -> np.ndarray:
        n, oh, ow, _ = idx
        return y[n, :, oh, ow]

    def weights(self, node: gs.Node) -> np.ndarray:
        w = const_value(node.inputs[1])
        return w.reshape(w.shape[0], w.shape[1], -1)

    def raw_weights(self, node: gs.Node, w: np.ndarray) -> np.ndarray:
        return w.reshape(const_value(node.inputs[1]).shape)

    def bias(self, node: gs.Node) -> np.ndarray | None:
        return const_value(node.inputs[2]) if len(node.inputs) > 2 and not is_empty(node.inputs[2]) else None

    def can_bias(self, node: gs.Node) -> bool:
        return True

    def set_bias(self, graph: gs.Graph, node: gs.Node, b: np.ndarray) -> None:
        import numpy as np

        if self.bias(node) is not None:
            _write(graph, node, 2, b)
            return
        const = make_constant(graph, f"{node.name}_bias", b.astype(np.float32))
        if len(node.inputs) > 2:
            node.inputs[2] = const
        else:
            node.inputs.append(const)

    def mean_axes(self, y: np.ndarray) -> tuple[int, ...]:
        return (0, *range(2, y.ndim))

    def out_axis(self, y: np.ndarray) -> int:
        return 1


class _Rows(Adapter):
    """Layers on the last axis (Gemm, MatMul): samples are rows of the flattened leading axes."""

    def sample(self, x: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator) -> Any:
        import numpy as np

        rows = int(np.prod(x.shape[:-1]))
        return np.arange(rows) if rows <= n else np.sort(rng.choice(rows, size=n, replace=False))

    def patches(self, node: gs.Node, x: np.ndarray, idx: Any) -> np.ndarray:
        return x.reshape(-1, x.shape[-1])[idx][:, :, None]

    def targets(self, y: np.ndarray, idx: Any) -> np.ndarray:
        return y.reshape(-1, y.shape[-1])[idx]

    def mean_axes(self, y: np.ndarray) -> tuple[int, ...]:
        return tuple(range(y.ndim - 1))

    def out_axis(self, y: np.ndarray) -> int:
        return y.ndim - 1


@adapter("Gemm")
class _Gemm(_Rows):
    # Y = alpha * A @ B' + beta * C, B' = B.T when transB
    def unsupported(self, node: gs.Node) -> str | None:
        c = self._c(node)
        if c is not None and c.ndim == 2 and c.shape[0] > 1:
            return "Gemm with a full C matrix is not refitted"
        return None

    def _c(self, node: gs.Node) -> np.ndarray | None:
        return const_value(node.inputs[2]) if len(node.inputs) > 2 and not is_empty(node.inputs[2]) else None

    def weights(self, node: gs.Node) -> np.ndarray:
        b = const_value(node.inputs[1]) * float(node.attrs.get("alpha", 1.0))
        w = b if int(node.attrs.get("transB", 0)) else b.T
        return w[:, :, None]

    def raw_weights(self, node: gs.Node, w: np.ndarray) -> np.ndarray:
        w = w[:, :, 0] / float(node.attrs.get("alpha", 1.0))
        return w if int(node.attrs.get("transB", 0)) else w.T

    def bias(self, node: gs.Node) -> np.ndarray | None:
        import numpy as np

        c = self._c(node)
        if c is None:
            return None
        n = const_value(node.inputs[1]).shape[0 if int(node.attrs.get("transB", 0)) else 1]
        return np.broadcast_to(c.reshape(-1) * float(node.attrs.get("beta", 1.0)), (n,)).copy()

    def can_bias(self, node: gs.Node) -> bool:
        return float(node.attrs.get("beta", 1.0)) != 0.0 or self._c(node) is None

    def set_bias(self, graph: gs.Graph, node: gs.Node, b: np.ndarray) -> None:
        import numpy as np

        c = self._c(node)
        if c is None:
            node.attrs["beta"] = 1.0
            const = make_constant(graph, f"{node.name}_bias", b.astype(np.float32))
            if len(node.inputs) > 2:
                node.inputs[2] = const
            else:
                node.inputs.append(const)
            return
        _write(graph, node, 2, self.raw_bias(node, b))

    def raw_bias(self, node: gs.Node, b: np.ndarray) -> np.ndarray:
        c = self._c(node)
        b = b / float(node.attrs.get("beta", 1.0))
        return b.reshape(c.shape) if c is not None and c.size == b.size else b.reshape(1, -1)


@adapter("MatMul")
class _MatMul(_Rows):
    def unsupported(self, node: gs.Node) -> str | None:
        w = const_value(node.inputs[1])
        return None if w is not None and w.ndim == 2 else "only MatMul with a 2-D weight is refitted"

    def weights(self, node: gs.Node) -> np.ndarray:
        return const_value(node.inputs[1]).T[:, :, None]

    def raw_weights(self, node: gs.Node, w: np.ndarray) -> np.ndarray:
        return w[:, :, 0].T
