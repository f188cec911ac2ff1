"""Index maps between a source dimension of size S and a target dimension of size T.

Every dimension of every tensor is resized by the same rule, so two connected layers that
agree on a channel count in both networks also agree on which channels they keep or repeat:
the output channels a layer selects are exactly the input channels the next layer reads, and
the branches of a residual sum select the same channels. That consistency is what makes a
wider target compute the same function as its source (Net2Net) and a narrower one keep
coherent units (weight selection), without per-model graph surgery.
"""
from __future__ import annotations

import math

import torch


def channel_index(source: int, target: int) -> torch.Tensor:
    """Which source index fills each target index.

    Growing tiles the source (0, 1, .., S-1, 0, 1, ..): Net2Net's replication of units.
    Shrinking keeps evenly spaced indices: weight selection's uniform selection.
    """
    if target >= source:
        return torch.arange(target) % source
    return consecutive_index(source, target)


def consecutive_index(source: int, target: int) -> torch.Tensor:
    """Target index t filled from source unit ⌊t·S/T⌋: shrinking keeps evenly spaced units
    (`channel_index`), growing puts each unit's replicas side by side (0, 0, 1, 1, 2, ..) so
    that the units keep their order and any fraction of the channels (the first half, every
    other one) holds the same units' replicas as that fraction of the source's — what a
    channel shuffle followed by a split needs (ShuffleNet: each block passes the first half of
    the shuffled channels on)."""
    return (torch.arange(target) * source) // target


def group_channel_index(source: int, target: int, source_groups: int,
                        target_groups: int) -> torch.Tensor:
    """`channel_index` for channels that feed grouped convolutions: a target group is filled
    from one whole source group (groups tiled or evenly selected), and inside it the channels
    are tiled or selected as usual. A grouped conv then reads, in every target group, replicas
    of the inputs its source group read, so Net2Net's widening stays exact (RegNet's group
    width 16 → 24: plain tiling would mix two source groups in one target group). When the
    target has fewer groups, each a multiple of the source's width, whole source groups are
    packed side by side instead (`packs_groups`; the grouped conv's weight is then
    block-diagonal within each target group, `adapt.pack_grouped`)."""
    ws, wt = source // source_groups, target // target_groups
    t = torch.arange(target)
    if packs_groups(source, target, source_groups, target_groups):
        # fewer, wider target groups: each holds several whole source groups side by side
        # (RegNetX-200MF → 400MF: 3 groups of 8 → 2 groups of 16), tiled over the slots
        return channel_index(source_groups, target // ws)[t // ws] * ws + t % ws
    group = channel_index(source_groups, target_groups)[t // wt]
    return group * ws + channel_index(ws, wt)[t % wt]


def query_scale(source: int, target: int, source_heads: int, target_heads: int) -> torch.Tensor:
    """Per-channel factor for the queries of an attention widened head by head
    (`group_channel_index` with heads as groups) to a larger head size. Inside a target head
    of size h_t, the replicas of one of the source head's h_s channels share
    sqrt(h_t / h_s): a query·key product summed over the target head is then sqrt(h_t / h_s)
    times the source's, which the target's softmax scale 1/sqrt(h_t) turns back into the
    source's 1/sqrt(h_s) — the attention weights are the source's."""
    ws, wt = source // source_heads, target // target_heads
    inner = channel_index(ws, wt)
    counts = torch.bincount(inner, minlength=ws).to(torch.float64)
    per_head = math.sqrt(wt / ws) / counts[inner]
    return per_head.repeat(target_heads)


def packs_groups(source: int, target: int, source_groups: int, target_groups: int) -> bool:
    """Whether widening S channels in `source_groups` to T in `target_groups` packs whole
    source groups into each target group: fewer target groups, each a multiple as wide."""
    ws, wt = source // source_groups, target // target_groups
    return target > source and target_groups < source_groups and wt > ws and wt % ws == 0


def importance_index(scores: torch.Tensor, target: int) -> torch.Tensor:
    """The `target` highest-scoring of ``len(scores)`` indices, in increasing order (ties
    broken towards the lower index, so the choice is deterministic)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return torch.tensor(sorted(order[:target]), dtype=torch.long)


def fan_in_scale(source: int, target: int, index: torch.Tensor) -> torch.Tensor:
    """Per-target-index factor for a summed-over (fan-in) dimension.

    Growing: each replica of an input unit gets 1/(number of replicas), so the sum over inputs
    is unchanged when the previous layer replicated its outputs the same way. Shrinking: the
    kept inputs are scaled by sqrt(S/T) so the output keeps its variance.
    """
    if target >= source:
        counts = torch.bincount(index, minlength=source).to(torch.float64)
        return 1.0 / counts[index]
    return torch.full((target,), math.sqrt(source / target), dtype=torch.float64)


def replica_jitter(index: torch.Tensor, source: int, shape: tuple[int, ...], dim: int,
                   noise: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Multiplicative factors (broadcastable to `shape`) that split a replicated fan-in
    unevenly but exactly: ``1 + noise·(z − mean of z over the replicas of the same unit)``.

    Net2Net's widening gives every replica of a unit the same outgoing weights (1/k each):
    the replicas then get the same gradients and, under Adam (which normalises each weight's
    gradient), the same updates forever — the extra width is never used. Jittering the split
    breaks that symmetry without changing the function: the replicas carry identical
    activations, and the factors of one unit's replicas sum to its count, so their weighted sum
    is unchanged (up to float rounding). Units kept once get factor 1."""
    z = torch.randn(shape, generator=generator, dtype=torch.float64).movedim(dim, 0)
    flat = z.reshape(z.shape[0], -1)
    counts = torch.bincount(index, minlength=source).to(torch.float64)
    mean = torch.zeros(source, flat.shape[1], dtype=torch.float64).index_add_(0, index, flat)
    flat = flat - (mean / counts.clamp_min(1)[:, None])[index]
    return (1 + noise * flat.reshape(z.shape)).movedim(0, dim)


def mixing_matrix(source: int, target: int) -> torch.Tensor:
    """A (T, S) matrix that maps S input channels onto T, preserving activation scale.

    Target channel t takes each source channel s in proportion to how much of s's share of the
    unit interval overlaps t's share. Every column sums to 1, so an input whose channels are
    all equal (a gray image seen as RGB, or an RGB image seen as 13 bands) produces the same
    pre-activation as in the source. RGB → 1 sums the three kernels (as timm's
    adapt_input_conv does); 3 → 6 halves and repeats them; any pair of counts works.
    """
    # integer interval ends in units of 1/(S·T), so the overlaps are exact
    edges_t = torch.arange(target + 1) * source
    edges_s = torch.arange(source + 1) * target
    lo = torch.maximum(edges_t[:-1, None], edges_s[None, :-1])
    hi = torch.minimum(edges_t[1:, None], edges_s[None, 1:])
    return (hi - lo).clamp(min=0).to(torch.float64) / target


def centre_slices(source: int, target: int) -> tuple[slice, slice]:
    """(source slice, target slice) that align the centres of two sizes (DPIAT's clip)."""
    if source >= target:
        start = (source - target) // 2
        return slice(start, start + target), slice(0, target)
    start = (target - source) // 2
    return slice(0, source), slice(start, start + source)
