"""A small, deterministic train/evaluate loop for demos and benchmarks.

Deliberately minimal: cross-entropy, one optimizer, constant learning rate
after an optional linear warm-up, evaluation at chosen step counts. It is
meant to compare *initialisations* (e.g. grafted vs. random weights) under
identical conditions, not to reach state-of-the-art accuracy.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from netgraft.data import ImageDataset

__all__ = ["TrainResult", "evaluate", "train"]


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageDataset, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``data``, in [0, 1].

    Runs in eval mode and restores the model's previous train/eval mode.
    """
    if len(data) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    device = _device_of(model)
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for x, y in data.batches(batch_size, shuffle=False):
            logits = model(x.to(device))
            correct += int((logits.argmax(dim=1) == y.to(device)).sum())
    finally:
        model.train(was_training)
    return correct / len(data)


@dataclass
class TrainResult:
    """Outcome of ``train``.

    ``history`` holds ``(step, test accuracy)`` for each requested eval point
    that was reached (a diverged run stops early). ``seconds`` is the wall time
    of the whole call, evaluations included. ``final_loss`` is the training loss
    of the last batch (``nan`` if no step ran; the non-finite value if diverged).
    """

    history: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    final_loss: float = math.nan
    diverged: bool = False


def _make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    name = name.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected 'adam', 'adamw' or 'sgd'")


def train(
    model: nn.Module,
    train: ImageDataset,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    optimizer: str = "adam",
    eval_data: ImageDataset | None = None,
    eval_at: Iterable[int] = (),
    seed: int = 0,
    warmup_steps: int = 0,
    progress: bool = False,
    label_smoothing: float = 0.0,
    precise_bn: int = 0,
) -> TrainResult:
    """Train ``model`` in place for exactly ``steps`` optimizer updates.

    * Data: shuffled epochs of ``train`` (epoch ``e`` is shuffled with seed
      ``seed + e``); the last partial batch of an epoch is dropped so every
      update sees ``batch_size`` examples (BatchNorm needs > 1).
    * LR schedule: linear warm-up from ``lr / warmup_steps`` to ``lr`` over the
      first ``warmup_steps`` updates, then constant. No decay, so runs of
      different lengths share the same trajectory prefix.
    * Evaluation: accuracy on ``eval_data`` after ``s`` updates for each ``s``
      in ``eval_at`` (``0`` = before any update); each must be in ``[0, steps]``.
    * Precise BN: with ``precise_bn=N``, every evaluation first re-estimates the batch-norm
      running statistics on the first N images of ``train`` (fixed, no labels used; Wu &
      Johnson 2021, "Rethinking Batch in BatchNorm") and puts the running ones back after, so
      training is unchanged. Early in training the momentum-averaged statistics lag the fast-
      moving weights and a single evaluation can swing by 20 points; this measures the weights.
    * Divergence: a NaN/inf loss stops training before that update is applied
      and sets ``diverged=True``; nothing is raised.
    * Determinism: torch's RNG is seeded with ``seed`` for the duration (for
      dropout etc.) and restored afterwards; thread settings are left to the
      caller. The model's train/eval mode is restored on return.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if len(train) == 0:
        raise ValueError("cannot train on an empty dataset")
    eval_points = sorted(set(int(s) for s in eval_at))
    if eval_points and eval_data is None:
        raise ValueError("eval_at was given but eval_data is None")
    bad = [s for s in eval_points if not 0 <= s <= steps]
    if bad:
        raise ValueError(f"eval_at steps {bad} are outside [0, {steps}]")

    start = time.perf_counter()
    device = _device_of(model)
    opt = _make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], lr, weight_decay)
    result = TrainResult()
    pending = list(eval_points)
    # Drop the ragged tail only when a full batch exists, else nothing would be yielded.
    drop_last = len(train) >= batch_size

    calib = train.x[:precise_bn] if precise_bn > 0 else None

    def maybe_eval(step: int) -> None:
        if pending and pending[0] == step:
            pending.pop(0)
            if calib is None:
                result.history.append((step, evaluate(model, eval_data)))
                return
            from .calibrate import recalibrated
            try:
                with recalibrated(model, calib, batch_size=batch_size):
                    result.history.append((step, evaluate(model, eval_data)))
            finally:
                model.train()

    was_training = model.training
    # fork_rng lets us seed dropout/etc. without clobbering the caller's RNG state.
    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices), _progress_bar(progress, steps) as bar, \
            _restore_mode(model, was_training):
        torch.manual_seed(seed)
        model.train()
        step, epoch = 0, 0
        maybe_eval(0)
        while step < steps and not result.diverged:
            for x, y in train.batches(batch_size, shuffle=True, seed=seed + epoch, drop_last=drop_last):
                if step < warmup_steps:  # reaches exactly lr at step warmup_steps - 1
                    for group in opt.param_groups:
                        group["lr"] = lr * (step + 1) / warmup_steps
                logits = model(x.to(device))
                loss = F.cross_entropy(logits, y.to(device), label_smoothing=label_smoothing)
                result.final_loss = loss.item()
                if not math.isfinite(result.final_loss):
                    result.diverged = True
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                if bar is not None:
                    bar.update(step, loss=result.final_loss)
                maybe_eval(step)
                if step >= steps:
                    break
            epoch += 1
    result.seconds = time.perf_counter() - start
    return result


@contextlib.contextmanager
def _restore_mode(model: nn.Module, training: bool):
    try:
        yield
    finally:
        model.train(training)


class _RichBar:
    def __init__(self, progress, task):
        self._progress, self._task = progress, task

    def update(self, step: int, loss: float) -> None:
        self._progress.update(self._task, completed=step, description=f"train loss {loss:.4f}")


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int):
    if not enabled:
        yield None
        return
    # Imported lazily: rich is only needed when a bar is actually shown.
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        transient=True,
    ) as p:
        yield _RichBar(p, p.add_task("train", total=total))
