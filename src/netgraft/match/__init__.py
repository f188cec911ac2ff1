"""Match the layers of two architectures: blocks first, then layers inside matched blocks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Collection

from ..adapt import grouped_conv
from ..trace import NORM_KINDS, Architecture, Block, Layer, group_blocks, group_layers
from .dp import align
from .scores import (DPIAT_CLASSES, DPIAT_DIMENSIONAL, GraftScores, dpiat_score, graft_score,
                     stride_tie_break)

DEFAULT_METHOD = "graft"


@dataclass
class Matching:
    """Which source layer initialises each target layer."""

    method: str
    source: Architecture = field(repr=False)
    target: Architecture = field(repr=False)
    #: target layer index → (source layer index or None)
    pairs: dict[int, int | None]
    #: target layer index → score of its pair (0 when unmatched)
    scores: dict[int, float]
    #: DP value of aligning the source onto the target, S(source → target), scaled down for
    #: target blocks left gated off (default method; see `open_value`)
    value: float
    #: the DP value as is (``dp_value``); None when not known
    plain_value: float | None = None

    def source_of(self, target_name: str) -> str | None:
        idx = self.pairs[self.target[target_name].index]
        return None if idx is None else self.source.layers[idx].name

    def named_pairs(self) -> list[tuple[str, str | None]]:
        """(target layer, source layer or None) for every target layer, in execution order."""
        return [(self.target.layers[t].name,
                 None if s is None else self.source.layers[s].name)
                for t, s in sorted(self.pairs.items())]

    @property
    def matched(self) -> int:
        return sum(s is not None for s in self.pairs.values())


# ---------------------------------------------------------------------------- methods
# A method turns an Architecture into a list of items (layer indices, non-layer markers, or
# lists of those = blocks) and scores two layers. Items that are not layers score 0.
@dataclass(frozen=True)
class Method:
    name: str
    items: Callable[[Architecture], list]
    score: Callable[[Layer, Layer], float]
    #: items of a (source, target) pair when they depend on both (default: items of each)
    pair_items: Callable[[Architecture, Architecture], tuple[list, list]] | None = None
    #: a factor in (0, 1] on a layer pair's score, for the DP only (its ties)
    tie_break: Callable[[Layer, Layer], float] | None = None

    def both(self, source: Architecture, target: Architecture) -> tuple[list, list]:
        if self.pair_items is not None:
            return self.pair_items(source, target)
        return self.items(source), self.items(target)


def _dpiat_items(arch: Architecture) -> list:
    """DPIAT's blocks standardization over module registration order (no tracing)."""
    if arch.model is None:
        raise ValueError("method='dpiat' needs the Architecture's model (trace() keeps it)")
    index = {layer.name: layer.index for layer in arch.layers}
    names = {m: n for n, m in arch.model.named_modules()}
    items = group_blocks(
        arch.model, lambda m: list(m.children()),
        lambda m: isinstance(m, DPIAT_CLASSES), lambda m: isinstance(m, DPIAT_DIMENSIONAL))

    def convert(item: Any) -> Any:
        if isinstance(item, list):
            return [convert(x) for x in item]
        name = names[item]
        # DPIAT treats every leaf module as an item; only its own layer classes score > 0
        return index[name] if isinstance(item, DPIAT_CLASSES) and name in index else f"~{name}"

    return [convert(x) for x in items]


def _graft_items(arch: Architecture, blocks: list[Block] | None = None) -> list:
    return [b.layers if len(b.layers) > 1 else b.layers[0]
            for b in (arch.blocks if blocks is None else blocks)]


def _stage_of(block) -> str | None:
    """The module holding a multi-layer block (``s3`` for ``s3.b2``, ``layer1`` for
    ``layer1.0``); None for single-layer blocks and top-level blocks."""
    if len(block.layers) < 2:
        return None
    return block.name.rpartition(".")[0] or None


def _stages(blocks: list[Block]) -> list[str]:
    return list(dict.fromkeys(s for b in blocks if (s := _stage_of(b)) is not None))


class _Stage(list):
    """The blocks of one named stage (``layer2``, ``s3``, ``blocks.4``)."""

    def __init__(self, name: str, blocks: list):
        super().__init__(blocks)
        self.name = name


def _staged_items(blocks: list[Block]) -> list:
    """Blocks grouped by stage: [stem layers, [block, block, ...], [block, ...], head layers]."""
    items: list = []
    current, key = None, None
    for b in blocks:
        stage = _stage_of(b)
        if stage is None:
            current = key = None
            items.append(b.layers if len(b.layers) > 1 else b.layers[0])
        elif stage == key:
            current.append(b.layers)
        else:
            current, key = _Stage(stage, [b.layers]), stage
            items.append(current)
    return items


def _cut_like(arch: Architecture, other: Architecture) -> list[Block]:
    """`arch`'s blocks, where a block that DPIAT's standardisation flattened (a module with
    more single layers than blocks) is one that `other` keeps cut into blocks (it has two or
    more blocks of several layers inside that module) regrouped as if it had not been
    flattened: edgenext_xx_small's last stage (a downsampling norm and conv, two blocks) is
    one flat block, edgenext_x_small's (three blocks) is not, and the flat DP then left the
    target's downsampling at init and filled a block's norms from the head's."""
    out: list[Block] = []
    for block in arch.blocks:
        inside = block.name and len(block.layers) > 1 and sum(
            len(b.layers) > 1 and b.name.startswith(block.name + ".") for b in other.blocks)
        cut = _unflattened(arch, block) if inside and inside > 1 else []
        if len(_units(block.name, cut)) > 1:
            out.extend(cut)
        else:  # not flattened, flattened in both, or no repeated units inside
            out.append(block)
    return out


def _units(name: str, blocks: list[Block]) -> set[str]:
    """The repeated units (``blocks.0``, ``blocks.1``: a path ending in an index) below
    module `name` that hold some multi-layer block of `blocks`."""
    found = set()
    for b in blocks:
        parts = b.name[len(name) + 1:].split(".")
        digits = [k for k, part in enumerate(parts) if part.isdigit()]
        if len(b.layers) > 1 and digits:
            found.add(".".join(parts[:digits[0] + 1]))
    return found


def _unflattened(arch: Architecture, block: Block) -> list[Block]:
    """`block`'s layers grouped by DPIAT's standardisation over its module's tree, without
    flattening that module (`trace.group_layers`)."""
    try:
        module = arch.model.get_submodule(block.name)
    except AttributeError:  # a name that is no module path: left as it is
        return [block]
    return group_layers(arch.model, [arch.layers[i] for i in block.layers], module)


def _graft_pair_items(source: Architecture, target: Architecture) -> tuple[list, list]:
    """Two networks split into the same named stages (one family at two sizes: ``s1``..``s4``
    of RegNets, ``layer1``..``layer4`` of ResNets) are matched stage to stage, blocks inside
    stages: a stage with an extra block cannot shift every later block into the next stage
    (regnetx_004 → regnetx_006, 2 vs 3 blocks in s2, 7 vs 5 in s3), and a stage only matches
    its namesake — in a uniformly wider network a stage often has the very shapes of the
    source's *next* stage (mobilenetv2_100 → _140: ×1.4 ≈ the stage-to-stage growth), which
    shape scores alone would pair. Otherwise, blocks are one flat sequence and the DP finds
    the correspondence."""
    stages = _stages(source.blocks)
    if len(stages) > 1 and stages == _stages(target.blocks):
        return _staged_items(source.blocks), _staged_items(target.blocks)
    return _graft_items(source), _graft_items(target)


def _cut_pair_items(source: Architecture, target: Architecture) -> tuple[list, list] | None:
    """The flat block items of the two networks with a block flattened in one of them only
    cut like the other (`_cut_like`); None when nothing is cut that way, or when the two are
    matched stage to stage (`_graft_pair_items`)."""
    stages = _stages(source.blocks)
    if len(stages) > 1 and stages == _stages(target.blocks):
        return None
    src, tgt = _cut_like(source, target), _cut_like(target, source)
    if src == source.blocks and tgt == target.blocks:
        return None
    return _graft_items(source, src), _graft_items(target, tgt)


METHODS: dict[str, Method] = {
    "dpiat": Method("dpiat", _dpiat_items, dpiat_score),
    "graft": Method("graft", _graft_items, graft_score, _graft_pair_items, stride_tie_break),
}


def get_method(method: str) -> Method:
    try:
        return METHODS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}") from None


#: how much a pair's shape score adds to the 1 every holding pair scores (`_Aligner.by_holds`):
#: it only breaks ties between placements that hold as many source layers
HOLDS_TIE_BREAK = 0.01


#: graft_score memoised across alignments (a zoo ranking aligns one target with every entry)
_GRAFT_SCORES = GraftScores()


class _Aligner:
    """Scores and aligns item lists, recursively. With `by_role`, the first block of a named
    stage only pairs with the first block of its namesake, and two blocks made of the same
    sequence of layer kinds pair their layers position by position (see `match`)."""

    def __init__(self, source: Architecture, target: Architecture, method: Method,
                 by_role: bool = False, by_stride: bool | Callable[[Layer, Layer], bool] = False,
                 by_kind: bool = False, by_holds: bool = False):
        self.source, self.target, self.method = source, target, method
        #: pairs that score 0: convs on other steps of the network (`by_stride`: a test of a
        #: conv pair, True for `_strides_differ`); a depthwise conv and a dense one, and
        #: blocks whose convs are all such pairs (`by_kind`)
        self.by_role, self.by_stride, self.by_kind = by_role, bool(by_stride), by_kind
        self.apart = by_stride if callable(by_stride) else _strides_differ
        #: `by_holds`: only pairs whose target holds the source (`holds`) score, every such
        #: pair alike but for a tie-break by its score (`HOLDS_TIE_BREAK`): the DP then uses
        #: as many source layers as it can place in a layer holding them, rather than the
        #: closest shapes
        self.by_holds = by_holds
        self.cache: dict[tuple[int, int], tuple[float, list]] = {}
        # the default method's layer-pair scores, memoised by what they read (`GraftScores`)
        self.memo = (_GRAFT_SCORES, _GRAFT_SCORES.keys(source.layers),
                     _GRAFT_SCORES.keys(target.layers)) if method.score is graft_score else None

    def item_score(self, s: Any, t: Any) -> float:
        if isinstance(s, _Stage) and isinstance(t, _Stage) and s.name != t.name:
            return 0.0
        if isinstance(s, list) and isinstance(t, list):
            if self.by_kind and self._roles_apart(s, t):
                return 0.0
            return self.lists(s, t)[0]
        if isinstance(s, int) and isinstance(t, int):
            return self.layer_score(s, t)
        return 0.0

    def layer_score(self, s: int, t: int) -> float:
        """The score of source layer `s` for target layer `t`, with the `by_*` rules and the
        method's tie-break; the method's own score read from the memo where it has one."""
        x, y = self.source.layers[s], self.target.layers[t]
        if (self.by_kind and _kinds_differ(x, y)) or (self.by_stride and self.apart(x, y)):
            return 0.0
        memo = self.memo
        score = (self.method.score(x, y) if memo is None
                 else memo[0].score(memo[1][s], memo[2][t], x, y))
        if self.by_holds:
            if score <= 0 or not holds(x, y):
                return 0.0
            score = 1.0 + HOLDS_TIE_BREAK * score
        tie = self.method.tie_break
        return score * tie(x, y) if tie else score

    def _roles_apart(self, src: list, tgt: list) -> bool:
        """Whether two blocks of layers have convs and every conv pair between them is a
        depthwise one and a dense one (`_kinds_differ`): their norms alone would pair them."""
        if not all(isinstance(i, int) for i in (*src, *tgt)):
            return False
        a = [self.source.layers[i] for i in src if self.source.layers[i].kind == "conv"]
        b = [self.target.layers[i] for i in tgt if self.target.layers[i].kind == "conv"]
        return bool(a and b) and all(_kinds_differ(x, y) for x in a for y in b)

    @staticmethod
    def _kinds(items: list, arch: Architecture) -> list | None:
        """(kind, depthwise) of each layer of a block; None for lists holding lists."""
        if not all(isinstance(i, int) for i in items):
            return None
        return [(arch.layers[i].kind, arch.layers[i].depthwise) for i in items]

    def lists(self, src: list, tgt: list) -> tuple[float, list]:
        key = (id(src), id(tgt))
        if key not in self.cache:
            # a block of layers (what a zoo ranking spends its time on: 1.5 M pairs for 50
            # entries) is scored without item_score's dispatch on item types
            score = (self.layer_score if all(isinstance(i, int) for i in (*src, *tgt))
                     else self.item_score)
            scores = [[score(s, t) for s in src] for t in tgt]
            if self.by_role and isinstance(src, _Stage) and isinstance(tgt, _Stage):
                scores = [[v if (i == 0) == (j == 0) else 0.0 for j, v in enumerate(row)]
                          for i, row in enumerate(scores)]
            elif (self.by_role and (kinds := self._kinds(src, self.source)) is not None
                  and kinds == self._kinds(tgt, self.target)):
                scores = [[v if i == j else 0.0 for j, v in enumerate(row)]
                          for i, row in enumerate(scores)]
            value, pairs = align(scores, len(src))
            self.cache[key] = (value, [(None if j is None else src[j], None if i is None else tgt[i],
                                        0.0 if i is None or j is None else scores[i][j])
                                       for j, i in pairs])
        return self.cache[key]

    def layer_pairs(self, src: list, tgt: list, out: dict[int, tuple[int, float]]) -> None:
        for s, t, score in self.lists(src, tgt)[1]:
            if s is None or t is None:
                continue
            if isinstance(s, list) and isinstance(t, list):
                self.layer_pairs(s, t, out)
            elif isinstance(s, int) and isinstance(t, int):  # the score, without tie-breaks
                out[t] = (s, self.method.score(self.source.layers[s], self.target.layers[t]))


def gated_off(target: Architecture, pairs: dict[int, int | None],
              opened: Collection[int] = ()) -> list[int]:
    """Target blocks whose branch stays shut after the graft: they hold a gate (a layer
    scale that starts near zero, ``Layer.gate``) that no source scale is copied into, so the
    weights grafted into them do not act until training opens the gate. Read off the
    architectures alone: a source's scale is assumed open (trained). `opened`: gates the
    graft sets open (`openable_gates`, in a pair of one family)."""
    shut = []
    for b, block in enumerate(target.blocks):
        gates = [i for i in block.layers if target.layers[i].gate]
        if gates and all(pairs.get(i) is None and i not in opened for i in gates):
            shut.append(b)
    return shut


def openable_gates(target: Architecture, pairs: dict[int, int | None]) -> set[int]:
    """Layer scales (``Layer.gate`` of kind ``param``) that no source scale is copied into,
    in target blocks whose every other layer receives a source layer: the source block, without a scale,
    computes its branch at full scale, so a graft within one family sets them to 1 (a ViT
    grafted onto its layer-scale twin then computes the source's function). A zero-initialised
    norm is no such scale: a source block has its own norm there."""
    opened: set[int] = set()
    for block in target.blocks:
        gates = [i for i in block.layers if target.layers[i].gate
                 and target.layers[i].kind == "param" and pairs.get(i) is None]
        others = [i for i in block.layers if not target.layers[i].gate]
        # every other layer of the block grafted: a branch holding layers at init stays shut
        if gates and others and all(pairs.get(i) is not None for i in others):
            opened.update(gates)
    return opened


def shut_layers(target: Architecture, pairs: dict[int, int | None],
                method: str = DEFAULT_METHOD, opened: Collection[int] = ()) -> set[int]:
    """Indices of the target layers inside blocks left gated off (none for ``dpiat``)."""
    if get_method(method).name != "graft":
        return set()
    return {i for b in gated_off(target, pairs, opened) for i in target.blocks[b].layers}


def keep_shut(target: Architecture, pairs: dict[int, int | None]) -> dict[int, int | None]:
    """`pairs` with every gate of the target unpaired: what a distant pair's graft does, which
    leaves the target's gates at their init (see ``transfer(min_score=)``)."""
    return {i: None if target.layers[i].gate else s for i, s in pairs.items()}


def holds(small: Layer, large: Layer) -> bool:
    """Whether `large` is `small`'s kind and at least as large in every dimension (a graft of
    `small` into `large` can keep everything `small` computes)."""
    wa, wb = small.weight_shape, large.weight_shape
    if small.kind != large.kind or small.depthwise != large.depthwise or (wa is None) != (wb is None):
        return False
    if wa is None:  # tokens, tables, scales (resampled), recurrent layers (an LSTM is no GRU)
        return small.type == large.type
    if len(wa) != len(wb):
        return False
    # the model's input channels are mapped, not held: any count onto any other by a mixing
    # matrix that keeps a gray image's response (`adapt`)
    skip = 1 if small.role == large.role == "input" and small.kind == "conv" else None
    return (all(y >= x for i, (x, y) in enumerate(zip(wa, wb)) if i != skip)
            and _groups_hold(small, large))


def _groups_hold(small: Layer, large: Layer) -> bool:
    """Whether a (not depthwise) grouped conv's groups can hold `small`'s: a grouped weight
    is (out, in / groups, …), so its shape alone does not say so. An ungrouped conv is no
    grouped one's (each output would read only its group's inputs: a 4 → 8 conv and an
    8 → 8 conv in 2 groups have one weight shape), and more groups must each write at least
    as many channels as a source group (`adapt.group_map` fills each target group from one
    source group); fewer groups pack whole source groups."""
    if small.kind != "conv" or large.kind != "conv" or small.depthwise or large.depthwise:
        return True
    ga, gb = max(small.groups, 1), max(large.groups, 1)
    if ga == gb or gb < ga:
        return True
    if ga == 1:
        return False
    return bool(small.out_dim and large.out_dim) and large.out_dim // gb >= small.out_dim // ga


def contains(matching: Matching, *, classifier: bool = True) -> bool:
    """Whether the target contains the source: every source layer initialises some target
    layer, and every target layer initialised holds its source layer (same kind, at least as
    large in every dimension) — growth, where the graft is function-preserving and the
    source's norm statistics stay exact. ``classifier=False``: the layers producing the output
    may differ (another class count) or be missing (a backbone, ``num_classes=0``)."""
    src, tgt = matching.source, matching.target
    pairs = [(s, t) for t, s in matching.pairs.items() if s is not None]
    needed = {i for i, layer in enumerate(src.layers) if classifier or layer.role != "output"}
    return (all(holds(src.layers[s], tgt.layers[t]) for s, t in pairs
                if classifier or tgt.layers[t].role != "output")
            and needed <= {s for s, _ in pairs})


def contained(matching: Matching, *, classifier: bool = True) -> bool:
    """Whether the source contains the target (a shrink within a family): every target layer
    is initialised by a source layer that holds it, from a source block made of the same
    kinds of layers (`_like_blocks`: a family that only shares shapes does not count).
    ``classifier=False``: the layers producing the output may differ (another class count)."""
    src, tgt = matching.source, matching.target
    return (all(s is not None and (holds(tgt.layers[t], src.layers[s])
                                   or (not classifier and tgt.layers[t].role == "output"))
                for t, s in matching.pairs.items())
            and _like_blocks(matching))


def embeds(matching: Matching, *, classifier: bool = True) -> bool:
    """Whether every source layer initialises at least one target layer that holds it (a
    repeated block may be narrower: it starts as an identity, see `netgraft.growth`).
    ``classifier=False`` leaves out the layers that produce the output (a target with
    another class count still holds the rest)."""
    src, tgt = matching.source, matching.target
    held = {s for t, s in matching.pairs.items()
            if s is not None and holds(src.layers[s], tgt.layers[t])}
    return all(i in held for i, layer in enumerate(src.layers)
               if classifier or layer.role != "output")


def match(source: Architecture, target: Architecture, method: str = DEFAULT_METHOD) -> Matching:
    """Match `source` layers onto `target` layers (block DP, then layer DP inside blocks).

    With the default method, when that matching leaves some source layer without a target
    layer holding it, two fallbacks are tried for a target that may contain the source:
    pairing blocks by role, then layers by module name; the first that holds every source
    layer is kept (growth within a family, where it is the function-preserving matching).

    With the default method, ``value`` is scaled by the share of the matched layers' scores
    that lies outside target blocks left gated off after the graft (see `gated_off`): what
    those receive does not reach the output, so a source grafted into a ConvNeXt from another
    family gives mostly its stem, downsampling layers and head.

    With the default method, when some target layer is left unmatched and both models are of
    one class, a block that DPIAT's standardisation flattened in one network only is also
    tried cut like the other's (`_cut_like`); that matching is kept when it fills more of
    the target."""
    m = get_method(method)
    found = _matched(source, target, m, *m.both(source, target))
    if (m.name == "graft" and _one_class(source, target)
            and any(s is None for s in found.pairs.values())
            and (cut := _cut_pair_items(source, target)) is not None):
        # a stage flattened in one network only, cut like the other's: kept when the target
        # then holds every source layer where it did not, or more of the target is filled
        # (edgenext_xx_small → x_small 76% → 100%; cs3darknet_m → _l is better left as is)
        other = _matched(source, target, m, *cut)
        if _fill(other) > _fill(found):
            found = other
    if m.name == "graft" and _one_class(source, target):
        found = _lone_namesakes(found, m)
    return found


def _lone_namesakes(matching: Matching, m: Method) -> Matching:
    """Fill the target layers the grouping kept as blocks of their own (a layer scale) that
    the matching left unmatched with their namesake source layer, when it has their type and
    shapes it holds (one class: a module path names the same part in both). Such a layer lies
    between two blocks of a run the block DP gave one source block; its score against that
    block is 0, so the run leaves it unmatched, and where the blocks alternate with it
    (EfficientFormerV2's MLP and its layer scale ls2) the DP's ties can put the run first:
    stages.0.blocks.0.ls2 stayed at its 1e-5 init under its copied MLP."""
    src, tgt = matching.source, matching.target
    by_name = {layer.name: layer for layer in src.layers}
    pairs = dict(matching.pairs)
    scores = dict(matching.scores)
    for t, s in matching.pairs.items():
        layer = tgt.layers[t]
        twin = by_name.get(layer.name)
        if (s is not None or twin is None or layer.block < 0
                or _block_prefix(layer.name) is None  # a plain stack's "3": a place, no role
                or not tgt.blocks[layer.block].single or twin.type != layer.type
                or not holds(twin, layer) or (score := m.score(twin, layer)) <= 0):
            continue
        pairs[t], scores[t] = twin.index, score
    if pairs == matching.pairs:
        return matching
    return _rescored(Matching(method=matching.method, source=src, target=tgt, pairs=pairs,
                              scores=scores, value=0.0), matching.plain_value)


def _one_class(source: Architecture, target: Architecture) -> bool:
    """Whether both models are instances of one class (one family at two sizes): only then
    can a module path name the same part in both. Read from the recorded class, so that a
    fingerprint (whose model is a bare skeleton) answers as the traced model does."""
    return source.model_class is not None and source.model_class == target.model_class


def _fill(matching: Matching) -> tuple[bool, int]:
    """(whether the target holds every source layer but the classifier, how many target
    parameters have a source layer)."""
    return (embeds(matching, classifier=False),
            sum(matching.target.layers[t].numel for t, s in matching.pairs.items()
                if s is not None))


def _matched(source: Architecture, target: Architecture, m: Method, src_items: list,
             tgt_items: list) -> Matching:
    """`match` for these block items: the block DP, then its fallbacks."""
    found = _aligned(source, target, m, src_items, tgt_items)
    # (another class count does not make a grown network another one: classifier=False)
    if (not (embeds(found, classifier=False) or contained(found, classifier=False))
            and any(isinstance(i, _Stage) for i in src_items)
            and _like_blocks(by_role := _aligned(source, target, m, src_items, tgt_items, True))
            and (embeds(by_role, classifier=False) or contained(by_role, classifier=False))):
        # Shape scores alone can miss a containing target. Inside a stage of a ×2-wider
        # target the later blocks have the shapes of the source's *first* block (its input
        # width is the previous stage's), so the DP pairs the source's first block with one
        # of them and the stage's downsampling block with nothing (mobilenetv2_050 → _100);
        # inside a ×2.8-wider block, the source's expanded norm is closest in size to the
        # target's projected one (mobilenetv2_050 → _140). When pairing by role — first
        # block to first block, layers of like blocks in order — makes the target hold every
        # source layer, that matching is the function-preserving one. Its DP value is
        # the plain DP's (`dp_value`), which similarity and the zoo's cache read.
        found = _rescored(by_role, found.plain_value)
    elif (m.name == "graft" and (not embeds(found, classifier=False) or _mixes(found))
          and (by_name := _by_name(source, target, m, found)) is not None):
        found = by_name
    elif (m.name == "graft" and (narrowed := _narrowed_by_name(source, target, m, found))
          is not None):
        found = narrowed
    elif (m.name == "graft" and _one_class(source, target)
          and (not embeds(found, classifier=False)
               or _fills_across(found, _steps_apart(source, target)) or _skips_norms(found)
               or _widens_unfilled(found))
          and (strided := _strided(source, target, m, src_items, tgt_items,
                                   whole_blocks=embeds(found, classifier=False)
                                   and not _skips_norms(found))) is not None):
        # A plain conv stack grown deeper *and* wider has no target conv of a source conv's
        # shape, and shape scores (stride is only a tie-break) put the source's strided conv
        # on a new stride-1 one (16, 32 → 24, 48: 0.50 against 0.44 for the strided 24→48),
        # its norm after it, so the strided target conv got nothing. Where keeping every conv
        # on its own stride makes the target hold every source layer, that is the matching;
        # its DP value stays the plain DP's, which similarity and the zoo's cache read.
        # Where shape scores still pair a stage with the source's next one (a ×2 wider stack,
        # two convs a stage → three: the target's stage k has the shapes of the source's
        # stage k + 1), a held conv sits on another stride (a 4-stage stack, one conv a stage
        # → two, ×2 wider), or a run of one conv passes over the norm after its first target
        # (`_skips_norms`, vgg11_bn → vgg19_bn), a plain stack is matched scoring only the
        # pairs that hold their source, alike (`_strided`). A conv whose input has another
        # resolution than its source's (a max-pool between, vgg11_bn → vgg16_bn: a stage-5
        # conv on stage 4's third) counts as one on another stride (`_steps_apart`).
        found = _rescored(strided, found.plain_value)
    elif (m.name == "graft" and _one_class(source, target) and _fills_across(found, _kinds_differ)
          and not _fills_across(kept := _aligned(source, target, m, src_items, tgt_items,
                                                 by_kind=True), _kinds_differ)):
        # Within one family a depthwise conv never plays a dense one's part. repvit_m1_1 →
        # m1_0 (narrower, one block more in stage 2): the block DP, shifted by the extra
        # block, filled a channel mixer (dense 1×1) from a token mixer (depthwise 3×3), carried
        # by their norms' scores, and the outputs came out ~5e3× the source's. Kept when no
        # conv is then filled across kinds; the DP value stays the plain DP's.
        found = _rescored(kept, found.plain_value)
    return found


def _strided(source: Architecture, target: Architecture, m: Method, src_items: list,
             tgt_items: list, whole_blocks: bool = False) -> Matching | None:
    """The matching keeping convs on their stride in which the target holds every source
    layer and fills no conv from one of another stride or input resolution (`_steps_apart`):
    the plain DP's with that constraint,
    else, in a plain stack (no named stages), one scoring only the pairs that hold their
    source (`_Aligner.by_holds`), else that with each layer and its norm one item
    (`_normed_units`); None when none is. With `whole_blocks`, one that fills part of a
    block but not its convs (`_splits_blocks`) is none either."""
    tries = [(src_items, tgt_items, False)]
    if not (_stages(source.blocks) or _stages(target.blocks)):
        # only for plain stacks (blocks are single layers or top-level modules): in a staged
        # network, holding every layer does not make one family (mobilenetv2_050's layers
        # all fit in efficientnet_b3's, whose blocks add squeeze-excitation)
        tries.append((src_items, tgt_items, True))
        units = _normed_units(src_items, source), _normed_units(tgt_items, target)
        if units != (src_items, tgt_items):
            tries.append((*units, True))
    strict = _steps_apart(source, target)
    # kept on their strides alone first: a matching that already keeps every conv on its
    # input resolution stays as it was (vgg11_bn → vgg19_bn); else convs are kept on their
    # resolution too (a max-pool between, vgg11_bn → vgg16_bn)
    for apart in dict.fromkeys((_strides_differ, strict)):
        for src_at, tgt_at, holding in tries:
            found = _aligned(source, target, m, src_at, tgt_at, by_stride=apart,
                             by_holds=holding)
            if (embeds(found, classifier=False) and not _fills_across(found, strict)
                    and not _skips_norms(found) and not _widens_unfilled(found)
                    and not (whole_blocks and _splits_blocks(found))):
                return found
    return None


def _splits_blocks(matching: Matching) -> bool:
    """Whether some target block of several layers has layers filled and a conv left
    unfilled: a matching kept off other strides by leaving a block's strided conv out, not a
    placement of the source's blocks (a flat MobileNetV2 grown deeper, whose stride-1 repeat
    of a block has the shapes of the source's next, strided, block)."""
    tgt = matching.target
    return any(len(b.layers) > 1 and any(matching.pairs.get(i) is not None for i in b.layers)
               and any(matching.pairs.get(i) is None and tgt.layers[i].kind == "conv"
                       for i in b.layers)
               for b in tgt.blocks)


def _normed_units(items: list, arch: Architecture) -> list:
    """`items` with each layer and the norm right after it that reads it (a conv and its
    batch norm) made one item, inside plain lists too: a run of one source conv over several
    target convs then carries its norm along, rather than passing over the norm after the
    first (vgg11_bn → vgg19_bn). Named stages are left as they are."""
    if isinstance(items, _Stage) or not isinstance(items, list):
        return items
    out: list = []
    k = 0
    while k < len(items):
        item = items[k]
        nxt = items[k + 1] if k + 1 < len(items) else None
        if (isinstance(item, int) and isinstance(nxt, int)
                and normalised(arch.layers[nxt]) == arch.layers[item].name):
            out.append([item, nxt])
            k += 2
            continue
        out.append(_normed_units(item, arch))
        k += 1
    return out


def normalised(layer: Layer) -> str | None:
    """The name of the layer whose output a norm reads, when it reads one layer's (a conv's
    batch norm); None for any other layer."""
    lay = layer.in_layout
    return lay[0][0] if layer.kind in NORM_KINDS and lay and len(lay) == 1 else None


def _skips_norms(matching: Matching) -> bool:
    """Whether `matching` leaves a target norm unfilled right after a target layer filled
    from a source layer that a source norm reads: that norm then fills a later target norm, or
    none (a run of one source conv over several target convs passes over the norm after the
    first, vgg11_bn → vgg19_bn: the source's features.19 went to the norm four layers on,
    past a max-pool)."""
    src, tgt = matching.source, matching.target
    normed = {normalised(layer) for layer in src.layers} - {None}
    index = {layer.name: layer.index for layer in tgt.layers}
    for layer in tgt.layers:
        if matching.pairs.get(layer.index) is not None or normalised(layer) not in index:
            continue
        s = matching.pairs.get(index[normalised(layer)])
        if s is not None and src.layers[s].name in normed:
            return True
    return False


def _widens_unfilled(matching: Matching) -> bool:
    """Whether `matching` leaves unfilled a target layer that changes the width (in ≠ out
    channels) where it cannot start as an identity: a grouped conv (`fixed_width`), or any
    layer whose norm right after it was filled from a source norm (a grouped 8 → 16 conv of a
    deeper stack left at its init while the norm after it got the source's first norm:
    scoring only holding pairs, the source's grouped conv sat on the next, 16 → 16, conv).
    A layer of one width left unfilled starts as the identity, and so does a dense one that
    widens, with the norms after it (`netgraft.growth.set_identity`)."""
    tgt = matching.target
    if any(matching.pairs.get(layer.index) is None and fixed_width(layer)
           for layer in tgt.layers):
        return True
    index = {layer.name: layer.index for layer in tgt.layers}
    for layer in tgt.layers:
        if matching.pairs.get(layer.index) is None or normalised(layer) not in index:
            continue
        read = tgt.layers[index[normalised(layer)]]
        if (matching.pairs.get(read.index) is None and read.kind in ("conv", "linear")
                and read.in_dim and read.out_dim and read.in_dim != read.out_dim):
            return True
    return False


def fixed_width(layer: Layer) -> bool:
    """Whether `layer` is a grouped (not depthwise) conv that changes the width: it cannot
    start as the identity (`netgraft.growth.set_identity`), as each output reads only its
    group's inputs, so a deeper target's such conv needs a source conv of its own."""
    return (layer.kind == "conv" and grouped_conv(layer)
            and bool(layer.in_dim and layer.out_dim) and layer.in_dim != layer.out_dim)


def _fills_across(matching: Matching, differ: Callable[[Layer, Layer], bool]) -> bool:
    """Whether `matching` fills some target layer from a source layer `differ` tells apart
    from it (`_strides_differ`, `_steps_apart`, `_kinds_differ`)."""
    src, tgt = matching.source.layers, matching.target.layers
    return any(s is not None and differ(src[s], tgt[t]) for t, s in matching.pairs.items())


def _kinds_differ(source: Layer, target: Layer) -> bool:
    """Whether one conv is depthwise and the other dense."""
    return source.kind == target.kind == "conv" and source.depthwise != target.depthwise


def _strides_differ(source: Layer, target: Layer) -> bool:
    """Whether two convs move over their input with other strides."""
    return source.kind == target.kind == "conv" and source.stride != target.stride


def _grids_differ(source: Layer, target: Layer) -> bool:
    """Whether two convs read inputs of other spatial resolutions, both known: a max-pool
    (no parameters, so no traced layer) lies before one of them and not the other, and the
    same weights then see another grid — as a conv on another stride would."""
    return (source.kind == target.kind == "conv" and source.in_size is not None
            and target.in_size is not None and source.in_size != target.in_size)


def _steps_apart(source: Architecture, target: Architecture) -> Callable[[Layer, Layer], bool]:
    """The test of a conv pair on another step of the network: another stride
    (`_strides_differ`), or, when both were traced on inputs of one spatial shape, another
    input resolution (`_grids_differ`). Resolutions of two inputs of other sizes do not
    compare (timm's efficientnet_b0 and _b3 trace at their own default sizes)."""
    a, b = source.input_shape, target.input_shape
    if not a or not b or tuple(a[2:]) != tuple(b[2:]):
        return _strides_differ
    return lambda x, y: _strides_differ(x, y) or _grids_differ(x, y)


def _narrowed_by_name(source: Architecture, target: Architecture, m: Method,
                      found: Matching) -> Matching | None:
    """For one family made narrower at the same depth — the same layer names, each source
    layer holding its namesake — the pairing by name, when the DP's skips some source layer:
    shape scores favour a layer with one dimension equal over the namesake halved in both (a
    gated MLP halved: its fc1 (192, 96) → (96, 48) went to fc2 (96, 96), fc2 filling both
    target layers and fc1 unused). None otherwise; the DP value stays `found`'s."""
    if not _one_class(source, target) or len(source.layers) != len(target.layers):
        return None
    if {s for s in found.pairs.values() if s is not None} == set(range(len(source.layers))):
        return None  # every source layer already used
    by_name = {layer.name: layer for layer in source.layers}
    pairs: dict[int, int | None] = {}
    for layer in target.layers:
        twin = by_name.get(layer.name)
        if twin is None or twin.type != layer.type or not (
                holds(layer, twin) or layer.role == "output"):
            return None
        pairs[layer.index] = twin.index
    scores = {t: m.score(source.layers[s], target.layers[t]) for t, s in pairs.items()}
    return _rescored(Matching(method=m.name, source=source, target=target, pairs=pairs,
                              scores=scores, value=0.0), found.plain_value)


def _mixes(matching: Matching) -> bool:
    """Whether a matching whose target holds every source layer also fills some target layer
    from a layer of another kind or kernel size: in skresnet34, the DP filled a repeated
    block's 1×1 attention convs from the source's 3×3 path convs, which the same module names
    would not. (A repeated block narrower than its source is no such case: it starts as the
    identity.)"""
    src, tgt = matching.source, matching.target

    def kernel(layer: Layer):
        return layer.kind, (layer.weight_shape or ())[2:]

    return any(s is not None and kernel(src.layers[s]) != kernel(tgt.layers[t])
               for t, s in matching.pairs.items())


def _by_name(source: Architecture, target: Architecture, m: Method,
             found: Matching) -> Matching | None:
    """Pair every source layer with the target layer of the same module name, when the
    target has each one and it holds it (one family, grown by depth: the same code builds
    both). The last resort for a containing target whose block grouping differs from its
    source's — tf_efficientnetv2_b0's lone stage-0 conv faces b1's two-block stage. None
    when some source layer has no namesake holding it. The DP value stays `found`'s."""
    by_name = {layer.name: layer for layer in target.layers}
    pairs: dict[int, int | None] = {layer.index: None for layer in target.layers}
    for layer in source.layers:
        twin = by_name.get(layer.name)
        if twin is None or twin.type != layer.type or not (
                holds(layer, twin) or layer.role == "output"):  # a head: any class count
            return None
        pairs[twin.index] = layer.index
    # a block both have must have the same layers: a family that shares module names but not
    # blocks (mobilenetv2's blocks.1.0 vs efficientnet's, which adds squeeze-excitation) is
    # another architecture, not a grown one
    src_names = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        if pairs[layer.index] is None and _block_prefix(layer.name) is not None and any(
                n.startswith(_block_prefix(layer.name) + ".") for n in src_names):
            return None
    # a block the source lacks (blocks.1.2) repeats the nearest earlier one it has (blocks.1.1),
    # as the block DP's runs do; it starts as the identity (netgraft.growth)
    for t in [t for t, s in pairs.items() if s is None]:
        earlier = _earlier_namesake(target.layers[t].name, src_names)
        if earlier is not None and m.score(earlier, target.layers[t]) > 0:
            pairs[t] = earlier.index
    scores = {t: 0.0 if s is None else m.score(source.layers[s], target.layers[t])
              for t, s in pairs.items()}
    return _rescored(Matching(method=m.name, source=source, target=target, pairs=pairs,
                              scores=scores, value=0.0), found.plain_value)


def _rescored(matching: Matching, plain_value: float | None) -> Matching:
    """`matching` carrying another plain DP value (and the open value computed from it)."""
    value = plain_value if plain_value is not None else matching.value
    matching.plain_value = value
    matching.value = open_value(value, matching.target, matching.pairs, matching.scores,
                                matching.method)
    return matching


def _block_prefix(name: str) -> str | None:
    """A layer's module path up to its deepest numeric part (``blocks.1.2`` for
    ``blocks.1.2.conv_pw``): the block it belongs to; None without a numeric part."""
    parts = name.split(".")
    for p in reversed(range(len(parts) - 1)):
        if parts[p].isdigit():
            return ".".join(parts[:p + 1])
    return None


def _like_blocks(matching: Matching) -> bool:
    """Whether every target block that received source layers has the same sequence of
    layer kinds as the source block they came from (most of them): growth within a family
    whose blocks stay alike, not another family with the same stage names."""
    src, tgt = matching.source, matching.target
    for block in tgt.blocks:
        sources = [src.layers[s].block for i in block.layers
                   if (s := matching.pairs.get(i)) is not None]
        if not sources:
            continue
        origin = src.blocks[max(set(sources), key=sources.count)]
        if ([(tgt.layers[i].kind, tgt.layers[i].depthwise) for i in block.layers]
                != [(src.layers[i].kind, src.layers[i].depthwise) for i in origin.layers]):
            return False
    return True


def _aligned(source: Architecture, target: Architecture, m: Method, src_items: list,
             tgt_items: list, by_role: bool = False,
             by_stride: bool | Callable[[Layer, Layer], bool] = False,
             by_kind: bool = False, by_holds: bool = False) -> Matching:
    aligner = _Aligner(source, target, m, by_role, by_stride, by_kind, by_holds)
    value, _ = aligner.lists(src_items, tgt_items)
    found: dict[int, tuple[int, float]] = {}
    aligner.layer_pairs(src_items, tgt_items, found)
    pairs = {layer.index: found[layer.index][0] if layer.index in found else None
             for layer in target.layers}
    scores = {t: found[t][1] if t in found else 0.0 for t in pairs}
    return Matching(method=m.name, source=source, target=target, pairs=pairs, scores=scores,
                    value=open_value(value, target, pairs, scores, m.name), plain_value=value)


def _earlier_namesake(name: str, layers: dict[str, Layer]) -> Layer | None:
    """The layer of `layers` named like `name` with its deepest numeric part lowered as
    little as possible (``blocks.1.2.conv_pw`` → ``blocks.1.1.conv_pw``); None if none."""
    parts = name.split(".")
    for p in reversed(range(len(parts))):
        if parts[p].isdigit():
            for n in range(int(parts[p]) - 1, -1, -1):
                found = layers.get(".".join([*parts[:p], str(n), *parts[p + 1:]]))
                if found is not None:
                    return found
            return None
    return None


def open_value(value: float, target: Architecture, pairs: dict[int, int | None],
               scores: dict[int, float], method: str = DEFAULT_METHOD,
               opened: Collection[int] = ()) -> float:
    """A DP value scaled, for the default method, by the share of the matched layers' scores
    that lies outside target blocks left gated off (see `gated_off`)."""
    total = sum(scores.values())
    if total <= 0:
        return value
    shut = sum(scores[i] for i in shut_layers(target, pairs, method, opened))
    return value * (1.0 - shut / total)


def dp_value(source: Architecture, target: Architecture, method: str = DEFAULT_METHOD) -> float:
    """S(source → target): the value of the top-level alignment, as is (``match(...).value``
    is this less what target blocks left gated off receive)."""
    m = get_method(method)
    return _Aligner(source, target, m).lists(*m.both(source, target))[0]
