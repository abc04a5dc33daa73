"""The onnxcomp pass library, installed as ``onnxcomp.passes``.

Importing this package registers every pass (each module decorates its class with ``@register_pass``).
One pass per file, grouped by kind: cleanup/ fusion/ prune/ share/ lowrank/ lower/.
"""

from __future__ import annotations

import importlib
import pkgutil

_KINDS = ("cleanup", "fusion", "prune", "share", "lowrank", "lower")


def _import_all() -> None:
    for kind in _KINDS:
        try:
            pkg = importlib.import_module(f"{__name__}.{kind}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{kind}":
                raise
            continue
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{pkg.__name__}.{info.name}")


_import_all()
