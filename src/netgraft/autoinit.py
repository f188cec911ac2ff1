"""Data-free initialisation that keeps activations at a stable scale through the network.

After AutoInit (Bingham & Miikkulainen, 2023): a good init keeps the mean and variance of every
layer's output stable with depth, whatever the layers are. Rather than derive the formulas for
every layer type, the statistics are *measured*: a random N(0, 1) probe (no data) is pushed
through the network, and layer by layer, in execution order, each conv/linear weight is scaled
so that its output has the wanted standard deviation, and its bias shifted so that the output
has zero mean per channel. Every layer is fitted on the outputs of the layers before it as they
now are, so the estimates propagate through norms, activations and residual sums.

Batch norms see the probe's batch statistics, as in training (their running statistics are
left as they were).

Two modes:

* ``"unit"`` — every output has unit variance (LSUV-like, but without data);
* ``"preserve"`` — a layer's output keeps the scale of its input. This is what grafting needs
  for layers nothing was transferred to: they sit between transferred layers, whose inputs
  had the scale of their source's activations, so an unmatched layer should pass that scale
  on rather than impose its own (``transfer(..., autoinit=True)``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn

from .errors import NetgraftError
from .trace import Architecture, _first_tensor, run_model, single_thread, trace

__all__ = ["AutoInitReport", "autoinit"]

MODES = ("unit", "preserve")
_KINDS = ("conv", "linear", "conv_transpose")
_PROBE_ELEMENTS = 1 << 16


class _Stop(Exception):
    """Raised from a hook once the layer of interest has run: the rest of the forward is
    not needed."""


@dataclass
class AutoInitReport:
    scales: dict[str, float] = field(default_factory=dict)  # layer → factor applied to weight
    output_std: dict[str, float] = field(default_factory=dict)  # layer → std after
    skipped: dict[str, str] = field(default_factory=dict)  # layer → why it was left alone
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"scales": self.scales, "output_std": self.output_std, "skipped": self.skipped,
                "seconds": self.seconds}


def _probe(arch: Architecture, batch: int, seed: int) -> Any:
    example = arch.example_input
    if not isinstance(example, torch.Tensor) or not example.is_floating_point():
        return example  # token ids or several arguments: use them as they are
    g = torch.Generator().manual_seed(seed)
    per_sample = max(1, example[0].numel()) if example.ndim else 1
    # enough samples that a deep layer's std is estimated without a small-sample bias
    batch = max(batch, min(1024, -(-_PROBE_ELEMENTS // per_sample)), example.shape[0] if example.ndim else 1)
    shape = (batch,) + tuple(example.shape[1:])
    return torch.randn(shape, generator=g).to(device=example.device, dtype=example.dtype)


def _measure(model: nn.Module, module: nn.Module, probe: Any) -> tuple[torch.Tensor, torch.Tensor]:
    got: dict[str, torch.Tensor] = {}

    def hook(mod, args, out):
        got["in"], got["out"] = _first_tensor(args), _first_tensor(out)
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        run_model(model, probe)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "out" not in got:
        raise NetgraftError("layer did not run on the probe input")
    return got["in"], got["out"]


def _channel_dim(layer_kind: str, out: torch.Tensor) -> int:
    return 1 if layer_kind in ("conv", "conv_transpose") and out.ndim > 2 else out.ndim - 1


def autoinit(model: nn.Module, example_input: Any = None, *, layers: Iterable[str] | None = None,
             mode: str = "unit", batch_size: int = 16, seed: int = 0, tolerance: float = 0.02,
             max_iter: int = 1, center: bool = False,
             arch: Architecture | None = None) -> AutoInitReport:
    """Rescale the conv/linear layers of `model` in place so activations keep a stable scale.

    `example_input` is only used for its shape (a random N(0, 1) probe of that shape, batch
    `batch_size`, is what flows through the network: no data needed); inferred as in
    `trace`. `layers` restricts the rescaling to those layer names (the others are left
    exactly as they are but still shape what the named layers see). `mode`: ``"unit"`` (unit
    output variance) or ``"preserve"`` (output std = input std). With `center`, a layer with a
    bias also gets zero-mean outputs per channel on the probe (off by default: in a deep plain
    net the probe's per-channel means are estimates, and removing them was measured to let
    the scale drift upwards with depth on other inputs). Returns the factors applied.

    Residual sums are measured, not modelled: with ``"unit"`` every branch ends at unit
    variance, so the residual stream still grows with the number of blocks (as with the
    default init); ``"preserve"`` does not add to it.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: choose one of {MODES}")
    start = time.perf_counter()
    arch = arch or trace(model, example_input)
    wanted = set(layers) if layers is not None else None
    report = AutoInitReport()
    candidates = [layer for layer in arch.layers if layer.kind in _KINDS
                  and (wanted is None or layer.name in wanted)]
    probe = _probe(arch, batch_size, seed)
    was = model.training
    model.eval()
    # batch norms normalise with the probe's batch statistics, as in training (their running
    # statistics may come from another network and silence whole layers); restored after
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in norms]
    for m in norms:
        m.train()
    try:
        with torch.no_grad(), single_thread():
            for layer in candidates:
                weight = getattr(layer.module, "weight", None)
                bias = getattr(layer.module, "bias", None)
                if not isinstance(weight, torch.Tensor):
                    report.skipped[layer.name] = "no weight"
                    continue
                if not layer.executed:
                    report.skipped[layer.name] = "not executed on the probe"
                    continue
                total = 1.0
                for _ in range(max_iter):
                    try:
                        x, y = _measure(model, layer.module, probe)
                    except NetgraftError:
                        report.skipped[layer.name] = "did not run on the probe"
                        break
                    if center and isinstance(bias, torch.Tensor) and y.ndim >= 2:
                        dim = _channel_dim(layer.kind, y)
                        dims = [d for d in range(y.ndim) if d != dim]
                        mean = y.double().mean(dims)
                        if mean.numel() == bias.numel():
                            bias.sub_(mean.to(bias.dtype))
                            shape = [1] * y.ndim
                            shape[dim] = -1
                            y = y - mean.to(y.dtype).view(shape)
                    std = float(y.double().std())
                    goal = 1.0 if mode == "unit" else float(x.double().std()) if x is not None else 1.0
                    if not (std > 0 and torch.isfinite(torch.tensor(std))) or not goal > 0:
                        report.skipped[layer.name] = f"output std {std:.3g} cannot be rescaled"
                        break
                    factor = goal / std
                    if abs(factor - 1) < tolerance:
                        break
                    weight.mul_(factor)
                    if isinstance(bias, torch.Tensor):
                        bias.mul_(factor)
                    total *= factor
                    std = goal  # exact: the (centred) output is linear in weight and bias
                if layer.name not in report.skipped:
                    report.scales[layer.name] = total
                    report.output_std[layer.name] = std
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved):
                for k, v in buffers.items():
                    getattr(m, k).copy_(v)
        model.train(was)
    report.seconds = time.perf_counter() - start
    return report
