"""The op record: one :class:`OpSpec` per com.onnxcomp op, registered in :data:`OPS` by op type.

A record holds everything the Python side knows about an op (runtime/OPS.md is the contract it implements):

- its schema: inputs (name, element type, whether optional, whether an activation) and attributes (name, kind,
  required or default, valid range);
- ``function``: the builder of its model-local function body (standard ONNX ops, any ai.onnx >= 16);
- ``helpers``: the function-only helpers the body calls (added to a model with it);
- ``reference``: the numpy reference decoder. Weight ops (``computes`` = the standard op they equal) return
  ``(weight, bias)``; decode ops (``computes`` None) return their output tensor;
- ``validate``: the checks the native runtime makes (attributes, shapes, code ranges, layouts), run on load;
- ``code_input``: the packed-code input and its layout (bits, codes per row), which the Huffman store may code
  as zero runs;
- ``flops``: FLOPs per inference for the cost model (None: computed from constants, folded at load);
- ``compressed``: whether its weight input is compressed (the Huffman store and share passes look only at those);
- ``activation``: a fused activation the decoded standard op is followed by (WinogradConv).

Values handed to ``reference`` and ``validate`` are numpy arrays for constant inputs and None for the rest
(activations, absent optional inputs); ``shapes`` are static input shapes where the model records them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

DOMAIN = "com.onnxcomp"
VERSION = 1  # the com.onnxcomp opset version the models import

# TensorProto element types of the op inputs
FLOAT, UINT8, INT32, INT64, FLOAT16 = 1, 2, 6, 7, 10
TYPE_NAMES = {FLOAT: "float32", UINT8: "uint8", INT32: "int32", INT64: "int64", FLOAT16: "float16"}
MAX_DIM = 1 << 40  # the native runtime's bound on any size derived from attributes


@dataclasses.dataclass(frozen=True)
class Input:
    name: str
    dtype: int  # TensorProto element type
    optional: bool = False
    activation: bool = False  # a run-time tensor (X), not a weight
    also: tuple[int, ...] = ()  # other element types it may have (a codebook: float16 too)

    @property
    def dtypes(self) -> tuple[int, ...]:
        """Every element type the input may have (``dtype`` first)."""
        return (self.dtype, *self.also)


def codebook_input() -> Input:
    """The ``codebook`` input of the codebook ops: float32, or float16 (half the stored bytes; the bodies Cast it to
    float and the kernels convert it once, so a float16 codebook decodes to exactly its float32 values)."""
    return Input("codebook", FLOAT, also=(FLOAT16,))


@dataclasses.dataclass(frozen=True)
class Attr:
    name: str
    kind: str = "int"  # "int", "ints" or "float"
    required: bool = False
    lo: int = 0  # valid range of an int attribute (of every element of an ints one)
    hi: int = MAX_DIM


Values = Sequence[Any]  # per input: a numpy array (constant) or None
Shapes = Sequence["tuple[int, ...] | None"]


@dataclasses.dataclass(frozen=True)
class OpSpec:
    name: str
    inputs: tuple[Input, ...]
    attributes: tuple[Attr, ...]
    function: Callable[[int], onnx.FunctionProto]
    helpers: tuple[str, ...] = ()
    reference: Callable[[dict[str, Any], Values], Any] | None = None
    computes: str | None = None  # the standard op a weight op equals ("MatMul", "Conv"); None: a decode op
    standard_attrs: tuple[str, ...] = ()  # attributes the standard op takes over
    validate: Callable[[dict[str, Any], Values, Shapes], None] | None = None
    code_input: tuple[int, Callable[[dict[str, Any]], tuple[int, int]]] | None = None
    flops: Callable[[dict[str, Any], Shapes, Shapes], int] | None = None
    native: bool = False  # a kernel in libonnxcomp_ops.so (else onnxruntime folds the body at load)
    compressed: bool = True  # its weight is stored compressed (False: WinogradConv's float weights)
    # an activation fused after the standard op: attributes -> (leaky_alpha, clip_min, clip_max), or None
    activation: Callable[[dict[str, Any]], tuple[float, float, float] | None] | None = None
    helper_only: bool = False  # only called from other bodies, never a graph node (UnpackCodes)
    # the body of the op's block codebooks (attribute ``block_size``, default: all input features): written into a
    # model only when one of its nodes has the attribute, so that models without blocks keep the plain body
    block_function: Callable[[int], onnx.FunctionProto] | None = None


OPS: dict[str, OpSpec] = {}


def register_op(spec: OpSpec) -> OpSpec:
    if spec.name in OPS:
        raise ValueError(f"com.onnxcomp op {spec.name!r} registered twice")
    OPS[spec.name] = spec
    return spec


def get_op(op_type: str) -> OpSpec:
    try:
        return OPS[op_type]
    except KeyError as err:
        raise ValueError(f"no com.onnxcomp op {op_type!r}; ops: {', '.join(OPS)}") from err


def function_proto(op_type: str, opset: int, blocks: bool = False) -> onnx.FunctionProto:
    """The model-local function of ``op_type`` for a model importing ai.onnx ``opset`` (``blocks``: the body that
    also decodes block codebooks, for ops that have one)."""
    spec = get_op(op_type)
    if blocks and spec.block_function is not None:
        return spec.block_function(opset)
    return spec.function(opset)


def function_protos(op_type: str, opset: int, blocks: bool = False) -> list[onnx.FunctionProto]:
    """The function of ``op_type`` and of the helpers it calls: what a model using the op must carry."""
    return [function_proto(h, opset) for h in get_op(op_type).helpers] + [function_proto(op_type, opset, blocks)]


def node_attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """A NodeProto's attributes as Python values."""
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def prod(values: Any) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out
