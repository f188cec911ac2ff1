"""Per-tensor shape transforms: how a source tensor becomes a target tensor of another shape.

Two families:

* ``clip`` — DPIAT's transform, kept exactly: per dimension, a larger source is centre-cropped,
  a smaller one copied into the centre of the target (the rest keeps its init).
* ``graft`` — the default: every dimension has a *role* and each role has its rule —
  channels (``out``) are replicated or evenly selected, summed-over channels (``in``) are
  additionally rescaled so activations keep their scale, kernel taps (``k``) are centre-cropped
  or zero-padded (a 3×3 kernel inside a 5×5 computes the same thing), the packed
  query/key/value projection (``qkv``) is resized one third at a time (head by head, queries
  rescaled, when the heads grow wider: `group_map`), the input channels of
  the first layer (``mix``) are mixed so that any number of input channels maps onto any other,
  token grids of position embeddings are resampled, and the kernels of patch embeddings (a
  conv whose stride is its kernel) are resized as FlexiViT does (``patches``): a q×q patch is
  embedded as the source embeds it resized to p×p (timm's pseudo-inverse
  `resample_patch_embed`), instead of a crop that would keep only the kernel's centre;
  a window attention's relative-position bias table (Swin: one row per offset in a
  (2W−1)×(2W−1) grid, one column per head) keeps the bias of every offset both windows hold
  when the window size differs, not cut or tiled as if its rows were channels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..trace import Layer, Layout
from .mapping import (centre_slices, channel_index, consecutive_index, fan_in_scale,
                      group_channel_index, packs_groups, query_scale,
                      importance_index, mixing_matrix, replica_jitter)


@dataclass
class TensorRecord:
    """What happened to one target tensor."""

    name: str
    shape: tuple[int, ...]
    source_shape: tuple[int, ...] | None
    action: str  # "copied" | "adapted" | "init"
    how: str = ""
    filled: int = 0  # elements whose value came from the source
    numel: int = 0
    parameter: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape),
                "source_shape": list(self.source_shape) if self.source_shape else None,
                "action": self.action, "how": self.how, "filled": self.filled,
                "numel": self.numel, "parameter": self.parameter}


def init_record(layer: Layer, name: str, reason: str) -> TensorRecord:
    shape = layer.shapes[name]
    return TensorRecord(name=name, shape=shape, source_shape=None, action="init", how=reason,
                        numel=math.prod(shape), parameter=name in layer.param_names)


# ----------------------------------------------------------------------------- clip (DPIAT)
def clip(source: torch.Tensor, target: torch.Tensor) -> int:
    """DPIAT's clip transfer, in place into `target`; returns how many elements were written."""
    src_idx, tgt_idx = [], []
    for a, b in zip(source.shape, target.shape):
        s, t = centre_slices(a, b)
        src_idx.append(s)
        tgt_idx.append(t)
    region = source[tuple(src_idx)]
    target[tuple(tgt_idx)] = region.to(device=target.device, dtype=target.dtype)
    return region.numel()


# ----------------------------------------------------------------------------- graft
def _is_qkv(layer: Layer) -> bool:
    return layer.kind == "linear" and layer.name.rsplit(".", 1)[-1] in ("qkv", "in_proj", "c_attn")


#: gates stacked along the first dimension of a recurrent layer's weights and biases (a plain
#: RNN's one: its hidden units, read back through weight_hh, whose fan-in is rescaled alike)
_GATES = {"LSTM": 4, "GRU": 3, "LSTMCell": 4, "GRUCell": 3, "RNN": 1, "RNNCell": 1}


#: an ``nn.MultiheadAttention``'s own projections when keys or values are of another width
_SEPARATE_PROJECTIONS = ("q_proj_weight", "k_proj_weight", "v_proj_weight")


def gate_count(layer: Layer) -> int:
    """How many gates a recurrent layer stacks in its tensors (0: not a recurrent layer)."""
    return _GATES.get(type(layer.module).__name__, 0) if layer.module is not None else 0


def bilinear(layer: Layer) -> bool:
    """An ``nn.Bilinear`` (weight (out, in1, in2)): traced as a generic parametric layer."""
    return isinstance(layer.module, nn.Bilinear) if layer.module is not None \
        else layer.type == "Bilinear"


def roles(layer: Layer, name: str, ndim: int) -> tuple[str, ...]:
    """The role of each dimension of tensor `name` of `layer`."""
    kind = layer.kind
    gates = gate_count(layer)
    if gates and name.startswith(("weight_", "bias_")) and not name.startswith("weight_hr"):
        # (G·H, in) / (G·H,): resized gate by gate, the fan-in (input or hidden) summed over
        return (f"gates{gates}" if gates > 1 else "out", "in")[:ndim]
    if gates and name.startswith("weight_hr"):  # (proj, hidden): the hidden units are its fan-in
        return ("out", "in")
    if (kind == "attention" and name.startswith("in_proj")) or _is_qkv(layer):
        return ("qkv", "in")[:ndim]
    if kind == "attention" and name in _SEPARATE_PROJECTIONS:  # kdim / vdim ≠ embed_dim
        return ("q" if name == "q_proj_weight" else "out", "in")[:ndim]
    if kind == "linear" and name in ("weight", "bias") and layer.query:
        # an attention's own query projection (timm's attention pooling, unfused q/k/v):
        # scaled as a packed projection's queries when its heads grow wider
        return ("q", "in")[:ndim]
    if kind == "embedding" and name == "weight":
        return ("rows", "out")
    if name == "weight" and ndim == 3 and bilinear(layer):
        # (out, in1, in2): y_k = x1ᵀ W_k x2 + b_k sums over both inputs' channels, each fan-in
        # rescaled on its own (the replicas of x1's unit i and of x2's unit j share W_kij)
        return ("out", "in", "in")
    if name == "weight" and kind in ("conv", "linear"):
        return ("out", "in")[:ndim] + ("k",) * max(ndim - 2, 0)
    if name == "weight" and kind == "conv_transpose":
        return ("in", "out") + ("k",) * (ndim - 2)
    return ("out",) * ndim


@dataclass
class _Plan:
    notes: list[str] = field(default_factory=list)
    fraction: float = 1.0  # share of target elements that came from the source
    split_noise: float = 0.0  # jitter of replicated fan-ins (see mapping.replica_jitter)
    generator: torch.Generator | None = None


Selector = Callable[[int, int], "torch.Tensor | None"]
#: how a note says that a selection policy chose the kept units (``"out 96→48 selected by
#: norm scale"``); the transfer report counts such layers by it
SELECTED_BY = "selected by"
#: how a grouped conv's note says that whole source groups were packed into wider target
#: groups (`pack_grouped`); the transfer report tells a packed regrouping from a lossy one by it
PACKED = "whole source groups packed"
#: how a note says that the channels a layer reads from a target layer with no source weigh
#: nothing (`_index_dim`); the transfer report finds such grafts by it
ZERO_WEIGHTED = "without a source zero-weighted"


def unit_index(s: int, size: int, select: Selector | None = None,
               channel_map: Selector | None = None) -> tuple[torch.Tensor, str]:
    """Which of `s` source units fills each of `size` target units, and by which rule:
    ``"selected"`` (`select`, for a narrower dimension), ``"group"`` (`channel_map`, group by
    group), ``"consecutive"`` (`channel_map`, each unit's replicas side by side: a model with
    channel shuffles) or ``"plain"`` (`channel_index`). Every channel dimension of every
    tensor goes through it, so connected layers agree."""
    if s == size:
        return torch.arange(size), "plain"
    index = select(s, size) if select is not None and size < s else None
    if index is not None:
        return index, "selected"
    index = channel_map(s, size) if channel_map is not None else None
    if index is not None:
        grouped = (s, size) in getattr(channel_map, "groups", {(s, size): None})
        return index, "group" if grouped else "consecutive"
    return channel_index(s, size), "plain"


def concat_index(source: Layout, target: Layout, producers: dict[str, str],
                 select: Selector | None = None,
                 channel_map: Selector | None = None,
                 out_maps: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """For each channel a target layer reads from a concatenation, the position of the same
    channel in what its source layer reads, or -1 for channels with no source (those of a
    target layer the source lacks).

    `source`/`target` are the layers' ``in_layout`` segments; `producers` maps a target layer's
    name to its matched source layer's. A segment's channels are those of its producer's output,
    which was resized by `unit_index` (so target channel j of the producer is source channel
    index[j]), or by ``out_maps[producer]`` when given there; the k-th segment of one
    producer pairs with the k-th in the source."""
    segments: dict[str, list[tuple[int, int, int]]] = {}  # producer → (position, start, stop)
    widths: dict[str, int] = {}
    pos = 0
    for producer, a, b, width in source:
        widths[producer] = width
        segments.setdefault(producer, []).append((pos, a, b))
        pos += b - a
    counts: dict[str, int] = {}
    for producer, *_ in target:
        counts[producer] = counts.get(producer, 0) + 1
    seen: dict[str, int] = {}
    out: list[int] = []
    for producer, a, b, width in target:
        k = seen.get(producer, 0)
        seen[producer] = k + 1
        mate = producers.get(producer)
        if mate not in widths:
            out += [-1] * (b - a)
            continue
        index = (out_maps or {}).get(producer)
        if index is None or len(index) != width:
            index, _ = unit_index(widths[mate], width, select, channel_map)
        # as many segments on both sides: the k-th with the k-th; else wherever it is
        own = segments[mate]
        candidates = [own[k]] if len(own) == counts[producer] else own
        for j in range(a, b):
            c = int(index[j])
            out.append(next((p + c - lo for p, lo, hi in candidates if lo <= c < hi), -1))
    return torch.tensor(out, dtype=torch.long)


def _index_dim(x: torch.Tensor, dim: int, index: torch.Tensor, role: str, plan: _Plan,
               base: torch.Tensor | None, how: str = "") -> torch.Tensor:
    """Resize a dimension that holds the channels a layer reads from a concatenation, by an
    explicit `index` (`concat_index`; -1: a channel with no source). ``in`` (summed over):
    replicas share their unit's weight (Net2Net), channels with no source get weight 0, so the
    layer computes what its source computed; ``ch`` (per channel, e.g. a norm's scale): the
    source's values, the target's own (`base`) where there is no source."""
    s, size = x.shape[dim], len(index)
    mapped = index >= 0
    safe = index.clamp(min=0).to(x.device)
    out = x.index_select(dim, safe)
    view = [1] * x.ndim
    view[dim] = size
    new = int((~mapped).sum())
    # a norm's channels are "out" in every other note
    note = f"{'out' if role == 'ch' else role} {s}→{size} " + (how or "by concatenated segments")
    if role == "in":
        # the usual fan-in rule on the channels with a source, weight 0 on the others
        kept = index[mapped]
        distinct = int(kept.unique().numel())
        scale = torch.zeros(size, dtype=torch.float64)
        scale[mapped] = fan_in_scale(s, len(kept), kept)
        out = out * scale.to(dtype=x.dtype, device=x.device).view(view)
        if new:
            note += f", {new} channels {ZERO_WEIGHTED}"
        if size - new > distinct and plan.split_noise > 0:  # replicas: break their symmetry
            spare = torch.where(mapped, index, torch.full_like(index, s))
            jitter = replica_jitter(spare, s + 1, tuple(out.shape), dim, plan.split_noise,
                                    plan.generator)
            out = out * jitter.to(dtype=out.dtype, device=out.device)
            note += f", split jittered ±{plan.split_noise:g}"
    elif new:
        if base is not None and tuple(base.shape) == tuple(out.shape):
            keep = mapped.to(x.device).view(view)
            out = torch.where(keep, out, base.detach().to(out.dtype).to(out.device))
        note += f", {new} channels without a source kept at init"
    plan.fraction *= 1.0 - new / size
    plan.notes.append(note)
    return out


def _resize_dim(x: torch.Tensor, dim: int, size: int, role: str, plan: _Plan,
                mix: bool, select: Selector | None = None,
                channel_map: Selector | None = None) -> torch.Tensor:
    s = x.shape[dim]
    if s == size:
        return x
    if role == "k":
        src, tgt = centre_slices(s, size)
        if s > size:
            plan.notes.append(f"kernel {s}→{size} centre crop")
            return x.narrow(dim, src.start, size)
        shape = list(x.shape)
        shape[dim] = size
        out = x.new_zeros(shape)
        out.narrow(dim, tgt.start, s).copy_(x)
        plan.notes.append(f"kernel {s}→{size} zero-padded")
        plan.fraction *= s / size
        return out
    if role == "in" and mix:
        m = mixing_matrix(s, size).to(device=x.device, dtype=x.dtype)
        plan.notes.append(f"input channels {s}→{size} mixed")
        return torch.movedim(torch.tensordot(x, m, dims=([dim], [1])), -1, dim)
    if role == "q":  # the queries of an attention projecting them on their own
        out = _resize_dim(x, dim, size, "out", plan, mix, select, channel_map)
        return _scale_queries(out, dim, s, channel_map, plan)
    stacked = 3 if role == "qkv" else int(role[5:]) if role.startswith("gates") else 0
    if stacked and s % stacked == 0 and size % stacked == 0:
        n = stacked
        parts = [_resize_dim(p, dim, size // n, "out", _Plan(), False, select, channel_map)
                 for p in x.chunk(n, dim)]
        plan.notes.append(f"q/k/v {s // n}→{size // n} each" if role == "qkv" else
                          f"{n} gates {s // n}→{size // n} each")
        if role == "qkv":
            parts[0] = _scale_queries(parts[0], dim, s // n, channel_map, plan)
        return torch.cat(parts, dim)
    # a selection by channel space (`spaces`) ranks a layer's inputs in the space it reads
    chosen = select.for_role(role) if hasattr(select, "for_role") else select
    index, how = unit_index(s, size, chosen, channel_map)
    if how == "selected":  # a selection policy: the kept units as they are, no rescaling
        out = x.index_select(dim, index.to(x.device))
        label = (select.label_for(s, size) if hasattr(select, "label_for")
                 else getattr(select, "label", "policy"))
        plan.notes.append(f"{role} {s}→{size} {SELECTED_BY} {label}")
        return out
    out = x.index_select(dim, index.to(x.device))
    verb = ("replicated" if size > s else "selected") + {
        "group": " by group", "consecutive": " side by side"}.get(how, "")
    if role == "in":
        scale = fan_in_scale(s, size, index).to(x.dtype).to(x.device)
        view = [1] * x.ndim
        view[dim] = size
        out = out * scale.view(view)
        verb += ", rescaled"
        if size > s and plan.split_noise > 0:
            jitter = replica_jitter(index.cpu(), s, tuple(out.shape), dim, plan.split_noise,
                                    plan.generator)
            out = out * jitter.to(dtype=out.dtype, device=out.device)
            verb += f", split jittered ±{plan.split_noise:g}"
    plan.notes.append(f"{role} {s}→{size} {verb}")
    return out


def _scale_queries(q: torch.Tensor, dim: int, source: int, channel_map: Selector | None,
                   plan: _Plan) -> torch.Tensor:
    """Queries widened from `source` channels to ``q.shape[dim]`` head by head, scaled
    (`query_scale`) so that the softmax sees the source's products; as they are when their
    heads do not grow wider (`channel_map` knows no heads for that width)."""
    target = q.shape[dim]
    heads = getattr(channel_map, "heads", {}).get((source, target))
    if heads is None:
        return q
    view = [1] * q.ndim
    view[dim] = target
    plan.notes.append(f"heads {source // heads[0]}→{target // heads[1]} wide: queries scaled "
                      f"for the softmax")
    return q * query_scale(source, target, *heads).to(dtype=q.dtype, device=q.device).view(view)


def _match_ndim(x: torch.Tensor, ndim: int, plan: _Plan) -> torch.Tensor:
    """A linear's weight seen as a 1×1 conv, or a conv's centre tap seen as a linear."""
    if x.ndim < ndim:
        plan.notes.append("linear→conv 1×1")
        return x.reshape(tuple(x.shape) + (1,) * (ndim - x.ndim))
    while x.ndim > ndim:
        plan.notes.append("conv centre tap")
        x = x.select(-1, x.shape[-1] // 2)
    return x


#: how a note says that a position embedding's prefix tokens (class, registers) changed
PREFIX_TOKENS = "prefix tokens"
#: how a position embedding's tokens are laid out: (prefix tokens, (grid rows, grid columns))
TokenLayout = tuple[int, tuple[int, int]]


def token_layout(owner: Any) -> TokenLayout | None:
    """The layout of the position embedding of a ViT-like module (timm's): its prefix tokens
    that have a position (class, distillation and register tokens; none with
    ``no_embed_class``) and the patch grid; None when the module does not say."""
    grid = getattr(getattr(owner, "patch_embed", None), "grid_size", None)
    prefix = 0 if getattr(owner, "no_embed_class", False) else getattr(owner,
                                                                       "num_prefix_tokens", None)
    if not isinstance(prefix, int) or grid is None:
        return None
    grid = (grid, grid) if isinstance(grid, int) else tuple(int(g) for g in grid)
    return (prefix, grid) if len(grid) == 2 else None


def _square_layout(n: int) -> TokenLayout | None:
    """A guess for a module that does not say: the fewest prefix tokens (up to 8) that leave
    a square grid."""
    for prefix in range(0, 9):
        side = math.isqrt(n - prefix) if n - prefix > 0 else 0
        if side * side == n - prefix and side > 0:
            return prefix, (side, side)
    return None


def _resample_tokens(x: torch.Tensor, tokens: int, plan: _Plan,
                     layouts: tuple[TokenLayout | None, TokenLayout | None] = (None, None)
                     ) -> torch.Tensor:
    """Position embeddings (1, prefix + H·W, D): keep the prefix tokens (the first ones both
    hold; the target's others start at zero), resample the grid. `layouts`:
    what the two modules say of their tokens (`token_layout`), else a square grid is guessed,
    and the prefixes must then agree."""
    a, b = layouts
    told = (a is not None and b is not None and a[0] + math.prod(a[1]) == x.shape[1]
            and b[0] + math.prod(b[1]) == tokens)
    if not told:
        a, b = _square_layout(x.shape[1]), _square_layout(tokens)
        if a is None or b is None or a[0] != b[0]:
            return _resize_dim(x, 1, tokens, "out", plan, False)
    (pa, (ha, wa)), (pb, (hb, wb)) = a, b
    grid = x[:, pa:].reshape(x.shape[0], ha, wa, -1).permute(0, 3, 1, 2)
    if (ha, wa) != (hb, wb):
        grid = F.interpolate(grid.float(), size=(hb, wb), mode="bicubic", align_corners=False,
                             antialias=hb < ha or wb < wa).to(x.dtype)
        plan.notes.append(f"position grid {ha}×{wa}→{hb}×{wb} resampled")
    grid = grid.permute(0, 2, 3, 1).reshape(x.shape[0], hb * wb, -1)
    prefix = x[:, :min(pa, pb)]
    if pb > pa:  # more prefix tokens: a class token's position the source did not add (its
        # zero keeps what the source computed), or registers', which are new anyway
        prefix = torch.cat([prefix, x.new_zeros(x.shape[0], pb - pa, x.shape[2])], dim=1)
        plan.fraction *= 1 - (pb - pa) / tokens
    if pa != pb:
        plan.notes.append(f"{PREFIX_TOKENS} {pa}→{pb}" + (", new ones zero" if pb > pa else ""))
    return torch.cat([prefix, grid], dim=1)


def is_patchify(layer: Layer) -> bool:
    """A conv cutting its input into non-overlapping patches (a ViT's patch embedding)."""
    return (layer.kind == "conv" and len(layer.kernel) in (1, 2) and layer.kernel == layer.stride
            and min(layer.kernel) > 1)


def _resample_patches(x: torch.Tensor, size: tuple[int, ...], plan: _Plan) -> torch.Tensor:
    """A patch embedding's kernel (out, in, *k) resized to `size` by FlexiViT's pseudo-inverse
    resize (1-D kernels as 1×k images)."""
    from timm.layers import resample_patch_embed

    flat = x.ndim == 3
    y = resample_patch_embed(x.float().unsqueeze(2) if flat else x.float(),
                             [1, size[0]] if flat else list(size))
    plan.notes.append(f"patches {'×'.join(map(str, x.shape[2:]))}→{'×'.join(map(str, size))} "
                      f"resampled (FlexiViT)")
    return (y.squeeze(2) if flat else y).to(x.dtype)


def _offset_grid(rows: int, window: Any) -> tuple[int, int, int] | None:
    """The (2H−1, 2W−1) grid of relative offsets a flat bias table of `rows` rows holds, and how
    many rows follow it for a class token (BEiT's 3): from the window size its module declares,
    else a square grid; None when `rows` is no such grid."""
    if isinstance(window, int):
        window = (window, window)
    if isinstance(window, (tuple, list)) and len(window) == 2:
        grid = (2 * int(window[0]) - 1, 2 * int(window[1]) - 1)
        if rows - grid[0] * grid[1] in (0, 3):
            return grid[0], grid[1], rows - grid[0] * grid[1]
    side = math.isqrt(rows)
    return (side, side, 0) if side * side == rows and side % 2 == 1 else None


def _carry_offsets(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(heads, 2H−1, 2W−1) → (heads, *size): centre kept, cropped or edge-replicated."""
    for dim, m in ((1, size[0]), (2, size[1])):
        if m < grid.shape[dim]:
            grid = grid.narrow(dim, (grid.shape[dim] - m) // 2, m)
    pad = [max(m - n, 0) // 2 for n, m in zip(grid.shape[1:], size)]
    if any(pad):
        grid = F.pad(grid.float().unsqueeze(0), (pad[1], pad[1], pad[0], pad[0]),
                     mode="replicate").squeeze(0).to(grid.dtype)
    return grid


def _resample_offsets(x: torch.Tensor, shape: tuple[int, ...], windows: tuple[Any, Any],
                      plan: _Plan) -> torch.Tensor:
    """A relative-position bias table carried to another window size offset by offset: every
    offset both windows hold keeps its bias (the centre of the grid, cropped for a smaller
    window), and the offsets only a larger window holds take the bias of the nearest offset the
    source knows (edge replication). Patches are the same size in both networks, so an offset is
    the same distance in the image: resampling the grid (timm's `resize_rel_pos_bias_table`,
    made for fine-tuning at a higher resolution) would move every bias to another distance.

    Flat tables (offsets [+ 3 class-token rows], heads), as in Swin and BEiT, and grids (heads,
    2H−1, 2W−1), as in MaxViT; the heads are left to the usual rules."""
    if x.ndim == 3:
        a, b = (*x.shape[1:], 0), (*shape[1:], 0)
        if any(n % 2 == 0 for n in a[:2] + b[:2]):
            return x
        out = _carry_offsets(x, b[:2])
    else:
        a, b = _offset_grid(x.shape[0], windows[0]), _offset_grid(shape[0], windows[1])
        if a is None or b is None or a[2] != b[2]:
            return x
        grid = x[:a[0] * a[1]].reshape(a[0], a[1], -1).permute(2, 0, 1)
        out = _carry_offsets(grid, b[:2]).permute(1, 2, 0).reshape(b[0] * b[1], -1)
        out = torch.cat([out, x[a[0] * a[1]:]])
    grown = b[0] > a[0] or b[1] > a[1]
    plan.notes.append(f"relative offsets {a[0]}×{a[1]}→{b[0]}×{b[1]}: shared offsets kept"
                      + (", new ones from the nearest" if grown else ""))
    return out


def graft(source: torch.Tensor, shape: tuple[int, ...], dim_roles: tuple[str, ...], *,
          mix_input: bool = False, tokens: bool | tuple = False, patches: bool = False,
          offsets: tuple[Any, Any] | None = None,
          base: torch.Tensor | None = None,
          select: Selector | None = None,
          channel_map: Selector | None = None, split_noise: float = 0.0,
          generator: torch.Generator | None = None,
          in_index: torch.Tensor | None = None, in_how: str = "",
          out_index: torch.Tensor | None = None,
          out_how: str = "") -> tuple[torch.Tensor, _Plan]:
    """Resize `source` to `shape`, dimension by dimension, by the rule of each role.

    `select(S, T)` (optional) picks which of S channels a narrower dimension of T keeps
    (e.g. `importance_selector`); it is asked for every shrinking channel dimension, so the
    same (S, T) gets the same channels in every tensor. None falls back to even spacing.
    `channel_map(S, T)` (optional) replaces `channel_index` for the (S, T) pairs it answers
    (not None), with the usual fan-in rescaling: `group_channel_index` for grouped convs.
    `split_noise` > 0 jitters how a replicated fan-in is split among the replicas (zero-sum,
    so the function is unchanged; `mapping.replica_jitter`), drawn from `generator`.

    `tokens`: `source` is a position embedding (1, prefix + grid, D); True guesses its layout
    (`_square_layout`), a pair of `token_layout`s (source's, target's; None where a module
    does not say) tells it. Its grid is resampled and its prefix tokens kept
    (`_resample_tokens`).

    `patches`: `source` and the target are both patch embeddings (`is_patchify`); a kernel of
    another size is resampled (`_resample_patches`), not cropped or zero-padded.

    `offsets` (source window, target window; each an int, a pair or None for square): `source`
    is a relative-position bias table whose rows are offsets; another number of rows is
    carried offset by offset (`_resample_offsets`).

    A ``rows`` dimension (embedding tables: row k is token k) is never tiled or resampled: the
    first min(S, T) rows are copied and, when the target has more, the others keep the values
    of `base` (the target's current tensor).

    `in_index` (`concat_index`): the channels the layer reads come from a concatenation; the
    dimensions of role ``in`` (summed over) and ``ch`` (one entry per channel read, e.g. a
    norm's) follow it instead of the size-keyed rules (`_index_dim`). `out_index`: the same for
    the channels the layer writes (``out``), when they are read in pieces or must line up with a
    concatenation they are added to (GhostNet's shortcut); `out_how` says which, in the note.
    """
    plan = _Plan(split_noise=split_noise, generator=generator)
    x = source.detach()
    x = _match_ndim(x, len(shape), plan)
    layouts = tokens if isinstance(tokens, tuple) else (None, None)
    if tokens and x.ndim == 3 and (x.shape[1] != shape[1] or layouts[0] != layouts[1]):
        x = _resample_tokens(x, shape[1], plan, layouts)
    if patches and x.ndim in (3, 4) and x.shape[2:] != tuple(shape[2:]) \
            and dim_roles[2:] == ("k",) * (x.ndim - 2):
        x = _resample_patches(x, tuple(shape[2:]), plan)
    if offsets is not None and x.ndim == len(shape) and (
            x.ndim == 2 and x.shape[0] != shape[0] or x.ndim == 3 and x.shape[1:] != shape[1:]):
        x = _resample_offsets(x, shape, offsets, plan)
    for dim, (size, role) in enumerate(zip(shape, dim_roles)):
        if in_index is not None and role in ("in", "ch") and len(in_index) == size:
            x = _index_dim(x, dim, in_index, role, plan, base, in_how)
        elif out_index is not None and role == "out" and len(out_index) == size:
            x = _index_dim(x, dim, out_index, role, plan, base, out_how)
        elif role != "rows":
            x = _resize_dim(x, dim, size, "out" if role == "ch" else role, plan, mix_input,
                            select, channel_map)
    for dim, (size, role) in enumerate(zip(shape, dim_roles)):
        s = x.shape[dim]
        if role == "rows" and s != size:
            plan.notes.append(f"rows {s}→{size}: first {min(s, size)} copied")
            if s > size:
                x = x.narrow(dim, 0, size)
            else:
                if base is None:
                    raise ValueError("growing an embedding table needs base=")
                grown = base.detach().to(x.dtype).clone()
                grown.narrow(dim, 0, s).copy_(x)
                plan.fraction *= s / size
                x = grown
    return x, plan


# ----------------------------------------------------------------------------- groups
def depthwise_like(layer: Layer) -> bool:
    """A conv or transposed conv with one input channel per group (`Layer.depthwise` counts
    convs only)."""
    return (layer.kind in ("conv", "conv_transpose") and layer.groups > 1
            and layer.groups == layer.in_dim)


def grouped_conv(layer: Layer) -> bool:
    """A grouped, not depthwise, conv or transposed conv: each group sums over its own slice
    of the inputs."""
    return (layer.kind in ("conv", "conv_transpose") and layer.groups > 1
            and not depthwise_like(layer))


def swap_group_layout(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped transposed conv's weight, laid out (in, out // groups, *kernel), as a conv's
    (out, in // groups, *kernel) — and back: the same swap undoes itself. Group g's block of
    the input rows becomes group g's block of the output rows with its two channel dims
    swapped, so each row then holds one output channel's fan-in within its group, the layout
    the grouped-conv rules (`group_map`, `pack_grouped`, the per-group fan-in rescaling)
    assume; the kernel taps keep their places."""
    rows, cols, *kernel = weight.shape
    return (weight.reshape(groups, rows // groups, cols, *kernel).transpose(1, 2)
            .reshape(groups * cols, rows // groups, *kernel))


def attention_heads(model: Any, layer: Layer) -> int | None:
    """How many heads the attention whose packed q/k/v projection `layer` is splits it into:
    ``num_heads`` of an ``nn.MultiheadAttention``, or of the module holding a ``qkv`` linear
    (timm's attentions). None when not told."""
    if layer.kind == "attention":
        owner = layer.module
    elif _is_qkv(layer) and model is not None:
        parent = layer.name.rpartition(".")[0]
        try:
            owner = model.get_submodule(parent) if parent else model
        except AttributeError:
            return None
    else:
        return None
    heads = getattr(owner, "num_heads", None)
    return heads if isinstance(heads, int) and heads > 0 else None


def head_widths(src: Layer, tgt: Layer, models: tuple[Any, Any]
                ) -> tuple[int, int, int, int] | None:
    """(source heads, target heads, source width, target width) of a matched pair of packed
    q/k/v projections (a width: what each of q, k and v has); None when either does not say
    its heads."""
    hs, ht = attention_heads(models[0], src), attention_heads(models[1], tgt)
    ws, wt = _packed_width(src), _packed_width(tgt)
    if hs is None or ht is None or not ws or not wt or ws % 3 or wt % 3:
        return None
    return hs, ht, ws // 3, wt // 3


def _packed_width(layer: Layer) -> int | None:
    """3 × the width of each of q, k and v (an attention projecting them separately, for keys
    or values of another width, has no packed weight)."""
    if layer.weight_shape:
        return layer.weight_shape[0]
    if "q_proj_weight" in layer.shapes:
        return 3 * layer.shapes["q_proj_weight"][0]
    return None


def heads_grow_evenly(hs: int, ht: int, s: int, t: int) -> bool | None:
    """For an attention of width `s` in `hs` heads widened to `t` in `ht`: None when its heads
    do not grow wider; True when they grow by whole multiples (a multiple of the heads, each
    a multiple as wide: every source channel then has as many replicas as any other, what a
    norm over the width needs, and `group_map` maps the width head by head); False else."""
    if s % hs or t % ht or t // ht <= s // hs:
        return None
    return ht % hs == 0 and (t // ht) % (s // hs) == 0


def _heads_where(pairs: Iterable[tuple[Layer, Layer]], models: tuple[Any, Any],
                 keep: Callable[[int, int, int, int], Any]
                 ) -> dict[tuple[int, int], tuple[int, int]]:
    """(S, T) → (source heads, target heads) for the matched packed attentions whose
    (hs, ht, S, T) satisfy `keep`; widths that two pairs would split into heads differently
    are left out."""
    found: dict[tuple[int, int], tuple[int, int]] = {}
    clash: set[tuple[int, int]] = set()
    for src, tgt in pairs:
        widths = head_widths(src, tgt, models)
        if widths is None or not keep(*widths):
            continue
        hs, ht, s, t = widths
        if found.setdefault((s, t), (hs, ht)) != (hs, ht):
            clash.add((s, t))
    return {k: v for k, v in found.items() if k not in clash}


def _head_groups(pairs: list[tuple[Layer, Layer]], models: tuple[Any, Any]
                 ) -> dict[tuple[int, int], tuple[int, int]]:
    """Attentions whose heads grow evenly wider (`heads_grow_evenly`; an equal head size
    already tiles whole heads), as `_heads_where`."""
    return _heads_where(pairs, models, heads_grow_evenly)


def shrinking_heads(pairs: Iterable[tuple[Layer, Layer]], models: tuple[Any, Any]
                    ) -> dict[tuple[int, int], tuple[int, int]]:
    """Attentions that lose heads or narrow them, as `_heads_where`: width S in hs heads → T
    in ht ≤ hs heads, each at most as wide. Selecting channels of that width head by head
    (`head_index`) keeps whole heads, or one source head's channels in each target head; an
    evenly spaced or ranked choice over the whole width would give a target head parts of two
    or three source heads, whose query·key products mean nothing together."""
    return _heads_where(pairs, models, lambda hs, ht, s, t: (
        t < s and s % hs == 0 and t % ht == 0 and ht <= hs and t // ht <= s // hs))


def head_index(source: int, target: int, source_heads: int, target_heads: int,
               scores: torch.Tensor | None = None, first: bool = False) -> torch.Tensor:
    """Which of `source` channels in `source_heads` heads a narrower attention of `target`
    channels in `target_heads` keeps, head by head: the heads with the highest summed
    `scores` (or the first ones when `first`, else evenly spaced), and in each the channels
    with the highest scores (the first, or evenly spaced)."""
    ws, wt = source // source_heads, target // target_heads
    if scores is not None:
        per_head = scores.reshape(source_heads, ws)
        kept = importance_index(per_head.sum(1), target_heads)
    else:
        kept = torch.arange(target_heads) if first else channel_index(source_heads, target_heads)
    parts = []
    for h in kept.tolist():
        inner = (importance_index(per_head[h], wt) if scores is not None else
                 torch.arange(wt) if first else channel_index(ws, wt))
        parts.append(h * ws + inner)
    return torch.cat(parts)


def pieces_index(source: int, target: int, pieces: int, select: Selector | None,
                 channel_map: Selector | None = None) -> torch.Tensor:
    """`source` channels made of `pieces` equal pieces that are multiplied together (a packed
    gated MLP's halves) resized to `target`: every piece takes the units that a dimension of
    the pieces' width takes (`unit_index`), which is what the layer reading their product
    reads, so unit i of one piece still meets unit i of the other."""
    ws, wt = source // pieces, target // pieces
    inner = unit_index(ws, wt, select, channel_map)[0]
    return torch.cat([p * ws + inner for p in range(pieces)])


def by_heads(select: Selector, channel_map: Selector | None) -> Selector:
    """`select` (a shrink policy) made to keep whole attention heads for the widths in
    ``channel_map.narrowing`` (`shrinking_heads`): ranked by the summed scores it ranks
    channels by (``select.scores``), or the first heads for a policy without scores
    (consecutive). For the widths in ``channel_map.paired`` (pieces multiplied together, a
    packed gated MLP's halves) every piece keeps what the layer reading their product keeps
    (`pieces_index`)."""
    heads = getattr(channel_map, "narrowing", {})
    paired = getattr(channel_map, "paired", {})
    if not heads and not paired:
        return select
    scores = getattr(select, "scores", {})

    def headwise(source: int, target: int) -> torch.Tensor | None:
        if (source, target) in paired:
            return pieces_index(source, target, paired[(source, target)][0], headwise,
                                channel_map)
        h = heads.get((source, target))
        if h is None:
            return select(source, target)
        return head_index(source, target, *h, scores=scores.get(source),
                          first=source not in scores)
    label = getattr(select, "label", "policy")
    headwise.label = label  # type: ignore[attr-defined]
    # the note of a tensor says "whole heads" only where heads were kept whole
    headwise.label_for = lambda source, target: (  # type: ignore[attr-defined]
        f"{label}, whole heads" if (source, target) in heads else label)
    return headwise


def _directions(layer: Layer) -> int:
    """The width of each direction's output of a bidirectional recurrent layer, else 0."""
    module = layer.module
    if not (gate_count(layer) and getattr(module, "bidirectional", False)):
        return 0
    return getattr(module, "proj_size", 0) or module.hidden_size


def group_map(pairs: Iterable[tuple[Layer, Layer]],
              models: tuple[Any, Any] = (None, None),
              consecutive: bool = False,
              packed: tuple[dict[str, int], dict[str, int]] = ({}, {})) -> Selector | None:
    """A `channel_map` for widening channels that feed grouped (not depthwise) convolutions,
    or attentions whose heads grow wider.

    From the matched (source, target) conv pairs where both are grouped and the target is
    wider: channel count S → T of what they read and of what they write is then mapped group
    by group (`group_channel_index`) in every tensor, so each target group holds one source
    group (or several, packed). Likewise an attention's width S → T when its heads grow
    wider (`models`: the source and target model, where the heads are read): every channel
    of that width is mapped head by head, so each target head holds one source head, and its
    queries are scaled for the wider head (`query_scale`, in `_resize_dim`). None when no
    such pair exists. `consecutive`: every other widening puts a unit's replicas side by side
    (`consecutive_index`), for models whose channels go through a shuffle. `packed` (the
    source's and the target's `Architecture.packed`): a linear whose output is split into
    equal pieces used apart (a packed gated MLP's two halves, multiplied together) is resized
    piece by piece, so that each piece keeps its own units (``channel_map.paired``: the widths
    whose pieces a shrink policy must select alike, `by_heads`)."""
    pairs = list(pairs)
    groups: dict[tuple[int, int], tuple[int, int]] = {}
    others: dict[tuple[int, int], tuple[int, int]] = {}  # group norms, recurrent directions
    paired: dict[tuple[int, int], tuple[int, int]] = {}  # packed pieces (gated MLPs)
    for src, tgt in pairs:
        if (src.kind == tgt.kind and grouped_conv(tgt) and src.groups > 1
                and (grouped_conv(src) or src.kind == "conv_transpose"
                     and src.groups == tgt.groups)):
            # transposed convs too (their weight is mapped in a conv's layout,
            # `swap_group_layout`), and a transposed one with one input a group whose groups
            # each become one wider group (matched and held as any transposed conv is; a
            # depthwise conv is neither). The channels it reads and those it writes (one
            # space when in = out)
            for s, t in ((src.out_dim, tgt.out_dim), (src.in_dim, tgt.in_dim)):
                if s and t and t > s:
                    groups.setdefault((s, t), (src.groups, tgt.groups))
        if (isinstance(src.module, nn.GroupNorm) and isinstance(tgt.module, nn.GroupNorm)
                and tgt.module.num_channels > src.module.num_channels):
            # a group norm's statistics are per group: each target group holds replicas of one
            # source group (as a grouped conv's inputs), not channels of two
            others.setdefault((src.module.num_channels, tgt.module.num_channels),
                              (src.module.num_groups, tgt.module.num_groups))
        pieces = packed[0].get(src.name), packed[1].get(tgt.name)
        if pieces[0] and not _is_qkv(src) and pieces[0] == pieces[1] and src.out_dim and tgt.out_dim \
                and src.out_dim != tgt.out_dim and not (src.out_dim % pieces[0]
                                                        or tgt.out_dim % pieces[0]):
            # [x1 | x2] with x1 * act(x2) after: each half is widened (or selected) in itself
            others.setdefault((src.out_dim, tgt.out_dim), (pieces[0], pieces[0]))
            paired.setdefault((src.out_dim, tgt.out_dim), (pieces[0], pieces[0]))
        widths = (_directions(src), _directions(tgt))
        if widths[0] and widths[1] and widths[1] > widths[0]:
            # a bidirectional recurrent layer outputs [forward | backward]: each direction's
            # units are replicated within its own half, so what reads them is mapped half by half
            others.setdefault((2 * widths[0], 2 * widths[1]), (2, 2))
    heads = {k: v for k, v in _head_groups(pairs, models).items()
             if groups.setdefault(k, v) == v}  # a grouped conv of that width decides
    # attentions losing heads: evenly spaced whole heads (a policy's ranking: `by_heads`)
    narrowing = {k: v for k, v in shrinking_heads(pairs, models).items()
                 if groups.setdefault(k, v) == v}
    for key, value in others.items():  # what grouped convs and heads left undecided
        groups.setdefault(key, value)
    if not groups and not consecutive:
        return None
    # a grouped conv's fan-in within one group is tiled as inside `group_channel_index`
    inner = {(s // gs, t // gt) for (s, t), (gs, gt) in groups.items()}

    def channel_map(source: int, target: int) -> torch.Tensor | None:
        g = groups.get((source, target))
        if (source, target) in paired and g == paired[(source, target)]:
            return pieces_index(source, target, g[0], None, channel_map)
        if g is None:
            return consecutive_index(source, target) if (
                consecutive and target > source and (source, target) not in inner) else None
        return group_channel_index(source, target, *g)

    channel_map.groups = groups  # type: ignore[attr-defined]
    channel_map.heads = heads  # type: ignore[attr-defined]
    channel_map.narrowing = narrowing  # type: ignore[attr-defined]
    channel_map.paired = {k: v for k, v in paired.items()  # type: ignore[attr-defined]
                          if groups.get(k) == v}
    return channel_map


def pack_grouped(source: torch.Tensor, shape: tuple[int, ...], source_groups: int,
                 target_groups: int, channel_map: Selector) -> tuple[torch.Tensor, _Plan] | None:
    """A grouped conv's weight when whole source groups are packed into fewer, wider target
    groups (`packs_groups`): each target filter copies its source filter's weights onto the
    target inputs holding that filter's source group, split among replicas within its target
    group, and zeros onto the inputs of the other source groups packed beside it — exactly
    the source's grouped sum (a smaller kernel zero-padded around the centre). None when the
    channels are not packed this way."""
    s_out, ws = source.shape[:2]
    t_out, wt = shape[:2]
    s_in, t_in = ws * source_groups, wt * target_groups
    if len(source.shape) != len(shape) or not packs_groups(s_in, t_in, source_groups,
                                                           target_groups):
        return None
    plan = _Plan()
    for dim in range(2, len(shape)):  # kernels first: zero-padded around the centre
        source = _resize_dim(source.detach(), dim, shape[dim], "k", plan, False)
    out_index = channel_map(s_out, t_out) if t_out != s_out else torch.arange(t_out)
    in_index = channel_map(s_in, t_in)
    if out_index is None or in_index is None:
        return None
    group = torch.arange(t_out) // (t_out // target_groups)  # target group of each filter
    positions = group[:, None] * wt + torch.arange(wt)[None, :]  # its inputs, (T_out, wt)
    reads = in_index[positions]  # the source channel at each of them
    own = (reads // ws) == (out_index // (s_out // source_groups))[:, None]
    counts = torch.zeros(target_groups, s_in, dtype=torch.float64)
    counts.scatter_add_(1, in_index.view(target_groups, wt),
                        torch.ones(target_groups, wt, dtype=torch.float64))
    scale = own.to(torch.float64) / counts[group[:, None], reads]
    x = source.detach()[out_index[:, None], reads % ws]  # (T_out, wt, *kernel)
    x = x * scale.to(x.dtype).view(*scale.shape, *([1] * (x.ndim - 2)))
    plan.notes.append(f"out {s_out}→{t_out} replicated by group; groups {source_groups}→"
                      f"{target_groups}: {PACKED}, rescaled")
    plan.fraction *= (s_out * ws) / (t_out * wt)
    return x, plan


# ----------------------------------------------------------------------------- importance
def channel_importance(layers: Iterable[Layer]) -> dict[int, torch.Tensor]:
    """Per channel-space size S, how much each of the S channels matters in the source.

    Every weight with an ``out`` dimension (conv filters, linear rows, norm scales) adds the L1
    norm of each output unit, normalised to sum 1 per tensor so that every layer has one vote.
    Channel spaces are keyed by their size, the same key uniform selection uses, so a producer,
    its consumers and the branches of a residual sum (which share a size) keep the same
    channels. A recurrent layer (no ``weight``) scores each hidden unit by the L1 norm of its
    input and recurrent weights over every gate, layer and direction."""
    scores: dict[int, torch.Tensor] = {}

    def vote(per: torch.Tensor) -> None:
        per = per / per.sum().clamp_min(1e-12)
        n = per.numel()
        scores[n] = scores[n] + per if n in scores else per

    for layer in layers:
        gates = gate_count(layer)
        if gates:
            hidden = layer.module.hidden_size
            units = [t.detach().abs().double().reshape(gates, hidden, -1).sum((0, 2))
                     for name, t in layer.module.named_parameters()
                     if name.startswith(("weight_ih", "weight_hh"))]
            if units:
                vote(torch.stack(units).sum(0))
            continue
        weight = layer.module.weight if layer.module is not None and layer.kind not in (
            "embedding", "attention", "param") else None
        if not isinstance(weight, torch.Tensor) or weight.ndim == 0:
            continue
        dim_roles = roles(layer, "weight", weight.ndim)
        if layer.kind == "conv_transpose" and layer.groups > 1 and weight.ndim > 2:
            # its output channels one per row, as a conv's (dim 1 holds one group's share)
            weight = swap_group_layout(weight, layer.groups)
            dim_roles = ("out", "in") + ("k",) * (weight.ndim - 2)
        for d, role in enumerate(dim_roles):
            if role != "out":
                continue
            w = weight.detach().abs().double().movedim(d, 0)
            vote(w.reshape(w.shape[0], -1).sum(1))
    return scores


def consecutive_selector(source: int, target: int) -> torch.Tensor:
    """A `select` for `graft`: keep the first T of S channels (weight selection's consecutive
    selection), in every connected layer alike."""
    return torch.arange(target)


consecutive_selector.label = "consecutive"  # type: ignore[attr-defined]


def importance_selector(layers: Iterable[Layer], label: str = "importance") -> Selector:
    """A `select` for `graft`: keep the T most important of S channels (see
    `channel_importance`), in their original order; None for a size the source never
    produces (then even spacing is used). Pass only the norm layers for network slimming's
    criterion (Liu et al. 2017: a channel matters as much as its norm's scale |γ|)."""
    scores = channel_importance(layers)
    cache: dict[tuple[int, int], torch.Tensor] = {}

    def select(source: int, target: int) -> torch.Tensor | None:
        if source not in scores:
            return None
        if (source, target) not in cache:
            cache[(source, target)] = importance_index(scores[source], target)
        return cache[(source, target)]
    select.label = label  # type: ignore[attr-defined]
    select.scores = scores  # type: ignore[attr-defined]
    return select
