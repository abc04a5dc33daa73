"""The budget allocator lives in the core (onnxcomp.analysis.budget): the prune family uses it too."""

from onnxcomp.analysis.budget import BudgetError, Option, allocate

__all__ = ["BudgetError", "Option", "allocate"]
