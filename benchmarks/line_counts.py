"""Line counts per Python module of onnxcomp/ and passes/ at two git revisions (issue 10's "Show" evidence).

    python benchmarks/line_counts.py [BEFORE [AFTER]] [--all]

BEFORE defaults to 38c16bd (main before the restructuring's first commit, b7b0cba "ruff format over the whole
tree"), AFTER to HEAD. Prints the modules whose line count changed (``--all``: every module; ``-``: the module
does not exist at that revision), then the totals: pass code (passes/), the share/ family and its fraction of the
pass code, the core (onnxcomp/), and the largest module of each tree. Counts are lines as ``wc -l`` counts them,
read from git objects (the working tree is not read).
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "38c16bd"
TREES = ("onnxcomp", "passes")


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout


def line_counts(rev: str) -> dict[str, int]:
    """{path: lines} of every .py file under TREES at ``rev``."""
    paths = [p for p in git("ls-tree", "-r", "--name-only", rev, "--", *TREES).splitlines() if p.endswith(".py")]
    out = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "--batch"],
        input="".join(f"{rev}:{p}\n" for p in paths).encode(),
        check=True,
        capture_output=True,
    ).stdout
    counts, pos = {}, 0
    for p in paths:  # the batch answers "<oid> blob <size>\n<content>\n" per request, in order
        header_end = out.index(b"\n", pos)
        size = int(out[pos:header_end].split()[2])
        body = out[header_end + 1 : header_end + 1 + size]
        counts[p] = body.count(b"\n")
        pos = header_end + 1 + size + 1
    return counts


def totals(counts: dict[str, int]) -> dict[str, int]:
    return {
        "passes/": sum(n for p, n in counts.items() if p.startswith("passes/")),
        "passes/share/": sum(n for p, n in counts.items() if p.startswith("passes/share/")),
        "onnxcomp/": sum(n for p, n in counts.items() if p.startswith("onnxcomp/")),
    }


def largest(counts: dict[str, int], tree: str) -> tuple[str, int]:
    return max(((p, n) for p, n in counts.items() if p.startswith(tree)), key=lambda pn: (pn[1], pn[0]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", nargs="?", default=BEFORE)
    ap.add_argument("after", nargs="?", default="HEAD")
    ap.add_argument("--all", action="store_true", help="list every module, changed or not")
    args = ap.parse_args()
    revs = [git("rev-parse", "--short", r).strip() for r in (args.before, args.after)]
    before, after = line_counts(revs[0]), line_counts(revs[1])

    print(f"| module | {revs[0]} | {revs[1]} |")
    print("|---|---:|---:|")
    for p in sorted(before.keys() | after.keys()):
        b, a = before.get(p), after.get(p)
        if args.all or b != a:
            print(f"| {p} | {'-' if b is None else b} | {'-' if a is None else a} |")

    tb, ta = totals(before), totals(after)
    print()
    print(f"| total | {revs[0]} | {revs[1]} |")
    print("|---|---:|---:|")
    print(f"| modules (onnxcomp/ + passes/) | {len(before)} | {len(after)} |")
    for k in ("onnxcomp/", "passes/", "passes/share/"):
        print(f"| {k} lines | {tb[k]} | {ta[k]} |")
    share = [f"{100 * t['passes/share/'] / t['passes/']:.0f}%" for t in (tb, ta)]
    print(f"| share/ fraction of pass code | {share[0]} | {share[1]} |")
    for tree in TREES:
        (pb, nb), (pa, na) = largest(before, tree + "/"), largest(after, tree + "/")
        print(f"| largest module in {tree}/ | {pb} ({nb}) | {pa} ({na}) |")


if __name__ == "__main__":
    main()
