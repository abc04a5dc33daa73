"""Winograd minimal filtering F(m, r): transform matrices from the exact Toom-Cook construction.

The native runtime's matrices (runtime/src/conv/winograd_matrices.h) are generated from this construction
(``python -m onnxcomp.winograd`` rewrites the header, ``--check`` tells whether it is current); the cost
estimator counts the transforms' operations from the same matrices. tests/runtime/test_winograd.py checks that
the committed header is this construction's and that the matrices compute the correlation exactly.

Construction (Lavin & Gray 2016, after Toom-Cook; all in exact rationals). With alpha = m + r - 1 points
a_0 .. a_{alpha-2} plus the point at infinity, the linear convolution s = g * h of g (r taps) and h (m taps)
is s = C [(E_g g) . (E_h h)]: E_g [alpha x r] and E_h [alpha x m] evaluate the polynomials g(x), h(x) at the
points (row [1, a, a^2, ...], the infinity row picks the leading coefficient), and C = V^-1 interpolates
(V [alpha x alpha] is the Vandermonde matrix of the points with the same infinity row). As s = T(g) h with
T(g) the Toeplitz matrix of g, T(g) = C diag(E_g g) E_h, and the correlation y_i = sum_k g_k d_{i+k}
(i < m, d: alpha inputs) is y = T(g)^T d = E_h^T [(E_g g) . (C^T d)], so

    A^T = E_h^T  [m x alpha],   G = E_g  [alpha x r],   B^T = C^T  [alpha x alpha].

Any row scaling of B^T can be undone in G (y = A^T [(D^-1 G g) . (D B^T d)]): each row of B^T is scaled to
coprime integer entries (so the run-time input transform multiplies by small integers, exactly) and G absorbs the
factor (G is applied once, to the constant weights, in double precision). 2-D: Y = A^T [(G g G^T) . (B^T d B)] A.
"""

from __future__ import annotations

import functools
import math
import sys
from fractions import Fraction
from pathlib import Path

Matrix = list[list[Fraction]]

# interpolation points per output tile size m (r = 3); the point at infinity is always added last
POINTS: dict[int, list[Fraction]] = {
    2: [Fraction(0), Fraction(1), Fraction(-1)],
    4: [Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2)],
    6: [Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), Fraction(1, 2), Fraction(-1, 2)],
}
R = 3
HEADER = Path(__file__).resolve().parents[1] / "runtime" / "src" / "conv" / "winograd_matrices.h"  # source checkout


def _eval_rows(points: list[Fraction], n: int) -> Matrix:
    """[alpha x n]: row i = [1, a_i, a_i^2, ...]; the last row (infinity) = [0, ..., 0, 1]."""
    rows = [[p**k for k in range(n)] for p in points]
    rows.append([Fraction(0)] * (n - 1) + [Fraction(1)])
    return rows


def _inverse(a: Matrix) -> Matrix:
    """Exact Gauss-Jordan inverse."""
    n = len(a)
    m = [row[:] + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(a)]
    for col in range(n):
        piv = next(r for r in range(col, n) if m[r][col] != 0)
        m[col], m[piv] = m[piv], m[col]
        inv = 1 / m[col][col]
        m[col] = [v * inv for v in m[col]]
        for r in range(n):
            if r != col and m[r][col] != 0:
                f = m[r][col]
                m[r] = [v - f * w for v, w in zip(m[r], m[col])]
    return [row[n:] for row in m]


def _transpose(a: Matrix) -> Matrix:
    return [list(col) for col in zip(*a)]


def construct(m: int, r: int = R, points: list[Fraction] | None = None) -> tuple[Matrix, Matrix, Matrix]:
    """(A^T [m x alpha], G [alpha x r], B^T [alpha x alpha]) of F(m, r), B^T rows scaled to integers."""
    pts = list(POINTS[m] if points is None else points)
    alpha = m + r - 1
    if len(pts) != alpha - 1 or len(set(pts)) != len(pts):
        raise ValueError(f"F({m},{r}) needs {alpha - 1} distinct finite points, got {pts}")
    at = _transpose(_eval_rows(pts, m))
    g = _eval_rows(pts, r)
    bt = _transpose(_inverse(_eval_rows(pts, alpha)))
    for i, row in enumerate(bt):
        scale = Fraction(math.lcm(*(v.denominator for v in row)))
        scale /= math.gcd(*(int(v * scale) for v in row))  # integer entries, no common factor
        lead = next(v for v in row if v != 0)
        if lead < 0:
            scale = -scale
        bt[i] = [v * scale for v in row]
        g[i] = [v / scale for v in g[i]]
    return at, g, bt


@functools.cache
def transform_ops(m: int) -> tuple[int, int]:
    """Additions and multiply-adds per tile and channel of the input transform BT d BT^T and of the output
    transform AT M AT^T, as the native kernels do them (every non-zero coefficient is one operation; a row's
    first term is a copy or a multiply)."""
    at, _, bt = construct(m)
    alpha = m + 2
    nz_bt = sum(1 for row in bt for v in row if v != 0)
    nz_at = sum(1 for row in at for v in row if v != 0)
    return 2 * alpha * nz_bt, (alpha + m) * nz_at


def correlate_1d(at: Matrix, g: Matrix, bt: Matrix, taps: list[Fraction], d: list[Fraction]) -> list[Fraction]:
    """y = A^T [(G g) . (B^T d)] in exact arithmetic."""
    u = [sum(gi[k] * taps[k] for k in range(len(taps))) for gi in g]
    v = [sum(bi[k] * d[k] for k in range(len(d))) for bi in bt]
    return [sum(ai[k] * u[k] * v[k] for k in range(len(u))) for ai in at]


def _c_float(v: Fraction) -> str:
    if v.denominator == 1:
        return f"{v.numerator}.0f"
    text = repr(float(v))
    if float(Fraction(text)) != float(v) or Fraction(text) != v:
        # not a short exact binary fraction: write it as a quotient the compiler rounds once
        return f"(float)({v.numerator}.0 / {v.denominator}.0)"
    return f"{text}f"


def _c_double(v: Fraction) -> str:
    if v.denominator == 1:
        return f"{v.numerator}.0"
    return f"({v.numerator}.0 / {v.denominator}.0)"


def _array(name: str, a: Matrix, fmt, ctype: str) -> str:
    rows = ",\n".join("      {" + ", ".join(fmt(v) for v in row) + "}" for row in a)
    return f"  static constexpr {ctype} {name}[{len(a)}][{len(a[0])}] = {{\n{rows}}};\n"


def render_header() -> str:
    parts = [
        "// GENERATED by `python -m onnxcomp.winograd` (onnxcomp/winograd.py) from the exact Toom-Cook construction;\n"
        "// do not edit.\n"
        "// F(m, 3): Y = AT [(G g G^T) . (BT d BT^T)] AT^T on alpha x alpha input tiles, alpha = m + 2.\n"
        "// BT rows are scaled to integers (the input transform is exact in float for small integers);\n"
        "// G (applied once, to constant weights, in double) absorbs the scale.\n"
        "#pragma once\n\n"
        "namespace onnxcomp {\nnamespace conv {\n\n"
        "template <int M>\nstruct WinogradMatrices;\n\n"
    ]
    for m in sorted(POINTS):
        at, g, bt = construct(m)
        alpha = m + R - 1
        pts = ", ".join(str(p) for p in POINTS[m]) + ", inf"
        parts.append(
            f"// F({m}, 3), alpha = {alpha}, points {pts}\n"
            f"template <>\nstruct WinogradMatrices<{m}> {{\n"
            f"  static constexpr int m = {m};\n  static constexpr int alpha = {alpha};\n"
            + _array("AT", at, _c_float, "float")
            + _array("BT", bt, _c_float, "float")
            + _array("G", g, _c_double, "double")
            + "};\n\n"
        )
    parts.append("}  // namespace conv\n}  // namespace onnxcomp\n")
    return "".join(parts)


def main(argv: list[str]) -> int:
    text = render_header()
    if argv[1:] == ["--check"]:
        ok = HEADER.read_text() == text
        print("up to date" if ok else f"{HEADER} is stale: rerun python -m onnxcomp.winograd")
        return 0 if ok else 1
    HEADER.write_text(text)
    print(f"wrote {HEADER}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
