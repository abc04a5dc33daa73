"""Corrupt com.onnxcomp models are refused on load (exit 2, naming the node and the problem), as the native
runtime refuses them; every model the passes write is valid.

Corruption classes (issue 9, item 5): truncated codes, bits out of range, sparse entries past the row, corrupt
Huffman streams and tables, wrong conv ``group`` values; plus the runtime's other checks (codebook shape, codes
beyond a narrow codebook, ternary code 3, zero runs that do not add up, unknown ops).
"""

from __future__ import annotations

import functools
import re

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from models import builders
from onnxcomp import io, ops
from onnxcomp.api import optimize
from onnxcomp.cli import main
from onnxcomp.errors import InputError
from tests.support.run import MODELS_DIR


@functools.cache
def _compressed(kind: str) -> onnx.ModelProto:
    """Models written by the passes, one per op family."""
    if kind == "conv":
        return optimize(str(MODELS_DIR / "digits_cnn.onnx"), "kmeans(bits=4)")[0]
    mlp = builders.mlp(in_features=512, hidden=(512,))
    spec = {
        "dense": "kmeans(bits=3,sparse=never)",
        "sparse": "prune-weights(ratio=0.95),kmeans(bits=4,sparse=always)",
        "huffman": "prune-weights(ratio=0.95),kmeans(bits=4,sparse=never,huffman=store)",
        "ternary": "ternary",
    }[kind]
    return optimize(mlp, spec)[0]


def _copy(kind: str) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(_compressed(kind))
    return m


def _node(model: onnx.ModelProto, op_type: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == op_type)


def _init(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def _set_init(model: onnx.ModelProto, name: str, values: np.ndarray) -> None:
    _init(model, name).CopyFrom(numpy_helper.from_array(np.ascontiguousarray(values), name))


def _edit_init(model: onnx.ModelProto, name: str, fn) -> None:
    _set_init(model, name, fn(numpy_helper.to_array(_init(model, name)).copy()))


def _set_attr(model: onnx.ModelProto, node: onnx.NodeProto, name: str, value) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend([*kept, onnx.helper.make_attribute(name, value)])


def truncated_codes(m):
    n = _node(m, "CodebookMatMul")
    _edit_init(m, n.input[2], lambda c: c[:, :-1])
    return n, "codes must have shape"


def truncated_code_rows(m):
    n = _node(m, "CodebookMatMul")
    _edit_init(m, n.input[2], lambda c: c[:-3])
    return n, "codes must have shape"


def bits_nine(m):
    n = _node(m, "CodebookMatMul")
    _set_attr(m, n, "bits", 9)
    return n, "bits=9 is out of range [1, 8]"


def bits_missing(m):
    n = _node(m, "CodebookMatMul")
    kept = [a for a in n.attribute if a.name != "bits"]
    del n.attribute[:]
    n.attribute.extend(kept)
    return n, "attribute 'bits' (int) is required"


def codebook_shape(m):
    n = _node(m, "CodebookMatMul")
    _edit_init(m, n.input[1], lambda cb: cb[:, :1].repeat(2, 0))
    return n, "codebook must have shape"


def code_beyond_narrow_codebook(m):
    n = _node(m, "CodebookMatMul")
    _edit_init(m, n.input[1], lambda cb: cb[:, :3])  # 3 entries, codes up to 7
    return n, "out of range for a codebook of 3 entries"


def sparse_deltas_out_of_range(m):
    n = _node(m, "SparseCodebookMatMul")
    _edit_init(m, n.input[3], lambda d: np.full_like(d, 0xFF))
    return n, "decodes to column"


def sparse_row_ptr_decreasing(m):
    n = _node(m, "SparseCodebookMatMul")

    def edit(p):
        p[5] = p[4] - 1
        return p

    _edit_init(m, n.input[2], edit)
    return n, "row_ptr must be non-decreasing"


def sparse_deltas_truncated(m):
    n = _node(m, "SparseCodebookMatMul")
    _edit_init(m, n.input[3], lambda d: d[: d.size // 2])
    return n, "deltas holds"


def huffman_stream_truncated(m):
    n = _node(m, "HuffmanDecode")
    _edit_init(m, n.input[0], lambda s: s[: s.size // 2])
    return n, "stream"


def huffman_stream_flipped(m):
    n = _node(m, "HuffmanDecode")

    def edit(s):
        s[: s.size // 2] ^= 0xA5
        return s

    _edit_init(m, n.input[0], edit)
    return n, "Huffman"


def huffman_table_lengths(m):
    n = _node(m, "HuffmanDecode")

    def edit(t):
        t[1, 0] = 17
        return t

    _edit_init(m, n.input[1], edit)
    return n, "code lengths must be 1..16"


def huffman_table_not_prefix(m):
    n = _node(m, "HuffmanDecode")

    def edit(t):
        t[1, :] = 1  # more than two codes of length 1
        return t

    _edit_init(m, n.input[1], edit)
    return n, "Kraft"


def huffman_offsets(m):
    n = _node(m, "HuffmanDecode")
    _edit_init(m, n.input[2], lambda o: o[:-1])
    return n, "offsets must have shape"


def run_length_count(m):
    n = _node(m, "RunLengthDecode")
    attrs = ops.node_attributes(n)
    _set_attr(m, n, "shape", [attrs["shape"][0] + 1, attrs["shape"][1]])
    return n, "zero-run symbols expand to"


def conv_group(m):
    n = next(x for x in m.graph.node if x.op_type == "CodebookConv" and ops.node_attributes(x)["weight_shape"][0] % 3)
    _set_attr(m, n, "group", 3)
    return n, "not divisible by group=3"


def conv_group_channels(m):
    n = next(
        x for x in m.graph.node if x.op_type == "CodebookConv" and ops.node_attributes(x)["weight_shape"][0] % 2 == 0
    )
    _set_attr(m, n, "group", 2)
    return n, "channels, but weight_shape[1]*group"


def conv_kernel_shape(m):
    n = _node(m, "CodebookConv")
    _set_attr(m, n, "kernel_shape", [5, 5])
    return n, "does not match weight_shape"


def ternary_code3(m):
    n = _node(m, "TernaryMatMul")
    _edit_init(m, n.input[2], lambda c: c | np.uint8(0x03))
    return n, "invalid ternary code 3"


def unknown_op(m):
    n = _node(m, "CodebookMatMul")
    n.op_type = "CodebookMatMulV2"
    return n, "unknown op"


CORRUPTIONS = {
    "truncated codes": ("dense", truncated_codes),
    "truncated code rows": ("dense", truncated_code_rows),
    "bits=9": ("dense", bits_nine),
    "bits missing": ("dense", bits_missing),
    "codebook shape": ("dense", codebook_shape),
    "code beyond a narrow codebook": ("dense", code_beyond_narrow_codebook),
    "sparse deltas out of range": ("sparse", sparse_deltas_out_of_range),
    "sparse row_ptr decreasing": ("sparse", sparse_row_ptr_decreasing),
    "sparse deltas truncated": ("sparse", sparse_deltas_truncated),
    "Huffman stream truncated": ("huffman", huffman_stream_truncated),
    "Huffman stream corrupt": ("huffman", huffman_stream_flipped),
    "Huffman table code lengths": ("huffman", huffman_table_lengths),
    "Huffman table not a prefix code": ("huffman", huffman_table_not_prefix),
    "Huffman chunk offsets": ("huffman", huffman_offsets),
    "zero runs do not add up": ("huffman", run_length_count),
    "conv group does not divide M": ("conv", conv_group),
    "conv group does not fit the channels": ("conv", conv_group_channels),
    "conv kernel_shape": ("conv", conv_kernel_shape),
    "ternary code 3": ("ternary", ternary_code3),
    "unknown op": ("dense", unknown_op),
}


@pytest.mark.parametrize("kind", ["dense", "sparse", "huffman", "conv", "ternary"])
def test_models_the_passes_write_are_valid(kind):
    model = _compressed(kind)
    count = ops.validate_model(model)
    assert count == sum(n.domain == ops.DOMAIN for n in model.graph.node) > 0
    assert io.as_model(model) is model


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_model_is_refused_naming_the_node(case):
    kind, corrupt = CORRUPTIONS[case]
    model = _copy(kind)
    node, message = corrupt(model)
    with pytest.raises(ValueError, match=f"node '{node.name}'") as err:
        ops.validate_model(model)
    assert message in str(err.value)
    with pytest.raises(InputError, match=re.escape(message)):
        optimize(model)


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_cli_exits_2_on_a_corrupt_model(case, tmp_path, capsys):
    kind, corrupt = CORRUPTIONS[case]
    model = _copy(kind)
    node, message = corrupt(model)
    bad, good = tmp_path / "bad.onnx", tmp_path / "good.onnx"
    onnx.save(model, str(bad))
    onnx.save(_compressed(kind), str(good))
    commands = [["optimize", bad, tmp_path / "out.onnx"], ["verify", good, bad], ["inspect", bad], ["bench", bad]]
    for args in commands:
        code = main([str(a) for a in args])
        err = capsys.readouterr().err
        assert code == 2, (args[0], err)
        assert f"node '{node.name}'" in err and message in err, (args[0], err)
        assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out.onnx").exists()
