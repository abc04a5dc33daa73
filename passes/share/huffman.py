"""huffman: Deep Compression stage 3, the packed code bytes of com.onnxcomp ops Huffman-coded on disk."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from onnxcomp import ops
from onnxcomp.passes_api import Pass, PassContext, PassResult, opt, register_pass

from . import _common as common

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


@register_pass
class Huffman(Pass):
    """com.onnxcomp op(packed codes)  =>  com.onnxcomp op(HuffmanDecode(coded stream)) (lossless).

    Every packed uint8 input of a com.onnxcomp op (codes, EIE deltas) is replaced by a canonical Huffman
    stream over its bytes (lengths <= 16 bits, a [2, n] symbol/length table, one int32 bit offset per 1024
    bytes) and a ``HuffmanDecode`` node that rebuilds the identical bytes. The codes of a pruned layer are
    coded instead as EIE-style (zero run, code) byte symbols, with a ``RunLengthDecode`` node after the
    HuffmanDecode, when that is smaller (Deep Compression's relative-index coding: one symbol stands for a
    run of zeros and a code, where a packed byte symbol cannot cost less than one bit). Both function
    bodies are standard ops that onnxruntime constant-folds at load time, so the file gets smaller while
    the session is the same. Run it after kmeans / pow2 / ternary / binary (or use their ``huffman=store``).
    A tensor is coded only when that saves at least ``min_gain`` bytes.
    """

    name = "huffman"
    lossless = True

    @dataclasses.dataclass
    class Options:
        min_gain: int = opt(
            common.HUFFMAN_MIN_GAIN,
            "code a tensor only when that saves at least this many bytes "
            "(a HuffmanDecode node and its initializers cost ~300 bytes of graph)",
        )

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = self.new_result()
        nodes = [n for n in graph.nodes if n.domain == ops.DOMAIN and ops.is_weight_op(n.op)]
        if not nodes:
            result.skip("model", "no com.onnxcomp weight ops (run kmeans, pow2, ternary or binary first)")
        packed = {n.name: sum(int(t.values.size) for t in n.inputs if _is_packed(t)) for n in nodes}
        saved = common.huffman_store(graph, ctx, nodes, self.name, min_gain=self.options.min_gain)
        for node in nodes:
            if not saved.get(node.name):
                result.skip(
                    node.name,
                    f"Huffman coding would not save {self.options.min_gain} bytes "
                    "(or the model's coded tensors would not pay for the decoder's function body)",
                )
                continue
            before = packed[node.name]
            result.layer(
                node.name,
                op=node.op,
                decision="huffman",
                extra={"bytes_packed": before, "bytes_huffman": before - saved[node.name]},
            )
            result.count("tensors_coded")
            result.count("bytes_saved", saved[node.name])
        return result


def _is_packed(t: object) -> bool:
    import numpy as np

    from onnxcomp.graph import is_const

    return is_const(t) and t.values.dtype == np.uint8  # type: ignore[attr-defined]
