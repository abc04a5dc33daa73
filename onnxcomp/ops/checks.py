"""Checks shared by the op validators: the ones the native runtime makes (runtime/src/common.cc).

Every check raises ``ValueError`` with a message in the runtime's words; :func:`onnxcomp.ops.validate_model`
names the node. The checks read packed codes in slices of rows, so validating a large layer needs no more
memory than a few slices of its codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .spec import MAX_DIM, TYPE_NAMES, Attr, OpSpec

if TYPE_CHECKING:
    import numpy as np

_SLICE_CODES = 1 << 22  # codes unpacked at a time by the range checks


def shape_str(shape: Any) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def check_schema(spec: OpSpec, attrs: dict[str, Any], values: list[Any], present: list[bool]) -> None:
    """Attribute presence, kinds and ranges; input count, presence and element types (of constants)."""
    import numpy as np

    if len(present) > len(spec.inputs):
        raise ValueError(f"takes at most {len(spec.inputs)} inputs, got {len(present)}")
    for i, inp in enumerate(spec.inputs):
        if i >= len(present) or not present[i]:
            if not inp.optional:
                raise ValueError(f"input '{inp.name}' is missing")
            continue
        v = values[i]
        wants = [TYPE_NAMES[t] for t in inp.dtypes]
        if v is not None and np.dtype(v.dtype).name not in wants:
            raise ValueError(f"input '{inp.name}' must be {' or '.join(wants)}, got {np.dtype(v.dtype).name}")
    for a in spec.attributes:
        _check_attr(a, attrs)


def _check_attr(a: Attr, attrs: dict[str, Any]) -> None:
    if a.name not in attrs:
        if a.required:
            raise ValueError(f"attribute '{a.name}' ({a.kind}) is required")
        return
    v = attrs[a.name]
    if a.kind == "float":
        if not isinstance(v, float) or v != v:
            raise ValueError(f"attribute '{a.name}' must be a float (not NaN)")
        return
    if a.kind == "int":
        if not isinstance(v, int):
            raise ValueError(f"attribute '{a.name}' must be an int")
        if not a.lo <= v <= a.hi:
            raise ValueError(f"attribute {a.name}={v} is out of range [{a.lo}, {a.hi}]")
        return
    if not isinstance(v, list) or not all(isinstance(x, int) for x in v):
        raise ValueError(f"attribute '{a.name}' must be a list of ints")
    if any(not a.lo <= x <= a.hi for x in v):
        raise ValueError(f"attribute {a.name}={shape_str(v)} holds values out of range [{a.lo}, {a.hi}]")


def group_count(outputs: int, group_size: int) -> int:
    """G = ceil(outputs / group_size): codebook rows."""
    return ceil_div(outputs, group_size)


def block_rows(attrs: dict[str, Any], inputs: int | None) -> int | None:
    """nblocks = ceil(inputs / block_size) of a node's ``block_size`` attribute (1 without it; None when the
    inputs are unknown and the node has blocks)."""
    bsz = attrs.get("block_size")
    if bsz is None:
        return 1
    if inputs is None:
        return None
    return max(1, ceil_div(inputs, int(bsz)))


def check_codebook(cb: np.ndarray | None, n: int, group_size: int, bits: int, what: str = "N", blocks: int = 1) -> None:
    """A codebook [G * nblocks, C] with G = ceil(n / group_size) and 1 <= C <= 2**bits (``blocks`` 0: the row
    count is not known, any multiple of G)."""
    if cb is None:
        return
    g, entries = group_count(n, group_size), 1 << bits
    rows_ok = cb.ndim == 2 and (cb.shape[0] == g * blocks if blocks else cb.shape[0] % g == 0 and cb.shape[0] > 0)
    if not rows_ok or not 1 <= cb.shape[1] <= entries:
        rows = f"G={g}" if blocks == 1 else f"G*nblocks={g}*{blocks if blocks else '?'}"
        raise ValueError(
            f"codebook must have shape [{rows}, C] with 1 <= C <= 2^bits={entries} ({what}={n}, "
            f"group_size={group_size}), got {shape_str(cb.shape)}"
        )


def check_bias(b: np.ndarray | None, n: int, what: str = "N", matrix: bool = True) -> None:
    """B [n] (matmul ops also take [1, n])."""
    if b is None:
        return
    ok = b.size == n and (b.ndim == 1 or (matrix and b.ndim == 2 and b.shape[0] == 1))
    if not ok:
        extra = " or [1, N]" if matrix else ""
        raise ValueError(f"B must have shape [{what}={n}]{extra}, got {shape_str(b.shape)}")


def check_rows(
    codes: np.ndarray | None, code_shape: tuple[int, ...] | None, rows: int | None, row_bytes: int, what: str
) -> None:
    """Packed codes [rows, row_bytes]; ``rows`` None when the activation's shape is unknown."""
    shape = codes.shape if codes is not None else code_shape
    if shape is None:
        return
    if len(shape) != 2 or shape[1] != row_bytes or (rows is not None and shape[0] != rows):
        raise ValueError(f"codes must have shape [{what}, {row_bytes}], got {shape_str(shape)}")


def max_code(packed: np.ndarray, bits: int, n: int) -> int:
    """The largest of the ``n`` codes per row of packed rows [R, ceil(n * bits / 8)] (-1 when there are none)."""
    from .packing import unpack_codes

    rows = packed.reshape(packed.shape[0], -1) if packed.ndim != 1 else packed.reshape(1, -1)
    step = max(1, _SLICE_CODES // max(1, n))
    best = -1
    for r in range(0, rows.shape[0], step):
        part = unpack_codes(rows[r : r + step], bits, n)
        if part.size:
            best = max(best, int(part.max()))
    return best


def check_code_range(packed: np.ndarray | None, bits: int, n: int, entries: int) -> None:
    """Every code < ``entries`` (checked only for codebooks narrower than 2**bits, as the runtime does)."""
    if packed is None or entries >= 1 << bits:
        return
    mx = max_code(packed, bits, n)
    if mx >= entries:
        raise ValueError(f"code {mx} is out of range for a codebook of {entries} entries")


def check_dim(value: int, what: str) -> None:
    if not 0 < value <= MAX_DIM:
        raise ValueError(f"{what}={value} is out of range [1, {MAX_DIM}]")
