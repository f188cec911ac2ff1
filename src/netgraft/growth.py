"""Identity blocks: residual blocks the source has no counterpart for start as the identity.

When a target is deeper than its source, the matching fills every block it can (one source block
may initialise a run of target blocks), but a block that *repeats* a source block, or that no
source block matched, changes what the network computes. Net2Net's deeper operator and the
zero-init-residual practice agree on the fix: make the residual branch output zero, so the block
passes its input through, and let training grow it from there.

Which layers end a residual branch depends on the block (``bn3`` of a bottleneck, ``fc2`` and
the attention ``proj`` of a transformer block, the layer scale of a ConvNeXt block). Rather than
guess from names, the block is probed: its input is recorded on the example input, then its
layers are zeroed one at a time from the last executed backwards, keeping a zeroing only when it
brings the block's output closer to its input, until the block is the identity. A block that
cannot be made the identity (it is not residual) is left untouched.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .adapt import grouped_conv
from .adapt.mapping import channel_index
from .adapt.standardised import standardises
from .trace import Architecture, Layer, own_tensors, run_model

_TOLERANCE = 1e-6


def _capture_inputs(model: nn.Module, blocks: dict[str, nn.Module], example: Any) -> dict[str, tuple]:
    captured: dict[str, tuple] = {}
    handles = []
    for name, module in blocks.items():
        def hook(mod, args, kwargs, name=name):
            if name not in captured:  # a copy: the model may mutate or extend its inputs later
                captured[name] = _copy((args, kwargs))
        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            run_model(model, example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return captured


def _copy(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_copy(x) for x in obj) if not hasattr(obj, "_fields") else obj
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    return obj


def _distance(module: nn.Module, args: tuple, kwargs: dict) -> float:
    """How far `module`'s output is from its first input, relative to the input: a tensor, or
    a list of tensors of the same shapes (an HRNet module takes and returns one per branch)."""
    out = module(*_copy(args), **_copy(kwargs))  # a copy: a forward may change its inputs in
    x = args[0] if args else None               # place (an HRNet module writes its list)
    pairs = list(zip(out, x)) if isinstance(out, (list, tuple)) and isinstance(x, (list, tuple)) \
        and len(out) == len(x) else [(out, x)]
    if not pairs or not all(isinstance(o, torch.Tensor) and isinstance(i, torch.Tensor)
                            and o.shape == i.shape for o, i in pairs):
        return float("inf")
    diff = sum(float((o - i).norm()) ** 2 for o, i in pairs) ** 0.5
    return diff / (sum(float(i.norm()) ** 2 for _, i in pairs) ** 0.5 + 1e-12)


def _scaled_distance(module: nn.Module, args: tuple, kwargs: dict) -> tuple[float, torch.Tensor | None]:
    """How far `module`'s output is from its input times the per-channel factor (dim 1) that
    fits it best, relative to the input, and that factor (None when the output is not one
    tensor of the input's shape)."""
    out = module(*_copy(args), **_copy(kwargs))
    x = args[0] if args else None
    if not (isinstance(out, torch.Tensor) and isinstance(x, torch.Tensor)
            and out.shape == x.shape and x.ndim >= 2):
        return float("inf"), None
    dims = [d for d in range(x.ndim) if d != 1]
    scale = (out * x).sum(dims) / (x * x).sum(dims).clamp_min(1e-30)
    shape = [1, -1] + [1] * (x.ndim - 2)
    diff = float((out - scale.view(shape) * x).norm())
    return diff / (float(x.norm()) + 1e-12), scale


def post_sum_norms(module: nn.Module, layers: list[Layer], units: dict[str, nn.Module],
                   args: tuple, kwargs: dict) -> list[Layer]:
    """The batch norms among `layers` whose output is the output of a residual unit (`units`,
    {name: module}: modules adding their own input back, `Architecture.residual`) they are a
    child of: a norm applied after the residual sum (RepViT's ``bn(conv(x) + conv1(x) + x)``).
    Zeroing the unit's branches leaves such a norm scaling the input, so the unit can start as
    the identity only with the norm itself the identity."""
    norms = [layer for layer in layers if layer.kind == "batchnorm"
             and layer.name.rpartition(".")[0] in units]
    if not norms:
        return []
    outputs: dict[int, Any] = {}
    handles = []
    for key, mod in [(id(layer), layer.module) for layer in norms] + \
            [(id(u), u) for u in {layer.name.rpartition(".")[0]: units[layer.name.rpartition(".")[0]]
                                  for layer in norms}.values()]:
        def hook(mod, inp, out, key=key):
            outputs.setdefault(key, out)
        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(*_copy(args), **_copy(kwargs))
    except Exception:
        return []
    finally:
        for h in handles:
            h.remove()
    return [layer for layer in norms
            if outputs.get(id(layer)) is not None
            and outputs.get(id(layer)) is outputs.get(id(units[layer.name.rpartition(".")[0]]))]


def make_identity(module: nn.Module, layers: list[Layer], args: tuple, kwargs: dict,
                  units: dict[str, nn.Module] | None = None) -> list[str]:
    """Zero as few of `layers` (last first) as it takes for `module` to return its input.

    A block whose residual unit (`units`, {name: module}) normalises after its sum
    (`post_sum_norms`) is tried next with those norms set to the identity: its branches are
    then zeroed to make it return its input up to a per-channel factor (a squeeze-excitation
    gate whose last layer is zeroed passes half its input), which the last such norm divides
    out.

    Returns the names of the zeroed (or identity) layers ([] when the block cannot be made the
    identity, in which case nothing is changed)."""
    params = {layer.name: {k: v for k, v in own_tensors(layer.module).items()
                           if k in layer.param_names} for layer in layers}
    every = {layer.name: own_tensors(layer.module) for layer in layers}
    snapshot = {name: {k: v.clone() for k, v in t.items()} for name, t in every.items()}

    def restore(names) -> None:
        for name in names:
            for k, v in every[name].items():
                v.copy_(snapshot[name][k])

    def greedy(best: float, distance, skip: set[str]) -> tuple[float, list[str]]:
        zeroed: list[str] = []
        # passes until one zeroes nothing more: with several terms summed before an
        # activation (an HRNet module's fuse), dropping one term can help only once
        # another is gone
        progress = True
        while progress and best >= _TOLERANCE:
            progress = False
            for layer in reversed(layers):
                if best < _TOLERANCE:
                    break
                if not params[layer.name] or layer.name in zeroed or layer.name in skip:
                    continue
                for v in params[layer.name].values():
                    v.zero_()
                d = distance()
                if d < best - 1e-9:
                    best, progress = d, True
                    zeroed.append(layer.name)
                else:
                    restore([layer.name])
        return best, zeroed

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            best = _distance(module, args, kwargs)
            if best == float("inf"):
                return []
            best, zeroed = greedy(best, lambda: _distance(module, args, kwargs), set())
            if best < _TOLERANCE * 10:
                return zeroed
            restore(zeroed)  # not a residual block as it stands: left as it was, unless ...
            norms = post_sum_norms(module, layers, units or {}, args, kwargs)
            if not norms or not all(set_identity(layer) for layer in norms):
                restore(every)
                return []
            scaled = lambda: _scaled_distance(module, args, kwargs)[0]  # noqa: E731
            best, zeroed = greedy(scaled(), scaled, {layer.name for layer in norms})
            _, scale = _scaled_distance(module, args, kwargs)
            last = norms[-1].module
            if best < _TOLERANCE and scale is not None and bool((scale.abs() > 1e-3).all()) \
                    and last.weight is not None and scale.numel() == last.weight.numel():
                last.weight.div_(scale.to(last.weight.dtype))
                if _distance(module, args, kwargs) < _TOLERANCE * 10:
                    return zeroed + [layer.name for layer in norms]
            restore(every)
            return []
    except BaseException:
        with torch.no_grad():
            restore(every)
        raise
    finally:
        module.train(was_training)


def identity_blocks(model: nn.Module, arch: Architecture, block_ids: list[int],
                    example: Any) -> dict[int, list[str]]:
    """Make the given blocks of `arch` identities where they are residual.

    Returns {block id: zeroed layer names} for the blocks that became identities."""
    named = {arch.blocks[b].name: b for b in block_ids if arch.blocks[b].name}
    done = identity_modules(model, {name: [arch.layers[i] for i in arch.blocks[b].layers]
                                    for name, b in named.items()}, example, arch.residual)
    return {named[name]: zeroed for name, zeroed in done.items()}


def identity_modules(model: nn.Module, modules: dict[str, list[Layer]],
                     example: Any, residual: frozenset[str] | set[str] = frozenset()
                     ) -> dict[str, list[str]]:
    """Make the named submodules of `model` (with their layers) identities where they are
    residual. `residual` names the modules adding their own input back
    (`Architecture.residual`), whose post-sum norms `make_identity` sets to the identity.
    Returns {module name: zeroed layer names} for those that became identities."""
    found: dict[str, nn.Module] = {}
    tried = {name: _enclosing(model, name, layers) for name, layers in modules.items()}
    for names in tried.values():
        for name in names:
            try:
                found[name] = model.get_submodule(name)
            except AttributeError:
                continue
    if not found:
        return {}
    inputs = _capture_inputs(model, found, example)
    done: dict[str, list[str]] = {}
    for name, layers in modules.items():
        for candidate in tried[name]:  # the module, then enclosing ones holding only its layers
            if candidate not in inputs:
                continue
            units = {}
            for unit in residual:
                if unit == candidate or unit.startswith(candidate + "."):
                    try:
                        units[unit] = model.get_submodule(unit)
                    except AttributeError:
                        continue
            try:
                zeroed = make_identity(found[candidate], layers, *inputs[candidate], units=units)
            except Exception:  # a block that cannot be re-run on its own input: left as grafted
                zeroed = []
            if zeroed:
                done[name] = zeroed
                break
    return done


def fresh_modules(model: nn.Module, arch: Architecture, fresh: set[str]) -> dict[str, list[Layer]]:
    """The largest submodules of `model` whose parametric layers are all in `fresh` (layers
    with no source of their own) and span several blocks of `arch`, with those layers: a new
    module of a deeper target that the block grouping cut into blocks and single layers (an
    HRNet module: its branches' residual blocks and the fuse layers that add the branches
    up), which can start as the identity only as a whole."""
    total: dict[str, list[Layer]] = {}
    for layer in arch.layers:
        parts = layer.name.split(".")
        for depth in range(1, len(parts)):
            total.setdefault(".".join(parts[:depth]), []).append(layer)
    out: dict[str, list[Layer]] = {}
    for name, _ in model.named_modules():  # parents first: the largest such module wins
        layers = total.get(name)
        if (not layers or any(name.startswith(k + ".") for k in out)
                or not all(layer.name in fresh for layer in layers)
                or len({layer.block for layer in layers}) < 2):
            continue
        out[name] = layers
    return out


def _enclosing(model: nn.Module, name: str, layers: list[Layer]) -> list[str]:
    """`name`, then the modules enclosing it that hold no parametric layer but `layers`: the
    residual sum of ``x + self.branch(x)`` happens in the module around the branch the block
    grouping saw."""
    own = {layer.name for layer in layers}
    names = [name]
    parent = name
    while "." in parent:
        parent = parent.rpartition(".")[0]
        held = {f"{parent}.{sub}" for sub, m in model.get_submodule(parent).named_modules()
                if sub and own_tensors(m)}
        if held != own:
            break
        names.append(parent)
    return names


def unmatched_submodules(arch: Architecture, block: int, own: set[int]) -> dict[str, list[Layer]]:
    """The largest named submodules inside a block of `arch` none of whose layers is in
    `own` (the layers with a source of their own: a new or repeated sub-block the block
    grouping merged with another, tf_efficientnetv2_b1's ``blocks.0.1`` inside its stage-0
    block), with their layers."""
    layers = [arch.layers[i] for i in arch.blocks[block].layers]
    prefix = arch.blocks[block].name
    out: dict[str, list[Layer]] = {}
    for layer in layers:
        if layer.index in own or not layer.name.startswith(prefix + "."):
            continue
        parts = layer.name[len(prefix) + 1:].split(".")
        for depth in range(1, len(parts)):  # the shallowest module holding no matched layer
            name = ".".join([prefix, *parts[:depth]])
            inside = [x for x in layers if x.name.startswith(name + ".")]
            if not any(x.index in own for x in inside):
                out.setdefault(name, inside)
                break
    return out


@torch.no_grad()
def set_identity(layer: Layer, units: int | None = None) -> bool:
    """Make a layer compute the identity; False (nothing changed) when it cannot. Net2Net's
    deeper operator for plain (non-residual) networks: after a ReLU-like activation, which
    passes its own output unchanged, a new identity layer changes nothing.

    A linear layer or a dense conv may change width when its input and output carry `units`
    source units replicated as a widened layer replicates them (`channel_index`): each output
    then averages the input replicas of its unit. Depthwise convs and batch norms (eval mode)
    keep their width."""
    module = layer.module
    mixing = None
    if layer.kind in ("linear", "conv") and not layer.depthwise and layer.groups == 1:
        n = units or layer.in_dim
        if layer.in_dim == layer.out_dim == n or (n <= layer.in_dim and n <= layer.out_dim):
            m_in, m_out = channel_index(n, layer.in_dim), channel_index(n, layer.out_dim)
            same = (m_out[:, None] == m_in[None, :]).to(module.weight.dtype)
            mixing = same / same.sum(1, keepdim=True)
    if layer.kind == "linear" and mixing is not None:
        module.weight.copy_(mixing)
    elif layer.kind == "conv" and (mixing is not None or (layer.depthwise and
                                   layer.in_dim == layer.out_dim)) and _keeps_size(layer):
        module.weight.zero_()
        centre = tuple(k // 2 for k in layer.kernel)
        if mixing is None:
            module.weight[(torch.arange(layer.out_dim), 0, *centre)] = 1
        else:
            module.weight[(slice(None), slice(None), *centre)] = mixing
    elif (layer.kind == "conv" and grouped_conv(layer) and layer.in_dim == layer.out_dim
          and _keeps_size(layer)):
        # a grouped conv of one width: each output channel reads its own input channel, the
        # one at its place within its group (input and output carry one channel layout, so
        # the identity needs no averaging of replicas, whatever map widened them)
        module.weight.zero_()
        out = torch.arange(layer.out_dim)
        module.weight[(out, out % (layer.in_dim // layer.groups),
                       *tuple(k // 2 for k in layer.kernel))] = 1
    elif (layer.kind == "batchnorm" and getattr(module, "track_running_stats", True)
          and getattr(module, "running_mean", None) is not None):  # FrozenBatchNorm2d too
        module.running_mean.zero_()
        module.running_var.fill_(1 - module.eps)  # (x - 0) / sqrt(1 - eps + eps) = x
        if module.weight is not None:
            module.weight.fill_(1)
    else:
        return False
    if getattr(module, "bias", None) is not None:
        module.bias.zero_()
    return True


def _keeps_size(layer: Layer) -> bool:
    """A conv whose output has its input's spatial size and whose centre tap reads the
    same position (odd kernel, stride 1, no dilation, "same" padding)."""
    module = layer.module
    pad = module.padding
    return (all(k % 2 for k in layer.kernel) and all(s == 1 for s in layer.stride)
            and all(d == 1 for d in module.dilation)
            and (pad == "same" or tuple(pad) == tuple(k // 2 for k in layer.kernel)))


# ----------------------------------------------------------------------------- block constants
#: Blocks that multiply their input by a constant attribute of their own before the listed
#: submodules read it, a constant the model's constructor sets from the block's place in the
#: network: {module path and class name: (attribute, readers)}. timm's normalizer-free block
#: (NF-ResNet, NF-RegNet, NFNet) scales its pre-activation by β = 1/√(expected variance), and
#: the expected variance grows with every block before it in its stage, so a source block
#: copied into a deeper stage reads its input scaled by another β.
INPUT_SCALES: dict[str, tuple[str, tuple[str, ...]]] = {
    "timm.models.nfnet.NormFreeBlock": ("beta", ("conv1", "downsample.conv")),
}


def _kind(module: nn.Module) -> str:
    """`module`'s class as `INPUT_SCALES` names it (module path and class name)."""
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _scalar(module: nn.Module, attr: str) -> float | None:
    value = getattr(module, attr, None)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def _parent(name: str, suffix: str) -> str | None:
    return name[:-len(suffix) - 1] if name.endswith("." + suffix) else None


def input_scale_pairs(source: nn.Module, target: nn.Module,
                      pairs: dict[str, str]) -> list[tuple[str, str, str, float, float]]:
    """Blocks of `INPUT_SCALES` whose first reader was grafted from the same reader of a source
    block of the same class, with another input scale: (target block, source block, attribute,
    source value, target value). `pairs` maps target layer names to the source layers they were
    grafted from."""
    found = []
    s_modules = dict(source.named_modules())
    for name, module in target.named_modules():
        spec = INPUT_SCALES.get(_kind(module))
        if spec is None:
            continue
        attr, readers = spec
        src_layer = pairs.get(f"{name}.{readers[0]}" if name else readers[0])
        s_name = _parent(src_layer, readers[0]) if src_layer else None
        s_block = s_modules.get(s_name) if s_name is not None else None
        if s_block is None or type(s_block) is not type(module):
            continue
        s_value, t_value = _scalar(s_block, attr), _scalar(module, attr)
        if s_value is not None and t_value is not None and s_value != t_value and t_value != 0:
            found.append((name, s_name, attr, s_value, t_value))
    return found


def rescale_readers(target: nn.Module, block: str, attr: str, s_value: float, t_value: float,
                    pairs: dict[str, str], source_block: str) -> tuple[list[str], list[str]]:
    """Make the readers of `block`'s scaled input compute on it what the source block's readers
    computed on theirs: a reader reads its input scaled by `t_value` where the source's read it
    scaled by `s_value`, so its output (before the bias) is scaled by s/t — through its per-unit
    `gain` when it has one (timm's ScaledStdConv2d, whose weight is standardised), else through
    its weight. Only readers grafted from the source block's same reader. Returns (rescaled
    layer names, readers that could not be rescaled: a standardised weight without a gain)."""
    _, readers = INPUT_SCALES[_kind(target.get_submodule(block))]
    ratio = s_value / t_value
    done, failed = [], []
    for reader in readers:
        name = f"{block}.{reader}" if block else reader
        try:
            module = target.get_submodule(name)
        except AttributeError:
            continue
        if pairs.get(name) != f"{source_block}.{reader}":
            continue
        gain = getattr(module, "gain", None)
        with torch.no_grad():
            if isinstance(gain, nn.Parameter):
                gain.mul_(ratio)
            elif isinstance(getattr(module, "weight", None), torch.Tensor) \
                    and not standardises(module):
                module.weight.mul_(ratio)
            else:
                failed.append(name)
                continue
        done.append(name)
    return done, failed
