"""Layer-pair scores: how well a source layer can initialise a target layer, in [0, 1]."""
from __future__ import annotations

import math
import threading

from torch import nn

from ..trace import NORM_KINDS, Layer

# DPIAT's layer classes, in the order its package checks them (section 1 of DPIAT.md)
DPIAT_CLASSES: tuple[type, ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.Linear,
)
DPIAT_DIMENSIONAL: tuple[type, ...] = DPIAT_CLASSES[:6] + (nn.Linear,)




def ratio(a: float, b: float) -> float:
    return min(a / b, b / a) if a > 0 and b > 0 else 0.0


def dpiat_score(source: Layer, target: Layer) -> float:
    """Same class → product over the weight's dimensions of min(a/b, b/a); otherwise 0."""
    for cls in DPIAT_CLASSES:
        if isinstance(source.module, cls) and isinstance(target.module, cls):
            a, b = source.shapes.get("weight"), target.shapes.get("weight")
            if a is None or b is None:
                return 0.0
            return math.prod(ratio(x, y) for x, y in zip(a, b))
    return 0.0


# Which kinds can initialise which, and how much of the structure carries over.
_COMPATIBLE: dict[frozenset, float] = {
    frozenset({"conv"}): 1.0,
    frozenset({"conv_transpose"}): 1.0,
    frozenset({"linear"}): 1.0,
    frozenset({"conv", "linear"}): 0.5,  # a pointwise conv is a linear map over channels
    frozenset({"batchnorm"}): 1.0,
    frozenset({"layernorm"}): 1.0,
    frozenset({"groupnorm"}): 1.0,
    frozenset({"instancenorm"}): 1.0,
    frozenset({"norm"}): 1.0,
    frozenset({"batchnorm", "groupnorm"}): 0.5,
    frozenset({"batchnorm", "layernorm"}): 0.5,
    frozenset({"layernorm", "groupnorm"}): 0.5,
    frozenset({"layernorm", "norm"}): 0.5,
    frozenset({"embedding"}): 1.0,
    frozenset({"attention"}): 1.0,
    frozenset({"param"}): 1.0,
}


def _structure(layer: Layer) -> tuple[float, ...]:
    """The sizes that matter for transfer: (fan-out, fan-in per group, kernel area)."""
    if layer.kind in ("conv", "conv_transpose", "linear"):
        w = layer.shapes["weight"]
        if layer.kind == "conv_transpose":
            fan_out, fan_in = w[1] * layer.groups, w[0] // max(layer.groups, 1)
        else:
            fan_out, fan_in = w[0], w[1]
        return (fan_out, fan_in, math.prod(w[2:]) if len(w) > 2 else 1)
    w = layer.weight_shape
    return tuple(w) if w else tuple(next(iter(layer.shapes.values()), ()))


def _spatial(layer: Layer) -> int | None:
    """The number of spatial dimensions of a (transposed) conv's kernel; None otherwise."""
    if layer.kind not in ("conv", "conv_transpose"):
        return None
    return len(layer.shapes["weight"]) - 2


def _per_channel(layer: Layer) -> bool:
    """A norm, or a conv whose every channel reads only itself (depthwise, or one channel)."""
    return (layer.kind in NORM_KINDS or layer.kind == "norm" or layer.depthwise
            or layer.kind == "conv" and layer.groups == layer.in_dim == layer.out_dim)


def _reads_input(layer: Layer) -> bool:
    """Whether `layer` reads the model input's channels: directly, or through layers that keep
    channels apart (norms, depthwise convs: `Layer.in_layout` follows channels through them)."""
    return layer.role == "input" or (layer.in_layout is not None and bool(layer.in_layout)
                                     and all(p == "" for p, *_ in layer.in_layout))


def graft_key(layer: Layer) -> tuple:
    """Everything `graft_score` reads of a layer: two layers with equal keys score alike
    against any other (`GraftScores` memoises by it)."""
    return (layer.kind, layer.role, tuple(layer.shapes.items()), layer.groups, layer.in_dim,
            layer.out_dim, _reads_input(layer))


class GraftScores:
    """`graft_score` memoised by `graft_key`: a network repeats a few layer shapes many times
    (efficientnet_b2's 185 layers have 71 keys, resnet50's 107 have 27), so ranking a zoo
    computes each distinct pair once instead of once per layer pair. `keys` turns an
    architecture's layers into small integers (one key computation per layer per use)."""

    def __init__(self, limit: int = 1 << 20):
        self.ids: dict[tuple, int] = {}  # never cleared: aligners hold these numbers
        self.scores: dict[tuple[int, int], float] = {}
        self.limit = limit
        self.lock = threading.Lock()  # one number per key, also when threads match at once

    def keys(self, layers: list[Layer]) -> list[int]:
        keys = [graft_key(layer) for layer in layers]
        with self.lock:
            return [self.ids.setdefault(key, len(self.ids)) for key in keys]

    def score(self, a: int, b: int, source: Layer, target: Layer) -> float:
        value = self.scores.get((a, b))
        if value is None:
            if len(self.scores) >= self.limit:
                self.scores.clear()
            value = self.scores[(a, b)] = graft_score(source, target)
        return value


def graft_score(source: Layer, target: Layer) -> float:
    """Score for the default method: compatible kinds (conv ~ linear, any norm ~ any norm),
    shapes compared by fan-out, fan-in and (softly) kernel area, depthwise ~ depthwise.
    Reads only what `graft_key` holds (the aligner memoises it by that key): a field read
    here must be added there."""
    compat = _COMPATIBLE.get(frozenset({source.kind, target.kind}), 0.0)
    if not compat or ((source.role == "output") != (target.role == "output")
                      and "input" not in (source.role, target.role)):
        # a classifier's units are classes: it fills only a classifier (a one-layer model's
        # layer reads the input and makes the output, and counts as both)
        return 0.0
    if source.kind == "param":
        if set(source.shapes) != set(target.shapes):
            return 0.0
        return compat * math.prod(
            math.prod(ratio(x, y) for x, y in zip(source.shapes[k], target.shapes[k]))
            if len(source.shapes[k]) == len(target.shapes[k]) else 0.0
            for k in source.shapes)
    a, b = _structure(source), _structure(target)
    if len(a) != len(b) and not {source.kind, target.kind} <= {"conv", "linear"}:
        return 0.0
    if _spatial(source) != _spatial(target) and None not in (_spatial(source), _spatial(target)):
        # a 1-D kernel says nothing about a 2-D one; pointwise convs of any dimensionality
        # are linear maps over channels, as a conv and a linear layer are to each other
        if a[2] != 1 or b[2] != 1:
            return 0.0
        compat = min(compat, 0.5)
    # another number of input channels (RGB, gray, multispectral, sensors) is the data's, not
    # the network's: a stem conv maps them exactly on gray images (`adapt`), and the norms and
    # depthwise convs that read the input before it (a BatchNorm on the raw input) have as
    # many channels as the input has
    inputs = _reads_input(source) and _reads_input(target)
    depthwise = source.depthwise, target.depthwise
    if inputs and all(map(_per_channel, (source, target))):
        a = b[:1] + a[1:]  # as many channels as the input: not compared
        depthwise = (source.kind == "conv",) * 2  # a 1-channel conv is a depthwise one
    if len(a) == 3 and len(b) == 3:
        stems = inputs and source.kind == target.kind == "conv"
        score = (ratio(a[0], b[0]) * (1.0 if stems else ratio(a[1], b[1]))
                 * math.sqrt(ratio(a[2], b[2])))
    else:
        score = math.prod(ratio(x, y) for x, y in zip(a, b))
    if depthwise[0] != depthwise[1]:
        score *= 0.25
    return compat * score


#: how much less the DP counts a conv matched to one of another stride: enough to break its
#: ties between equally shaped layers, too little to change any other choice
STRIDE_TIE_BREAK = 1e-6


def stride_tie_break(source: Layer, target: Layer) -> float:
    """The factor the graft DP multiplies a layer pair's score by (the score itself, which
    `min_score` and the report read, is unchanged): a conv copied onto one of another stride
    reads other inputs with the same weights, so a deeper stack of equally shaped convs
    places its strided ones where the source has them."""
    if source.kind == target.kind == "conv" and source.stride != target.stride:
        return 1.0 - STRIDE_TIE_BREAK
    return 1.0
