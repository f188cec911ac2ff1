"""Cost metrics of a model, as used for search objectives: parameters, FLOPs, CPU latency.

    >>> m = netgraft.metrics(model, torch.randn(1, 1, 28, 28))
    >>> m.params, m.flops, m.latency_ms

* ``params``: number of parameter elements (a tensor shared by several modules counts once).
* ``flops``: floating-point operations of one forward pass on ``example_input``, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts 2: a ``Linear(i, o)`` on
  a batch of ``b`` is ``2*b*i*o``; element-wise ops, norms and activations count 0).
* ``latency_ms``: median wall time of ``latency_repeats`` forward passes, in eval mode under
  ``torch.inference_mode()``, after ``warmup`` untimed passes. Measured with the current torch
  thread count unless ``threads`` is given. Medians resist outliers from a busy machine, but a
  latency measured on a loaded machine is still only a rough number.

The model's train/eval mode (and the torch thread count) are restored afterwards; nothing else
about the model changes.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .errors import ModelForwardError
from .trace import keep_modes, run_model

__all__ = ["ModelMetrics", "count_params", "count_flops", "measure_latency", "metrics"]


@dataclass(frozen=True)
class ModelMetrics:
    params: int
    flops: int
    latency_ms: float | None  # None when latency_repeats=0
    trainable_params: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Parameter elements of `model`; tied parameters are counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, example_input: Any) -> int:
    """FLOPs of one forward pass of `model` on `example_input` (FlopCounterMode's count)."""
    from torch.utils.flop_counter import FlopCounterMode

    with keep_modes(model):
        model.eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            _forward(model, example_input)
    return int(counter.get_total_flops())


def _forward(model: nn.Module, example_input: Any) -> Any:
    """One forward pass; a model that fails on `example_input` raises `ModelForwardError`
    naming it and the input, not torch's error from inside a layer."""
    try:
        return run_model(model, example_input)
    except Exception as exc:
        shape = tuple(example_input.shape) if isinstance(example_input, torch.Tensor) else \
            type(example_input).__name__
        raise ModelForwardError(f"{type(model).__name__} failed on the example input {shape}: "
                                f"{type(exc).__name__}: {exc}") from exc


def measure_latency(model: nn.Module, example_input: Any, *, repeats: int = 30, warmup: int = 3,
                    threads: int | None = None) -> float:
    """Median wall time in milliseconds of one forward pass (eval mode, inference_mode)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with keep_modes(model):
            model.eval()
            times = []
            with torch.inference_mode():
                for _ in range(warmup):
                    _forward(model, example_input)
                for _ in range(repeats):
                    start = time.perf_counter()
                    _forward(model, example_input)
                    times.append(time.perf_counter() - start)
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)
    return statistics.median(times) * 1000.0


def metrics(model: nn.Module, example_input: Any, *, latency_repeats: int = 30,
            warmup: int = 3, threads: int | None = None) -> ModelMetrics:
    """Parameter count, FLOPs and median CPU latency of `model` on `example_input`.

    `example_input` is a tensor (or a tuple / dict of forward arguments) with the batch size
    you want measured, typically 1. ``latency_repeats=0`` skips the latency measurement
    (``latency_ms`` is then None).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    latency = (measure_latency(model, example_input, repeats=latency_repeats, warmup=warmup,
                               threads=threads) if latency_repeats else None)
    return ModelMetrics(params=count_params(model), flops=count_flops(model, example_input),
                        latency_ms=latency, trainable_params=count_params(model, True))
