"""Architecture similarity from the architectures alone (no data, no training).

DPIAT's definition (section 4 of the paper): with S(A→B) the value of the top-level matching
of A onto B, sim(A, B) = sqrt(S(A→B)·S(B→A) / (S(A→A)·S(B→B))) — symmetric, in [0, 1], and
1 for identical architectures. The method chooses the matching it is computed from; with the
default one, S(A→B) discounts target blocks left gated off (see ``netgraft.match.gated_off``).
"""
from __future__ import annotations

import math
from typing import Any

from torch import nn

from .match import DEFAULT_METHOD, dp_value
from .trace import Architecture, trace


def similarity_from_values(ab: float, ba: float, aa: float, bb: float) -> float:
    if ab <= 0 or ba <= 0 or aa <= 0 or bb <= 0:
        return 0.0
    return min(1.0, math.sqrt(ab * ba / (aa * bb)))


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
    start near zero gets little from a source with none to copy); the reverse value is the
    plain DP value, so a trained source's gates never count."""
    from .match import match

    a, b = as_architecture(a), as_architecture(b)
    return similarity_from_values(match(a, b, method).value, dp_value(b, a, method),
                                  dp_value(a, a, method), dp_value(b, b, method))


def weighted_coverage(source: Any, target: Any, method: str = DEFAULT_METHOD) -> float:
    """Share of the target's parameters that a graft would fill, each matched layer counted
    by its match score (1 = same shape and kind), layers of blocks left gated off counted 0:
    in [0, 1], asymmetric (source → target)."""
    from .match import match, shut_layers

    a, b = as_architecture(source), as_architecture(target)
    m = match(a, b, method)
    total = sum(layer.numel for layer in b.layers)
    if not total:
        return 0.0
    shut = shut_layers(b, m.pairs, method)
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
