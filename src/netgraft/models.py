"""Turn a model spec into a module: a timm name, or ``package.module:factory`` for your own,
either followed by keyword arguments for the builder: ``vit_tiny_patch16_224(img_size=32,
patch_size=8)`` (Python literals; quote the spec in a shell)."""
from __future__ import annotations

import ast
import difflib
import importlib
import inspect
from typing import Any

from torch import nn

from .errors import ModelSpecError


#: the command line's help for an option that names a model
MODEL_SPEC_HELP = ("timm model name or package.module:factory, optionally with builder "
                   "arguments: 'vit_tiny_patch16_224(img_size=32,patch_size=8)'")
_SPEC_HELP = ("write name(key=value, ...) with Python literals as values, e.g. "
              "vit_tiny_patch16_224(img_size=32, patch_size=8)")


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``name(key=value, ...)`` → ``(name, {key: value})``; a bare name → ``(name, {})``.

    Values are Python literals (numbers, strings, tuples, lists, True/False/None), read with
    `ast.literal_eval`, never evaluated as code."""
    spec = spec.strip()
    head, paren, rest = spec.partition("(")
    head = head.strip()
    if not paren:
        return spec, {}
    if not head:
        raise ModelSpecError(f"model spec {spec!r} has no model name before '('; {_SPEC_HELP}")
    try:
        call = ast.parse("_(" + rest, mode="eval").body
    except SyntaxError as exc:
        raise ModelSpecError(f"model spec {spec!r}: cannot read its arguments ({exc.msg}); "
                             f"{_SPEC_HELP}") from None
    if (not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or call.args
            or any(k.arg is None for k in call.keywords)):
        raise ModelSpecError(f"model spec {spec!r}: only key=value arguments are accepted; "
                             f"{_SPEC_HELP}")
    kwargs: dict[str, Any] = {}
    for keyword in call.keywords:
        if keyword.arg in kwargs:
            raise ModelSpecError(f"model spec {spec!r}: {keyword.arg} is given twice; {_SPEC_HELP}")
        try:
            kwargs[keyword.arg] = ast.literal_eval(keyword.value)
        except (ValueError, TypeError, SyntaxError, RecursionError):
            raise ModelSpecError(
                f"model spec {spec!r}: the value of {keyword.arg} "
                f"({ast.unparse(keyword.value)}) is not a Python literal; {_SPEC_HELP}") from None
    return head, kwargs


def canonical_spec(spec: str) -> str:
    """One spelling per model spec: ``name(key=value,...)`` without spaces, values written as
    Python writes them, in the order given (``vit(img_size=32, depth="6")`` →
    ``vit(img_size=32,depth='6')``); a bare name is returned stripped."""
    name, kwargs = parse_spec(spec)
    if not kwargs:
        return name
    return f"{name}({','.join(f'{k}={v!r}' for k, v in kwargs.items())})"


def split_specs(text: str, sep: str = ",") -> list[str]:
    """Split `text` at `sep` outside parentheses, so that a list of specs may hold specs with
    arguments: ``"resnet18,vit_tiny_patch16_224(img_size=32,patch_size=8)"`` → 2 items."""
    items, depth, start, quote, escaped = [], 0, 0, "", False
    for i, ch in enumerate(text):
        if quote:  # inside a string value: brackets and separators are text
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        elif ch == sep and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return items


def create_model(spec: str, *, num_classes: int | None = None, in_chans: int | None = None,
                 pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build the model named by `spec` (randomly initialised unless `pretrained`).

    `spec` is a timm model name (``resnet18``) or ``package.module:factory`` where `factory`
    returns a ``torch.nn.Module``, either optionally with keyword arguments for the builder
    (``vit_tiny_patch16_224(img_size=32, patch_size=8)``, see `parse_spec`);
    `num_classes` / `in_chans` are passed on when not None.
    """
    spec, from_spec = parse_spec(spec)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    clash = sorted(k for k in from_spec if k in kwargs and kwargs[k] != from_spec[k])
    if clash:
        raise ModelSpecError(
            f"model '{spec}': {', '.join(f'{k}={from_spec[k]!r}' for k in clash)} in the spec but "
            f"{', '.join(f'{k}={kwargs[k]!r}' for k in clash)} asked otherwise (an option such as "
            f"--num-classes, or read off the weights); give it once")
    kwargs.update(from_spec)
    for key in ("num_classes", "in_chans"):  # timm builds a model even for nonsense counts
        value = kwargs.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < (0 if key == "num_classes" else 1)):
            least = "0 (no classifier)" if key == "num_classes" else "1"
            raise ModelSpecError(f"model '{spec}': {key}={value!r}; give a whole number of at "
                                 f"least {least}")
    if ":" in spec:
        return _from_factory(spec, kwargs)
    import timm

    if not timm.is_model(spec):
        names = timm.list_models()
        exact = [n for n in names if n.lower() == spec.lower()]  # RESNET18
        close = exact or difflib.get_close_matches(spec.lower(), names, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelSpecError(
            f"unknown model '{spec}'.{hint} Give a timm model name (see timm.list_models()) or "
            f"'package.module:factory' for a model of your own.")
    try:
        return timm.create_model(spec, pretrained=pretrained, **kwargs)
    except Exception as exc:
        raise ModelSpecError(f"timm could not build '{spec}' with {kwargs}: {exc}") from exc


def import_user_module(module_name: str, what: str):
    """Import the user's module named in a ``package.module:attr`` spec (`what` names it in
    errors: "model 'm:f'"). The working folder is searched too, as ``python -m`` does and the
    console scripts do not; a module that fails to import (a syntax error, an exception at
    import) is named with its cause, not a traceback."""
    import sys

    try:
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name.partition(".")[0] or "" in sys.path or "." in sys.path:
                raise
            sys.path.append("")  # after everything installed: never shadows a package
            return importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelSpecError(f"cannot import '{module_name}' for {what}: {exc}. Is it "
                             f"installed, on PYTHONPATH or in the working folder?") from None
    except Exception as exc:  # SyntaxError, or whatever the module raises at import
        raise ModelSpecError(f"importing '{module_name}' for {what} failed: "
                             f"{type(exc).__name__}: {exc}") from None


def _from_factory(spec: str, kwargs: dict[str, Any]) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    module = import_user_module(module_name, f"model '{spec}'")
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
    spec, _ = parse_spec(spec)
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
