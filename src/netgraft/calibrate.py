"""Re-estimate normalisation statistics of a grafted model on a few unlabeled batches.

A grafted batch norm carries the running mean/variance of the *source's* activations; after its
inputs were produced by different (adapted, or other-family) layers those statistics no longer
describe what the layer sees, and an eval-mode forward is miscalibrated. A few batches of inputs
fix that without labels or gradient steps.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from .errors import NetgraftError, NetgraftWarning
from .trace import float_param, put_back, snapshot

#: inputs of at most this many elements are run through the model as one batch when a caller of
#: `recalibrated` also wants the outputs: the statistics and the outputs then come from a single
#: forward pass (8 Mi elements: 8,192 one-channel 32×32 images, 55 RGB 224×224 ones)
ONE_BATCH_ELEMENTS = 1 << 23
#: ... and of at least this many inputs: a batch norm that sees one value per input (a
#: BatchNorm1d, a 1×1 map) normalises a few inputs quite unlike the statistics it ends with
ONE_BATCH_MIN = 32


def reads_ids(model: nn.Module | None) -> bool:
    """Whether `model` reads integer inputs as they are: token ids, looked up by an
    nn.Embedding (or EmbeddingBag)."""
    return model is not None and any(isinstance(m, (nn.Embedding, nn.EmbeddingBag))
                                     for m in model.modules())


def model_input(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """`x` as `model` takes it: on its device; floating inputs in the dtype it computes in,
    integer ones as they are for a model that reads token ids (`reads_ids`), else cast to
    float as they are (uint8 images: `warn_if_integer` says so)."""
    param = float_param(model)
    if param is None:  # no float parameter to read a dtype from: float32, as before
        return x if x.is_floating_point() or reads_ids(model) else x.float()
    if x.is_floating_point() or not reads_ids(model):
        return x.to(device=param.device, dtype=param.dtype)
    return x.to(device=param.device)


def input_batch(item: Any, i: int, model: nn.Module | None = None) -> torch.Tensor:
    """Batch `i` of `calibration_data` as a tensor of inputs: a tensor, or the first element of
    an ``(inputs, labels)`` pair (a DataLoader's), a NumPy array converted; anything else a
    clear error, not one from deep inside the model. Integer inputs are warned about
    (`warn_if_integer`) unless `model` reads token ids."""
    x = item[0] if isinstance(item, (tuple, list)) and item else item
    if type(x).__module__ == "numpy":
        x = torch.as_tensor(x)
    if isinstance(x, dict):
        raise NetgraftError(
            f"calibration_data batch {i} is a dict (keys {', '.join(map(str, list(x)[:4]))}): "
            f"give tensors of inputs, or (inputs, labels) pairs, e.g. "
            f"(batch[{next(iter(x), 'key')!r}] for batch in loader)")
    if not isinstance(x, torch.Tensor):
        raise NetgraftError(f"calibration_data batch {i} is a {type(x).__name__}, not a tensor "
                            f"of inputs (or an (inputs, labels) pair)")
    if x.is_meta:
        raise NetgraftError("calibration_data is on the meta device (shapes without values): "
                            "give real inputs")
    if not reads_ids(model):
        warn_if_integer(x, "calibration_data", "pass", stacklevel=4)
    return x


def warn_if_integer(x: torch.Tensor, what: str, verb: str, *, stacklevel: int) -> None:
    """Warn, when `x` holds integers (uint8 images; not token ids, see `reads_ids`), that
    `what` is cast to float as it is, not scaled, and that the user should `verb` ("pass",
    "save") the inputs the model is trained on: the one text of the Python API (`input_batch`)
    and the CLI (`load_calibration`). `stacklevel` as the caller would give it to
    `warnings.warn`."""
    if not x.is_floating_point():  # (one message: Python shows it once per call site)
        warnings.warn(NetgraftWarning(
            f"{what} holds {str(x.dtype).replace('torch.', '')} values; they are cast to "
            f"float as they are (e.g. 0..255), not scaled: {verb} the inputs the model is "
            f"trained on (normalised floats)"), stacklevel=stacklevel + 1)


def _batches(data: Any, batch_size: int, model: nn.Module) -> Iterable[torch.Tensor]:
    if isinstance(data, torch.Tensor) or type(data).__module__ == "numpy":
        yield from input_batch(data, 0, model).split(batch_size)
        return
    for i, item in enumerate(data):
        yield input_batch(item, i, model)


def _norms_with_stats(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def _statistics(norms: list) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The running statistics of `norms`, to put back (`trace.put_back`) after re-estimating."""
    return snapshot(t for m in norms for t in (m.running_mean, m.running_var,
                                               m.num_batches_tracked))


@contextmanager
def recalibrated(model: nn.Module, data: Any, *, batch_size: int = 64,
                 role: str = "target", outputs: list | None = None) -> Iterator[int]:
    """Inside the block the batch norms hold statistics re-estimated on `data`
    (`recalibrate_norms`); on leaving it their running statistics are put back (PreciseBN
    evaluation: measure the weights without changing the training run). Yields the number of
    norms recalibrated.

    `outputs`: a list that receives the model's outputs on `data` under the re-estimated
    statistics, from the estimating pass itself, when `data` is a tensor of at most
    `ONE_BATCH_ELEMENTS` elements and at least `ONE_BATCH_MIN` inputs and the model has batch
    norms: `data` then goes through as one batch, so each norm normalises with the statistics
    it ends with (biased rather than unbiased variance: a factor (N-1)/N, N the values per
    channel) and a second, eval-mode pass is saved. Otherwise the list is left empty and the
    caller runs that pass: the statistics are re-estimated in batches of `batch_size` (also
    when the one batch runs out of memory), or kept from the one batch when a norm is called
    more than once per forward (each call normalised with its own batch's statistics)."""
    norms = _norms_with_stats(model)
    saved = _statistics(norms)
    one_batch = (outputs is not None and isinstance(data, torch.Tensor)
                 and ONE_BATCH_MIN <= len(data) and data.numel() <= ONE_BATCH_ELEMENTS)
    try:
        count = None
        if one_batch:
            try:
                count = recalibrate_norms(model, data, batch_size=len(data), role=role,
                                          outputs=outputs)
            except NetgraftError as exc:  # out of memory as one batch: in batches below
                if not isinstance(exc.__cause__, (torch.OutOfMemoryError, MemoryError)):
                    raise
                outputs.clear()
            # a norm called more than once per forward normalised each call with its own
            # batch, not with the statistics it ends with: those outputs are not the model's
            if any(int(m.num_batches_tracked) != 1 for m in norms):
                outputs.clear()
        if count is None:
            count = recalibrate_norms(model, data, batch_size=batch_size, role=role)
        yield count
    finally:
        put_back(saved)


def recalibrate_norms(model: nn.Module, data: Any, *, batch_size: int = 64,
                      max_batches: int | None = None, role: str = "target",
                      outputs: list | None = None) -> int:
    """Recompute the running statistics of every batch norm of `model` from `data`.

    `data` is a tensor of inputs (N, ...) or an iterable of input tensors or (input, label)
    pairs. Only batch norms switch to training mode (dropout and drop-path stay off), and they
    average over all batches (momentum=None). Returns the number of norms recalibrated.
    `role` names the model in errors ("target", or "source" when `align` recalibrates it).
    `outputs`: a list that receives the model's output on each batch of that pass (batch
    statistics; see `recalibrated`).
    """
    norms = _norms_with_stats(model)
    if not norms:
        return 0
    modes = [(m, m.training) for m in model.modules()]  # every flag (a frozen norm stays so)
    momenta = [m.momentum for m in norms]
    saved = _statistics(norms)
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    try:
        with torch.no_grad():
            for i, x in enumerate(_batches(data, batch_size, model)):
                if max_batches is not None and i >= max_batches:
                    break
                if len(x) < 2:  # batch statistics of one sample are undefined
                    continue
                if x.is_floating_point() and not torch.isfinite(x).all():
                    raise NetgraftError(f"calibration batch {i} holds NaN or inf values: the "
                                        f"statistics would be broken; remove those inputs")
                try:
                    y = model(model_input(x, model))
                except Exception as exc:
                    raise NetgraftError(
                        f"calibration batch {i} of shape {tuple(x.shape)} failed in the model: "
                        f"{type(exc).__name__}: {exc}. calibration_data must hold inputs the "
                        f"{role} accepts") from exc
                if outputs is not None:
                    outputs.append(y)
                seen += 1
        if not seen:
            raise NetgraftError("calibration_data yielded no batch of 2 or more inputs")
    except BaseException:
        put_back(saved)  # leave the statistics as they were
        raise
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        for m, training in modes:
            m.training = training
    return len(norms)


def check_calibration_spec(spec: str) -> None:
    """Raise the error `load_calibration` would for a calibration file that does not exist
    (cheap: lets the CLI refuse before it builds any model)."""
    from pathlib import Path

    from .data import TENSOR_FILE_SUFFIXES

    path = Path(spec)
    if path.suffix in TENSOR_FILE_SUFFIXES and not path.is_file():
        raise NetgraftError(f"calibration data not found: {path} (a .safetensors/.pt/.npy "
                            f"file of inputs, or fashion-mnist:N / digits:N)")


#: names of the spatial dimensions after (N, C) by input rank without N
_SPATIAL = {2: "L", 3: "H, W", 4: "D, H, W"}


#: the most calibration inputs read: from a built-in dataset (``"fashion-mnist:N"``), or from
#: an iterator (``transfer``'s ``CALIBRATION_LIMIT``)
CALIBRATION_IMAGES = 4096


def load_calibration(spec: str, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Unlabeled calibration inputs for a model taking ``input_shape`` (C, H, W …, no batch).

    `spec` is a file — ``.safetensors``, ``.pt``/``.pth`` (``weights_only=True``) or ``.npy``
    — holding an (N, C, H, W …) tensor (named ``x`` or ``inputs`` when the file holds
    several), or ``"fashion-mnist:512"`` / ``"digits:512"``: that many training images of a
    built-in dataset at the model's input size. Raises NetgraftError saying what is wrong
    (missing file, several tensors, a shape the model does not take) rather than failing
    inside the model."""
    from pathlib import Path

    from .data import TENSOR_FILE_SUFFIXES, load_dataset_spec, read_tensors

    path = Path(spec)
    if path.suffix not in TENSOR_FILE_SUFFIXES:  # a built-in dataset
        if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
            raise NetgraftError(f"--calibration {spec}: a built-in image dataset needs a model "
                                f"taking square images (C,H,H), this one takes {input_shape}; "
                                f"pass a tensor file instead")
        asked = spec.partition(":")[2]
        if asked.isdigit() and int(asked) > CALIBRATION_IMAGES:
            raise NetgraftError(f"--calibration {spec}: at most {CALIBRATION_IMAGES} images (a "
                                f"few hundred re-estimate the statistics; more only take time)")
        try:
            x = load_dataset_spec(spec, size=input_shape[1], in_chans=input_shape[0],
                                  default_count=512).x.contiguous()
        except (ValueError, FileNotFoundError) as exc:
            raise NetgraftError(f"--calibration {spec}: {exc}") from None
        if asked.isdigit() and int(asked) > len(x):
            warnings.warn(NetgraftWarning(f"--calibration {spec}: the dataset holds {len(x)} "
                                          f"training images; all {len(x)} are used"),
                          stacklevel=2)
        if len(x) < 2:
            raise NetgraftError(f"--calibration {spec}: ask for at least 2 images")
        return x
    check_calibration_spec(spec)
    try:
        tensors = read_tensors(path)
    except ValueError as exc:
        raise NetgraftError(f"calibration data: {exc}") from None
    named = [k for k in ("x", "inputs") if k in tensors]
    if not named and len(tensors) != 1:
        raise NetgraftError(f"{path} holds {len(tensors)} tensors "
                            f"({', '.join(list(tensors)[:5]) or 'none'}): name the inputs 'x'")
    x = tensors[named[0]] if named else next(iter(tensors.values()))
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:2]) != tuple(input_shape[:1]):
        raise NetgraftError(f"{path}: inputs of shape {tuple(x.shape)}, but the model takes "
                            f"(N, {input_shape[0]}, {_SPATIAL.get(len(input_shape), '…')}), "
                            f"e.g. (N, {', '.join(map(str, input_shape))}); save a batch of "
                            f"inputs as the model sees them")
    if len(x) < 2:
        raise NetgraftError(f"{path}: at least 2 calibration inputs are needed, found {len(x)}")
    warn_if_integer(x, str(path), "save", stacklevel=2)  # as the Python API warns
    return finite_inputs(x.float(), where=f"{path}: ", whose="its", noun="calibration inputs")


def finite_inputs(x: torch.Tensor, *, where: str = "", whose: str = "the",
                  noun: str = "inputs", error: type[Exception] = NetgraftError) -> torch.Tensor:
    """`x` itself, or `error` saying how many of its inputs (first dimension) hold NaN or inf
    values and which is the first: every statistic, fit or score made from them would be."""
    if x.is_floating_point():
        bad = ~torch.isfinite(x.flatten(1)).all(1)
        if bad.any():
            raise error(f"{where}{int(bad.sum())} of {whose} {len(x)} {noun} hold NaN or inf "
                        f"values (the first is input {int(bad.nonzero()[0])}); remove or fix "
                        f"them")
    return x
