"""Block-wise feature alignment of a grafted target to its source, on unlabeled inputs.

Copying tensors between two *families* (a ResNet into an EfficientNet) transfers little by
itself: the copied filters sit in another wiring and the target's features are not the
source's. Given a few hundred unlabeled inputs, this module goes further (after LANA,
Molchanov et al. 2022, where every block is distilled to mimic the teacher's block):

1. **Anchor points.** The stage ends of both networks (timm's ``feature_info`` when present,
   else the last block output at every spatial resolution) are paired by spatial size, i.e.
   by how much they downsample the input.
2. **Projections.** For every pair, a 1×1 projection ``P`` from the target's channels to the
   source's is fitted in closed form (ridge regression over pixels): the target may compute
   the same features in another basis or width.
3. **Regression.** A short run of Adam steps trains the target's layers (and the ``P``'s) to
   minimise ``Σ_k ‖P_k(t_k(x)) − s_k(x)‖² / var(s_k)`` — every stage is fed the target's own
   previous stage, so the stages learn to work together. When both networks predict the same
   classes, the loss has one more term (weight ``kd_weight``, 1 by default): the distillation
   loss on the source's softened logits (Hinton et al. 2015), so the stages are pulled toward
   features the source's *decision* needs, not only toward its variance. Measured at step 0
   (Fashion-MNIST 32×32, 512 images, 30 steps, PreciseBN): mobilenetv3_large_100 → _075
   47.9% → 65.2% (the stage terms alone barely move its stages: R² 0.50 → 0.46 at blocks.2),
   regnetx_004 → mobilenetv3_large_100 56.8% → 61.4%, regnetx_004 → _002 76.7% → 77.1%,
   resnet18 → efficientnet_b0 72.3% → 70.9%.
4. **Head.** When both networks predict the same classes, the target's linear classifier is
   fitted in closed form to reproduce the source's logits from the target's pooled features.
   With aligned features this is ``W_source · P`` (pooling commutes with a 1×1 map), but it
   also absorbs whatever the source's head does between pooling and its last linear layer.
   The fit replaces the head only when it reproduces the source's logits better (lower mean
   squared error on the same features) than the head already there: the ridge estimate is
   shrunk (``alpha`` 1 is a penalty as large as the average feature's energy), so a head that
   already computes the source's logits exactly — a model aligned to itself, an exact Net2Net
   graft of an MLP — fits them with R² 1.00 where the ridge fit reaches 0.85–0.92, and
   replacing it took the agreement with the source from 100% to 89–92%. When the
   distillation term has already trained the head, the fit is also kept only if it does not
   lower the agreement with the source (ridge on the logits weighs every logit alike, the
   argmax does not; it was kept out on mobilenetv3 → _075, 82% agreement without it).
5. **Statistics.** Batch norms re-estimate their running statistics on the same inputs.
6. **Never worse than what it was given.** The target's agreement with the source and its
   distillation loss to the source's softened logits (temperature ``DISTILL_TEMPERATURE``)
   are measured on the same first ``AGREEMENT_IMAGES`` calibration inputs, in eval mode,
   before and after; if the alignment lowered the one or raised the other, every parameter and
   buffer (batch-norm statistics included) is put back as it was handed in and the report
   says ``reverted`` ("kept the graft"). Measured on the benchmark's trained sources
   (Fashion-MNIST 32×32, 512 images): convnext_atto → convnext_femto, a graft that already
   agrees with its source on 98.8% of the inputs, was aligned to 97.7% (loss 0.0025 → 0.0088,
   test accuracy 87.2% → 86.7%) and is now kept as grafted; the seven other pairs checked
   (five cross-family, resnet18 → resnet34, mobilenetv3_large_100 → _075; agreement 6–82%
   before, 55–97% after) come out bit-identical to what they were without the check.

The report gives, per stage, the fraction of the source's feature variance the target
explains (R², after the best 1×1 projection) before and after, and the seconds spent, so the
cost can be counted honestly against training steps.

**When the features do not fit, the whole network is distilled instead.** Step 2 costs only
forward passes; if the grafted target's stages explain on average less than ``min_r2`` (0.3) of
the source's feature variance, the stage regression has little to build on and the head fitted
to the source's logits afterwards reproduces them badly (head R² 0.51–0.69, agreement 54–66% on
the two benchmark pairs below the bar, mean stage R² 0.17 and 0.25, against head R² ≥ 0.93 on
the five pairs above it, 0.38–0.85); those two pairs ended *behind* random init after stage
alignment. For them the same budget of Adam steps trains the whole target end to end to
reproduce the source's softened logits on the calibration inputs (knowledge distillation,
Hinton et al. 2015, temperature ``DISTILL_TEMPERATURE``): it needs no correspondence between
the two networks' features. Measured mobilenetv3_large_100 → convnext_atto (Fashion-MNIST
32×32, 512 images, 2 seeds): 30 steps (2.7 s) take the grafted target from 8–15% to 74–76%
test accuracy, against its source's 79%. ``report.method`` says which was done (``"stages"``,
``"logits"``, or ``"none"`` when there is nothing to distil or ``distill=False``: then the
target is handed back as grafted, ``report.skipped``, fine-tune learning-rate factor 1).
"""
from __future__ import annotations

import functools
import math
import operator
import time
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .errors import NetgraftError, NetgraftWarning
from .trace import (first_tensor, check_traceable, float_param, keep_modes, put_back, snapshot,
                    trace, uncompiled)

__all__ = ["ALIGN_METHODS", "AlignReport", "StageAlignment", "align", "stage_ends"]

ALIGN_METHODS = ("auto", "stages", "logits")
#: how the source's batch-norm statistics are used by `align` (see its docstring)
SOURCE_NORMS = ("calibrate", "keep")

MAX_ROWS = 32768  # pixels sampled per stage for the closed-form fits
AGREEMENT_IMAGES = 256  # inputs on which the report's agreement with the source is measured
#: skip the alignment when the grafted target's stages explain less than this share of the
#: source's feature variance on average (see the module docstring for the measurement)
MIN_R2 = 0.3
#: softening of the source's logits when the whole target is distilled (fallback for distant
#: pairs, see the module docstring)
DISTILL_TEMPERATURE = 2.0
#: fine-tune an aligned target at this fraction of the usual learning rate: measured on the
#: benchmark's cross-family pairs, Adam at 1e-3 (a from-scratch rate) first *loses* much of the
#: accuracy the alignment gave (75% → 72% after 25 steps), at 3e-4 it keeps and builds on it
#: (75% → 79%)
FINE_TUNE_LR_FACTOR = 0.3


@dataclass
class StageAlignment:
    """One anchor pair: a target stage end aligned to a source stage end."""

    target: str
    source: str
    target_channels: int
    source_channels: int
    spatial: tuple[int, ...]
    r2_before: float
    r2_after: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "source": self.source,
                "target_channels": self.target_channels, "source_channels": self.source_channels,
                "spatial": list(self.spatial), "r2_before": _r(self.r2_before),
                "r2_after": _r(self.r2_after)}


@dataclass
class AlignReport:
    """What `align` did and what it cost."""

    stages: list[StageAlignment] = field(default_factory=list)
    head: str | None = None  # the target classifier fitted to the source's logits
    head_r2: float = float("nan")
    agreement: float = float("nan")  # share of inputs where target and source predict alike
    steps: int = 0
    images: int = 0
    seconds: float = 0.0
    note: str = ""
    #: "stages" (block-wise regression), "logits" (end-to-end distillation: the stages fit too
    #: badly) or "none" (nothing done: the target was left as grafted)
    method: str = "stages"
    skipped: bool = False  # True when method == "none"
    calibrated: int = 0  # batch norms whose statistics were re-estimated at the end
    #: the source's batch norms whose statistics were re-estimated on the same inputs for the
    #: alignment (``source_norms="calibrate"``; put back afterwards)
    source_calibrated: int = 0
    #: weight of the distillation term (source's softened logits) in the stage regression;
    #: 0 when the regression had only the stage terms
    kd_weight: float = 0.0
    #: multiply the learning rate you would use from scratch by this to fine-tune the aligned
    #: target without undoing the alignment
    lr_factor: float = FINE_TUNE_LR_FACTOR
    #: agreement with the source of the target as it was handed in (same inputs, eval mode)
    agreement_before: float = float("nan")
    #: True when the alignment agreed with the source less, or reproduced its softened logits
    #: worse, than the target as handed in: its weights and statistics were restored ("kept the
    #: graft", said in `note`; `agreement` is then the restored target's, `lr_factor` 1)
    reverted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"stages": [s.to_dict() for s in self.stages], "head": self.head,
                "head_r2": _r(self.head_r2), "agreement": _r(self.agreement),
                "steps": self.steps, "images": self.images, "seconds": self.seconds,
                "lr_factor": self.lr_factor, "note": self.note, "method": self.method,
                "skipped": self.skipped, "calibrated_norms": self.calibrated,
                "source_calibrated_norms": self.source_calibrated,
                "kd_weight": self.kd_weight, "agreement_before": _r(self.agreement_before),
                "reverted": self.reverted}

    def summary(self) -> str:
        if self.skipped:
            return f"alignment skipped ({self.note}; {self.seconds:.1f} s)"
        if self.reverted:
            tried = ("distilling the source's logits into the whole target" if
                     self.method == "logits" else f"aligning {len(self.stages)} stages")
            return (f"{self.note} (tried {tried} on {self.images} inputs in {self.steps} steps, "
                    f"{self.seconds:.1f} s); fine-tune at {self.lr_factor:g}× the from-scratch "
                    f"learning rate")
        before = (f"{self.agreement_before:.0%} → " if math.isfinite(self.agreement_before)
                  else "")
        if self.source_calibrated:
            before = f"(its batch-norm statistics re-estimated on the same inputs) {before}"
        if self.method == "logits":
            return (f"distilled the source's logits into the whole target on {self.images} inputs "
                    f"in {self.steps} steps, {self.seconds:.1f} s ({self.note}); agreement with "
                    f"the source {before}{self.agreement:.0%}; fine-tune at {self.lr_factor:g}× "
                    f"the from-scratch learning rate")
        stages = ", ".join(f"{s.target}←{s.source} R² {s.r2_before:.2f}→{s.r2_after:.2f}"
                           for s in self.stages)
        head = f"; head {self.head} fitted (R² {self.head_r2:.2f})" if self.head else ""
        kd = (f" with the source's logits distilled alongside (weight {self.kd_weight:g})"
              if self.kd_weight else "")
        note = f" ({self.note})" if self.note else ""
        agree = (f"; agreement with the source {before}{self.agreement:.0%}"
                 if math.isfinite(self.agreement) else "")
        return (f"aligned {len(self.stages)} stages on {self.images} inputs in {self.steps} steps"
                f"{kd}, {self.seconds:.1f} s: {stages}{head}{note}{agree}; fine-tune at "
                f"{self.lr_factor:g}× the from-scratch learning rate")


def _r(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 4)


# ----------------------------------------------------------------------------- data
def _collect(data: Any, limit: int, model: nn.Module | None = None) -> torch.Tensor:
    """Up to `limit` inputs of `data` in one tensor (`model`: the one they are for, see
    `calibrate.input_batch`)."""
    from .calibrate import input_batch

    if isinstance(data, torch.Tensor) or type(data).__module__ == "numpy":
        return input_batch(data, 0, model)[:limit]
    parts, n = [], 0
    for i, item in enumerate(data):
        x = input_batch(item, i, model)
        if parts and x.shape[1:] != parts[0].shape[1:]:
            raise NetgraftError(
                f"calibration batch {len(parts)} holds inputs of shape {tuple(x.shape[1:])}, "
                f"the first batch {tuple(parts[0].shape[1:])}: alignment compares the source "
                f"and the target on one set of inputs of one shape; resize them alike")
        parts.append(x)
        n += len(x)
        if n >= limit:
            break
    if not parts:
        raise NetgraftError("calibration_data yielded no inputs")
    return torch.cat(parts)[:limit]


def _source_view(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    """The target's inputs as the source sees them (gray ↔ colour by averaging/replicating)."""
    if channels is None or x.ndim < 3 or x.shape[1] == channels:
        return x
    gray = x.mean(1, keepdim=True)
    return gray.expand(-1, channels, *x.shape[2:]).contiguous()


def _in_channels(model: nn.Module) -> int | None:
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return m.in_channels
    return None


# ----------------------------------------------------------------------------- anchors
def _capture(model: nn.Module, names: list[str], x: torch.Tensor,
             grad: bool = False) -> tuple[dict[str, torch.Tensor], Any]:
    """Outputs of the named modules (the last call of each) and the model output."""
    modules = dict(model.named_modules())
    out: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:
        def hook(mod, args, result, name=name):
            if isinstance(result, torch.Tensor):
                out[name] = result
        handles.append(modules[name].register_forward_hook(hook))
    try:
        with torch.set_grad_enabled(grad):
            y = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, y


def stage_ends(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...], int]]:
    """(module name, spatial size, channels) of the last feature map at every resolution.

    Candidates are timm's ``feature_info`` modules when the model has them, else the blocks
    of the traced model; only modules returning a (N, C, H, W) or (N, C, D, H, W) tensor
    count, and of those
    sharing one spatial size the last one executed wins (the end of that stage). Token
    sequences (N, T, C) of transformers are not anchors: those models get the head fit only."""
    info = getattr(model, "feature_info", None)
    names: list[str] = []
    if isinstance(info, (list, tuple)) and info and all(isinstance(d, dict) for d in info):
        names = [d.get("module") for d in info if d.get("module")]
    modules = dict(model.named_modules())
    names = [n for n in names if n in modules]
    if not names:
        names = [b.name for b in trace(model, example[:2]).blocks if b.name in modules and b.name]
    order: list[str] = []
    hooks = []
    for name in names:
        def pre(mod, args, name=name):
            order.append(name)
        hooks.append(modules[name].register_forward_pre_hook(pre))
    was = model.training
    model.eval()
    try:
        feats, _ = _capture(model, names, example[:2])
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    by_size: dict[tuple[int, ...], tuple[str, int]] = {}
    seen = []
    for name in dict.fromkeys(order):  # execution order
        t = feats.get(name)
        if t is None or t.ndim not in (4, 5):  # (N, C, H, W [, D]) maps; tokens are (N, T, C)
            continue
        by_size[tuple(t.shape[2:])] = (name, t.shape[1])
        seen.append(name)
    ends = [(name, size, c) for size, (name, c) in by_size.items()]
    ends.sort(key=lambda e: seen.index(e[0]))
    return ends


def _pair_anchors(src: list, tgt: list) -> list[tuple[tuple, tuple]]:
    by_size = {size: (name, size, c) for name, size, c in src}
    return [(t, by_size[t[1]]) for t in tgt if t[1] in by_size]


# ----------------------------------------------------------------------------- closed form
def _rows(t: torch.Tensor) -> torch.Tensor:
    """(N, C, *S) → (N·S, C)."""
    return t.movedim(1, -1).reshape(-1, t.shape[1]) if t.ndim > 2 else t


def ridge(x: torch.Tensor, y: torch.Tensor, alpha: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """W (out, in) and b (out) minimising ‖x Wᵀ + b − y‖² + α·tr(xᵀx)/in·‖W‖² (float64)."""
    x, y = x.double(), y.double()
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    gram = xc.T @ xc
    lam = alpha * float(gram.diagonal().mean()) + 1e-8
    gram.diagonal().add_(lam)
    w = torch.linalg.solve(gram, xc.T @ yc).T  # (out, in)
    b = my - w @ mx
    return w, b


def _r2(pred: torch.Tensor, y: torch.Tensor) -> float:
    y = y.double()
    pred = pred.double()
    return float(1 - ((pred - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum().clamp_min(1e-12))


def _sample(rows: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    if len(rows) <= n:
        return torch.arange(len(rows))
    return torch.randperm(len(rows), generator=g)[:n]


def _match_spatial(t: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    if tuple(t.shape[2:]) == tuple(size):
        return t
    pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[len(size)]
    return pool(t, size)


class _Projection(nn.Module):
    """A 1×1 map from target channels to source channels (a linear map per position)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(w.float())
        self.bias = nn.Parameter(b.float())

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t.movedim(1, -1)
        return (t @ self.weight.T + self.bias).movedim(-1, 1)


# ----------------------------------------------------------------------------- main
def _batches(n: int, batch_size: int, steps: int, g: torch.Generator,
             seconds: float | None) -> Iterable[torch.Tensor]:
    """Index batches over shuffled epochs of `n` inputs: `steps` of them, or fewer when
    `seconds` of wall time have passed."""
    t0, done = time.perf_counter(), 0
    while done < steps:
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            yield perm[i:i + batch_size]
            done += 1
            if done >= steps or (seconds is not None and time.perf_counter() - t0 > seconds):
                return


def _kd_loss(out: torch.Tensor, soft: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.'s distillation loss: KL to the source's softened outputs, scaled by T²
    (in `out`'s dtype: a source of another dtype than the target)."""
    return F.kl_div(F.log_softmax(out / temperature, dim=1), soft.to(out.dtype),
                    reduction="batchmean") \
        * temperature ** 2


def _distill(target: nn.Module, x: torch.Tensor, logits: torch.Tensor, steps: int, lr: float,
             batch_size: int, g: torch.Generator, seconds: float | None,
             temperature: float = DISTILL_TEMPERATURE) -> int:
    """Train all of `target` to reproduce `logits` on `x` (softened KL); returns the steps."""
    target.train()
    opt = torch.optim.Adam([p for p in target.parameters() if p.requires_grad], lr=lr)
    soft = F.softmax(logits / temperature, dim=1)
    done = 0
    for idx in _batches(len(x), batch_size, steps, g, seconds):
        loss = _kd_loss(first_tensor(target(x[idx])), soft[idx], temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += 1
    return done


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> Any:
    """`model`'s outputs on `x` in eval mode (its mode restored), the first of each when it
    returns several (logits, features); None unless tensors."""
    from .calibrate import model_input

    was = model.training
    model.eval()
    x = model_input(x, model)  # a source of another dtype than the target's inputs
    try:
        outs = [first_tensor(model(xb)) for xb in x.split(batch_size)]
    finally:
        model.train(was)
    return torch.cat(outs) if all(isinstance(o, torch.Tensor) for o in outs) else None


def _width(y: Any) -> int | None:
    return y.shape[1] if isinstance(y, torch.Tensor) and y.ndim == 2 else None


def _distillable(target: nn.Module, x: torch.Tensor, logits: Any) -> bool:
    """Whether the source's `logits` can be distilled into `target`: both output one score
    per class, for the same number of classes."""
    return (logits is not None and logits.ndim == 2
            and _width(_predict(target, x[:2], 2)) == logits.shape[1])


def _match(target: nn.Module, x: torch.Tensor, logits: Any,
           batch_size: int) -> tuple[float, float] | None:
    """How closely `target` reproduces the source's `logits` on the first AGREEMENT_IMAGES
    inputs, in eval mode: (share of inputs where both predict alike, distillation loss to the
    source's softened logits at DISTILL_TEMPERATURE). None when they do not predict the same
    classes. A subset keeps this forward pass out of the alignment's cost; before and after an
    alignment it is measured on the same inputs, the same way."""
    if logits is None or logits.ndim != 2:
        return None
    n = min(len(x), AGREEMENT_IMAGES)
    pred = _predict(target, x[:n], batch_size)
    if _width(pred) != logits.shape[1]:
        return None
    ref = logits[:n].double()
    kd = _kd_loss(pred.double(), F.softmax(ref / DISTILL_TEMPERATURE, dim=1), DISTILL_TEMPERATURE)
    return float((pred.argmax(1) == ref.argmax(1)).float().mean()), max(float(kd), 0.0)


def _keep_better(report: AlignReport, saved: list, before: tuple[float, float] | None,
                 after: tuple[float, float] | None) -> None:
    """Restore the target as it was handed in when the alignment left it agreeing with the
    source less, or reproducing the source's softened logits worse (higher distillation loss),
    than before, both measured by `_match` on the same inputs."""
    if before is None or report.skipped:
        return
    report.agreement_before = before[0]
    if after is None or (after[0] >= before[0] and after[1] <= before[1]):
        return
    put_back(saved)
    agreement = f"{before[0]:.0%} → {after[0]:.0%}"
    loss = f"the distillation loss ({before[1]:.2g} → {after[1]:.2g})"
    if after[0] < before[0]:
        what = f"lowered the agreement with the source ({agreement})" + (
            f" and raised {loss}" if after[1] > before[1] else "")
    else:
        what = f"raised {loss} (agreement with the source {agreement})"
    report.note = (f"kept the graft: alignment {what} on {min(report.images, AGREEMENT_IMAGES)} "
                   f"calibration inputs; the target's weights and batch-norm statistics as "
                   f"handed in were restored" + (f"; {report.note}" if report.note else ""))
    report.reverted, report.agreement, report.head = True, before[0], None
    report.calibrated, report.lr_factor = 0, 1.0


def _distil_or_skip(report: AlignReport, target: nn.Module, x: torch.Tensor, logits: Any,
                    why: str, steps: int, lr: float, batch_size: int, g: torch.Generator,
                    seconds: float | None, distill: bool) -> tuple[float, float] | None:
    """Distil the source's `logits` into the whole target (``report.method = "logits"``),
    or leave the target as it is (``"none"``) when that is off or impossible. Returns the
    distilled target's `_match`."""
    from .calibrate import recalibrate_norms

    if not (distill and steps > 0 and _distillable(target, x, logits)):
        report.method, report.skipped, report.lr_factor = "none", True, 1.0
        cannot = ("distill=False" if not distill else f"steps={steps}" if steps <= 0 else
                  "the source and the target do not output one score per class for the same "
                  "classes, so there are no logits to distil")
        report.note = f"{why}; {cannot}: the target is left as grafted"
        return None
    report.method, report.note = "logits", why
    report.steps = _distill(target, x, logits, steps, lr, batch_size, g, seconds)
    report.calibrated = recalibrate_norms(target, x, batch_size=batch_size)
    after = _match(target, x, logits, batch_size)
    report.agreement = after[0]
    return after


def _head_layer(model: nn.Module, example: torch.Tensor) -> tuple[str, nn.Linear] | None:
    arch = trace(model, example[:2])
    outs = [layer for layer in arch.layers if layer.role == "output"]
    if len(outs) == 1 and isinstance(outs[0].module, nn.Linear):
        return outs[0].name, outs[0].module
    return None


@torch.no_grad()
def _fit_head(target: nn.Module, head: nn.Linear, x: torch.Tensor, logits: torch.Tensor,
              batch_size: int, alpha: float) -> tuple[float, float, bool] | None:
    """Fit `head` in closed form (ridge) to reproduce the source's `logits` from the features
    it receives on `x`, and put the fit in place only when it reproduces them better (lower
    mean squared error, on those same features) than the head already there: a head that
    already computes the source's logits (an exact graft, a model aligned to itself) is not
    replaced by a shrunk ridge estimate. Returns (R² of the fit, R² of the head already there,
    whether the fit was put in place); None when the features do not fit the head."""
    feats: list[torch.Tensor] = []
    h = head.register_forward_pre_hook(lambda mod, args: feats.append(args[0].detach()))
    was = target.training
    target.eval()
    try:
        for xb in x.split(batch_size):
            target(xb)
    finally:
        h.remove()
        target.train(was)
    f = torch.cat(feats)
    f = f.reshape(len(f), -1) if f.ndim > 2 else f
    if f.shape[1] != head.in_features:
        return None
    w, b = ridge(f, logits, alpha)
    if head.bias is None:  # no intercept to absorb the means: a biased-free fit is close enough
        b = torch.zeros_like(b)
    r2_fit = _r2(f.double() @ w.T + b, logits)
    # both heads as they would compute, in the head's dtype, on the same features
    new_w, new_b = w.to(head.weight.dtype), b.to(head.weight.dtype)
    old_b = head.bias if head.bias is not None else torch.zeros_like(new_b)
    y, fd = logits.double(), f.double()
    new = fd @ new_w.double().T + new_b.double()
    old = fd @ head.weight.double().T + old_b.double()
    r2_old = _r2(old, y)
    if not float(((new - y) ** 2).mean()) < float(((old - y) ** 2).mean()):
        return r2_fit, r2_old, False
    head.weight.copy_(new_w)
    if head.bias is not None:
        head.bias.copy_(new_b.to(head.bias.dtype))
    return r2_fit, r2_old, True


def _contained(fn):
    """Run an alignment as a guest: gradients on (a caller under ``torch.no_grad()``), the
    global random stream, every submodule's train/eval flag and the target's existing
    gradients as they were afterwards."""
    @functools.wraps(fn)
    def wrapper(source: nn.Module, target: nn.Module, *args, **kwargs):
        source, target = uncompiled(source), uncompiled(target)
        if torch.is_inference_mode_enabled():
            raise NetgraftError("align trains the target, which torch.inference_mode() "
                                "forbids: call it outside inference mode")
        grads = [(p, p.grad) for p in target.parameters()]
        try:
            with keep_modes(source, target), torch.enable_grad(), \
                    torch.random.fork_rng(devices=[]), _float32_while_trained(target) as cast:
                report = fn(source, target, *args, **kwargs)
        finally:
            for p, grad in grads:
                p.grad = grad
        if cast:
            report.note = "; ".join(filter(None, (report.note, (
                f"the target's {cast} float16 tensors were aligned in float32 (Adam's steps "
                f"overflow in float16) and cast back to float16 afterwards"))))
        return report
    return wrapper


@contextmanager
def _float32_while_trained(model: nn.Module) -> Iterator[int]:
    """`model`'s float16 parameters and buffers held in float32 inside the block (Adam's eps,
    1e-8, rounds to 0 in float16 and one step turns weights to inf), each cast back to float16
    on leaving, also on failure; yields how many were cast. The tensors stay the same objects
    (their ``.data`` is swapped), so references to them, an optimizer's included, hold."""
    halves = [t for t in (*model.parameters(), *model.buffers()) if t.dtype == torch.float16]
    for t in halves:
        t.data = t.data.float()
    try:
        yield len(halves)
    finally:
        for t in halves:
            t.data = t.data.half()


def whole(value: Any) -> int | None:
    """`value` as a whole number >= 0 (an int, a NumPy integer; not a bool, a float or a
    string), or None."""
    if isinstance(value, bool):
        return None
    try:
        number = operator.index(value)
    except TypeError:
        return None
    return number if number >= 0 else None


#: fewer calibration inputs than this: the R² and agreement `align` reports are measured on
#: the images it fitted, and say little
FEW_IMAGES = 32


@_contained
def align(source: nn.Module, target: nn.Module, calibration_data: Any, *, steps: int = 30,
          lr: float = 1e-3, batch_size: int = 64, max_images: int = 1024,
          seconds: float | None = None, head: bool = True, alpha: float = 1.0,
          source_channels: int | None = None, seed: int = 0,
          min_r2: float = MIN_R2, distill: bool = True, method: str = "auto",
          kd_weight: float = 1.0, keep_better: bool = True,
          source_norms: str = "calibrate") -> AlignReport:
    """Align `target`'s stages (and classifier) to `source`'s on unlabeled inputs, in place.

    `calibration_data` holds inputs the target accepts (a tensor (N, ...) or an iterable of
    batches); the source sees the same images (gray/colour converted when their input channels
    differ; `source_channels` overrides what is read off its first conv), each model getting
    floating inputs in its own dtype and token ids as they are (`calibrate.model_input`; a
    float16 target is aligned in float32 and cast back, said in ``report.note``: Adam's steps
    overflow in float16; bfloat16 and float64 targets are aligned as they are). `steps` Adam steps
    (lr `lr`, batches of `batch_size`) regress the stages; `seconds` caps their wall time.
    `head`: fit the target's linear classifier to the source's logits when both have the same
    number of outputs. Batch-norm statistics are re-estimated at the end. Returns an
    AlignReport; a model without stage-level feature maps (an MLP) gets only the head fit.
    When the stages' mean R² before alignment is below `min_r2` (0 always aligns stages), the
    whole target is instead distilled for the same `steps` to reproduce the source's logits
    (``report.method == "logits"``); with `distill=False`, or when the two do not predict the
    same number of classes, nothing is changed and the report says ``skipped``.
    `kd_weight`: weight of the distillation term (the source's softened logits) added to the
    stage regression when both predict the same classes (0: stage terms only).
    `method`: ``"auto"`` (the above), ``"stages"`` (always regress the stages, as
    ``min_r2=0``) or ``"logits"`` (distil straight away, without looking at the stages: what
    `transfer` asks for when it left the whole target at its init, whose random features have
    nothing in common with the source's — it saves the forward passes and fits of the check).
    When the result agrees with the source less, or has a higher distillation loss to its
    softened logits, than the target as handed in (first ``AGREEMENT_IMAGES`` inputs, eval
    mode), the target's parameters and buffers are restored (``report.reverted``); they are
    also restored when the alignment raises an exception. ``keep_better=False`` skips that
    comparison (one forward pass of up to ``AGREEMENT_IMAGES`` inputs): what `transfer` asks
    for a target it left wholly at its random init, which has nothing to keep.
    `source_norms`: ``"calibrate"`` (default) re-estimates the source's batch-norm statistics on
    the same inputs for the alignment, as the target's are, so that both compute with
    statistics of the data at hand (the source is left as it was handed in); ``"keep"`` uses
    the statistics it holds. A source whose stored statistics are stale would otherwise pull an
    exact graft away from what the source computes once recalibrated (resnet18 → resnet34:
    87.0% → 76.1% test accuracy with ``"keep"``, unchanged with ``"calibrate"``).
    """
    if method not in ALIGN_METHODS:
        raise ValueError(f"method={method!r}: choose one of {ALIGN_METHODS}")
    if whole(steps) is None:
        raise ValueError(f"steps={steps!r}: give a whole number of steps >= 0")
    steps = whole(steps)
    if source_norms not in SOURCE_NORMS:
        raise ValueError(f"source_norms={source_norms!r}: choose one of {SOURCE_NORMS}")
    for role, model in (("source", source), ("target", target)):
        check_traceable(model, role, values=True, action="align")
    param = float_param(target)
    dtype = param.dtype if param is not None else torch.float32  # the target computes in
    if method == "stages":
        min_r2 = 0.0
    from .calibrate import finite_inputs, model_input, recalibrate_norms, recalibrated

    start = time.perf_counter()
    x = finite_inputs(_collect(calibration_data, max_images, target), noun="calibration inputs")
    x = model_input(x, target)
    if len(x) < 2:
        raise NetgraftError("alignment needs at least 2 calibration inputs")
    # each model computes in its own dtype (a float32 source beside a float64 target)
    xs = model_input(_source_view(x, source_channels or _in_channels(source)), source)
    report = AlignReport(images=len(x))
    g = torch.Generator().manual_seed(seed)
    if not any(p.requires_grad for p in target.parameters()):
        report.method, report.skipped, report.lr_factor = "none", True, 1.0
        report.note = ("the target has no trainable parameter (requires_grad is False "
                       "everywhere): nothing was aligned")
        report.seconds = time.perf_counter() - start
        return report
    if len(x) < FEW_IMAGES:
        warnings.warn(NetgraftWarning(
            f"align: {len(x)} calibration inputs; the stage fits and the agreement it reports "
            f"are measured on the inputs it fitted, so with fewer than {FEW_IMAGES} they say "
            f"little (a few hundred unlabeled inputs are what it is meant for)"), stacklevel=3)

    # the target as handed in (every parameter and buffer, batch-norm statistics included): put
    # back when the alignment leaves it further from the source than it was, or fails
    saved = snapshot([*target.parameters(), *target.buffers()])
    s_was, t_was = source.training, target.training
    source.eval()
    teacher = ExitStack()  # the source's statistics, re-estimated for the alignment and restored
    try:
        # the logits path needs only the source's outputs: they come from the pass that
        # re-estimates its statistics when the inputs fit in one batch (one source pass, not two)
        passed: list | None = [] if method == "logits" else None
        if source_norms == "calibrate":
            report.source_calibrated = teacher.enter_context(
                recalibrated(source, xs, batch_size=batch_size, role="source", outputs=passed))
        if method == "logits":
            logits = first_tensor(passed[0]) if passed else None
            if logits is None:
                logits = _predict(source, xs, batch_size)
            before = _match(target, x, logits, batch_size) if keep_better else None
            after = _distil_or_skip(report, target, x, logits,
                                    "method='logits' (no stage check)", steps, lr, batch_size, g,
                                    seconds, distill)
            _keep_better(report, saved, before, after)
            return report
        t_ends = stage_ends(target, x)
        s_ends = stage_ends(source, xs)
        pairs = _pair_anchors(s_ends, t_ends)
        s_names = [s[0] for _, s in pairs]
        # the source's stage outputs and logits on every input, once
        s_feats: dict[str, list[torch.Tensor]] = {n: [] for n in s_names}
        s_logits = []
        for xb in xs.split(batch_size):
            feats, y = _capture(source, s_names, xb)
            for n in s_names:
                s_feats[n].append(feats[n].detach())
            y = first_tensor(y)  # (logits, features): the logits, as transfer compares them
            s_logits.append(y.detach() if y is not None else None)
        s_all = {n: torch.cat(v) for n, v in s_feats.items()}
        logits = torch.cat(s_logits) if all(l is not None for l in s_logits) else None
        # the target as handed in
        before = _match(target, x, logits, batch_size) if keep_better else None

        # closed-form 1×1 projections on the grafted target's features
        target.eval()
        t_names = [t[0] for t, _ in pairs]
        t_all: dict[str, list[torch.Tensor]] = {n: [] for n in t_names}
        for xb in x.split(batch_size):
            feats, _ = _capture(target, t_names, xb)
            for n in t_names:
                t_all[n].append(feats[n].detach())
        projections = nn.ModuleList()
        scales = []
        for (t, s) in pairs:
            tf = _match_spatial(torch.cat(t_all[t[0]]), s_all[s[0]].shape[2:])
            tr, sr = _rows(tf), _rows(s_all[s[0]])
            idx = _sample(tr, MAX_ROWS, g)
            w, b = ridge(tr[idx], sr[idx], alpha)
            r2 = _r2(tr[idx].double() @ w.T + b, sr[idx])
            report.stages.append(StageAlignment(t[0], s[0], t[2], s[2], tuple(s[1]), r2))
            projections.append(_Projection(w, b).to(device=x.device, dtype=dtype))
            scales.append(float(sr.var(0).mean().clamp_min(1e-8)))
        del t_all
        if report.stages:
            fit = sum(st.r2_before for st in report.stages) / len(report.stages)
            if fit < min_r2:
                why = (f"the grafted stages explain {fit:.0%} of the source's feature variance "
                       f"on average (< {min_r2:.0%}): too little to align stage by stage")
                after = _distil_or_skip(report, target, x, logits, why, steps, lr, batch_size,
                                        g, seconds, distill)
                _keep_better(report, saved, before, after)
                return report

        # short regression of the target's stages onto the source's, with the source's
        # softened logits as one more term (when both predict the same classes)
        soft = None
        if pairs and steps > 0:
            target.train()
            params = [p for p in target.parameters() if p.requires_grad]
            opt = torch.optim.Adam([{"params": params, "lr": lr},
                                    {"params": projections.parameters(), "lr": lr}])
            if kd_weight > 0 and distill and _distillable(target, x, logits):
                soft = F.softmax(logits / DISTILL_TEMPERATURE, dim=1)
                report.kd_weight = kd_weight
            for idx in _batches(len(x), batch_size, steps, g, seconds):
                feats, out = _capture(target, t_names, x[idx], grad=True)
                loss = sum(F.mse_loss(proj(_match_spatial(feats[t[0]], s[1])),
                                      s_all[s[0]][idx].to(dtype)) / scale
                           for proj, (t, s), scale in zip(projections, pairs, scales))
                if soft is not None:
                    loss = loss + kd_weight * _kd_loss(first_tensor(out), soft[idx],
                                                       DISTILL_TEMPERATURE)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                report.steps += 1
        report.calibrated = recalibrate_norms(target, x, batch_size=batch_size)

        # R² after, with the trained projections
        target.eval()
        if pairs:
            with torch.no_grad():
                t_all = {n: [] for n in t_names}
                for xb in x.split(batch_size):
                    feats, _ = _capture(target, t_names, xb)
                    for n in t_names:
                        t_all[n].append(feats[n])
                for stage, (t, s) in zip(report.stages, pairs):  # best 1×1 map, as before
                    tr = _rows(_match_spatial(torch.cat(t_all[t[0]]), s[1]))
                    sr = _rows(s_all[s[0]])
                    idx = _sample(tr, MAX_ROWS, torch.Generator().manual_seed(seed))
                    w, b = ridge(tr[idx], sr[idx], alpha)
                    stage.r2_after = _r2(tr[idx].double() @ w.T + b, sr[idx])
        else:
            report.note = "no stage-level feature maps in common: only the head could be fitted"

        after = unfitted = None  # the aligned target's _match, once measured
        if head and logits is not None and logits.ndim == 2:
            found = _head_layer(target, x)
            if found is not None and found[1].out_features == logits.shape[1]:
                name, lin = found
                trained = soft is not None  # the head was trained by the distillation term
                if trained:
                    unfitted = _match(target, x, logits, batch_size)
                    kept = {k: v.clone() for k, v in lin.state_dict().items()}
                fit = _fit_head(target, lin, x, logits, batch_size, alpha)
                if fit is not None and fit[2]:  # the fitted head is in place
                    report.head_r2 = fit[0]
                    after = _match(target, x, logits, batch_size)
                    if trained and after[0] < unfitted[0]:
                        report.note = (report.note + "; " if report.note else "") + (
                            f"closed-form head fit not kept: agreement {after[0]:.0%} "
                            f"with it, {unfitted[0]:.0%} with the distilled head")
                        lin.load_state_dict(kept)
                        after = unfitted
                    else:
                        report.head = name
                elif fit is not None:  # the head already there reproduces the logits better
                    report.head_r2 = fit[0]
                    report.note = (report.note + "; " if report.note else "") + (
                        f"closed-form head fit not kept: it reproduces the source's logits "
                        f"worse (R² {fit[0]:.2f}) than the head already there (R² {fit[1]:.2f})")
        if after is None:  # the head was left as it was
            after = unfitted if unfitted is not None else _match(target, x, logits, batch_size)
        if after is not None:
            report.agreement = after[0]
        _keep_better(report, saved, before, after)
        if not report.reverted and all(torch.equal(t, v) for t, v in saved):
            report.lr_factor = 1.0  # nothing was changed: nothing to preserve in fine-tuning
    except BaseException:
        put_back(saved)  # a failed alignment leaves the target as it was handed in
        raise
    finally:
        teacher.close()
        source.train(s_was)
        target.train(t_was)
        for p in target.parameters():  # the alignment's gradients are not the user's
            p.grad = None
        report.seconds = time.perf_counter() - start
    return report
