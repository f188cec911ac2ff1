"""Convolutions that standardise their weight at every call (timm's ``StdConv2d``, and
``ScaledStdConv2d`` with a gain: the normalizer-free networks' conv, NF-ResNet, NF-RegNet,
NFNet).

Such a conv computes with ``gain · scale · (W − mean) / √(var + eps)``, the mean and variance
taken over each output unit's fan-in. Replicating fan-in channels and dividing their weights —
what keeps a widened plain conv's sums — is undone by the standardisation. Instead, the graft
moves the *standardised* weight, adapted as a plain conv's weight (its replicas sum to the
source's, so it keeps a zero mean over any wider fan-in), and sets each unit's gain so that the
target's standardisation gives back what the source computed with. The source's gains stay
gains (a unit whose gain is 0 keeps its weights), and its weights their direction.
"""
from __future__ import annotations

import torch
from torch import nn


def standardises(module: nn.Module | None) -> bool:
    """A layer that standardises its own weight at every call: scaling that weight changes
    nothing (timm's StdConv2d / ScaledStdConv2d and their "same" variants)."""
    return module is not None and "Std" in type(module).__name__ \
        and isinstance(getattr(module, "weight", None), torch.Tensor)


def gained(module: nn.Module | None) -> bool:
    """A `standardises` conv that scales its standardised weight by a per-unit `gain`
    parameter and a constant `scale` (ScaledStdConv2d)."""
    return (standardises(module) and isinstance(getattr(module, "gain", None), nn.Parameter)
            and getattr(module, "scale", None) is not None
            and getattr(module, "eps", None) is not None)


def _rows(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().double().reshape(weight.shape[0], -1)


@torch.no_grad()
def standardised_weight(module: nn.Module) -> torch.Tensor:
    """A `gained` conv's weight standardised over each unit's fan-in (biased variance, as its
    batch-norm call), before its gain and scale, in the weight's dtype."""
    rows = _rows(module.weight)
    mean, var = rows.mean(1, keepdim=True), rows.var(1, unbiased=False, keepdim=True)
    return ((rows - mean) / (var + module.eps).sqrt()).reshape(module.weight.shape) \
        .to(module.weight.dtype)


@torch.no_grad()
def restore_gain(target: nn.Module, source: nn.Module) -> None:
    """After a graft that wrote an adapted `standardised_weight` of `source` into `target`'s
    weight and the source units' gains into its gain: rescale each target gain so that the
    target computes with the source's gain × scale times that adapted weight (whose mean over
    each fan-in is zero, so standardising it only divides it by its spread)."""
    spread = (_rows(target.weight).var(1, unbiased=False) + target.eps).sqrt()
    factor = spread * float(source.scale) / float(target.scale)
    target.gain.mul_(factor.reshape(target.gain.shape).to(target.gain.dtype))
