"""Search spaces: how a trial's architecture parameters are sampled and turned into a model.

A space is any object with

* ``name`` (str),
* ``sample(trial) -> dict``: draw the architecture parameters with ``trial.suggest_*``,
* ``build(params, *, num_classes, in_chans) -> nn.Module``: the randomly initialised model,
* ``describe(params) -> str``: a short human-readable description.

Two ready spaces of small timm convnets, sized for 28-32 px gray images and trials of a few
seconds on one CPU thread:

* ``effnet`` (default): timm's EfficientNet builder (``decode_arch_def``): a stride-2 stem and
  three stages at strides 1, 2, 2 with widths ``w, 2w, 4w``; searched: ``width`` w in
  {8, 16, 24, 32}, ``depth1..3`` blocks per stage in 1..3, ``kernel`` 3 or 5 (depthwise /
  first conv of every block), ``block``: ``ds`` (depthwise-separable), ``ir`` (inverted
  residual / MBConv, expansion 3) or ``er`` (edge residual / FusedMBConv, expansion 3).
* ``resnet``: timm's ResNet class: three stages at widths ``w, 2w, 4w``; searched: ``width``
  in {16, 24, 32}, ``depth1..3`` in 1..2, ``block`` ``basic`` or ``bottleneck`` (timm's ResNet
  has fixed 3x3 kernels, so no kernel choice here).

Give your own space to ``netgraft search --space package.module:attr`` (an instance, or a
class / factory called without arguments).
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import nn

from ..errors import NetgraftError

__all__ = ["SPACES", "EffNetSpace", "ResNetSpace", "SearchSpace", "get_space"]


@runtime_checkable
class SearchSpace(Protocol):
    name: str

    def sample(self, trial) -> dict[str, Any]: ...

    def build(self, params: dict[str, Any], *, num_classes: int, in_chans: int) -> nn.Module: ...

    def describe(self, params: dict[str, Any]) -> str: ...


def _sample_stages(space: Any, trial, *, kernel: bool) -> dict[str, Any]:
    """Width, depth of each of the three stages, (kernel), block type — in this order, which
    is the order the sampler sees them (kept stable so seeded searches stay reproducible)."""
    params = {"width": trial.suggest_categorical("width", list(space.widths))}
    for i in (1, 2, 3):
        params[f"depth{i}"] = trial.suggest_int(f"depth{i}", *space.depths)
    if kernel:
        params["kernel"] = trial.suggest_categorical("kernel", list(space.kernels))
    params["block"] = trial.suggest_categorical("block", list(space.blocks))
    return params


class EffNetSpace:
    """EfficientNet-style nets from timm's arch-def strings (see the module docstring)."""

    name = "effnet"
    widths = (8, 16, 24, 32)
    depths = (1, 3)
    kernels = (3, 5)
    blocks = ("ds", "ir", "er")
    expansion = 3
    num_features = 128

    def sample(self, trial) -> dict[str, Any]:
        return _sample_stages(self, trial, kernel=True)

    def arch_def(self, params: dict[str, Any]) -> list[list[str]]:
        w, k, b = int(params["width"]), int(params["kernel"]), str(params["block"])
        exp = "" if b == "ds" else f"_e{self.expansion}"
        stages = []
        for i, stride in enumerate((1, 2, 2)):
            depth = int(params[f"depth{i + 1}"])
            stages.append([f"{b}_r{depth}_k{k}_s{stride}{exp}_c{w * 2 ** i}"])
        return stages

    def build(self, params: dict[str, Any], *, num_classes: int, in_chans: int) -> nn.Module:
        from timm.models._efficientnet_builder import decode_arch_def
        from timm.models.efficientnet import EfficientNet

        return EfficientNet(decode_arch_def(self.arch_def(params)), num_classes=num_classes,
                            num_features=self.num_features, in_chans=in_chans,
                            stem_size=int(params["width"]))

    def describe(self, params: dict[str, Any]) -> str:
        d = "-".join(str(params[f"depth{i}"]) for i in (1, 2, 3))
        return f"effnet d={d} w={params['width']} k={params['kernel']} {params['block']}"


class ResNetSpace:
    """ResNet-style nets from timm's ResNet class (see the module docstring)."""

    name = "resnet"
    widths = (16, 24, 32)
    depths = (1, 2)
    blocks = ("basic", "bottleneck")

    def sample(self, trial) -> dict[str, Any]:
        return _sample_stages(self, trial, kernel=False)

    def build(self, params: dict[str, Any], *, num_classes: int, in_chans: int) -> nn.Module:
        from timm.models.resnet import BasicBlock, Bottleneck, ResNet

        block = {"basic": BasicBlock, "bottleneck": Bottleneck}[str(params["block"])]
        w = int(params["width"])
        # timm's ResNet always runs layer1..layer4: the searched depths are the first three
        # stages, the fourth is one block at 8× the width
        return ResNet(block, [int(params[f"depth{i}"]) for i in (1, 2, 3)] + [1],
                      channels=(w, 2 * w, 4 * w, 8 * w), num_classes=num_classes,
                      in_chans=in_chans, stem_width=w)

    def describe(self, params: dict[str, Any]) -> str:
        d = "-".join(str(params[f"depth{i}"]) for i in (1, 2, 3))
        return f"resnet d={d} w={params['width']} {params['block']}"


SPACES: dict[str, type] = {"effnet": EffNetSpace, "resnet": ResNetSpace}


def get_space(spec: Any) -> SearchSpace:
    """A space from its name (``effnet``, ``resnet``), ``package.module:attr``, or an object."""
    if not isinstance(spec, str):
        space = spec
    elif spec in SPACES:
        space = SPACES[spec]()
    elif ":" in spec:
        from ..models import import_user_module

        module_name, _, attr = spec.partition(":")
        obj = getattr(import_user_module(module_name, f"search space '{spec}'"), attr, None)
        if obj is None:
            raise NetgraftError(f"search space '{spec}' not found: '{module_name}' has no "
                                f"'{attr}'")
        try:
            space = (obj() if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "sample"))
                     else obj)
        except Exception as exc:  # a space class that needs arguments, or fails
            raise NetgraftError(f"search space '{spec}': building it raised "
                                f"{type(exc).__name__}: {exc} (a space is built without "
                                f"arguments; give a class or factory that takes none)") from None
    else:
        raise NetgraftError(f"unknown search space '{spec}'; choose one of {', '.join(SPACES)} "
                            f"or give package.module:attr")
    missing = [m for m in ("name", "sample", "build", "describe") if not hasattr(space, m)]
    if missing:
        raise NetgraftError(f"search space {spec!r} lacks {', '.join(missing)} (see "
                            f"netgraft.nas.space.SearchSpace)")
    return space
