"""The ``com.onnxcomp`` op format: the compressed-weight ops every part of onnxcomp speaks (runtime/OPS.md).

One module per op in :mod:`.defs` (as runtime/src has one .cc per op), each registering an :class:`OpSpec` record in
:data:`OPS`: schema, attributes, function body builder, numpy reference decoder, validator, cost.

- :mod:`.packing`: bit packing, EIE sparse rows, zero runs, codebook lookup (numpy);
- :mod:`.huffman`: the canonical Huffman stream of HuffmanDecode (numpy encoder and decoder);
- :mod:`.body`: :class:`~.body.FunctionBody`, the builder of the model-local function bodies;
- :func:`decode_model`: a compressed model with every op decoded into standard ops (the numpy reference);
- :func:`validate_model`: the native runtime's checks of every op node, run when a model is loaded;
- :func:`emit`, :func:`ensure_function`, :func:`inline_functions`: writing the ops into an onnx-graphsurgeon graph;
  :func:`raise_opset`: the ai.onnx opset the function bodies need (the share passes' precondition).

Adding an op: a module here with its ``SPEC = register_op(OpSpec(...))``, listed in ``_OP_MODULES`` below, and
its section in runtime/OPS.md. Heavy libraries (numpy, onnx) are imported inside the functions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .decode import decode_model
from .emit import (
    MIN_OPSET,
    UPGRADE_OPSET,
    emit,
    ensure_domain,
    ensure_function,
    inline_functions,
    raise_opset,
)
from .packing import (
    SparseRows,
    best_sparse,
    block_count,
    decode_codebook,
    eie_decode,
    eie_encode,
    max_zero_run,
    pack_codes,
    packed_row_bytes,
    run_length_decode,
    run_length_encode,
    sparse_bytes,
    ternary_lut,
    unpack_codes,
)
from .spec import (
    DOMAIN,
    OPS,
    VERSION,
    Attr,
    Input,
    OpSpec,
    function_proto,
    function_protos,
    get_op,
    node_attributes,
    register_op,
)
from .validate import validate_model

if TYPE_CHECKING:
    import onnx

__all__ = [
    "DOMAIN",
    "MIN_OPSET",
    "OPS",
    "UPGRADE_OPSET",
    "VERSION",
    "Attr",
    "Input",
    "OpSpec",
    "SparseRows",
    "best_sparse",
    "block_count",
    "decode_codebook",
    "decode_model",
    "eie_decode",
    "eie_encode",
    "emit",
    "ensure_domain",
    "ensure_function",
    "function_proto",
    "function_protos",
    "get_op",
    "inline_functions",
    "is_weight_op",
    "max_zero_run",
    "node_attributes",
    "pack_codes",
    "packed_row_bytes",
    "raise_opset",
    "register_op",
    "run_length_decode",
    "run_length_encode",
    "sparse_bytes",
    "ternary_lut",
    "unpack_codes",
    "uses_ops",
    "validate_model",
]

# the op modules (ops/defs/), each registering its record (helpers before the ops whose bodies call them)
_OP_MODULES = (
    "unpack_codes",
    "codebook_matmul",
    "codebook_conv",
    "sparse_codebook_matmul",
    "ternary_matmul",
    "huffman_decode",
    "run_length_decode",
    "codebook_gather",
    "codebook_decode",
    "winograd_conv",
)
for _name in _OP_MODULES:
    importlib.import_module(f"{__name__}.defs.{_name}")


def uses_ops(model: onnx.ModelProto) -> bool:
    """True when the model has com.onnxcomp nodes: in its graph, in If/Loop/Scan bodies, or in functions of
    other domains (the com.onnxcomp functions themselves only define the ops)."""

    def in_graph(graph: onnx.GraphProto) -> bool:
        for node in graph.node:
            if node.domain == DOMAIN:
                return True
            for attr in node.attribute:
                if attr.g.node and in_graph(attr.g):
                    return True
                if any(in_graph(g) for g in attr.graphs):
                    return True
        return False

    if in_graph(model.graph):
        return True
    return any(f.domain != DOMAIN and any(n.domain == DOMAIN for n in f.node) for f in model.functions)


def is_weight_op(op_type: str) -> bool:
    """A com.onnxcomp op computing with a compressed weight (as opposed to a decode op, a helper, or WinogradConv's
    float weights)."""
    spec = OPS.get(op_type)
    return spec is not None and spec.computes is not None and spec.compressed
