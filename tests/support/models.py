"""Small hand-built models (onnx.helper only): core tests, and the hostile and unusual models of the
hostile-input suite (tests/hostile)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_relu(
    opset: int = 17, ir_version: int | None = None, dynamic: bool = True, inits_as_inputs: bool = False, seed: int = 0
) -> onnx.ModelProto:
    """x[N,3,H,W] -> Conv(4, 3x3, pad 1) -> Relu -> y; weights from a Constant node and a ConstantOfShape."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    dims = ["N", 3, "H", "W"] if dynamic else [1, 3, 7, 9]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], 4, dims[2], dims[3]])
    nodes = [
        helper.make_node("Constant", [], ["b_shape"], value=numpy_helper.from_array(np.array([4], np.int64))),
        helper.make_node(
            "ConstantOfShape", ["b_shape"], ["b"], value=numpy_helper.from_array(np.array([0.25], np.float32))
        )
        if opset >= 9
        else helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(np.full(4, 0.25, np.float32))),
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    inits = [numpy_helper.from_array(w, "w")]
    inputs = [x]
    if inits_as_inputs:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, list(w.shape)))
    g = helper.make_graph(nodes, "conv_relu", inputs, [y], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir_version or {7: 3, 8: 3, 9: 4, 10: 5, 11: 6, 12: 7, 13: 7, 14: 7, 15: 8}.get(opset, 8)
    return m


def with_if_subgraph() -> onnx.ModelProto:
    """y = If(cond, then: x * w_outer, else: x + w_outer) where w_outer comes from the outer scope."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    then_out = helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [2, 3])
    else_out = helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [2, 3])
    then_g = helper.make_graph([helper.make_node("Mul", ["xi", "w2"], ["t_out"])], "then", [], [then_out])
    else_g = helper.make_graph([helper.make_node("Add", ["xi", "w2"], ["e_out"])], "else", [], [else_out])
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    nodes = [
        helper.make_node("Identity", ["x"], ["xi"], name="id"),
        helper.make_node("Add", ["w", "w"], ["w2"], name="fold_me"),
        helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_g, else_branch=else_g),
    ]
    g = helper.make_graph(nodes, "if_model", [x, cond], [y], [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def with_local_function() -> onnx.ModelProto:
    """y = custom.Scale2(x) + 1 where Scale2 is a model-local function (x * 2)."""
    two = helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.array(2.0, np.float32)))
    mul = helper.make_node("Mul", ["X", "two"], ["Y"])
    fn = helper.make_function("custom", "Scale2", ["X"], ["Y"], [two, mul], [helper.make_opsetid("", 17)])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])
    nodes = [
        helper.make_node("Scale2", ["x"], ["s"], name="scale", domain="custom"),
        helper.make_node("Add", ["s", "one"], ["y"], name="add"),
    ]
    g = helper.make_graph(nodes, "fn_model", [x], [y], [numpy_helper.from_array(np.array(1.0, np.float32), "one")])
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)], functions=[fn]
    )
    m.ir_version = 8
    return m


# ------------------------------------------------------------------------------ hostile and unusual models


def _model(nodes, inputs, outputs, inits, opset: int = 17, **meta: str) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "hostile", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    return m


def conv(
    dims: Sequence[int | str] = ("N", 3, "H", "W"),
    weight: np.ndarray | None = None,
    channels: int = 4,
    seed: int = 0,
    **meta: str,
) -> onnx.ModelProto:
    """x -> Conv(3x3, pad 1) -> y with the given input dims (str: dim_param, -1/0: Paddle-style dynamic)."""
    rng = np.random.default_rng(seed)
    cin = dims[1] if isinstance(dims[1], int) and dims[1] > 0 else 3
    w = rng.standard_normal((channels, cin, 3, 3)).astype(np.float32) if weight is None else weight
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], channels, dims[2], dims[3]])
    node = helper.make_node(
        "Conv", ["x", "conv1.weight"], ["y"], name="/conv1/Conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]
    )
    return _model([node], [x], [y], [numpy_helper.from_array(w, "conv1.weight")], **meta)


def conv_bn(var: Sequence[float], eps: float = 1e-5, gamma: Sequence[float] | None = None) -> onnx.ModelProto:
    """x[1,3,6,6] -> Conv(len(var) filters) -> BatchNormalization(var, eps) -> y."""
    c = len(var)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((c, 3, 3, 3)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 6, 6])
    g = np.ones(c, np.float32) if gamma is None else np.asarray(gamma, np.float32)
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(g, "gamma"),
        numpy_helper.from_array(np.full(c, 0.1, np.float32), "beta"),
        numpy_helper.from_array(np.zeros(c, np.float32), "mean"),
        numpy_helper.from_array(np.asarray(var, np.float32), "var"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["y"], name="bn", epsilon=eps),
    ]
    return _model(nodes, [x], [y], inits)


def mlp(weight: np.ndarray, dims: Sequence[int | str] = ("N", 64)) -> onnx.ModelProto:
    """x[N, K] -> MatMul(weight) -> Relu -> y."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], weight.shape[1]])
    nodes = [
        helper.make_node("MatMul", ["x", "fc.weight"], ["h"], name="/fc/MatMul"),
        helper.make_node("Relu", ["h"], ["y"], name="/relu/Relu"),
    ]
    return _model(nodes, [x], [y], [numpy_helper.from_array(weight, "fc.weight")])


def text(seq: str = "sequence") -> onnx.ModelProto:
    """input_ids[batch, seq] (int64) and attention_mask[batch, seq] -> Gather(embedding) * mask -> y."""
    emb = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", seq])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", seq])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", seq, 8])
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["e"], name="gather"),
        helper.make_node("Cast", ["attention_mask"], ["m"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axes"], ["m3"], name="unsq"),
        helper.make_node("Mul", ["e", "m3"], ["y"], name="mul"),
    ]
    inits = [numpy_helper.from_array(emb, "emb"), numpy_helper.from_array(np.array([2], np.int64), "axes")]
    return _model(nodes, [ids, mask], [y], inits)


def signal() -> onnx.ModelProto:
    """x[N, L] float (an audio-like signal of unknown length): nothing says how long L should be."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "L"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "L"])
    node = helper.make_node("Mul", ["x", "k"], ["y"], name="scale")
    return _model([node], [x], [y], [numpy_helper.from_array(np.array(2.0, np.float32), "k")])


def bad_group_conv() -> onnx.ModelProto:
    """A Conv with group=3 on 4 input channels: invalid (C_in must be a multiple of group)."""
    w = np.ones((3, 1, 1, 1), np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 5, 5])
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group=3, kernel_shape=[1, 1])
    return _model([node], [x], [y], [numpy_helper.from_array(w, "w")])


def bad_reshape() -> onnx.ModelProto:
    """x[1, 4] -> Reshape to [3]: valid to onnx.checker, fails inside onnxruntime."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
    node = helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")
    return _model([node], [x], [y], [numpy_helper.from_array(np.array([3], np.int64), "shape")])


def control_flow_layers(seed: int = 0, levels: Sequence[float] | None = None) -> onnx.ModelProto:
    """Weighted layers inside control flow, as exporters write them (Silero VAD keeps its layers in If branches).

    Inputs x [2, 3, 7, 9], v [3, 24], flag (bool scalar). ``If if_main`` on flag:
      then: Conv(x, Constant-node weight [8, 3, 3, 3], initializer bias) and Gemm(v, body initializer, transB=1)
      else: Conv(x, outer initializer captured by the body, no bias) and MatMul(v, body initializer) + Add(bias)
    ``Loop loop`` (3 trips): h <- Tanh(MatMul(h, Constant-node weight [24, 24])), from h = v.
    ``If if_shared`` on flag: both branches MatMul(v or Relu(v), one outer initializer): a shared weight.
    Outputs: conv [2, 8, 7, 9], fc [3, 40], loop [3, 24], shared [3, 40]. ``levels``: every weight is drawn from
    these values (a codebook holding them encodes the weights exactly); default: normal / sqrt(fan-in).
    """
    rng = np.random.default_rng(seed)
    grid = None if levels is None else np.asarray(levels, np.float32)

    def weight(*shape: int) -> np.ndarray:
        if grid is not None:
            return grid[rng.integers(0, len(grid), shape)]
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    f = TensorProto.FLOAT

    def const_node(name: str, value: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], name=f"{name}_const", value=numpy_helper.from_array(value))

    then_g = helper.make_graph(
        [
            const_node("then_conv_w", weight(8, 3, 3, 3)),
            helper.make_node(
                "Conv", ["x", "then_conv_w", "then_conv_b"], ["then_conv"], name="then_conv", pads=[1, 1, 1, 1]
            ),
            helper.make_node("Gemm", ["v", "then_fc_w", "then_fc_c"], ["then_fc"], name="then_gemm", transB=1),
        ],
        "then",
        [],
        [
            helper.make_tensor_value_info("then_conv", f, [2, 8, 7, 9]),
            helper.make_tensor_value_info("then_fc", f, [3, 40]),
        ],
        [
            numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "then_conv_b"),
            numpy_helper.from_array(weight(40, 24), "then_fc_w"),
            numpy_helper.from_array(rng.standard_normal(40).astype(np.float32), "then_fc_c"),
        ],
    )
    else_g = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "outer_conv_w"], ["else_conv"], name="else_conv", pads=[1, 1, 1, 1]),
            helper.make_node("MatMul", ["v", "else_fc_w"], ["else_mm"], name="else_matmul"),
            helper.make_node("Add", ["else_mm", "else_fc_b"], ["else_fc"], name="else_add"),
        ],
        "else",
        [],
        [
            helper.make_tensor_value_info("else_conv", f, [2, 8, 7, 9]),
            helper.make_tensor_value_info("else_fc", f, [3, 40]),
        ],
        [
            numpy_helper.from_array(weight(24, 40), "else_fc_w"),
            numpy_helper.from_array(rng.standard_normal(40).astype(np.float32), "else_fc_b"),
        ],
    )
    body = helper.make_graph(
        [
            const_node("loop_w", weight(24, 24)),
            helper.make_node("MatMul", ["h_in", "loop_w"], ["h_mm"], name="loop_matmul"),
            helper.make_node("Tanh", ["h_mm"], ["h_out"], name="loop_tanh"),
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="loop_cond"),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_in", f, [3, 24]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_out", f, [3, 24]),
        ],
    )
    shared_then = helper.make_graph(
        [helper.make_node("MatMul", ["v", "shared_w"], ["s_then"], name="shared_then_matmul")],
        "shared_then",
        [],
        [helper.make_tensor_value_info("s_then", f, [3, 40])],
    )
    shared_else = helper.make_graph(
        [
            helper.make_node("Relu", ["v"], ["v_relu"], name="shared_relu"),
            helper.make_node("MatMul", ["v_relu", "shared_w"], ["s_else"], name="shared_else_matmul"),
        ],
        "shared_else",
        [],
        [helper.make_tensor_value_info("s_else", f, [3, 40])],
    )
    nodes = [
        helper.make_node("If", ["flag"], ["conv", "fc"], name="if_main", then_branch=then_g, else_branch=else_g),
        helper.make_node("Loop", ["trips", "", "v"], ["loop"], name="loop", body=body),
        helper.make_node(
            "If", ["flag"], ["shared"], name="if_shared", then_branch=shared_then, else_branch=shared_else
        ),
    ]
    g = helper.make_graph(
        nodes,
        "control_flow_layers",
        [
            helper.make_tensor_value_info("x", f, [2, 3, 7, 9]),
            helper.make_tensor_value_info("v", f, [3, 24]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("conv", f, [2, 8, 7, 9]),
            helper.make_tensor_value_info("fc", f, [3, 40]),
            helper.make_tensor_value_info("loop", f, [3, 24]),
            helper.make_tensor_value_info("shared", f, [3, 40]),
        ],
        [
            numpy_helper.from_array(weight(8, 3, 3, 3), "outer_conv_w"),
            numpy_helper.from_array(weight(24, 40), "shared_w"),
            numpy_helper.from_array(np.array(3, np.int64), "trips"),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def control_flow_feeds(flag: bool, seed: int = 1) -> dict[str, np.ndarray]:
    """Inputs of :func:`control_flow_layers` taking the then (True) or else (False) branches."""
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((2, 3, 7, 9)).astype(np.float32),
        "v": rng.standard_normal((3, 24)).astype(np.float32),
        "flag": np.array(flag),
    }


RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def recurrent(op: str, hidden: int = 48, inputs: int = 29, direction: str = "forward", levels: int = 0, seed: int = 0):
    """x [T, N, I] -> op -> Y; W [D, G*H, I], R [D, G*H, H], B [D, 2*G*H] constants. ``levels``: W and R drawn
    from that many distinct values (0: continuous)."""
    rng = np.random.default_rng(seed)
    d = 2 if direction == "bidirectional" else 1
    g = RECURRENT_GATES[op]

    def draw(*shape):
        if levels:
            values = np.arange(-levels // 2, levels - levels // 2) / 32.0  # exact in a float16 codebook
            return rng.choice(values, size=shape).astype(np.float32)
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    w, r = draw(d, g * hidden, inputs), draw(d, g * hidden, hidden)
    b = (rng.standard_normal((d, 2 * g * hidden)) * 0.1).astype(np.float32)
    node = helper.make_node(op, ["x", "W", "R", "B"], ["Y", "Y_h"], name="rnn", hidden_size=hidden, direction=direction)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", inputs])],
        [
            helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", d, "N", hidden]),
            helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [d, "N", hidden]),
        ],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R"), numpy_helper.from_array(b, "B")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), w, r


def recurrent_feeds(inputs: int = 29):
    rng = np.random.default_rng(3)
    return {"x": rng.standard_normal((9, 3, inputs)).astype(np.float32)}  # odd sizes: 9 steps, batch 3
