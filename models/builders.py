"""Deterministic builders of the architectures that onnxcomp's tests and benchmarks run on.

Every builder returns a checker-valid, shape-inferable ``onnx.ModelProto`` made with numpy and
``onnx.helper`` only. All weights are initializers with realistic random values drawn from
``numpy.random.default_rng(seed)``: He-initialised convolution and linear weights, BatchNormalization
with gamma in [0.5, 1.5], small random beta and running mean, running variance in [0.5, 2]. The same
arguments always give byte-identical models.

Defaults are small (they run in onnxruntime in milliseconds, e.g. on 1x3x32x32 inputs); the size
arguments (``width``, ``image_size``, block counts, ...) scale every model up to its real size
(``resnet50()``, ``vgg(config="vgg16", width=1.0, image_size=224)``, ``yolov8n()``...).

The first input dimension is the batch: ``batch="N"`` (default) makes it symbolic, an int fixes it.
Tensor and node names follow the layer names (``layer1.0.conv1.weight``) so diffs read naturally.

Usage::

    from models import builders
    model = builders.build("resnet", depth=18, image_size=(31, 29))
    feeds = builders.random_inputs(model, batch=2)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MIN_OPSET = 17
MAX_OPSET = 21
DEFAULT_OPSET = 17

Batch = int | str
Size = int | tuple[int, int]

__all__ = [
    "BUILDERS",
    "branchy",
    "build",
    "mlp",
    "mobilenet",
    "param_count",
    "random_inputs",
    "resnet",
    "resnet50",
    "transformer_block",
    "vgg",
    "vgg16",
    "yolo",
    "yolov8n",
]


# --------------------------------------------------------------------------------------------------
# helpers


def _hw(image_size: Size) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def _divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of ``divisor`` (never below it, never 10% smaller)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class GraphBuilder:
    """Accumulates nodes and initializers of one graph; names every tensor after its layer."""

    def __init__(self, name: str, seed: int, opset: int) -> None:
        if not MIN_OPSET <= opset <= MAX_OPSET:
            raise ValueError(f"opset must be in [{MIN_OPSET}, {MAX_OPSET}], got {opset}")
        self.name = name
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self._tensor_names: set[str] = set()
        self._node_names: set[str] = set()
        self._shared: dict[str, str] = {}

    # -- naming and raw graph construction ------------------------------------------------------
    def _claim_tensor(self, name: str) -> str:
        if name in self._tensor_names:
            raise ValueError(f"duplicate tensor name {name!r}")
        self._tensor_names.add(name)
        return name

    def add_input(self, name: str, shape: Sequence[int | str]) -> str:
        self._claim_tensor(name)
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        return name

    def const(self, name: str, array: np.ndarray) -> str:
        self._claim_tensor(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def shared_const(self, key: str, array: np.ndarray) -> str:
        """One initializer per distinct constant (Clip bounds, Reshape shapes, scales...)."""
        if key not in self._shared:
            self._shared[key] = self.const(key, array)
        return self._shared[key]

    def op(self, op_type: str, inputs: Sequence[str], name: str, n_out: int = 1, **attrs) -> str | list[str]:
        """Add a node named ``name``; its outputs are ``name`` (one output) or ``name:i``."""
        if name in self._node_names:
            raise ValueError(f"duplicate node name {name!r}")
        self._node_names.add(name)
        outputs = [name] if n_out == 1 else [f"{name}:{i}" for i in range(n_out)]
        for out in outputs:
            self._claim_tensor(out)
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=name, **attrs))
        return outputs[0] if n_out == 1 else outputs

    # -- weights --------------------------------------------------------------------------------
    def he_normal(self, shape: Sequence[int], fan_in: int) -> np.ndarray:
        std = np.float32(math.sqrt(2.0 / fan_in))
        return self.rng.standard_normal(tuple(shape), dtype=np.float32) * std

    def bias_uniform(self, size: int, fan_in: int) -> np.ndarray:
        bound = 1.0 / math.sqrt(fan_in)
        return self.rng.uniform(-bound, bound, size).astype(np.float32)

    # -- layers ---------------------------------------------------------------------------------
    def conv(
        self,
        x: str,
        name: str,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        group: int = 1,
        bias: bool = False,
        pad: int | None = None,
    ) -> str:
        if cin % group or cout % group:
            raise ValueError(f"{name}: channels {cin}->{cout} not divisible by group {group}")
        pad = kernel // 2 if pad is None else pad
        fan_in = cin // group * kernel * kernel
        inputs = [
            x,
            self.const(f"{name}.weight", self.he_normal((cout, cin // group, kernel, kernel), fan_in)),
        ]
        if bias:
            inputs.append(self.const(f"{name}.bias", self.bias_uniform(cout, fan_in)))
        return self.op(
            "Conv",
            inputs,
            name,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad] * 4,
            dilations=[1, 1],
            group=group,
        )

    def batchnorm(self, x: str, name: str, channels: int, gamma_scale: float = 1.0) -> str:
        rng = self.rng
        gamma = (rng.uniform(0.5, 1.5, channels) * gamma_scale).astype(np.float32)
        beta = rng.normal(0.0, 0.1, channels).astype(np.float32)
        mean = rng.normal(0.0, 0.1, channels).astype(np.float32)
        var = rng.uniform(0.5, 2.0, channels).astype(np.float32)
        inputs = [x]
        for suffix, value in (
            ("weight", gamma),
            ("bias", beta),
            ("running_mean", mean),
            ("running_var", var),
        ):
            inputs.append(self.const(f"{name}.{suffix}", value))
        return self.op("BatchNormalization", inputs, name, epsilon=1e-5, momentum=0.9)

    def act(self, x: str, kind: str, name: str) -> str:
        """Activation ``kind``: relu, relu6, hswish, hsigmoid, sigmoid, silu, gelu or none."""
        if kind == "none":
            return x
        if kind == "relu":
            return self.op("Relu", [x], f"{name}.relu")
        if kind == "relu6":
            lo = self.shared_const("const.clip_min_0", np.array(0.0, np.float32))
            hi = self.shared_const("const.clip_max_6", np.array(6.0, np.float32))
            return self.op("Clip", [x, lo, hi], f"{name}.relu6")
        if kind == "hswish":
            return self.op("HardSwish", [x], f"{name}.hswish")
        if kind == "hsigmoid":
            return self.op("HardSigmoid", [x], f"{name}.hsigmoid", alpha=1.0 / 6.0, beta=0.5)
        if kind == "sigmoid":
            return self.op("Sigmoid", [x], f"{name}.sigmoid")
        if kind == "silu":
            gate = self.op("Sigmoid", [x], f"{name}.silu.sigmoid")
            return self.op("Mul", [x, gate], f"{name}.silu")
        if kind == "gelu":
            if self.opset >= 20:
                return self.op("Gelu", [x], f"{name}.gelu")
            # exact (erf) GELU, decomposed as torch exports it below opset 20
            inv_sqrt2 = self.shared_const("const.inv_sqrt2", np.array(1 / math.sqrt(2), np.float32))
            one = self.shared_const("const.one", np.array(1.0, np.float32))
            half = self.shared_const("const.half", np.array(0.5, np.float32))
            scaled = self.op("Mul", [x, inv_sqrt2], f"{name}.gelu.div")
            erf = self.op("Erf", [scaled], f"{name}.gelu.erf")
            plus = self.op("Add", [erf, one], f"{name}.gelu.add")
            prod = self.op("Mul", [x, plus], f"{name}.gelu.mul")
            return self.op("Mul", [prod, half], f"{name}.gelu")
        raise ValueError(f"unknown activation {kind!r}")

    def conv_bn_act(
        self,
        x: str,
        name: str,
        cin: int,
        cout: int,
        kernel: int,
        act: str,
        stride: int = 1,
        group: int = 1,
        bn_name: str | None = None,
    ) -> str:
        y = self.conv(x, f"{name}" if bn_name else f"{name}.conv", cin, cout, kernel, stride, group)
        y = self.batchnorm(y, bn_name or f"{name}.bn", cout)
        return self.act(y, act, name)

    def gemm(self, x: str, name: str, fin: int, fout: int) -> str:
        """Linear layer as PyTorch exports it: Gemm with weight [out, in] and transB=1."""
        w = self.const(f"{name}.weight", self.he_normal((fout, fin), fin))
        b = self.const(f"{name}.bias", self.bias_uniform(fout, fin))
        return self.op("Gemm", [x, w, b], name, alpha=1.0, beta=1.0, transB=1)

    def matmul_add(self, x: str, name: str, fin: int, fout: int) -> str:
        """Linear layer as MatMul with weight [in, out] followed by a bias Add."""
        w = self.const(f"{name}.weight", self.he_normal((fin, fout), fin))
        b = self.const(f"{name}.bias", self.bias_uniform(fout, fin))
        y = self.op("MatMul", [x, w], f"{name}.matmul")
        return self.op("Add", [y, b], name)

    def pool_flatten(self, x: str, name: str = "pool") -> str:
        y = self.op("GlobalAveragePool", [x], name)
        return self.op("Flatten", [y], "flatten", axis=1)

    # -- finishing --------------------------------------------------------------------------------
    def build(self, outputs: Sequence[str], batch: Batch) -> onnx.ModelProto:
        """Make the model; output shapes come from ONNX shape inference, first dim set to ``batch``."""
        opset_ids = [helper.make_opsetid("", self.opset)]
        ir_version = helper.find_min_ir_version_for(opset_ids)
        untyped_outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        # strict shape inference on a light copy whose large initializers are declared as inputs
        small = [t for t in self.initializers if np.prod(t.dims) <= 64]
        declared = [
            helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
            for t in self.initializers
            if np.prod(t.dims) > 64
        ]
        light = helper.make_model(
            helper.make_graph(self.nodes, self.name, self.inputs + declared, untyped_outputs, initializer=small),
            opset_imports=opset_ids,
            ir_version=ir_version,
        )
        inferred = onnx.shape_inference.infer_shapes(light, check_type=True, strict_mode=True, data_prop=True)
        known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
        typed_outputs = []
        for out in outputs:
            dims = list(known[out].type.tensor_type.shape.dim)
            shape: list[int | str] = [batch]
            for i, dim in enumerate(dims[1:], start=1):
                if dim.HasField("dim_value"):
                    shape.append(dim.dim_value)
                elif dim.HasField("dim_param"):
                    shape.append(dim.dim_param)
                else:
                    raise RuntimeError(f"{self.name}: output {out} dim {i} not inferred")
            typed_outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, shape))
        graph = helper.make_graph(self.nodes, self.name, self.inputs, typed_outputs, initializer=self.initializers)
        return helper.make_model(
            graph,
            opset_imports=opset_ids,
            producer_name="onnxcomp.models",
            producer_version="1",
            ir_version=ir_version,
        )


def param_count(model: onnx.ModelProto) -> int:
    """Number of scalars in all initializers of ``model``."""
    return int(sum(np.prod(init.dims, dtype=np.int64) for init in model.graph.initializer))


def random_inputs(
    model: onnx.ModelProto, batch: int = 1, seed: int = 0, sizes: dict[str, int] | None = None
) -> dict[str, np.ndarray]:
    """Standard-normal float32 feeds for every graph input.

    A symbolic first dimension becomes ``batch``; any other symbolic dimension is looked up by name
    in ``sizes`` (default 8).
    """
    rng = np.random.default_rng(seed)
    sizes = sizes or {}
    init_names = {init.name for init in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in init_names:
            continue
        shape = []
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_value"):
                shape.append(d.dim_value)
            else:
                shape.append(batch if i == 0 else sizes.get(d.dim_param, 8))
        feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


# --------------------------------------------------------------------------------------------------
# ResNet

_RESNET_DEPTHS: dict[int, tuple[tuple[int, ...], bool]] = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
}


def resnet(
    depth: int | None = None,
    blocks: Sequence[int] = (1, 1, 1, 1),
    bottleneck: bool = False,
    width: float = 0.25,
    num_classes: int = 10,
    image_size: Size = 32,
    in_channels: int = 3,
    branch_gamma_scale: float = 1.0,
    batch: Batch = "N",
    seed: int = 0,
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """ResNet (torchvision v1.5 layout): Conv7x7-BN-Relu stem, MaxPool, residual stages, GAP, Gemm.

    ``depth`` (18, 34, 50, 101, 152) overrides ``blocks``/``bottleneck``. Stage widths are
    64, 128, 256, 512 times ``width`` (bottleneck outputs 4x that). Downsampling blocks and width
    changes use a Conv1x1-BN projection shortcut; the stride sits on the 3x3 conv.

    With random BN statistics every residual Add roughly doubles the activation variance, so deep
    variants have large outputs (resnet50 logits ~1e3-1e4). ``branch_gamma_scale`` < 1 scales the
    gamma of the last BN of every residual branch (trained ResNets have small ones there); 0.3 brings
    resnet50's logits down to about 20.
    """
    if depth is not None:
        if depth not in _RESNET_DEPTHS:
            raise ValueError(f"depth must be one of {sorted(_RESNET_DEPTHS)}")
        blocks, bottleneck = _RESNET_DEPTHS[depth]
    h, w = _hw(image_size)
    g = GraphBuilder(f"resnet{depth or ''}", seed, opset)
    x = g.add_input("input", [batch, in_channels, h, w])
    stem = _divisible(64 * width)
    x = g.conv(x, "conv1", in_channels, stem, 7, stride=2)
    x = g.batchnorm(x, "bn1", stem)
    x = g.act(x, "relu", "stem")
    x = g.op("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    expansion = 4 if bottleneck else 1
    cin = stem
    for stage, n_blocks in enumerate(blocks):
        planes = _divisible(64 * 2**stage * width)
        cout = planes * expansion
        for b in range(n_blocks):
            stride = 2 if (b == 0 and stage > 0) else 1
            name = f"layer{stage + 1}.{b}"
            if bottleneck:
                y = g.conv_bn_act(x, f"{name}.conv1", cin, planes, 1, "relu", bn_name=f"{name}.bn1")
                y = g.conv_bn_act(y, f"{name}.conv2", planes, planes, 3, "relu", stride, bn_name=f"{name}.bn2")
                y = g.conv(y, f"{name}.conv3", planes, cout, 1)
                y = g.batchnorm(y, f"{name}.bn3", cout, branch_gamma_scale)
            else:
                y = g.conv_bn_act(x, f"{name}.conv1", cin, planes, 3, "relu", stride, bn_name=f"{name}.bn1")
                y = g.conv(y, f"{name}.conv2", planes, cout, 3)
                y = g.batchnorm(y, f"{name}.bn2", cout, branch_gamma_scale)
            if stride != 1 or cin != cout:
                shortcut = g.conv(x, f"{name}.downsample.0", cin, cout, 1, stride)
                shortcut = g.batchnorm(shortcut, f"{name}.downsample.1", cout)
            else:
                shortcut = x
            x = g.op("Add", [y, shortcut], f"{name}.add")
            x = g.act(x, "relu", name)
            cin = cout
    x = g.pool_flatten(x, "avgpool")
    x = g.gemm(x, "fc", cin, num_classes)
    return g.build([x], batch)


def resnet50(
    num_classes: int = 1000,
    image_size: Size = 224,
    batch: Batch = "N",
    seed: int = 0,
    opset: int = DEFAULT_OPSET,
    **kw,
) -> onnx.ModelProto:
    """Full-size ResNet-50 (25.6M parameters at 1000 classes), for benchmarks; ``kw`` go to ``resnet``."""
    return resnet(
        depth=50,
        width=1.0,
        num_classes=num_classes,
        image_size=image_size,
        batch=batch,
        seed=seed,
        opset=opset,
        **kw,
    )


# --------------------------------------------------------------------------------------------------
# MobileNet V2 / V3

# inverted residual blocks: (kernel, expanded channels, out channels, squeeze-excite, activation, stride)
_MBConfig = tuple[int, int, int, bool, str, int]

_MOBILENET_TINY: tuple[int, str, list[_MBConfig], tuple[int, ...], str] = (
    8,
    "hswish",
    [
        (3, 8, 8, True, "relu", 2),
        (3, 32, 16, False, "relu6", 2),
        (3, 48, 16, False, "relu6", 1),
        (5, 64, 24, True, "hswish", 2),
        (3, 96, 24, True, "hswish", 1),
    ],
    (96, 128),
    "hswish",
)

_MOBILENET_V3_SMALL = (
    16,
    "hswish",
    [
        (3, 16, 16, True, "relu", 2),
        (3, 72, 24, False, "relu", 2),
        (3, 88, 24, False, "relu", 1),
        (5, 96, 40, True, "hswish", 2),
        (5, 240, 40, True, "hswish", 1),
        (5, 240, 40, True, "hswish", 1),
        (5, 120, 48, True, "hswish", 1),
        (5, 144, 48, True, "hswish", 1),
        (5, 288, 96, True, "hswish", 2),
        (5, 576, 96, True, "hswish", 1),
        (5, 576, 96, True, "hswish", 1),
    ],
    (576, 1024),
    "hswish",
)

_MOBILENET_V3_LARGE = (
    16,
    "hswish",
    [
        (3, 16, 16, False, "relu", 1),
        (3, 64, 24, False, "relu", 2),
        (3, 72, 24, False, "relu", 1),
        (5, 72, 40, True, "relu", 2),
        (5, 120, 40, True, "relu", 1),
        (5, 120, 40, True, "relu", 1),
        (3, 240, 80, False, "hswish", 2),
        (3, 200, 80, False, "hswish", 1),
        (3, 184, 80, False, "hswish", 1),
        (3, 184, 80, False, "hswish", 1),
        (3, 480, 112, True, "hswish", 1),
        (3, 672, 112, True, "hswish", 1),
        (5, 672, 160, True, "hswish", 2),
        (5, 960, 160, True, "hswish", 1),
        (5, 960, 160, True, "hswish", 1),
    ],
    (960, 1280),
    "hswish",
)


def _mobilenet_v2_config():
    blocks: list[_MBConfig] = []
    cin = 32
    # torchvision's (expansion t, channels c, repeats n, first stride s)
    stages = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )
    for t, c, n, s in stages:
        for i in range(n):
            blocks.append((3, cin * t, c, False, "relu6", s if i == 0 else 1))
            cin = c
    return 32, "relu6", blocks, (1280,), "relu6"


_MOBILENET_VARIANTS = {
    "tiny": lambda: _MOBILENET_TINY,
    "v2": _mobilenet_v2_config,
    "v3_small": lambda: _MOBILENET_V3_SMALL,
    "v3_large": lambda: _MOBILENET_V3_LARGE,
}


def mobilenet(
    variant: str = "tiny",
    width: float = 1.0,
    num_classes: int = 10,
    image_size: Size = 32,
    in_channels: int = 3,
    batch: Batch = "N",
    seed: int = 0,
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """MobileNetV2/V3: inverted residuals (1x1 expand, depthwise kxk with group=C, squeeze-excitation,
    1x1 project, residual Add), HardSwish / Relu6 (Clip) / Relu activations.

    ``variant``: "tiny" (default, every feature in five blocks), "v2" (3.5M params), "v3_small"
    (2.5M), "v3_large" (5.5M). Squeeze-excitation is GlobalAveragePool -> Conv1x1 -> Relu ->
    Conv1x1 -> HardSigmoid -> Mul. V3 head: Conv1x1 -> GAP -> Gemm -> HardSwish -> Gemm; V2: Conv1x1
    -> GAP -> Gemm.
    """
    if variant not in _MOBILENET_VARIANTS:
        raise ValueError(f"variant must be one of {sorted(_MOBILENET_VARIANTS)}")
    stem_c, stem_act, blocks, head, head_act = _MOBILENET_VARIANTS[variant]()
    h, w = _hw(image_size)
    g = GraphBuilder(f"mobilenet_{variant}", seed, opset)
    x = g.add_input("input", [batch, in_channels, h, w])
    cin = _divisible(stem_c * width)
    x = g.conv_bn_act(x, "features.0", in_channels, cin, 3, stem_act, stride=2)
    for i, (kernel, exp_c, out_c, use_se, act, stride) in enumerate(blocks, start=1):
        name = f"features.{i}"
        exp_c, out_c = _divisible(exp_c * width), _divisible(out_c * width)
        y = x
        if exp_c != cin:
            y = g.conv_bn_act(y, f"{name}.expand", cin, exp_c, 1, act)
        y = g.conv_bn_act(y, f"{name}.dw", exp_c, exp_c, kernel, act, stride=stride, group=exp_c)
        if use_se:
            squeeze = _divisible(exp_c / 4)
            s = g.op("GlobalAveragePool", [y], f"{name}.se.pool")
            s = g.conv(s, f"{name}.se.fc1", exp_c, squeeze, 1, bias=True)
            s = g.act(s, "relu", f"{name}.se.fc1")
            s = g.conv(s, f"{name}.se.fc2", squeeze, exp_c, 1, bias=True)
            s = g.act(s, "hsigmoid", f"{name}.se.fc2")
            y = g.op("Mul", [y, s], f"{name}.se.scale")
        y = g.conv_bn_act(y, f"{name}.project", exp_c, out_c, 1, "none")
        if stride == 1 and cin == out_c:
            y = g.op("Add", [y, x], f"{name}.add")
        x, cin = y, out_c
    last = _divisible(head[0] * width)
    x = g.conv_bn_act(x, f"features.{len(blocks) + 1}", cin, last, 1, head_act)
    x = g.pool_flatten(x, "avgpool")
    for j, hidden in enumerate(head[1:]):
        x = g.gemm(x, f"classifier.{j}", last, hidden)
        x = g.act(x, head_act, f"classifier.{j}")
        last = hidden
    x = g.gemm(x, "classifier.out", last, num_classes)
    return g.build([x], batch)


# --------------------------------------------------------------------------------------------------
# Inception-like branchy network


def branchy(
    width: float = 0.25,
    num_modules: int = 2,
    num_classes: int = 10,
    image_size: Size = 32,
    in_channels: int = 3,
    batch: Batch = "N",
    seed: int = 0,
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """Inception-like network with parallel branches joined by Concat, and a channel Split.

    Stem Conv-BN-Relu (stride 2) -> Split on channels into unequal parts [c/4, 3c/4], the large
    part through Conv3x3-BN-Relu, re-joined by Concat and mixed by a Conv1x1 -> ``num_modules``
    inception modules (branches 1x1 | 1x1->3x3 | 1x1->5x5 | MaxPool3x3->1x1, Concat on axis 1,
    each followed by a Conv1x1 consuming the concat; MaxPool stride 2 between modules) -> GAP -> Gemm.
    Channels are GoogLeNet's inception-3a numbers times ``width``.
    """
    h, w = _hw(image_size)
    c = lambda v: _divisible(v * width)  # noqa: E731
    g = GraphBuilder("branchy", seed, opset)
    x = g.add_input("input", [batch, in_channels, h, w])
    cin = c(64)
    x = g.conv_bn_act(x, "stem.0", in_channels, cin, 3, "relu", stride=2)
    # channel split: a pass-through part and a processed part, re-joined
    part = cin // 4
    split_sizes = g.const("split.sizes", np.array([part, cin - part], np.int64))
    keep, rest = g.op("Split", [x, split_sizes], "split", n_out=2, axis=1)
    rest = g.conv_bn_act(rest, "split.branch", cin - part, cin - part, 3, "relu")
    x = g.op("Concat", [keep, rest], "split.concat", axis=1)
    x = g.conv_bn_act(x, "split.mix", cin, cin, 1, "relu")
    for m in range(num_modules):
        name = f"inception{m}"
        scale = 2**m
        c1, r3, c3, r5, c5, cp = (c(v * scale) for v in (64, 96, 128, 16, 32, 32))
        b1 = g.conv_bn_act(x, f"{name}.b1", cin, c1, 1, "relu")
        b2 = g.conv_bn_act(x, f"{name}.b2.0", cin, r3, 1, "relu")
        b2 = g.conv_bn_act(b2, f"{name}.b2.1", r3, c3, 3, "relu")
        b3 = g.conv_bn_act(x, f"{name}.b3.0", cin, r5, 1, "relu")
        b3 = g.conv_bn_act(b3, f"{name}.b3.1", r5, c5, 5, "relu")
        b4 = g.op("MaxPool", [x], f"{name}.b4.pool", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
        b4 = g.conv_bn_act(b4, f"{name}.b4.1", cin, cp, 1, "relu")
        x = g.op("Concat", [b1, b2, b3, b4], f"{name}.concat", axis=1)
        cat = c1 + c3 + c5 + cp
        cin = c(128 * scale)
        x = g.conv_bn_act(x, f"{name}.mix", cat, cin, 1, "relu")
        if m + 1 < num_modules:
            x = g.op("MaxPool", [x], f"{name}.down", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    x = g.pool_flatten(x, "avgpool")
    x = g.gemm(x, "fc", cin, num_classes)
    return g.build([x], batch)


# --------------------------------------------------------------------------------------------------
# MLP


def mlp(
    in_features: int = 32,
    hidden: Sequence[int] = (64, 64, 32),
    out_features: int = 10,
    activation: str = "mixed",
    batch: Batch = "N",
    seed: int = 0,
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """Multi-layer perceptron on [batch, in_features].

    Layers alternate between MatMul+Add (even index, weight [in, out]) and Gemm (odd index, weight
    [out, in], transB=1). ``activation`` is "relu", "gelu" or "mixed" (relu, gelu, relu, ...).
    """
    if activation not in ("relu", "gelu", "mixed"):
        raise ValueError("activation must be relu, gelu or mixed")
    g = GraphBuilder("mlp", seed, opset)
    x = g.add_input("input", [batch, in_features])
    dims = [in_features, *hidden, out_features]
    for i in range(len(dims) - 1):
        layer = g.matmul_add if i % 2 == 0 else g.gemm
        x = layer(x, f"fc{i}", dims[i], dims[i + 1])
        if i + 2 < len(dims):
            act = activation if activation != "mixed" else ("relu", "gelu")[i % 2]
            x = g.act(x, act, f"fc{i}")
    return g.build([x], batch)


# --------------------------------------------------------------------------------------------------
# Transformer encoder block


def transformer_block(
    dim: int = 64,
    num_heads: int = 4,
    mlp_ratio: float = 4.0,
    num_blocks: int = 1,
    seq_len: int | str = 16,
    batch: Batch = "N",
    seed: int = 0,
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """Pre-norm transformer encoder blocks on [batch, seq_len, dim].

    Each block: LayerNormalization -> Q/K/V MatMul+Add -> Reshape [0, 0, heads, head_dim] ->
    Transpose -> MatMul(Q, K^T) -> Mul(1/sqrt(head_dim)) -> Softmax -> MatMul(V) -> Transpose ->
    Reshape -> output projection -> residual Add -> LayerNormalization -> MatMul+Add -> Gelu ->
    MatMul+Add -> residual Add. ``seq_len`` may be symbolic (a str).
    """
    if dim % num_heads:
        raise ValueError("dim must be divisible by num_heads")
    head_dim = dim // num_heads
    hidden = int(dim * mlp_ratio)
    g = GraphBuilder("transformer", seed, opset)
    x = g.add_input("input", [batch, seq_len, dim])
    split_heads = g.const("const.split_heads_shape", np.array([0, 0, num_heads, head_dim], np.int64))
    merge_heads = g.const("const.merge_heads_shape", np.array([0, 0, dim], np.int64))
    scale = g.const("const.attn_scale", np.array(1.0 / math.sqrt(head_dim), np.float32))

    def layernorm(v: str, name: str) -> str:
        gamma = g.const(f"{name}.weight", g.rng.uniform(0.5, 1.5, dim).astype(np.float32))
        beta = g.const(f"{name}.bias", g.rng.normal(0.0, 0.1, dim).astype(np.float32))
        return g.op("LayerNormalization", [v, gamma, beta], name, axis=-1, epsilon=1e-5)

    for b in range(num_blocks):
        name = f"blocks.{b}"
        y = layernorm(x, f"{name}.norm1")
        heads = {}
        for proj, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
            p = g.matmul_add(y, f"{name}.attn.{proj}", dim, dim)
            p = g.op("Reshape", [p, split_heads], f"{name}.attn.{proj}.split_heads")
            heads[proj] = g.op("Transpose", [p], f"{name}.attn.{proj}.transpose", perm=perm)
        scores = g.op("MatMul", [heads["q"], heads["k"]], f"{name}.attn.scores")
        scores = g.op("Mul", [scores, scale], f"{name}.attn.scale")
        probs = g.op("Softmax", [scores], f"{name}.attn.softmax", axis=-1)
        ctx = g.op("MatMul", [probs, heads["v"]], f"{name}.attn.context")
        ctx = g.op("Transpose", [ctx], f"{name}.attn.context.transpose", perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merge_heads], f"{name}.attn.merge_heads")
        ctx = g.matmul_add(ctx, f"{name}.attn.proj", dim, dim)
        x = g.op("Add", [x, ctx], f"{name}.residual1")
        y = layernorm(x, f"{name}.norm2")
        y = g.matmul_add(y, f"{name}.mlp.fc1", dim, hidden)
        y = g.act(y, "gelu", f"{name}.mlp")
        y = g.matmul_add(y, f"{name}.mlp.fc2", hidden, dim)
        x = g.op("Add", [x, y], f"{name}.residual2")
    return g.build([x], batch)


# --------------------------------------------------------------------------------------------------
# VGG

_VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def vgg(
    config: str = "vgg11",
    width: float = 0.125,
    fc_dims: Sequence[int] = (256, 256),
    num_classes: int = 10,
    image_size: Size = 32,
    batch_norm: bool = False,
    fc_only: bool = False,
    in_channels: int = 3,
    batch: Batch = "N",
    seed: int = 0,
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """VGG: 3x3 Conv(+BN)-Relu stacks with MaxPool, Flatten, large fully connected Gemm layers.

    Full VGG-16 is ``vgg("vgg16", width=1.0, fc_dims=(4096, 4096), num_classes=1000,
    image_size=224)`` (138M params, FC layers 25088x4096, 4096x4096, 4096x1000). With
    ``fc_only=True`` the model is the classifier alone, on input [batch, C*H*W] of what the
    convolutions would produce (e.g. 25088 at full size) - large FC layers without conv cost.
    Convs have biases (no BN) unless ``batch_norm``.
    """
    if config not in _VGG_CONFIGS:
        raise ValueError(f"config must be one of {sorted(_VGG_CONFIGS)}")
    h, w = _hw(image_size)
    layers = _VGG_CONFIGS[config]
    n_pools = layers.count("M")
    out_h, out_w = h >> n_pools, w >> n_pools
    if out_h < 1 or out_w < 1:
        raise ValueError(f"image_size must be at least {2**n_pools}")
    last_c = _divisible([v for v in layers if v != "M"][-1] * width)
    g = GraphBuilder(f"{config}{'_bn' if batch_norm else ''}{'_fc' if fc_only else ''}", seed, opset)
    if fc_only:
        features = last_c * out_h * out_w
        x = g.add_input("input", [batch, features])
    else:
        x = g.add_input("input", [batch, in_channels, h, w])
        cin = in_channels
        for i, v in enumerate(layers):
            name = f"features.{i}"
            if v == "M":
                x = g.op("MaxPool", [x], name, kernel_shape=[2, 2], strides=[2, 2])
                continue
            cout = _divisible(v * width)
            if batch_norm:
                x = g.conv_bn_act(x, name, cin, cout, 3, "relu")
            else:
                x = g.act(g.conv(x, name, cin, cout, 3, bias=True), "relu", name)
            cin = cout
        x = g.op("Flatten", [x], "flatten", axis=1)
        features = cin * out_h * out_w
    dims = [features, *fc_dims]
    for j in range(len(fc_dims)):
        x = g.gemm(x, f"classifier.{j}", dims[j], dims[j + 1])
        x = g.act(x, "relu", f"classifier.{j}")
    x = g.gemm(x, "classifier.out", dims[-1], num_classes)
    return g.build([x], batch)


def vgg16(batch: Batch = "N", seed: int = 0, opset: int = DEFAULT_OPSET, **kw) -> onnx.ModelProto:
    """Full-size VGG-16 (138M params, 224x224, 1000 classes), for benchmarks."""
    args = dict(config="vgg16", width=1.0, fc_dims=(4096, 4096), num_classes=1000, image_size=224)
    args.update(kw)
    return vgg(batch=batch, seed=seed, opset=opset, **args)


# --------------------------------------------------------------------------------------------------
# YOLOv8


def yolo(
    width: float = 0.125,
    depth: float = 0.33,
    num_classes: int = 8,
    reg_max: int = 16,
    image_size: Size = 64,
    max_channels: int = 1024,
    in_channels: int = 3,
    batch: Batch = "N",
    seed: int = 0,
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """YOLOv8-style detector: Conv-BN-SiLU (x * Sigmoid(x)), C2f blocks (Conv, Split into 2,
    bottlenecks, Concat, Conv), SPPF (three chained MaxPool5 + Concat), FPN/PAN neck with Resize
    (nearest x2) + Concat, and three detection heads (P3, P4, P5; outputs ``p3``, ``p4``, ``p5``
    of shape [batch, 4*reg_max + num_classes, H/s, W/s] for strides 8, 16, 32).

    yolov8n is width=0.25, depth=0.33, num_classes=80 at 640x640 (3.2M params); yolov8s is
    width=0.5. ``image_size`` must be a multiple of 32.
    """
    h, w = _hw(image_size)
    if h % 32 or w % 32:
        raise ValueError("yolo image_size must be a multiple of 32")
    ch = lambda v: _divisible(min(v, max_channels) * width)  # noqa: E731
    nd = lambda n: max(round(n * depth), 1)  # noqa: E731
    g = GraphBuilder("yolov8", seed, opset)
    x = g.add_input("images", [batch, in_channels, h, w])
    up_scales = g.const("const.upsample_scales", np.array([1.0, 1.0, 2.0, 2.0], np.float32))

    def conv(v: str, name: str, cin: int, cout: int, k: int, s: int = 1) -> str:
        return g.conv_bn_act(v, name, cin, cout, k, "silu", stride=s)

    def c2f(v: str, name: str, cin: int, cout: int, n: int, shortcut: bool) -> str:
        hid = cout // 2
        v = conv(v, f"{name}.cv1", cin, 2 * hid, 1)
        halves = g.shared_const(f"const.split_{hid}", np.array([hid, hid], np.int64))
        parts = list(g.op("Split", [v, halves], f"{name}.split", n_out=2, axis=1))
        for i in range(n):
            y = conv(parts[-1], f"{name}.m.{i}.cv1", hid, hid, 3)
            y = conv(y, f"{name}.m.{i}.cv2", hid, hid, 3)
            if shortcut:
                y = g.op("Add", [parts[-1], y], f"{name}.m.{i}.add")
            parts.append(y)
        v = g.op("Concat", parts, f"{name}.concat", axis=1)
        return conv(v, f"{name}.cv2", (2 + n) * hid, cout, 1)

    def sppf(v: str, name: str, cin: int, cout: int) -> str:
        hid = cin // 2
        v = conv(v, f"{name}.cv1", cin, hid, 1)
        pooled = [v]
        for i in range(3):
            pooled.append(
                g.op(
                    "MaxPool",
                    [pooled[-1]],
                    f"{name}.m.{i}",
                    kernel_shape=[5, 5],
                    strides=[1, 1],
                    pads=[2] * 4,
                )
            )
        v = g.op("Concat", pooled, f"{name}.concat", axis=1)
        return conv(v, f"{name}.cv2", 4 * hid, cout, 1)

    def upsample(v: str, name: str) -> str:
        return g.op(
            "Resize",
            [v, "", up_scales],
            name,
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )

    c1, c2, c3, c4, c5 = ch(64), ch(128), ch(256), ch(512), ch(1024)
    # backbone
    x = conv(x, "model.0", in_channels, c1, 3, 2)
    x = conv(x, "model.1", c1, c2, 3, 2)
    x = c2f(x, "model.2", c2, c2, nd(3), True)
    x = conv(x, "model.3", c2, c3, 3, 2)
    p3 = c2f(x, "model.4", c3, c3, nd(6), True)
    x = conv(p3, "model.5", c3, c4, 3, 2)
    p4 = c2f(x, "model.6", c4, c4, nd(6), True)
    x = conv(p4, "model.7", c4, c5, 3, 2)
    x = c2f(x, "model.8", c5, c5, nd(3), True)
    p5 = sppf(x, "model.9", c5, c5)
    # neck (FPN top-down, PAN bottom-up)
    x = upsample(p5, "model.10")
    x = g.op("Concat", [x, p4], "model.11", axis=1)
    n12 = c2f(x, "model.12", c5 + c4, c4, nd(3), False)
    x = upsample(n12, "model.13")
    x = g.op("Concat", [x, p3], "model.14", axis=1)
    out3 = c2f(x, "model.15", c4 + c3, c3, nd(3), False)
    x = conv(out3, "model.16", c3, c3, 3, 2)
    x = g.op("Concat", [x, n12], "model.17", axis=1)
    out4 = c2f(x, "model.18", c3 + c4, c4, nd(3), False)
    x = conv(out4, "model.19", c4, c4, 3, 2)
    x = g.op("Concat", [x, p5], "model.20", axis=1)
    out5 = c2f(x, "model.21", c4 + c5, c5, nd(3), False)
    # detection heads: a box branch (4*reg_max) and a class branch per scale, concatenated
    box_c = max(16, c3 // 4, 4 * reg_max)
    cls_c = max(c3, min(num_classes, 100))
    outputs = []
    for i, (feat, cin) in enumerate(((out3, c3), (out4, c4), (out5, c5))):
        name = f"model.22.{i}"
        box = conv(feat, f"{name}.cv2.0", cin, box_c, 3)
        box = conv(box, f"{name}.cv2.1", box_c, box_c, 3)
        box = g.conv(box, f"{name}.cv2.2", box_c, 4 * reg_max, 1, bias=True)
        cls = conv(feat, f"{name}.cv3.0", cin, cls_c, 3)
        cls = conv(cls, f"{name}.cv3.1", cls_c, cls_c, 3)
        cls = g.conv(cls, f"{name}.cv3.2", cls_c, num_classes, 1, bias=True)
        outputs.append(g.op("Concat", [box, cls], f"p{i + 3}", axis=1))
    return g.build(outputs, batch)


def yolov8n(
    num_classes: int = 80,
    image_size: Size = 640,
    batch: Batch = "N",
    seed: int = 0,
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """YOLOv8n-sized detector (3.2M params at 80 classes), for benchmarks."""
    return yolo(
        width=0.25,
        depth=0.33,
        num_classes=num_classes,
        image_size=image_size,
        batch=batch,
        seed=seed,
        opset=opset,
    )


# --------------------------------------------------------------------------------------------------
# registry

BUILDERS: dict[str, Callable[..., onnx.ModelProto]] = {
    "resnet": resnet,
    "resnet50": resnet50,
    "mobilenet": mobilenet,
    "branchy": branchy,
    "mlp": mlp,
    "transformer_block": transformer_block,
    "vgg": vgg,
    "vgg16": vgg16,
    "yolo": yolo,
    "yolov8n": yolov8n,
}


def build(name: str, **kwargs) -> onnx.ModelProto:
    """Build the registered architecture ``name`` with builder keyword arguments ``kwargs``."""
    try:
        builder = BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(BUILDERS))}") from None
    return builder(**kwargs)
