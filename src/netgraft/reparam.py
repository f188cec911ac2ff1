"""Layers whose weight is computed from other tensors: ``torch.nn.utils.parametrizations``
(``weight_norm``, ``spectral_norm``, ``orthogonal`` and user parametrizations), the older
``torch.nn.utils.weight_norm`` hook (``weight_g`` / ``weight_v``) and ``torch.nn.utils.prune``
(``weight_orig`` · ``weight_mask``; a grafted weight is written to ``weight_orig``, so the
mask still zeroes the pruned entries: such a layer is reported as constrained when that
changes it).

Such a layer holds no ``weight`` of its own, so it is grafted through a plain copy: the copy
computes the same function with ordinary tensors (the weight as the layer computes it), the
graft runs on the copies, and the grafted weights are written back through each
parametrization's ``right_inverse`` (weight norm: ``g = ‖w‖``, ``v = w``, exact).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.prune import BasePruningMethod
from torch.nn.utils.weight_norm import WeightNorm

from .errors import UnsupportedModelError, first_line


def _old_weight_norms(module: nn.Module) -> list[WeightNorm]:
    return [h for h in module._forward_pre_hooks.values() if isinstance(h, WeightNorm)]


def _prunings(module: nn.Module) -> list[BasePruningMethod]:
    """``torch.nn.utils.prune``'s hooks on `module`: each computes ``name`` as
    ``name_orig * name_mask`` before every forward."""
    return [h for h in module._forward_pre_hooks.values() if isinstance(h, BasePruningMethod)]


def _hooked(module: nn.Module) -> list:
    """The forward pre-hooks that compute one of `module`'s tensors (weight norm, pruning)."""
    return [*_old_weight_norms(module), *_prunings(module)]


def _hook_name(hook) -> str:
    return hook.name if isinstance(hook, WeightNorm) else hook._tensor_name


def reparametrized(model: nn.Module) -> list[str]:
    """Qualified names of the tensors of `model` that a parametrization or a weight-norm hook
    computes (empty for a plain model)."""
    names = []
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if parametrize.is_parametrized(module):
            names += [prefix + n for n in module.parametrizations.keys()]
        names += [prefix + _hook_name(h) for h in _hooked(module)]
    return names


def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` in which every computed weight is an ordinary parameter holding
    its current value (same module names, same function)."""
    # the weight-norm hook keeps its computed weight as a non-leaf attribute, which deepcopy
    # refuses: copy it as a plain tensor (the hook's removal below recomputes it anyway)
    memo = {id(w): w.detach().clone() for m in model.modules() for h in _hooked(m)
            if isinstance(w := getattr(m, _hook_name(h), None), torch.Tensor)}
    try:
        plain = copy.deepcopy(model, memo)
    except Exception as exc:  # an attribute that cannot be copied (a lock, a generator)
        raise UnsupportedModelError(
            f"{type(model).__name__} cannot be copied (copy.deepcopy: {type(exc).__name__}: "
            f"{first_line(exc)}), which grafting or fitting its parametrized or pruned layers "
            f"needs (they are handled on a plain copy): remove the attribute that cannot be "
            f"copied before the call, or remove the parametrization / pruning "
            f"(torch.nn.utils.parametrize.remove_parametrizations, prune.remove)") from exc
    for module in plain.modules():
        if parametrize.is_parametrized(module):
            # not parametrize.remove_parametrizations: the copy shares its parametrized class
            # with the original, and removing deletes the class's properties for both
            lists = dict(module.parametrizations.items())
            values = {name: getattr(module, name).detach().clone() for name in lists}
            module.__class__ = type(module).__bases__[0]
            del module._modules["parametrizations"]
            for name, value in values.items():
                if any(True for _ in lists[name].parameters(recurse=False)):
                    module.register_parameter(name, nn.Parameter(value))
                else:
                    module.register_buffer(name, value)
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, WeightNorm):  # as torch.nn.utils.remove_weight_norm does
                hook.remove(module)
                del module._forward_pre_hooks[key]
            elif isinstance(hook, BasePruningMethod):  # as torch.nn.utils.prune.remove does
                name = hook._tensor_name
                value = (getattr(module, name + "_orig") * getattr(module, name + "_mask"))
                delattr(module, name)
                del module._parameters[name + "_orig"]
                del module._buffers[name + "_mask"]
                module.register_parameter(name, nn.Parameter(value.detach().clone()))
                del module._forward_pre_hooks[key]
    return plain


#: parametrizations through which a rescaled weight is written back as it is (weight norm:
#: g = ‖w‖, v = w); others constrain it (spectral norm divides by its largest singular value,
#: orthogonal keeps it orthogonal), and a scale written through them is undone
_SCALE_FREE = ("_WeightNorm",)


def constrained_layers(model: nn.Module) -> dict[str, str]:
    """Layer name → why its weight cannot take a scale: a parametrization that constrains it
    (every one but weight norm; pruning's mask keeps a scale)."""
    found = {}
    for mod_name, module in model.named_modules():
        if not parametrize.is_parametrized(module, "weight"):
            continue
        kinds = [type(p).__name__ for p in module.parametrizations["weight"]]
        odd = [k for k in kinds if k not in _SCALE_FREE]
        if odd:
            found[mod_name] = (f"its weight is computed by the parametrization {odd[0]}, which "
                               f"would undo a scale written through it: not fitted")
    return found


def check_writable(model: nn.Module) -> None:
    """Raise UnsupportedModelError (before any work) for a computed weight of `model` that no
    value can be written to: a parametrization without ``right_inverse``."""
    for mod_name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for name, plist in module.parametrizations.items():
            missing = [type(p).__name__ for p in plist if not hasattr(p, "right_inverse")]
            if missing:
                raise UnsupportedModelError(
                    f"its parametrization {missing[0]} has no right_inverse, so a grafted "
                    f"value cannot be written through it: give it one, or graft before "
                    f"registering it", layer=f"{mod_name}.{name}".strip("."))


@torch.no_grad()
def write_back(plain: nn.Module, model: nn.Module) -> None:
    """Copy every parameter and buffer of `plain` (from `plain_copy(model)`) into `model`,
    computed weights through their parametrization (``right_inverse``) or weight-norm hook.
    All or nothing: on a failure `model` is left as it was."""
    from .trace import put_back, snapshot  # trace imports this module

    saved = snapshot([*model.parameters(), *model.buffers()])
    try:
        _write_back(plain, model)
    except BaseException:
        put_back(saved)
        raise


def _write_back(plain: nn.Module, model: nn.Module) -> None:
    for mod_name, source in plain.named_modules():
        module = model.get_submodule(mod_name)
        hooks = {h.name: h for h in _old_weight_norms(module)}
        pruned = {h._tensor_name: h for h in _prunings(module)}
        for name, value in [*source.named_parameters(recurse=False),
                            *source.named_buffers(recurse=False)]:
            if value is None:
                continue
            if parametrize.is_parametrized(module, name):
                setattr(module, name, value.detach().clone())
                plist = getattr(module.parametrizations, name)
                if len(plist) == 1 and type(plist[0]).__name__ == "_WeightNorm":
                    _unit_direction(plist.original1, plist[0].dim)  # weight norm: (g, v)
                _refresh_spectral(module, name)
            elif name in hooks:
                hook = hooks[name]
                getattr(module, name + "_v").copy_(value)
                getattr(module, name + "_g").copy_(torch.norm_except_dim(value, 2, hook.dim))
                _unit_direction(getattr(module, name + "_v"), hook.dim)
                setattr(module, name, hook.compute_weight(module))
            elif name in pruned:  # the mask stays: pruned entries stay zero
                getattr(module, name + "_orig").copy_(value)
                setattr(module, name, pruned[name].apply_mask(module))
            else:
                getattr(module, name).copy_(value)
                continue
            if not torch.isfinite(getattr(module, name)).all():
                raise UnsupportedModelError(
                    "the grafted weight, written back through its parametrization, computes "
                    "NaN or inf", layer=f"{mod_name}.{name}".strip("."))


def _unit_direction(v: torch.Tensor, dim: int) -> None:
    """Weight norm computes g·v/‖v‖: where a grafted weight is zero (a new residual branch
    zeroed to start as the identity), g = ‖w‖ = 0 and v = 0 give 0/0. Any nonzero direction
    with g = 0 is that zero weight: make those v ones."""
    zero = torch.norm_except_dim(v, 2, dim) == 0
    if zero.any():
        v.masked_fill_(zero.expand_as(v), 1.0)


def _refresh_spectral(module: nn.Module, name: str) -> None:
    """Spectral norm divides by a power-iteration estimate kept in buffers: after a new weight,
    re-run the iteration so that an eval-mode forward divides by the new weight's norm."""
    for p in getattr(module.parametrizations, name):
        if hasattr(p, "_power_method") and hasattr(p, "_reshape_weight_to_matrix"):
            original = getattr(module.parametrizations, name).original
            p._power_method(p._reshape_weight_to_matrix(original), 15)


def changed_by_write_back(model: nn.Module, plain: nn.Module) -> list[str]:
    """Computed weights of `model` that differ from the plain copy's after `write_back` (a
    parametrization that constrains its weight, e.g. spectral norm rescales it to norm 1)."""
    changed = []
    for name in reparametrized(model):
        mod_name, _, tensor = name.rpartition(".")
        got = getattr(model.get_submodule(mod_name), tensor)
        want = getattr(plain.get_submodule(mod_name), tensor)
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-6):
            changed.append(name)
    return changed

