"""Architecture similarity from the architectures alone (no data, no training).

DPIAT's definition (section 4 of the paper): with S(A→B) the value of the top-level matching
of A onto B, sim(A, B) = sqrt(S(A→B)·S(B→A) / (S(A→A)·S(B→B))) — symmetric, in [0, 1], and
1 for identical architectures. The method chooses the matching it is computed from; with the
default one, S(A→B) discounts target blocks left gated off (see ``netgraft.match.gated_off``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from torch import nn

from .match import (DEFAULT_METHOD, Matching, contained, contains, dp_value, keep_shut,
                    open_value, openable_gates)
from .trace import Architecture, trace

#: below this architecture similarity a pair is "distant" (measured: same-family pairs of the
#: benchmark score 0.54–0.90, cross-family pairs 0.04–0.54 — the low end for targets whose
#: residual branches start gated off)
DISTANT_SIMILARITY = 0.4
#: below this similarity (after the gate discount) a default graft leaves the whole target at
#: its init (measured: the 20 pairs of the 40-pair validation scored under it gained −3.6 …
#: +6.1 points over random init after 50 steps, −0.8 on average)
UNRELATED_SIMILARITY = 0.1


def below(value: float, digits: int = 2) -> str:
    """`value`, known to be below some threshold, with `digits` decimals rounded *down*, so
    that a message never reads "0.10 < 0.1" for 0.099 ("0.09 < 0.1"). Rounded from the
    shortest decimal that reads back as `value` (0.29, stored as 0.28999…, stays "0.29")."""
    return str(Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-digits), ROUND_FLOOR))


def similarity_from_values(ab: float, ba: float, aa: float, bb: float) -> float:
    if ab <= 0 or ba <= 0 or aa <= 0 or bb <= 0:
        return 0.0
    return min(1.0, math.sqrt(ab * ba / (aa * bb)))


def one_family(matching: Matching, similarity: float) -> bool:
    """Whether a pair is one family at two sizes: similar enough (≥ ``DISTANT_SIMILARITY``),
    or one network contains the other whatever the score (a 2× width change scores below it:
    convnext_nano → convnext_atto 0.39)."""
    return (similarity >= DISTANT_SIMILARITY or contains(matching, classifier=False)
            or contained(matching, classifier=False))


def closes_gates(matching: Matching, similarity: float) -> bool:
    """Whether a default transfer treats this as a distant pair (not `one_family`)
    (``transfer(min_score="auto")``): weak matches and the target's gates stay at their
    init."""
    return matching.method != "dpiat" and not one_family(matching, similarity)


def unrelated(matching: Matching, similarity: float) -> bool:
    """Whether a default transfer leaves the whole target at its init: a distant pair
    (``closes_gates``) whose similarity is below ``UNRELATED_SIMILARITY``, or a source whose
    convolutions have another dimensionality than the target's (`conv_mismatch`)."""
    if matching.method != "dpiat" and conv_mismatch(matching) is not None:
        return True
    return similarity < UNRELATED_SIMILARITY and closes_gates(matching, similarity)


def conv_dims(arch: Architecture) -> frozenset[int]:
    """The spatial dimensionalities of an architecture's convolutions (1 for Conv1d, 2 for
    Conv2d, 3 for Conv3d; transposed ones included), read off the kernels' shapes."""
    return frozenset(_dims(layer) for layer in arch.layers if _dims(layer) is not None)


def stem_dims(arch: Architecture) -> int | None:
    """The dimensionality of an architecture's first convolution in execution order (its
    stem's: 2 for an image model even when a Conv1d runs inside its attention, as ECA's
    does), or None without convolutions."""
    return next((d for layer in arch.layers if (d := _dims(layer)) is not None), None)


def _dims(layer: Any) -> int | None:
    if layer.kind in ("conv", "conv_transpose") and len(layer.shapes.get("weight", ())) > 2:
        return len(layer.shapes["weight"]) - 2
    return None


def conv_mismatch(matching: Matching) -> str | None:
    """Why the source cannot give the target its convolutions, or None: the source has no
    convolution of the dimensionality of the target's first one (`stem_dims`; a Conv1d
    signal model for a Conv2d image target, even one with a Conv1d inside its ECA attention).
    A graft would paste a 1-D kernel into one row of a 2-D one, which carries nothing of what
    the source learned, and the norms after those convs would get statistics of other
    features: ``transfer`` leaves such a target at its init (`unrelated`), ``Zoo.rank`` ranks
    such a source last and ``rank --then-transfer`` refuses it. A source whose body shares
    the target's dimensionality behind a front-end of another (a Conv2d front-end before
    Conv1d blocks) gives that body."""
    src, tgt = conv_dims(matching.source), stem_dims(matching.target)
    if not src or tgt is None or tgt in src:
        return None
    return (f"{'/'.join(f'{n}-D' for n in sorted(src))} convolutions, the target's are "
            f"{tgt}-D: cannot give its convs")


@dataclass(frozen=True)
class GraftGates:
    """What a default graft does with the target's gates (``Layer.gate``: layer scales near
    zero, residual branches' zero-initialised last norms), and the similarity that follows.

    Within one family (`one_family`, decided with the scales the graft opens counted open)
    a gate that a source scale is copied into is open, and so is a layer scale of a block
    whose every other layer is grafted from a source block without one (`openable_gates`).
    In a distant pair (`closes_gates`) every gate stays at its init, so the blocks behind
    them receive nothing that acts. A source of another conv dimensionality
    (`conv_mismatch`) gives nothing: similarity 0. The one rule `pair_similarity`,
    `weighted_coverage` and ``transfer`` follow."""
    similarity: float
    #: the matching's pairs, with the gates that stay shut unpaired
    pairs: dict[int, int | None]
    #: the layer scales the graft sets to 1
    opened: frozenset[int]


def graft_gates(matching: Matching, ba: float, aa: float, bb: float) -> GraftGates:
    """`GraftGates` of the matching of A onto B, given the values S(B→A), S(A→A), S(B→B)."""
    plain = similarity_from_values(matching.value, ba, aa, bb)
    if matching.plain_value is None or matching.method == "dpiat":
        return GraftGates(plain, dict(matching.pairs), frozenset())
    if conv_mismatch(matching) is not None:  # its convs cannot give the target's anything
        return GraftGates(0.0, keep_shut(matching.target, matching.pairs), frozenset())
    opened = frozenset(openable_gates(matching.target, matching.pairs))
    value = open_value(matching.plain_value, matching.target, matching.pairs, matching.scores,
                       matching.method, opened)
    sim = similarity_from_values(value, ba, aa, bb)
    if one_family(matching, sim):
        return GraftGates(sim, dict(matching.pairs), opened)
    shut = keep_shut(matching.target, matching.pairs)
    value = open_value(matching.plain_value, matching.target, shut, matching.scores,
                       matching.method)
    return GraftGates(similarity_from_values(value, ba, aa, bb), shut, frozenset())


def pair_similarity(matching: Matching, ba: float, aa: float, bb: float) -> float:
    """sim(A, B) from the matching of A onto B and the values S(B→A), S(A→A), S(B→B).

    A distant pair's graft leaves the target's gates shut (``closes_gates``), so there S(A→B)
    also leaves out the blocks behind them: a cross-family source gives a ResNet or RegNet
    target (whose residual branches end in a zero-initialised norm) its stem, shortcuts and
    head only, as it gives a ConvNeXt (layer scales at 1e-6). See `graft_gates`."""
    return graft_gates(matching, ba, aa, bb).similarity


def as_architecture(model: Any) -> Architecture:
    """An Architecture from an Architecture, a module, or a timm model name."""
    if isinstance(model, Architecture):
        return model
    if isinstance(model, str):
        from .models import create_model
        return trace(create_model(model), name=model)
    if isinstance(model, nn.Module):
        return trace(model)
    raise TypeError(f"expected an Architecture, a torch.nn.Module or a model name, "
                    f"got {type(model).__name__}")


def similarity(a: Any, b: Any, method: str = DEFAULT_METHOD) -> float:
    """How alike two architectures are, in [0, 1] (1 = identical), for grafting `a` onto `b`.

    Symmetric, except that with the default method S(a→b) leaves out what `b`'s blocks that
    stay gated off would receive (``match(a, b).value``: a ConvNeXt target whose layer scales
    start near zero gets little from a source with none to copy; in a distant pair also the
    blocks behind `b`'s zero-initialised norms, see `pair_similarity`); the reverse value is
    the plain DP value, so a trained source's gates never count."""
    from .match import match

    a, b = as_architecture(a), as_architecture(b)
    return pair_similarity(match(a, b, method), dp_value(b, a, method), dp_value(a, a, method),
                           dp_value(b, b, method))


def weighted_coverage(source: Any, target: Any, method: str = DEFAULT_METHOD) -> float:
    """Share of the target's parameters that a graft would fill, each matched layer counted
    by its match score (1 = same shape and kind), layers of blocks left gated off counted 0
    (in a distant pair, blocks behind the target's gates, which its graft leaves shut):
    in [0, 1], asymmetric (source → target)."""
    from .match import match, shut_layers

    a, b = as_architecture(source), as_architecture(target)
    m = match(a, b, method)
    total = sum(layer.numel for layer in b.layers)
    if not total:
        return 0.0
    gates = graft_gates(m, dp_value(b, a, method), dp_value(a, a, method), dp_value(b, b, method))
    if unrelated(m, gates.similarity):  # a default graft leaves the whole target at its init
        return 0.0
    shut = shut_layers(b, gates.pairs, method, gates.opened)
    return sum(layer.numel * m.scores[layer.index] for layer in b.layers
               if layer.index not in shut) / total


#: every data-free score of a (source, target) pair, by name. "paper" is DPIAT's definition
#: (its matching and formula); the rest are netgraft's candidates, validated in
#: benchmarks/similarity_validation.py.
SCORES: dict[str, Any] = {
    "paper": lambda a, b: similarity(a, b, "dpiat"),
    "graft": lambda a, b: similarity(a, b, "graft"),
    "coverage": lambda a, b: weighted_coverage(a, b, "graft"),
}


def score_pair(source: Any, target: Any, score: str = "graft") -> float:
    """One named score of how much `source` should help `target` (see `SCORES`)."""
    try:
        fn = SCORES[score]
    except KeyError:
        raise ValueError(f"unknown similarity score {score!r}; choose one of {sorted(SCORES)}") from None
    return float(fn(as_architecture(source), as_architecture(target)))
