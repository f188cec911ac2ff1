"""Re-estimate normalisation statistics of a grafted model on a few unlabeled batches.

A grafted batch norm carries the running mean/variance of the *source's* activations; after its
inputs were produced by different (adapted, or other-family) layers those statistics no longer
describe what the layer sees, and an eval-mode forward is miscalibrated. A few batches of inputs
fix that without labels or gradient steps.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn


def _batches(data: Any, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        yield from data.split(batch_size)
        return
    for item in data:
        yield item[0] if isinstance(item, (tuple, list)) else item


def recalibrate_norms(model: nn.Module, data: Any, *, batch_size: int = 64,
                      max_batches: int | None = None) -> int:
    """Recompute the running statistics of every batch norm of `model` from `data`.

    `data` is a tensor of inputs (N, ...) or an iterable of input tensors or (input, label)
    pairs. Only batch norms switch to training mode (dropout and drop-path stay off), and they
    average over all batches (momentum=None). Returns the number of norms recalibrated.
    """
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    try:
        with torch.no_grad():
            for i, x in enumerate(_batches(data, batch_size)):
                if max_batches is not None and i >= max_batches:
                    break
                model(x.to(device))
                seen += 1
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    if not seen:
        raise ValueError("calibration_data yielded no batches")
    return len(norms)
