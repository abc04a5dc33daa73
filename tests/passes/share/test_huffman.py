"""huffman: lossless and smaller, zero runs of pruned layers, the store pays for the decoder body, EIE layout kept."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from models import builders
from onnxcomp import io, ops
from onnxcomp.api import optimize
from tests.support.compressed import (
    assert_exact,
    custom_nodes,
    decoded_weights,
)


def _feeds(model: onnx.ModelProto, batch: int = 3, seed: int = 1) -> dict[str, np.ndarray]:
    return builders.random_inputs(model, batch=batch, seed=seed)


def test_huffman_pass_is_lossless_and_smaller():
    model = builders.mlp(in_features=64, hidden=(256, 128))
    packed, _ = optimize(model, "prune-weights(ratio=0.8),kmeans(bits=4,sparse=never)")
    coded, report = optimize(packed, "huffman")
    assert report.passes[0].counters["tensors_coded"] >= 2
    assert "HuffmanDecode" in {n.op_type for n in custom_nodes(coded)}
    assert len(io.serialize(coded)) < 0.7 * len(io.serialize(packed))
    assert_exact(packed, coded, _feeds(model))
    # the reported Huffman size is what the stored form saves
    layers = report.passes[0].layers
    assert (
        sum(r.extra["bytes_packed"] - r.extra["bytes_huffman"] for r in layers)
        == report.passes[0].counters["bytes_saved"]
    )


@pytest.mark.parametrize("kind", ["conv", "matmul"])
def test_huffman_codes_zero_runs_of_pruned_layers(kind):
    # a 95%-pruned layer: its packed codes are coded as (zero run, code) symbols, which cost less than
    # Huffman over the packed bytes (a byte symbol cannot cost less than one bit)
    from onnxcomp.passes.share import huffman as huffman_pass

    from onnxcomp.ops import huffman as _huffman

    model = builders.mlp(in_features=256, hidden=(512,)) if kind == "matmul" else builders.vgg(width=0.25)
    pruned, _ = optimize(model, "prune-weights(ratio=0.95)")
    packed, _ = optimize(pruned, "kmeans(bits=4,sparse=never)")
    coded, report = optimize(packed, "huffman")
    op_types = [n.op_type for n in custom_nodes(coded)]
    assert "RunLengthDecode" in op_types
    assert_exact(packed, coded, _feeds(model))
    np.testing.assert_array_equal(
        np.concatenate([t.ravel() for t in decoded_weights(coded).values()]),
        np.concatenate([t.ravel() for t in decoded_weights(packed).values()]),
    )
    # the chosen form is smaller than Huffman over the packed bytes, by what huffman_form says
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in packed.graph.initializer}
    node = max(
        (n for n in custom_nodes(packed) if ops.get_op(n.op_type).code_input),
        key=lambda n: inits[n.input[2]].size,
    )
    codes = inits[node.input[2]]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    layout = ops.get_op(node.op_type).code_input[1](attrs)
    size, runs = huffman_pass.huffman_form(codes, layout)
    assert runs is not None
    assert size < _huffman.coded_size(codes)
    assert report.passes[0].counters["bytes_saved"] > 0


def test_huffman_store_pays_for_the_decoder_body():
    # one small pruned layer: Huffman saves a few hundred bytes of codes, less than the ~3.5 kB function body
    # of HuffmanDecode the model would have to carry, so the store leaves it packed and says why
    model = builders.mlp(in_features=48, hidden=(64,))
    pruned, _ = optimize(model, "prune-weights(ratio=0.9)")
    packed, _ = optimize(pruned, "kmeans(bits=4,sparse=never)")
    coded, report = optimize(packed, "huffman(min_gain=1)")
    assert "HuffmanDecode" not in {n.op_type for n in custom_nodes(coded)}
    assert not any(f.name == "HuffmanDecode" for f in coded.functions)
    assert report.passes[0].skips and "function body" in report.passes[0].skips[0].reason
    assert len(io.serialize(coded)) <= len(io.serialize(packed))
    # huffman=store decides the same way, and still reports the per-layer Huffman size
    stored, rep = optimize(pruned, "kmeans(bits=4,sparse=never,huffman=store)")
    assert "HuffmanDecode" not in {n.op_type for n in custom_nodes(stored)}
    rows = rep.passes[0].layers
    assert any(r.extra["bytes_huffman"] < r.extra["bytes_packed"] for r in rows)
    assert all(r.extra["bytes_stored"] == r.extra["bytes_packed"] for r in rows)
    # a large layer pays for it: coded, and its stored bytes are what the file saves
    big = builders.mlp(in_features=512, hidden=(512,))
    out, rep = optimize(big, "prune-weights(ratio=0.9),kmeans(bits=4,sparse=never,huffman=store)")
    assert "HuffmanDecode" in {n.op_type for n in custom_nodes(out)}
    rows = rep.passes[-1].layers
    assert any(r.extra["bytes_stored"] < r.extra["bytes_packed"] for r in rows)
    assert rep.passes[-1].counters["bytes_stored"] == sum(r.extra["bytes_stored"] for r in rows)


def test_huffman_store_keeps_the_eie_layout_of_very_sparse_matmuls():
    # the zero-run form would make the dense layout about as small, but the EIE layout is what the native
    # runtime runs fastest (it skips the zeros) and what decodes at load in memory proportional to the nonzeros
    model = builders.mlp(in_features=512, hidden=(512,))
    out, _ = optimize(model, "prune-weights(ratio=0.96),kmeans(bits=5,huffman=store)")
    op_types = {n.op_type for n in custom_nodes(out)}
    assert "SparseCodebookMatMul" in op_types and "HuffmanDecode" in op_types
    assert "RunLengthDecode" not in op_types


def test_zero_runs_of_ternary_codes():
    # TernaryMatMul codes are 2-bit: a pruned ternary layer is stored as zero runs too, and decodes exactly
    model = builders.mlp(in_features=512, hidden=(512,))
    pruned, _ = optimize(model, "prune-weights(ratio=0.95)")
    packed, _ = optimize(pruned, "ternary")
    coded, _ = optimize(packed, "huffman")
    op_types = [n.op_type for n in custom_nodes(coded)]
    assert "TernaryMatMul" in op_types and "RunLengthDecode" in op_types
    assert_exact(packed, coded, _feeds(model))
    assert len(io.serialize(coded)) < 0.5 * len(io.serialize(packed))
