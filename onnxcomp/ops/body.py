"""Building the model-local function bodies of the com.onnxcomp ops.

:class:`FunctionBody` collects the nodes of a FunctionProto with short temporary names (the bodies are stored
in every model that uses an op), deduplicated constants and references to the function's attributes. The
helpers below are the pieces several bodies share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .spec import DOMAIN, MAX_DIM, VERSION

NO_BLOCKS = MAX_DIM  # the bodies' default block_size: every input feature in one block

if TYPE_CHECKING:
    import onnx


class FunctionBody:
    """A FunctionProto under construction: short tensor names, helpers for constants and attribute refs."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self._i = 0
        self._consts: dict[tuple[Any, ...], str] = {}
        self.calls_domain = False  # a node calls another com.onnxcomp function (the body imports the domain)

    def _tmp(self) -> str:
        # short names (a, b, ..., z, ba, bb, ...) keep the function bodies small on disk
        i, name = self._i, ""
        self._i += 1
        while True:
            name = chr(97 + i % 26) + name
            i //= 26
            if not i:
                return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        name = out or self._tmp()
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], **attrs))
        return name

    def const(self, value: Any, dtype: str = "int64") -> str:
        import numpy as np
        from onnx import numpy_helper

        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            if arr.dtype == np.int64 and arr.ndim == 0:
                self._consts[key] = self.op("Constant", value_int=int(arr))
            elif arr.dtype == np.int64 and arr.ndim == 1:
                self._consts[key] = self.op("Constant", value_ints=[int(v) for v in arr])
            else:
                self._consts[key] = self.op("Constant", value=numpy_helper.from_array(arr))
        return self._consts[key]

    def attr(self, name: str, kind: str = "int") -> str:
        """The value of the node attribute ``name`` as a tensor (scalar for int and float, 1-D for ints)."""
        import onnx

        out = self._tmp()
        node = onnx.helper.make_node("Constant", [], [out])
        a = onnx.AttributeProto(name=f"value_{kind}", ref_attr_name=name)
        a.type = {"int": onnx.AttributeProto.INT, "ints": onnx.AttributeProto.INTS, "float": onnx.AttributeProto.FLOAT}[
            kind
        ]
        node.attribute.append(a)
        self.nodes.append(node)
        return out

    def ref_attrs(self, node_index: int, names: dict[str, int]) -> None:
        """Attach attributes that forward the function's attributes (name -> AttributeProto type)."""
        import onnx

        node = self.nodes[node_index]
        for name, typ in names.items():
            a = onnx.AttributeProto(name=name, ref_attr_name=name)
            a.type = typ
            node.attribute.append(a)

    def call(self, op_type: str, *inputs: str, n_out: int = 1) -> list[str]:
        """A node calling another com.onnxcomp function (a function-only helper)."""
        from onnx import helper

        outs = [self._tmp() for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, domain=DOMAIN))
        self.calls_domain = True
        return outs

    def function(
        self,
        name: str,
        inputs: list[str],
        outputs: list[str],
        attributes: list[str],
        opset: int,
        defaults: dict[str, int] | None = None,
    ) -> onnx.FunctionProto:
        """The FunctionProto; ``defaults``: int attributes with a default value (FunctionProto.attribute_proto)."""
        from onnx import helper

        imports = [helper.make_opsetid("", opset)]
        if self.calls_domain:
            imports.append(helper.make_opsetid(DOMAIN, VERSION))
        protos = [helper.make_attribute(k, v) for k, v in (defaults or {}).items()]
        return helper.make_function(
            DOMAIN, name, inputs, outputs, self.nodes, imports, attributes=attributes, attribute_protos=protos or None
        )


def unpack(f: FunctionBody, packed: str, bits: str, n: str) -> tuple[str, str]:
    """Body node calling UnpackCodes: (int32 codes [R, n], int64 j [1, n])."""
    codes, j = f.call("UnpackCodes", packed, bits, n, n_out=2)
    return codes, j


def row_width(f: FunctionBody, codebook: str) -> str:
    # entries per codebook row, C (2**bits as the passes write it; a codebook may hold 1 <= C < 2**bits):
    # group g's entries start at g * C in the flattened codebook
    return f.op("Shape", codebook, start=1, end=2)


def flat_codebook(f: FunctionBody, codebook: str = "codebook") -> str:
    """The codebook as a float 1-D tensor: a float16 codebook is Cast to float (exact; a no-op on float32), so the
    decoded weights are float32 whatever the codebook's type."""
    return f.op("Reshape", f.op("Cast", codebook, to=1), f.const([-1]))


def matmul_bias(f: FunctionBody, x: str, w: str, b: str, y: str) -> None:
    f.op("Add", f.op("MatMul", x, w), b, out=y)
