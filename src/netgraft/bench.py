"""`netgraft bench`: transfer quality on real data — does a graft train faster than random init?

    netgraft bench [--quick] [--cache DIR] [--out DIR] [--pairs SRC:TGT,...] [--estimate]
    python benchmarks/transfer_quality.py ...          (the same)

Protocol (every number is also written to the JSON):

* **Data.** Fashion-MNIST, resized to 32×32 (bilinear, antialiased) so that every timm
  network's five stride-2 stages downsample cleanly (28 px would end at a 0.875-pixel map),
  one gray channel, normalised with the train statistics. Training subsets are fixed
  stratified subsets of the 60k training split (``subset(n, seed=0)``): **4,000 images**
  ("main" regime) and **1,000 images** ("low-data" regime). One epoch = one pass over the
  subset (the last partial batch is dropped). Test accuracy is measured on a fixed stratified
  subset of **1,000** of the 10k test images (``subset(1000, seed=0)``) — the same images for
  every model, so comparisons between inits are paired.
* **Sources ("zoo").** Five small timm networks from five families (`ZOO`), built with
  ``in_chans=1, num_classes=10`` and trained once with one recipe: Adam, lr 1e-3, batch 128,
  468 steps (one epoch of the full 60k training split), seed 0. They are cached as safetensors
  under ``~/.cache/netgraft/bench`` (``--cache``) with a sidecar JSON holding the recipe and
  the accuracy on the full 10k test split; reruns load them instead of training.
* **Pairs.** `PAIRS`, each with its `relation` to the source: deeper, wider, narrower,
  shallower or cross-family. Classes are the same 10 on both sides, so the classifier head is
  transferred too (netgraft's default ``head="auto"``).
* **Inits.** `INITS`, name → ``fn(source, target) -> {"coverage", "transfer_seconds"}``, which
  initialises `target` in place: ``random`` (the target's own init, nothing done),
  ``iatransfer`` (the authors' DPIAT package, skipped with a note when not installed),
  ``dpiat`` (``netgraft.transfer(method="dpiat")``), ``graft`` (``netgraft.transfer``),
  ``graft+calib`` (with 512 unlabeled training images as ``calibration_data``) and
  ``graft+align`` (the same images, ``align=True``: block-wise feature alignment and a head
  fitted to the source's logits). An init may return ``"lr_factor"``: graft+align returns
  what ``netgraft.align`` tells users (fine-tune at 0.3× the from-scratch rate, so as not to
  undo the alignment) and is trained at that rate; every other init at the recipe's lr.
  An init may also return ``"warmup_steps"``: a linear warm-up to its rate over that many
  steps (none by default).
  For one (pair, seed) every init starts from the same randomly initialised target, so layers
  an init leaves alone keep exactly the random init's values. Add an init with one line.
* **Training.** Adam, lr 1e-3 constant, batch 64, 3 epochs, seeds 0 and 1 (the seed sets the
  target's random init and the batch order). Test accuracy at steps 0, 25, 50, 75, 100, on a
  grid of quarter epochs (grid points closer than 1/8 epoch to one of the fixed steps are
  dropped) and at exactly 1 and 3 epochs. Two inits that produce bit-identical weights (e.g.
  ``iatransfer`` and ``dpiat``, which reproduces it) share one training run (``--no-share``
  trains both): training on a CPU is deterministic, so the curves would be the same.
* **Equal wall-clock time.** Every run records the measured seconds of one training step
  (median of 3 after a warm-up, no evaluation). An init's ``transfer_seconds`` (alignment
  included) are converted into extra steps for random init; the init at budget *b* is
  compared with random init at *b* + extra steps (linearly interpolated on its curve).
* **Metrics** (per pair on the mean-over-seeds curve, then averaged over pairs, separately for
  same-family and cross-family pairs): accuracy ratio init/random and gain in points at
  0, 50, 100 steps, 1 and 3 epochs; **speedup** = steps random init needs to first reach its own
  3-epoch accuracy ÷ steps the init needs to reach it (the first evaluated step at or above
  it, so at the resolution of the evaluation grid); "never" (shown ``<1``, null in the JSON)
  when an init does not reach it within 3 epochs, "at step 0" (shown ``∞``, null in the JSON)
  when it starts at or above it. Speedups are summarised
  by their geometric mean over the pairs where they are finite and by their median over all
  pairs (never = 0, at step 0 = ∞). Step-0 accuracy relative to the source's accuracy (same
  test images) for every pair, averaged over the same-family growth (deeper/wider) pairs.
* **Output.** ``transfer_quality.json`` (every number, machine and date), ``.md`` (the tables,
  also printed) and one ``.png`` per regime (accuracy vs steps, one subplot per pair) in
  ``--out`` (default ``benchmarks/results/``).

Modes: the default (full) mode runs all 12 pairs × 2 seeds × both regimes. Sized from measured
step times on an idle 2-core CPU (2 threads): sources 8 min, main regime 30 min, low-data
regime 12 min, about 51 min in all (65 min if iatransfer and dpiat did not share runs; about
75 min with 1 thread). ``--estimate`` measures this machine and prints the arithmetic without
training. ``--quick`` runs 3 pairs, 1 seed, the main regime only on 2,000 training images:
about 4 min with 2 threads on an idle machine, including the training of its 2 sources.

Timing: ``torch.set_num_threads(2)`` (``--threads``), a GPU when one is available. When other
processes keep the cores busy, torch's 2-thread pool waits on descheduled threads and steps
were measured 10-100× slower; 1 thread degrades gracefully (``--threads 1``), and a warning is
printed when the load average is already high at the start.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from .errors import NetgraftError

__all__ = [
    "BUDGETS", "Config", "EQUAL_TIME_BUDGETS", "INITS", "PAIRS", "PAIR_SETS", "Pair", "QUICK_PAIRS",
    "RELATIONS", "TRANSFORMER_PAIRS", "ZOO",
    "add_arguments", "budget_steps", "compute_metrics", "equal_time", "eval_points",
    "find_pairs", "main", "measure_step_seconds",
    "mean_curve", "recompute", "run", "save_result", "speedup", "steps_to_reach", "summarize",
    "to_markdown",
    "write_outputs",
]

RELATIONS = ("deeper", "wider", "narrower", "shallower", "cross-family")
GROWTH = ("deeper", "wider")
BASELINE = "random"


# ----------------------------------------------------------------------------- pairs
@dataclass(frozen=True)
class Pair:
    """One (source, target) benchmark pair and how the target relates to the source."""

    source: str
    target: str
    relation: str  # one of RELATIONS
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.source}:{self.target}"

    @property
    def label(self) -> str:
        return f"{self.source} → {self.target}"

    @property
    def family(self) -> str:
        return "cross-family" if self.relation == "cross-family" else "same-family"


# The source zoo: five families, all small enough to train at 32 px on a CPU.
ZOO = ("resnet18", "efficientnet_b0", "mobilenetv3_large_100", "regnetx_004", "convnext_atto")

# Every pair of the benchmark, in one place.
PAIRS: tuple[Pair, ...] = (
    Pair("resnet18", "resnet34", "deeper", "16 vs 8 basic blocks"),
    Pair("resnet18", "resnet10t", "shallower", "4 vs 8 blocks; 3-conv tiered stem"),
    Pair("efficientnet_b0", "efficientnet_b1", "deeper", "23 vs 16 blocks, same widths"),
    Pair("mobilenetv3_large_100", "mobilenetv3_large_075", "narrower", "0.75× channels"),
    Pair("regnetx_004", "regnetx_006", "wider", "stage widths 48–528 vs 32–384; 16 vs 22 blocks"),
    Pair("regnetx_004", "regnetx_002", "narrower", "stage widths 24–368; 13 vs 22 blocks"),
    Pair("convnext_atto", "convnext_femto", "wider", "dims 48–384 vs 40–320, same depths"),
    Pair("resnet18", "efficientnet_b0", "cross-family"),
    Pair("efficientnet_b0", "resnet18", "cross-family"),
    Pair("convnext_atto", "resnet18", "cross-family"),
    Pair("regnetx_004", "mobilenetv3_large_100", "cross-family"),
    Pair("mobilenetv3_large_100", "convnext_atto", "cross-family"),
)
QUICK_PAIRS = ("resnet18:resnet34", "convnext_atto:convnext_femto", "convnext_atto:resnet18")

# Vision transformers built for the benchmark's 32-pixel images (8-pixel patches, 4×4 tokens,
# 6 blocks): ``--pairs transformers``.
_VIT_T6 = "vit_tiny_patch16_224(img_size=32,patch_size=8,depth=6)"
_VIT_T12 = "vit_tiny_patch16_224(img_size=32,patch_size=8,depth=12)"
_VIT_S6 = "vit_small_patch16_224(img_size=32,patch_size=8,depth=6)"
TRANSFORMER_PAIRS: tuple[Pair, ...] = (
    Pair(_VIT_T6, _VIT_T12, "deeper", "12 vs 6 blocks"),
    Pair(_VIT_T6, _VIT_S6, "wider", "384 vs 192 dims, 6 vs 3 heads"),
    Pair(_VIT_S6, _VIT_T6, "narrower", "192 vs 384 dims"),
    Pair("resnet18", _VIT_T6, "cross-family"),
    Pair(_VIT_T6, "resnet18", "cross-family"),
)
#: named pair lists for ``--pairs``
PAIR_SETS = {"transformers": TRANSFORMER_PAIRS}


def find_pairs(specs: Iterable[str]) -> tuple[Pair, ...]:
    """Pairs from ``source:target`` (one of `PAIRS`), ``source:target:relation`` (any; a
    model may carry builder arguments, ``vit_tiny_patch16_224(img_size=32,patch_size=8)``) or
    the name of a list in `PAIR_SETS` (``transformers``)."""
    from .models import canonical_spec, parse_spec, split_specs

    def same(spec: str) -> tuple[str, str]:  # a spec however spaced: name and arguments
        name, kwargs = parse_spec(spec)
        return name, repr(sorted(kwargs.items()))

    known = {(same(p.source), same(p.target)): p for p in PAIRS + TRANSFORMER_PAIRS}
    out = []
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        if spec in PAIR_SETS:
            out.extend(PAIR_SETS[spec])
            continue
        parts = [part.strip() for part in split_specs(spec, ":")]
        if len(parts) == 2 and (key := (same(parts[0]), same(parts[1]))) in known:
            out.append(known[key])
        elif len(parts) == 3 and parts[2] in RELATIONS:
            out.append(Pair(canonical_spec(parts[0]), canonical_spec(parts[1]), parts[2]))
        else:
            raise ValueError(
                f"pair {spec!r}: give source:target from the benchmark "
                f"({', '.join(p.key for p in known.values())}), a list ({', '.join(PAIR_SETS)}) or "
                f"source:target:relation with relation one of {', '.join(RELATIONS)}")
    return tuple(out)


# ----------------------------------------------------------------------------- inits
InitFn = Callable[[nn.Module, nn.Module], dict]


def _changed_fraction(before: list[torch.Tensor], model: nn.Module) -> float:
    total = changed = 0
    for old, p in zip(before, model.parameters()):
        total += p.numel()
        changed += int((old != p.detach()).sum())
    return changed / total if total else 0.0


def _init_random(source: nn.Module, target: nn.Module) -> dict:
    return {"coverage": 0.0, "transfer_seconds": 0.0}


def _netgraft(method: str, **options: Any) -> InitFn:
    def init(source: nn.Module, target: nn.Module) -> dict:
        from .transfer import transfer

        report = transfer(source, target, method=method, **options)
        return {"coverage": report.coverage, "transfer_seconds": report.seconds,
                "similarity": report.similarity}
    init.__name__ = f"_init_{method}"
    return init


def _init_iatransfer(source: nn.Module, target: nn.Module) -> dict:
    """The authors' package; coverage = fraction of target parameter elements it changed."""
    from .baselines import iatransfer_transfer, load_iat
    from .trace import single_thread

    load_iat()  # ImportError when not installed: the runner skips this init with a note
    source = copy.deepcopy(source)  # iatransfer gets its own copy; ours stays untouched
    before = [p.detach().clone() for p in target.parameters()]
    with single_thread():  # as netgraft.transfer does, for a fair time
        start = time.perf_counter()
        iatransfer_transfer(source, target)
        seconds = time.perf_counter() - start
    return {"coverage": _changed_fraction(before, target), "transfer_seconds": seconds}


#: unlabeled images for "graft+calib" (the runner puts 512 images of the smallest training
#: subset here, so the low-data regime uses nothing it does not have; labels are never used)
CALIBRATION: dict[str, torch.Tensor] = {}


def _init_graft_calibrated(source: nn.Module, target: nn.Module) -> dict:
    from .transfer import transfer

    report = transfer(source, target, calibration_data=CALIBRATION["x"], align=False)
    return {"coverage": report.coverage, "transfer_seconds": report.seconds,
            "similarity": report.similarity}


def _init_graft_aligned(source: nn.Module, target: nn.Module, *,
                        calibration: torch.Tensor | None = None, **options: Any) -> dict:
    """graft+calib, then block-wise feature alignment and a head fitted to the source's logits
    on the same unlabeled images (``netgraft.align``). Its seconds (alignment included) are
    what the equal-wall-clock metric charges it. `calibration` (other images than the
    benchmark's 512) and `options` (more `transfer` options) are for variants of it."""
    from .transfer import transfer

    x = CALIBRATION["x"] if calibration is None else calibration
    report = transfer(source, target, calibration_data=x, align=True, **options)
    out = {"coverage": report.coverage, "transfer_seconds": report.seconds,
           "similarity": report.similarity}
    if report.alignment is not None:
        out["alignment"] = report.alignment.to_dict()
        out["lr_factor"] = report.alignment.lr_factor  # what align tells the user to use
    return out


INITS: dict[str, InitFn] = {
    "random": _init_random,
    "iatransfer": _init_iatransfer,
    "dpiat": _netgraft("dpiat"),
    "graft": _netgraft("graft"),
    "graft+importance": _netgraft("graft", shrink="importance"),
    "graft+uniform": _netgraft("graft", shrink="uniform"),
    "graft+normscale": _netgraft("graft", shrink="norm_scale"),
    "graft+calib": _init_graft_calibrated,
    "graft+align": _init_graft_aligned,
}


# ----------------------------------------------------------------------------- protocol
FIXED_EVAL_STEPS = (0, 25, 50, 75, 100)


@dataclass
class Config:
    dataset: str = "fashion-mnist"
    image_size: int = 32
    in_chans: int = 1
    regimes: dict[str, int] = field(default_factory=lambda: {"main": 4000, "low-data": 1000})
    test_size: int = 1000
    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    seeds: tuple[int, ...] = (0, 1)
    source_steps: int = 468
    source_batch_size: int = 128
    source_lr: float = 1e-3
    source_seed: int = 0
    evals_per_epoch: int = 4
    fixed_eval_steps: tuple[int, ...] = FIXED_EVAL_STEPS
    pairs: tuple[Pair, ...] = PAIRS
    inits: tuple[str, ...] = tuple(INITS)
    share_identical: bool = True
    #: evaluate with batch-norm statistics re-estimated on this many training images (0: the
    #: running statistics, the protocol of every run before 2026-11-26 02:30)
    precise_bn: int = 0

    def steps_per_epoch(self, n_train: int) -> int:
        return max(1, n_train // self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pairs"] = [asdict(p) | {"family": p.family} for p in self.pairs]
        d["regimes"] = {name: {"train_images": n, "steps_per_epoch": self.steps_per_epoch(n),
                               "steps": self.steps_per_epoch(n) * self.epochs,
                               "eval_steps": eval_points(self.steps_per_epoch(n), self.epochs,
                                                         self.fixed_eval_steps, self.evals_per_epoch)}
                        for name, n in self.regimes.items()}
        return d


def eval_points(steps_per_epoch: int, epochs: int = 3, fixed: Sequence[int] = FIXED_EVAL_STEPS,
                per_epoch: int = 4) -> list[int]:
    """Steps at which test accuracy is measured.

    The fixed steps (0, 25, 50, 75, 100) that fit in the run, a grid of ``1/per_epoch`` epochs
    without the grid points closer than half a grid step to a fixed step, and exactly 1 epoch
    and the final step.
    """
    total = steps_per_epoch * epochs
    fixed_in = sorted({int(s) for s in fixed if 0 <= s <= total})
    points = set(fixed_in)
    q = steps_per_epoch / per_epoch
    for k in range(1, per_epoch * epochs + 1):
        g = round(k * q)
        if 0 < g <= total and all(abs(g - f) >= q / 2 for f in fixed_in):
            points.add(g)
    points.update({min(steps_per_epoch, total), total, 0})
    return sorted(points)


BUDGETS = ("step_0", "step_50", "step_100", "epoch_1", "final")


def budget_steps(steps_per_epoch: int, epochs: int) -> dict[str, int | None]:
    """Budget name → step (None when the run is shorter than the budget)."""
    total = steps_per_epoch * epochs
    steps = {"step_0": 0, "step_50": 50, "step_100": 100, "epoch_1": steps_per_epoch, "final": total}
    return {k: (s if s <= total else None) for k, s in steps.items()}


def budget_label(name: str, epochs: int) -> str:
    return {"step_0": "@0", "step_50": "@50", "step_100": "@100", "epoch_1": "@1ep",
            "final": f"@{epochs}ep"}[name]


# ----------------------------------------------------------------------------- metrics
Curve = list[tuple[int, float]]


def mean_curve(histories: Sequence[Sequence[Sequence[float]]], chance: float = 0.1) -> Curve:
    """Mean over seeds at every evaluated step. A diverged run stops early; its missing later
    points count as chance accuracy (a NaN network predicts nothing useful)."""
    histories = [h for h in histories if h is not None]
    if not histories:
        return []
    steps = sorted({int(s) for h in histories for s, _ in h})
    maps = [{int(s): float(a) for s, a in h} for h in histories]
    return [(s, sum(m.get(s, chance) for m in maps) / len(maps)) for s in steps]


def value_at(curve: Curve, step: int | None) -> float | None:
    if step is None:
        return None
    for s, a in curve:
        if s == step:
            return a
    return None


def steps_to_reach(curve: Curve, threshold: float, tol: float = 1e-9) -> int | None:
    """First evaluated step at which `curve` reaches `threshold` (0 if it starts there), or
    None if it never does.

    Not interpolated between evaluations: a curve that starts just below the threshold and
    crosses it early would get a near-zero step count and an absurd speedup; at the resolution
    of the evaluation grid both curves are measured alike."""
    for s, a in curve:
        if a >= threshold - tol:
            return int(s)
    return None


def speedup(random_curve: Curve, curve: Curve) -> dict[str, Any]:
    """Steps random init needs to reach its own final accuracy ÷ steps `curve` needs.

    ``status``: "ok" (``speedup`` is a number), "never" (the init does not reach it: speedup
    < 1, reported as null), "at_step_0" (it starts above it: unbounded, reported as null),
    "degenerate" (random init's final accuracy is not above its step-0 accuracy).
    """
    out: dict[str, Any] = {"threshold": None, "steps_random": None, "steps": None,
                           "speedup": None, "status": "missing"}
    if not random_curve or not curve:
        return out
    threshold = random_curve[-1][1]
    steps_random = steps_to_reach(random_curve, threshold)
    steps = steps_to_reach(curve, threshold)
    out.update(threshold=threshold, steps_random=steps_random, steps=steps)
    if not steps_random:
        out["status"] = "degenerate"
    elif steps is None:
        out["status"] = "never"
    elif steps == 0:
        out["status"] = "at_step_0"
    else:
        out.update(status="ok", speedup=steps_random / steps)
    return out


def _median_step_seconds(m: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, reps: int,
                         warmup: int) -> float:
    """Median wall time of one Adam step of `m` on (x, y), after `warmup` untimed steps."""
    import torch.nn.functional as F

    opt = torch.optim.Adam(m.parameters(), lr=lr)
    m.train()
    times = []
    for i in range(reps + warmup):
        start = time.perf_counter()
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_step_seconds(model: nn.Module, data, cfg: Config, device: torch.device,
                         reps: int = 3) -> float:
    """Median wall time of one training step of `model` (a copy) at the benchmark's batch
    size, after one warm-up step: what a step costs, evaluations excluded."""
    m = copy.deepcopy(model).to(device)
    x, y = data.x[:cfg.batch_size].to(device), data.y[:cfg.batch_size].to(device)
    return _median_step_seconds(m, x, y, cfg.lr, reps, warmup=1)


def value_interpolated(curve: Curve, step: float) -> tuple[float | None, bool]:
    """Accuracy of `curve` at a fractional `step` (linear between evaluations) and whether it
    is beyond the curve's end (then the last accuracy, a generous estimate for a rising
    curve: the comparison is then in random init's favour)."""
    if not curve:
        return None, False
    if step >= curve[-1][0]:
        return curve[-1][1], step > curve[-1][0]
    for (s0, a0), (s1, a1) in zip(curve, curve[1:]):
        if s0 <= step <= s1:
            return a0 + (a1 - a0) * (step - s0) / (s1 - s0), False
    return curve[0][1], False


EQUAL_TIME_BUDGETS = ("step_50", "step_100", "epoch_1")


def equal_time(random_curve: Curve, entry: dict[str, Any], budgets: dict[str, int | None],
               step_seconds: float | None) -> dict[str, Any] | None:
    """Init vs random init at equal wall-clock time: random init gets the init's transfer
    seconds as extra training steps (seconds ÷ the measured seconds per step)."""
    seconds = entry.get("transfer_seconds")
    if not step_seconds or seconds is None or "accuracy" not in entry:
        return None
    extra = seconds / step_seconds
    out: dict[str, Any] = {"extra_steps": extra, "budgets": {}}
    for b in EQUAL_TIME_BUDGETS:
        step, acc = budgets.get(b), entry["accuracy"].get(b)
        if step is None or acc is None:
            continue
        rnd, beyond = value_interpolated(random_curve, step + extra)
        out["budgets"][b] = {"random_step": step + extra, "random_accuracy": rnd,
                             "beyond_run": beyond, "ratio": _ratio(acc, rnd),
                             "gain_points": 100 * (acc - rnd) if rnd is not None else None}
    return out


def _speedup_value(sp: dict[str, Any]) -> float | None:
    """Speedup as an ordered number for medians: never → 0, at step 0 → inf."""
    return {"ok": sp.get("speedup"), "never": 0.0, "at_step_0": math.inf}.get(sp.get("status"))


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def compute_metrics(runs: Sequence[dict], pairs: Sequence[Pair], inits: Sequence[str],
                    regimes: dict[str, int], config: Config,
                    source_accuracy: dict[str, float]) -> dict[str, Any]:
    """Per-regime, per-pair metrics from the run records, and their summaries."""
    done = {r["pair"] for r in runs}
    pairs = [p for p in pairs if p.key in done]  # a partial run summarises what it finished
    chance = 1.0 / 10
    out: dict[str, Any] = {}
    for regime, n_train in regimes.items():
        spe = config.steps_per_epoch(n_train)
        budgets = budget_steps(spe, config.epochs)
        rows = []
        for pair in pairs:
            src_acc = source_accuracy.get(pair.source)
            row: dict[str, Any] = {"pair": pair.key, "source": pair.source, "target": pair.target,
                                   "relation": pair.relation, "family": pair.family,
                                   "source_accuracy": src_acc, "inits": {}}
            curves: dict[str, Curve] = {}
            for init in inits:
                mine = [r for r in runs if r["pair"] == pair.key and r["init"] == init
                        and r["regime"] == regime]
                if not mine:
                    continue
                errors = [r["error"] for r in mine if r.get("error")]
                entry: dict[str, Any] = {
                    "seeds": [r["seed"] for r in mine],
                    "coverage": _mean(r.get("coverage") for r in mine),
                    "transfer_seconds": _mean(r.get("transfer_seconds") for r in mine),
                    "step_seconds": _mean(r.get("step_seconds") for r in mine),
                    "shared_with": next((r["shared_with"] for r in mine if r.get("shared_with")), None),
                    "diverged": any(r.get("diverged") for r in mine),
                }
                if errors:
                    entry["error"] = errors[0]
                    row["inits"][init] = entry
                    continue
                curve = mean_curve([r["history"] for r in mine], chance)
                curves[init] = curve
                entry["curve"] = [[s, a] for s, a in curve]
                entry["accuracy"] = {b: value_at(curve, s) for b, s in budgets.items()}
                entry["step0_vs_source"] = _ratio(entry["accuracy"]["step_0"], src_acc)
                row["inits"][init] = entry
            base = row["inits"].get(BASELINE)
            for init, entry in row["inits"].items():
                if init == BASELINE or "accuracy" not in entry or not base or "accuracy" not in base:
                    continue
                entry["ratio"] = {b: _ratio(entry["accuracy"][b], base["accuracy"][b]) for b in budgets}
                entry["gain_points"] = {
                    b: (100 * (entry["accuracy"][b] - base["accuracy"][b])
                        if entry["accuracy"][b] is not None and base["accuracy"][b] is not None else None)
                    for b in budgets}
                entry["speedup"] = speedup(curves[BASELINE], curves[init])
                # the init's own step time: measured in the run that timed its transfer (the
                # same number as random's within one run; a merged file may join two runs)
                eq = equal_time(curves[BASELINE], entry, budgets,
                                entry.get("step_seconds") or base.get("step_seconds"))
                if eq is not None:
                    entry["equal_time"] = eq
            rows.append(row)
        out[regime] = {"train_images": n_train, "steps_per_epoch": spe,
                       "steps": spe * config.epochs, "budgets": budgets, "pairs": rows,
                       "summary": summarize(rows, inits)}
    return out


def summarize(rows: Sequence[dict], inits: Sequence[str]) -> dict[str, Any]:
    """Means over pairs, for all pairs, same-family, cross-family and growth pairs."""
    groups = {
        "all": list(rows),
        "same-family": [r for r in rows if r["family"] == "same-family"],
        "cross-family": [r for r in rows if r["family"] == "cross-family"],
        "growth": [r for r in rows if r["relation"] in GROWTH],
    }
    out: dict[str, Any] = {}
    for group, members in groups.items():
        if not members:
            continue
        g: dict[str, Any] = {"pairs": len(members)}
        for init in inits:
            entries = [r["inits"][init] for r in members
                       if init in r["inits"] and "accuracy" in r["inits"][init]]
            if not entries:
                continue
            budgets = entries[0]["accuracy"].keys()
            s: dict[str, Any] = {
                "pairs": len(entries),
                "coverage": _mean(e["coverage"] for e in entries),
                "transfer_seconds": _mean(e["transfer_seconds"] for e in entries),
                "accuracy": {b: _mean(e["accuracy"][b] for e in entries) for b in budgets},
                "step0_vs_source": _mean(e.get("step0_vs_source") for e in entries),
            }
            if init != BASELINE and all("ratio" in e for e in entries):
                s["ratio"] = {b: _mean(e["ratio"][b] for e in entries) for b in budgets}
                s["gain_points"] = {b: _mean(e["gain_points"][b] for e in entries) for b in budgets}
                sps = [e["speedup"] for e in entries]
                finite = [sp["speedup"] for sp in sps if sp["status"] == "ok"]
                ordered = [v for v in (_speedup_value(sp) for sp in sps) if v is not None]
                eqs = [e.get("equal_time") for e in entries]
                if all(eqs):
                    s["equal_time"] = {
                        "extra_steps": _mean(q["extra_steps"] for q in eqs),
                        "gain_points": {b: _mean(q["budgets"].get(b, {}).get("gain_points")
                                                 for q in eqs) for b in EQUAL_TIME_BUDGETS},
                        "ratio": {b: _mean(q["budgets"].get(b, {}).get("ratio") for q in eqs)
                                  for b in EQUAL_TIME_BUDGETS},
                        "ahead": {b: sum((q["budgets"].get(b, {}).get("gain_points") or 0) > 0
                                         for q in eqs) for b in EQUAL_TIME_BUDGETS},
                    }
                s["speedup"] = {
                    "geomean_finite": (math.exp(sum(math.log(v) for v in finite) / len(finite))
                                       if finite else None),
                    "median": statistics.median(ordered) if ordered else None,
                    "ok": len(finite),
                    "never": sum(sp["status"] == "never" for sp in sps),
                    "at_step_0": sum(sp["status"] == "at_step_0" for sp in sps),
                    "degenerate": sum(sp["status"] == "degenerate" for sp in sps),
                }
            g[init] = s
        out[group] = g
    return out


# ----------------------------------------------------------------------------- formatting
def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _cell(acc: float | None, ratio: float | None) -> str:
    """An accuracy cell: ``71.2 (1.15×)``, just ``71.2`` without a ratio, ``–`` without both."""
    if acc is None:
        return "–"
    return _pct(acc) if ratio is None else f"{_pct(acc)} ({_x(ratio)})"


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}×"


def _gain(v: float | None) -> str:
    return "–" if v is None else f"{v:+.1f}"


def format_speedup(sp: dict[str, Any] | None) -> str:
    if not sp:
        return "–"
    status = sp.get("status")
    if status == "ok":
        return f"{sp['speedup']:.1f}×"
    return {"never": "<1 (never)", "at_step_0": "∞ (step 0)", "degenerate": "n/a"}.get(status, "–")


def _format_speedup_summary(sp: dict[str, Any] | None) -> str:
    if not sp:
        return "–"
    med = sp.get("median")
    med_s = "–" if med is None else ("∞" if math.isinf(med) else ("<1" if med == 0 else f"{med:.1f}×"))
    geo = sp.get("geomean_finite")
    parts = [f"median {med_s}"]
    if geo is not None:
        parts.append(f"geo-mean {geo:.1f}× over {sp['ok']}")
    if sp.get("never"):
        parts.append(f"{sp['never']} never")
    if sp.get("at_step_0"):
        parts.append(f"{sp['at_step_0']} at step 0")
    if sp.get("degenerate"):
        parts.append(f"{sp['degenerate']} n/a")
    return ", ".join(parts)


def _merged_inits(entries: dict[str, dict], inits: Sequence[str]) -> list[tuple[str, str]]:
    """(display label, init) per row: an init whose run was shared with another's is merged."""
    rows = []
    for init in inits:
        e = entries.get(init)
        if e is None or e.get("shared_with") in entries:
            continue
        twins = [i for i in inits if entries.get(i, {}).get("shared_with") == init]
        rows.append((" = ".join([init] + twins), init))
    return rows


def _summary_inits(rows: Sequence[dict], summary: dict[str, Any],
                   inits: Sequence[str]) -> list[tuple[str, str]]:
    """(display label, init) for the mean rows: an init that shared another's training run on
    every pair has the same numbers and is merged into that init's row."""
    twin_of = {}
    for init in inits:
        twins = {row["inits"].get(init, {}).get("shared_with") for row in rows}
        if len(twins) == 1 and None not in twins:
            twin_of[init] = twins.pop()
    return [(" = ".join([init] + [i for i, t in twin_of.items() if t == init]), init)
            for init in inits if init in summary and init not in twin_of]


def to_markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    epochs = cfg["epochs"]
    inits = [i for i in cfg["inits"] if i not in result.get("skipped_inits", {})]
    lines = [f"# Transfer quality: {result['mode']} run, {result['date']}", ""]
    lines.append(
        f"{cfg['dataset']} at {cfg['image_size']}×{cfg['image_size']}×{cfg['in_chans']}; "
        f"test accuracy (%) on {cfg['test_size']} fixed test images"
        + (f", batch-norm statistics re-estimated on {cfg['precise_bn']} training images before "
           f"each evaluation (PreciseBN)" if cfg.get("precise_bn") else "")
        + "; targets trained with "
        f"{cfg['optimizer']} lr {cfg['lr']:g}, batch {cfg['batch_size']}, {epochs} epochs, "
        f"seeds {', '.join(map(str, cfg['seeds']))} (curves averaged over seeds). "
        f"Machine: {result['machine']['summary']}. Wall time {result['wall_seconds'] / 60:.1f} min.")
    lines.append("")
    lines.append("## Sources")
    lines.append("")
    lines.append("| source | test acc (bench test images) | test acc (whole test split) | recipe | "
                 "train time | cached |")
    lines.append("|---|---|---|---|---|---|")
    for name, s in result["sources"].items():
        lines.append(f"| {name} | {_pct(s.get('accuracy'))} | {_pct(s.get('test_accuracy_full'))} | "
                     f"{s['steps']} steps × {s['batch_size']}, lr {s['lr']:g} | "
                     f"{s.get('train_seconds', 0):.0f} s | {'yes' if s.get('cached') else 'no'} |")
    for regime, m in result["metrics"].items():
        lines += ["", f"## Regime `{regime}`: {m['train_images']} training images, "
                      f"{m['steps_per_epoch']} steps/epoch, {m['steps']} steps", ""]
        blabels = [budget_label(b, epochs) for b in BUDGETS]
        lines.append("Cells: accuracy % (ratio to random init at the same budget).")
        lines.append("")
        lines.append("| pair | relation | init | coverage | " + " | ".join(blabels)
                     + f" | gain @{epochs}ep (pts) | @0 ÷ source | speedup |")
        lines.append("|" + "---|" * (len(blabels) + 7))
        for row in m["pairs"]:
            for label, init in _merged_inits(row["inits"], inits):
                e = row["inits"][init]
                if "error" in e:
                    lines.append(f"| {row['source']} → {row['target']} | {row['relation']} | "
                                 f"{label} | – | failed: {e['error'][:80]} |" + " |" * (len(blabels) + 2))
                    continue
                cells = [_cell(e["accuracy"].get(b), e.get("ratio", {}).get(b)) for b in BUDGETS]
                base = init == BASELINE
                gain = "" if base else _gain(e.get("gain_points", {}).get("final"))
                sp = "" if base else format_speedup(e.get("speedup"))
                src = "" if base else _x(e.get("step0_vs_source"))
                cov = f"{100 * e['coverage']:.0f}%" if e.get("coverage") is not None else "–"
                lines.append(f"| {row['source']} → {row['target']} | {row['relation']} | {label} | "
                             f"{cov} | " + " | ".join(cells) + f" | {gain} | {src} | {sp} |")
        for group, g in m["summary"].items():
            members = [r for r in m["pairs"] if group == "all" or r["family"] == group
                       or (group == "growth" and r["relation"] in GROWTH)]
            for label, init in _summary_inits(members, g, inits):
                s = g[init]
                base = init == BASELINE
                cells = [_cell(s["accuracy"].get(b), None if base else s.get("ratio", {}).get(b))
                         for b in BUDGETS]
                gain = "" if base else _gain(s.get("gain_points", {}).get("final"))
                sp = "" if base else _format_speedup_summary(s.get("speedup"))
                src = "" if base else _x(s.get("step0_vs_source"))
                cov = f"{100 * s['coverage']:.0f}%" if s.get("coverage") is not None else "–"
                n = g["pairs"]
                lines.append(f"| **mean, {group}** | {n} pair{'s' if n != 1 else ''} | {label} | {cov} | "
                             + " | ".join(cells) + f" | {gain} | {src} | {sp} |")
        lines += _equal_time_table(m, inits, epochs)
    lines += ["", "Ratios in the mean rows are means of the per-pair ratios; accuracies are means "
                  "of the per-pair accuracies. Speedup: steps random init needs to reach its own "
                  f"{epochs}-epoch accuracy ÷ steps the init needs (first evaluated step at "
                  "or above it); `<1 (never)` = not reached within the run, `∞ (step 0)` = "
                  "already above it before training. `@0 ÷ source`: step-0 accuracy relative to "
                  "the source network's accuracy on the same test images. Growth = deeper and "
                  "wider same-family pairs."]
    for note in result.get("notes", []):
        lines.append("")
        lines.append(f"Note: {note}")
    return "\n".join(lines) + "\n"


def _equal_time_table(m: dict[str, Any], inits: Sequence[str], epochs: int) -> list[str]:
    """Init vs random init given the init's transfer time as extra training steps."""
    rows = []
    for row in m["pairs"]:
        for init in inits:
            e = row["inits"].get(init, {})
            eq = e.get("equal_time")
            if init == BASELINE or not eq or e.get("shared_with") in row["inits"]:
                continue
            cells = []
            for b in EQUAL_TIME_BUDGETS:
                q = eq["budgets"].get(b)
                if q is None:
                    cells.append("–")
                    continue
                mark = "*" if q["beyond_run"] else ""
                cells.append(f"{_pct(e['accuracy'][b])} vs {_pct(q['random_accuracy'])}{mark} "
                             f"({_gain(q['gain_points'])})")
            rows.append(f"| {row['source']} → {row['target']} | {init} | "
                        f"{e['transfer_seconds']:.1f} s = {eq['extra_steps']:.1f} steps | "
                        + " | ".join(cells) + " |")
    for group, g in m["summary"].items():
        for init in inits:
            q = g.get(init, {}).get("equal_time")
            if not q or init == BASELINE:
                continue
            cells = [f"{_gain(q['gain_points'].get(b))} pts, ahead on {q['ahead'].get(b)}"
                     if q["gain_points"].get(b) is not None else "–" for b in EQUAL_TIME_BUDGETS]
            rows.append(f"| **mean, {group}** | {init} | {q['extra_steps']:.1f} steps | "
                        + " | ".join(cells) + " |")
    if not rows:
        return []
    labels = [budget_label(b, epochs) for b in EQUAL_TIME_BUDGETS]
    return ["", "Equal wall-clock time: random init trains for the init's transfer time longer "
                "(transfer seconds ÷ measured seconds per training step, interpolated on its "
                "curve; * = beyond its run, its last accuracy). Cells: init vs random (gain in "
                "points).", "",
            "| pair | init | transfer time | " + " | ".join(labels) + " |",
            "|" + "---|" * (3 + len(labels))] + rows


def plot(result: dict[str, Any], path: Path, regime: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = result["metrics"][regime]
    rows = m["pairs"]
    if not rows:
        return None
    ncols = min(4, len(rows))
    nrows = math.ceil(len(rows) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), squeeze=False,
                             sharex=True)
    colors = {"random": "#7f7f7f", "iatransfer": "#ff7f0e", "dpiat": "#1f77b4", "graft": "#d62728"}
    for ax, row in zip(axes.flat, rows):
        for label, init in _merged_inits(row["inits"], result["config"]["inits"]):
            e = row["inits"][init]
            if "curve" not in e:
                continue
            xs, ys = zip(*e["curve"])
            ax.plot(xs, [100 * y for y in ys], marker=".", ms=3, lw=1.2, label=label,
                    color=colors.get(init))
        if row.get("source_accuracy"):
            ax.axhline(100 * row["source_accuracy"], color="k", ls=":", lw=0.8, label="source")
        ax.set_title(f"{row['source']} → {row['target']}\n({row['relation']})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("training steps", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy %", fontsize=8)
    handles: dict = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles),
               fontsize=8, frameon=False)
    fig.suptitle(f"{result['config']['dataset']}, regime '{regime}' ({m['train_images']} images, "
                 f"mean over seeds {result['config']['seeds']})", fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def write_outputs(result: dict[str, Any], out_dir: str | os.PathLike, stem: str,
                  plots: bool = True) -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>_<regime>.png``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md"}
    _atomic_text(paths["json"], json.dumps(_jsonable(result), indent=1, allow_nan=False))
    if result.get("metrics"):
        _atomic_text(paths["md"], to_markdown(result))
        if plots:
            for regime in result["metrics"]:
                p = plot(result, out_dir / f"{stem}_{regime}.png", regime)
                if p is not None:
                    paths[f"png_{regime}"] = p
    return paths


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_result(path: str | os.PathLike, benchmark: str, fields: dict[str, Any], *,
                start: float, device: torch.device = torch.device("cpu")) -> Path:
    """Write a benchmark script's JSON (its name, the date, the machine and the wall time since
    `start`, then `fields`) atomically, and say where."""
    from .checkpoint import atomic_write

    payload = {"benchmark": benchmark,
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": machine_info(device),
               "wall_seconds": round(time.perf_counter() - start, 1), **fields}
    out = atomic_write(path, lambda p: Path(p).write_text(json.dumps(payload, indent=1)))
    print(f"wrote {out}")
    return Path(out)


# ----------------------------------------------------------------------------- machine
def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import timm

    info = {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": str(device),
            "python": sys.version.split()[0], "torch": torch.__version__, "timm": timm.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["loadavg_start"] = list(os.getloadavg())
    except OSError:
        pass
    info["summary"] = (f"{info.get('gpu') or cpu}, {info['cpu_count']} CPUs, "
                       f"{info['torch_threads']} torch threads, torch {info['torch']}, timm {info['timm']}")
    return info


# ----------------------------------------------------------------------------- sources
def _source_stem(name: str, cfg: Config) -> str:
    from .models import canonical_spec

    name = canonical_spec(name)  # however spaced, one cache file
    safe = re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_")
    if safe != name:  # builder arguments: readable, and told apart by a digest of the spec
        safe += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return (f"{safe}__{cfg.dataset}{cfg.image_size}c{cfg.in_chans}__{cfg.source_steps}x"
            f"{cfg.source_batch_size}_lr{cfg.source_lr:g}_{cfg.optimizer}_s{cfg.source_seed}")


def get_source(name: str, cfg: Config, cache: Path, train_full, test_full, device: torch.device,
               log: Callable[[str], None], progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    """The trained source `name`, loaded from the cache or trained (and cached) now."""
    from .checkpoint import load_into, load_state_dict, save_state_dict
    from .models import create_model
    from .training import evaluate, train

    stem = _source_stem(name, cfg)
    weights, sidecar = cache / f"{stem}.safetensors", cache / f"{stem}.json"
    torch.manual_seed(cfg.source_seed)
    model = create_model(name, num_classes=train_full.num_classes, in_chans=cfg.in_chans)
    if weights.is_file() and sidecar.is_file():
        try:
            load_into(model, load_state_dict(weights))
            info = json.loads(sidecar.read_text())
            info.update(cached=True, path=str(weights))
            log(f"source {name}: cached ({_pct(info.get('test_accuracy_full'))}% on the whole test split)")
            return model.eval(), info
        except Exception as exc:  # a corrupt cache entry is retrained, not fatal
            log(f"source {name}: cache unreadable ({type(exc).__name__}); retraining")
            torch.manual_seed(cfg.source_seed)
            model = create_model(name, num_classes=train_full.num_classes, in_chans=cfg.in_chans)
    log(f"source {name}: training {cfg.source_steps} steps × batch {cfg.source_batch_size} "
        f"on {len(train_full)} images …")
    model.to(device)
    res = train(model, train_full, steps=cfg.source_steps, batch_size=cfg.source_batch_size,
                lr=cfg.source_lr, optimizer=cfg.optimizer, seed=cfg.source_seed, progress=progress)
    if res.diverged:
        raise RuntimeError(f"source {name} diverged during training (loss {res.final_loss})")
    acc = evaluate(model, test_full)
    model.cpu().eval()
    info = {"name": name, "dataset": cfg.dataset, "image_size": cfg.image_size,
            "in_chans": cfg.in_chans, "num_classes": train_full.num_classes,
            "steps": cfg.source_steps, "batch_size": cfg.source_batch_size, "lr": cfg.source_lr,
            "optimizer": cfg.optimizer, "seed": cfg.source_seed, "train_images": len(train_full),
            "train_seconds": res.seconds, "test_accuracy_full": acc, "test_images_full": len(test_full),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__}
    cache.mkdir(parents=True, exist_ok=True)
    save_state_dict(model.state_dict(), weights)
    _atomic_text(sidecar, json.dumps(info, indent=1))
    info.update(cached=False, path=str(weights))
    log(f"source {name}: {_pct(acc)}% on the whole test split ({res.seconds:.0f} s)")
    return model, info


# ----------------------------------------------------------------------------- estimate
def _time_model(name: str, batch: int, eval_images: int, device: torch.device,
                image_size: int, in_chans: int, reps: int = 4) -> tuple[float, float]:
    """(seconds per training step at `batch`, seconds to evaluate `eval_images`)."""
    from .models import create_model

    torch.manual_seed(0)
    m = create_model(name, num_classes=10, in_chans=in_chans).to(device)
    x = torch.randn(batch, in_chans, image_size, image_size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    step = _median_step_seconds(m, x, y, 1e-3, reps, warmup=2)
    m.eval()
    xe = torch.randn(min(512, eval_images), in_chans, image_size, image_size, device=device)
    with torch.no_grad():
        m(xe)
        start = time.perf_counter()
        m(xe)
        te = time.perf_counter() - start
    return step, te * eval_images / len(xe)


def estimate(cfg: Config, device: torch.device, cache: Path, log: Callable[[str], None]) -> dict:
    """Predicted wall time of a run from measured step times (no training)."""
    targets = sorted({p.target for p in cfg.pairs})
    sources = sorted({p.source for p in cfg.pairs})
    t_step, t_eval, t_src = {}, {}, {}
    for name in targets:
        t_step[name], t_eval[name] = _time_model(name, cfg.batch_size, cfg.test_size, device,
                                                 cfg.image_size, cfg.in_chans)
        log(f"  {name:<24} train step (batch {cfg.batch_size}) {1000 * t_step[name]:7.1f} ms, "
            f"eval of {cfg.test_size} images {t_eval[name]:5.2f} s")
    for name in sources:
        cached = (cache / f"{_source_stem(name, cfg)}.safetensors").is_file()
        if cached:
            t_src[name] = 0.0
        else:
            step, ev = _time_model(name, cfg.source_batch_size, 10000, device, cfg.image_size, cfg.in_chans)
            t_src[name] = step * cfg.source_steps + ev
        log(f"  source {name:<17} {'cached' if cached else f'{t_src[name] / 60:5.1f} min to train'}")
    trained_inits = len(cfg.inits) - (1 if cfg.share_identical and {"iatransfer", "dpiat"} <= set(cfg.inits) else 0)
    total = sum(t_src.values())
    per_regime = {}
    for regime, n in cfg.regimes.items():
        spe = cfg.steps_per_epoch(n)
        steps = spe * cfg.epochs
        n_eval = len(eval_points(spe, cfg.epochs, cfg.fixed_eval_steps, cfg.evals_per_epoch))
        secs = sum(len(cfg.seeds) * trained_inits * (steps * t_step[p.target] + n_eval * t_eval[p.target])
                   for p in cfg.pairs)
        per_regime[regime] = {"steps": steps, "evals": n_eval, "seconds": secs}
        total += secs
        log(f"  regime {regime}: {len(cfg.pairs)} pairs × {len(cfg.seeds)} seeds × {trained_inits} "
            f"trained inits × ({steps} steps + {n_eval} evals) ≈ {secs / 60:.1f} min")
    log(f"  sources ≈ {sum(t_src.values()) / 60:.1f} min; total ≈ {total / 60:.1f} min "
        f"(+ transfers, model builds: typically < 1 min)")
    worst = None
    if trained_inits < len(cfg.inits):  # iatransfer assumed to share dpiat's runs, as measured
        worst = sum(t_src.values()) + sum(r["seconds"] for r in per_regime.values()) * (
            len(cfg.inits) / trained_inits)
        log(f"  (iatransfer assumed bit-identical to dpiat, so sharing its runs; if it were not: "
            f"≈ {worst / 60:.1f} min)")
    return {"train_step_seconds": t_step, "eval_seconds": t_eval, "source_seconds": t_src,
            "regimes": per_regime, "total_seconds": total, "total_seconds_unshared": worst}


# ----------------------------------------------------------------------------- running
def _state_digest(state: dict[str, torch.Tensor]) -> str:
    """A content hash of a state dict (names, dtypes, shapes and values)."""
    h = hashlib.sha256()
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _console(quiet: bool = False):
    from .cli import make_console

    console = make_console()  # piped: no table cut at 80 columns
    console.quiet, console.soft_wrap = quiet, True
    return console


def _outer_progress(enabled: bool, console):
    import contextlib

    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(TextColumn("{task.description:<52}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console)


def run_benchmark(cfg: Config, *, cache: Path, device: torch.device, mode: str,
                  progress: bool = True, console=None,
                  on_partial: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train sources (or load them), initialise and train every target; return the result."""
    from rich.markup import escape

    from .data import load_dataset
    from .models import create_model
    from .training import evaluate, train

    console = console or _console()
    wall = time.perf_counter()
    info = machine_info(device)
    result: dict[str, Any] = {
        "benchmark": "transfer_quality", "version": 1, "mode": mode,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "date_local": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": info, "config": cfg.to_dict(), "sources": {}, "skipped_inits": {},
        "runs": [], "notes": [], "complete": False,
    }

    train_full = load_dataset(cfg.dataset, "train", size=cfg.image_size, in_chans=cfg.in_chans)
    test_full = load_dataset(cfg.dataset, "test", size=cfg.image_size, in_chans=cfg.in_chans)
    test = test_full.subset(min(cfg.test_size, len(test_full)), seed=0)
    regimes = {name: min(n, len(train_full)) for name, n in cfg.regimes.items()}
    for note in size_notes(cfg, len(train_full), len(test_full)):
        console.print(f"[yellow]note:[/] {escape(note)}")
    train_sets = {name: train_full.subset(n, seed=0) for name, n in regimes.items()}
    CALIBRATION["x"] = min(train_sets.values(), key=len).x[:512]
    eval_at = {name: eval_points(cfg.steps_per_epoch(n), cfg.epochs, cfg.fixed_eval_steps,
                                 cfg.evals_per_epoch) for name, n in regimes.items()}
    cfg = replace(cfg, regimes=regimes, test_size=len(test))
    result["config"] = cfg.to_dict()
    console.print(f"[bold]netgraft bench[/] ({mode}): {len(cfg.pairs)} pairs × {len(cfg.seeds)} "
                  f"seed(s) × inits {', '.join(cfg.inits)} × regimes "
                  f"{', '.join(f'{k} ({v} images)' for k, v in regimes.items())}; {len(test)} test "
                  f"images; {info['summary']}")

    n_runs = len(cfg.pairs) * len(cfg.seeds) * len(cfg.inits) * len(regimes)
    sources: dict[str, nn.Module] = {}
    source_acc: dict[str, float] = {}
    step_time: dict[tuple, float] = {}
    done = 0
    with _outer_progress(progress, console) as bar:
        log = (bar.console.print if bar is not None else console.print)
        task = bar.add_task("runs", total=n_runs) if bar is not None else None

        def advance(description: str, n: int = 1) -> None:
            nonlocal done
            done += n
            if bar is not None:
                bar.update(task, advance=n, description=description)
            if on_partial is not None and result["runs"]:
                # after every run, not every pair: a run stopped or killed mid-pair keeps
                # every training finished so far (a pair of the full run takes up to an hour)
                result["wall_seconds"] = time.perf_counter() - wall
                on_partial(result)

        for name in dict.fromkeys(p.source for p in cfg.pairs):
            if bar is not None:
                bar.update(task, description=f"source {name}")
            model, sinfo = get_source(name, cfg, cache, train_full, test_full, device, log, progress)
            sources[name] = model
            start = time.perf_counter()
            sinfo["accuracy"] = evaluate(model.to(device), test)
            model.cpu()
            sinfo["accuracy_seconds"] = time.perf_counter() - start
            source_acc[name] = sinfo["accuracy"]
            result["sources"][name] = sinfo

        # runs keyed by (starting weights, seed, regime): training is deterministic on a CPU, so
        # bit-identical starts (random init of one target for several sources, or two inits
        # that produced the same weights) are trained once and shared
        trained: dict[tuple[str, int, str], dict] = {}
        for pair in cfg.pairs:
            source = sources[pair.source]
            for seed in cfg.seeds:
                torch.manual_seed(1000 + seed)  # the target's random init for this seed
                base = create_model(pair.target, num_classes=train_full.num_classes, in_chans=cfg.in_chans)
                for init in cfg.inits:
                    desc = f"{pair.source}→{pair.target} {init} s{seed}"
                    if init in result["skipped_inits"]:
                        advance(desc, len(regimes))
                        continue
                    model = copy.deepcopy(base)
                    record = {"pair": pair.key, "source": pair.source, "target": pair.target,
                              "relation": pair.relation, "init": init, "seed": seed}
                    try:
                        got = INITS[init](source, model)
                    except ImportError as exc:
                        note = f"init '{init}' skipped: {exc}"
                        result["skipped_inits"][init] = str(exc)
                        result["notes"].append(note)
                        log(f"[yellow]{escape(note)}[/]")
                        advance(desc, len(regimes))
                        continue
                    except Exception as exc:  # one failing init must not end the benchmark
                        msg = f"{type(exc).__name__}: {exc}"
                        log(f"[red]{pair.label} {init} seed {seed}: init failed: {escape(msg)}[/]")
                        for regime in regimes:
                            result["runs"].append({**record, "regime": regime, "error": msg})
                        advance(desc, len(regimes))
                        continue
                    record["coverage"] = got.get("coverage")
                    record["transfer_seconds"] = got.get("transfer_seconds")
                    if "similarity" in got:
                        record["similarity"] = got["similarity"]
                    if "alignment" in got:
                        record["alignment"] = got["alignment"]
                    # an init may ask for a lower fine-tuning rate (graft+align does, as align
                    # tells its users to); every other init trains at cfg.lr
                    record["lr"] = cfg.lr * got.get("lr_factor", 1.0)
                    if got.get("warmup_steps"):  # and a linear warm-up to that rate
                        record["warmup_steps"] = int(got["warmup_steps"])
                    digest = (f"{_state_digest(model.state_dict())}|{pair.target}|{record['lr']!r}"
                              f"|{record.get('warmup_steps', 0)}")
                    for regime in regimes:
                        if bar is not None:
                            bar.update(task, description=f"{desc} {regime}")
                        prior = trained.get((digest, seed, regime)) if cfg.share_identical else None
                        if prior is not None:
                            twin = (prior["init"] if prior["pair"] == pair.key
                                    else f"{prior['init']} of {prior['source']}→{prior['target']}")
                            result["runs"].append({**record, "regime": regime,
                                                   "step_seconds": prior.get("step_seconds"),
                                                   "history": prior.get("history"),
                                                   "train_seconds": 0.0,
                                                   "diverged": prior.get("diverged"),
                                                   "shared_with": prior.get("shared_with") or twin})
                            advance(desc)
                            log(f"[{done}/{n_runs}] {pair.label} {init:<10} seed {seed} {regime:<8} "
                                f"bit-identical to {twin}: shares its run")
                            continue
                        if (pair.target, seed, regime) not in step_time:
                            step_time[(pair.target, seed, regime)] = measure_step_seconds(
                                base, train_sets[regime], cfg, device)
                        record["step_seconds"] = step_time[(pair.target, seed, regime)]
                        m = copy.deepcopy(model).to(device)
                        res = train(m, train_sets[regime], steps=cfg.steps_per_epoch(regimes[regime]) * cfg.epochs,
                                    batch_size=cfg.batch_size, lr=record["lr"], optimizer=cfg.optimizer,
                                    warmup_steps=record.get("warmup_steps", 0),
                                    eval_data=test, eval_at=eval_at[regime], seed=seed,
                                    progress=progress, precise_bn=cfg.precise_bn)
                        del m
                        result["runs"].append({**record, "regime": regime,
                                               "history": [[s, a] for s, a in res.history],
                                               "train_seconds": res.seconds,
                                               "diverged": res.diverged, "shared_with": None})
                        trained[(digest, seed, regime)] = result["runs"][-1]
                        advance(desc)
                        final = res.history[-1][1] if res.history else float("nan")
                        log(f"[{done}/{n_runs}] {pair.label} {init:<10} seed {seed} {regime:<8} "
                            f"cov {100 * (record['coverage'] or 0):3.0f}%  acc@0 "
                            f"{_pct(res.history[0][1] if res.history else None)} → "
                            f"{_pct(final)}  ({res.seconds:.0f} s"
                            f"{', DIVERGED' if res.diverged else ''})")

    inits = [i for i in cfg.inits if i not in result["skipped_inits"]]
    result["metrics"] = compute_metrics(result["runs"], cfg.pairs, inits, regimes, cfg, source_acc)
    shared = [r for r in result["runs"] if r.get("shared_with") and r["regime"] == next(iter(regimes))]
    if shared:
        by = sorted({(r["init"], r["shared_with"]) for r in shared})
        for init, twin in by:
            n = len({(r["pair"], r["seed"]) for r in shared if r["init"] == init})
            total = len({(r["pair"], r["seed"]) for r in result["runs"] if r["init"] == init})
            result["notes"].append(
                f"{init} produced bit-identical weights to {twin} on {n} of {total} (pair, seed) "
                f"initialisations; those share {twin}'s training run (training on a CPU is "
                f"deterministic; --no-share trains them separately).")
    try:
        info["loadavg_end"] = list(os.getloadavg())
    except OSError:
        pass
    result["wall_seconds"] = time.perf_counter() - wall
    result["complete"] = True
    return result


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = Config()
    parser.add_argument("--quick", action="store_true",
                        help="3 pairs, 1 seed, main regime on 2,000 images (a few minutes)")
    parser.add_argument("--cache", default=os.environ.get("NETGRAFT_BENCH_CACHE",
                                                          "~/.cache/netgraft/bench"),
                        help="where trained sources are cached (default ~/.cache/netgraft/bench)")
    parser.add_argument("--out", default="benchmarks/results",
                        help="output directory for JSON, markdown and plots (default benchmarks/results)")
    parser.add_argument("--pairs", help="comma-separated source:target pairs (default: all, or the "
                                        "quick ones); source:target:relation for a pair not "
                                        "listed; 'transformers' for five ViT pairs")
    parser.add_argument("--inits", help=f"comma-separated inits (default: {','.join(INITS)}); "
                                        f"'{BASELINE}' is always included")
    parser.add_argument("--seeds", type=int, help="number of seeds (default 2, quick 1)")
    parser.add_argument("--train-size", type=int,
                        help=f"training images of the main regime (default {d.regimes['main']}, quick 2000)")
    parser.add_argument("--low-data-size", type=int,
                        help=f"training images of the low-data regime (default {d.regimes['low-data']}; "
                             "0 = skip the regime; quick skips it)")
    parser.add_argument("--test-size", type=int, help=f"test images (default {d.test_size})")
    parser.add_argument("--epochs", type=int, default=d.epochs, help=f"target epochs (default {d.epochs})")
    parser.add_argument("--source-steps", type=int, default=d.source_steps,
                        help=f"source training steps at batch {d.source_batch_size} (default {d.source_steps})")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads (default 2; 0 = one per CPU this process may use)")
    parser.add_argument("--no-share", action="store_true",
                        help="train inits with bit-identical weights separately")
    parser.add_argument("--precise-bn", type=int, default=0, metavar="N",
                        help="evaluate with batch-norm statistics re-estimated on N training "
                             "images (PreciseBN; removes the lag of running statistics that "
                             "makes early evaluations swing; default 0 = running statistics)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--estimate", action="store_true",
                        help="measure step times and print the predicted wall time; train nothing")
    parser.add_argument("--recompute", metavar="JSON",
                        help="recompute metrics, tables and plots from the runs of an earlier "
                             "result JSON, next to it (no training)")
    # hidden: a small dataset/resolution for tests and smoke runs
    parser.add_argument("--dataset", default=d.dataset, choices=("fashion-mnist", "digits"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--image-size", type=int, default=d.image_size, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=argparse.SUPPRESS)
    parser.add_argument("--source-batch-size", type=int, default=d.source_batch_size,
                        help=argparse.SUPPRESS)
    return parser


def recompute(result: dict[str, Any]) -> dict[str, Any]:
    """Metrics recomputed from the raw runs of an earlier result (e.g. after a metric changed)."""
    c = result["config"]
    cfg = Config(dataset=c["dataset"], image_size=c["image_size"], in_chans=c["in_chans"],
                 regimes={k: v["train_images"] for k, v in c["regimes"].items()},
                 test_size=c["test_size"], epochs=c["epochs"], batch_size=c["batch_size"],
                 lr=c["lr"], optimizer=c["optimizer"], seeds=tuple(c["seeds"]),
                 pairs=tuple(Pair(p["source"], p["target"], p["relation"], p.get("note", ""))
                             for p in c["pairs"]),
                 inits=tuple(c["inits"]))
    inits = [i for i in cfg.inits if i not in result.get("skipped_inits", {})]
    source_acc = {k: v["accuracy"] for k, v in result["sources"].items() if "accuracy" in v}
    out = dict(result)
    out["metrics"] = compute_metrics(result["runs"], cfg.pairs, inits, cfg.regimes, cfg, source_acc)
    out["recomputed"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return out


def config_from_args(args: argparse.Namespace) -> Config:
    from .models import split_specs

    cfg = Config(dataset=args.dataset, image_size=args.image_size, epochs=args.epochs,
                 source_steps=args.source_steps, batch_size=args.batch_size,
                 source_batch_size=args.source_batch_size, share_identical=not args.no_share,
                 precise_bn=args.precise_bn)
    if args.quick:
        cfg.pairs = find_pairs(QUICK_PAIRS)
        cfg.seeds = (0,)
        cfg.regimes = {"main": 2000}
    if args.pairs:
        cfg.pairs = find_pairs(split_specs(args.pairs))
    if args.inits:
        names = [n.strip() for n in args.inits.split(",") if n.strip()]
        unknown = [n for n in names if n not in INITS]
        if unknown:
            raise ValueError(f"unknown init(s) {unknown}; known: {', '.join(INITS)}")
        cfg.inits = tuple(n for n in INITS if n in names or n == BASELINE)
    if args.seeds is not None:
        if args.seeds < 1:
            raise ValueError("--seeds must be >= 1")
        cfg.seeds = tuple(range(args.seeds))
    if args.train_size is not None:
        cfg.regimes = {**cfg.regimes, "main": args.train_size}
    if args.low_data_size is not None:
        regimes = {k: v for k, v in cfg.regimes.items() if k != "low-data"}
        if args.low_data_size > 0:
            regimes["low-data"] = args.low_data_size
        cfg.regimes = regimes
    if args.test_size is not None:
        cfg.test_size = args.test_size
    if min(cfg.regimes.values(), default=0) < 1 or cfg.test_size < 1 or cfg.epochs < 1:
        raise ValueError("training/test sizes and --epochs must be >= 1")
    if cfg.source_steps < 1:
        raise ValueError(f"--source-steps must be >= 1, got {cfg.source_steps}")
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0 (0 = one per CPU), got {args.threads}")
    return cfg


def size_notes(cfg: Config, train_images: int, test_images: int) -> list[str]:
    """What a run says when it asks for more images than the data set has (it uses them all)."""
    notes = [f"the {name} regime asks for {n} training images; {cfg.dataset} has "
             f"{train_images}, so it uses all of them"
             for name, n in cfg.regimes.items() if n > train_images]
    if cfg.test_size > test_images:
        notes.append(f"--test-size {cfg.test_size} is more than the {test_images} test images "
                     f"of {cfg.dataset}; using all of them")
    return notes


def _threads(asked: int) -> int:
    """torch threads for ``--threads``: as asked, or one per usable CPU for 0."""
    if asked > 0:
        return asked
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


def _busy_warning(threads: int) -> str | None:
    """A warning when other processes already keep the CPUs busy and torch uses > 1 thread:
    its thread pool then waits on descheduled threads, and steps were seen to take 10-100x
    longer than on an idle machine (1 thread degrades gracefully)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cpus = os.cpu_count() or 1
    if threads > 1 and load >= max(1.0, 0.5 * cpus):
        return (f"warning: load average {load:.1f} on {cpus} CPUs before starting: with "
                f"{threads} torch threads on a busy machine, steps can be many times slower "
                f"(timings and the time budget no longer hold); --threads 1 degrades gracefully")
    return None


def run(args: argparse.Namespace) -> int:
    if args.recompute:
        path = Path(args.recompute)
        try:
            earlier = json.loads(path.read_text())
            if not isinstance(earlier, dict) or not {"config", "runs"} <= set(earlier):
                raise ValueError("it has no 'config' and 'runs'")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise NetgraftError(f"--recompute {path}: not a result of this benchmark ({why}); "
                                f"give a JSON file it wrote (benchmarks/results/*.json)") from None
        result = recompute(earlier)
        paths = write_outputs(result, path.parent, path.stem, plots=not args.no_plot)
        sys.stdout.write(to_markdown(result) + "\nwrote " + ", ".join(map(str, paths.values())) + "\n")
        return 0
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"netgraft bench: error: {exc}", file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    torch.set_num_threads(_threads(args.threads))
    try:
        return _run(args, cfg)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, cfg: Config) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cache = Path(args.cache).expanduser()
    console = _console()
    mode = "quick" if args.quick else "full"
    if args.estimate:
        console.print(f"estimated wall time of a {mode} run on this machine "
                      f"({torch.get_num_threads()} threads, {device}):")
        estimate(cfg, device, cache, console.print)
        return 0
    busy = _busy_warning(torch.get_num_threads())
    if busy:
        console.print(f"[yellow]{busy}[/]")
    stem = "transfer_quality" + ("_quick" if args.quick else "") + (
        f"_{cfg.dataset}" if cfg.dataset != Config.dataset else "")
    out_dir = Path(args.out)
    try:  # before any training: a run's results have somewhere to go
        if out_dir.exists() and not out_dir.is_dir():
            raise NotADirectoryError(20, "a file, not a folder", str(out_dir))
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"netgraft bench: error: --out {out_dir}: {exc.strerror or exc}; give a folder "
              f"for the results", file=sys.stderr)
        return 2

    def partial(result: dict) -> None:
        write_outputs({**result, "metrics": None}, out_dir, stem, plots=False)

    try:
        # bars only on a terminal: redirected to a file, the one-line-per-run log is the progress
        result = run_benchmark(cfg, cache=cache, device=device, mode=mode,
                               progress=not args.no_progress and console.is_terminal,
                               console=console, on_partial=partial)
    except KeyboardInterrupt:
        print(f"interrupted; partial runs are in {out_dir / (stem + '.json')}", file=sys.stderr)
        return 130
    paths = write_outputs(result, out_dir, stem, plots=not args.no_plot)
    sys.stdout.write("\n" + to_markdown(result) + "\n")  # plain: no wrapping, copy-pasteable
    sys.stdout.write("wrote " + ", ".join(str(p) for p in paths.values()) + "\n")
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="netgraft bench",
        description="Transfer-quality benchmark: does a graft train faster than random init?")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
