"""Channel dependency groups: which channel axes of which tensors must lose the same indices together.

The model (in the spirit of Torch-Pruning's dependency graph, done on the ONNX graph):

- Every prunable layer (a *producer*: Conv, ConvTranspose, Gemm or MatMul with constant weights) owns one
  *element* per output filter.
- A tensor that carries channels has a :class:`Layout`: along one axis, the element each position holds,
  or ``FIXED`` (-1) for a position no producer owns (a graph input's channel, for instance), never removed.
- Per-op rules (``CHANNEL_RULES``, keyed by op type) map layouts from inputs to outputs: identity
  (activations, BatchNormalization, pooling), offsets (Concat), ranges (Split, Slice), blocks (Flatten or
  Reshape into a Gemm: one channel becomes ``H*W`` features), repetition (a depthwise convolution with a
  channel multiplier), moved axes (Transpose, Squeeze, Unsqueeze). Element-wise ops between activations
  *couple* their inputs position by position: the elements at one position must be removed together
  (residual Add, x * Sigmoid(x), squeeze-excitation's Mul). Rules also record the *members*: the edits a
  removal needs (weights to slice, a Reshape target or Split sizes to rewrite).
- A *channel* is a class of coupled elements (what is removed as one unit); a *group* is a connected set
  of producers whose channels are tied together (a residual stream with all its producers). Constraints
  ride along: every Split/Slice output and every producer keeps at least one channel (segments), and a
  grouped convolution removes the same number of channels from each of its groups (partitions).
- An op no rule understands stops propagation: the group is blocked ("blocked by Shape /head/Shape"), as is
  a group that reaches a graph output or is coupled with channels no producer owns (graph inputs and
  outputs never change shape).

``analyze_channels(graph)`` returns a :class:`ChannelPlan`; passes choose channels to remove per group
and apply the members' edits (passes/prune/_apply.py).
"""

from __future__ import annotations

from . import rules
from .analyzer import CHANNEL_RULES, PRODUCER_OPS, Analyzer, Rule, analyze_channels, channel_rule, where
from .model import (
    CONSUMER,
    FIXED,
    FOLLOWER,
    GROUP,
    GROUPED_IN,
    MEMBER_KINDS,
    PARAM,
    PRODUCER,
    RESHAPE,
    RESIZE,
    ROLES,
    SLICE,
    SPLIT,
    ChannelGroup,
    ChannelPlan,
    Layout,
    Member,
    Producer,
)

__all__ = [
    "CHANNEL_RULES",
    "CONSUMER",
    "FIXED",
    "FOLLOWER",
    "GROUP",
    "GROUPED_IN",
    "MEMBER_KINDS",
    "PARAM",
    "PRODUCER",
    "PRODUCER_OPS",
    "RESHAPE",
    "RESIZE",
    "ROLES",
    "SLICE",
    "SPLIT",
    "Analyzer",
    "ChannelGroup",
    "ChannelPlan",
    "Layout",
    "Member",
    "Producer",
    "Rule",
    "analyze_channels",
    "channel_rule",
    "rules",
    "where",
]
