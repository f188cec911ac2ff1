"""Convolutions that standardise their weight at every call, with a gain (timm's
``ScaledStdConv2d``, the normalizer-free networks' conv: NF-ResNet, NF-RegNet, NFNet).

Such a conv computes with ``gain · scale · (W − mean) / √(var + eps)``, the mean and variance
taken over each output unit's fan-in. Replicating fan-in channels and dividing their weights —
what keeps a widened plain conv's sums — is undone by the standardisation. Instead, the graft
moves the weight the source *computes with*: it adapts that effective weight as a plain conv's
(its replicas sum to the source's, so it keeps a zero mean over any wider fan-in) and stores it
as the target's weight, with the gain that makes the target's standardisation give it back.
"""
from __future__ import annotations

import torch
from torch import nn


def gained(module: nn.Module | None) -> bool:
    """A conv that standardises its weight over each unit's fan-in and scales it by a per-unit
    `gain` parameter and a constant `scale` (timm's ScaledStdConv2d and its "same" variant)."""
    return (module is not None and "Std" in type(module).__name__
            and isinstance(getattr(module, "gain", None), nn.Parameter)
            and isinstance(getattr(module, "weight", None), torch.Tensor)
            and getattr(module, "scale", None) is not None
            and getattr(module, "eps", None) is not None)


def _rows(weight: torch.Tensor) -> torch.Tensor:
    return weight.reshape(weight.shape[0], -1)


@torch.no_grad()
def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight a `gained` conv computes with: its weight standardised over each unit's
    fan-in (biased variance, as its batch-norm call) times gain × scale."""
    rows = _rows(module.weight.detach().double())
    mean, var = rows.mean(1, keepdim=True), rows.var(1, unbiased=False, keepdim=True)
    gain = module.gain.detach().double().reshape(-1, 1) * float(module.scale)
    return ((rows - mean) / (var + module.eps).sqrt() * gain).reshape(module.weight.shape)


@torch.no_grad()
def absorb_gain(module: nn.Module) -> None:
    """Set a `gained` conv's gain so that it computes with the weight it holds, as is: that
    weight must have a zero mean over each unit's fan-in (an adapted effective weight has)."""
    rows = _rows(module.weight.detach().double())
    var = rows.var(1, unbiased=False)
    gain = (var + module.eps).sqrt() / float(module.scale)
    module.gain.copy_(gain.reshape(module.gain.shape).to(module.gain.dtype))
