"""Data-free initialisation that keeps activations at a stable scale through the network.

After AutoInit (Bingham & Miikkulainen, 2023): a good init keeps the mean and variance of every
layer's output stable with depth, whatever the layers are. Rather than derive the formulas for
every layer type, the statistics are *measured*: a random N(0, 1) probe (no data) is pushed
through the network, and as the forward pass reaches each conv/linear layer its weight is
scaled so that its output has the wanted standard deviation (and optionally its bias shifted so
that the output has zero mean per channel), and the rescaled output is passed on. Every layer
is thus fitted on the outputs of the layers before it as they now are, so the estimates
propagate through norms, activations, gates and residual sums.

Batch norms see the probe's batch statistics, as in training. When the whole model is
initialised their running statistics are then set to the probe's (a data-free PreciseBN), so
that eval mode computes the function that was fitted: with the defaults of a fresh batch norm
(mean 0, variance 1) every norm is an identity in eval mode, the layers' scales were fitted
for normalised inputs, and the mismatch compounds with depth (timm's efficientnet_b0 grew to
std 26–140 at its head in eval mode while it held 1 in training mode). When only some
`layers` are rescaled (a graft) the running statistics are left as they were: they belong to
the caller (`transfer`'s ``norm_stats``).

Two modes:

* ``"unit"`` — every output has unit variance (LSUV-like, but without data);
* ``"preserve"`` — a layer's output keeps the scale of the signal it reads, as that signal was
  before the elementwise nonlinearity in between (the scale of ``z`` for a layer reading
  ``relu(z)``): a ReLU halves the second moment and a GELU or SiLU near 0 halves the std, so
  matching the activation's *output* instead shrank the signal by that factor at every layer
  (1, 0.59, 0.34, ... 6e-6 after 21 ReLU layers). This is the activation's gain AutoInit
  accounts for when it propagates mean and variance through the activation; here it is
  measured, by following each tensor back through activations, dropout and reshapes
  (`_PreActivation`). This mode is what grafting needs for layers nothing was transferred to:
  they sit between transferred layers, whose inputs had the scale of their source's
  activations, so an unmatched layer should pass that scale on rather than impose its own
  (``transfer(..., autoinit=True)``).
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakTensorKeyDictionary

from .errors import NetgraftError, first_line
from .reparam import changed_by_write_back, constrained_layers, plain_copy, reparametrized, write_back
from .trace import (Architecture, first_tensor, check_traceable, keep_modes, put_back, run_model,
                    single_thread, snapshot, trace, uncompiled)

__all__ = ["AutoInitReport", "autoinit"]

MODES = ("unit", "preserve")
NORM_STATS = ("auto", "probe", "keep")
_KINDS = ("conv", "linear", "conv_transpose")
#: input elements of the probe (at least `batch_size` samples, at most `_MAX_SAMPLES`): 86
#: samples of 3×64×64. The fit is one forward pass (`_Fit`), so this costs little; layers on
#: pooled features (a head, a squeeze-excitation gate) see one value per sample and channel,
#: and fitted on 16 samples mobilenetv3_small_100's head came out at std 2.5 on other inputs
#: (1.9 with 86)
_PROBE_ELEMENTS = 1 << 20
#: input elements behind the running statistics (`norm_stats="probe"`): a deep layer's maps are
#: small (2×2 at stride 32 of a 64×64 input), and statistics from 16 samples were too noisy
#: there: eval mode drifted from what was fitted (mobilenetv3_small_100's head at std 8
#: instead of 1)
_STATS_ELEMENTS = 1 << 22
#: input elements per batch of that pass: per-batch statistics of small batches, averaged, are
#: biased where maps are small (batches of 16 samples of 2×2: eval-mode variance off by a few
#: percent per norm, compounding to a head at std 2.7 instead of 1.5 in efficientnet_b0)
_STATS_BATCH_ELEMENTS = 1 << 20
#: most samples in one batch: flat features (N, D), and inputs with more dimensions (images,
#: sequences), whose intermediate maps can be tens of times their size (a 64-channel conv on
#: 1×28×28 inputs: 256 samples are 51 MB a map)
_MAX_SAMPLES = {"flat": 1024, "maps": 256}


#: layers whose output is exactly linear in their weight and bias (subclasses may not be:
#: timm's StdConv2d standardises its weight, so scaling it changes nothing)
_LINEAR_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                 nn.ConvTranspose2d, nn.ConvTranspose3d)


def _per_sample(x: torch.Tensor, dim: int) -> int:
    """Elements of one sample of `x`, whose samples lie along dimension `dim`."""
    return max(1, x.numel() // max(1, x.shape[dim])) if x.ndim else 1


def _batch_for(example: torch.Tensor, elements: int, least: int, dim: int = 0) -> int:
    """Samples in a batch of about `elements` input elements (at least `least`); the samples
    lie along dimension `dim`."""
    per_sample = _per_sample(example, dim)
    most = _MAX_SAMPLES["flat" if example.ndim <= 2 else "maps"]
    return max(least, min(most, -(-elements // per_sample)))


def _randn_like(example: torch.Tensor, samples: int, dim: int,
                generator: torch.Generator) -> torch.Tensor:
    """Random N(0, 1) inputs shaped like `example` with `samples` samples along `dim`."""
    shape = list(example.shape)
    shape[dim] = samples
    return torch.randn(shape, generator=generator).to(device=example.device, dtype=example.dtype)


def _attended_lengths(model: nn.Module, attentions: list[nn.MultiheadAttention],
                      inputs: torch.Tensor) -> list[tuple[int, ...]]:
    """The (query, key) sequence lengths each nn.MultiheadAttention call sees on `inputs`."""
    seen: list[tuple[int, ...]] = []

    def hook(module, args, kwargs):
        tensors = list(args[:2]) + [kwargs[k] for k in ("query", "key") if k in kwargs]
        seen.append(tuple(int(t.shape[1 if module.batch_first and t.ndim == 3 else 0])
                          for t in tensors if isinstance(t, torch.Tensor)))

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in attentions]
    try:
        run_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return seen


def _batch_dim(model: nn.Module, example: Any) -> int:
    """The dimension of `example` along which the probe holds more samples: 0, unless
    enlarging it lengthens the sequence an ``nn.MultiheadAttention`` attends over (a
    sequence-first model, ``batch_first=False``, takes (length, batch, features)) and
    enlarging dimension 1 does not. An attention's output scale depends on the length, so a
    probe with a longer sequence fits a scale other inputs do not have (2.4 instead of 1 on
    a sequence-first ``nn.TransformerEncoder``). Run in eval mode without gradients."""
    attentions = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    if not attentions or not isinstance(example, torch.Tensor) \
            or not example.is_floating_point() or example.ndim < 3:
        return 0
    g = torch.Generator().manual_seed(0)
    try:
        lengths = _attended_lengths(model, attentions, _randn_like(example, example.shape[0], 0, g))
        for dim in (0, 1):
            more = _randn_like(example, 2 * example.shape[dim], dim, g)
            if _attended_lengths(model, attentions, more) == lengths:
                return dim
    except Exception:  # the fit's own pass reports what fails
        pass
    return 0


#: elementwise nonlinearities, by the name torch's function mode sees them under (functional,
#: torch.* and Tensor methods, in place or not)
_ACTIVATIONS = frozenset({
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "rrelu", "rrelu_", "prelu", "elu",
    "elu_", "selu", "selu_", "celu", "celu_", "gelu", "silu", "mish", "hardswish", "hardsigmoid",
    "hardtanh", "hardtanh_", "sigmoid", "sigmoid_", "tanh", "tanh_", "softplus", "softsign",
    "logsigmoid", "tanhshrink", "threshold", "threshold_", "hardshrink", "softshrink"})
#: ops that pass a tensor's values on unchanged (dropout is off in eval mode) or only move them
_PASS_ON = frozenset({
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    "contiguous", "clone", "detach", "view", "reshape", "flatten", "permute", "transpose",
    "squeeze", "unsqueeze"})


class _PreActivation(TorchFunctionMode):
    """Follows, through one forward pass, the std each tensor had before the elementwise
    nonlinearities that made it: ``relu(z)``, ``dropout(gelu(z))`` and ``gelu(z).flatten(1)``
    all stand for a signal of ``z``'s scale. Tensors made otherwise (a layer, a norm, a sum, a
    pooling, a product with a gate) are not recorded: their own std is their scale. The std is
    taken before the activation runs, so in-place activations are followed too."""

    def __init__(self):
        super().__init__()
        self.scale = WeakTensorKeyDictionary()  # intermediate tensors are freed as usual

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        first = args[0] if args else kwargs.get("input")
        scale = None
        if isinstance(first, torch.Tensor) and (name in _ACTIVATIONS or name in _PASS_ON):
            scale = self.scale.get(first)
            if scale is None and name in _ACTIVATIONS and first.is_floating_point() \
                    and first.numel() > 1:
                scale = float(first.detach().std())
        out = func(*args, **kwargs)
        if scale is not None and isinstance(out, torch.Tensor) \
                and out.numel() == first.numel():
            self.scale[out] = scale
        return out


@dataclass
class AutoInitReport:
    scales: dict[str, float] = field(default_factory=dict)  # layer → factor applied to weight
    output_std: dict[str, float] = field(default_factory=dict)  # layer → std after
    skipped: dict[str, str] = field(default_factory=dict)  # layer → why it was left alone
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"scales": self.scales, "output_std": self.output_std, "skipped": self.skipped,
                "seconds": self.seconds}


def _probe(arch: Architecture, batch: int, seed: int, dim: int = 0) -> Any:
    """A random N(0, 1) probe shaped like the example input with (usually) more samples
    along dimension `dim`; the example itself when it is not a float tensor."""
    example = arch.example_input
    if not isinstance(example, torch.Tensor) or not example.is_floating_point():
        return example  # token ids or several arguments: use them as they are
    if not example.ndim:  # a scalar: a vector of samples
        example = example.reshape(1)
    # enough samples that a deep layer's std is estimated without a small-sample bias
    batch = _batch_for(example, _PROBE_ELEMENTS, max(batch, example.shape[dim]), dim)
    return _randn_like(example, batch, dim, torch.Generator().manual_seed(seed))


def _channel_dim(layer_kind: str, out: torch.Tensor) -> int:
    return 1 if layer_kind in ("conv", "conv_transpose") and out.ndim > 2 else out.ndim - 1


class _Fit:
    """One forward pass of the probe that fits every candidate layer as the pass reaches it.

    A forward hook measures the layer's output, scales its weight and bias, and hands the
    rescaled output on (the output of a plain conv or linear is linear in weight and bias;
    another layer is run again on its input), so every layer is fitted on what the layers
    before it now produce, exactly as if the forward were run again for each layer, in one
    pass instead of one per layer. A module called again in the same pass keeps what its
    first call fitted."""

    def __init__(self, layers: list, mode: str, center: bool, tolerance: float,
                 report: AutoInitReport, hosts: dict[str, nn.Module] | None = None):
        self.layers, self.mode, self.center, self.tolerance = layers, mode, center, tolerance
        self.report = report
        # layer → the module whose call runs it: an nn.MultiheadAttention's out_proj runs in
        # the attention's functional forward, and is fitted on the attention's output (linear
        # in out_proj's weight and bias)
        self.hosts = hosts or {}
        self.follow = _PreActivation() if mode == "preserve" else None
        self.reached: set[str] = set()
        self.changed = False

    def run(self, model: nn.Module, probe: Any) -> None:
        handles = [self.hosts.get(layer.name, layer.module).register_forward_hook(
            self._hook(layer), with_kwargs=True) for layer in self.layers]
        try:
            if self.follow is not None:
                with self.follow:
                    run_model(model, probe)
            else:
                run_model(model, probe)
        finally:
            for h in handles:
                h.remove()
        for layer in self.layers:
            if layer.name not in self.reached:
                self.report.skipped[layer.name] = "did not run on the probe"

    def _goal(self, args: tuple, kwargs: dict) -> float:
        """The wanted output std: 1, or in ``"preserve"`` mode the scale of what the layer
        reads (before the activations that made it)."""
        x = first_tensor(args) if args else first_tensor(tuple(kwargs.values()))
        if self.mode == "unit" or x is None or not x.is_floating_point():
            return 1.0
        scale = self.follow.scale.get(x) if self.follow is not None else None
        return scale if scale is not None else float(x.double().std())

    def _hook(self, layer):
        weight = layer.module.weight
        bias = getattr(layer.module, "bias", None)
        bias = bias if isinstance(bias, torch.Tensor) else None
        report = self.report

        hosted = layer.name in self.hosts  # (output, attention weights) of the attention

        def hook(module, args, kwargs, out):
            if layer.name in self.reached:
                return None
            self.reached.add(layer.name)
            rest = None
            if hosted and isinstance(out, tuple) and out:
                out, rest = out[0], out[1:]
            if not isinstance(out, torch.Tensor) or not out.is_floating_point():
                report.skipped[layer.name] = "its output is not a float tensor"
                return None
            y, shifted = out, False
            if self.center and bias is not None and y.ndim >= 2:
                dim = _channel_dim(layer.kind, y)
                mean = y.double().mean([d for d in range(y.ndim) if d != dim])
                if mean.numel() == bias.numel():
                    bias.sub_(mean.to(bias.dtype))
                    shape = [1] * y.ndim
                    shape[dim] = -1
                    y, shifted = y - mean.to(y.dtype).view(shape), True
            def give(y):  # the output handed on, with the attention's weights if hosted
                return y if rest is None else (y, *rest)

            std = float(y.double().std())
            goal = self._goal(args, kwargs)
            if not (math.isfinite(std) and std > 0) or not (math.isfinite(goal) and goal > 0):
                if layer.name not in report.scales:  # (not fitted by an earlier pass)
                    report.skipped[layer.name] = f"output std {std:.3g} cannot be rescaled"
                return give(y) if shifted else None
            factor = goal / std
            report.scales.setdefault(layer.name, 1.0)
            if abs(factor - 1) < self.tolerance:
                report.output_std[layer.name] = std
                return give(y) if shifted else None
            weight.mul_(factor)
            if bias is not None:
                bias.mul_(factor)
            report.scales[layer.name] *= factor
            self.changed = True
            if hosted or type(module) in _LINEAR_TYPES:
                report.output_std[layer.name] = goal  # exact
                return give(y * factor)
            y = module.forward(*args, **kwargs)
            report.output_std[layer.name] = float(y.double().std())
            return y

        return hook


def _stats_batches(probe: Any, seed: int, dim: int = 0) -> list[Any]:
    """Batches for the running statistics: more random N(0, 1) samples of the probe's shape
    (samples along `dim`) than the fit uses (`_STATS_ELEMENTS`, at most 4096 samples), in
    batches at least as large as the probe (`_STATS_BATCH_ELEMENTS`); the probe itself when
    it is not a float tensor (token ids, several arguments)."""
    if not isinstance(probe, torch.Tensor) or not probe.is_floating_point() or probe.ndim < 2:
        return [probe]
    per_sample = _per_sample(probe, dim)
    size = _batch_for(probe, _STATS_BATCH_ELEMENTS, probe.shape[dim], dim)
    count = max(1, min(4096 // size, -(-_STATS_ELEMENTS // (per_sample * size))))
    g = torch.Generator().manual_seed(seed + 1)
    return [_randn_like(probe, size, dim, g) for _ in range(count)]


@torch.no_grad()
def _probe_norm_stats(model: nn.Module, norms: list, batches: list[Any]) -> None:
    """Set the running statistics of `norms` (in training mode) to their average over
    `batches` (PreciseBN, data-free); a norm the probe does not reach keeps what it held."""
    tracked = [m for m in norms if m.track_running_stats and m.running_mean is not None]
    saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in tracked]
    momenta = [m.momentum for m in tracked]
    for m in tracked:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    try:
        for batch in batches:
            run_model(model, batch)
    finally:
        for m, momentum, buffers in zip(tracked, momenta, saved):
            m.momentum = momentum
            if not int(m.num_batches_tracked):  # not reached
                for k, v in buffers.items():
                    getattr(m, k).copy_(v)


def autoinit(model: nn.Module, example_input: Any = None, *, layers: Iterable[str] | None = None,
             mode: str = "unit", batch_size: int = 16, seed: int = 0, tolerance: float = 0.02,
             max_iter: int = 1, center: bool = False, norm_stats: str = "auto",
             arch: Architecture | None = None,
             _leave: dict[str, str] | None = None) -> AutoInitReport:
    """Rescale the conv/linear layers of `model` in place so activations keep a stable scale.

    `example_input` is only used for its shape (a random N(0, 1) probe of that shape, batch
    at least `batch_size`, is what flows through the network: no data needed); inferred as in
    `trace`. `layers` restricts the rescaling to those layer names (the others are left
    exactly as they are but still shape what the named layers see). `mode`: ``"unit"`` (unit
    output variance) or ``"preserve"`` (output std = the std of the signal the layer reads, as
    it was before the activation in between: see the module's docstring). With `center`, a
    layer with a bias also gets zero-mean outputs per channel on the probe (off by default:
    in a deep plain net the probe's per-channel means are estimates, and removing them was
    measured to let the scale drift upwards with depth on other inputs). `max_iter`: passes
    of the probe (a layer whose output is linear in its weight is exact after one).
    `norm_stats`: what the batch norms' running statistics hold afterwards: ``"probe"`` the
    statistics of random N(0, 1) inputs through the rescaled model (eval mode then computes
    what was fitted), ``"keep"`` what they held before; ``"auto"`` (default): ``"probe"`` when
    the whole model is initialised (`layers` not given), ``"keep"`` otherwise. Returns the
    factors applied.

    Residual sums are measured, not modelled: with ``"unit"`` every branch ends at unit
    variance, so the residual stream still grows with the number of blocks within a stage (as
    with the default init: std √k after k blocks, reset wherever a layer without a shortcut
    reads the stream); ``"preserve"`` does not add to it.

    Left alone, and said in ``report.skipped``: a layer whose weight a parametrization
    constrains (spectral norm, orthogonal: a scale written through it is undone; weight norm
    and pruning are fitted), a layer whose weight another module shares (a decoder tied to
    an embedding: rescaling it would rescale the other), and the projections inside an
    ``nn.MultiheadAttention`` (they run in its functional forward, not as modules). When the
    model fails on the probe, its weights are restored and the error says so.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: choose one of {MODES}")
    if norm_stats not in NORM_STATS:
        raise ValueError(f"norm_stats={norm_stats!r}: choose one of {NORM_STATS}")
    if norm_stats == "auto":
        norm_stats = "probe" if layers is None else "keep"
    if isinstance(layers, str):  # one name, not its characters
        raise TypeError(f"layers={layers!r}: give a list of layer names, e.g. [{layers!r}]")
    from .align import whole

    for name, value in (("batch_size", batch_size), ("max_iter", max_iter)):
        if not whole(value):  # None (not a whole number) or 0
            raise ValueError(f"{name}={value!r}: give a whole number >= 1")
    # any real number (a NumPy float too), not a bool (a NumPy bool is not a Real); NaN
    # fails the range
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) \
            or not 0 <= float(tolerance) < 1:
        raise ValueError(f"tolerance={tolerance!r}: give a relative change in [0, 1) below "
                         f"which a layer is left as it is (default 0.02)")
    tolerance = float(tolerance)
    model = uncompiled(model)
    check_traceable(model, values=True, action="autoinit")
    if reparametrized(model) and arch is None:  # computed weights: fit a plain copy, write back
        plain = plain_copy(model)
        report = autoinit(plain, example_input, layers=layers, mode=mode, batch_size=batch_size,
                          seed=seed, tolerance=tolerance, max_iter=max_iter, center=center,
                          norm_stats=norm_stats, _leave=constrained_layers(model))
        with torch.random.fork_rng(devices=[]):
            write_back(plain, model)
        for name in changed_by_write_back(model, plain):  # a safety net: none expected
            layer = name.rpartition(".")[0]
            report.skipped[layer] = ("its parametrization changed the fitted weight when it was "
                                     "written back: the fitted scale does not hold")
            report.output_std.pop(layer, None)
        return report
    start = time.perf_counter()
    arch = arch or trace(model, example_input)
    wanted = set(layers) if layers is not None else None
    unknown = sorted(wanted - {layer.name for layer in arch.layers}) if wanted else []
    if unknown:
        raise ValueError(f"layers: {', '.join(map(repr, unknown[:5]))} "
                         f"{'is not a layer' if len(unknown) == 1 else 'are not layers'} of "
                         f"{arch.name} (its parametric layers: {arch.layers[0].name}, …; see "
                         f"netgraft.trace(model).layers)")
    report = AutoInitReport()
    candidates = []
    owners: dict[int, list[str]] = {}  # a tensor → every module.name holding it
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for p_name, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append(f"{mod_name}.{p_name}".strip("."))
    modules = dict(model.named_modules())
    executed = {layer.name for layer in arch.layers if layer.executed}
    hosts: dict[str, nn.Module] = {}
    for layer in arch.layers:
        if isinstance(layer.module, nn.RNNBase) and (wanted is None or layer.name in wanted):
            report.skipped[layer.name] = (
                "a recurrent layer: its gates squash what it passes on, so its output scale "
                "is not linear in its weights; left as it is")
            continue
        if layer.kind not in _KINDS and layer.kind != "attention" or (
                wanted is not None and layer.name not in wanted):
            continue
        weight = getattr(layer.module, "weight", None)
        host, parent = layer.name.rpartition(".")[0], modules.get(layer.name.rpartition(".")[0])
        attention = parent if isinstance(parent, nn.MultiheadAttention) else None
        if layer.kind == "attention":
            report.skipped[layer.name] = (
                "the query/key/value projections of an nn.MultiheadAttention: left as they "
                "are (they set where it attends); its output's scale is fitted through "
                "its out_proj")
        elif attention is not None and layer.module is not attention.out_proj:
            report.skipped[layer.name] = (
                "inside nn.MultiheadAttention, whose projections run in its functional forward "
                "(F.multi_head_attention_forward), not as modules: not fitted")
        elif _leave and layer.name in _leave:
            report.skipped[layer.name] = _leave[layer.name]
        elif not isinstance(weight, torch.Tensor):
            report.skipped[layer.name] = "no weight"
        elif len(set(owners.get(id(weight), []))) > 1:
            others = [n for n in owners[id(weight)] if n != f"{layer.name}.weight"]
            report.skipped[layer.name] = (
                f"its weight is shared with {others[0]}: rescaling it would rescale that too")
        elif attention is not None:  # out_proj: fitted on the attention's output
            if host in executed:
                hosts[layer.name] = attention
                candidates.append(layer)
            else:
                report.skipped[layer.name] = "not executed on the probe"
        elif not layer.executed:
            report.skipped[layer.name] = "not executed on the probe"
        else:
            candidates.append(layer)
    with keep_modes(model), torch.no_grad(), single_thread():
        model.eval()
        dim = _batch_dim(model, arch.example_input)
    probe = _probe(arch, batch_size, seed, dim)
    # batch norms normalise with the probe's batch statistics, as in training (their running
    # statistics may come from another network and silence whole layers); restored after,
    # or set to the probe's (`norm_stats`)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = snapshot(b for m in norms for b in m.buffers(recurse=False))
    weights = snapshot(model.parameters())  # put back when the model fails on the probe
    restore = True
    # every submodule's train flag comes back afterwards
    with keep_modes(model), torch.no_grad(), single_thread():
        model.eval()
        for m in norms:
            m.train()
        try:
            for _ in range(max(1, max_iter)):
                fit = _Fit([layer for layer in candidates if layer.name not in report.skipped],
                           mode, center, tolerance, report, hosts)
                try:
                    fit.run(model, probe)
                except Exception as exc:
                    put_back(weights)
                    shape = tuple(probe.shape) if isinstance(probe, torch.Tensor) else None
                    raise NetgraftError(
                        f"autoinit: {arch.name} failed on its random probe of shape {shape} "
                        f"({type(exc).__name__}: {first_line(exc)}); its weights are as they "
                        f"were. The probe holds more samples than the example input (enough "
                        f"for each layer's statistics): a model whose forward only accepts "
                        f"one batch size cannot be fitted this way") from exc
                if not fit.changed:
                    break
            if norm_stats == "probe" and norms:
                put_back(saved)  # the fit's passes are not to count
                _probe_norm_stats(model, norms, _stats_batches(probe, seed, dim))
                restore = False
        finally:
            if restore:
                put_back(saved)
    report.seconds = time.perf_counter() - start
    return report
