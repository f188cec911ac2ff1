"""Channel spaces: which layer outputs must keep the same channels when a network shrinks.

A channel space is a set of layers whose output channels are one set of features: a layer
and the norms and depthwise convs that act on its output channel by channel, and the layers
whose outputs are added or multiplied together (a residual stream, a squeeze-excitation gate
and the map it scales). Ranking channels within each space (`space_selector`) keeps what
matters in each; ranking them by width only would add up unrelated spaces of one width (a
BasicBlock ResNet's stream and its blocks' inner channels) into one ranking that is best for
neither.

Only plain graphs are ranked by space: a concatenation, a channel shuffle or split, packed or
folded channels, attention heads, recurrent gates, a layer whose input is not followed to
its producer, or a target that connects layers differently from their sources sends the
width back to the one ranking per width (`importance_selector`), which every layer of that
width then follows alike.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from ..trace import NORM_KINDS, Architecture, Layer
from .mapping import importance_index

Selector = Callable[[int, int], "torch.Tensor | None"]


def reads(layer: Layer) -> str | None:
    """The layer whose whole output `layer` reads, if that is what it reads."""
    lay = layer.in_layout
    if lay and len(lay) == 1 and lay[0][0] and lay[0][1] == 0 and lay[0][2] == lay[0][3]:
        return lay[0][0]
    return None


def _channelwise(layer: Layer) -> bool:
    return layer.kind in NORM_KINDS or layer.kind == "norm" or layer.depthwise


def channel_spaces(arch: Architecture) -> dict[str, str]:
    """Layer name → the name standing for its output's channel space (union-find over the
    channel-by-channel layers, sums and products the trace recorded)."""
    parent = {layer.name: layer.name for layer in arch.layers}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        if a in parent and b in parent:
            parent[find(a)] = find(b)

    for layer in arch.layers:
        producer = reads(layer)
        if producer and _channelwise(layer):
            union(layer.name, producer)
    for a, b in arch.coupled:
        union(a, b)
    return {name: find(name) for name in parent}


def _plain(arch: Architecture) -> bool:
    """A graph whose channels only flow layer to layer, through sums and products."""
    return not (arch.shuffles or arch.packed or arch.folded or arch.pieces or arch.mixed_sums
                or any(layer.concatenated or layer.kind in ("attention", "embedding", "param")
                       or layer.module is not None and hasattr(layer.module, "hidden_size")
                       for layer in arch.layers))


class _RoleSelect:
    """The selection for one source layer: its input channels ranked in the space it reads,
    everything else (its output channels, and what acts on them) in its own space."""

    def __init__(self, out: Selector, into: Selector, fallback: Selector):
        self.out, self.into, self.fallback = out, into, fallback
        self.label = getattr(fallback, "label", "policy")

    def __call__(self, source: int, target: int) -> torch.Tensor | None:
        return self.out(source, target)

    def for_role(self, role: str) -> Selector:
        return self.into if role == "in" else self.out


def space_selector(source: Architecture, target: Architecture, pairs: dict[int, int | None],
                   scored: Callable[[Iterable[Layer]], dict[int, torch.Tensor]],
                   fallback: Selector) -> Callable[[str], Selector] | None:
    """Per source layer name, the selection that ranks channels within its channel spaces
    (`scored(layers)`: width → per-channel score over those layers, e.g.
    `adapt.channel_importance`); None when the graphs are not plain (`_plain`): every layer
    then uses `fallback`, the one ranking per width. `pairs`: target layer index → source
    layer index, the matching."""
    if not (_plain(source) and _plain(target)):
        return None
    space = channel_spaces(source)
    by_name = {layer.name: layer for layer in source.layers}
    # widths some layer reads without the trace knowing from where: its choice is the width's
    unknown = {layer.in_dim for layer in source.layers
               if layer.executed and layer.role != "input" and layer.in_dim
               and reads(layer) is None}
    shared: set[str] = set()  # spaces sent back to the width's ranking
    mate = {target.layers[t].name: source.layers[s] for t, s in pairs.items() if s is not None}
    # the target must read, add and multiply what its sources do: else two source spaces meet
    for layer in target.layers:
        producer = reads(layer)
        src, src_producer = mate.get(layer.name), mate.get(producer or "")
        if src is None or src_producer is None:
            continue
        read = reads(src)
        if read is None or space[read] != space[src_producer.name]:
            shared |= {space[src_producer.name]} | ({space[read]} if read else set())
    for a, b in target.coupled:
        if a in mate and b in mate and space[mate[a].name] != space[mate[b].name]:
            shared |= {space[mate[a].name], space[mate[b].name]}
    members: dict[str, list[Layer]] = {}
    for name, root in space.items():
        members.setdefault(root, []).append(by_name[name])
    cache: dict[str, Selector] = {}

    def of_space(root: str | None) -> Selector:
        if root is None or root in shared:
            return fallback
        if root not in cache:
            scores = scored(members[root])
            picked: dict[tuple[int, int], torch.Tensor] = {}

            def select(s: int, t: int) -> torch.Tensor | None:
                if s in unknown or s not in scores:
                    return fallback(s, t)
                if (s, t) not in picked:
                    picked[(s, t)] = importance_index(scores[s], t)
                return picked[(s, t)]
            cache[root] = select
        return cache[root]

    def for_layer(name: str) -> Selector:
        layer = by_name.get(name)
        if layer is None:
            return fallback
        producer = reads(layer)
        return _RoleSelect(of_space(space[name]),
                           of_space(space[producer]) if producer in space else fallback,
                           fallback)
    return for_layer
