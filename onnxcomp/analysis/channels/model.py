"""The channel model: layouts, members (the edits a removal needs), producers, groups and the plan."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

FIXED = -1  # a position no producer owns: never removed

# What a member edits (``Member.kind``): one edit per kind in the prune passes' table (passes/prune/_apply.py,
# checked against MEMBER_KINDS by the tests).
PARAM = "param"  # slice constant input ``input`` along ``axis``
GROUPED_IN = "grouped_in"  # remove input channels of a grouped convolution
GROUP = "group"  # set a depthwise convolution's group attribute
RESHAPE = "reshape"  # rewrite a Reshape target
SPLIT = "split"  # rewrite Split sizes
SLICE = "slice"  # rewrite Slice starts/ends
RESIZE = "resize"  # rewrite Resize sizes
MEMBER_KINDS = frozenset({PARAM, GROUPED_IN, GROUP, RESHAPE, SPLIT, SLICE, RESIZE})

# How a member relates to the channels (``Member.role``)
PRODUCER = "producer"  # output filters: owns the elements
CONSUMER = "consumer"  # input channels of a layer that contracts them
FOLLOWER = "follower"  # everything else (biases, BatchNormalization, Split sizes, ...)
ROLES = frozenset({PRODUCER, CONSUMER, FOLLOWER})


# --------------------------------------------------------------------------------------------- records
@dataclasses.dataclass
class Layout:
    """The channel elements along one axis of a tensor (``FIXED`` where no producer owns the position)."""

    axis: int
    elems: np.ndarray


@dataclasses.dataclass
class Member:
    """One edit that removing channels requires.

    ``kind`` names the edit (passes/prune/_apply.py EDITS): "param" slices constant input ``input`` along
    ``axis``; "grouped_in" removes input channels of a grouped convolution; "group" sets a depthwise
    convolution's group attribute; "reshape", "split", "slice", "resize" rewrite shapes and sizes.
    ``elems`` holds the element of every position along the edited axis. ``role``: "producer" (output
    filters), "consumer" (input channels of a layer that contracts them) or "follower" (everything else).
    """

    node: gs.Node
    kind: str
    role: str
    elems: np.ndarray
    input: int = -1
    axis: int = 0
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in MEMBER_KINDS or self.role not in ROLES:
            raise ValueError(f"member of {self.node.name}: unknown kind {self.kind!r} or role {self.role!r}")


@dataclasses.dataclass
class Producer:
    """A layer whose output filters own elements: weight input ``weight``, filter axis ``axis``."""

    node: gs.Node
    weight: int
    axis: int
    elems: np.ndarray
    output: str


@dataclasses.dataclass
class ChannelGroup:
    """Channels that producers share; ``blocked`` lists why the group cannot be pruned (empty: prunable).

    Channels are numbered globally ``offset .. offset + size - 1``; ``segments`` and ``partitions`` hold
    local indices (0 .. size-1): each segment keeps at least ``min(min_channels, len(segment))`` channels;
    each partition constraint (a 2-D array, one row per convolution group) loses the same number of
    channels in every row.
    """

    id: int
    name: str
    offset: int
    size: int
    producers: list[Producer] = dataclasses.field(default_factory=list)
    members: list[Member] = dataclasses.field(default_factory=list)
    blocked: list[str] = dataclasses.field(default_factory=list)
    segments: list[np.ndarray] = dataclasses.field(default_factory=list)
    partitions: list[np.ndarray] = dataclasses.field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return not self.blocked

    def block(self, reason: str) -> None:
        if reason not in self.blocked:
            self.blocked.append(reason)

    def consumers(self) -> list[Member]:
        return [m for m in self.members if m.role == CONSUMER]


@dataclasses.dataclass
class ChannelPlan:
    """Groups of a graph plus the element -> channel map used to turn a removal into edits."""

    groups: list[ChannelGroup]
    members: list[Member]
    layouts: dict[str, Layout]
    elem_channel: np.ndarray  # element id -> global channel id
    n_channels: int

    def channels(self, elems: np.ndarray) -> np.ndarray:
        """Global channel of every position (FIXED stays FIXED)."""
        import numpy as np

        elems = np.asarray(elems, dtype=np.int64)
        out = np.full(elems.shape, FIXED, dtype=np.int64)
        ok = elems >= 0
        out[ok] = self.elem_channel[elems[ok]]
        return out

    def keep(self, elems: np.ndarray, removed: np.ndarray) -> np.ndarray:
        """Mask of the positions that survive when the global channels ``removed`` (bool mask) go."""
        chans = self.channels(elems)
        out = chans < 0
        out[~out] = ~removed[chans[~out]]
        return out

    def group_of(self, channel: int) -> ChannelGroup:
        for g in self.groups:
            if g.offset <= channel < g.offset + g.size:
                return g
        raise KeyError(channel)

    def summary(self) -> list[str]:
        lines = []
        for g in self.groups:
            state = "prunable" if g.prunable else "blocked: " + "; ".join(g.blocked)
            prods = ", ".join(p.node.name for p in g.producers)
            lines.append(f"{g.name}: {g.size} channels, producers [{prods}], {state}")
        return lines
