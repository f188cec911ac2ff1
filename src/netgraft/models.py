"""Turn a model spec into a module: a timm name, or ``package.module:factory`` for your own."""
from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any

from torch import nn

from .errors import ModelSpecError


def create_model(spec: str, *, num_classes: int | None = None, in_chans: int | None = None,
                 pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build the model named by `spec` (randomly initialised unless `pretrained`).

    `spec` is a timm model name (``resnet18``) or ``package.module:factory`` where `factory`
    returns a ``torch.nn.Module``; `num_classes` / `in_chans` are passed on when not None.
    """
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    if ":" in spec:
        return _from_factory(spec, kwargs)
    import timm

    if not timm.is_model(spec):
        close = difflib.get_close_matches(spec, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelSpecError(
            f"unknown model '{spec}'.{hint} Give a timm model name (see timm.list_models()) or "
            f"'package.module:factory' for a model of your own.")
    try:
        return timm.create_model(spec, pretrained=pretrained, **kwargs)
    except Exception as exc:
        raise ModelSpecError(f"timm could not build '{spec}' with {kwargs}: {exc}") from exc


def _from_factory(spec: str, kwargs: dict[str, Any]) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelSpecError(f"cannot import '{module_name}' for model '{spec}': {exc}. "
                             f"Is it installed or on PYTHONPATH?") from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ModelSpecError(f"'{module_name}' has no callable '{attr}' (model '{spec}')")
    try:
        params = inspect.signature(factory).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        unknown = [k for k in kwargs if k not in params and not takes_any]
    except (TypeError, ValueError):
        unknown = []
    if unknown:
        raise ModelSpecError(f"factory '{spec}' does not accept {', '.join(unknown)}; drop the "
                             f"option or add the argument to the factory")
    try:
        model = factory(**kwargs)
    except Exception as exc:
        raise ModelSpecError(f"factory '{spec}' raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"factory '{spec}' returned {type(model).__name__}, not a torch.nn.Module")
    return model


def head_shape(spec: str, state: dict[str, Any]) -> dict[str, int]:
    """num_classes / in_chans a timm model needs to accept `state` (read off its classifier and
    first conv), so that a checkpoint loads without the user repeating how it was trained."""
    if ":" in spec:
        return {}
    import timm

    if not timm.is_model(spec):
        return {}
    cfg = timm.models.get_pretrained_cfg(spec)
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else (cfg or {})
    out: dict[str, int] = {}
    classifier = cfg.get("classifier")
    if isinstance(classifier, (list, tuple)):
        classifier = classifier[0]
    if classifier and f"{classifier}.weight" in state:
        out["num_classes"] = int(state[f"{classifier}.weight"].shape[0])
    first = cfg.get("first_conv")
    if isinstance(first, (list, tuple)):
        first = first[0]
    if first and f"{first}.weight" in state and state[f"{first}.weight"].ndim == 4:
        out["in_chans"] = int(state[f"{first}.weight"].shape[1])
    return out


def parse_input_size(text: str | None) -> tuple[int, ...] | None:
    """"C,H,W" (or "CxHxW") from the command line → (C, H, W); None for an empty value."""
    from .errors import NetgraftError

    if not text:
        return None
    try:
        dims = tuple(int(x) for x in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if not dims or min(dims) <= 0:
        raise NetgraftError(f"input size {text!r}: expected positive C,H,W (e.g. 3,224,224)")
    return dims
