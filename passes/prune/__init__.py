"""Structured pruning: prune-filters, prune-channels (one pass per module).

The family's helpers are private modules; what other code (tests, benchmarks) may use is re-exported here:
``choose`` (which channels of a group go), ``apply_removal`` and ``EDITS`` (the edits a removal makes, one per
member kind of the channel analysis), ``ADAPTERS`` (layers as patches x weights), ``ridge_refit`` and
``lasso_ranking`` (the least-squares refit and LASSO channel ranking of He et al. 2017).
"""

from ._adapters import ADAPTERS
from ._apply import EDITS, apply_removal
from ._recon import lasso_ranking, ridge_refit
from ._select import choose

__all__ = ["ADAPTERS", "EDITS", "apply_removal", "choose", "lasso_ranking", "ridge_refit"]
