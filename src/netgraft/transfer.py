"""Orchestration: trace both models, match them, adapt and write each tensor, report.

``transfer(source, target)`` is all most users ever call. It writes into ``target`` in place
and returns a TransferReport that says, for every target tensor, whether it was copied,
adapted (and how) or left at its init (and why): nothing is skipped silently.
"""
from __future__ import annotations

import functools
import math
import re
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from . import adapt
from .adapt import TensorRecord, init_record
from .adapt.mapping import query_scale
from .adapt.spaces import space_selector
from .adapt.standardised import gained, restore_gain, standardised_weight
from .calibrate import CALIBRATION_IMAGES, recalibrate_norms
from .checkpoint import load_into
from .errors import (ModelForwardError, NetgraftError, NetgraftWarning, UnsupportedModelError,
                     first_line)
from .reparam import (changed_by_write_back, check_writable, plain_copy, reparametrized,
                      write_back)
from .growth import (fresh_modules, identity_blocks, identity_modules, input_scale_pairs,
                     rescale_readers, set_identity, unmatched_submodules)
from .match import (DEFAULT_METHOD, Matching, contained, dp_value, embeds, fixed_width,
                    gated_off, get_method, holds, keep_shut, match, normalised, openable_gates)
from .similarity import (DISTANT_SIMILARITY, UNRELATED_SIMILARITY, below, closes_gates,
                         conv_mismatch, one_family, pair_similarity, unrelated)
from .trace import (NORM_KINDS, Architecture, Layer, _tensors_of, as_input, check_traceable,
                    eval_output, float_param, grouped_reads_shuffled,
                    keep_modes, own_tensors, put_back, single_thread, snapshot, trace,
                    uncompiled)

HEAD_POLICIES = ("auto", "transfer", "reset")
ALIGN_POLICIES = (False, True, "auto")
SHRINK_POLICIES = ("auto", "uniform", "consecutive", "importance", "norm_scale")
NORM_STATS_POLICIES = ("auto", "copy", "probe", "reset")
#: inputs of the data-free norm-statistics probe (norm_stats="probe"): PROBE_BATCHES batches of
#: PROBE_BATCH standard-normal inputs of the example input's shape, from a fixed seed
PROBE_BATCH, PROBE_BATCHES = 32, 2
#: large inputs need fewer probe inputs for the same statistics: the probe holds enough inputs
#: for PROBE_POSITIONS positions per channel (height × width, or length), at least PROBE_MIN
#: (all 64 up to 64×64, the default example input; 16 at 224×224, a quarter of the cost)
PROBE_POSITIONS, PROBE_MIN = 64 * 64 * 64, 16
#: a matched layer scoring below this is a weak match: in a distant pair it is left at its
#: init by default (``min_score="auto"``)
WEAK_SCORE = 0.25
#: default jitter of how a widened layer's fan-in is split among the replicas of a unit
#: (zero-sum: the grafted function is unchanged; see adapt.mapping.replica_jitter)
SPLIT_NOISE = 0.05
def percent(share: float) -> str:
    """A share as a percentage with one decimal that never reads 100.0% unless it is whole
    (a coverage of 0.9996 with the stem unmatched is ">99.9%")."""
    text = f"{share:.1%}"
    return ">99.9%" if text == "100.0%" and share < 1 else text


#: the note of a target that holds its source but does not compute its function, for a
#: reason none of the report's checks names
UNNAMED_GAP = ("for a reason the report does not name (an operation without parameters "
               "that depends on the width or depth, e.g. a channel shuffle, an attention "
               "scale set by the head size, a post-norm residual, a block's fixed constants)")
#: why a target scale is left at its init when its source is a shut gate (`Layer.gate`)
SHUT_SOURCE = ("the source's scale is shut (zero or near zero, as an untrained residual "
               "branch's last norm or layer scale): copied onto a layer that is no gate, it "
               "would silence everything after it")
#: a containing target whose relative output gap (``report.function_gap``) is below this
#: computes its source's function (float32 round-off; the growth tests hold 1e-4)
FUNCTION_GAP = 1e-4
#: the action of a batch norm's running statistics re-estimated on inputs after the graft
ESTIMATED = "estimated"
_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass
class LayerRecord:
    """One target layer, the source layer it came from (or None) and its tensors' fate."""

    target: str
    source: str | None
    kind: str
    score: float
    tensors: list[TensorRecord]
    note: str = ""

    @property
    def action(self) -> str:
        # re-estimated running statistics say nothing of where the layer's weights came from
        actions = ({t.action for t in self.tensors if t.action != ESTIMATED}
                   or {t.action for t in self.tensors})
        if actions == {ESTIMATED}:
            return "init"
        if actions == {"copied"}:
            return "copied"
        if actions == {"init"}:
            return "init"
        return "adapted"

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "source": self.source, "kind": self.kind,
                "score": round(self.score, 6), "action": self.action, "note": self.note,
                "tensors": [t.to_dict() for t in self.tensors]}


@dataclass
class TransferReport:
    """The outcome of one transfer."""

    method: str
    source: str
    target: str
    pairs: list[LayerRecord]
    coverage: float  # fraction of target parameter elements filled from the source
    similarity: float
    seconds: float
    matching: Matching | None = field(default=None, repr=False)
    calibrated: int = 0  # batch norms whose statistics were re-estimated on calibration data
    reset_norms: int = 0  # grafted batch norms whose running statistics were reset (norm_stats)
    probed_norms: int = 0  # batch norms re-estimated on a noise probe (norm_stats="probe")
    head_scale: float | None = None  # factor the copied classifier was tempered by (head="auto")
    alignment: Any = None  # an align.AlignReport when the target was aligned to the source
    autoinit: Any = None  # an autoinit.AutoInitReport when unmatched layers were rescaled
    #: target layers matched weakly in a distant pair and left at their init (min_score)
    left_weak: list[str] = field(default_factory=list)
    #: target blocks that stay shut after the graft: a layer scale that starts near zero and
    #: has no source scale to copy (their grafted weights act only once training opens it)
    gated_off: list[str] = field(default_factory=list)
    #: the `identity_blocks` the transfer was asked for (False: new blocks keep copies / init)
    identity_blocks: bool = True
    #: how a narrower target layer chose its channels (graft; ``shrink="auto"`` resolved)
    shrink: str | None = None
    #: for a target that holds every source layer (growth): max |target − source| output on
    #: the source's example input, eval mode, right after the graft (before the steps that
    #: change it on purpose: calibration, alignment, ...), relative to the source's largest
    #: output (≈ 1e-7 when function-preserving); None when not measured
    function_gap: float | None = None
    #: why the graft was redone with the size-keyed channel maps (`_without_zero_weights`)
    regrafted: str = field(default="", repr=False)
    #: why the graft does not compute the source's function, when known, and which later
    #: steps changed the grafted model (re-estimating the norms on calibration data does to
    #: a grown target what it would do to its source)
    function_note: str = ""
    #: outputs of a multi-output target that `function_gap` did not compare (another shape than
    #: the source's), e.g. ``"output 1 is (2, 7) where the source's is (2, 5)"``
    uncompared: list[str] = field(default_factory=list)
    #: computed weights (a parametrization such as spectral norm) that differ from the
    #: grafted value after it was written back through their parametrization
    constrained: list[str] = field(default_factory=list)
    #: readers of a block's input scale (`growth.INPUT_SCALES`) that differs from their
    #: source block's and that could not be compensated: "<layer>: <attr> <source> → <target>"
    unscaled: list[str] = field(default_factory=list)
    #: widened layers of a model with channel shuffles that cannot place replicas of every
    #: source channel where the layers reading it in the source read them (`_reader_maps`)
    unplaced: list[str] = field(default_factory=list)

    @property
    def matched(self) -> int:
        return sum(p.source is not None and p.action != "init" for p in self.pairs)

    def counts(self) -> dict[str, int]:
        out = {"copied": 0, "adapted": 0, "init": 0, ESTIMATED: 0}
        for p in self.pairs:
            for t in p.tensors:
                out[t.action] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "source": self.source, "target": self.target,
                "summary": self.summary(), "coverage": self.coverage, "similarity": self.similarity,
                "seconds": self.seconds, "matched_layers": self.matched,
                "calibrated_norms": self.calibrated, "reset_norms": self.reset_norms,
                "probed_norms": self.probed_norms, "head_scale": self.head_scale,
                "alignment": self.alignment.to_dict() if self.alignment is not None else None,
                "autoinit": self.autoinit.to_dict() if self.autoinit is not None else None,
                "gated_off": list(self.gated_off), "left_weak": list(self.left_weak),
                "shrink": self.shrink, "function_gap": self.function_gap,
                "unused_source_layers": self.unused_source_layers(),
                "function_note": self.function_note, "constrained": list(self.constrained),
                "unscaled": list(self.unscaled), "unplaced": list(self.unplaced),
                "uncompared_outputs": list(self.uncompared), "target_layers": len(self.pairs),
                "tensors": self.counts(),
                "pairs": [p.to_dict() for p in self.pairs]}

    def rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """(target layer, kind, source layer, score, action, detail) per target layer."""
        rows = []
        for p in self.pairs:
            # each step once, in the order of the tensors (a bias repeats its weight's "out")
            detail = p.note or "; ".join(dict.fromkeys(
                part for t in p.tensors if t.how for part in t.how.split("; ")))
            rows.append((p.target or "<root>", p.kind, p.source if p.source is not None else "-",
                         f"{p.score:.2f}", p.action, detail))
        return rows

    def unused_source_layers(self) -> list[str]:
        """Source layers no target layer was initialised from (a shallower or narrower-in-
        depth target drops them), in execution order."""
        if self.matching is None:
            return []
        used = {s for s in self.matching.pairs.values() if s is not None}
        return [layer.name for layer in self.matching.source.layers if layer.index not in used]

    def weak_layers(self, threshold: float = WEAK_SCORE) -> list[str]:
        """Target layers filled from a source layer that matched them poorly."""
        return [p.target for p in self.pairs
                if p.source is not None and p.action != "init" and p.score < threshold
                and not p.note.startswith("zeroed")]  # an identity block's, set on purpose

    def summary(self) -> str:
        c = self.counts()
        text = (f"{self.source} → {self.target} [{self.method}]: {self.matched}/{len(self.pairs)} "
                f"layers matched, coverage {percent(self.coverage)}, similarity {self.similarity:.3f}, "
                f"tensors copied {c['copied']} / adapted {c['adapted']} / left at init "
                f"{c['init']}" + (f" / re-estimated {c[ESTIMATED]}" if c[ESTIMATED] else "")
                + f", {self.seconds:.2f} s")
        narrowed = sum(any(adapt.SELECTED_BY in (t.how or "") for t in p.tensors)
                       for p in self.pairs)
        unused = self.unused_source_layers()
        if self.matching is not None and (head := _backbone_of(self.matching)) is not None:
            unused = [name for name in unused if name != head.name]  # a backbone: no classes
        if unused and self.matching is not None and contained(self.matching, classifier=False):
            text += (f"; {len(unused)} source layers not carried over (a shallower target: "
                     f"{_listed(unused, 3)})")
        if self.function_gap is not None:
            text += ("; the graft computes the source's function"
                     if self.function_gap < FUNCTION_GAP
                     else "; the target holds the source but the graft does not compute its "
                          "function")
            text += f" (relative output gap {self.function_gap:.1e})"
            if self.function_note:
                text += f"; {self.function_note}"
        elif self.uncompared:
            text += (f"; the target holds the source but its outputs were not compared "
                     f"({_listed(self.uncompared, 2, '; ')})")
        if self.constrained and self.function_gap is None:  # else function_note says it
            text += "; " + _constrained_text(self.constrained)
        if self.unscaled and self.function_gap is None:
            text += "; " + _unscaled_text(self.unscaled)
        if narrowed and self.shrink:
            text += f"; {narrowed} narrower layers keep channels by {self.shrink}"
        if self.probed_norms:
            text += f"; {self.probed_norms} norms' statistics re-estimated on a noise probe"
        if self.reset_norms:
            text += f"; {self.reset_norms} norms' statistics reset"
        if self.calibrated and self.function_gap is None:  # else function_note says it
            text += f"; {self.calibrated} norms' statistics re-estimated on the calibration data"
        if self.head_scale:
            text += f"; classifier tempered ×{self.head_scale:.3g}"
        elif self.head_scale is not None:
            text += "; copied classifier reset to its init"
        if self.alignment is not None:
            text += "; " + self.alignment.summary()
        return text

    def __str__(self) -> str:
        header = ("target layer", "kind", "source layer", "score", "action", "detail")
        rows = [header] + self.rows()
        widths = [min(max(len(r[i]) for r in rows), 48) for i in range(5)]
        lines = [self.summary(), ""]
        for r in rows:
            lines.append("  ".join(c[:48].ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5])
        return "\n".join(lines)


#: a new layer of a deeper recurrent stack: its gates saturated so that it passes its input on
NEAR_IDENTITY = ("near-identity: a new stacked recurrent layer (no source layer of its own) "
                 "passes its input on: forget / update gate shut, input and output gates open, "
                 "the candidate reads the input through an identity")
#: the gate bias that saturates them: sigmoid(5) = 0.993 (larger ones barely train)
GATE_BIAS = 5.0
_STACKED = re.compile(r"(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?")


def _stacks_deeper(src: Layer, tgt: Layer) -> bool:
    """Whether `tgt` is a recurrent layer of `src`'s type (LSTM, GRU, RNN) stacking more
    layers than it."""
    return (type(tgt.module) in (nn.LSTM, nn.GRU, nn.RNN) and type(src.module) is type(tgt.module)
            and tgt.module.num_layers > src.module.num_layers)


def _turns_bidirectional(src: Layer, tgt: Layer) -> bool:
    """Whether a unidirectional recurrent layer is matched to a bidirectional one."""
    return (adapt.gate_count(src) > 0 and adapt.gate_count(tgt) > 0
            and not getattr(src.module, "bidirectional", False)
            and bool(getattr(tgt.module, "bidirectional", False)))


def _near_identity(src: Layer, tgt: Layer, name: str, like: torch.Tensor) -> torch.Tensor | None:
    """The value of tensor `name` of a stacked recurrent layer the source lacks (layer k of a
    deeper nn.LSTM / GRU / RNN than the source, k ≥ 1, so it reads the hidden states of the
    layer below), such that the layer passes its input on: an LSTM's cell takes
    tanh(x / σ(b)²) with forget gate σ(-b) ≈ 0 and input and output gates σ(b) ≈ 1 (b =
    GATE_BIAS), so it outputs σ(b)·tanh(σ(b)·tanh(x / σ(b)²)) ≈ x for the (-1, 1) values a
    recurrent layer outputs; a GRU's update gate is shut, an RNN reads x as it is (exact with
    ReLU). Each direction reads its own half of a bidirectional layer's input. An LSTM with
    projections (``proj_size`` P < hidden size, as torch requires) reads its P inputs into its
    first P cells and projects those cells back out (``weight_hr`` = [I 0]). None for any
    other tensor."""
    found = _STACKED.fullmatch(name)
    module = tgt.module
    if (found is None or not _stacks_deeper(src, tgt)
            or int(found[3]) < src.module.num_layers):
        return None
    hidden, direction = module.hidden_size, 1 if found[4] else 0
    width = getattr(module, "proj_size", 0) or hidden  # what each direction outputs
    gates = adapt.gate_count(tgt) or 1
    candidate = 2 if gates > 1 else 0  # (i, f, g, o) / (r, z, n) / one
    open_ = torch.sigmoid(torch.tensor(GATE_BIAS, dtype=torch.float64)).item()
    value = torch.zeros(like.shape, dtype=like.dtype, device=like.device)
    cells = slice(candidate * hidden, candidate * hidden + width)
    if found[1] == "weight" and found[2] == "ih":
        gain = {4: 1 / open_ ** 2, 3: 1 / open_}.get(gates, 1.0)
        value[cells, direction * width:(direction + 1) * width] = gain * torch.eye(width)
    elif found[1] == "weight" and found[2] == "hr":
        value[:, :width] = torch.eye(width)  # the first P cells, projected out as they are
    elif found[1] == "bias" and found[2] == "ih" and gates == 4:
        value[:hidden] = value[3 * hidden:] = GATE_BIAS  # input and output gates open
        value[hidden:2 * hidden] = -GATE_BIAS  # forget gate shut
    elif found[1] == "bias" and found[2] == "ih" and gates == 3:
        value[hidden:2 * hidden] = -GATE_BIAS  # update gate shut: h = n
    return value


def _query_norm_scale(tgt: Layer, name: str, source_shape: tuple[int, ...],
                      shape: tuple[int, ...], channel_map: Callable | None) -> torch.Tensor | None:
    """For the scale and shift of an attention's query norm (timm's ``q_norm``, normalising
    each head's queries) whose heads grow wider: the factor that keeps the query·key products
    the target's softmax sees equal to the source's (`mapping.query_scale`; scaling the
    queries before the norm, as for an attention without one, is normalised away)."""
    if (tgt.name.rsplit(".", 1)[-1] != "q_norm" or name not in ("weight", "bias")
            or len(shape) != 1 or len(source_shape) != 1 or shape[0] <= source_shape[0]):
        return None
    ws, wt = source_shape[0], shape[0]
    for (s, t), (hs, ht) in getattr(channel_map, "heads", {}).items():
        if s // hs == ws and t // ht == wt:
            return query_scale(ws, wt, 1, 1)
    return None


def _no_source(name: str) -> str:
    return f"source layer has no '{name}'"


def scalar_scale(src: Layer, tgt: Layer) -> bool:
    """Whether `tgt` is a scalar scale (a ReZero-style gate: one parameter of one element)
    grafted from a per-channel one: it takes their mean, and cannot keep the function. A
    one-element tensor beside others (a one-unit layer's bias) is selected with them."""
    names = tgt.param_names
    return (src.kind == tgt.kind == "param" and len(names) == 1 and names[0] in src.shapes
            and math.prod(tgt.shapes[names[0]]) == 1 < math.prod(src.shapes[names[0]]))


def _graft_layer(src: Layer, tgt: Layer, src_t: dict[str, torch.Tensor],
                 tgt_t: dict[str, torch.Tensor], select: Callable | None = None,
                 channel_map: Callable | None = None, split_noise: float = 0.0,
                 generator: torch.Generator | None = None,
                 channels: _ChannelPlan | None = None,
                 spaces: Callable[[str], Callable] | None = None) -> list[TensorRecord]:
    records = []
    if spaces is not None:  # channels ranked within this layer's channel spaces
        select = spaces(src.name)
    # a weight-standardised conv whose fan-in grows: adapt its standardised weight
    effective = (gained(src.module) and gained(tgt.module) and "weight" in tgt_t
                 and "gain" in tgt_t and src.module.weight.shape[1:] != tgt_t["weight"].shape[1:]
                 and all(a <= b for a, b in zip(src.module.weight.shape[1:],
                                                tgt_t["weight"].shape[1:])))
    if effective:
        src_t = {**src_t, "weight": standardised_weight(src.module)}
    found = _concat_index(src, tgt, channels, select, channel_map) if channels else None
    k = channels.folded.get(tgt.name) if channels else None
    if (found is None and k and src.in_dim and tgt.in_dim and src.in_dim != tgt.in_dim
            and not (src.in_dim % k or tgt.in_dim % k)):
        # neighbours' channels folded side by side: each piece resized as the channels are
        found = (adapt.pieces_index(src.in_dim, tgt.in_dim, k, select, channel_map),
                 f"{k} folded neighbours piece by piece")
    in_index, in_how = found if found is not None else (None, "")
    out_index = channels.maps.get(tgt.name) if channels and _mixes_channels(tgt) else None
    for name, target in tgt_t.items():
        shape = tuple(target.shape)
        source = src_t.get(name)
        if source is None and (value := _near_identity(src, tgt, name, target)) is not None:
            _write(target, value, src, tgt, name)  # a new layer of a deeper recurrent stack
            records.append(init_record(tgt, name, NEAR_IDENTITY))
            continue
        if source is None:
            records.append(init_record(tgt, name, _no_source(name)))
            continue
        if src.gate and not tgt.gate and (name == "weight" or tgt.kind == "param"):
            records.append(init_record(tgt, name, SHUT_SOURCE))
            continue
        if adapt.gate_count(src) != adapt.gate_count(tgt):  # an LSTM's gates are not a GRU's
            records.append(init_record(
                tgt, name, f"source is a {type(src.module).__name__}, target a "
                           f"{type(tgt.module).__name__}: their gates differ"))
            continue
        # a grouped transposed conv's weight (in, out // groups, *kernel) is mapped in a conv's
        # layout, one output channel's fan-in within its group a row, as grouped convs are
        swapped = (name == "weight" and src.kind == tgt.kind == "conv_transpose"
                   and (src.groups > 1 or tgt.groups > 1) and source.ndim == len(shape) > 2)
        if tuple(source.shape) == shape and not (swapped and src.groups != tgt.groups):
            value, how, fraction = source.detach(), "", 1.0
        elif scalar_scale(src, tgt):
            # a ReZero-style scalar for a per-channel scale: the value nearest all of them
            value = source.detach().float().mean().to(target.dtype).reshape(shape)
            how, fraction = f"mean of {source.numel()} → 1", 1.0
        else:
            given, base, want = source, target, shape
            if swapped:
                given = adapt.swap_group_layout(source, src.groups)
                base = adapt.swap_group_layout(target, tgt.groups)
                want = (tgt.groups * shape[1], shape[0] // tgt.groups, *shape[2:])
                dim_roles = ("out", "in") + ("k",) * (len(shape) - 2)
            else:
                dim_roles = adapt.roles(tgt, name, target.ndim)
            if in_index is not None and not _mixes_channels(tgt):  # one entry per channel read
                dim_roles = tuple("ch" if r == "out" and n == tgt.in_dim and m == src.in_dim
                                  else r for r, n, m in zip(dim_roles, want, given.shape))
            by_group = (channel_map is not None and src.groups > 1
                        and channel_map(src.out_dim or 0, tgt.out_dim or 0) is not None)
            read, read_how = in_index, in_how
            inner = ((src.in_dim or 0) // max(src.groups, 1),
                     (tgt.in_dim or 0) // max(tgt.groups, 1))
            if (by_group and in_index is None and name == "weight" and tgt.kind == "conv"
                    and src.groups == tgt.groups and not adapt.depthwise_like(tgt)
                    and inner[0] < inner[1] and inner in getattr(channel_map, "groups", {})):
                # a grouped conv's fan-in within its group, whose sizes are also a width the
                # group map maps group by group (8 → 16 inside a 16 → 32 conv in 2 groups, when
                # the stage before widens 8 → 16): each target group reads its source group's
                # inputs tiled, as any fan-in within a group (`group_channel_index`)
                read, read_how = adapt.channel_index(*inner), "replicated within each group"
            packed = (adapt.pack_grouped(given, want, src.groups, tgt.groups, channel_map)
                      if by_group and name == "weight" and src.groups != tgt.groups
                      and not adapt.depthwise_like(src) and not adapt.depthwise_like(tgt)
                      else None)
            if packed is not None:  # whole source groups side by side in wider groups
                value, plan = packed
            else:
                # a relative-position bias table: its rows are offsets, not tokens
                relative = tgt.kind == "param" and "relative_position" in name
                if src.groups != tgt.groups and not by_group:
                    # a grouped fan-in is not a sum over the same inputs (unless mapped by group)
                    dim_roles = tuple("out" if r == "in" else r for r in dim_roles)
                value, plan = adapt.graft(
                    given, want, dim_roles,
                    mix_input=tgt.role == "input" and tgt.kind == "conv",
                    tokens=((adapt.token_layout(src.module), adapt.token_layout(tgt.module))
                            if tgt.kind == "param" and "pos" in name and not relative
                            else False),
                    patches=adapt.is_patchify(src) and adapt.is_patchify(tgt),
                    offsets=((getattr(src.module, "window_size", None),
                              getattr(tgt.module, "window_size", None)) if relative else None),
                    base=base, select=select,
                    channel_map=channel_map, split_noise=split_noise, generator=generator,
                    in_index=read, in_how=read_how, out_index=out_index,
                    out_how=channels.how.get(tgt.name, "") if channels else "")
            if swapped:
                value = adapt.swap_group_layout(value, tgt.groups)
            how, fraction = "; ".join(plan.notes), plan.fraction
            factor = _query_norm_scale(tgt, name, tuple(source.shape), shape, channel_map)
            if factor is not None:  # the queries' norm would undo the qkv's query scaling
                value = value * factor.to(dtype=value.dtype, device=value.device)
                how += "; queries scaled for the softmax"
        _write(target, value, src, tgt, name)
        padding = getattr(tgt.module, "padding_idx", None)
        if tgt.kind == "embedding" and name == "weight" and padding is not None:
            with torch.no_grad():
                target[padding].zero_()  # the padding row must stay zero
        numel = target.numel()
        records.append(TensorRecord(
            name=name, shape=shape, source_shape=tuple(source.shape),
            action="copied" if not how else "adapted", how=how,
            filled=round(numel * fraction), numel=numel, parameter=name in tgt.param_names))
    if effective:
        restore_gain(tgt.module, src.module)
        for record in records:
            if record.name in ("weight", "gain") and record.action != "init":
                record.action = "adapted"
                record.how = _also(record.how, STANDARDISED)
    return records


#: how the note of a weight-standardised conv's weight and gain says what was adapted
STANDARDISED = ("the source's standardised weight adapted and stored, the gain rescaled so "
                "that standardising it gives back what the source computes with")


def _mixes_channels(layer: Layer) -> bool:
    return layer.kind in ("linear", "conv_transpose") or (
        layer.kind == "conv" and not (layer.depthwise and layer.in_dim == layer.out_dim))


@dataclass
class _ChannelPlan:
    """What the graph tells about channels, for one transfer (built once in `_transfer`)."""

    producers: dict[str, str]  # target layer → its source layer, where it writes the same
    maps: dict[str, torch.Tensor]  # target layer → source channel of each output channel
    how: dict[str, str]  # target layer in `maps` → how its note says so
    grow: bool  # the target holds the source (classifier aside): new channels weigh zero
    #: widened producers of a shuffled model some of whose source channels no target channel
    #: can stand in for where they are read (`_reader_maps`)
    unplaced: list[str] = field(default_factory=list)
    #: target layer → k, where it and its source layer read k neighbours' channels folded
    #: side by side (`Architecture.folded`: Swin's patch merging): read piece by piece
    folded: dict[str, int] = field(default_factory=dict)


def _concat_index(src: Layer, tgt: Layer, channels: _ChannelPlan,
                  select: Callable | None, channel_map: Callable | None
                  ) -> tuple[torch.Tensor, str] | None:
    """Where each channel `tgt` reads sits in what `src` reads (`adapt.concat_index`), and how
    to say so, when both read concatenations (or `tgt` reads a layer whose channels follow a
    map of their own, `channels.maps`) and the layer either sums over its inputs densely or acts
    channel by channel; None otherwise (the size-keyed rules apply: a concatenation read from
    a plain tensor has no segments to pair).

    Channels with no source are zero-weighted, which keeps the function only in a growth
    (`channels.grow`: the target holds the source) that still reads every source input; else
    such a map falls back to the size-keyed rules (in a shrink or across families it would
    leave inputs — up to all of a layer's — weighing nothing)."""
    if not src.in_layout or not tgt.in_layout:
        return None
    if not ((src.concatenated and tgt.concatenated)
            or any(seg[0] in channels.maps for seg in tgt.in_layout)):
        return None
    for layer in (src, tgt):
        if layer.kind in ("conv", "conv_transpose") and layer.groups > 1 and not (
                adapt.depthwise_like(layer) and layer.in_dim == layer.out_dim):
            return None  # a grouped fan-in: each group reads its own slice
    if _mixes_channels(src) != _mixes_channels(tgt):
        return None
    index = adapt.concat_index(src.in_layout, tgt.in_layout, channels.producers, select,
                               channel_map, channels.maps)
    new = index < 0
    distinct = len(set(index[~new].tolist()))
    if bool(new.all()) or (bool(new.any()) and not (channels.grow
                                                    and distinct == src.in_dim)):
        return None
    if not bool(new.any()) and distinct < (src.in_dim or 0) <= len(index):
        return None  # as wide but some source inputs unread: neither a growth nor a selection
    if len(tgt.in_layout) > 1:
        how = "by concatenated segments"
    elif tgt.concatenated:
        producer, a, b, width = tgt.in_layout[0]
        how = f"as channels {a}..{b - 1} of {producer}'s {width} (a piece of a split)"
    else:
        how = f"as {tgt.in_layout[0][0]}'s channels were mapped"
    return index, how


#: how a layer's note says its output channels follow a concatenation it is added to
SUM_ORDER = "in the order of the concatenation it is added to"


def _cuts(arch: Architecture) -> dict[str, list[int]]:
    """Layers whose output is read in pieces (split, or cut by a slice): the piece bounds."""
    cuts: dict[str, set[int]] = {}
    layouts = [l.in_layout for l in arch.layers if l.in_layout]
    layouts += [lay for pair in arch.mixed_sums for lay in pair] + arch.pieces
    for layout in layouts:
        for producer, a, b, width in layout:
            cuts.setdefault(producer, {0, width}).update((a, b))
    return {p: sorted(c) for p, c in cuts.items() if len(c) > 2}


def _split_maps(src_arch: Architecture, tgt_arch: Architecture, producers: dict[str, str],
                select: Callable | None, channel_map: Callable | None
                ) -> dict[str, tuple[torch.Tensor, str]]:
    """Channel maps for the layers whose output is read in pieces (a CSP stage's two halves,
    a ghost module's cut copy): each piece is widened or narrowed on its own, so a piece of
    the target holds the units of the same piece of the source (the size-keyed rule would
    tile the whole output, and each half would hold units of both). Only when the source's
    counterpart is cut into as many pieces. Target layer name → (source channel of each
    output, how)."""
    source, maps = _cuts(src_arch), {}
    for name, bounds in _cuts(tgt_arch).items():
        mate = producers.get(name)
        theirs = source.get(mate) if mate else None
        if theirs is None or len(theirs) != len(bounds) or name == "":
            continue
        parts = [lo + adapt.unit_index(hi - lo, b - a, select, channel_map)[0]
                 for lo, hi, a, b in zip(theirs, theirs[1:], bounds, bounds[1:])]
        sizes = " + ".join(str(b - a) for a, b in zip(bounds, bounds[1:]))
        maps[name] = (torch.cat(parts), f"piece by piece (read as {sizes})")
    return maps


def _producers(src_arch: Architecture, tgt_arch: Architecture,
               matching: Matching) -> dict[str, str]:
    """Target layer → the source layer whose output channels it writes (``""``: the input)."""
    # a target layer repeating a source layer an earlier one took writes new channels
    producers = {"": ""}
    for t, s in sorted(matching.pairs.items()):
        name = src_arch.layers[s].name if s is not None else None
        if name is not None and name not in producers.values():
            producers[tgt_arch.layers[t].name] = name
    return producers


def _readers(arch: Architecture) -> dict[str, list[set[str]]]:
    """For each producer, the layers that read each of its output channels (`in_layout`)."""
    readers: dict[str, list[set[str]]] = {}
    for layer in arch.layers:
        for producer, a, b, width in layer.in_layout or ():
            units = readers.setdefault(producer, [set() for _ in range(width)])
            for u in range(a, min(b, len(units))):
                units[u].add(layer.name)
    return readers


def _reader_maps(src_arch: Architecture, tgt_arch: Architecture, matching: Matching,
                 producers: dict[str, str], select: Callable | None = None,
                 channel_map: Callable | None = None
                 ) -> tuple[dict[str, tuple[torch.Tensor, str]], list[str]]:
    """Channel maps for the widened producers of a model whose channels go through shuffles
    (ShuffleNet), where which later layer reads a channel depends on where the shuffles and
    splits put it: each target channel is filled from a source channel that the same layers
    (their source counterparts) read, so every layer still reads every channel its source
    read. A unit's replicas spread by the size-keyed rule can all land in a half the source's
    reader does not read. Only where the usual map (`adapt.unit_index`) leaves some source
    channel unread by a layer that read it in the source, for a width that no grouped conv
    maps group by group (`channel_map.groups`), and where every source channel finds such a
    target channel. Returns ({target layer name: (source channel of each output, how)}, the
    widened producers with a source channel that no target channel is read like)."""
    mates = {t: s for t, s in matching.named_pairs() if s is not None}
    theirs, ours = _readers(src_arch), _readers(tgt_arch)
    maps, misfits = {}, []
    for name, units in ours.items():
        mate = producers.get(name)
        source = theirs.get(mate) if mate else None
        if (not name or source is None or len(units) <= len(source)
                or (len(source), len(units)) in getattr(channel_map, "groups", {})):
            continue
        seen = [frozenset(mates[c] for c in who if c in mates) for who in units]
        index, _ = adapt.unit_index(len(source), len(units), select, channel_map)
        read: list[set[str]] = [set() for _ in source]  # by the replicas of each source unit
        for u, who in enumerate(seen):
            read[int(index[u])].update(who)
        if all(read[u] >= who for u, who in enumerate(source)):
            continue  # the usual map already reaches every reader
        classes: dict[frozenset, list[int]] = {}
        for u, who in enumerate(source):
            classes.setdefault(frozenset(who), []).append(u)
        mine: dict[frozenset, list[int]] = {}
        for u, who in enumerate(seen):
            mine.setdefault(who, []).append(u)
        if any(len(mine.get(k, ())) < len(v) for k, v in classes.items()):
            misfits.append(name)  # some source channel has no target channel read alike
            continue
        index = index.clone()
        for key, have in mine.items():
            want = classes.get(key)
            for j, u in enumerate(have if want else ()):
                index[u] = want[j * len(want) // len(have)]
        maps[name] = (index, "by the layers that read each channel (channel shuffles)")
    return maps, misfits


def _sum_maps(src_arch: Architecture, tgt_arch: Architecture, producers: dict[str, str],
              select: Callable | None, channel_map: Callable | None,
              out_maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Channel maps for the layers whose whole output, or its first channels, is added to (or
    multiplies) a concatenation (`Architecture.mixed_sums`): their channels must follow the
    concatenation's, not the size-keyed rule — GhostNet's stem and shortcut convs, whose
    outputs are added to ghost modules' concatenated halves; ReXNet's blocks, whose first
    channels are added to their input. Target layer name → source channel of each output."""
    # a layer's whole output, or its first channels (ReXNet adds its input to the first
    # channels of its block's output: the rest, beyond, are widened on their own)
    prefix = lambda lay: len(lay) == 1 and lay[0][1] == 0  # noqa: E731
    source_sums = {other[0][0]: (cat, other[0][2], other[0][3])
                   for cat, other in src_arch.mixed_sums if prefix(other)}
    maps: dict[str, torch.Tensor] = {}
    known = dict(out_maps)  # with the maps found so far: a later sum may read their channels
    for cat, other in tgt_arch.mixed_sums:
        name, _, stop, width = other[0] if prefix(other) else ("", 0, 0, 0)
        mate = source_sums.get(producers.get(name)) if name else None
        if mate is None or name in maps or (stop == width) != (mate[1] == mate[2]):
            continue
        index = adapt.concat_index(mate[0], cat, producers, select, channel_map, known)
        if len(index) != stop or not bool((index >= 0).all()):
            continue
        if stop < width:  # the channels beyond, on their own
            rest, _ = adapt.unit_index(mate[2] - mate[1], width - stop, select, channel_map)
            index = torch.cat([index, mate[1] + rest])
        maps[name] = known[name] = index
    return maps


def _channel_plan(src_arch: Architecture, tgt_arch: Architecture, matching: Matching,
                  select: Callable | None, channel_map: Callable | None,
                  grow: bool) -> _ChannelPlan:
    """The producers' pairing, and the layers whose output channels follow a map of their
    own instead of the size-keyed rule: those read in pieces (`_split_maps`), then those
    added to a concatenation (`_sum_maps`)."""
    producers = _producers(src_arch, tgt_arch, matching)
    split = _split_maps(src_arch, tgt_arch, producers, select, channel_map)
    unplaced: list[str] = []
    if src_arch.shuffles or tgt_arch.shuffles:
        read, unplaced = _reader_maps(src_arch, tgt_arch, matching, producers, select,
                                      channel_map)
        split |= read
    maps = {k: index for k, (index, _) in split.items()}
    summed = _sum_maps(src_arch, tgt_arch, producers, select, channel_map, maps)
    folded = {tgt_arch.layers[t].name: k for t, s in matching.pairs.items() if s is not None
              and (k := tgt_arch.folded.get(tgt_arch.layers[t].name))
              and src_arch.folded.get(src_arch.layers[s].name) == k}
    return _ChannelPlan(producers=producers, maps=maps | summed,
                        how={k: how for k, (_, how) in split.items()}
                        | dict.fromkeys(summed, SUM_ORDER), grow=grow, unplaced=unplaced,
                        folded=folded)


def _clip_layer(src: Layer, tgt: Layer, src_t: dict[str, torch.Tensor],
                tgt_t: dict[str, torch.Tensor]) -> list[TensorRecord]:
    """DPIAT: weight and bias only, centre crop / centre copy; nothing else is touched."""
    records = []
    for name, target in tgt_t.items():
        source = src_t.get(name)
        if name not in ("weight", "bias"):
            records.append(init_record(tgt, name, "dpiat transfers weight and bias only"))
            continue
        if source is None:
            records.append(init_record(tgt, name, _no_source(name)))
            continue
        _check_finite(source, src, name)
        filled = adapt.clip(source.detach(), target.data)
        same = tuple(source.shape) == tuple(target.shape)
        records.append(TensorRecord(
            name=name, shape=tuple(target.shape), source_shape=tuple(source.shape),
            action="copied" if same else "adapted", how="" if same else "centre clip",
            filled=filled, numel=target.numel(), parameter=name in tgt.param_names))
    return records


def _check_finite(value: torch.Tensor, src: Layer, name: str) -> None:
    if not torch.isfinite(value).all():
        raise NetgraftError(
            f"source tensor '{_qual(src.name, name)}' contains NaN or inf: the source weights are "
            f"broken; retrain or reload them before grafting")
    if name == "running_var" and (value < 0).any():
        raise NetgraftError(
            f"source tensor '{_qual(src.name, name)}' has negative variances (min "
            f"{value.min().item():.3g}): the source's batch-norm statistics are broken; "
            f"re-estimate them (netgraft.calibrate.recalibrate_norms) or reload the weights")


def _write(target: torch.Tensor, value: torch.Tensor, src: Layer, tgt: Layer, name: str) -> None:
    cast = value.to(device=target.device, dtype=target.dtype)
    if not torch.isfinite(cast).all() and torch.isfinite(value).all():
        big = value.abs().max().item()
        raise NetgraftError(
            f"target tensor '{_qual(tgt.name, name)}' is {target.dtype}, which cannot hold the "
            f"value {big:.3g} from source tensor '{_qual(src.name, name)}' (largest "
            f"{torch.finfo(target.dtype).max:.3g}): graft into a float32 or bfloat16 target")
    _check_finite(cast, src, name)
    value = cast
    with torch.no_grad():
        target.copy_(value)


def _qual(layer: str, tensor: str) -> str:
    return f"{layer}.{tensor}" if layer else tensor


def _also(how: str, more: str) -> str:
    """A tensor's note `how` with `more` said after it."""
    return f"{how}; {more}" if how else more


_LAYER_TRANSFERS: dict[str, Callable] = {"dpiat": _clip_layer}


def _head_reason(src: Layer, tgt: Layer, head: str) -> str | None:
    """Why the classifier head is left at init, or None to transfer it.

    A head maps features to classes. With another number of classes, class k of the source is
    not class k of the target, so copying rows would plant wrong, confident logits: by default
    the head is left at its init. With the same number of classes it is copied (fine-tuning on
    the same label set). ``head="transfer"`` forces the copy, ``head="reset"`` forbids it.
    """
    if tgt.role != "output" or head == "transfer":
        return None
    if head == "reset":
        return "classifier head reset (head='reset')"
    if src.out_dim != tgt.out_dim:
        return f"classifier head: {src.out_dim} → {tgt.out_dim} outputs, classes differ"
    return None


def transfer(source: nn.Module, target: nn.Module, *, example_input: Any = None,
             source_input: Any = None, method: str = DEFAULT_METHOD, head: str = "auto",
             identity_blocks: bool = True, calibration_data: Any = None,
             align: bool | str = False, align_steps: int | None = None,
             shrink: str = "auto", autoinit: bool = False, norm_stats: str = "auto",
             min_score: float | str = "auto", split_noise: float = SPLIT_NOISE,
             seed: int = 0,
             source_arch: Architecture | None = None,
             target_arch: Architecture | None = None) -> TransferReport:
    """Initialise `target` in place from the trained `source` and report what happened.

    `example_input` is an input `target` accepts (inferred for timm models), `source_input`
    one for `source`. `method` is ``"graft"`` (default) or ``"dpiat"`` (the paper, exactly).
    `head` is ``"auto"`` (copy the classifier only when the class counts agree, and temper it
    for a distant pair, see below), ``"transfer"`` (copy it as it is) or ``"reset"``. With
    `identity_blocks` (graft only), residual blocks that repeat a source block or have no source
    start as the identity, so a deeper target computes what its source computed; so do the new
    layers of a deeper plain network (no residual connections), where that brings its output
    closer to the source's (Net2Net's deeper operator: exact after ReLU-like activations).
    `calibration_data` (a tensor of inputs, or an iterable of batches — a one-pass iterator is
    read once, up to ``CALIBRATION_LIMIT`` inputs; graft only) re-estimates batch-norm
    statistics after the graft.

    `align` (needs `calibration_data`): after the graft, regress the target's stages onto the
    source's and fit its classifier to the source's logits (``netgraft.align``; costs about
    as much as `align_steps` training steps, 30 by default). ``True`` always, ``"auto"`` for
    distant pairs only (similarity below ``DISTANT_SIMILARITY`` and a target that does not
    contain the source: other families, where copied tensors alone transfer little),
    ``False`` (default) never. When the grafted stages explain
    less than 30% of the source's feature variance (measured: aligning such pairs stage by
    stage ended behind the plain graft), the same steps distil the source's logits into the
    whole target instead (``report.alignment.method == "logits"``).
    `split_noise` (within a family only): relative, zero-sum jitter of how a widened layer's
    fan-in is split among the replicas of a unit, so the replicas — identical at the start —
    do not stay identical under training (``0`` keeps Net2Net's exact even split; the grafted
    function is the same either way). `seed` seeds that jitter.
    `align_steps` overrides the number of regression steps. `shrink`: which channels a
    narrower target keeps, consistently across connected layers: ``"consecutive"`` (the first
    ones), ``"uniform"`` (evenly spaced), ``"importance"`` (largest weights, the L1 norm of
    each unit's own), ``"norm_scale"`` (largest batch-norm scales |γ|, network slimming's
    criterion) or ``"auto"`` (default: for a close pair, similarity ≥ ``DISTANT_SIMILARITY``,
    i.e. one family at a smaller size, norm_scale when the source has batch norms and no grouped
    convolution other than depthwise (``slimmable``), else consecutive; uniform for a distant
    pair); ``report.shrink`` says which was used. Measured (Fashion-MNIST
    32×32, 3,000 images, PreciseBN, 2 seeds; accuracy at step 0 / after one epoch of 46
    steps): regnetx_004 → regnetx_002 consecutive 49.1 / 78.6, uniform 12.1 / 77.1, dpiat's
    crop 35.7 / 78.2; regnety_004 → regnety_002 39.6 / 78.2, 9.8 / 73.2, 11.6 / 72.5;
    mobilenetv3_large_100 → _075 46.3 / 70.3, 42.9 / 71.4, 41.0 / 71.4; with norm_scale 52.9
    at step 0 and, over 12 seeds, 72.3 at epoch 1 against 70.9 for dpiat's crop.

    `autoinit`: the conv/linear layers nothing was transferred to (not the classifier, not
    the zeroed layers of identity blocks) are rescaled data-free so that each passes on the
    scale of its input as it was before the activation in between (``netgraft.autoinit`` in
    ``"preserve"`` mode), instead of imposing
    the scale of their own init between transferred layers.

    `norm_stats`: what the target's batch norms hold as running statistics after the graft.
    ``"copy"``: the source's. ``"probe"``: re-estimated data-free, on a few batches of
    standard-normal inputs shaped like the example input (the activations' *scale*, which is
    what goes wrong, is set by the weights, not by the input distribution). ``"reset"``:
    mean 0, variance 1. ``"auto"`` (default): ``"probe"`` for a distant pair given no
    `calibration_data`, ``"copy"`` otherwise. Why: between families the source's statistics
    describe other activations and can be off by orders of magnitude (a trained resnet's
    zero-ish block-output norms give variances ~1e-4); an eval-mode forward is then wrong for
    hundreds of training steps, until momentum washes them out — measured resnet18 →
    efficientnet_b0: 10% test accuracy after 50 steps with copied or reset statistics, 77% with
    probed ones (random init: 26–55%). A containing target keeps the copied statistics, which
    are exactly right for it.

    Tempered head (``head="auto"``, distant pairs whose target does not contain the source): a
    copied classifier is a readout trained on the *source's* features; across families the
    target's features at the head are other features, so the copy makes confident, wrong
    predictions, and the first steps' large losses push the whole network around. Its logits on
    the noise probe are compared with those of the target's own init head on the same features;
    when they are larger the copy is scaled down to the init's scale (``report.head_scale``).
    Measured (Fashion-MNIST 32×32, 3,000 images, 50 steps, 4 seeds) mobilenetv3_large_100 →
    convnext_atto: copied logits 18× the init's, initial loss 8.8 (ln 10 = 2.3), 72.0% after
    50 steps against 77.8% from random init; tempered (×0.054): 78.0%. efficientnet_b0 →
    resnet18 (2 seeds): copied logits 10×, 65.6% → tempered (×0.10) 73.4% (random 71.6%).

    `min_score`: matched layers scoring below it are left at their init (not the classifier,
    not the zeroed layers of identity blocks). ``"auto"`` (default): ``WEAK_SCORE`` (0.25) for
    a distant pair whose target does not contain the source, 0 otherwise (everything matched
    is transferred); ``report.left_weak`` names them. Why: evaluated with batch-norm statistics
    re-estimated before each evaluation (``train(precise_bn=)``, which removes the running
    statistics' lag), copying weakly matched tensors across families *hurt*: Fashion-MNIST
    32×32, 6,000 images, 2 seeds, accuracy after 25 / 50 / 75 / 93 steps — efficientnet_b0 →
    resnet18 71.5 / 76.6 / 78.6 / 78.7 vs random 73.8 / 79.6 / 81.3 / 81.8, with weak layers
    left at init 71.9 / 78.6 / 80.7 / 81.9; convnext_atto → resnet26 60.6 / 68.8 / 73.1 / 74.2 vs
    random 68.1 / 75.0 / 75.8 / 76.8, weak left 66.2 / 74.2 / 75.2 / 75.2; while pairs that gain
    keep their gain (resnet18 → efficientnet_b0 71.4 / 76.8 / 78.2 / 79.6 → 71.5 / 75.5 / 77.5 /
    79.5, random 26.9 / 37.9 / 46.0 / 51.8; regnetx_004 → mobilenetv3 54.4 / 66.1 / 71.1 / 73.8
    → 54.1 / 65.3 / 69.8 / 73.4, random 35.7 / 42.8 / 48.1 / 51.8).

    Without `calibration_data`, a distant pair emits a ``NetgraftWarning`` naming the layers
    left at init.
    """
    source, target = uncompiled(source), uncompiled(target)
    if head not in HEAD_POLICIES:
        raise ValueError(f"head={head!r}: choose one of {HEAD_POLICIES}")
    if align not in ALIGN_POLICIES:
        raise ValueError(f"align={align!r}: choose one of {ALIGN_POLICIES}")
    align = align if isinstance(align, str) else bool(align)  # 1, numpy.bool_(True) ...
    for flag, value in (("autoinit", autoinit), ("identity_blocks", identity_blocks)):
        if value not in (False, True):  # "no" would read as True
            raise ValueError(f"{flag}={value!r}: give True or False")
    from .align import whole

    if align_steps is not None and whole(align_steps) is None:
        raise ValueError(f"align_steps={align_steps!r}: give a whole number of steps >= 0, or "
                         f"None for the default")
    if shrink not in SHRINK_POLICIES:
        raise ValueError(f"shrink={shrink!r}: choose one of {SHRINK_POLICIES}")
    if isinstance(split_noise, bool) or not isinstance(split_noise, (int, float)) \
            or not 0.0 <= split_noise < 1.0:
        raise ValueError(f"split_noise={split_noise!r}: use 0 (exact Net2Net split) up to "
                         f"below 1 (a relative jitter)")
    if norm_stats not in NORM_STATS_POLICIES:
        raise ValueError(f"norm_stats={norm_stats!r}: choose one of {NORM_STATS_POLICIES}")
    if align is True and calibration_data is None:
        raise ValueError("align=True needs calibration_data= (a few hundred unlabeled inputs)")
    if whole(seed) is None:
        raise ValueError(f"seed={seed!r}: give a whole number >= 0")
    if calibration_data is not None and not (
            isinstance(calibration_data, (torch.Tensor, Iterable))
            or type(calibration_data).__module__ == "numpy"):
        raise TypeError(f"calibration_data must be a tensor or array of inputs (N, ...) or an "
                        f"iterable of batches, got {type(calibration_data).__name__}")
    example_input, source_input = as_input(example_input), as_input(source_input)
    for flag, given in (("example_input", example_input), ("source_input", source_input)):
        if isinstance(given, torch.Tensor) and given.ndim and given.shape[0] == 0:
            raise ValueError(f"{flag} is a batch of 0 inputs {tuple(given.shape)}: give at "
                             f"least one (two for batch norms computing batch statistics)")
    if isinstance(example_input, torch.Tensor) and example_input.is_floating_point() \
            and not torch.isfinite(example_input).all():
        raise ValueError("example_input holds NaN or inf values: the graft's output gap and "
                         "noise probes are measured on it; give finite inputs")
    ignored = [name for name, given in (
        ("head=", head != "auto"), ("shrink=", shrink != "auto"),
        ("split_noise=", split_noise != SPLIT_NOISE), ("autoinit=", bool(autoinit)),
        ("calibration_data=", calibration_data is not None), ("align=", align is True)) if given]
    if method == "dpiat" and ignored:
        warnings.warn(NetgraftWarning(
            f"method='dpiat' reproduces the authors' transfer (centre crop, every matched "
            f"tensor copied, the head too): {', '.join(ignored)} "
            f"{'is' if len(ignored) == 1 else 'are'} ignored (the default method's, "
            f"method='graft')"), stacklevel=2)
    for role, model in (("source", source), ("target", target)):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{role} must be a torch.nn.Module, got {type(model).__name__}")
    if source is target:
        raise ValueError("source and target are the same module object")
    for role, model in (("source", source), ("target", target)):
        check_traceable(model, role, values=True)
    get_method(method)
    shared = {id(p) for p in source.parameters()} & {id(p) for p in target.parameters()}
    if shared:
        raise ValueError(f"source and target share {len(shared)} parameter tensors (a module used "
                         f"in both); grafting would overwrite the source: deep-copy it first")
    if reparametrized(target):
        check_writable(target)
    if isinstance(calibration_data, Iterator):  # a generator: norms and align both read it
        calibration_data = _read_once(calibration_data)
    if reparametrized(source) or reparametrized(target):  # traced and grafted as plain copies
        return _transfer_reparametrized(
            source, target, example_input=example_input, source_input=source_input,
            method=method, head=head, identity_blocks=identity_blocks,
            calibration_data=calibration_data, align=align, align_steps=align_steps,
            shrink=shrink, autoinit=autoinit, norm_stats=norm_stats, min_score=min_score,
            split_noise=split_noise, seed=seed)
    for role, arch, model in (("source", source_arch, source), ("target", target_arch, target)):
        if arch is not None and arch.model is not model:
            raise ValueError(f"{role}_arch was traced from another model than {role}")
    # all or nothing: a failure half-way must not leave a half-grafted target behind; the
    # noise probes and example inputs draw from a forked generator, so the caller's random
    # stream (the training that follows) is the same with or without the graft
    with torch.random.fork_rng(devices=[]), keep_modes(source, target):
        report = _transfer_kept(source, target, example_input, source_input, method, head,
                                shrink, autoinit, min_score, split_noise, seed, source_arch,
                                target_arch, identity_blocks, norm_stats, calibration_data,
                                align, align_steps)
    _follow_owners(report)
    return report


def _follow_owners(report: TransferReport) -> None:
    """Give each tied tensor's record the action of the tensor it is tied to (what it holds
    is what was written there); it stays out of the coverage (``parameter=False``)."""
    owned = {_qual(r.target, t.name): t for r in report.pairs for t in r.tensors
             if not t.how.startswith(TIED)}
    for t in (t for r in report.pairs for t in r.tensors if t.how.startswith(TIED)):
        owner = owned.get(t.how[len(TIED):].split(";")[0])
        if owner is not None:
            t.action, t.filled, t.source_shape = owner.action, owner.filled, owner.source_shape


#: most inputs read from a calibration iterator (it is read once, then served to every step)
CALIBRATION_LIMIT = CALIBRATION_IMAGES


def _read_once(batches: Iterator) -> list:
    """The batches of an iterator, up to `CALIBRATION_LIMIT` inputs (an endless sampler
    stops there)."""
    out, seen = [], 0
    for batch in batches:
        out.append(batch)
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        seen += len(x) if hasattr(x, "__len__") else 1
        if seen >= CALIBRATION_LIMIT:
            break
    return out


def _transfer_reparametrized(source: nn.Module, target: nn.Module, **kwargs) -> TransferReport:
    """`transfer` for models with computed weights (weight norm, spectral norm, other
    parametrizations): graft plain copies (`reparam.plain_copy`), then write the target's
    grafted tensors back through its parametrizations."""
    plain_source = plain_copy(source) if reparametrized(source) else source
    plain_target = plain_copy(target) if reparametrized(target) else target
    report = transfer(plain_source, plain_target, **kwargs)
    if plain_target is not target:
        with torch.random.fork_rng(devices=[]):  # a right_inverse may draw (orthogonal's)
            write_back(plain_target, target)
        changed = changed_by_write_back(target, plain_target)
        if changed:
            report.constrained = changed
            if report.function_gap is not None:
                report.function_gap = _function_gap(source, target, report)
                report.function_note = _why_not_preserved(report)
    return report


def _transfer_kept(source, target, example_input, source_input, method, head, shrink, autoinit,
                   min_score, split_noise, seed, source_arch, target_arch, identity_blocks,
                   norm_stats, calibration_data, align, align_steps) -> TransferReport:
    """`transfer` after its argument checks, its models' train/eval flags kept by the caller."""
    backup = {k: v.detach().clone() for k, v in target.state_dict().items()}
    try:
        with single_thread():
            report = _transfer(source, target, example_input, source_input, method, head,
                               source_arch, target_arch, identity_blocks and method != "dpiat",
                               shrink, split_noise, seed)
        if method != "dpiat" and _zero_weights_new(report):
            report = _without_zero_weights(source, target, report, backup, head,
                                           identity_blocks, shrink, split_noise, seed)
        report.identity_blocks = bool(identity_blocks)
        if method != "dpiat" and (embeds(report.matching)
                                  or (_backbone_of(report.matching) is not None
                                      or _new_head(report.matching) is not None
                                      or _other_outputs(report.matching)
                                      and _new_head(report.matching, same_input=False) is None)
                                  and embeds(report.matching, classifier=False)):
            # the graft's own function (a backbone's: the features of the source's classifier)
            start = time.perf_counter()
            report.function_gap = _function_gap(source, target, report)
            if (identity_blocks and report.function_gap is not None
                    and report.function_gap >= FUNCTION_GAP):
                _identity_layers(source, target, report)
            report.seconds += time.perf_counter() - start
        elif (method != "dpiat" and embeds(report.matching, classifier=False)
              and (heads := _new_head(report.matching, same_input=False)) is not None):
            a, b = heads  # another class count, read from wider features: nothing to compare
            report.uncompared = [f"the classifier {b.name} predicts {b.out_dim} classes where "
                                 f"the source's predicts {a.out_dim}, and reads {b.in_dim} "
                                 f"features where it reads {a.in_dim}"]
        # a distant pair whose target does not contain the source (the rules below are for it)
        distant = closes_gates(report.matching, report.similarity)
        untouched = min_score == "auto" and unrelated(report.matching, report.similarity)
        if min_score == "auto":
            min_score = default_min_score(report.matching, report.similarity)
        if (isinstance(min_score, bool) or not isinstance(min_score, (int, float))
                or not 0.0 <= min_score <= 1.0):
            raise ValueError(f"min_score={min_score!r}: give a number in [0, 1] or 'auto'")
        if untouched:
            _leave_all(report, target, backup)
        elif min_score > 0:
            _leave_weak(report, target, backup, float(min_score))
        if autoinit and method != "dpiat" and not untouched:
            _autoinit_unmatched(target, report, example_input)
        _carry_batch_counts(source, target, report)
        if norm_stats == "auto":
            norm_stats = ("probe" if calibration_data is None and distant and not untouched
                          else "copy")
        if norm_stats == "reset":
            report.reset_norms = _reset_norm_stats(target, report)
        elif norm_stats == "probe" and calibration_data is None:
            start = time.perf_counter()
            report.probed_norms = _probe_norm_stats(target, report)
            report.seconds += time.perf_counter() - start
        aligning = calibration_data is not None and method != "dpiat" and (
            align is True or (align == "auto" and distant))
        # an exact graft, its norms re-estimated below as align re-estimates the source's,
        # already computes what the alignment would pull it toward: aligning could only move it
        # away (and align's never-worse check would undo it), so the time is not spent
        exact = report.function_gap is not None and report.function_gap < FUNCTION_GAP
        if aligning and exact:
            warnings.warn(NetgraftWarning(
                f"{report.source} → {report.target}: the graft already computes the source's "
                f"function (relative output gap {report.function_gap:.1e}); aligning it to the "
                f"source could only move it away, so the alignment was skipped"), stacklevel=3)
        # a target left wholly at its init is distilled straight away (its random features have
        # nothing to align stage by stage), and that re-estimates the norms at its end
        distil_only = aligning and untouched
        if calibration_data is not None and method != "dpiat" and not distil_only:
            start = time.perf_counter()
            report.calibrated = recalibrate_norms(target, calibration_data)
            _mark_calibrated(target, report)
            report.seconds += time.perf_counter() - start
        if head == "auto" and distant:
            start = time.perf_counter()
            _temper_head(target, report, backup)
            report.seconds += time.perf_counter() - start
        if aligning and exact:
            from .align import AlignReport

            report.alignment = AlignReport(
                method="none", skipped=True, lr_factor=1.0,
                note=f"the graft computes the source's function (relative output gap "
                     f"{report.function_gap:.1e}): nothing to align")
        elif aligning:
            from .align import align as align_features
            kwargs = {"seed": seed, **({} if align_steps is None else {"steps": align_steps})}
            # a target left wholly at its init has nothing for align's never-worse check to
            # keep (and the benchmark counts the alignment's time: the check is a forward pass)
            report.alignment = align_features(source, target, calibration_data,
                                              method="logits" if distil_only else "auto",
                                              keep_better=not distil_only, **kwargs)
            report.seconds += report.alignment.seconds
            if distil_only:
                start = time.perf_counter()
                report.calibrated = (report.alignment.calibrated
                                     or recalibrate_norms(target, calibration_data))
                _mark_calibrated(target, report)
                report.seconds += time.perf_counter() - start
        if report.function_gap is not None:
            report.function_note = _why_not_preserved(report)
    except BaseException:
        load_into(target, backup)
        raise
    if (method != "dpiat" and not untouched and not distant  # (a distant pair's warning says it)
            and (scaled := _badly_scaled(source, target, report))):
        warnings.warn(NetgraftWarning(scaled), stacklevel=3)
    if untouched:
        warnings.warn(NetgraftWarning(_unrelated_message(report)), stacklevel=3)
    elif calibration_data is None and method != "dpiat" and distant:
        weak = report.weak_layers()
        probed = (" (batch-norm statistics were re-estimated on a noise probe)"
                  if report.probed_norms else "")
        shown = ", ".join(weak[:8]) + (f" and {len(weak) - 8} more" if len(weak) > 8 else "")
        message = (
            f"{report.source} → {report.target} is a distant pair (similarity "
            f"{below(report.similarity)} < {DISTANT_SIMILARITY}): copied tensors transfer little "
            f"between families{probed}. Pass "
            f"calibration_data= (a few hundred unlabeled inputs) to recalibrate on real inputs "
            f"(and align=True to align the target's features to the source's). "
            + ("The copied classifier was more confident than a random one on features it "
               "was not trained on: "
               + (f"it was scaled ×{report.head_scale:.3g} to the init's scale"
                  if report.head_scale > 0 else "it was reset to its init")
               + " (head='reset' leaves it random). "
               if report.head_scale is not None else "")
            + (f"{len(weak)} layers matched weakly (score < {WEAK_SCORE}) and are best left "
               f"random: {shown}. " if weak else "")
            + (f"{len(report.left_weak)} weakly matched layers (score < {WEAK_SCORE}) were left "
               f"at their init ({_listed(report.left_weak, 6)}; min_score=0 transfers them too). "
               if report.left_weak else "")
            + (f"{len(report.gated_off)} target blocks start gated off (a layer scale near zero "
               f"or a residual branch's zero-initialised last norm, kept as at init in a "
               f"distant pair): what they receive acts only once training opens their gates, "
               f"so this graft gives mostly the stem, downsampling and head "
               f"({_listed(report.gated_off, 4)})." if report.gated_off else ""))
        warnings.warn(NetgraftWarning(message.strip()), stacklevel=3)
    if not untouched and report.coverage == 0:
        warnings.warn(NetgraftWarning(
            f"{report.source} → {report.target}: no target layer received anything from the "
            f"source (similarity {report.similarity:.2f}); the target keeps its init"),
            stacklevel=3)
    elif not untouched and not distant and report.similarity < UNRELATED_SIMILARITY:
        warnings.warn(NetgraftWarning(
            f"{report.source} → {report.target}: grafted as one network inside the other, "
            f"but the two share almost nothing (similarity "
            f"{below(report.similarity)} < {UNRELATED_SIMILARITY}): check that this is the pair "
            f"you meant"), stacklevel=3)
    return report


#: a containing target whose relative output gap is at least this (outputs differ by more than
#: their own scale) for a reason the report does not name gets a warning (`_badly_scaled`)
BADLY_SCALED_GAP = 1.0
#: a target not containing its source whose largest output is this many times the source's
#: (on the example input) gets a warning (`_badly_scaled`)
BADLY_SCALED_RATIO = 100.0


def _badly_scaled(source: nn.Module, target: nn.Module, report: TransferReport) -> str | None:
    """A warning for a graft whose outputs are far off the source's, which no note names: a
    containing target with a relative output gap of `BADLY_SCALED_GAP` or more and no named
    reason, or a target not containing its source (nothing compared) whose largest output on
    the example input is `BADLY_SCALED_RATIO` times the source's or more. None otherwise."""
    pair = f"{report.source} → {report.target}"
    gap = report.function_gap
    if gap is not None:
        if gap >= BADLY_SCALED_GAP and UNNAMED_GAP in report.function_note:
            return (f"{pair}: the grafted target does not compute the source's function "
                    f"(relative gap {gap:.3g}, for a reason the report does not name) and its "
                    f"outputs may be badly scaled: check them (or fine-tune) before using it")
        return None
    try:
        inputs = _input_pairs(report.matching)[0]
        expected = eval_output(source, inputs[0])
        got = eval_output(target, inputs[1])
    except Exception:  # a target that takes other inputs: nothing to compare
        return None
    s_max, t_max = _peak(expected), _peak(got)
    if s_max is None or t_max is None or not math.isfinite(s_max) or s_max <= 0:
        return None
    if not math.isfinite(t_max):
        return (f"{pair}: the grafted target's output on the example input holds NaN or inf "
                f"values (the source's is finite): the grafted target does not compute the "
                f"source's function and its outputs are badly scaled")
    ratio = t_max / s_max
    if ratio < BADLY_SCALED_RATIO:
        return None
    return (f"{pair}: the grafted target does not compute the source's function (it does not "
            f"hold the source, so the two were not compared layer for layer) and its outputs "
            f"may be badly scaled: on the example input its largest output is {t_max:.3g}, "
            f"{ratio:.3g}× the source's ({s_max:.3g}); check the pairs the report lists "
            f"(or fine-tune) before using it")


def _peak(output: Any) -> float | None:
    """The largest |value| among a model output's floating tensors (None without any)."""
    peaks = [float(t.detach().abs().max()) for t in _tensors_of(output)
             if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()]
    return max(peaks) if peaks else None


def _zero_weights_new(report: TransferReport) -> bool:
    return any(adapt.ZERO_WEIGHTED in t.how for r in report.pairs for t in r.tensors)


def _without_zero_weights(source: nn.Module, target: nn.Module, report: TransferReport,
                          backup: dict[str, torch.Tensor], head: str, identity_blocks: bool,
                          shrink: str, split_noise: float, seed: int) -> TransferReport:
    """A growth that zero-weighted the channels of new layers keeps the source's function only
    if the shared layers still read what their sources read. When the features reaching the
    classifier say it did not (a new layer's output is *added* to a shared layer's input —
    res2net_4s → _8s — not concatenated), graft again with the size-keyed rules for those
    channels and keep whichever features are closer to the source's. Measured on the
    classifier's input, so a new head (another class count, ``head="reset"``) does not decide."""
    start = time.perf_counter()
    gap = _feature_gap(source, target, report)
    if gap is None or gap < FUNCTION_GAP:
        report.seconds += time.perf_counter() - start
        return report
    first = {k: v.detach().clone() for k, v in target.state_dict().items()}
    load_into(target, backup)
    with single_thread():
        other = _transfer(source, target, None, None, report.method, head,
                          report.matching.source, report.matching.target, identity_blocks,
                          shrink, split_noise, seed, zero_new=False)
    other_gap = _feature_gap(source, target, other)
    if other_gap is not None and other_gap < gap:
        other.regrafted = (f"zero-weighting the new layers' channels left the features "
                           f"{gap:.2g} from the source's (its new layers' outputs are added to, "
                           f"not concatenated with, what shared layers read); the size-keyed "
                           f"graft ({other_gap:.2g}) was kept")
        kept = other
    else:
        load_into(target, first)
        kept = report
    kept.seconds = report.seconds + time.perf_counter() - start
    return kept


#: why a layer of a plain network starts as the identity (`_identity_layers`)
IDENTITY_LAYER = "identity: a layer with no source of its own starts as the identity (Net2Net deeper)"


def _identity_layers(source: nn.Module, target: nn.Module, report: TransferReport) -> None:
    """Net2Net's deeper operator for plain (non-residual) networks, whose new layers the
    identity blocks cannot reach: a target layer with no source of its own (unmatched, or a
    repeat of a source layer already used) starts as the identity (`growth.set_identity`:
    averaging the replicas of each source unit where it changes width), with the batch norms
    right after it. Kept only where it brings the target's output closer to the source's
    (`function_gap`): all such layers at once, else each on its own in execution order."""
    matching = report.matching
    layers = matching.target.layers
    records = {r.target: r for r in report.pairs}
    # a source layer that fills several target layers is their own in the one of its stride
    # and shape, else of its stride (a strided conv downsamples where the source's did: a
    # plain stack grown deeper and wider has no target layer of the source's shape), else of
    # its shape, else the first; the others are repeats. A target layer holding the source
    # layer comes before one that would clip it (an MLP 16, 32 → 24, 24, 48, 48: the run of
    # the source's 32×16 layer over the target's 24×24 and 48×24 ones is the 48×24 one's)
    by_source: dict[int, list[int]] = {}
    for t in sorted(matching.pairs):
        if matching.pairs[t] is not None:
            by_source.setdefault(matching.pairs[t], []).append(t)

    def unlike(t: int, s: int) -> tuple[bool, bool, bool, bool]:
        a, b = matching.source.layers[s], layers[t]
        # a grouped conv that changes the width cannot start as the identity: it keeps the
        # source layer (a grouped 8 → 16 conv run over 16 → 16, 16 → 32, 32 → 32 ones)
        return a.stride != b.stride, not holds(a, b), not fixed_width(b), a.shapes != b.shapes

    own = {s: min(ts, key=lambda t: unlike(t, s)) for s, ts in by_source.items()}
    # a norm is its own where the layer it normalises is (a run of a conv and its norm whose
    # conv is the widening grouped one's, `fixed_width`, not the first of the run's)
    names = {layer.name: layer.index for layer in matching.source.layers}
    for s, ts in by_source.items():
        conv = normalised(matching.source.layers[s])
        if len(ts) < 2 or names.get(conv) not in own:
            continue
        read = layers[own[names[conv]]].name
        after = [t for t in ts if normalised(layers[t]) == read]
        if after:
            own[s] = after[0]
    fresh = [t for t in sorted(matching.pairs)
             if matching.pairs[t] is None or own[matching.pairs[t]] != t]
    # how many source units each target layer's output carries (replicated when wider)
    units = {layers[t].name: matching.source.layers[s].out_dim
             for t, s in matching.pairs.items() if s is not None and t not in fresh}
    groups, saved = [], []
    for t in fresh:
        layer = layers[t]
        if (layer.kind not in ("linear", "conv") or layer.role == "output"
                or records[layer.name].note.startswith("zeroed")):
            continue
        read = layer.in_layout
        carried = units.get(read[0][0]) if read and not layer.concatenated else None
        group = [layer]
        while (group[-1].index + 1 in fresh and group[-1].index + 1 < len(layers)
               and layers[group[-1].index + 1].kind == "batchnorm"):
            group.append(layers[group[-1].index + 1])
        before = snapshot(t for x in group for t in own_tensors(x.module).values())
        if all(set_identity(x, carried) for x in group):
            groups.append(group)
            saved.append(before)
            if carried:
                units[layer.name] = carried
        else:
            put_back(before)
    if not groups:
        return
    # all at once (a random layer further on hides what one identity gains), else one by one
    gap = _function_gap(source, target, report)
    if gap is not None and gap < report.function_gap * 0.999:
        kept = groups
        report.function_gap = gap
    else:
        kept = []
        for before in saved:
            put_back(before)
        for group, before in zip(groups, saved):  # `before` is again what they hold
            gap = None
            if all(set_identity(x, units.get(group[0].name)) for x in group):
                gap = _function_gap(source, target, report)
            if gap is None or gap >= report.function_gap * 0.999:
                put_back(before)
                continue
            kept.append(group)
            report.function_gap = gap
    for x in (x for group in kept for x in group):
        record = records[x.name]
        record.note = IDENTITY_LAYER
        for tensor in record.tensors:
            tensor.action, tensor.how, tensor.filled = "init", IDENTITY_LAYER, 0
    report.coverage = _coverage(report.pairs)


def _feature_gap(source: nn.Module, target: nn.Module, report: TransferReport) -> float | None:
    """How far the features reaching the target's classifier are from the source's, on the
    inputs of `_paired_inputs` (eval mode): for each target feature, the nearest source feature
    (a widened target replicates them), largest |difference| relative to the source's largest
    feature. None when there is no such pair of layers or the shapes do not compare."""
    matching = report.matching
    heads = [(t, s) for t, s in matching.pairs.items() if s is not None
             and matching.target.layers[t].role == "output"]
    if not heads:
        return None
    t, s = heads[0]
    seen: dict[str, torch.Tensor] = {}

    def catch(key):
        def hook(module, args):
            if key not in seen and args and isinstance(args[0], torch.Tensor):
                seen[key] = args[0].detach()
        return hook

    handles = [matching.source.layers[s].module.register_forward_pre_hook(catch("s")),
               matching.target.layers[t].module.register_forward_pre_hook(catch("t"))]
    try:
        inputs = _paired_inputs(matching)
        eval_output(source, inputs[0])
        eval_output(target, inputs[1])
    except Exception:  # a target that takes other inputs
        return None
    finally:
        for h in handles:
            h.remove()
    a, b = seen.get("s"), seen.get("t")
    if a is None or b is None or a.ndim < 2 or a.shape[2:] != b.shape[2:] or a.shape[0] != b.shape[0]:
        return None
    rows_a = a.transpose(0, 1).reshape(a.shape[1], -1).float()
    rows_b = b.transpose(0, 1).reshape(b.shape[1], -1).float()
    nearest = torch.cdist(rows_b, rows_a, p=float("inf")).min(1).values.max()
    return relative_gap(nearest, a)


def _function_gap(source: nn.Module, target: nn.Module, report: TransferReport) -> float | None:
    """For a target holding every source layer (`embeds`): the largest
    |target − source| output on the source's example input in eval mode, relative to the
    source's largest output; None when the target does not take that input or
    the outputs differ in shape (e.g. another class count). When the two read other numbers of
    input channels, both run on one gray image repeated to their channels."""
    heads = _new_head(report.matching)
    classifier = _backbone_of(report.matching) or (heads[0] if heads else None)
    features: list[torch.Tensor] = []  # what the source's classifier reads
    read: list[torch.Tensor] = []  # what the target's new classifier reads

    def first_input(layer: Layer, into: list):
        return layer.module.register_forward_pre_hook(
            lambda module, args: into.append(args[0].detach()) if not into else None)

    hooks = ([] if classifier is None else [first_input(classifier, features)]) + (
        [first_input(heads[1], read)] if heads else [])
    try:
        failed = None
        for inputs in _input_pairs(report.matching):
            features.clear(), read.clear()
            try:
                expected, got = eval_output(source, inputs[0]), eval_output(target, inputs[1])
                break
            except Exception as error:  # a target that takes other inputs (its own differ)
                if failed is None:
                    failed = (f"{_which_failed(source, inputs[0])} raised "
                              f"{type(error).__name__} on the source's example input: "
                              f"{first_line(error, 160)}")
        else:
            report.uncompared = [failed]
            return None
    finally:
        for hook in hooks:
            hook.remove()
    if any(isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all()
           for t in _tensors_of(expected)):
        report.uncompared = ["the source's own output on its example input holds NaN or inf "
                             "values (check its weights and norm statistics): nothing to "
                             "compare with"]
        return None
    if heads:  # another class count: the features both classifiers read
        got = read[0] if read else None
    if classifier is not None:  # a backbone computes what the source's classifier reads
        expected = features[0].flatten(1) if features else None
        got = got.flatten(1) if isinstance(got, torch.Tensor) else None
        if expected is None or got is None or expected.shape != got.shape:
            if expected is not None and got is not None:  # a wider backbone's features
                what = "classifier reads" if heads else "output is"
                report.uncompared = [
                    f"the target's {what} {tuple(got.shape)} where the source's classifier "
                    f"reads {tuple(expected.shape)}"]
            return None
        report.uncompared = []
        return relative_gap((got - expected).abs().max(), expected)
    expected, got = _tensors_of(expected), _tensors_of(got)  # every output of a multi-head
    if not expected or not got:
        return None
    if len(expected) != len(got):  # (logits, features) for plain logits: their first outputs
        counted = f"the source returns {len(expected)} output{'s' if len(expected) > 1 else ''}, " \
                  f"the target {len(got)}"
        a, b = expected[0], got[0]
        if a.shape != b.shape or not (a.is_floating_point() and b.is_floating_point()):
            report.uncompared = [f"{counted}, and their first ones differ in shape "
                                 f"({tuple(a.shape)} and {tuple(b.shape)})"]
            return None
        report.uncompared = [f"{counted}: only their first ones are compared"]
        return relative_gap((b - a).abs().max(), a)
    same = [(a, b) for a, b in zip(expected, got)
            if a.shape == b.shape and a.is_floating_point() and b.is_floating_point()]
    # outputs of another shape (a head with other classes, beside one that matches or not)
    # are not compared; the note says which
    report.uncompared = [f"output {i} is {tuple(b.shape)} where the source's is {tuple(a.shape)}"
                         for i, (a, b) in enumerate(zip(expected, got)) if a.shape != b.shape]
    return max(relative_gap((b - a).abs().max(), a) for a, b in same) if same else None


def _which_failed(source: nn.Module, example: Any) -> str:
    """'the source' when `source` fails on its own example input too, else 'the target'."""
    try:
        eval_output(source, example)
    except Exception:
        return "the source"
    return "the target"


def _new_head(matching: Matching, *, same_input: bool = True) -> tuple[Layer, Layer] | None:
    """For a target whose one classifier predicts another number of classes than the source's
    (fine-tuning for other classes): the two classifiers, when they read features of one shape
    (`same_input`), so that what they read can be compared instead of their outputs."""
    heads = [[layer for layer in arch.layers if layer.role == "output"]
             for arch in (matching.source, matching.target)]
    if any(len(h) != 1 for h in heads):
        return None
    (a,), (b,) = heads
    if (a.kind != b.kind or a.kind not in ("linear", "conv") or a.out_dim == b.out_dim
            or same_input and a.in_dim != b.in_dim):
        return None
    return a, b


def _other_outputs(matching: Matching) -> bool:
    """Whether the target's output layers predict other counts than the source's (several
    heads, as DeiT's distillation head, with another class count), or it has none (a
    backbone): the outputs are then compared where their shapes agree, and the others named."""
    return ([layer.out_dim for layer in matching.source.layers if layer.role == "output"]
            != [layer.out_dim for layer in matching.target.layers if layer.role == "output"])


def _backbone_of(matching: Matching) -> Layer | None:
    """For a target without a classifier (a backbone, ``num_classes=0``) grafted from a source
    with one: the source's classifier, whose input is what the target's output should be."""
    heads = [layer for layer in matching.source.layers if layer.role == "output"]
    if len(heads) != 1 or any(layer.role == "output" for layer in matching.target.layers):
        return None
    return heads[0]


def _paired_inputs(matching: Matching) -> tuple[Any, Any]:
    """What the source and the target run on when their outputs or features are compared: the
    source's example input, or one gray image repeated to each one's input channels."""
    return _input_pairs(matching)[0]


def _input_pairs(matching: Matching) -> list[tuple[Any, Any]]:
    """`_paired_inputs`, then, when the two example inputs have other sizes (an input given
    for one model only, the other's guessed), the same made of the target's example input:
    a convolutional source takes it as well."""
    example, theirs = matching.source.example_input, matching.target.example_input
    pairs = [_gray_inputs(example, theirs) or (example, example)]
    if (isinstance(example, torch.Tensor) and isinstance(theirs, torch.Tensor)
            and example.ndim == theirs.ndim >= 3 and example.shape[2:] != theirs.shape[2:]
            and theirs.is_floating_point()):
        ours = theirs if example.shape[1] == theirs.shape[1] else \
            theirs.mean(1, keepdim=True).expand(-1, example.shape[1], *theirs.shape[2:])
        pairs.append(_gray_inputs(ours, theirs) or (theirs, theirs))
    return [(_in_dtype_of(a, matching.source.model), _in_dtype_of(b, matching.target.model))
            for a, b in pairs]


def _float_dtype(model: nn.Module | None) -> torch.dtype | None:
    param = float_param(model) if model is not None else None
    return param.dtype if param is not None else None


def _in_dtype_of(x: Any, model: nn.Module | None) -> Any:
    """A floating input tensor in the dtype `model` computes in (a float64 source's example
    input for a float32 target); anything else as it is."""
    dtype = _float_dtype(model)
    if dtype is None or not isinstance(x, torch.Tensor) or not x.is_floating_point():
        return x
    return x.to(dtype)


def _gray_inputs(source: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """For two models reading other numbers of input channels: one gray input, repeated to
    each one's channels (what their stems' channel mapping keeps exactly); None otherwise."""
    if not (isinstance(source, torch.Tensor) and isinstance(target, torch.Tensor)
            and source.ndim == target.ndim >= 3 and source.shape[1] != target.shape[1]
            and source.shape[2:] == target.shape[2:] and source.is_floating_point()):
        return None
    gray = source.mean(1, keepdim=True)
    return (gray.expand(-1, source.shape[1], *source.shape[2:]).contiguous(),
            gray.expand(-1, target.shape[1], *source.shape[2:]).to(target.dtype).contiguous())


def relative_gap(gap: torch.Tensor, reference: torch.Tensor) -> float:
    """`gap` relative to the largest |value| of `reference` (a zero reference: the gap
    itself, relative to the smallest normal number — any difference from zero counts)."""
    scale = reference.abs().max().float().clamp(min=torch.finfo(torch.float32).tiny)
    return (gap.float() / scale).item()


#: how a tensor shared with an earlier layer is recorded (written through that layer)
TIED = "tied to "


def _listed(items: list[str], most: int, sep: str = ", ") -> str:
    """The first `most` of `items` joined by `sep`, and " …" when there are more."""
    return sep.join(items[:most]) + (" …" if len(items) > most else "")


def _unscaled_text(unscaled: list[str]) -> str:
    many = len(unscaled) > 1
    return (f"{len(unscaled)} layer{'s read their' if many else ' reads its'} block's input at "
            f"another constant scale than in the source, and "
            f"{'their weights are' if many else 'its weight is'} standardised with no gain to "
            f"compensate ({_listed(unscaled, 2, '; ')})")


def _constrained_text(names: list[str]) -> str:
    return (f"{len(names)} grafted weights changed when written back through their "
            f"parametrization, which constrains them (e.g. spectral norm divides by the "
            f"largest singular value): {_listed(names, 3)}")


def _unrelated_message(report: TransferReport) -> str:
    """The warning for an unrelated pair's target, left at its init: what was done instead
    (distilled, or why not) and what the user can still do."""
    mismatch = conv_mismatch(report.matching)
    head = (f"{report.source} → {report.target}: the source has {mismatch[0].lower()}"
            f"{mismatch[1:]}; nothing was copied, the target keeps its init" if mismatch else
            f"{report.source} → {report.target} is an unrelated pair (similarity "
            f"{below(report.similarity)} < {UNRELATED_SIMILARITY}): nothing was copied, the "
            f"target keeps its init (grafts this distant measured no better than random init)")
    # what distilling measured on the benchmark (README, issue 4): worth it when labels are few
    worth = ("distilling pays when labeled data are scarce: on 1,000 labeled Fashion-MNIST "
             "images +5.6 to +9.5 points over random init at equal steps; on 3,000, -1.0 to "
             "-0.1 points when random init gets the distillation's time as extra steps")
    aligned = report.alignment
    if mismatch:
        return f"{head}: a source of the target's kind of input is needed."
    if aligned is None:
        done = f". Pass calibration_data= and align=True to distil the source into it ({worth})"
    elif aligned.method == "logits":
        done = (f"; the source was distilled into it instead ({aligned.steps} steps on "
                f"{aligned.images} inputs, report.alignment: {worth})")
    else:
        done = f", and it could not be distilled: {aligned.note}"
    return f"{head}{done}. min_score=0 copies what matched anyway."


def _why_not_preserved(report: TransferReport) -> str:
    """Known reasons a target holding its source does not compute the source's function:
    what the graft cannot preserve, and the later steps that changed the grafted model."""
    matching = report.matching
    src, tgt = matching.source, matching.target
    records = {r.target: r for r in report.pairs}
    norms, groups, regrouped, scalars = [], [], [], []
    for t, s in matching.pairs.items():
        if s is None:
            continue
        a, b = src.layers[s], tgt.layers[t]
        weight = next((r for r in records[b.name].tensors if r.name == "weight"), None)
        if (a.kind in ("layernorm", "groupnorm") and a.weight_shape and b.weight_shape
                and b.weight_shape[0] % a.weight_shape[0]):
            norms.append(f"{b.name} {a.weight_shape[0]}→{b.weight_shape[0]}")
        elif (a.kind == b.kind == "groupnorm"
              and (ga := getattr(a.module, "num_groups", None))
              and (gb := getattr(b.module, "num_groups", None)) and ga != gb):
            regrouped.append(f"{b.name} {ga}→{gb}")
        elif scalar_scale(a, b):
            scalars.append(f"{b.name} {a.numel}→{b.numel}")
        elif (a.kind in ("conv", "conv_transpose")
              and (a.groups > 1 or b.groups > 1) and a.groups != b.groups
              # a depthwise conv holds only a depthwise one; a transposed conv with one input
              # a group is held by any wider one, and only a depthwise-like one keeps it
              and not (adapt.depthwise_like(a) and (a.kind == "conv"
                                                    or adapt.depthwise_like(b)))
              and not (weight and adapt.PACKED in weight.how)):
            groups.append(f"{b.name} {a.groups}→{b.groups} groups")
    # a conv copied onto one that steps or spreads its taps otherwise (a strided conv matched to
    # a stride-1 one, a TCN block of another dilation) computes something else from the same
    # weights; layers started as identities or zeroed compute what they should
    fresh = {r.target for r in report.pairs
             if r.note == IDENTITY_LAYER or r.note.startswith("zeroed")}
    spacing = [f"{b.name} {key} {x[key]}→{y[key]}"
               for t, s in sorted(matching.pairs.items()) if s is not None
               for a, b in [(src.layers[s], tgt.layers[t])]
               if a.kind == b.kind == "conv" and b.name not in fresh
               for x, y in [(_settings(a.module, CONV_SETTINGS),
                             _settings(b.module, CONV_SETTINGS))]
               for key in x if key in y and x[key] != y[key]]
    regridded = _other_grids(matching, fresh)
    reframed = [text for t, s in sorted(matching.pairs.items()) if s is not None
                for a, b in [(src.layers[s], tgt.layers[t])]
                if b.name not in fresh and (text := _padding_unkept(a, b))]
    heads = _uneven_heads(matching)
    post_norm = _new_post_norm_layers(report)
    why = []
    extra = [] if report.identity_blocks else _extra_blocks(src, tgt, matching)
    if extra:
        why.append(f"identity_blocks=False: {len(extra)} target block"
                   f"{'s' if len(extra) > 1 else ''} that repeat a source block or have none "
                   f"({_listed([tgt.blocks[b].name for b in extra], 2)}) keep what was copied "
                   f"into them or their init instead of starting as identities")
    if heads:
        why.append(f"{len(heads)} attention{'s' if len(heads) > 1 else ''} widen their heads by "
                   f"a non-integer factor ({_listed(heads, 2)}): a head's query·key products "
                   f"are summed over other channels and divided by another √(head size); "
                   f"a multiple of the heads, each a multiple as wide, keeps them")
    if post_norm:
        why.append(f"{len(post_norm)} new post-norm transformer layer"
                   f"{'s' if len(post_norm) > 1 else ''} ({_listed(post_norm, 2)}): the norm "
                   f"after each residual sum renormalises what the layer passes on, so a new "
                   f"post-norm layer cannot start as the identity (norm_first=True layers can)")
    if norms:
        why.append(f"{len(norms)} layer norms widen by a non-integer factor, which changes "
                   f"the statistics they normalise by ({_listed(norms, 3)}); integer width "
                   f"factors keep them")
    if groups:
        why.append(f"{len(groups)} grouped convolutions change their grouping "
                   f"({_listed(groups, 3)})")
    if scalars:
        many = len(scalars) > 1
        why.append(f"{len(scalars)} per-channel scale{'s' if many else ''} of the source "
                   f"{'are' if many else 'is'} one scalar in the target ({_listed(scalars, 2)}, "
                   f"a ReZero-style scale): one value cannot scale each channel as the source's "
                   f"did, so it holds their mean")
    if regrouped:
        many = len(regrouped) > 1
        why.append(f"{len(regrouped)} group norm{'s change their' if many else ' changes its'} "
                   f"number of groups ({_listed(regrouped, 3)}): other channels share the "
                   f"statistics {'they normalise' if many else 'it normalises'} by")
    mates = {src.layers[s].name: tgt.layers[t].name for t, s in matching.pairs.items()
             if s is not None}
    lacks = [(module, where) for module, p, q in sorted(src.summed)
             if p in mates and q in mates
             and (where := _missing_sum(module, p, q, mates[p], mates[q], tgt.summed))]
    if lacks:
        shown = [f"the source's {m} adds a skip connection that the target's {w} lacks"
                 for m, w in lacks]
        why.append(f"{len(lacks)} residual sum{'s' if len(lacks) > 1 else ''} of the source "
                   f"{'have' if len(lacks) > 1 else 'has'} no counterpart in the target "
                   f"({_listed(shown, 2, '; ')})")
    for found, onto, because in (
            (spacing, "with another stride or dilation", "the same weights read other inputs"),
            (regridded, "past another number of pooling or strided steps",
             "the same weights read a coarser or finer grid"),
            (reframed, "with a larger kernel whose padding does not grow by half as much",
             "the source's taps, zero-padded around the centre, read inputs shifted against "
             "the source's and the output grid changes; padding grown by half the kernel "
             "growth keeps them")):
        if found:
            why.append(f"{len(found)} convolution{'s' if len(found) > 1 else ''} copied onto "
                       f"one {onto} ({_listed(found, 3)}): {because}")
    settings = _unit_settings(report)
    if settings:
        many = len(settings) > 1
        why.append(f"{len(settings)} block{'s' if many else ''} compute{'' if many else 's'} "
                   f"otherwise than the source block{'s they were' if many else ' it was'} "
                   f"copied from, by settings that hold no parameters "
                   f"({_listed(settings, 2, '; ')})")
    if report.regrafted:
        why.append(report.regrafted)
    reordered = {r.target for r in report.pairs if any(SUM_ORDER in t.how for t in r.tensors)}
    mixed = [(cat, other) for cat, other in tgt.mixed_sums
             if not (len(other) == 1 and other[0][0] in reordered)]
    if mixed:
        cat, other = mixed[0]
        producers = ", ".join(dict.fromkeys(seg[0] for seg in cat))
        why.append(f"{len(mixed)} sums or products combine a concatenation (or a slice) with "
                   f"a tensor whose channels the graft could not put in its order (e.g. the "
                   f"outputs of {producers} with {other[0][0]}'s)")
    resized = {_qual(r.target, t.name) for r in report.pairs for t in r.tensors
               if t.action == "adapted"}
    tied = [(_qual(r.target, t.name), owner) for r in report.pairs for t in r.tensors
            if t.how.startswith(TIED) and (owner := t.how[len(TIED):].split(";")[0]) in resized]
    for pairs, noun, text in (
            (tied, "resized tensor", lambda mine, owner: (
                f"shared by two layers ({mine} is {owner}): resized for its owner, it reads "
                f"other widths in the other layer, where replicated units would need the "
                f"opposite rescaling (untie them to graft each exactly)")),
            (_tied_untied(report), "tensor", lambda mine, owner: (
                f"tied in the target but not in the source ({mine} is {owner}): it holds what "
                f"the source's {owner.rpartition('.')[0]} holds, not the source's own "
                f"{mine.rpartition('.')[0]} (untie them in the target to graft each)"))):
        if pairs:
            why.append(f"{len(pairs)} {noun}{'s are' if len(pairs) > 1 else ' is'} "
                       f"{text(*pairs[0])}")
    if report.constrained:
        why.append(_constrained_text(report.constrained))
    prefixed = [f"{_qual(r.target, t.name)} "
                f"{t.how.split(adapt.PREFIX_TOKENS)[1].split(',')[0].strip()}"
                for r in report.pairs for t in r.tensors if adapt.PREFIX_TOKENS in t.how]
    if prefixed:
        why.append(f"position embeddings hold other prefix tokens ({_listed(prefixed, 2)}): "
                   f"new register tokens take part in the attention, and a class token's "
                   f"position the target does not embed is not folded into the token")
    for test, verb, reason in (
            (_stacks_deeper, "stack{s} more recurrent layers than the source",
             "a new recurrent layer can start only near the identity (its gates and tanh "
             "squash what it passes on; a ReLU RNN's is exact)"),
            (_turns_bidirectional, "become{s} bidirectional",
             "the backward direction, which the source lacks, is filled from the forward one "
             "and reads the sequence the other way, and what reads the layer's output reads "
             "both directions")):
        names = [tgt.layers[t].name for t, s in sorted(matching.pairs.items())
                 if s is not None and test(src.layers[s], tgt.layers[t])]
        if names:
            why.append(f"{_listed(names, 2)} {verb.format(s='' if len(names) > 1 else 's')}: "
                       f"{reason}")
    passed = [r.target for r in report.pairs if r.note == IDENTITY_LAYER]
    if tgt.shuffles and passed:
        many = len(passed) > 1
        why.append(f"{len(passed)} layer{'s' if many else ''} of new blocks start as "
                   f"identities ({_listed(passed, 2)}), but the channel shuffle after each "
                   f"moves channels between the half the next block passes on and the half it "
                   f"transforms, so later blocks read other channels than in the source (a "
                   f"ShuffleNet made deeper; no identity block undoes a shuffle)")
    if report.unplaced:
        many = len(report.unplaced) > 1
        why.append(f"the channels go through {tgt.shuffles} channel shuffles, and "
                   f"{len(report.unplaced)} widened layer{'s' if many else ''} "
                   f"({_listed(report.unplaced, 3)}) cannot place replicas of every channel "
                   f"where the layers that read it in the source read them (the "
                   f"shuffles send a channel to the block that reads it by its position)")
    if report.unscaled:
        why.append(_unscaled_text(report.unscaled))
    if report.function_gap is not None and report.function_gap < FUNCTION_GAP:
        why = []  # what would break it did not matter here
    elif report.function_gap is not None and not why:
        a, b = _float_dtype(src.model), _float_dtype(tgt.model)
        coarse = max((a, b), key=lambda d: torch.finfo(d).eps) if a and b else None
        if coarse is not None and (a != b or torch.finfo(coarse).eps > 1e-4) \
                and report.function_gap < 10 * torch.finfo(coarse).eps:
            # another dtype, or one coarse enough that a wider sum rounds visibly otherwise
            name = lambda d: str(d).replace("torch.", "")  # noqa: E731
            why.append(f"the source computes in {name(a)}, the target in {name(b)}: "
                       f"{name(coarse)} rounds to {torch.finfo(coarse).eps:.0e} relative"
                       if a != b else f"both compute in {name(a)}, which rounds to "
                       f"{torch.finfo(coarse).eps:.0e} relative (sums over other widths round "
                       f"otherwise)")
        else:
            why.append(UNNAMED_GAP)
    later = [text for done, text in (
        (report.left_weak, f"{len(report.left_weak)} weak matches were left at init"),
        (report.reset_norms, "norm statistics were reset"),
        (report.probed_norms, "norm statistics were re-estimated on a noise probe"),
        (report.head_scale is not None, "the copied classifier was tempered"),
        (report.calibrated, "norm statistics were re-estimated on the calibration data"),
        (report.alignment is not None and not report.alignment.skipped,
         "the target was aligned to the source on the calibration data"))
        if done]
    if later:
        why.append("then " + " and ".join(later))
    if report.uncompared:  # whatever the gap: it says nothing of these outputs
        why.insert(0, f"the gap covers the outputs of the source's shapes only "
                      f"({_listed(report.uncompared, 2, '; ')})")
    if report.matching is not None and _backbone_of(report.matching) is not None:
        why.insert(0, "measured on the features the source's classifier reads (the target "
                      "has no classifier)")
    elif report.matching is not None and (heads := _new_head(report.matching)) is not None:
        why.insert(0, f"measured on the features the classifiers read (the target's "
                      f"{heads[1].name} predicts {heads[1].out_dim} classes, the source's "
                      f"{heads[0].out_dim}: {_head_fate(report, heads[1].name)})")
    return "; ".join(why)


def _head_fate(report: TransferReport, name: str) -> str:
    """What the graft did with a target classifier of another class count: "it keeps its
    init", or which of its tensors hold something of the source (``head="transfer"``; a
    weight tied to a grafted embedding)."""
    record = next((r for r in report.pairs if r.target == name), None)
    if record is None:
        return "it keeps its init"
    actions = {_qual(r.target, t.name): t.action for r in report.pairs for t in r.tensors}
    given: dict[str, list[str]] = {}  # what was done → the tensors it was done to
    kept = []
    for t in record.tensors:
        owner = t.how[len(TIED):].split(";")[0] if t.how.startswith(TIED) else None
        if owner is not None and actions.get(owner, "init") != "init":
            given.setdefault(f"tied to {owner}, which was grafted", []).append(t.name)
        elif owner is None and t.action != "init":
            given.setdefault(t.action + (f" ({t.how})" if t.how else ""), []).append(t.name)
        else:
            kept.append(t.name)
    if not given:
        return "it keeps its init"
    done = [f"its {' and '.join(names)} {'is' if len(names) == 1 else 'are'} {what}"
            for what, names in given.items()]
    if kept:
        done.append(f"its {' and '.join(kept)} keep{'s' if len(kept) == 1 else ''} its init")
    return "; ".join(done)


def _uneven_heads(matching: Matching) -> list[str]:
    """"<target layer> <h_s>→<h_t> channels per head" for matched attentions whose heads grow
    wider by other than an integer factor (`adapt.group_map` maps only those head by head)."""
    src, tgt = matching.source, matching.target
    found = []
    for t, s in sorted(matching.pairs.items()):
        if s is None:
            continue
        b = tgt.layers[t]
        widths = adapt.head_widths(src.layers[s], b, (src.model, tgt.model))
        if widths is None:
            continue
        hs, ht, width_s, width_t = widths
        if adapt.heads_grow_evenly(hs, ht, width_s, width_t) is False:
            found.append(f"{b.name} {width_s // hs}→{width_t // ht} channels per head")
    return found


def _tied_untied(report: TransferReport) -> list[tuple[str, str]]:
    """(target tensor, the tensor it is tied to) where the target shares a tensor between two
    layers whose source layers hold two different tensors (an untied source's decoder grafted
    onto a target whose decoder is its embedding)."""
    model = report.matching.source.model if report.matching is not None else None
    if model is None:
        return []
    of = {r.target: r.source for r in report.pairs}
    modules = dict(model.named_modules())
    found = []
    for r in report.pairs:
        for t in r.tensors:
            if not t.how.startswith(TIED) or r.source is None:
                continue
            owner = t.how[len(TIED):].split(";")[0]
            layer, _, name = owner.rpartition(".")
            mine = getattr(modules.get(r.source), t.name, None)
            theirs = getattr(modules.get(of.get(layer) or ""), name, None)
            if (isinstance(mine, torch.Tensor) and isinstance(theirs, torch.Tensor)
                    and mine is not theirs and not (mine.shape == theirs.shape
                                                    and torch.equal(mine, theirs))):
                found.append((_qual(r.target, t.name), owner))
    return found


def _new_post_norm_layers(report: TransferReport) -> list[str]:
    """Post-norm torch transformer layers (``norm_first=False``) with no source layer of their
    own: holding a layer started as the identity or zeroed, or copies of source layers an
    earlier target layer already holds (a deeper stack repeating one). Their norm after the
    residual sum cannot pass its input on."""
    model = report.matching.target.model if report.matching is not None else None
    if model is None:
        return []
    fresh = {r.target for r in report.pairs
             if r.note == IDENTITY_LAYER or r.note.startswith("zeroed")}
    post = [name for name, m in model.named_modules()
            if isinstance(m, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer))
            and not m.norm_first]
    new, seen = [], set()
    for name in post:
        inside = [r for r in report.pairs if r.target.startswith(name + ".")]
        sources = {r.source for r in inside if r.source is not None}
        if any(r.target in fresh for r in inside) or (sources and sources <= seen):
            new.append(name)
        seen |= sources
    return new


#: block settings without parameters that change what a block computes (Swin's shifted
#: windows alternate block by block: a source block copied into a block of the other parity
#: attends over other windows)
UNIT_SETTINGS = ("shift_size", "window_size")
#: settings of a conv module that change what the same weights read
CONV_SETTINGS = ("stride", "dilation")
#: torch's own convs, whose padding is the fixed ``padding`` setting (timm's Conv2dSame pads
#: in its forward, by the input's size)
_PLAIN_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _other_grids(matching: Matching, fresh: set[str]) -> list[str]:
    """"<target conv> input <size>→<size>" for every conv filled from one that reads its
    input after another number of halvings (`_halvings`): a max-pool has no parameters, so a
    matching across model classes can put a conv past one onto a conv before it. Only when
    both were traced on inputs of one spatial shape; layers in `fresh` (started as identities
    or zeroed) do not count."""
    src, tgt = matching.source, matching.target
    shape = src.input_shape
    if not shape or not tgt.input_shape or tuple(shape[2:]) != tuple(tgt.input_shape[2:]):
        return []
    out = []
    for t, s in sorted(matching.pairs.items()):
        a, b = (None, None) if s is None else (src.layers[s], tgt.layers[t])
        if (a is not None and a.kind == b.kind == "conv" and b.name not in fresh
                and a.in_size and b.in_size
                and _halvings(a.in_size, shape) != _halvings(b.in_size, shape)):
            out.append(f"{b.name} input {_by(a.in_size)}→{_by(b.in_size)}")
    return out


def _halvings(size: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """How many times the model input (of `shape`) was halved to `size`, rounded: a conv
    whose padding trims a few pixels (SqueezeNet's stem) reads the grid of the same step."""
    return tuple(round(math.log2(n / max(m, 1))) for m, n in zip(size, shape[-len(size):]))


def _padding_unkept(source: Layer, target: Layer) -> str | None:
    """"<target conv> kernel <k>→<k'> padding <p>→<p'>" when a conv's kernel grows and its
    padding does not grow by half as much in some dimension (SqueezeNet 1.1 → 1.0's stem,
    3×3 → 7×7 at padding 0): the source kernel is zero-padded around the centre (`adapt`),
    so each output reads the source's taps only where the padding moved the grid by the
    same offset, and the output grid itself shrinks or shifts. None when the placement keeps
    the source's function, or when either padding is no plain number per dimension."""
    a, b = source.module, target.module
    if not (source.kind == target.kind == "conv" and _plain_conv(a) and _plain_conv(b)):
        return None
    ka, kb, pa, pb = tuple(a.kernel_size), tuple(b.kernel_size), a.padding, b.padding
    if isinstance(pa, str) or isinstance(pb, str) or ka == kb or len(ka) != len(kb) \
            or any(y < x for x, y in zip(ka, kb)):
        return None  # "same" or "valid" by name, or not a kernel that grew
    dilation = tuple(b.dilation)
    if all(2 * (q - p) == d * (y - x) for p, q, x, y, d in zip(pa, pb, ka, kb, dilation)):
        return None
    return f"{target.name} kernel {_by(ka)}→{_by(kb)} padding {_by(pa)}→{_by(pb)}"


def _by(values: tuple[int, ...]) -> str:
    """A size per dimension as one reads it: ``3×3``."""
    return "×".join(str(v) for v in values)


def _plain_conv(module: nn.Module | None) -> bool:
    """Whether `module` runs the forward of one of `_PLAIN_CONVS` (a subclass overriding it
    may pad otherwise)."""
    return any(type(module).forward is cls.forward for cls in _PLAIN_CONVS)


def _unit_settings(report: TransferReport) -> list[str]:
    """"<target block>: <setting> <source> → <target>" for every target block copied from a
    source block whose modules differ in `UNIT_SETTINGS` (a transformer block is one block,
    named after its module); blocks started as identities do not count."""
    matching = report.matching
    src, tgt = matching.source, matching.target
    if src.model is None or tgt.model is None:
        return []
    block_of = {layer.name: layer.block for layer in tgt.layers}
    zeroed = {block_of[r.target] for r in report.pairs if r.note.startswith("zeroed")}
    mates = {tgt.layers[t].block: src.layers[s].block
             for t, s in sorted(matching.pairs.items(), reverse=True) if s is not None}
    out = []
    for tb, sb in sorted(mates.items()):
        if tb in zeroed:
            continue
        a = _block_settings(src, src.blocks[sb].name)
        b = _block_settings(tgt, tgt.blocks[tb].name)
        out += [f"{tgt.blocks[tb].name}: {key} {a[key]} → {b[key]}" for key in a
                if key in b and a[key] != b[key]]
    return out


def _missing_sum(module: str, p: str, q: str, p_mate: str, q_mate: str,
                 summed: frozenset[tuple[str, str, str]]) -> str | None:
    """The target module that should add something to `p`'s counterpart, as `module` adds `p`
    and `q` in the source, when it adds nothing there; None when it does (which layer is
    added may differ: a deeper target adds the output of an identity block it inserted) or
    when there is nothing to compare."""
    for own, other in ((p, p_mate), (q, q_mate)):
        if own.startswith(module + "."):
            rel = own[len(module) + 1:]
            if other.endswith("." + rel):
                where = other[:-len(rel) - 1]
                return None if any(m == where and other in (a, b) for m, a, b in summed) \
                    else where
    return None


def default_min_score(matching: Matching, similarity: float) -> float:
    """What ``min_score="auto"`` means for this matching: ``WEAK_SCORE`` for a distant pair
    whose target does not contain the source, else 0."""
    return WEAK_SCORE if closes_gates(matching, similarity) else 0.0


def _tracked_norms(target: nn.Module, report: TransferReport, grafted_only: bool):
    """(record, module) for every batch norm of the report that tracks running statistics."""
    modules = dict(target.named_modules())
    for p in report.pairs:
        m = modules.get(p.target)
        if (isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
                and not (grafted_only and p.action == "init")):
            yield p, m


def _add_note(record: LayerRecord, text: str) -> None:
    record.note = (record.note + "; " if record.note else "") + text


@torch.no_grad()
def _carry_batch_counts(source: nn.Module, target: nn.Module, report: TransferReport) -> None:
    """A batch norm whose running statistics came from the source also takes how many batches
    they average (``num_batches_tracked``, an integer the graft of float tensors skips): with
    ``momentum=None`` that count weighs the statistics against the next batch, and at 0 the
    first training batch would replace them outright."""
    sources = dict(source.named_modules())
    for p, m in _tracked_norms(target, report, grafted_only=True):
        s = sources.get(p.source) if p.source is not None else None
        copied = any(t.name == "running_mean" and t.action in ("copied", "adapted")
                     for t in p.tensors)
        if (copied and isinstance(s, nn.modules.batchnorm._BatchNorm)
                and isinstance(getattr(s, "num_batches_tracked", None), torch.Tensor)
                and isinstance(getattr(m, "num_batches_tracked", None), torch.Tensor)):
            m.num_batches_tracked.copy_(s.num_batches_tracked)


def _mark_calibrated(target: nn.Module, report: TransferReport) -> None:
    if report.calibrated:
        for p, _ in _tracked_norms(target, report, grafted_only=False):
            _restat(p, "re-estimated on the calibration data")


def _restat(record: LayerRecord, how: str, action: str = ESTIMATED) -> None:
    """Mark a batch norm's running statistics as no longer the source's: reset (`action`
    "init") or re-estimated on inputs (`how` says which)."""
    _add_note(record, f"running statistics {how}")
    for t in record.tensors:
        if t.name in _RUNNING_STATS:
            t.action, t.how, t.filled = action, how, 0


def _reset_norm_stats(target: nn.Module, report: TransferReport) -> int:
    """Reset the running statistics of every batch norm that received source tensors."""
    n = 0
    for p, m in _tracked_norms(target, report, grafted_only=True):
        m.reset_running_stats()
        _restat(p, "reset", "init")
        n += 1
    return n


def probe_size(shape: Sequence[int]) -> int:
    """How many noise inputs of `shape` (one input, without the batch dimension) the probe
    holds: PROBE_BATCH · PROBE_BATCHES, fewer when each input already has many positions
    (`PROBE_POSITIONS` per channel in all, never fewer than PROBE_MIN inputs)."""
    positions = math.prod(shape[1:]) if len(shape) > 1 else 1
    return max(PROBE_MIN, min(PROBE_BATCH * PROBE_BATCHES, math.ceil(PROBE_POSITIONS / positions)))


def _noise_probe(report: TransferReport) -> torch.Tensor | None:
    """`probe_size` standard-normal inputs shaped like the target's example input, from a
    fixed seed; None when the example input is not a float tensor."""
    example = report.matching.target.example_input
    if not (isinstance(example, torch.Tensor) and example.is_floating_point()):
        return None
    g = torch.Generator().manual_seed(0)
    shape = example.shape[1:]
    return torch.randn(probe_size(shape), *shape, generator=g,
                       dtype=example.dtype).to(example.device)


def _probe_norm_stats(target: nn.Module, report: TransferReport) -> int:
    """Re-estimate every batch norm's running statistics on standard-normal inputs shaped like
    the target's example input (data-free); reset them when the input is not a float tensor."""
    probe = _noise_probe(report)
    if probe is None:
        return _reset_norm_stats(target, report)
    n = recalibrate_norms(target, probe, batch_size=PROBE_BATCH)
    for p, _ in _tracked_norms(target, report, grafted_only=False):
        _restat(p, "re-estimated on a noise probe")
    return n


def _temper_head(target: nn.Module, report: TransferReport,
                 init_state: dict[str, torch.Tensor]) -> None:
    """Scale a copied classifier down to the confidence of the target's own init.

    On one batch of the noise probe (eval mode), the head's inputs are captured; its logits
    with the copied tensors and with the target's init tensors (`init_state`, the target's
    state before the graft) are compared by root mean square. A copy with larger logits has
    weight and bias multiplied by init rms / copied rms, so that it starts exactly as
    confident as a random head while keeping the direction it learned. Nothing happens
    without a float example input, for a head whose tensors are tied to another layer
    (scaling it would scale that layer too), or when the copy is not more confident than
    the init."""
    probe = _noise_probe(report)
    if probe is None:
        return
    modules = dict(target.named_modules())
    heads = [p for p in report.pairs if p.action != "init" and p.source is not None
             and report.matching.target[p.target].role == "output"
             and p.kind in ("linear", "conv")
             and not any(t.how.startswith("tied") for t in p.tensors)]
    for record in heads:
        module = modules[record.target]
        params = dict(module.named_parameters(recurse=False))
        inputs: list[tuple] = []
        hook = module.register_forward_pre_hook(lambda mod, args: inputs.append(args))
        was_training = target.training
        target.eval()
        try:
            with torch.no_grad():
                target(probe[:PROBE_BATCH])
        finally:
            hook.remove()
            target.train(was_training)
        if not inputs or not all(inputs):  # not called, or called with keywords only
            continue
        if any(_qual(record.target, n) not in init_state for n in params):
            continue
        init = {n: init_state[_qual(record.target, n)].to(t.device) for n, t in params.items()}
        with torch.no_grad():
            copied = torch.cat([module(*a).reshape(-1) for a in inputs])
            random = torch.cat([torch.func.functional_call(module, init, a).reshape(-1)
                                for a in inputs])
        r_copied, r_init = copied.pow(2).mean().sqrt(), random.pow(2).mean().sqrt()
        if not (torch.isfinite(r_copied) and r_copied > r_init):
            continue
        scale = float(r_init / r_copied)
        with torch.no_grad():
            for n, t in params.items():
                if scale > 0:
                    t.mul_(scale)
                else:  # the init head gives zero logits: it is the init tensors themselves
                    t.copy_(init[n])
        report.head_scale = scale
        if scale > 0:
            _add_note(record, f"tempered ×{scale:.3g}: its logits on a noise probe were "
                              f"{float(r_copied / r_init):.3g}× those of the target's init "
                              f"head (features of another family)")
            for t in record.tensors:  # a scaled copy is no copy as it was
                if t.name in params and t.action != "init":
                    t.action, t.how = "adapted", _also(t.how, f"×{scale:.3g} (tempered)")
        else:  # nothing of the source is left in it
            _set_init(record, "reset to its init: the target's init head gives zero logits "
                              "on a noise probe")
            report.coverage = _coverage(report.pairs)


def leaves_at_init(layer: Layer, score: float, min_score: float) -> bool:
    """Whether a graft with `min_score` > 0 (a distant pair) leaves this matched target layer
    at its init: a weak match (score below `min_score`) or a gate, never the classifier."""
    return min_score > 0 and layer.role != "output" and (layer.gate or score < min_score)


@torch.no_grad()
def _leave_weak(report: TransferReport, target: nn.Module, init: dict[str, torch.Tensor],
                threshold: float) -> None:
    """Put the layers matched below `threshold`, and the target's gates (``Layer.gate``: a
    residual branch's zero-initialised last norm, a layer scale near zero, whether a source
    scale was copied into it or the graft opened it, ``OPENED``), back to their init
    (`init`: the target's state before the graft) and record it."""
    tgt_arch = report.matching.target
    state = target.state_dict()
    why = ("in a distant pair" if closes_gates(report.matching, report.similarity)
           else f"(min_score={threshold:g})")
    for p in report.pairs:
        layer = tgt_arch[p.target]
        if ((p.source is None and p.note != OPENED) or p.action == "init"
                or p.note.startswith("zeroed") or not leaves_at_init(layer, p.score, threshold)):
            continue
        for t in p.tensors:
            key = f"{p.target}.{t.name}" if p.target else t.name
            state[key].copy_(init[key])
        _mark_left(report, p, "left at init: a gate (its block's branch stays shut, as at init) "
                              f"{why}" if layer.gate else
                   f"left at init: weak match (score {below(p.score)} < {threshold:g}) {why}")
    report.coverage = _coverage(report.pairs)
    if report.method == "graft":
        shut = keep_shut(tgt_arch, report.matching.pairs)
        report.gated_off = [tgt_arch.blocks[b].name for b in gated_off(tgt_arch, shut)]


def _leave_all(report: TransferReport, target: nn.Module, init: dict[str, torch.Tensor]) -> None:
    """Put the whole target back to its init (`init`: its state before the graft): an
    unrelated pair (similarity below ``UNRELATED_SIMILARITY``), where what a graft copies
    measured no better than random init."""
    load_into(target, init)
    mismatch = conv_mismatch(report.matching)
    note = (f"left at init: {mismatch}" if mismatch else
            f"left at init: unrelated pair (similarity {below(report.similarity)} < "
            f"{UNRELATED_SIMILARITY}); min_score=0 transfers what matched")
    for p in report.pairs:
        if p.source is not None and p.action != "init":
            _mark_left(report, p, note)
    report.coverage = 0.0
    report.gated_off = []


def _mark_left(report: TransferReport, record: LayerRecord, note: str) -> None:
    """Record that a matched layer was put back to its init, and why."""
    _set_init(record, note)
    report.left_weak.append(record.target)


def _set_init(record: LayerRecord, note: str) -> None:
    """Record that every tensor of a layer holds its init (nothing of the source)."""
    for t in record.tensors:
        t.action, t.how, t.filled = "init", note, 0
    record.note = note


def _coverage(records: list[LayerRecord]) -> float:
    """Share of the target's parameter elements filled from the source (of its buffers'
    elements, for a model that holds buffers only)."""
    tensors = [t for r in records for t in r.tensors]
    counted = [t for t in tensors if t.parameter] or tensors
    total = sum(t.numel for t in counted)
    return sum(t.filled for t in counted) / total if total else 0.0


def _autoinit_unmatched(target: nn.Module, report: TransferReport, example_input: Any) -> None:
    from .autoinit import autoinit as rescale

    start = time.perf_counter()
    tgt_arch = trace(target, example_input)
    by_name = {layer.name: layer for layer in tgt_arch.layers}
    names = [p.target for p in report.pairs
             if p.action == "init" and p.kind in ("conv", "linear", "conv_transpose")
             and not p.note.startswith("zeroed") and by_name[p.target].role != "output"]
    if names:
        report.autoinit = rescale(target, layers=names, mode="preserve", arch=tgt_arch)
        for p in report.pairs:
            if p.target in report.autoinit.scales:
                _add_note(p, f"autoinit: weight ×{report.autoinit.scales[p.target]:.3g}")
    report.seconds += time.perf_counter() - start


def slimmable(arch: Architecture) -> bool:
    """Whether network slimming's |γ| criterion applies to `arch` (``shrink="auto"`` within a
    family): it has batch norms with a scale and no grouped convolution other than depthwise.
    A grouped conv (RegNet, ResNeXt) ties its channels group by group, and there a per-channel
    choice breaks the groups: regnetx_004 → regnetx_002 kept 17% at step 0 by |γ| against 49%
    with the first channels. Without batch norms (ConvNeXt's LayerNorms) the two were level
    (``benchmarks/shrink_widths.py``), and the first channels are kept."""
    norms = any(layer.kind == "batchnorm" and "weight" in layer.param_names
                for layer in arch.layers)
    grouped = any(adapt.grouped_conv(layer) for layer in arch.layers)
    return norms and not grouped


def _selector(shrink: str, source_layers: list[Layer]) -> Callable | None:
    """The channel selection of a `shrink` policy (None: evenly spaced, the graft default)."""
    if shrink == "consecutive":
        return adapt.consecutive_selector
    if shrink in _SCORED:
        return adapt.importance_selector(_SCORED[shrink][0](source_layers), _SCORED[shrink][1])
    return None


#: the ranked policies: which source layers vote, and how notes name the policy
_SCORED = {"importance": (list, "importance"),
           "norm_scale": (lambda layers: [layer for layer in layers if layer.kind in NORM_KINDS],
                          "norm scale")}


def _space_selector(shrink: str, src_arch: Architecture, tgt_arch: Architecture,
                    matching: Matching, select: Callable | None, channel_map: Callable | None,
                    plan: _ChannelPlan) -> Callable[[str], Callable] | None:
    """A ranked policy's selection by channel space (`adapt.spaces`), for plain graphs whose
    channels need no other map; None: one ranking per width."""
    if shrink not in _SCORED or select is None or channel_map is not None or plan.maps \
            or plan.folded:
        return None
    voters = _SCORED[shrink][0]
    return space_selector(src_arch, tgt_arch, matching.pairs,
                          lambda layers: adapt.channel_importance(voters(layers)), select)


def _transfer(source: nn.Module, target: nn.Module, example_input: Any, source_input: Any,
              method: str, head: str, source_arch: Architecture | None,
              target_arch: Architecture | None, grow: bool,
              shrink: str = "auto", split_noise: float = 0.0, seed: int = 0,
              zero_new: bool = True) -> TransferReport:
    start = time.perf_counter()
    src_arch = source_arch or _trace_source(source, source_input, example_input)
    tgt_arch = target_arch or trace(target, example_input)
    if grouped_reads_shuffled(src_arch) or grouped_reads_shuffled(tgt_arch):
        # ShuffleNet V1: grouped convs cut a shuffled fan-in by position; map channels by size
        src_arch = _trace_source(source, source_input, example_input, shuffles=False)
        tgt_arch = trace(target, example_input, shuffles=False)
    matching = match(src_arch, tgt_arch, method)
    sim = _similarity_from(matching, src_arch, tgt_arch, method)
    layer_transfer = _LAYER_TRANSFERS.get(method, _graft_layer)
    resolved, unplaced, close = None, [], False
    if layer_transfer is _graft_layer:
        if grow and embeds(matching, classifier=False):
            matching = _follow_settings(matching)
        close = one_family(matching, sim)  # one family (at another size)
        if shrink == "auto":
            shrink = ("norm_scale" if slimmable(src_arch) else "consecutive") if close \
                else "uniform"
        if shrink == "norm_scale" and not any(layer.kind in NORM_KINDS and "weight" in layer.shapes
                                              for layer in src_arch.layers):
            warnings.warn(NetgraftWarning(
                f"shrink='norm_scale' ranks channels by the source's norm scales |γ|, and "
                f"{src_arch.name} has no normalisation layer with a scale: channels are kept "
                f"evenly spaced (shrink='uniform'); shrink='importance' ranks them by their "
                f"weights"), stacklevel=4)
            shrink = "uniform"
        resolved = shrink
        select = _selector(shrink, src_arch.layers)
        channel_map = adapt.group_map(
            ((src_arch.layers[s], tgt_arch.layers[t]) for t, s in matching.pairs.items()
             if s is not None), (src_arch.model, tgt_arch.model),
            consecutive=bool(src_arch.shuffles or tgt_arch.shuffles),
            packed=(src_arch.packed, tgt_arch.packed))
        if select is not None and channel_map is not None:
            select = adapt.by_heads(select, channel_map)
        plan = _channel_plan(src_arch, tgt_arch, matching, select, channel_map,
                             grow=zero_new and embeds(matching, classifier=False))
        unplaced = plan.unplaced
        # replicas of one unit only carry identical activations (the symmetry the jitter
        # breaks) when their producer was replicated alike: growth within a family. Across
        # families the replicated fan-ins read unrelated units and the jitter is only noise.
        layer_transfer = functools.partial(
            _graft_layer, select=select, channel_map=channel_map,
            split_noise=split_noise if close else 0.0,
            generator=torch.Generator().manual_seed(seed),
            channels=plan, spaces=_space_selector(shrink, src_arch, tgt_arch, matching, select,
                                                  channel_map, plan))

    records: list[LayerRecord] = []
    owners: dict[int, str] = {}  # tied parameters (e.g. an embedding shared with the LM head)
    for tgt in tgt_arch.layers:
        tensors = own_tensors(tgt.module)
        tied = [TensorRecord(n, tuple(t.shape), None, "init",
                             f"{TIED}{owners[id(t)]}; written there", numel=t.numel(),
                             parameter=False) for n, t in tensors.items() if id(t) in owners]
        tied_names = {r.name for r in tied}
        owners.update({id(t): _qual(tgt.name, n) for n, t in tensors.items() if id(t) not in owners})
        record = _layer_record(tgt, src_arch, matching, head, layer_transfer,
                               {n: t for n, t in tensors.items() if n not in tied_names})
        record.tensors += tied
        records.append(record)

    opened = _open_gates(tgt_arch, matching, records) if close else set()
    if grow:
        _identity_blocks(target, src_arch, tgt_arch, matching, records)
    unscaled = _input_scales(src_arch, tgt_arch, matching, records) \
        if method == "graft" else []
    return TransferReport(method=method, source=src_arch.name, target=tgt_arch.name,
                          pairs=records, coverage=_coverage(records),
                          similarity=sim, seconds=time.perf_counter() - start, matching=matching,
                          shrink=resolved, unscaled=unscaled, unplaced=unplaced,
                          gated_off=[tgt_arch.blocks[b].name
                                     for b in gated_off(tgt_arch, matching.pairs, opened)]
                          if method == "graft" else [])


#: the note on a layer scale a graft within one family sets to 1 (`openable_gates`)
OPENED = ("opened: set to 1, its source block has no layer scale (the branch acts at full "
          "scale, as in the source)")


@torch.no_grad()
def _open_gates(tgt_arch: Architecture, matching: Matching,
                records: list[LayerRecord]) -> set[int]:
    """Set to 1 the target's layer scales that no source scale is copied into, in blocks
    grafted from a source block without one (`openable_gates`); returns their indices."""
    opened = openable_gates(tgt_arch, matching.pairs)
    by_name = {r.target: r for r in records}
    for i in opened:
        layer = tgt_arch.layers[i]
        tensors = own_tensors(layer.module)
        record = by_name[layer.name]
        record.note = OPENED
        for t in record.tensors:
            if t.name in layer.param_names:
                tensors[t.name].fill_(1.0)
                t.action, t.how = "adapted", OPENED
    return opened


def _trace_source(source: nn.Module, source_input: Any, example_input: Any,
                  shuffles: bool = True) -> Architecture:
    """Trace the source on `source_input`; without one, on the target's `example_input` when
    the source takes it (a model whose input cannot be guessed, a ViT built at a small size),
    else on an input guessed for it."""
    hint = "source_input= (CLI: --source-input-size C,H,W)"
    if source_input is None and example_input is not None:
        try:
            return trace(source, example_input, input_hint=hint, shuffles=shuffles)
        except ModelForwardError:
            pass  # another input shape (channels, size): guess the source's own
    return trace(source, source_input, input_hint=hint, shuffles=shuffles)


def _layer_record(tgt: Layer, src_arch: Architecture, matching: Matching, head: str,
                  layer_transfer: Callable, tgt_t: dict[str, torch.Tensor]) -> LayerRecord:
    s = matching.pairs[tgt.index]
    if s is None:
        reason = "no source layer matched"
        return LayerRecord(tgt.name, None, tgt.kind, 0.0,
                           [init_record(tgt, n, reason) for n in tgt_t], note=reason)
    src = src_arch.layers[s]
    score = matching.scores[tgt.index]
    reason = _head_reason(src, tgt, head) if matching.method != "dpiat" else None
    if reason:
        return LayerRecord(tgt.name, src.name, tgt.kind, score,
                           [init_record(tgt, n, reason) for n in tgt_t], note=reason)
    try:
        tensors = layer_transfer(src, tgt, own_tensors(src.module), tgt_t)
    except NetgraftError:
        raise
    except Exception as exc:  # a shape we do not know how to adapt: say which layers
        raise UnsupportedModelError(
            f"cannot adapt from source layer '{src.name}' ({src.type}, {src.weight_shape}): "
            f"{type(exc).__name__}: {exc}", layer=tgt.name) from exc
    return LayerRecord(tgt.name, src.name, tgt.kind, score, tensors)


def _extra_blocks(src_arch: Architecture, tgt_arch: Architecture, matching: Matching) -> list[int]:
    """Target blocks with no source block of their own: unmatched, or repeating a source block
    an earlier target block already took — unless every source layer it takes is one no
    earlier target layer took (a source that grouped a whole stage as one block, whose blocks
    the target keeps apart: cs3darknet_s → _m)."""
    keeper: dict[int, int] = {}  # source block → the target block that keeps its copy
    repeats: dict[int, list[int]] = {}  # source block → target blocks repeating it
    used: set[int] = set()  # source layers taken by earlier target layers
    extra = []
    for b, block in enumerate(tgt_arch.blocks):
        layers = [s for i in block.layers if (s := matching.pairs[i]) is not None]
        if block.single:
            used.update(layers)
            continue
        main = _main_source(src_arch, layers)
        if main is None or (main in keeper and not used.isdisjoint(layers)):
            extra.append(b)
            if main is not None:
                repeats.setdefault(main, []).append(b)
        else:
            keeper[main] = b
        used.update(layers)
    # a run of blocks repeating one source block keeps the copy in a block computing like it
    # (Swin alternates plain and shifted windows: source block 1, shifted, grown into target
    # blocks 2 and 3 is kept in block 3) and makes the others identities
    for main, runs in repeats.items():
        want = _block_settings(src_arch, src_arch.blocks[main].name)
        if _block_settings(tgt_arch, tgt_arch.blocks[keeper[main]].name) != want:
            alike = [b for b in runs if _block_settings(tgt_arch, tgt_arch.blocks[b].name) == want]
            if alike:
                extra[extra.index(alike[0])] = keeper[main]
    return sorted(extra)


def _main_source(src_arch: Architecture, layers: list[int]) -> int | None:
    """The source block most of `layers` (source layer indices) come from; None for none."""
    blocks = [src_arch.layers[s].block for s in layers]
    return max(set(blocks), key=blocks.count) if blocks else None


def _runs(arch_src: Architecture, arch_tgt: Architecture,
          matching: Matching) -> list[tuple[int, list[int]]]:
    """(source block, the consecutive target blocks whose layers mostly copy it), in order."""
    runs: list[tuple[int, list[int]]] = []
    for b, block in enumerate(arch_tgt.blocks):
        main = _main_source(arch_src, [s for i in block.layers
                                       if (s := matching.pairs[i]) is not None])
        if block.single or main is None:
            continue
        if runs and runs[-1][0] == main and runs[-1][1][-1] == b - 1:
            runs[-1][1].append(b)
        else:
            runs.append((main, [b]))
    return runs


def _follow_settings(matching: Matching) -> Matching:
    """Growth through blocks with parameter-free settings (Swin's shifted windows): where no
    block of a source block's run has its settings but the previous run's last block does,
    that block moves to the run (its layers paired with the source block's), so that the copy
    can be kept in a block computing like it (`_extra_blocks`). Depths (2, 2) → (3, 3): source
    block 1 (shifted) took target block 2 (plain) alone; now blocks 1 (shifted) and 2."""
    src, tgt = matching.source, matching.target
    if src.model is None or tgt.model is None:
        return matching
    pairs = dict(matching.pairs)
    runs = _runs(src, tgt, matching)
    for (prev, before), (main, run) in zip(runs, runs[1:]):
        want = _block_settings(src, src.blocks[main].name)
        if not want or any(_block_settings(tgt, tgt.blocks[b].name) == want for b in run):
            continue
        last, rest = before[-1], before[:-1]
        a, b = src.blocks[prev].layers, src.blocks[main].layers
        moved = tgt.blocks[last].layers
        keeps = _block_settings(src, src.blocks[prev].name)
        if (rest and last == run[0] - 1 and len(a) == len(b) == len(moved)
                and _block_settings(tgt, tgt.blocks[last].name) == want
                and any(_block_settings(tgt, tgt.blocks[r].name) == keeps for r in rest)
                and all(src.layers[i].weight_shape == src.layers[j].weight_shape
                        for i, j in zip(a, b))
                and all(pairs[t] == i for t, i in zip(moved, a))):
            pairs.update(zip(moved, b))
            before.pop()
    if pairs == matching.pairs:
        return matching
    return replace(matching, pairs=pairs)


def _settings(module: nn.Module | None, keys: tuple[str, ...]) -> dict[str, Any]:
    """The settings `keys` that `module` holds (attributes without parameters: a conv's
    stride, a Swin block's window), lists as tuples so that equal settings compare equal."""
    return {key: tuple(value) if isinstance(value, list) else value for key in keys
            if (value := getattr(module, key, None)) is not None}


def _block_settings(arch: Architecture, name: str | None) -> dict[str, Any]:
    """The `UNIT_SETTINGS` of block module `name` (none without a model or a module)."""
    try:
        module = arch.model.get_submodule(name) if arch.model is not None and name else None
    except AttributeError:
        module = None
    return _settings(module, UNIT_SETTINGS)


def _identity_blocks(target: nn.Module, src_arch: Architecture, tgt_arch: Architecture,
                     matching: Matching, records: list[LayerRecord]) -> None:
    extra = _extra_blocks(src_arch, tgt_arch, matching)
    zeroed = list(identity_blocks(target, tgt_arch, extra, tgt_arch.example_input).values()) \
        if extra else []
    done = {name for names in zeroed for name in names}
    units = _split_units(tgt_arch, extra, done)
    if units:  # a residual unit the block grouping cut into several blocks, all repeats
        zeroed += identity_modules(target, units, tgt_arch.example_input,
                                   tgt_arch.residual).values()
    if embeds(matching, classifier=False):
        # growth: a new or repeated sub-block that the block grouping merged into a block
        # with a source of its own
        own, used = set(), set()
        for t, s in sorted(matching.pairs.items()):
            if s is not None and s not in used:
                own.add(t)
                used.add(s)
        subs = {name: layers for b, block in enumerate(tgt_arch.blocks)
                if b not in extra and not block.single and block.name
                for name, layers in unmatched_submodules(tgt_arch, b, own).items()}
        if subs:
            zeroed += identity_modules(target, subs, tgt_arch.example_input,
                                       tgt_arch.residual).values()
        # a new module the grouping cut into blocks and single layers (HRNet's modules: their
        # branches' blocks, then fuse layers adding the branches up) is an identity as a whole
        extra_set = set(extra)
        # (a layer the grouping kept as a block of its own, repeating a source layer an
        # earlier target layer took, is new too: the layer scale of FastViT's MLP branch)
        fresh = {layer.name for layer in tgt_arch.layers
                 if layer.block in extra_set or matching.pairs.get(layer.index) is None
                 or (layer.block >= 0 and tgt_arch.blocks[layer.block].single
                     and layer.index not in own)}
        whole = fresh_modules(target, tgt_arch, fresh)
        if whole:
            zeroed += identity_modules(target, whole, tgt_arch.example_input,
                                       tgt_arch.residual).values()
    by_name = {r.target: r for r in records}
    for names in zeroed:
        for name in names:
            record = by_name[name]
            record.note = "zeroed: residual block with no source of its own starts as the identity"
            layer = tgt_arch[name]
            for t in record.tensors:
                if t.name in layer.param_names:
                    t.action, t.how, t.filled = "init", record.note, 0


def _input_scales(src_arch: Architecture, tgt_arch: Architecture, matching: Matching,
                  records: list[LayerRecord]) -> list[str]:
    """Compensate the readers of every target block whose constant input scale differs from
    the source block it was grafted from (`growth.INPUT_SCALES`: NF-ResNet's β), noting it on
    their tensors; returns the readers that could not be compensated, as
    "<layer>: <attr> <source> → <target>"."""
    if src_arch.model is None or tgt_arch.model is None:
        return []
    pairs = {t: s for t, s in matching.named_pairs() if s is not None}
    by_name = {r.target: r for r in records}
    zeroed = [r.target for r in records if r.note.startswith("zeroed")]
    failed = []
    for block, s_block, attr, s_value, t_value in input_scale_pairs(
            src_arch.model, tgt_arch.model, pairs):
        done, left = rescale_readers(tgt_arch.model, block, attr, s_value, t_value, pairs,
                                     s_block)
        if any(name.startswith(block + ".") for name in zeroed):
            left = []  # a block started as the identity: what it reads does not matter yet
        how = (f"×{s_value / t_value:.4g}: its block scales its input by {attr} "
               f"{t_value:.4g} where the source block scales it by {s_value:.4g}")
        for name in done:
            for t in by_name[name].tensors:
                if t.name in ("gain", "weight") and t.action != "init":
                    t.how = _also(t.how, how)
                    break
        failed += [f"{name}: {attr} {s_value:.4g} → {t_value:.4g}" for name in left]
    return failed


def _split_units(arch: Architecture, extra: list[int], done: set[str]) -> dict[str, list[Layer]]:
    """Residual units (`Architecture.residual`) whose layers DPIAT's grouping spread over
    several blocks (skresnet's repeated blocks: paths, attention, conv2 apart), each of those
    with more than one layer a repeat (`extra`) and none made an identity yet: {unit name: its
    layers}, to start as identities as a whole."""
    extra_set = set(extra)
    units = {}
    for unit in sorted(arch.residual):
        layers = [layer for layer in arch.layers if layer.name.startswith(unit + ".")]
        blocks = {layer.block for layer in layers}
        several = [b for b in blocks if not arch.blocks[b].single]
        if (len(blocks) > 1 and several and all(b in extra_set for b in several)
                and not any(layer.name in done for layer in layers)):
            units[unit] = layers
    return units


def _similarity_from(matching: Matching, a: Architecture, b: Architecture, method: str) -> float:
    return pair_similarity(matching, dp_value(b, a, method), dp_value(a, a, method),
                           dp_value(b, b, method))
