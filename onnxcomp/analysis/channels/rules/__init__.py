"""The channel rules, one module per op family; importing this package registers them in CHANNEL_RULES."""

from __future__ import annotations

from . import axes, channel_ops, concat, elementwise, layers, spatial

__all__ = ["axes", "channel_ops", "concat", "elementwise", "layers", "spatial"]
