"""Data-driven second stage of source ranking: probe each grafted candidate on labelled data.

The data-free similarity ranks sources from the architectures alone. When the user has a few
labelled batches of the target task, each shortlisted source can be checked more directly:
graft it onto a fresh target and measure what the grafted target already "knows" before any
training —

* **linear probe** (after Head2Toe, Evci et al. 2022): every block's output is averaged over
  its spatial (or token) positions, the pooled features of all blocks are concatenated and
  standardised, and an L2-regularised logistic regression is scored by stratified k-fold
  cross-validation. The same probe on the randomly initialised target is the baseline;
  ``gain = accuracy - baseline`` is the predicted benefit of the graft.
* **linear CKA** (Kornblith et al. 2019) between the source's and the grafted target's final
  pooled features on the same inputs: how much of the source's representation survived the
  graft (no labels used).
* **short fine-tune** (``steps > 0``): the grafted target and the random one are each trained
  ``steps`` Adam steps on two thirds of the data and scored on the held-out third; the
  difference is the probe's estimate of the gain. It costs ``steps`` training steps per source
  but measures what the user will actually do next — on our benchmark the linear probe and CKA
  did not predict fine-tuning gains (see the README), the short fine-tune did.

``probe_sources`` runs both for a list of sources; ``netgraft rank --probe-data`` uses it to
re-rank the data-free shortlist. The benchmark ``benchmarks/similarity_validation.py --probe``
measures whether the probe predicts the real fine-tuning gain better than the data-free score.
"""
from __future__ import annotations

import copy
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .align import _capture, _in_channels, _source_view
from .calibrate import finite_inputs
from .errors import NetgraftError, NetgraftWarning
from .trace import single_thread, trace

#: probe settings: images per forward batch, cross-validation folds, L2 strength (sklearn C)
BATCH, FOLDS, C = 256, 3, 0.1


class ProbeError(NetgraftError):
    """The probe data cannot be used (wrong type, too few examples or classes)."""


@dataclass
class ProbeResult:
    """One source probed as the initialisation of one target."""

    source: str
    target: str
    accuracy: float  # linear-probe accuracy on the grafted target's features (cross-validated)
    baseline: float  # the same probe on the randomly initialised target
    cka: float  # linear CKA, source vs grafted target final features
    coverage: float  # fraction of target parameters the graft filled
    seconds: float
    tuned: float | None = None  # held-out accuracy after the short fine-tune (steps > 0)
    tuned_baseline: float | None = None  # the same for the randomly initialised target

    @property
    def gain(self) -> float:
        """Predicted benefit of the graft: short fine-tune gain when measured, else the linear
        probe's."""
        if self.tuned is not None and self.tuned_baseline is not None:
            return self.tuned - self.tuned_baseline
        return self.accuracy - self.baseline

    def to_dict(self) -> dict[str, Any]:
        d = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        d["gain"] = round(self.gain, 6)
        return d


# ----------------------------------------------------------------------------- data
def labelled(data: Any, limit: int | None = None, *, num_classes: int | None = None,
             what: str = "probe data") -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` from a pair of tensors, an object with ``.x``/``.y`` (netgraft ImageDataset)
    or an iterable of ``(x, y)`` batches; at most ``limit`` examples (a positive number).
    The labels must be class numbers (whole, ``>= 0``, below ``num_classes`` when given), with
    at least 2 classes of ``FOLDS`` examples each; errors start with ``what`` (the file)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ProbeError(f"{what}: limit {limit!r}: give a positive number of examples")
    if hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, torch.Tensor) for t in data):
        x, y = data
    else:
        xs, ys, n = [], [], 0
        try:
            for item in data:
                if not (isinstance(item, (tuple, list)) and len(item) >= 2):
                    raise ProbeError("probe data must yield (inputs, labels) batches; got "
                                     f"{type(item).__name__}")
                xs.append(item[0])
                ys.append(item[1])
                n += len(item[0])
                if limit is not None and n >= limit:
                    break
        except TypeError:
            raise ProbeError(f"probe data must be (x, y) tensors or an iterable of (x, y) "
                             f"batches, got {type(data).__name__}") from None
        if not xs:
            raise ProbeError("probe data yielded no batches")
        x, y = torch.cat(xs), torch.cat(ys)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    if len(x) != len(y):
        raise ProbeError(f"{what}: {len(x)} inputs but {len(y)} labels")
    finite_inputs(x, where=f"{what}: ", error=ProbeError)
    y = class_labels(y, what, num_classes)
    counts = torch.bincount(y)
    present = counts[counts > 0]
    if len(present) < 2:
        raise ProbeError(f"{what} needs labels of at least 2 classes")
    if int(present.min()) < FOLDS:
        raise ProbeError(f"{what}: every class needs ≥ {FOLDS} examples for {FOLDS}-fold "
                         f"cross-validation (smallest class has {int(present.min())}); give "
                         "more labelled examples")
    return x.float(), y


def class_labels(y: Any, what: str = "probe data", num_classes: int | None = None) -> torch.Tensor:
    """Labels as a 1-D long tensor of class numbers; a ProbeError starting with `what` for
    labels that are not one whole, non-negative number per example (below `num_classes`)."""
    if not isinstance(y, torch.Tensor):
        raise ProbeError(f"{what}: labels y must be a tensor, got {type(y).__name__}")
    if y.ndim > 1 and not (y.ndim == 2 and y.shape[1] == 1):
        raise ProbeError(f"{what}: labels y have shape {tuple(y.shape)}: give one class number "
                         f"per example, shape (N,)")
    y = y.flatten()
    if not len(y):
        raise ProbeError(f"{what}: no labelled examples")
    if y.is_complex():
        raise ProbeError(f"{what}: labels y are complex numbers: give whole class numbers "
                         f"0, 1, 2, ...")
    if y.is_floating_point():
        bad = y[~torch.isfinite(y) | (y != torch.round(y))]
        if len(bad):
            raise ProbeError(f"{what}: labels y are {str(y.dtype).replace('torch.', '')} values "
                             f"such as {bad[0].item():g}: give whole class numbers 0, 1, 2, ...")
    y = y.long()
    low, high = int(y.min()), int(y.max())
    if low < 0:
        raise ProbeError(f"{what}: label {low} is negative: labels are class numbers 0, 1, 2, ...")
    if num_classes is not None and high >= num_classes:
        raise ProbeError(f"{what}: labels out of range 0..{num_classes - 1} (found {high}) for a "
                         f"target of {num_classes} classes: give labels below the target's "
                         f"number of classes (--num-classes)")
    return y


# ----------------------------------------------------------------------------- features
def feature_points(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the modules whose outputs the probe reads: every traced block that is a
    module of its own (the output of a residual block, after the addition), except the
    classifier (the block producing the model output: its logits belong to the source's task)."""
    modules = dict(model.named_modules())
    arch = trace(model, example[:1])
    names = [b.name for b in arch.blocks if b.name and b.name in modules
             and not any(arch.layers[i].role == "output" for i in b.layers)]
    # a block nested in another block would be read twice; keep the outermost
    return [n for n in names if not any(n.startswith(o + ".") for o in names if o != n)]


def _pool(t: torch.Tensor) -> torch.Tensor | None:
    if t.ndim >= 3 and t.ndim <= 5:
        # (N, C, *spatial) maps; (N, T, C) token sequences are averaged over tokens
        return t.mean(1) if t.ndim == 3 else t.flatten(2).mean(2)
    return t if t.ndim == 2 else None


@torch.no_grad()
def pooled_features(model: nn.Module, x: torch.Tensor, names: Sequence[str] | None = None,
                    batch_size: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    """(all-blocks features, final features): block outputs pooled and concatenated, and the
    last block's pooled output, for every row of ``x`` (eval mode, float64 numpy)."""
    names = list(names) if names is not None else feature_points(model, x)
    if not names:
        raise ProbeError(f"{type(model).__name__}: no block outputs to probe")
    was = model.training
    model.eval()
    parts: list[np.ndarray] = []
    try:
        for start in range(0, len(x), batch_size):
            out, _ = _capture(model, names, x[start:start + batch_size])
            pooled = [p for n in names if n in out and (p := _pool(out[n])) is not None]
            if not pooled:
                raise ProbeError(f"{type(model).__name__}: the probed blocks returned no tensors")
            parts.append(torch.cat([p.flatten(1).double() for p in pooled], 1).numpy())
            last = pooled[-1].shape[1]
    finally:
        model.train(was)
    feats = np.concatenate(parts)
    return feats, feats[:, -last:]


def linear_probe(features: np.ndarray, labels: np.ndarray, *, folds: int = FOLDS,
                 c: float = C, seed: int = 0) -> float:
    """Mean held-out accuracy of a standardised, L2-regularised logistic regression."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000, tol=1e-3))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a probe needs a ranking, not the last digit of the optimum
        warnings.simplefilter("ignore", ConvergenceWarning)
        return float(cross_val_score(clf, features, labels, cv=cv).mean())


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear centred kernel alignment of two feature matrices with the same rows, in [0, 1]."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    cross = np.linalg.norm(b.T @ a) ** 2
    norm = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    return float(cross / norm) if norm > 0 else 0.0


def _split(x: torch.Tensor, y: torch.Tensor, seed: int):
    """Stratified two-thirds / one-third split as netgraft ImageDatasets."""
    from sklearn.model_selection import train_test_split

    from .data import ImageDataset

    idx = np.arange(len(y))
    fit, held = train_test_split(idx, test_size=1 / 3, stratify=y.numpy(), random_state=seed)
    classes = int(y.max()) + 1
    return (ImageDataset("probe", x[fit], y[fit], classes),
            ImageDataset("probe", x[held], y[held], classes))


def finetune_probe(model: nn.Module, fit: Any, held: Any, steps: int, *, lr: float = 1e-3,
                   batch_size: int = 64, seed: int = 0) -> float:
    """Held-out accuracy of a copy of ``model`` after ``steps`` Adam steps on ``fit``."""
    from .training import train

    tuned = copy.deepcopy(model)
    result = train(tuned, fit, steps=steps, batch_size=min(batch_size, len(fit)), lr=lr,
                   eval_data=held, eval_at=[steps], seed=seed)
    return float(result.history[-1][1])


# ----------------------------------------------------------------------------- probe
_RESIZE = {1: "linear", 2: "bilinear", 3: "trilinear"}


def source_view(x: torch.Tensor, source: nn.Module, source_input: Any = None,
                name: str = "source") -> torch.Tensor:
    """The probe inputs `x` (the target's) as `source` is run on them: with a tensor
    `source_input` (its own input, e.g. a zoo entry's ``--input-size``), at that input's
    channels and size (channels averaged / replicated, positions resized); without one, at
    the channels of its first convolution, size unchanged. A ProbeError naming the source
    when its own input has another number of dimensions than the probe inputs. A source
    without convolutions (a token model: dimension 1 is its sequence, not channels) gets the
    probe inputs as they are."""
    channels = _in_channels(source)
    if not isinstance(source_input, torch.Tensor) or channels is None:
        return _source_view(x, channels)
    own = tuple(source_input.shape[1:])
    if len(own) != x.ndim - 1:
        raise ProbeError(
            f"source '{name}' takes inputs of shape {own}, the probe inputs are "
            f"{tuple(x.shape[1:])}: give probe data (and a target) with as many dimensions as "
            f"the source's input, or leave this source out of the probe")
    xs = _source_view(x, own[0])
    if tuple(xs.shape[2:]) != own[1:]:
        import torch.nn.functional as F

        xs = F.interpolate(xs, size=own[1:], mode=_RESIZE.get(len(own) - 1, "nearest"),
                           align_corners=None if len(own) - 1 not in _RESIZE else False)
    return xs


def probe_sources(sources: Sequence[tuple[str, nn.Module]], make_target: Callable[[], nn.Module],
                  data: Any, *, limit: int | None = 1000, target_name: str = "target",
                  steps: int = 0, lr: float = 1e-3, seed: int = 0,
                  progress: Callable[[str], None] | None = None,
                  source_inputs: dict[str, Any] | None = None,
                  **transfer_kwargs: Any) -> list[ProbeResult]:
    """Graft each ``(name, source)`` onto a fresh ``make_target()`` and probe it on ``data``
    (labelled: see ``labelled``); with ``steps > 0`` also a short fine-tune at rate ``lr``.

    The baseline is one unmodified ``make_target()``; every graft starts from a copy of its
    weights. Results come in input order; sort by ``.gain`` to rank. `source_inputs` maps a
    source's name to an input it is traced on, for a source that needs its own (the
    ``source_input`` of ``netgraft.transfer``): such a source is run on the probe inputs
    resized to that input's size (``source_view``), for the CKA."""
    from .transfer import transfer

    if steps < 0:
        raise ProbeError(f"steps={steps}: give 0 (no fine-tune) or a positive number")
    x, y = labelled(data, limit)
    labels = y.numpy()
    fit, held = _split(x, y, seed) if steps else (None, None)
    with single_thread():
        base = make_target()
        example = x[:1]
        names = feature_points(base, example)
        base_feats, _ = pooled_features(base, x, names)
        baseline = linear_probe(base_feats, labels, seed=seed)
        tuned_base = finetune_probe(base, fit, held, steps, lr=lr, seed=seed) if steps else None
        results = []
        for name, source in sources:
            start = time.perf_counter()
            if progress:
                progress(name)
            target = make_target()
            target.load_state_dict(base.state_dict())
            src = copy.deepcopy(source)
            with warnings.catch_warnings():  # distant pairs warn; ranking them is the point here
                warnings.simplefilter("ignore", NetgraftWarning)
                report = transfer(src, target, example_input=example,
                                  source_input=(source_inputs or {}).get(name), **transfer_kwargs)
            feats, final = pooled_features(target, x, names)
            xs = source_view(x, src, (source_inputs or {}).get(name), name)
            src_names = feature_points(src, xs[:1])
            _, src_final = pooled_features(src, xs, src_names)
            results.append(ProbeResult(
                source=name, target=target_name, accuracy=linear_probe(feats, labels, seed=seed),
                baseline=baseline, cka=linear_cka(src_final, final), coverage=report.coverage,
                seconds=0.0,
                tuned=finetune_probe(target, fit, held, steps, lr=lr, seed=seed) if steps else None,
                tuned_baseline=tuned_base))
            results[-1].seconds = time.perf_counter() - start
    return results


# ----------------------------------------------------------------------------- CLI data
def load_probe_data(spec: str, *, image_size: int | tuple[int, int] = 32, in_chans: int = 1,
                    limit: int = 1000, num_classes: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled probe data for the CLI: a file holding tensors ``x`` (N, C, H, W) and ``y``
    (N,) — ``.safetensors`` or a torch file read with ``weights_only=True`` — or a built-in
    dataset ``fashion-mnist[:N]`` / ``digits[:N]`` (a stratified train subset, resized to
    `image_size`: a side, or (height, width)); at most ``limit`` examples, labels below
    ``num_classes`` when given (see ``labelled``)."""
    from pathlib import Path

    from .data import TENSOR_FILE_SUFFIXES, load_dataset_spec, read_tensors

    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ProbeError(f"--probe-limit {limit!r}: give a positive number of examples")
    path = Path(spec)
    if path.suffix in TENSOR_FILE_SUFFIXES:
        try:
            tensors = read_tensors(path)
        except FileNotFoundError:
            raise ProbeError(f"probe data file not found: {path}") from None
        except ValueError as exc:
            raise ProbeError(f"probe data: {exc}") from None
        if not {"x", "y"} <= set(tensors):
            raise ProbeError(f"{path}: expected tensors named 'x' (inputs) and 'y' (labels)")
        return labelled((tensors["x"], tensors["y"]), limit, num_classes=num_classes,
                        what=str(path))
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    try:
        data = load_dataset_spec(spec, size=width, in_chans=in_chans, default_count=limit)
    except ValueError as exc:
        raise ProbeError(f"--probe-data {spec}: {exc}; give a .safetensors/.pt file with 'x' "
                         "and 'y', or fashion-mnist[:N] / digits[:N]") from None
    except FileNotFoundError as exc:
        raise ProbeError(str(exc)) from None
    if height != width:  # the model's own input shape, not a square
        import torch.nn.functional as F

        data = (F.interpolate(data.x, size=(height, width), mode="bilinear",
                              align_corners=False), data.y)
    return labelled(data, limit, num_classes=num_classes, what=f"--probe-data {spec}")
