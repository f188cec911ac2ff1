"""Architecture fingerprints: an Architecture as JSON, rebuilt later without the model.

Ranking a zoo compares one target with many sources; instantiating and tracing every source
each time would dominate. A fingerprint keeps exactly what matching and similarity read:

* every field of every :class:`~netgraft.trace.Layer` (kind, type, tensor shapes, parameter
  names, groups, kernel, stride, dims, block, role, a conv's input resolution ...) — all
  fields but ``module``, read generically from the dataclass so that a field added later is
  carried along (and a field missing from a fingerprint takes its default: unknown);
* the blocks (name, layer positions);
* a *skeleton* of the module tree — for every module its nearest ``torch.nn`` class and its
  children in registration order — rebuilt as bare, tensor-free ``torch.nn`` instances. The
  ``dpiat`` method groups blocks over the module registration tree and scores layers with
  ``isinstance`` on DPIAT's torch classes; the skeleton answers both exactly. Only classes
  from ``torch.nn`` are ever instantiated from a fingerprint (never a class named in a file),
  so reading a fingerprint runs no code from the zoo.

``rebuild(to_json(trace(model)))`` gives the same ``similarity`` and the same ``match`` pairs
as the traced model for both methods (tests check it on timm models of five families).
Optionally a fingerprint also stores which layers :func:`netgraft.growth.identity_blocks`
would zero in each residual block (``identity``): transfer's coverage depends on it, and it
can only be measured by probing the live model, so it is measured once for a target.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import inspect
import json
import math
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from .errors import NetgraftError
from .trace import Architecture, Block, Layer, class_path

#: bump when the fingerprint layout changes; the index key also carries a hash of trace.py.
#: 3: layers carry their input resolution (``in_size``; read as None where missing)
FORMAT_VERSION = 3

_LAYER_FIELDS = [f.name for f in dataclasses.fields(Layer) if f.name != "module"]


class FingerprintError(NetgraftError):
    """A fingerprint cannot be written (unexpected layer data) or read (corrupt / foreign)."""


# ----------------------------------------------------------------------------- versions
def _source_hash(*modules: str) -> str:
    h = hashlib.sha256()
    for name in modules:
        try:
            h.update(inspect.getsource(importlib.import_module(name)).encode())
        except (OSError, TypeError):  # no source (frozen install): fall back to the version
            from . import __version__
            h.update(f"{name}@{__version__}".encode())
    return h.hexdigest()[:12]


@lru_cache(maxsize=None)
def fingerprint_version() -> str:
    """Version of the fingerprints this code writes: the format plus a hash of the tracer, so
    a change to tracing or block grouping invalidates cached fingerprints by itself."""
    return f"{FORMAT_VERSION}-{_source_hash('netgraft.trace')}"


@lru_cache(maxsize=None)
def score_version() -> str:
    """A hash of the matching and similarity code: cached DP values are keyed by it, so an
    improved score never reads stale values."""
    return _source_hash("netgraft.match", "netgraft.match.dp", "netgraft.match.scores",
                        "netgraft.similarity")


# ----------------------------------------------------------------------------- writing
def _torch_class(module: nn.Module) -> type:
    """The most derived ``torch.nn`` class of `module` (timm's BatchNormAct2d → BatchNorm2d)."""
    for cls in type(module).__mro__:
        if cls.__module__.startswith("torch.nn.") and issubclass(cls, nn.Module):
            return cls
    return nn.Module


def _jsonable(value: Any, where: str) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, where) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise FingerprintError(f"{where}: cannot store a {type(value).__name__} in a fingerprint")


def _skeleton_tree(model: nn.Module) -> dict[str, Any]:
    """Every module once (shared modules keep one node), with its class and children."""
    ids: dict[int, int] = {}
    classes: list[str] = []
    children: list[list] = []
    stack = [model]
    ids[id(model)] = 0
    classes.append(class_path(_torch_class(model)))
    children.append([])
    order = [model]
    while stack:  # breadth of ids does not matter; edges keep the registration order
        module = stack.pop()
        node = ids[id(module)]
        for attr, child in module._modules.items():
            if child is None:
                continue
            if id(child) not in ids:
                ids[id(child)] = len(classes)
                classes.append(class_path(_torch_class(child)))
                children.append([])
                order.append(child)
                stack.append(child)
            children[node].append([attr, ids[id(child)]])
    return {"classes": classes, "children": children}


def to_dict(arch: Architecture, identity: dict[int, list[str]] | None = None) -> dict[str, Any]:
    """The fingerprint of a traced Architecture (JSON-ready)."""
    if arch.model is None:
        raise FingerprintError(f"{arch.name}: the Architecture has no model (trace() keeps it); "
                               f"cannot record its module tree")
    layers = []
    for layer in arch.layers:
        layers.append({f: _jsonable(getattr(layer, f), f"{arch.name} layer '{layer.name}' field {f}")
                       for f in _LAYER_FIELDS})
    return {
        "netgraft_fingerprint": fingerprint_version(),
        "name": arch.name,
        "input_shape": list(arch.input_shape) if arch.input_shape else None,
        "layers": layers,
        "blocks": [{"name": b.name, "layers": list(b.layers)} for b in arch.blocks],
        "tree": _skeleton_tree(arch.model),
        "model_class": arch.model_class,
        "identity": None if identity is None else {str(k): list(v) for k, v in identity.items()},
    }


def to_json(arch: Architecture, identity: dict[int, list[str]] | None = None) -> str:
    return dumps(to_dict(arch, identity))


def dumps(fp: dict[str, Any]) -> str:
    """Canonical JSON (sorted keys, no spaces): equal fingerprints have equal text and hash."""
    return json.dumps(fp, sort_keys=True, separators=(",", ":"))


def fingerprint_hash(fp: dict[str, Any]) -> str:
    """Content hash of a fingerprint's structure (the identity probe result is left out, so a
    fingerprint keeps its hash when the probe is added later)."""
    core = {k: v for k, v in fp.items() if k != "identity"}
    return hashlib.sha256(dumps(core).encode()).hexdigest()


def _nondegenerate(model: nn.Module) -> None:
    """Give every parameter generic non-zero values, as a grafted (trained) target has: a
    fresh model often starts its residual branches at zero already (timm's zero-init last
    batch norm, ConvNeXt's 1e-6 layer scale), and probing those would find nothing to zero."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.is_floating_point():
                continue
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if p.ndim >= 2:
                value = noise / max(1, math.prod(p.shape[1:])) ** 0.5
            elif name.endswith("bias"):
                value = 0.1 * noise
            else:  # norm weights, layer scales, tokens
                value = 1.0 + 0.1 * noise
            p.copy_(value.to(p.dtype))


def measure_identity(arch: Architecture) -> dict[int, list[str]]:
    """Which layers ``transfer`` would zero in each multi-layer block made an identity.

    Probes a deep copy of the model with generic non-zero weights (the traced model is not
    modified), so the answer is structural: a transfer probes the grafted weights, which may
    differ in rare cases (an estimate for ranking, not a promise). Blocks are probed on
    inputs captured from the unmodified model, so the result for one block does not depend on
    which other blocks are made identities — a transfer's subset can be read off this map."""
    from .growth import identity_blocks

    if arch.model is None:
        raise FingerprintError(f"{arch.name}: measuring identity blocks needs the live model")
    model = copy.deepcopy(arch.model)
    _nondegenerate(model)
    live = copy.copy(arch)
    by_name = dict(model.named_modules())
    live.layers = [dataclasses.replace(layer, module=by_name[layer.name]) for layer in arch.layers]
    multi = [b for b, block in enumerate(arch.blocks) if not block.single]
    example = copy.deepcopy(arch.example_input)
    from .trace import single_thread
    with single_thread():
        return identity_blocks(model, live, multi, example)


# ----------------------------------------------------------------------------- reading
def _torch_class_from(path: str) -> type:
    module_name, _, qualname = path.partition(":")
    if not (module_name == "torch.nn" or module_name.startswith("torch.nn.")):
        raise FingerprintError(f"fingerprint names class {path!r}: only torch.nn classes are "
                               f"rebuilt from fingerprints")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise FingerprintError(f"fingerprint class {path!r} is not in this torch: {exc}; "
                               f"rebuild the index") from exc
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise FingerprintError(f"fingerprint class {path!r} is not a torch.nn.Module")
    return obj


@lru_cache(maxsize=1)
def _empty_state() -> dict[str, Any]:
    state = dict(nn.Module().__dict__)
    for k, v in state.items():  # fresh containers are made per node: they must start empty
        assert not (isinstance(v, (dict, set)) and v), f"nn.Module() has a non-empty {k}"
    return state


def _bare(cls: type) -> nn.Module:
    """An instance of `cls` with no tensors and no configuration: only its type matters.

    Its state is a fresh copy of what ``nn.Module.__init__`` sets (empty parameter, buffer,
    module and hook containers), several times faster than calling it for every node."""
    module = cls.__new__(cls)
    module.__dict__.update({k: type(v)() if isinstance(v, (dict, set)) else v
                            for k, v in _empty_state().items()})
    module.__dict__["extra_repr"] = _skeleton_repr  # the class's would read missing config
    return module


def _skeleton_repr() -> str:
    return "skeleton"


def _rebuild_tree(tree: dict[str, Any]) -> tuple[nn.Module, dict[str, nn.Module]]:
    classes = {path: _torch_class_from(path) for path in set(tree["classes"])}
    nodes = [_bare(classes[path]) for path in tree["classes"]]
    for node, kids in zip(nodes, tree["children"]):
        for attr, child in kids:
            node._modules[attr] = nodes[child]
    root = nodes[0]
    return root, dict(root.named_modules())


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def from_dict(fp: dict[str, Any]) -> Architecture:
    """An Architecture equivalent to the traced one for matching and similarity.

    Its ``model`` is a tensor-free skeleton (enough for ``method="dpiat"``'s block grouping);
    it cannot run, so ``transfer`` needs the real model."""
    version = fp.get("netgraft_fingerprint") if isinstance(fp, dict) else None
    if version != fingerprint_version():
        raise FingerprintError(f"fingerprint version {version!r} is not this netgraft's "
                               f"{fingerprint_version()!r}; rebuild it from the model")
    try:
        root, modules = _rebuild_tree(fp["tree"])
        layers = []
        for data in fp["layers"]:
            kwargs = {f: _tuples(data[f]) for f in _LAYER_FIELDS if f in data}
            layers.append(Layer(**kwargs, module=modules.get(kwargs["name"])))
        blocks = [Block(name=b["name"], layers=list(b["layers"])) for b in fp["blocks"]]
        shape = tuple(fp["input_shape"]) if fp.get("input_shape") else None
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise FingerprintError(f"corrupt fingerprint of {fp.get('name')!r}: "
                               f"{type(exc).__name__}: {exc}") from exc
    return Architecture(name=fp["name"], layers=layers, blocks=blocks, input_shape=shape,
                        model=root, model_class=fp.get("model_class"))


def from_json(text: str | bytes) -> Architecture:
    return from_dict(json.loads(text))


def identity_of(fp: dict[str, Any]) -> dict[int, list[str]] | None:
    ident = fp.get("identity")
    return None if ident is None else {int(k): list(v) for k, v in ident.items()}
