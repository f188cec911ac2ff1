"""Model → Architecture: the parametric layers of a network in execution order, and its blocks.

A *layer* is a module that directly owns tensors (parameters, or the running statistics of a
batch norm): a conv, a linear, a norm, an embedding, an attention's packed projection, or a
module holding loose parameters such as a class token or a layer-scale vector. Layers are
ordered by when the forward pass first reaches them (forward pre-hooks on an example input),
so the order follows the data flow rather than the order in which modules were registered.

Blocks come from the module tree (a residual block, an MBConv, a transformer block ...),
grouped the same way DPIAT groups them but over parametric layers only, and ordered by
execution as well.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakTensorKeyDictionary

from .errors import ModelForwardError, UnsupportedModelError, first_line
from .reparam import plain_copy, reparametrized

# Layer kinds, most specific class first. Data, not if-chains: add a row to support a kind.
_KINDS: list[tuple[type, str]] = [
    (nn.modules.conv._ConvTransposeNd, "conv_transpose"),
    (nn.modules.conv._ConvNd, "conv"),
    (nn.Linear, "linear"),
    (nn.modules.batchnorm._BatchNorm, "batchnorm"),
    (nn.modules.instancenorm._InstanceNorm, "instancenorm"),
    (nn.GroupNorm, "groupnorm"),
    (nn.LayerNorm, "layernorm"),
    (nn.Embedding, "embedding"),
    (nn.EmbeddingBag, "embedding"),
    (nn.MultiheadAttention, "attention"),
]
if hasattr(nn, "RMSNorm"):
    _KINDS.append((nn.RMSNorm, "layernorm"))

NORM_KINDS = frozenset({"batchnorm", "instancenorm", "groupnorm", "layernorm"})
#: kinds that carry a fan-in/fan-out weight matrix (count as "real" layers for blocks)
DIMENSIONAL_KINDS = frozenset({"conv", "conv_transpose", "linear", "embedding", "attention"})


def layer_kind(module: nn.Module) -> str:
    for cls, kind in _KINDS:
        if isinstance(module, cls):
            return kind
    # timm and others define their own norms (RmsNorm, LayerNorm2d ...): recognise them by name
    name = type(module).__name__.lower()
    if "batchnorm" in name and hasattr(module, "running_mean"):
        return "batchnorm"  # FrozenBatchNorm2d (timm, torchvision): its affine is in buffers
    if "norm" in name and hasattr(module, "weight"):
        return "layernorm" if ("layer" in name or "rms" in name) else "groupnorm" if "group" in name else "norm"
    return "param"


def own_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers a module owns directly (not through children)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, p in module.named_parameters(recurse=False):
        if p is not None:
            tensors[name] = p
    non_persistent = getattr(module, "_non_persistent_buffers_set", set())
    for name, b in module.named_buffers(recurse=False):
        if b is not None and name not in non_persistent and b.is_floating_point():
            tensors[name] = b
    return tensors


@dataclass
class Layer:
    """One parametric layer of a traced model."""

    name: str
    kind: str
    type: str
    shapes: dict[str, tuple[int, ...]]
    param_names: tuple[str, ...]
    index: int = -1  # position in execution order
    executed: bool = True
    groups: int = 1
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    in_dim: int | None = None
    out_dim: int | None = None
    block: int = -1
    role: str = ""  # "input" (reads the model input) / "output" (produces the model output)
    #: a per-channel scale that shuts its block's branch at init: a near-zero layer scale
    #: (ConvNeXt's and CaiT's, 1e-6 to 1e-5) or a norm whose scale starts at exactly zero (the
    #: last norm of a residual branch in timm's ResNets and RegNets, ``zero_init_last``):
    #: whatever the block holds does not act until training opens it
    gate: bool = False
    #: where the channels this layer reads come from (None: not followed): segments
    #: ``(producer, start, stop, width)`` — channels start..stop of the output of layer
    #: `producer` (``""``: the model input), which has `width` channels. More than one whole
    #: output when the layer reads a concatenation or a slice (`concatenated`)
    in_layout: tuple[tuple[str, int, int, int], ...] | None = None
    #: an attention's own query projection: a linear named ``q`` / ``q_proj`` in a module with
    #: ``num_heads`` (timm's attention pooling, unfused q/k/v); scaled like a packed
    #: projection's queries when the heads grow wider
    query: bool = False
    #: the spatial shape of a conv's input on the traced example (None: not a conv, or not
    #: known — an old fingerprint): two convs of one stride still read other grids when a
    #: max-pool, which has no parameters and so is no layer, sits before one of them
    in_size: tuple[int, ...] | None = None
    module: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def numel(self) -> int:
        """Number of parameter elements (buffers excluded)."""
        return sum(math.prod(self.shapes[n]) for n in self.param_names)

    @property
    def weight_shape(self) -> tuple[int, ...] | None:
        if "weight" in self.shapes:
            return self.shapes["weight"]
        if "in_proj_weight" in self.shapes:
            return self.shapes["in_proj_weight"]
        return None

    @property
    def concatenated(self) -> bool:
        """Whether this layer reads something other than one whole output of one layer."""
        lay = self.in_layout
        return lay is not None and not (len(lay) == 1 and lay[0][1] == 0 and lay[0][2] == lay[0][3])

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.groups > 1 and self.groups == self.in_dim

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "type": self.type, "index": self.index,
            "block": self.block, "executed": self.executed, "role": self.role,
            "groups": self.groups, "kernel": list(self.kernel), "stride": list(self.stride),
            "in_dim": self.in_dim, "out_dim": self.out_dim, "numel": self.numel,
            "shapes": {k: list(v) for k, v in self.shapes.items()}, "gate": self.gate,
            "in_size": None if self.in_size is None else list(self.in_size),
        }


@dataclass
class Block:
    """A run of consecutive layers that form one unit of the network (or a single layer)."""

    name: str
    layers: list[int]  # positions in Architecture.layers

    @property
    def single(self) -> bool:
        return len(self.layers) == 1


@dataclass
class Architecture:
    """The traced structure of a model: layers in execution order, grouped into blocks."""

    name: str
    layers: list[Layer]
    blocks: list[Block]
    input_shape: tuple[int, ...] | None
    model: nn.Module | None = field(default=None, repr=False, compare=False)
    example_input: Any = field(default=None, repr=False, compare=False)
    #: sums (or products) of a concatenation and a tensor laid out otherwise, as (the
    #: concatenation's layout, the other term's): GhostNet's ghost module + shortcut, a
    #: squeeze-excitation gate on a concatenation. The other term's channels must then be
    #: mapped as the concatenation's are (`transfer` does it when it is one layer's output)
    mixed_sums: list[tuple[Layout, Layout]] = field(
        default_factory=list, repr=False, compare=False)
    #: residual sums, as (the module whose forward adds them, and the two layers whose whole
    #: outputs are added): a target block that does not add what its source block adds
    #: cannot compute the source's function
    summed: frozenset[tuple[str, str, str]] = field(default_factory=frozenset, repr=False,
                                                    compare=False)
    #: pairs of layers whose whole outputs are added, subtracted or multiplied channel by
    #: channel (residual sums, squeeze-excitation gates): their channels must be chosen alike
    coupled: frozenset[tuple[str, str]] = field(default_factory=frozenset, repr=False,
                                                compare=False)
    #: modules whose forward adds their own input back (x + f(x)): the residual units; those
    #: without convolutions (attention, MLP) are one block each (see `_unit_blocks`)
    residual: frozenset[str] = field(default_factory=frozenset, repr=False, compare=False)
    #: channel shuffles the forward ran (ShuffleNet): they interleave the channels of two
    #: halves, so a widened channel's replicas must sit next to it (`adapt.group_map`)
    shuffles: int = field(default=0, repr=False, compare=False)
    #: the pieces that splits along the channels cut, whether or not a layer reads them whole
    #: (MobileViT-v2's ``qkv.split([1, d, d])``: its 1-channel query piece is read by a
    #: softmax): the producer's channels are widened piece by piece
    pieces: list[Layout] = field(default_factory=list, repr=False, compare=False)
    #: linears whose output on tokens is split on its last dim into equal pieces used apart
    #: (a packed gated MLP: ``x1, x2 = fc1(x).chunk(2, -1)``; `_ChannelSources.packed`):
    #: name → pieces. Their output is widened piece by piece (`adapt.group_map`)
    packed: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    #: layers reading a channels-last tensor whose last dim folds k neighbours' channels side
    #: by side (Swin's patch merging: 2×2 neighbours → 4·C): name → k. What they read is
    #: widened piece by piece (`adapt.group_map`)
    folded: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    #: the traced model's class as ``module:qualname`` (kept when the model is not: a
    #: fingerprint's skeleton is a bare ``torch.nn.Module``). Rules that hold only within one
    #: family at two sizes (a module path names the same part in both) compare it
    model_class: str | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def numel(self) -> int:
        return sum(layer.numel for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "numel": self.numel,
            "layers": [layer.to_dict() for layer in self.layers],
            "blocks": [{"name": b.name, "layers": b.layers} for b in self.blocks],
        }

    def __str__(self) -> str:
        lines = [f"{self.name}: {len(self.layers)} layers in {len(self.blocks)} blocks, "
                 f"{self.numel:,} parameters"]
        for b, block in enumerate(self.blocks):
            lines.append(f"  [{b}] {block.name or '(top)'}")
            for i in block.layers:
                layer = self.layers[i]
                shape = ("x".join(map(str, layer.weight_shape)) if layer.weight_shape else
                         ", ".join(f"{n} {'x'.join(map(str, s)) or 'scalar'}"
                                   for n, s in layer.shapes.items()))  # gamma, cls_token …
                lines.append(f"      {layer.index:4d} {layer.kind:<14} {layer.name:<40} {shape}")
        return "\n".join(lines)


def class_path(cls: type) -> str:
    """A class as ``module:qualname`` (how architectures and fingerprints name classes)."""
    return f"{cls.__module__}:{cls.__qualname__}"


# ----------------------------------------------------------------------------- blocks
def group_blocks(root: Any, children: Callable[[Any], Sequence[Any]],
                 is_leaf: Callable[[Any], bool], is_dimensional: Callable[[Any], bool]) -> list:
    """DPIAT's block standardization over an abstract tree.

    Returns a top-level list whose items are leaves or flat lists of leaves (blocks). A subtree
    is merged into its parent when it is itself a list of blocks or holds fewer than two
    dimensional layers; below the top, a node with more single layers than blocks becomes one
    flat block; a one-element list is replaced by its element. Shared by the faithful DPIAT
    method (tree = module registration, leaves = DPIAT's layer classes) and the default method
    (leaves = parametric layers only).
    """

    def walk(node: Any, level: int) -> tuple[int, int, Any]:
        if is_leaf(node):
            return 0, int(is_dimensional(node)), node
        kids = children(node)
        if not kids:
            return 0, 0, node
        next_level = level if len(kids) == 1 else level + 1
        items: list = []
        n_dim = blocks = singles = 0
        for kid in kids:
            kid_depth, kid_dim, kid_items = walk(kid, next_level)
            n_dim += kid_dim
            spread = kid_depth > 1 or (isinstance(kid_items, list) and kid_dim < 2)
            for item in (kid_items if spread else [kid_items]):
                if isinstance(item, list):
                    blocks += 1
                else:
                    singles += 1
                items.append(item)
        depth = 2
        if singles > blocks and level > 0:
            items = [x for item in items for x in (item if isinstance(item, list) else [item])]
            depth = 1
        if len(items) == 1:
            return 1, n_dim, items[0]
        if not items:
            return 0, n_dim, node
        return depth, n_dim, items

    _, _, items = walk(root, 0)
    return items if isinstance(items, list) else [items]


# ----------------------------------------------------------------------------- tracing
@contextmanager
def keep_modes(*models: nn.Module) -> Iterator[None]:
    """Restore every submodule's train/eval flag afterwards (a model in training with its
    batch norms frozen by ``bn.eval()`` stays so), whatever the work in between switched."""
    saved = [(m, m.training) for model in models for m in model.modules()]
    try:
        yield
    finally:
        for module, training in saved:
            module.training = training


def snapshot(tensors: Iterable[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each tensor (once, however often it is listed) with a copy of its values, to `put_back`
    after work that may change them."""
    unique = {id(t): t for t in tensors}
    return [(t, t.detach().clone()) for t in unique.values()]


@torch.no_grad()
def put_back(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Restore a `snapshot` in place (optimizers and other holders keep the same tensors)."""
    for t, value in saved:
        t.copy_(value)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run small tensor work on one thread: tracing one input and copying tensors are too
    small to gain from OpenMP, and on a busy machine its spinning threads cost seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


#: how many inputs an inferred example input holds
EXAMPLE_BATCH = 2


def default_input_shape(model: nn.Module,
                        hint: str = "example_input= (CLI: --input-size C,H,W)") -> tuple[int, ...]:
    """A small example input shape for `model`: timm's config when present, else its first
    layer (`hint`: how to give one, named in the error when neither tells). The batch holds
    two inputs: a norm computing batch statistics in eval mode (BatchNorm without running
    statistics) cannot run on one."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module  # the wrapped model's config tells
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        c, h, w = cfg["input_size"][-3:]
        c = getattr(model, "in_chans", None) or _first_layer_channels(model) or c
        built = getattr(getattr(model, "patch_embed", None), "img_size", None)
        if built is not None:  # a fixed-size model built at another size (img_size=32)
            h, w = (built, built) if isinstance(built, int) else tuple(built)[-2:]
        if not cfg.get("fixed_input_size", False):
            patch = _patch_size(model)
            side = max(64, 2 * patch) if patch else 64
            h, w = min(h, side), min(w, side)
        return (EXAMPLE_BATCH, c, h, w)
    for module in model.modules():
        if isinstance(module, nn.RNNBase):  # a sequence of 16 steps
            steps, batch = 16, EXAMPLE_BATCH
            return ((batch, steps) if module.batch_first else (steps, batch)) + (
                module.input_size,)
        if isinstance(module, nn.RNNCellBase):
            return (EXAMPLE_BATCH, module.input_size)
        if isinstance(module, nn.Conv1d):
            return (EXAMPLE_BATCH, module.in_channels, 64)
        if isinstance(module, nn.Conv2d):
            return (EXAMPLE_BATCH, module.in_channels, 64, 64)
        if isinstance(module, nn.Conv3d):
            return (EXAMPLE_BATCH, module.in_channels, 16, 32, 32)
        if isinstance(module, nn.Linear):
            return (EXAMPLE_BATCH, module.in_features)
    raise UnsupportedModelError(
        f"cannot guess an example input for {type(model).__name__}: pass {hint}")


_DIM_NAMES = {2: "C,L", 3: "C,H,W", 4: "C,D,H,W"}


def _input_dims(model: nn.Module) -> int | None:
    """How many dimensions (besides the batch) `model`'s first convolution reads, when its
    first layer with parameters is one (a 1-D, 2-D or 3-D conv: 2, 3 or 4)."""
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return len(module.kernel_size) + 1
        if own_tensors(module):
            return None
    return None


def _first_layer_channels(model: nn.Module) -> int | None:
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return module.in_channels
    return None


def _patch_size(model: nn.Module) -> int | None:
    pe = getattr(model, "patch_embed", None)
    ps = getattr(pe, "patch_size", None)
    if ps is None:
        return None
    return int(ps[0] if isinstance(ps, (tuple, list)) else ps)


def _tensors_of(obj: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) tuple, list or dict, in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    items = obj if isinstance(obj, (list, tuple)) else obj.values() if isinstance(obj, dict) else []
    return [t for item in items for t in _tensors_of(item)]


def first_tensor(obj: Any) -> torch.Tensor | None:
    """The first tensor in `obj` (a tensor, or nested tuples, lists and dicts of them): the
    one output compared, aligned or probed when a model returns several (a ``(logits,
    features)`` pair); None when it holds none."""
    found = _tensors_of(obj)
    return found[0] if found else None


def as_input(example: Any) -> Any:
    """`example` with NumPy arrays (itself, or the items of a tuple, list or dict of
    arguments) made tensors, so that a model is called as it would be on tensors."""
    if type(example).__module__ == "numpy" and hasattr(example, "shape"):
        return torch.as_tensor(example)
    if isinstance(example, (tuple, list)):
        return type(example)(as_input(item) for item in example)
    if isinstance(example, dict):
        return {key: as_input(item) for key, item in example.items()}
    return example


def _in_dtype_of(model: nn.Module, example: Any) -> Any:
    """`example` (a tensor, or a tuple, list or dict of arguments) with its floating tensors in
    the dtype of `model`'s first floating parameter; integer tensors (token ids) as they are."""
    param = float_param(model)
    if param is None:
        return example
    if isinstance(example, torch.Tensor):
        return example.to(param.dtype) if example.is_floating_point() else example
    if isinstance(example, (tuple, list)):
        items = [_in_dtype_of(model, item) for item in example]
        return type(example)(*items) if hasattr(example, "_fields") else type(example)(items)
    if isinstance(example, dict):
        return {k: _in_dtype_of(model, v) for k, v in example.items()}
    return example


def run_model(model: nn.Module, example: Any) -> Any:
    """Call `model` on an example input: a tensor, a tuple/list of arguments or a dict of
    keyword arguments."""
    if isinstance(example, dict):
        return model(**example)
    if isinstance(example, (tuple, list)):
        return model(*example)
    return model(example)


def eval_output(model: nn.Module, example: Any) -> Any:
    """`model`'s output on `example` in eval mode, without gradients, on one thread; every
    submodule's train/eval mode is restored afterwards (also when the call fails)."""
    with keep_modes(model), torch.no_grad(), single_thread():
        model.eval()
        return run_model(model, example)


# ----------------------------------------------------------------------------- channel sources
#: a tensor's channels (dim 1) as segments ``(producer, start, stop, width)``
Layout = tuple[tuple[str, int, int, int], ...]
_SPLITS = frozenset({"split", "chunk", "tensor_split", "split_with_sizes"})
_ADDS = frozenset({"add", "add_", "__add__", "__iadd__", "__radd__"})
_PRODUCTS = frozenset({"mul", "mul_", "__mul__", "__imul__", "__rmul__"})
_SUMS = _ADDS | _PRODUCTS | {"sub", "__sub__"}
#: ops that move channels (or move another dimension into dim 1): what they return has no layout
_REORDERS = frozenset({"flip", "roll", "transpose", "transpose_", "permute", "movedim",
                       "moveaxis", "swapaxes", "swapdims", "t", "index_select", "gather",
                       "take_along_dim", "channel_shuffle", "native_channel_shuffle",
                       "pixel_shuffle", "pixel_unshuffle", "fliplr", "rot90", "sort",
                       "argsort", "matmul", "__matmul__", "__rmatmul__", "bmm", "einsum", "mm",
                       "tensordot"})
#: ops that keep channels in place only when they keep dims 0 and 1 (x.flatten(1) of pooled
#: features, x.view(n, c)); a channel shuffle's view(n, groups, c // groups, h, w) does not
_RESHAPES = frozenset({"reshape", "view", "flatten", "unflatten", "view_as", "reshape_as"})


def _cut(layout: Layout, start: int, stop: int) -> Layout:
    """Channels start..stop of a tensor laid out as `layout`."""
    out, pos = [], 0
    for producer, a, b, width in layout:
        lo, hi = max(start, pos), min(stop, pos + b - a)
        if lo < hi:
            out.append((producer, a + lo - pos, a + hi - pos, width))
        pos += b - a
    return tuple(out)


def _merged(layout: Layout) -> Layout:
    """`layout` with neighbouring segments that continue one another joined."""
    out: list[tuple[str, int, int, int]] = []
    for seg in layout:
        if out and out[-1][0] == seg[0] and out[-1][2] == seg[1] and out[-1][3] == seg[3]:
            out[-1] = (seg[0], out[-1][1], seg[2], seg[3])
        else:
            out.append(seg)
    return tuple(out)


def grouped_reads_shuffled(arch: "Architecture") -> bool:
    """A grouped (not depthwise) conv reads channels a shuffle interleaved (ShuffleNet V1's
    unit): its fan-in is cut into groups by position, which a per-channel layout cannot map."""
    return bool(arch.shuffles) and any(
        layer.kind == "conv" and layer.groups > 1 and not layer.depthwise
        and len(layer.in_layout or ()) > 1 for layer in arch.layers)


def shuffled(layout: Layout, groups: int) -> Layout | None:
    """The channels of a tensor laid out as `layout` after a channel shuffle in `groups`
    groups (ShuffleNet: ``x.view(n, g, c // g, ...).transpose(1, 2).reshape(n, c, ...)``):
    channel a·g + b is channel b·(c/g) + a. None when the channels do not divide evenly."""
    c = sum(b - a for _, a, b, _ in layout)
    if groups < 1 or c % groups:
        return None
    per = c // groups
    return _merged(tuple(seg for j in range(c)
                         for seg in _cut(layout, (j % groups) * per + j // groups,
                                         (j % groups) * per + j // groups + 1)))


class _ChannelSources(TorchFunctionMode):
    """Follows, through one forward pass, which layer's output each channel of each tensor
    comes from: a channel-mixing layer (a conv, or a linear on (N, C) features) starts a new
    source; concatenations, splits and slices along dim 1 combine and cut sources; ops that
    move channels (flips, shuffles, transposes, reshapes) lose them; every other op keeps the
    sources of its first input with as many channels (norms, activations, pooling), a residual
    sum those of its stream, a product those of its larger term (not a gate's)."""

    def __init__(self, shuffles: bool = True):
        super().__init__()
        self.follow_shuffles = shuffles  # else a shuffle's output has no layout, as any reorder
        # weak keys: the forward's intermediate tensors are freed as usual
        self._known = WeakTensorKeyDictionary()
        #: a linear's output on tokens (N, L, D) → its name: channels on the last dim, which
        #: the layouts (dim 1) do not follow; only a split of them is recorded (`packed`)
        self.tokens = WeakTensorKeyDictionary()
        #: linears whose token output is split into equal pieces on its last dim, which are
        #: then used apart (a packed gated MLP, ``x1, x2 = fc1(x).chunk(2, -1)``): name → pieces
        self.packed: dict[str, int] = {}
        #: channels-last tensors whose last dim folds k neighbours' channels (Swin's patch
        #: merging: (N, H/2, W/2, 2, 2, C) flattened to 4·C) → k; and the layers reading one
        #: directly → k (`Architecture.folded`)
        self.folds = WeakTensorKeyDictionary()
        self.folded: dict[str, int] = {}
        #: a tensor whose channels were viewed as (groups, channels per group), before or
        #: after swapping those two dims: (layout of the channels, groups, swapped)
        self._grouped = WeakTensorKeyDictionary()
        #: sums and products of a concatenation and a tensor laid out otherwise
        #: (`Architecture.mixed_sums`)
        self.mixed_sums: list[tuple[Layout, Layout]] = []
        self.read: dict[str, Layout] = {}  # layer name → what it reads (first call)
        self.summed: set[tuple[str, str, str]] = set()  # (module, layer, layer) added
        self.coupled: set[tuple[str, str]] = set()  # layers whose outputs meet channel by channel
        self.running: list[str] = []  # the modules whose forward is running, innermost last
        self.inputs: list[Any] = []  # the first input tensor of each running module
        #: modules whose forward adds its own input to a tensor of the same shape (x + f(x)):
        #: residual units, whatever the layout of their tensors (`Architecture.residual`)
        self.residual: set[str] = set()
        self.shuffles = 0  # channel shuffles followed (`Architecture.shuffles`)
        self.pieces: list[Layout] = []  # what splits along the channels cut (`Architecture.pieces`)
        self.order: dict[str, int] = {}  # module name → when the forward first reached it
        self.sizes: dict[str, tuple[int, ...]] = {}  # conv name → its input's spatial shape

    def get(self, t: Any) -> Layout | None:
        return self._known.get(t) if isinstance(t, torch.Tensor) else None

    def set(self, t: Any, layout: Layout | None) -> None:
        if not isinstance(t, torch.Tensor):
            return
        if layout is not None and t.ndim >= 2 and sum(b - a for _, a, b, _ in layout) == t.shape[1]:
            self._known[t] = layout
        elif t in self._known:
            del self._known[t]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        try:
            self._follow(func, args, kwargs, out)
        except Exception:  # bookkeeping only: never break the user's forward
            pass
        return out

    def _follow(self, func, args, kwargs, out) -> None:
        name = getattr(func, "__name__", "")
        first = args[0] if args else None
        if name in ("cat", "concat", "concatenate"):
            parts = list(first) if isinstance(first, (list, tuple)) else []
            dim = args[1] if len(args) > 1 else kwargs.get("dim", kwargs.get("axis", 0))
            if parts and isinstance(out, torch.Tensor) and out.ndim >= 2 and dim % out.ndim == 1:
                layouts = [self.get(t) for t in parts]
                if all(l is not None for l in layouts):
                    self.set(out, tuple(seg for l in layouts for seg in l))
                return
        if self.follow_shuffles and self._shuffle(name, first, args, kwargs, out):
            return
        if name in _REORDERS or (
                name in _RESHAPES and isinstance(first, torch.Tensor)
                and isinstance(out, torch.Tensor) and out.shape[:2] != first.shape[:2]):
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                self.set(t, None)
            return
        if (name in _ADDS and len(args) > 1 and self.inputs and self.inputs[-1] is not None
                and any(t is self.inputs[-1] for t in args[:2])
                and all(isinstance(t, torch.Tensor) for t in args[:2])
                and first.shape == args[1].shape):
            self.residual.add(self.running[-1])
        if name in _SUMS and len(args) > 1:
            a, b = self.get(first), self.get(args[1])
            if (a is not None and b is not None and len(a) == len(b) == 1 and a[0][0] != b[0][0]
                    and a[0][0] and b[0][0] and a[0][1:] == b[0][1:]):
                self.coupled.add(tuple(sorted((a[0][0], b[0][0]))))  # a sum, a gate's product
            if a is not None and b is not None and name in _ADDS and len(a) == len(b) == 1:
                if self.running:
                    self.summed.add((self.running[-1],) + tuple(sorted((a[0][0], b[0][0]))))
                if isinstance(out, torch.Tensor) and a != b:
                    # a residual sum's channels are its stream's: the earlier of the two
                    # (f(x) + x is x's, whatever the order of the terms), so a block a deeper
                    # target inserts does not look like a new source of channels
                    self.set(out, min((a, b), key=lambda lay: self.order.get(lay[0][0], -1)))
                    return
            if (a is not None and b is not None and a != b and max(len(a), len(b)) > 1
                    and (a, b) not in self.mixed_sums and (b, a) not in self.mixed_sums):
                self.mixed_sums.append((a, b) if len(a) > 1 else (b, a))
            if name in _PRODUCTS and isinstance(out, torch.Tensor) and (a is not None
                                                                        or b is not None):
                # x * gate(x): the feature map's channels, not the (N, C, 1, 1) gate's; none
                # when the feature map's own are not known
                big = first if not isinstance(args[1], torch.Tensor) or (
                    isinstance(first, torch.Tensor) and first.numel() >= args[1].numel()) \
                    else args[1]
                self.set(out, self.get(big))
                return
        if (name in _SPLITS and isinstance(out, (tuple, list)) and len(out) > 1
                and isinstance(first, torch.Tensor) and first in self.tokens):
            dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
            if dim % first.ndim == first.ndim - 1 and len({t.shape[-1] for t in out}) == 1:
                self.packed.setdefault(self.tokens[first], len(out))
        if (name in ("flatten", "reshape", "view") and isinstance(first, torch.Tensor)
                and isinstance(out, torch.Tensor) and first.ndim >= 4 and out.ndim < first.ndim
                and first.shape[-1] >= 8 and self.get(first) is None):
            merged = first.ndim - out.ndim + 1  # trailing dims folded into the last one
            k = out.shape[-1] // first.shape[-1]
            # neighbours along 2 or more small axes (2×2), not heads (N, L, heads, D / heads)
            if (merged >= 3 and out.shape[:-1] == first.shape[:-merged] and 2 <= k <= 16
                    and all(d <= 4 for d in first.shape[-merged:-1])
                    and math.prod(first.shape[-merged:]) == out.shape[-1]):
                self.folds[out] = k
        if (isinstance(first, torch.Tensor) and first in self.folds
                and isinstance(out, torch.Tensor) and out.shape == first.shape
                and name not in _REORDERS and name not in ("linear", "bilinear")):
            self.folds[out] = self.folds[first]  # a norm or activation keeps the fold
        if (name in ("reshape", "view") and isinstance(first, torch.Tensor)
                and first in self.tokens and isinstance(out, torch.Tensor)
                and out.ndim >= first.ndim + 2 and out.shape[:first.ndim - 1] == first.shape[:-1]
                and out.shape[first.ndim - 1] in (2, 3)):
            # (N, L, k·D) → (N, L, k, heads, D / heads): keys and values (or q, k, v) packed
            # in one projection's output, each then split into heads
            self.packed.setdefault(self.tokens[first], out.shape[first.ndim - 1])
        if isinstance(first, torch.Tensor) and self.get(first) is not None and first.ndim >= 2:
            layout = self.get(first)
            if name in _SPLITS and isinstance(out, (tuple, list)):
                dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
                if dim % first.ndim == 1:
                    pos = 0
                    for t in out:
                        piece = _cut(layout, pos, pos + t.shape[1])
                        self.set(t, piece)
                        if len(out) > 1 and piece not in self.pieces:
                            self.pieces.append(piece)
                        pos += t.shape[1]
                    return
            if name == "narrow":
                dim, start, length = (list(args[1:4]) + [None] * 3)[:3]
                if dim is not None and dim % first.ndim == 1:
                    self.set(out, _cut(layout, int(start), int(start) + int(length)))
                    return
            if name == "__getitem__" and isinstance(args[1], tuple) and len(args[1]) >= 2:
                head, chans = args[1][0], args[1][1]
                if head == slice(None) and chans is not Ellipsis and chans != slice(None):
                    if isinstance(chans, slice) and chans.step in (None, 1):
                        start, stop, _ = chans.indices(first.shape[1])
                        self.set(out, _cut(layout, start, stop))
                    else:  # channels picked by index: not followed
                        self.set(out, None)
                    return
        if isinstance(out, torch.Tensor) and out.ndim >= 2 and self.get(out) is None:
            for t in args:
                if (isinstance(t, torch.Tensor) and t.ndim >= 2 and t.shape[1] == out.shape[1]
                        and self.get(t) is not None):
                    self.set(out, self.get(t))
                    break

    def _shuffle(self, name: str, first: Any, args: tuple, kwargs: dict, out: Any) -> bool:
        """Follow a channel shuffle, as one op or as ShuffleNet writes it (view the channels
        as (groups, per group), swap the two, view them back as channels); True when `out`
        was one of its steps."""
        if not (isinstance(first, torch.Tensor) and isinstance(out, torch.Tensor)):
            return False
        if name in ("channel_shuffle", "native_channel_shuffle"):
            groups = args[1] if len(args) > 1 else kwargs.get("groups")
            layout = self.get(first)
            if layout is None or not isinstance(groups, int):
                return False
            self.set(out, shuffled(layout, groups))
            self.shuffles += 1
            return True
        grouped = self._grouped.get(first)
        if name in _RESHAPES and grouped is None:
            layout = self.get(first)
            if (layout is not None and out.ndim == first.ndim + 1
                    and out.shape[0] == first.shape[0] and out.shape[3:] == first.shape[2:]
                    and out.shape[1] * out.shape[2] == first.shape[1]
                    and out.shape[1] > 1 and out.shape[2] > 1):  # not a unit dim added
                self._grouped[out] = (layout, out.shape[1], False)
                return True
            return False
        if grouped is None:
            return False
        layout, groups, swapped = grouped
        if name in ("transpose", "transpose_", "swapaxes", "swapdims") and not swapped:
            dims = sorted(int(d) % first.ndim for d in (list(args[1:3]) or
                                                         [kwargs.get("dim0"), kwargs.get("dim1")]))
            if dims == [1, 2]:
                self._grouped[out] = (layout, groups, True)
                return True
        elif name in ("contiguous", "clone") and out.shape == first.shape:
            self._grouped[out] = grouped
            return True
        elif (name in _RESHAPES and out.ndim == first.ndim - 1
              and out.shape[1] == first.shape[1] * first.shape[2]):
            self.set(out, shuffled(layout, groups) if swapped else layout)
            self.shuffles += swapped
            return True
        return False


def _channel_mixing(module: nn.Module) -> bool:
    """A layer whose outputs are new channels (not one per input channel, as a norm's)."""
    kind = layer_kind(module)
    if kind == "conv":
        return not (module.groups > 1 and module.groups == module.in_channels
                    == module.out_channels)
    return kind in ("linear", "conv_transpose") or isinstance(module, nn.Bilinear)


def _on_last_dim(module: nn.Module) -> bool:
    """A layer mixing the last dimension of its input (a linear, an ``nn.Bilinear``, whose
    weight (out, in1, in2) is traced as a generic parametric layer's)."""
    return layer_kind(module) == "linear" or isinstance(module, nn.Bilinear)


def _execution_order(model: nn.Module, example: Any, hint: str, shuffles: bool = True
                     ) -> tuple[dict[str, int], str | None, list[str], _ChannelSources]:
    """Names of modules in the order the forward pass first reaches them, which module reads
    the model input, which one produces the output, and where the channels each layer reads
    come from (`_ChannelSources`)."""
    order: dict[str, int] = {}
    sources = _ChannelSources(shuffles)
    sources.order = order
    outputs: dict[str, torch.Tensor] = {}  # references, so that no pointer is reused meanwhile
    input_reader: list[str] = []
    inp = first_tensor(example)
    inp_ptr = inp.data_ptr() if inp is not None else None
    handles = []

    with_tensors: list[str] = []  # modules holding tensors, in the order they ran

    def pre_hook(name):
        def hook(module, args):
            if name not in order:
                order[name] = len(order)
                if own_tensors(module):
                    with_tensors.append(name)
            sources.running.append(name)
            first = first_tensor(args)
            sources.inputs.append(first)
            if name not in sources.read and sources.get(first) is not None and own_tensors(module) \
                    and not isinstance(module, nn.Bilinear):  # (two inputs: no one layout)
                sources.read[name] = sources.get(first)
            if isinstance(first, torch.Tensor) and first in sources.folds and own_tensors(module):
                sources.folded.setdefault(name, sources.folds[first])
            if name not in sources.sizes and isinstance(first, torch.Tensor) \
                    and layer_kind(module) in ("conv", "conv_transpose") \
                    and first.ndim > len(module.kernel_size):
                sources.sizes[name] = tuple(first.shape[first.ndim - len(module.kernel_size):])
            if inp_ptr is not None and first is not None and first.data_ptr() == inp_ptr \
                    and layer_kind(module) in DIMENSIONAL_KINDS and not input_reader:
                input_reader.append(name)
        return hook

    def post_hook(name):
        def hook(module, args, out):
            t = first_tensor(out)
            if t is not None:
                outputs[name] = t
                if _channel_mixing(module) and (t.ndim == 2 or not _on_last_dim(module)):
                    # new channels start here (a linear's on (N, C) features only: on tokens
                    # (N, L, D), dim 1 is not channels)
                    sources.set(t, ((name, 0, t.shape[1], t.shape[1]),))
                elif layer_kind(module) == "linear" and t.ndim >= 3:
                    sources.tokens[t] = name
        return hook

    def leave(module, args, out):
        if sources.running:
            sources.running.pop()
            sources.inputs.pop()

    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(pre_hook(name)))
        if own_tensors(module) and (layer_kind(module) in DIMENSIONAL_KINDS
                                    or isinstance(module, nn.Bilinear)):
            handles.append(module.register_forward_hook(post_hook(name)))
        handles.append(module.register_forward_hook(leave, always_call=True))
    try:
        if inp is not None and inp.ndim >= 2 and inp.is_floating_point():  # not token ids
            sources.set(inp, (("", 0, inp.shape[1], inp.shape[1]),))
        # every submodule's own flag comes back (a frozen norm stays in eval)
        with keep_modes(model), torch.no_grad(), single_thread(), sources:
            model.eval()
            out = run_model(model, example)
    except Exception as exc:  # any failure inside the user's forward
        shape = tuple(inp.shape) if inp is not None else None
        dims = _input_dims(model)
        rank = (f" Its first convolution reads inputs of {dims} dimensions ({_DIM_NAMES[dims]}, "
                f"besides the batch); this one has {inp.ndim - 1}."
                if dims and inp is not None and inp.ndim - 1 != dims else "")
        flag = "--source-in-chans" if "source_input" in hint else "--in-chans"
        chans = (f" If the model is meant to read these channels, build it for them (timm: "
                 f"in_chans=; CLI: {flag})." if "channels" in str(exc) and not rank else "")
        raise ModelForwardError(
            f"{type(model).__name__} failed on the example input of shape {shape}: "
            f"{type(exc).__name__}: {first_line(exc).rstrip('.')}.{rank} Pass an input the "
            f"model accepts with {hint}.{chans}") from exc
    finally:
        for h in handles:
            h.remove()
    # a model with several outputs (a tuple or dict: an auxiliary head, box and class heads)
    # has several heads, whose units mean classes or coordinates; an output that another
    # layer also reads (features returned alongside the logits) is not a head
    read = {seg[0] for layout in sources.read.values() for seg in layout}
    outs = _tensors_of(out)
    producers: list[str] = []
    for t_out in outs if len(outs) > 1 else []:
        made = [name for name, t in outputs.items() if t.data_ptr() == t_out.data_ptr()]
        lay = sources.get(t_out)
        if not made and lay and len(lay) == 1 and lay[0][0] and lay[0][2] - lay[0][1] == lay[0][3]:
            made = [lay[0][0]]  # a layer's whole output through elementwise ops (a sigmoid)
        producers += [name for name in made if name not in producers and name not in read][-1:]
    out_t = outs[0] if outs else None
    if not producers and out_t is not None:
        ptr = out_t.data_ptr()
        producers = [name for name, t in outputs.items() if t.data_ptr() == ptr][-1:]
        if not producers and out_t.ndim:
            # the output is computed from the head(s) (averaged, scaled ...): take the last
            # layers that produce as many features as the model outputs, in tensors of the
            # output's rank — a backbone's (``num_classes=0``) pooled feature maps are
            # features, and its last layers no classifier
            def width(t: torch.Tensor) -> int:
                return t.shape[-1] if t.ndim <= 2 else t.shape[1]
            for name, t in reversed(outputs.items()):
                if not t.ndim or width(t) != width(out_t):
                    break
                if t.ndim != out_t.ndim:
                    # pooled into the output: a head only if no layer with tensors ran after
                    # it (SqueezeNet's 1×1 conv classifier); a body cut before its pooling
                    # ends in a norm, after its last conv
                    if not producers and with_tensors and with_tensors[-1] == name:
                        producers.append(name)
                    break
                producers.append(name)
    return order, (input_reader[0] if input_reader else None), producers, sources


def _describe(name: str, module: nn.Module, tensors: dict[str, torch.Tensor]) -> Layer:
    kind = layer_kind(module)
    params = tuple(n for n, _ in module.named_parameters(recurse=False))
    layer = Layer(name=name, kind=kind, type=type(module).__name__,
                  shapes={k: tuple(v.shape) for k, v in tensors.items()},
                  param_names=tuple(p for p in params if p in tensors), module=module)
    if kind in ("conv", "conv_transpose"):
        layer.groups = module.groups
        layer.kernel = tuple(module.kernel_size)
        layer.stride = tuple(module.stride)
        layer.in_dim, layer.out_dim = module.in_channels, module.out_channels
    elif kind == "linear":
        layer.in_dim, layer.out_dim = module.in_features, module.out_features
    elif kind == "embedding":
        layer.in_dim, layer.out_dim = module.num_embeddings, module.embedding_dim
    elif kind == "attention":
        layer.in_dim = layer.out_dim = module.embed_dim
    elif isinstance(module, nn.Bilinear):  # (its second input: in2_features)
        layer.in_dim, layer.out_dim = module.in1_features, module.out_features
    elif "weight" in layer.shapes and layer.shapes["weight"]:
        layer.in_dim = layer.out_dim = layer.shapes["weight"][0]
    if kind == "param":
        layer.gate = _is_gate([tensors[n] for n in layer.param_names])
    elif (kind in NORM_KINDS or kind == "norm") and "weight" in layer.param_names:
        layer.gate = _is_shut_norm(tensors["weight"])
    return layer


#: largest value a per-channel scale may hold and still count as a closed gate
GATE_MAX = 1e-3


@torch.no_grad()
def _is_gate(params: list[torch.Tensor]) -> bool:
    """1-D floating parameters, all tiny but not all zero (layer scales at their init)."""
    if not params or any(p.ndim != 1 or not p.numel() or not p.is_floating_point() or p.is_meta
                         for p in params):
        return False
    peak = max(float(p.abs().max()) for p in params)
    return 0.0 < peak <= GATE_MAX


@torch.no_grad()
def _is_shut_norm(weight: torch.Tensor) -> bool:
    """A norm's scale that is exactly zero everywhere (a residual branch's last norm at init)."""
    return (weight.ndim == 1 and weight.numel() > 0 and weight.is_floating_point()
            and not weight.is_meta and not bool(weight.any()))


#: what to do instead, per action, with a quantized model: the same work on the float model
_FLOAT_FIRST = {"graft": "graft the float model, then quantize it",
                "align": "align the float model, then quantize it",
                "autoinit": "initialise the float model (netgraft.autoinit), then quantize it"}
_WRITTEN_ON_GRID = ("so weights written into it would be rounded and clipped on the grid fitted "
                    "for the weights it held")
#: why a quantized reference module cannot take part, and what to do, per (action, whether
#: it is the source)
_REFERENCE_WHY = {
    ("graft", True): ("so its float weight is not the one it computes with: a graft of it "
                      "would not carry its function", _FLOAT_FIRST["graft"]),
    ("graft", False): (_WRITTEN_ON_GRID, _FLOAT_FIRST["graft"]),
    ("align", True): ("so the features it would be aligned to carry the rounding of that grid",
                      "align the target to the float model it was quantized from, then "
                      "quantize the target"),
    ("align", False): ("so align's training steps on its float weight would be rounded and "
                       "clipped on the grid fitted for the weights it held",
                       _FLOAT_FIRST["align"]),
    ("autoinit", False): (_WRITTEN_ON_GRID, _FLOAT_FIRST["autoinit"]),
}


def check_traceable(model: nn.Module, role: str = "model", *, values: bool = False,
                    action: str = "graft") -> None:
    """Raise UnsupportedModelError, saying what to do, for a model netgraft cannot trace: a
    TorchScript module (it runs no forward hooks), a lazy module not yet run, a quantized
    module (packed integer weights); with `values` (a transfer reads and writes them), also a
    quantized reference module (float weights it computes with rounded on a fixed grid), a
    tensor created under inference mode (read-only; not for a source) or on the meta
    device. `action` ("graft", "align", "autoinit") is what the caller does with them, for the
    message."""
    for mod_name, module in model.named_modules():
        reference = type(module).__module__.startswith("torch.ao.nn.quantized.reference")
        if reference and values:
            # float weights, but its forward computes with them quantized and dequantized on
            # the grid of its weight_scale / weight_zero_point buffers, fixed for the weights
            # it held (its state dict also holds the quantization scheme and dtype)
            why, todo = _REFERENCE_WHY[action, role == "source"]
            raise UnsupportedModelError(
                f"the {role} holds a quantized reference module at "
                f"'{mod_name or '(the model)'}' ({type(module).__name__}), whose forward rounds "
                f"its weight to the fixed grid of its weight_scale and weight_zero_point, {why}: "
                f"{todo}")
        if not reference and type(module).__module__.startswith((
                "torch.ao.nn.quantized", "torch.nn.quantized", "torch.ao.nn.intrinsic.quantized")):
            raise UnsupportedModelError(
                f"the {role} holds a quantized module at '{mod_name or '(the model)'}' "
                f"({type(module).__name__}), whose packed integer weights cannot be read or "
                f"written as tensors: {_FLOAT_FIRST[action]}")
        if isinstance(module, torch.jit.ScriptModule):
            where = f" holds a TorchScript module at '{mod_name}'" if mod_name else \
                " is a TorchScript module"
            raise UnsupportedModelError(
                f"the {role}{where} ({type(module).__name__}), which runs no forward hooks, so "
                f"its layers cannot be traced: pass the eager nn.Module (script it after "
                f"grafting)")
        for p_name, p in [*module.named_parameters(recurse=False),
                          *module.named_buffers(recurse=False)]:
            if isinstance(p, (nn.parameter.UninitializedParameter,
                              nn.parameter.UninitializedBuffer)):
                raise UnsupportedModelError(
                    f"the {role} is a lazy module with uninitialised parameters: run one "
                    f"forward pass first", layer=f"{mod_name}.{p_name}".strip("."))
    if values:
        # written in place (by a transfer, autoinit, align): outside inference mode, its
        # tensors cannot be; a source is only read
        frozen = next((n for n, t in [*model.named_parameters(), *model.named_buffers()]
                       if t.is_inference()), None) \
            if role != "source" and not torch.is_inference_mode_enabled() else None
        if frozen is not None:
            raise UnsupportedModelError(
                f"the {role}'s tensors were created under torch.inference_mode(), which makes "
                f"them read-only: build the model outside inference_mode (or load its weights "
                f"into one built outside it)", layer=frozen)
        meta = next((n for n, t in [*model.named_parameters(), *model.named_buffers()]
                     if t.is_meta), None)
        if meta is not None:
            raise UnsupportedModelError(
                f"the {role}'s tensors are on the meta device (shapes without values): create "
                f"it on a real device, or call .to_empty(device='cpu') and load its weights, "
                f"before grafting", layer=meta)


def float_param(model: nn.Module) -> torch.Tensor | None:
    """The model's first floating-point parameter (the device and dtype it computes in), or
    None."""
    return next((p for p in model.parameters() if p.is_floating_point()), None)


def uncompiled(model: Any) -> Any:
    """The module a ``torch.compile``d one wraps (it holds the same parameters): traced and
    grafted eagerly, without dynamo tracing netgraft's own hooks."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(model, nn.Module) and isinstance(inner, nn.Module) else model


def trace(model: nn.Module, example_input: Any = None, *, name: str | None = None,
          input_hint: str = "example_input= (CLI: --input-size C,H,W)",
          shuffles: bool = True) -> Architecture:
    """Trace `model` into its parametric layers (in execution order) and blocks.

    `example_input` is a tensor (or a tuple/dict of arguments) the model accepts; when omitted
    it is inferred from timm's config or from the first layer; its floating tensors are cast to
    the dtype the model computes in (only shapes are read: one float32 input serves a float64
    target and its float32 source alike). `shuffles=False`: a channel
    shuffle's output has no layout (as after any other reordering) instead of the shuffled
    one (`shuffled`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"trace() expects a torch.nn.Module, got {type(model).__name__}")
    model = uncompiled(model)
    check_traceable(model)
    if reparametrized(model):  # computed weights (weight norm ...): trace them as plain tensors
        model = plain_copy(model)
    example_input = _in_dtype_of(model, as_input(example_input))
    if example_input is None:
        shape = default_input_shape(model, input_hint)
        param = float_param(model)
        with torch.random.fork_rng(devices=[]):  # the caller's random stream is not drawn from
            example_input = torch.randn(*shape,
                                        device=param.device if param is not None else "cpu",
                                        dtype=param.dtype if param is not None else torch.float32)
    inp = first_tensor(example_input)
    order, input_layer, output_layers, sources = _execution_order(model, example_input,
                                                                  input_hint, shuffles)
    if getattr(model, "num_classes", None) == 0:
        output_layers = []  # a timm backbone (``num_classes=0``): its last layers make features

    modules = dict(model.named_modules())
    layers: list[Layer] = []
    for mod_name, module in modules.items():
        tensors = own_tensors(module)
        if tensors:
            layers.append(_describe(mod_name, module, tensors))
            parent = modules.get(mod_name.rpartition(".")[0])
            layers[-1].query = (layers[-1].kind == "linear"
                                and mod_name.rpartition(".")[2] in ("q", "q_proj")
                                and isinstance(getattr(parent, "num_heads", None), int))
    if not layers:
        raise UnsupportedModelError(f"{type(model).__name__} has no parameters to transfer")

    # Modules the forward never calls directly (e.g. MultiheadAttention's out_proj) sit right
    # after their nearest executed ancestor; truly unused ones go last in registration order.
    def position(layer_name: str) -> float:
        probe = layer_name
        while probe not in order:
            if not probe:
                return math.inf
            probe = probe.rpartition(".")[0]
        return order[probe] + (0.0 if probe == layer_name else 0.5)

    registration = {layer.name: i for i, layer in enumerate(layers)}
    layers.sort(key=lambda l: (position(l.name), registration[l.name]))
    for i, layer in enumerate(layers):
        layer.index = i
        layer.executed = layer.name in order
        layer.in_size = sources.sizes.get(layer.name)
        layout = sources.read.get(layer.name)
        if layout is not None and sum(b - a for _, a, b, _ in layout) == layer.in_dim:
            layer.in_layout = layout
        if layer.name == input_layer:
            layer.role = "input"
        elif layer.name in output_layers and not (layer.kind in NORM_KINDS or layer.kind == "norm"):
            layer.role = "output"  # a classifier's units are classes; a norm's are features

    blocks = _unit_blocks(_blocks(model, layers), layers, sources.residual)
    cfg = getattr(model, "pretrained_cfg", None)
    arch_name = name or (cfg.get("architecture") if isinstance(cfg, dict) else None)
    return Architecture(name=arch_name or type(model).__name__, layers=layers, blocks=blocks,
                        input_shape=tuple(inp.shape) if inp is not None else None, model=model,
                        example_input=example_input, mixed_sums=sources.mixed_sums,
                        summed=frozenset(sources.summed), coupled=frozenset(sources.coupled),
                        residual=frozenset(sources.residual),
                        shuffles=sources.shuffles, pieces=sources.pieces,
                        packed=dict(sources.packed), folded=dict(sources.folded),
                        model_class=class_path(type(model)))


class _Own:
    """Tree node standing for the tensors a non-leaf module owns directly."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


def group_layers(model: nn.Module, layers: list[Layer],
                 root: nn.Module | None = None) -> list[Block]:
    """DPIAT's standardisation (`group_blocks`) of `layers` over the module tree of `root`
    (`model` by default, or one of its submodules: that module is then grouped as the top,
    never flattened into one block); blocks in execution order, holding `Layer.index`es."""
    by_name = {layer.name: layer for layer in layers}
    names = {m: n for n, m in model.named_modules()}
    has_layer: dict[str, bool] = {}
    for layer_name in by_name:  # mark every ancestor of a layer
        probe = layer_name
        while True:
            has_layer[probe] = True
            if not probe:
                break
            probe = probe.rpartition(".")[0]

    def children(node: Any) -> list:
        if isinstance(node, _Own):
            return []
        name = names[node]
        kids: list = [_Own(name)] if name in by_name else []
        kids += [c for c in node.children() if has_layer.get(names[c], False)]
        return kids

    def is_leaf(node: Any) -> bool:
        if isinstance(node, _Own):
            return True
        name = names[node]
        return name in by_name and not any(has_layer.get(names[c], False) for c in node.children())

    def layer_of(node: Any) -> Layer:
        return by_name[node.name if isinstance(node, _Own) else names[node]]

    items = group_blocks(model if root is None else root, children, is_leaf,
                         lambda node: layer_of(node).kind in DIMENSIONAL_KINDS)
    blocks = []
    for item in items:
        members = sorted((layer_of(x) for x in (item if isinstance(item, list) else [item])),
                         key=lambda layer: layer.index)
        blocks.append(Block(name=_common_prefix([layer.name for layer in members]),
                            layers=[layer.index for layer in members]))
    return sorted(blocks, key=lambda b: b.layers[0])


def _blocks(model: nn.Module, layers: list[Layer]) -> list[Block]:
    blocks = group_layers(model, layers)
    for b, block in enumerate(blocks):
        for i in block.layers:
            layers[i].block = b
    return blocks


def _unit_blocks(blocks: list[Block], layers: list[Layer], units: frozenset[str] | set[str]
                 ) -> list[Block]:
    """One block per token-mixing residual unit (`_ChannelSources.residual`: a module adding
    its input back, with no convolution: a transformer block). DPIAT's standardisation cuts
    such a unit into sub-blocks when it has more sub-blocks than single layers (LeViT's
    attention and MLP), and flattens a module with more single layers than sub-blocks into
    one block (a Swin stage: its downsampling norm and linear, then blocks of norm,
    attention, norm, MLP); either way the block DP then paired pieces of units with pieces of
    others (a LeViT MLP filled from an attention, a Swin block's projection taken from
    another block's attention), with no kernel shape to anchor them. Here sub-blocks of one
    unit are merged, and a block holding a unit and more is cut at its edges (layers outside
    every unit, a downsampling, keep a block of their own per run). Convolutional units keep
    DPIAT's grouping: cut apart, a CSP network and a ResNet looked alike (similarity 0.07 →
    0.49) and the full graft between them was no better than random init."""
    inside = {u: [layer for layer in layers if layer.name == u or layer.name.startswith(u + ".")]
              for u in units}
    # a unit that is a single layer (ConvNeXt-V2's GRN adds its input back) is no block
    tokens = {u for u, held in inside.items() if len(held) > 1
              and not any(layer.kind in ("conv", "conv_transpose") for layer in held)}

    def unit(name: str) -> str | None:
        found = [u for u in tokens if name == u or name.startswith(u + ".")]
        return min(found, key=len) if found else None

    runs: list[tuple[str | None, list[int]]] = []
    for block in blocks:
        keys = [unit(layers[i].name) for i in block.layers]
        if len(set(keys)) == 1:  # one unit, a piece of one, or none
            pieces = [(keys[0], list(block.layers))]
        else:
            pieces = []
            for index, key in zip(block.layers, keys):
                if pieces and pieces[-1][0] == key:
                    pieces[-1][1].append(index)
                else:
                    pieces.append((key, [index]))
        for key, members in pieces:
            if key is not None and runs and runs[-1][0] == key:
                runs[-1][1].extend(members)  # the next piece of the same unit
            else:
                runs.append((key, members))
    out = [Block(name=_common_prefix([layers[i].name for i in members]), layers=members)
           for _, members in runs]
    if [b.layers for b in out] == [b.layers for b in blocks]:
        return blocks
    for b, block in enumerate(out):
        for i in block.layers:
            layers[i].block = b
    return out


def _common_prefix(names: Iterable[str]) -> str:
    parts = [n.split(".") for n in names]
    prefix = []
    for group in zip(*parts):
        if len(set(group)) != 1:
            break
        prefix.append(group[0])
    return ".".join(prefix)
