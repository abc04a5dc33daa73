"""What changed between two models: nodes removed/added/rewritten, op counts, params, FLOPs, size."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

    from onnxcomp.shapes import InputShapes


@dataclasses.dataclass
class ModelDiff:
    removed: list[tuple[str, str]]  # (node name, op)
    added: list[tuple[str, str]]
    rewritten: list[tuple[str, str, str]]  # (name, op before, op after / what changed)
    op_counts: dict[str, tuple[int, int]]
    params: tuple[int, int]
    flops: tuple[int | None, int | None]
    weight_bytes: tuple[int, int]
    serialized_bytes: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _node_key(n: onnx.NodeProto, i: int) -> str:
    return n.name or f"{n.op_type}:{n.output[0] if n.output else i}"


def diff_models(a: onnx.ModelProto, b: onnx.ModelProto, plan: InputShapes | None = None) -> ModelDiff:
    """Differences of ``b`` from ``a``; FLOPs at the plan's shapes (resolved from ``a`` when not given), None
    when the plan leaves dims unsized."""
    from onnxcomp import cost
    from onnxcomp.shapes import resolve

    plan = plan or resolve(a)

    # nodes of If/Loop/Scan bodies too (names are unique across a model's scopes)
    na = {_node_key(n, i): n for i, n in enumerate(_all_nodes(a.graph))}
    nb = {_node_key(n, i): n for i, n in enumerate(_all_nodes(b.graph))}
    removed = [(k, na[k].op_type) for k in na if k not in nb]
    added = [(k, nb[k].op_type) for k in nb if k not in na]
    rewritten = []
    for k in na.keys() & nb.keys():
        x, y = na[k], nb[k]
        if x.op_type != y.op_type or x.domain != y.domain:
            rewritten.append((k, x.op_type, y.op_type))
        elif list(x.input) != list(y.input) or x.attribute != y.attribute:
            rewritten.append((k, x.op_type, "inputs/attributes changed"))
    rewritten.sort()
    ca, cb = Counter(n.op_type for n in na.values()), Counter(n.op_type for n in nb.values())
    ops = {op: (ca.get(op, 0), cb.get(op, 0)) for op in sorted(ca.keys() | cb.keys()) if ca.get(op) != cb.get(op)}
    sa, sb = cost.model_cost(a, plan), cost.model_cost(b, plan)
    return ModelDiff(
        removed,
        added,
        rewritten,
        ops,
        (sa.params, sb.params),
        (sa.flops, sb.flops),
        (sa.weight_bytes, sb.weight_bytes),
        (a.ByteSize(), b.ByteSize()),  # the serialized size, without serializing (models over 2 GB)
    )


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The graph's nodes, each followed by the nodes of its If/Loop/Scan bodies (nested ones included)."""
    out: list[onnx.NodeProto] = []
    stack = list(reversed(graph.node))
    while stack:
        node = stack.pop()
        out.append(node)
        for a in reversed(node.attribute):
            for g in reversed([a.g] if a.HasField("g") else list(a.graphs)):
                stack.extend(reversed(g.node))
    return out
