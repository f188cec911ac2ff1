"""A zoo of trained checkpoints, and ranking it for a new target without training anything.

Layout of a zoo directory (default ``$NETGRAFT_ZOO`` or ``~/.cache/netgraft/zoo``)::

    <name>.safetensors   the weights (a copy, or a symlink with --link)
    <name>.json          arch spec, num_classes / in_chans / input_size, task, accuracy (a
                         fraction in [0, 1]), params, sha256, date
    index.sqlite         architecture fingerprints + cached pairwise DP values

The index keys fingerprints by (arch spec, num_classes, in_chans, input size, fingerprint
version) and DP values by (fingerprint hash a, fingerprint hash b, method, score version), so
ranking never instantiates a model it has seen and a repeated ranking recomputes nothing. Both
versions are hashes of the tracing / scoring code (:mod:`netgraft.fingerprint`): when either
changes, stale rows are simply not found and are recomputed.

    zoo = Zoo("~/zoo")
    zoo.add("resnet18_fmnist.safetensors", arch="resnet18", task="fashion-mnist", accuracy=0.83)
    for r in zoo.rank("efficientnet_b0", num_classes=10, in_chans=1, top=3):
        print(r.rank, r.name, r.similarity, r.coverage, r.why)

Similarity is :func:`netgraft.similarity.pair_similarity` over
:func:`netgraft.match.dp_value` / :func:`netgraft.match.match` on rebuilt fingerprints, i.e.
exactly ``netgraft.similarity(source, target, method)``. Coverage is the fraction of the target's
parameter elements ``netgraft.transfer`` would fill from the source, computed the way
:class:`~netgraft.transfer.TransferReport` counts it, from shapes only (classifier heads with
another class count, DPIAT's weight/bias-only clip, kernel zero-padding and the residual blocks
transfer turns into identities are all counted as transfer counts them).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import sqlite3
import sys
import time
import warnings
import zlib
from contextlib import closing
from dataclasses import MISSING, asdict, dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import fingerprint as fpr
from .cli import (PIPE_WIDTH, _positive_int, _same_file, file_name, make_console as _console,
                  read_channels)
from .errors import ModelForwardError, ModelSpecError, NetgraftError, NetgraftWarning
from .models import MODEL_SPEC_HELP
from .match import DEFAULT_METHOD, METHODS, Matching, get_method, match, open_value
from .similarity import (UNRELATED_SIMILARITY, below, conv_dims, conv_mismatch,  # noqa: F401
                         pair_similarity, unrelated)
from .trace import DIMENSIONAL_KINDS, Architecture, Layer

ENTRY_FORMAT = 1
INDEX_FILE = "index.sqlite"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ZooError(NetgraftError):
    """A zoo directory, entry or ranking request is invalid."""


class ZooWarning(NetgraftWarning):
    """A zoo entry was skipped: its description is damaged or its weights are gone."""


def _check_name(name: str, hint: str) -> None:
    """Refuse an entry name that is not a plain name (a path, '..', spaces): `hint` says
    what to give instead."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ZooError(f"entry name {name!r}: use letters, digits, '.', '_' and '-' ({hint})")


def _inside(path: Path, directory: Path) -> bool:
    """Whether `path` is in `directory` or below it, symbolic links resolved."""
    return directory.resolve() in path.resolve().parents


def default_zoo_dir() -> Path:
    return Path(os.environ.get("NETGRAFT_ZOO") or "~/.cache/netgraft/zoo").expanduser()


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _input_key(input_size: Sequence[int] | None) -> str:
    return "auto" if not input_size else "x".join(str(int(d)) for d in input_size)


def _damaged_safetensors(path: Path, linked: str | None = None) -> str | None:
    """Why a .safetensors file cannot be whole (truncated, or not safetensors at all), read
    from its header alone; None when its size is the one its header describes. Cheap enough
    for every ranking (the stored sha256 would mean reading every file). `linked` is the
    entry's recorded --link target: for an entry added with --link the file it links to is
    named (that file loaded when the entry was added, so it was changed since). The message
    follows what the entry was registered as, and says so when the file on disk now
    disagrees (a link replaced by a regular file, a copy replaced by a link)."""
    if path.suffix != ".safetensors":
        return None
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            header = json.loads(f.read(n)) if 0 < n <= size - 8 else None
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        expected = None
    else:
        expected = 8 + n + max(ends, default=0)
        if size == expected:
            return None
    sizes = "" if expected is None else f"{size:,} bytes where its header describes {expected:,}"
    what = ("no longer a readable safetensors file" if expected is None else
            f"{'changed or truncated' if linked else 'damaged'} ({sizes})")
    target = path.resolve()
    # (registered with --link, a link on disk now) → what happened, in the entry's terms
    messages = {
        (True, True): (f"its weights link to {target}, which is {what}: it was changed after "
                       f"`zoo add --link`" if expected is None else
                       f"its weights link to {target}, which was changed or truncated after "
                       f"`zoo add --link` ({sizes})"),
        (True, False): (f"its weights link {path} (added with --link, to {linked}) was replaced "
                        f"by a regular file, which is {what}"),
        (False, True): (f"its weights file {path} (a copy made by `zoo add`) is now a symbolic "
                        f"link to {target}, which is {what}"),
        (False, False): (f"its weights file {path} is not a readable safetensors file"
                         if expected is None else
                         f"its weights file {path} is damaged ({sizes}: truncated by a copy "
                         f"that did not finish?)"),
    }
    return messages[bool(linked), path.is_symlink()]


def _checked_input_size(input_size: Sequence[int] | None,
                        in_chans: int | None) -> tuple[int, ...] | None:
    """`input_size` as a tuple of positive ints (None stays None); refused when it
    contradicts `in_chans`."""
    if input_size is None:
        return None
    dims = tuple(input_size)
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ZooError(f"input size {input_size!r}: give positive C,H,W (or C,L), e.g. 3,64,64")
    if in_chans is not None and dims[0] != in_chans:
        raise ZooError(f"--in-chans {in_chans} and --input-size {','.join(map(str, dims))} "
                       f"disagree: the input size's first number is the channel count")
    return dims


def _channels_disagree(input_size: Sequence[int], chans: int, checkpoint: Path, arch: str,
                       why: str = "the input channels of their first convolution") -> ZooError:
    """`zoo add --input-size` whose channel count is not the one the weights take."""
    given = ",".join(map(str, input_size))
    fixed = ",".join(map(str, (chans, *input_size[1:])))
    return ZooError(f"--input-size {given} gives {input_size[0]} input channels, but the weights "
                    f"of {checkpoint} ({arch}) take {chans} ({why}): give --input-size {fixed}; "
                    f"nothing was added")


#: most channel counts `_channels_taken` tries (one forward pass each)
CHANNEL_TRIES = 4


def _channels_taken(model: Any, input_size: Sequence[int]) -> int | None:
    """The input channel count `model` runs on at `input_size`'s other dimensions, where the
    given one failed: its convolutions' input channels, tried in the order they are
    registered (the first registered need not read the input: an ECA conv before the stem).
    None when none runs: the failure is not the channels'."""
    import torch

    counts = dict.fromkeys(m.in_channels for m in model.modules()
                           if isinstance(m, torch.nn.modules.conv._ConvNd))
    counts.pop(input_size[0], None)
    model.eval()
    for chans in list(counts)[:CHANNEL_TRIES]:
        try:
            with torch.no_grad():
                model(torch.randn(1, chans, *input_size[1:]))
        except Exception:  # any failure: not this count
            continue
        return chans
    return None


# ----------------------------------------------------------------------------- entries
ACCURACY_RANGE = ("a fraction in [0, 1] (0.833) or a percentage in (1, 100] (83.3); "
                  "both are stored as the fraction")


def normalise_accuracy(accuracy: Any) -> float | None:
    """An entry's accuracy as the fraction in [0, 1] the zoo stores (None stays None).

    One convention, the README's (``--accuracy 0.833``): a value in [0, 1] is a fraction; a
    value in (1, 100] is read as a percentage and divided by 100 (so 83.3 and 0.833 are the
    same entry; 1 means 100%). Anything else (negative, above 100, NaN, not a number) is
    refused with a :class:`ZooError` naming ``--accuracy`` and the accepted range."""
    if accuracy is None:
        return None
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) \
            or not math.isfinite(accuracy):
        raise ZooError(f"--accuracy {accuracy!r} is not a number: give {ACCURACY_RANGE}")
    value = float(accuracy)
    if 0.0 <= value <= 1.0:
        return value
    if 1.0 < value <= 100.0:
        return round(value / 100.0, 12)  # 33.3 → 0.333, not 0.33299999999999996
    raise ZooError(f"--accuracy {accuracy:g} is out of range: give {ACCURACY_RANGE}")


def _stored_accuracy(value: Any) -> Any:
    """An accuracy read from an entry on disk: entries written before the convention may
    hold a percentage (83.3), read as the fraction; a value out of range is kept as it is
    (shown marked as invalid) so that the zoo still loads."""
    try:
        return normalise_accuracy(value)
    except ZooError:
        return value


#: the types an entry's fields must have on disk (a damaged file is refused, naming the field)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "arch": (str,), "num_classes": (int, type(None)),
    "in_chans": (int, type(None)), "task": (str, type(None)), "sha256": (str, type(None)),
    "added": (str,), "params": (int,), "weights": (str,), "linked": (str, type(None)),
    "input_size": (list, type(None))}


@dataclass
class ZooEntry:
    """One checkpoint of the zoo (the content of ``<name>.json``)."""

    name: str
    arch: str
    num_classes: int | None
    in_chans: int | None
    task: str | None
    accuracy: float | None
    sha256: str
    added: str
    params: int
    weights: str  # file name inside the zoo directory
    linked: str | None = None  # absolute path the weights link to (--link)
    #: the input the model is traced on (C, H, W / C, L), for a model that needs one
    input_size: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"netgraft_zoo_entry": ENTRY_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: Path) -> "ZooEntry":
        if not isinstance(data, dict) or data.get("netgraft_zoo_entry") != ENTRY_FORMAT:
            raise ZooError(f"{where} is not a netgraft zoo entry (format {ENTRY_FORMAT})")
        missing = [f for f, spec in cls.__dataclass_fields__.items()
                   if f not in data and spec.default is MISSING]
        if missing:
            raise ZooError(f"{where}: incomplete zoo entry (no {', '.join(missing)})")
        entry = cls(**{f: data[f] for f in cls.__dataclass_fields__ if f in data})
        problem = entry._invalid()
        if problem:
            raise ZooError(f"{where}: damaged zoo entry ({problem})")
        entry.accuracy = _stored_accuracy(entry.accuracy)
        return entry

    def _invalid(self) -> str | None:
        """What is wrong with an entry read from disk, or None."""
        for name, types in _FIELD_TYPES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, types):
                return f"{name} is {value!r}"
        if not _NAME.match(self.name):
            return f"name {self.name!r} is not an entry name"
        if self.weights in ("", ".", "..") or Path(self.weights).name != self.weights:
            return f"weights {self.weights!r} is not a file name inside the zoo"
        if self.input_size is not None and not (
                self.input_size and all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                        for d in self.input_size)):
            return f"input_size is {self.input_size!r}"
        return None

    def example_input(self):
        """A random input of the entry's `input_size`, or None (the model's default)."""
        if self.input_size is None:
            return None
        import torch
        return torch.randn(1, *self.input_size)


@dataclass
class Ranked:
    """One zoo entry ranked for a target."""

    rank: int
    name: str
    arch: str
    task: str | None
    accuracy: float | None
    similarity: float
    coverage: float
    matched_blocks: int
    target_blocks: int
    why: str
    method: str
    entry: ZooEntry = field(repr=False)
    #: False when the source's convolutions have another dimensionality than the target's
    #: (:func:`conv_mismatch`): ranked after every other source, never transferred by the CLI
    compatible: bool = True

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["entry"]
        out["params"] = self.entry.params
        return out


# ----------------------------------------------------------------------------- index
_SCHEMA = """
CREATE TABLE IF NOT EXISTS fingerprints (
    spec TEXT NOT NULL, num_classes INTEGER NOT NULL, in_chans INTEGER NOT NULL,
    input TEXT NOT NULL, version TEXT NOT NULL,
    hash TEXT NOT NULL, data BLOB NOT NULL, seconds REAL, created TEXT NOT NULL,
    PRIMARY KEY (spec, num_classes, in_chans, input, version));
CREATE TABLE IF NOT EXISTS dp (
    a TEXT NOT NULL, b TEXT NOT NULL, method TEXT NOT NULL, scores TEXT NOT NULL,
    value REAL NOT NULL, pairs BLOB,
    PRIMARY KEY (a, b, method, scores));
"""


class Index:
    """The zoo's SQLite index: fingerprints and pairwise DP values."""

    def __init__(self, path: Path):
        self.path = path
        #: a failed write is a cache miss, said once (ranking a shared read-only zoo), not an
        #: error (what `zoo index` and `zoo add` are for)
        self.cache_only = False
        self._warned = False

    def _write(self, sql: str, rows: list[tuple]) -> None:
        try:
            with closing(self.connect()) as con, con:
                con.executemany(sql, rows)
        except sqlite3.OperationalError as exc:
            if not self.cache_only:
                raise ZooError(
                    f"cannot write the zoo index {self.path} ({exc}): make the zoo folder and "
                    f"its index writable (`netgraft rank` still ranks a read-only zoo, without "
                    f"caching)") from exc
            if not self._warned:
                self._warned = True
                warnings.warn(NetgraftWarning(
                    f"the zoo index {self.path} cannot be written ({exc}): fingerprints and "
                    f"similarities are computed but not cached"), stacklevel=3)

    def connect(self) -> sqlite3.Connection:
        try:
            con = sqlite3.connect(self.path, timeout=60)
            con.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ZooError(f"{self.path} is not a usable netgraft index ({exc}); delete it and "
                           f"run `netgraft zoo index` to rebuild it") from exc
        return con

    @staticmethod
    def _key(spec: str, num_classes: int | None, in_chans: int | None, input_key: str) -> tuple:
        return (spec, -1 if num_classes is None else int(num_classes),
                -1 if in_chans is None else int(in_chans), input_key, fpr.fingerprint_version())

    def get_fingerprint(self, spec: str, num_classes: int | None, in_chans: int | None,
                        input_key: str = "auto") -> tuple[str, dict] | None:
        with closing(self.connect()) as con:
            row = con.execute("SELECT hash, data FROM fingerprints WHERE spec=? AND num_classes=? "
                              "AND in_chans=? AND input=? AND version=?",
                              self._key(spec, num_classes, in_chans, input_key)).fetchone()
        if row is None:
            return None
        return row[0], json.loads(zlib.decompress(row[1]))

    def put_fingerprint(self, spec: str, num_classes: int | None, in_chans: int | None,
                        input_key: str, fp: dict, seconds: float) -> str:
        digest = fpr.fingerprint_hash(fp)
        blob = zlib.compress(fpr.dumps(fp).encode(), 6)
        self._write("INSERT OR REPLACE INTO fingerprints VALUES (?,?,?,?,?,?,?,?,?)",
                    [self._key(spec, num_classes, in_chans, input_key)
                     + (digest, blob, seconds, _utc_now())])
        return digest

    def dp_rows(self, hashes: Iterable[str], method: str) -> dict[tuple[str, str], tuple[float, Any]]:
        """Cached (a, b) → (value, pairs or None) for every pair among `hashes`' rows that
        involve them (one query)."""
        hashes = sorted(set(hashes))
        out: dict[tuple[str, str], tuple[float, Any]] = {}
        if not hashes:
            return out
        marks = ",".join("?" * len(hashes))
        with closing(self.connect()) as con:
            for a, b, value, pairs in con.execute(
                    f"SELECT a, b, value, pairs FROM dp WHERE method=? AND scores=? AND "
                    f"a IN ({marks}) AND b IN ({marks})",
                    (method, fpr.score_version(), *hashes, *hashes)):
                out[(a, b)] = (value, None if pairs is None else json.loads(zlib.decompress(pairs)))
        return out

    def put_dp(self, rows: list[tuple[str, str, float, Any]], method: str) -> None:
        if not rows:
            return
        version = fpr.score_version()
        self._write("INSERT OR REPLACE INTO dp VALUES (?,?,?,?,?,?)",
                    [(a, b, method, version, value,
                      None if pairs is None else zlib.compress(json.dumps(pairs).encode()))
                     for a, b, value, pairs in rows])

    def prune(self) -> dict[str, int]:
        """Drop rows written by another version of the tracing or scoring code."""
        with closing(self.connect()) as con, con:
            fps = con.execute("DELETE FROM fingerprints WHERE version != ?",
                              (fpr.fingerprint_version(),)).rowcount
            dps = con.execute("DELETE FROM dp WHERE scores != ?", (fpr.score_version(),)).rowcount
        return {"fingerprints": fps, "dp": dps}

    def counts(self) -> dict[str, int]:
        with closing(self.connect()) as con:
            return {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                    for t in ("fingerprints", "dp")}


# ----------------------------------------------------------------------------- coverage
@lru_cache(maxsize=65536)
def _graft_fraction(source: tuple, target: tuple, dim_roles: tuple) -> float:
    """The share of a target tensor ``adapt.graft`` fills from a source tensor of another
    shape, from the shapes alone: a linear seen as a conv gains 1-sized kernel dimensions
    (``_match_ndim``), a kernel dimension that grows is zero-padded and a ``rows`` dimension
    (embedding table) that grows keeps the target's rows; every other resize (replicate,
    select, mix, q/k/v, token resampling) fills the whole dimension. A test checks this
    against ``adapt.graft`` on real tensors, so a change there cannot drift silently.
    (Running ``adapt.graft`` on meta tensors would be exact by construction, but its first
    call imports torch._dynamo: 2 s per process.)"""
    shape = list(source)[:len(target)] + [1] * max(0, len(target) - len(source))
    fraction = 1.0
    for s, t, role in zip(shape, target, dim_roles):
        if s < t and role in ("k", "rows"):
            fraction *= s / t
    return fraction


def _head_differs(src: Layer, tgt: Layer) -> bool:
    return tgt.role == "output" and src.out_dim != tgt.out_dim


def coverage(matching: Matching, identity: dict[int, list[str]] | None = None,
             min_score: float = 0.0) -> float:
    """Fraction of the target's parameter elements a transfer with this matching fills from
    the source, as ``TransferReport.coverage`` counts it (``head="auto"``, identity blocks
    on for ``graft``), from the shapes alone. `identity` is the target's
    :func:`netgraft.fingerprint.measure_identity` map (None: no identity blocks counted);
    with `min_score` > 0 (a distant pair), layers matched below it (not the classifier) and
    the target's gates count as left at init."""
    from . import adapt
    from .transfer import _extra_blocks, leaves_at_init

    src_arch, tgt_arch, method = matching.source, matching.target, matching.method
    zeroed: set[str] = set()
    if method != "dpiat" and identity:
        for b in _extra_blocks(src_arch, tgt_arch, matching):
            zeroed.update(identity.get(b, ()))
    total = filled = 0.0
    for tgt in tgt_arch.layers:
        s = matching.pairs.get(tgt.index)
        src = None if s is None else src_arch.layers[s]
        for name in tgt.param_names:
            shape = tgt.shapes[name]
            numel = math.prod(shape)
            total += numel
            if src is None or name not in src.shapes or tgt.name in zeroed:
                continue
            if leaves_at_init(tgt, matching.scores.get(tgt.index, 0.0), min_score):
                continue
            source_shape = src.shapes[name]
            if method == "dpiat":
                if name in ("weight", "bias"):
                    filled += math.prod(min(a, b) for a, b in zip(source_shape, shape))
                continue
            if _head_differs(src, tgt):
                continue
            if tuple(source_shape) == tuple(shape):
                filled += numel
                continue
            dim_roles = adapt.roles(tgt, name, len(shape))
            filled += round(numel * _graft_fraction(tuple(source_shape), tuple(shape), dim_roles))
    return filled / total if total else 0.0


def _stage(block_name: str) -> str:
    """The stage a block belongs to: its name up to its last numeric component
    (layer1.0 → layer1, blocks.2.1 → blocks.2, stages.0.blocks.3 → stages.0.blocks,
    blocks.3.attn → blocks)."""
    parts = block_name.split(".")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].isdigit():
            return ".".join(parts[:i]) or block_name
    return ".".join(parts[:-1]) or block_name


def explain(matching: Matching, similarity: float | None = None) -> tuple[int, int, str]:
    """(target blocks the default transfer fills, target blocks, a one-line "why").

    The text says what ``netgraft.transfer`` with its defaults (``min_score="auto"``,
    ``head="auto"``) does for this pair, `similarity` being the pair's
    (:func:`netgraft.similarity.pair_similarity`; computed when None): an unrelated pair
    (``similarity.unrelated``) gets nothing; in a distant pair (``similarity.closes_gates``)
    the layers matched below ``default_min_score`` and the gates stay at their init, so a
    block counts as matched only when one of its weight layers (conv, linear, ...; its norms
    alone do not count) keeps its match, and a copied head is tempered when it is more
    confident than the target's own init head on a noise probe (scaled down to that
    confidence, or reset to the init): "head tempered if over-confident" (whether it is depends
    on the weights, which ranking does not read; trained sources usually are).
    A source whose convolutions have another dimensionality says so instead."""
    from .similarity import closes_gates
    from .transfer import default_min_score, leaves_at_init

    src_arch, tgt_arch = matching.source, matching.target
    if similarity is None:
        from .match import dp_value
        similarity = pair_similarity(matching, dp_value(tgt_arch, src_arch, matching.method),
                                     dp_value(src_arch, src_arch, matching.method),
                                     dp_value(tgt_arch, tgt_arch, matching.method))
    n_blocks = len(tgt_arch.blocks)
    mismatch = conv_mismatch(matching)
    if unrelated(matching, similarity):
        return 0, n_blocks, (f"{mismatch} (ranked last)" if mismatch else
                             f"nothing transferred: unrelated pair (similarity "
                             f"{below(similarity)} < {UNRELATED_SIMILARITY}), the target keeps its "
                             f"init")
    min_score = default_min_score(matching, similarity)

    def kept(i: int) -> bool:  # a target layer the default transfer fills from the source
        return (matching.pairs.get(i) is not None
                and not leaves_at_init(tgt_arch.layers[i], matching.scores.get(i, 0.0), min_score))

    def block_kept(block) -> bool:
        # by its weight layers (conv, linear ...): a block that keeps only its norms (their
        # statistics re-estimated anyway in a distant pair) is not given its function
        layers = [i for i in block.layers if tgt_arch.layers[i].kind in DIMENSIONAL_KINDS]
        return any(kept(i) for i in layers or block.layers)

    matched_block = [block_kept(block) for block in tgt_arch.blocks]
    n_matched = sum(matched_block)
    if mismatch is not None:
        return n_matched, n_blocks, f"{mismatch} (ranked last)"
    parts = [f"{n_matched}/{n_blocks} target blocks matched"]
    if min_score > 0:
        parts[0] += " (weak ones left at init)"
    body = []
    stem = [layer for layer in tgt_arch.layers if layer.role == "input"]
    if stem:
        i = stem[0].index
        body.append("stem" if kept(i) else "stem left at init" if matching.pairs.get(i) is not None
                    else "stem unmatched")
    stages: dict[str, list[bool]] = {}
    for block, ok in zip(tgt_arch.blocks, matched_block):
        if not block.single:
            stages.setdefault(_stage(block.name), []).append(ok)
    if stages:
        full = sum(all(v) for v in stages.values())
        body.append(f"{full}/{len(stages)} stages" if full < len(stages) else f"all {full} stages")
    if body:
        parts.append(", ".join(body))
    heads = [layer for layer in tgt_arch.layers if layer.role == "output"]
    if heads:
        s = matching.pairs.get(heads[0].index)
        if s is None:
            parts.append("head unmatched")
        elif _head_differs(src_arch.layers[s], heads[0]):
            parts.append(f"head differs ({src_arch.layers[s].out_dim}→{heads[0].out_dim} outputs)")
        elif closes_gates(matching, similarity):
            parts.append("head tempered if over-confident (distant pair)")
        else:
            parts.append("head copied")
    return n_matched, n_blocks, "; ".join(parts)


# ----------------------------------------------------------------------------- the zoo
@dataclass
class _Target:
    hash: str
    arch: Architecture
    identity: dict[int, list[str]] | None
    label: str


class Zoo:
    """A directory of trained checkpoints with an architecture index."""

    def __init__(self, directory: str | os.PathLike | None = None, *, create: bool = True):
        self.dir = Path(directory).expanduser() if directory else default_zoo_dir()
        if self.dir.exists() and not self.dir.is_dir():
            raise ZooError(f"zoo path {self.dir} is a file, not a directory")
        if not self.dir.exists() and not create:
            raise self._no_zoo()
        self.index = Index(self.dir / INDEX_FILE)
        self._archs: dict[str, Architecture] = {}  # fingerprint hash → rebuilt Architecture
        self._warned: set[str] = set()  # one warning per damaged file, however often it is read

    def _no_zoo(self) -> ZooError:
        return ZooError(f"no zoo at {self.dir}: add a checkpoint with `netgraft zoo add`")

    # ------------------------------------------------------------------ entries
    def entries(self) -> list[ZooEntry]:
        """Every entry, by name. A damaged or incomplete ``<name>.json`` is skipped with a
        ZooWarning naming the file (one bad file never hides the others); a JSON file that is
        not a zoo entry at all is ignored."""
        out = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                entry = self._read_entry(path)
            except ZooError as exc:
                fix = (f"; or remove it with `netgraft zoo remove {path.stem}{self._zoo_option()}`"
                       if _NAME.match(path.stem) else "")
                message = f"skipped {exc}: fix or delete that file{fix}"
                if message not in self._warned:
                    self._warned.add(message)
                    warnings.warn(message, ZooWarning, stacklevel=2)
                continue
            if entry is not None:
                out.append(entry)
        return out

    @staticmethod
    def _read_entry(path: Path) -> ZooEntry | None:
        """The entry `path` describes; None when it is a JSON file but no zoo entry. A
        ZooError naming the file when it is unreadable, damaged or incomplete."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ZooError(f"{path}: unreadable zoo entry ({exc})") from exc
        if not (isinstance(data, dict) and "netgraft_zoo_entry" in data):
            return None
        return ZooEntry.from_dict(data, path)

    def _no_entry(self, name: str) -> ZooError:
        known = [e.name for e in self.entries()]
        return ZooError(f"no entry '{name}' in zoo {self.dir} (entries: "
                        f"{', '.join(known[:10]) or 'none'}; see `netgraft zoo list`)")

    def get(self, name: str) -> ZooEntry:
        _check_name(name, "give a name `netgraft zoo list` shows, not a path")
        path = self.dir / f"{name}.json"
        entry = self._read_entry(path) if path.is_file() else None
        if entry is None:
            raise self._no_entry(name)
        return entry

    def __len__(self) -> int:
        return len(self.entries())

    def add(self, checkpoint: str | os.PathLike, arch: str, *, name: str | None = None,
            task: str | None = None, accuracy: float | None = None,
            num_classes: int | None = None, in_chans: int | None = None,
            input_size: Sequence[int] | None = None,
            link: bool = False, force: bool = False) -> ZooEntry:
        """Check that `checkpoint` loads into `arch`, store it, fingerprint it, describe it.

        num_classes / in_chans are read off the weights (timm models); pass them for a
        ``package.module:factory`` model. `input_size` (C, H, W or C, L) is the input the
        model is traced on, for a model that does not accept netgraft's default one (it is
        stored with the entry, and used whenever the entry is ranked or grafted from).
        Refuses an existing name or identical weights unless `force`. With `link`, a
        .safetensors file is symlinked instead of copied. The zoo's folder is made by the
        first entry added to it (and removed again if that fails)."""
        made = not self.dir.exists()
        try:
            return self._add(checkpoint, arch, name, task, accuracy, num_classes, in_chans,
                             input_size, link, force)
        except BaseException:
            if made:  # the folder this call made: removed if nobody else wrote to it since
                self._remove_if_unused()
            raise

    def _remove_if_unused(self) -> None:
        """Remove the zoo's folder, made by a `zoo add` that failed, when it holds nothing but
        the index that add started (another `zoo add` may have written an entry there
        meanwhile)."""
        own = {INDEX_FILE, INDEX_FILE + "-journal", INDEX_FILE + "-wal", INDEX_FILE + "-shm"}
        try:
            if any(p.name not in own for p in self.dir.iterdir()):
                return
            for name in own:
                (self.dir / name).unlink(missing_ok=True)
            self.dir.rmdir()
        except OSError:
            pass  # what cannot be removed stays: a folder is not worth an error of its own

    def _add(self, checkpoint, arch, name, task, accuracy, num_classes, in_chans, input_size,
             link, force) -> ZooEntry:
        import torch

        from .checkpoint import (atomic_write, load_into, load_state_dict, load_weights,
                                 save_json, save_state_dict)
        from .models import create_model, head_shape

        checkpoint = Path(checkpoint).expanduser()
        name = checkpoint.stem if name is None else name  # --name "" is refused, not replaced
        _check_name(name, "pass --name")
        meta_path, weights_path = self.dir / f"{name}.json", self.dir / f"{name}.safetensors"
        self._check_source(checkpoint, weights_path, name, link)
        if not force and (meta_path.exists() or weights_path.exists()):
            raise ZooError(f"zoo {self.dir} already has an entry '{name}'; pass --force to "
                           f"replace it or --name to add it under another name")
        if link and checkpoint.suffix != ".safetensors":
            raise ZooError(f"--link needs a .safetensors file ({checkpoint} is converted, so it "
                           f"is copied): drop --link")
        accuracy = normalise_accuracy(accuracy)
        input_size = _checked_input_size(input_size, in_chans)
        if task is not None and any(c in task for c in "\r\n\t"):
            raise ZooError(f"--task {task!r} holds a line break or tab: give one line (a table "
                           f"row per entry stays one line)")

        state = load_state_dict(checkpoint)
        bad = next((k for k, v in state.items() if isinstance(v, torch.Tensor)
                    and v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:  # a source no graft would take (`transfer` refuses it by name)
            raise ZooError(f"{checkpoint}: tensor '{bad}' holds NaN or inf values; these "
                           f"weights cannot be grafted from, so they were not added")
        kwargs = head_shape(arch, state)
        kwargs.update({k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans))
                       if v is not None})
        if input_size is not None and kwargs.get("in_chans") not in (None, input_size[0]):
            raise _channels_disagree(input_size, kwargs["in_chans"], checkpoint, arch)
        model = create_model(arch, **kwargs)
        key = (arch, kwargs.get("num_classes"), kwargs.get("in_chans"))
        # fingerprinted at its init, as a target of the same spec is: the fingerprint is the
        # architecture's, whatever these weights are (layer-scale gates read as closed)
        init_state = {k: v.clone() for k, v in model.state_dict().items()}
        load_weights(model, state, what=f"zoo entry '{name}' (arch '{arch}')", source=checkpoint)

        digest = _sha256(checkpoint) if checkpoint.suffix == ".safetensors" else None
        if digest is not None and not force:
            self._refuse_duplicate(digest, name)
        trained_state = {k: v.clone() for k, v in model.state_dict().items()}
        load_into(model, init_state)
        example = None if input_size is None else torch.randn(1, *input_size)
        self.dir.mkdir(parents=True, exist_ok=True)  # the index is written from here on
        try:  # traced before the index is written
            arch_hash, fp = self._fingerprint_model(model, *key, _input_key(input_size), example)
        except ModelForwardError:
            # a factory model (head_shape reads timm's only): blamed on the channels of
            # --input-size only when another count runs
            chans = None if input_size is None else _channels_taken(model, input_size)
            if chans is not None:
                raise _channels_disagree(input_size, chans, checkpoint, arch,
                                         "the channel count it runs on") from None
            raise
        load_into(model, trained_state)
        for method in METHODS:
            self._self_dp([arch_hash], method)

        # two `zoo add` of one name at once: the second is refused, as it would be after
        lock = self.dir / f".{name}.adding"
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            raise ZooError(f"entry '{name}' is being added to zoo {self.dir} by another "
                           f"process (or one that was killed: delete {lock})") from None
        created = not weights_path.exists() and not weights_path.is_symlink()
        try:
            if not force and (meta_path.exists() or weights_path.exists()):
                raise ZooError(f"zoo {self.dir} already has an entry '{name}'; pass --force to "
                               f"replace it or --name to add it under another name")
            if link:
                tmp = self.dir / f".{name}.link.tmp"
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(checkpoint.resolve())
                os.replace(tmp, weights_path)
            elif digest is not None:
                atomic_write(weights_path, lambda tmp: shutil.copyfile(checkpoint, tmp))
            else:
                save_state_dict(state, weights_path)
                digest = _sha256(weights_path)
                if not force:
                    self._refuse_duplicate(digest, name)
            entry = ZooEntry(
                name=name, arch=arch, num_classes=key[1], in_chans=key[2], task=task,
                accuracy=None if accuracy is None else float(accuracy), sha256=digest,
                added=_utc_now(), params=sum(p.numel() for p in model.parameters()),
                weights=weights_path.name, linked=str(checkpoint.resolve()) if link else None,
                input_size=None if input_size is None else list(input_size))
            save_json(entry.to_dict(), meta_path)
        except BaseException:
            if created:
                weights_path.unlink(missing_ok=True)
            raise
        finally:
            lock.unlink(missing_ok=True)
        return entry

    def _check_source(self, checkpoint: Path, weights_path: Path, name: str, link: bool) -> None:
        """Refuse to add a file the zoo itself holds: the entry's own weights (a copy or a
        link would replace them by themselves, or by a link to themselves), or, with --link,
        any file inside the zoo (the link would break when that entry is removed)."""
        if not checkpoint.exists() or not _inside(checkpoint, self.dir):
            return
        if checkpoint.resolve() == weights_path.resolve():
            raise ZooError(f"{checkpoint} is the zoo's own copy of the weights of entry "
                           f"'{name}': they are already in zoo {self.dir}, nothing was changed; to "
                           f"replace the entry, add the original checkpoint with --force")
        if link:
            raise ZooError(f"--link {checkpoint}: that file is inside zoo {self.dir}, so the link "
                           f"would break when its entry is removed; drop --link to copy it")

    def _refuse_duplicate(self, digest: str, name: str) -> None:
        for other in self.entries():
            if other.sha256 == digest and other.name != name:
                raise ZooError(f"these weights are already in the zoo as '{other.name}' "
                               f"(same sha256); pass --force to add them again")

    def remove(self, name: str) -> None:
        """Delete an entry's description and its weights (for a --link entry, the link only).
        A damaged description goes with the weights file of its name."""
        _check_name(name, "give a name `netgraft zoo list` shows, not a path")
        meta = self.dir / f"{name}.json"
        try:
            entry = self._read_entry(meta) if meta.is_file() else None
            weights = None if entry is None else entry.weights
        except ZooError:  # damaged: removing it is how to get rid of it
            weights = f"{name}.safetensors"
        if weights is None:
            raise self._no_entry(name)
        meta.unlink()
        (self.dir / weights).unlink(missing_ok=True)

    def weights_path(self, entry: ZooEntry) -> Path:
        return self.dir / entry.weights

    def missing_weights(self, entry: ZooEntry) -> str | None:
        """Why the entry's weights cannot be read (None when they are there): its weights
        file is gone, or the file its --link points to is."""
        path = self.weights_path(entry)
        if path.is_file():
            return _damaged_safetensors(path, entry.linked)
        if path.is_symlink():
            return f"its weights link to {os.readlink(path)}, which no longer exists"
        if entry.linked:
            return f"its weights link {path} (to {entry.linked}) is gone"
        return f"its weights file {path} is missing"

    def _missing_hint(self, entry: ZooEntry) -> str:
        name, where = shlex.quote(entry.name), self._zoo_option()
        size = (f" --input-size {','.join(map(str, entry.input_size))}" if entry.input_size
                else "")
        given = [("--num-classes", entry.num_classes), ("--in-chans", entry.in_chans),
                 ("--task", entry.task), ("--accuracy", entry.accuracy)]
        options = "".join(f" {flag} {shlex.quote(str(value))}" for flag, value in given
                          if value is not None)
        again = f"--arch {shlex.quote(entry.arch)} --name {name}{options}{size}"
        remove = f"or remove the entry with `netgraft zoo remove {name}{where}`"
        if entry.linked:  # the user's own file, linked: restored, or re-linked as it is now
            return (f"restore that file, re-add it with `netgraft zoo add "
                    f"{shlex.quote(entry.linked)} {again} --link --force{where}`, {remove}")
        return (f"restore that file, re-add the checkpoint with `netgraft zoo add FILE {again} "
                f"--force{where}`, {remove}")

    def _zoo_option(self) -> str:
        """`` --zoo DIR`` for a command the user is told to run, unless this is the default
        zoo (a command without it would act on the default one)."""
        if self.dir.expanduser().resolve() == default_zoo_dir().resolve():
            return ""
        return f" --zoo {shlex.quote(str(self.dir))}"

    def _with_weights(self, entries: list[ZooEntry]) -> list[ZooEntry]:
        """The entries whose weights are there; the others skipped with a ZooWarning."""
        out = []
        for entry in entries:
            why = self.missing_weights(entry)
            if why is None:
                out.append(entry)
            else:
                warnings.warn(f"zoo entry '{entry.name}' skipped: {why}; "
                              f"{self._missing_hint(entry)}", ZooWarning, stacklevel=3)
        return out

    def _holder(self, path: Path) -> str | None:
        """How the zoo holds `path` (symbolic and hard links followed), or None: a file
        inside the zoo directory, or the file an entry's weights link to."""
        held = [e for e in self.entries()
                if _same_file(path, self.weights_path(e))]
        if held:
            return f"is the weights of zoo entry '{held[0].name}' ({self.weights_path(held[0])})"
        if _inside(path, self.dir):
            return f"is inside zoo {self.dir}"
        return None

    def check_output(self, out: Path, *, force: bool = False, flag: str = "out") -> None:
        """Refuse an output file name before any work (`checkpoint.check_output`): also, and
        always, a file the zoo holds."""
        from .checkpoint import WEIGHT_SUFFIXES, check_output

        def taken(path: Path) -> str | None:
            held = self._holder(path)
            return held and (f"{held}: a graft is never written into the zoo; choose a file "
                             f"outside it (then `netgraft zoo add` it to keep it)")

        check_output(out, flag, force=force, suffixes=WEIGHT_SUFFIXES, taken=taken,
                     error=ZooError)

    # ------------------------------------------------------------------ fingerprints
    def _fingerprint_model(self, model, spec: str, num_classes: int | None, in_chans: int | None,
                           input_key: str, example_input: Any = None,
                           identity: bool = False, store: bool = True) -> tuple[str, dict]:
        """(hash, fingerprint) of `model` traced; stored in the index unless `store` is
        False."""
        from .trace import trace

        start = time.perf_counter()
        arch = trace(model, example_input, name=spec)
        fp = fpr.to_dict(arch, fpr.measure_identity(arch) if identity else None)
        if store:
            digest = self.index.put_fingerprint(spec, num_classes, in_chans, input_key, fp,
                                                time.perf_counter() - start)
        else:
            digest = fpr.fingerprint_hash(fp)
        self._archs.setdefault(digest, fpr.from_dict(fp))
        return digest, fp

    def fingerprint(self, spec: str, num_classes: int | None = None, in_chans: int | None = None,
                    input_size: Sequence[int] | None = None, *,
                    identity: bool = False) -> tuple[str, dict]:
        """(hash, fingerprint) of a model spec: from the index, else built, traced and stored.
        With `identity`, make sure the identity-block probe is in it (targets need it).
        A zoo whose folder does not exist yet (it is made by the first `add`) has no index:
        the fingerprint is built and returned, neither read from nor written to one, and
        the folder is not made."""
        from .models import create_model

        input_key = _input_key(input_size)
        indexed = self.dir.is_dir()
        found = (self.index.get_fingerprint(spec, num_classes, in_chans, input_key)
                 if indexed else None)
        if found is not None and (not identity or found[1].get("identity") is not None):
            try:
                self.architecture(*found)
                return found
            except fpr.FingerprintError:  # a damaged row: rebuild it from the model
                pass
        kwargs = {k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans))
                  if v is not None}
        model = create_model(spec, **kwargs)
        example = None
        if input_size:
            import torch
            example = torch.randn(1, *input_size)
        return self._fingerprint_model(model, spec, num_classes, in_chans, input_key, example,
                                       identity=identity, store=indexed)

    def _entry_fingerprint(self, entry: ZooEntry) -> tuple[str, dict] | None:
        """`fingerprint` of an entry's architecture, or None with a warning naming the entry
        when its model cannot be built here (a factory module not importable from this
        directory or machine): one such entry does not stop the others being ranked."""
        try:
            return self.fingerprint(entry.arch, entry.num_classes, entry.in_chans,
                                    entry.input_size)
        except ModelSpecError as exc:
            warnings.warn(f"zoo entry '{entry.name}': its model cannot be built here, so it "
                          f"is not ranked ({exc})", ZooWarning, stacklevel=3)
            return None

    def architecture(self, digest: str, fp: dict | None = None) -> Architecture:
        if digest not in self._archs:
            if fp is None:
                raise KeyError(digest)
            self._archs[digest] = fpr.from_dict(fp)
        return self._archs[digest]

    def build_index(self) -> dict[str, float]:
        """Make sure every entry has a fingerprint and its self-DP value for every method;
        returns counts and timings."""
        if not self.dir.is_dir():
            raise self._no_zoo()
        start = time.perf_counter()
        pruned = self.index.prune()
        hashes = []
        built = 0
        for entry in self.entries():
            missing = self.missing_weights(entry)
            if missing is not None:  # its architecture is indexed all the same
                warnings.warn(f"zoo entry '{entry.name}': {missing}, so it is not ranked; "
                              f"{self._missing_hint(entry)}", ZooWarning, stacklevel=2)
            if self.index.get_fingerprint(entry.arch, entry.num_classes, entry.in_chans,
                                          _input_key(entry.input_size)) is None:
                built += 1
            found = self._entry_fingerprint(entry)
            if found is not None:
                hashes.append(found[0])
        for method in METHODS:
            self._self_dp(hashes, method)
        return {"entries": len(hashes), "fingerprinted": built, "pruned": sum(pruned.values()),
                "seconds": time.perf_counter() - start}

    def _self_dp(self, hashes: list[str], method: str) -> dict[str, float]:
        from .match import dp_value  # looked up at call time (tests count the calls)

        cached = self.index.dp_rows(hashes, method)
        out, new = {}, []
        for h in set(hashes):
            if (h, h) in cached:
                out[h] = cached[(h, h)][0]
            else:
                arch = self._archs.get(h)
                if arch is None:
                    continue
                out[h] = dp_value(arch, arch, method)
                new.append((h, h, out[h], None))
        self.index.put_dp(new, method)
        return out

    # ------------------------------------------------------------------ ranking
    def _target(self, target: Any, num_classes: int | None, in_chans: int | None,
                input_size: Sequence[int] | None) -> _Target:
        from torch import nn

        if isinstance(target, str):
            digest, fp = self.fingerprint(target, num_classes, in_chans, input_size, identity=True)
            return _Target(digest, self.architecture(digest, fp), fpr.identity_of(fp), target)
        if isinstance(target, nn.Module):
            from .trace import trace
            example = None
            if input_size:
                import torch
                example = torch.randn(1, *input_size)
            target = trace(target, example)
        if isinstance(target, Architecture):
            fp = fpr.to_dict(target, fpr.measure_identity(target) if target.model is not None
                             and target.example_input is not None else None)
            digest = fpr.fingerprint_hash(fp)
            self._archs.setdefault(digest, target)
            return _Target(digest, target, fpr.identity_of(fp), target.name)
        raise TypeError(f"rank target must be a model name, an nn.Module or an Architecture, "
                        f"got {type(target).__name__}")

    def rank(self, target: Any, *, num_classes: int | None = None, in_chans: int | None = None,
             input_size: Sequence[int] | None = None, method: str = DEFAULT_METHOD,
             top: int | None = None) -> list[Ranked]:
        """Every entry scored as a source for `target` (a model spec, module or Architecture),
        best first: similarity, then coverage, then name; a source whose convolutions have
        another dimensionality than the target's (``Ranked.compatible`` False) comes after
        all the others, whatever its similarity."""
        try:
            get_method(method)
        except ValueError as exc:
            raise ZooError(str(exc)) from None
        if top is not None and top < 1:
            raise ZooError(f"--top {top}: give a positive number")
        if not self.dir.is_dir():  # a mistyped path: said, not made
            raise self._no_zoo()
        entries = self.entries()
        if not entries:
            raise ZooError(f"zoo {self.dir} is empty: add checkpoints with `netgraft zoo add`")
        self.index.cache_only = True  # ranking only reads the zoo; its cache may be read-only
        entries = self._with_weights(entries)
        if not entries:
            raise ZooError(f"no entry of zoo {self.dir} has its weights (see the warnings and "
                           f"`netgraft zoo list`)")
        tgt = self._target(target, num_classes, in_chans, input_size)
        sources: list[tuple[ZooEntry, str]] = []
        for entry in entries:
            found = self._entry_fingerprint(entry)
            if found is None:
                continue
            self.architecture(*found)
            sources.append((entry, found[0]))
        if not sources:
            raise ZooError(f"no entry of zoo {self.dir} could be built (see the warnings)")

        hashes = {h for _, h in sources} | {tgt.hash}
        cached = self.index.dp_rows(hashes, method)
        new: list[tuple[str, str, float, Any]] = []

        def dp(a: str, b: str) -> float:
            from .match import dp_value
            if (a, b) not in cached:
                value = dp_value(self._archs[a], self._archs[b], method)
                cached[(a, b)] = (value, None)
                new.append((a, b, value, None))
            return cached[(a, b)][0]

        def matching(s: str) -> Matching:
            t = tgt.hash
            src_arch, tgt_arch = self._archs[s], tgt.arch
            row = cached.get((s, t))
            if row is None or row[1] is None:
                # the index keeps the plain DP value (what `dp` reads), the matching's is
                # recomputed from its pairs (gated-off blocks discounted)
                m = match(src_arch, tgt_arch, method)
                pairs = {"pairs": [m.pairs[i] for i in range(len(tgt_arch.layers))],
                         "scores": [m.scores[i] for i in range(len(tgt_arch.layers))]}
                cached[(s, t)] = (m.plain_value, pairs)
                new.append((s, t, m.plain_value, pairs))
                return m
            raw, pairs = row
            found = dict(enumerate(pairs["pairs"]))
            scores = dict(enumerate(pairs["scores"]))
            return Matching(method=method, source=src_arch, target=tgt_arch, pairs=found,
                            scores=scores, value=open_value(raw, tgt_arch, found, scores, method),
                            plain_value=raw)

        from .transfer import default_min_score

        results = []
        try:
            for entry, s in sources:
                m = matching(s)
                sim = pair_similarity(m, dp(tgt.hash, s), dp(s, s), dp(tgt.hash, tgt.hash))
                n_matched, n_blocks, why = explain(m, sim)
                weak = default_min_score(m, sim)
                results.append(Ranked(
                    rank=0, name=entry.name, arch=entry.arch, task=entry.task,
                    accuracy=entry.accuracy, similarity=sim,
                    coverage=0.0 if unrelated(m, sim) else coverage(m, tgt.identity, weak),
                    matched_blocks=n_matched,
                    target_blocks=n_blocks, why=why, method=method, entry=entry,
                    compatible=conv_mismatch(m) is None))
        finally:
            self.index.put_dp(new, method)
        results.sort(key=lambda r: (not r.compatible, -r.similarity, -r.coverage, r.name))
        for i, r in enumerate(results, 1):
            r.rank = i
        return results[:top] if top else results

    def probe(self, ranked: Sequence[Ranked], target: str, data: Any, *, steps: int = 20,
              num_classes: int | None = None, in_chans: int | None = None,
              method: str = DEFAULT_METHOD, progress: Any = None) -> list[tuple[Ranked, Any]]:
        """Data-driven second stage: graft each ranked entry onto `target` and probe it on
        labelled `data` (``netgraft.probe``); returns (entry, ProbeResult) best gain first."""
        import torch

        from .models import create_model
        from .probe import probe_sources

        kwargs = {k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans))
                  if v is not None}

        def make_target():
            torch.manual_seed(0)
            return create_model(target, **kwargs)

        sources = [(r.name, self.load_source(r.entry)) for r in ranked]
        results = probe_sources(sources, make_target, data, limit=None, target_name=target,
                                source_inputs={r.name: r.entry.example_input() for r in ranked},
                                steps=steps, method=method, progress=progress)
        pairs = list(zip(ranked, results))
        pairs.sort(key=lambda p: (-p[1].gain, p[0].rank))
        return pairs

    # ------------------------------------------------------------------ transfer
    def load_source(self, entry: ZooEntry | str):
        """The entry's model with its weights loaded."""
        from .checkpoint import load_weights
        from .models import create_model

        entry = self.get(entry) if isinstance(entry, str) else entry
        missing = self.missing_weights(entry)
        if missing is not None:
            raise ZooError(f"zoo entry '{entry.name}': {missing}; {self._missing_hint(entry)}")
        kwargs = {k: v for k, v in (("num_classes", entry.num_classes), ("in_chans", entry.in_chans))
                  if v is not None}
        model = create_model(entry.arch, **kwargs)
        load_weights(model, self.weights_path(entry), what=f"zoo entry '{entry.name}' "
                                                            f"(arch '{entry.arch}')")
        return model

    def transfer_to(self, entry: ZooEntry | str, target: str, *, num_classes: int | None = None,
                    in_chans: int | None = None, input_size: Sequence[int] | None = None,
                    method: str = DEFAULT_METHOD, out: str | os.PathLike | None = None):
        """Build `target`, graft the entry onto it, check it, optionally write it atomically.
        Returns (target model, TransferReport)."""
        import torch

        from .checkpoint import save_state_dict
        from .models import create_model
        from .transfer import transfer

        entry = self.get(entry) if isinstance(entry, str) else entry
        if out is not None:
            out = Path(out)
            self.check_output(out, force=True)
        source = self.load_source(entry)
        kwargs = {k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans))
                  if v is not None}
        model = create_model(target, **kwargs)
        example = torch.randn(1, *input_size) if input_size else None
        report = transfer(source, model, method=method, example_input=example,
                          source_input=entry.example_input())
        model.eval()
        with torch.no_grad():
            y = model(report.matching.target.example_input)
        if isinstance(y, torch.Tensor) and not torch.isfinite(y).all():
            raise ZooError("the grafted target produces NaN/inf on a random input; nothing was "
                           "written")
        if out is not None:
            save_state_dict(model.state_dict(), out, metadata={
                "netgraft_source": entry.arch, "netgraft_zoo_entry": entry.name,
                "netgraft_target": target, "netgraft_method": report.method,
                "netgraft_coverage": f"{report.coverage:.6f}"})
        return model, report


# ----------------------------------------------------------------------------- CLI
def _zoo_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--zoo", help="zoo directory (default $NETGRAFT_ZOO or ~/.cache/netgraft/zoo)")


def add_zoo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`netgraft zoo add|list|index|remove`."""
    sub = parser.add_subparsers(dest="zoo_command", required=True)
    p = sub.add_parser("add", help="add a trained checkpoint to the zoo")
    p.add_argument("checkpoint", help=".safetensors or torch state_dict file")
    p.add_argument("--arch", required=True, help=MODEL_SPEC_HELP)
    p.add_argument("--name", help="entry name (default: the file name without extension)")
    p.add_argument("--task", help="what it was trained on, e.g. fashion-mnist")
    p.add_argument("--accuracy", type=float,
                   help="its test accuracy: a fraction in [0, 1] (0.833) or a percentage in "
                        "(1, 100] (83.3), stored as the fraction")
    p.add_argument("--num-classes", type=_positive_int, help="default: read from the weights")
    p.add_argument("--in-chans", type=_positive_int, help="default: read from the weights")
    p.add_argument("--input-size", metavar="C,H,W",
                   help="the input the model is traced on, for a model that does not take the "
                        "default one (a fixed image or sequence size, e.g. 3,64,64 or 3,128); "
                        "stored with the entry")
    p.add_argument("--link", action="store_true", help="symlink the .safetensors file instead of copying it")
    p.add_argument("--force", action="store_true", help="replace an entry of the same name / weights")
    _zoo_arg(p)
    p = sub.add_parser("list", help="list the zoo's checkpoints")
    p.add_argument("--json", action="store_true")
    _zoo_arg(p)
    p = sub.add_parser("index", help="(re)build the fingerprint index of every entry")
    _zoo_arg(p)
    p = sub.add_parser("remove", help="remove an entry and its weights")
    p.add_argument("name")
    _zoo_arg(p)
    return parser


def _fmt_acc(acc: float | None) -> str:
    if acc is None:
        return "-"
    if isinstance(acc, (int, float)) and not isinstance(acc, bool) and 0 <= acc <= 1:
        return f"{acc:.1%}"
    return f"{acc} (invalid)"  # out of range in an entry written before the check


def run_zoo(args: argparse.Namespace) -> int:
    console = _console()
    cmd = args.zoo_command
    zoo = Zoo(args.zoo, create=cmd == "add")
    if cmd == "add":
        from .models import parse_input_size
        entry = zoo.add(args.checkpoint, args.arch, name=args.name, task=args.task,
                        accuracy=args.accuracy, num_classes=args.num_classes,
                        in_chans=args.in_chans, input_size=parse_input_size(args.input_size),
                        link=args.link, force=args.force)
        shape = [f"{v} {what}" for v, what in ((entry.num_classes, "classes"),
                                               (entry.in_chans, "input channels"))
                 if v is not None]
        if entry.input_size:
            shape.append(f"traced at {'×'.join(map(str, entry.input_size))}")
        console.print(f"added '{entry.name}' ({', '.join([entry.arch, f'{entry.params:,} parameters', *shape])}) "
                      f"to {zoo.dir}", markup=False)
        return 0
    if cmd == "index":
        info = zoo.build_index()
        counts = zoo.index.counts()
        console.print(f"indexed {info['entries']} entries ({info['fingerprinted']} fingerprinted "
                      f"now, {info['pruned']} stale rows dropped) in {info['seconds']:.2f} s; "
                      f"{counts['fingerprints']} fingerprints, {counts['dp']} cached DP values",
                      markup=False)
        return 0
    if cmd == "remove":
        zoo.remove(args.name)
        console.print(f"removed '{args.name}' from {zoo.dir}")
        return 0
    entries = zoo.entries()
    missing = {e.name: zoo.missing_weights(e) for e in entries}
    if args.json:
        print(json.dumps([{**e.to_dict(), "weights_missing": missing[e.name]} for e in entries],
                         indent=1))
        return 0
    from rich.markup import escape
    from rich.table import Table
    table = Table(title=escape(f"zoo {zoo.dir}: {len(entries)} entries"), title_justify="left")
    columns = [("name", "left"), ("arch", "left"), ("task", "left"), ("accuracy", "right"),
               ("params", "right"), ("added", "left")]
    if any(missing.values()):  # only when there is something to say
        columns.append(("weights", "left"))
    for col, justify in columns:
        table.add_column(col, justify=justify, overflow="fold")  # never truncate a name
    for e in entries:
        row = [e.name, e.arch, e.task or "-", _fmt_acc(e.accuracy), f"{e.params:,}",
               e.added[:16].replace("T", " ")]
        if len(columns) > len(row):
            row.append(f"UNUSABLE: {missing[e.name]}" if missing[e.name] else "ok")
        table.add_row(*map(escape, row))
    _print_table(console, table)
    return 0


#: the probe stage's settings when --probe-data is given without them
PROBE_DEFAULTS = {"top": 5, "steps": 20, "limit": 1000}


def add_rank_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`netgraft rank --target ARCH [--zoo DIR] [--top K] [--then-transfer OUT]`."""
    from .match import METHODS

    parser.add_argument("--target", required=True, help=MODEL_SPEC_HELP)
    parser.add_argument("--num-classes", type=_positive_int, help="classes of the target")
    parser.add_argument("--in-chans", type=_positive_int, help="input channels of the target")
    parser.add_argument("--input-size", help="C,H,W example input of the target (default: inferred)")
    parser.add_argument("--top", type=int, help="show the K best sources only")
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=sorted(METHODS))
    parser.add_argument("--json", action="store_true", help="print the ranking as JSON")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no table: one plain line per source, whatever the terminal width")
    parser.add_argument("--then-transfer", metavar="OUT", type=file_name,
                        help="graft the best source onto the target and write it here "
                             "(.safetensors); an existing file needs --force, a file of the zoo "
                             "is never replaced")
    parser.add_argument("--force", action="store_true",
                        help="let --then-transfer replace an existing file")
    parser.add_argument("--probe-data", metavar="DATA", type=file_name,
                        help="labelled target data for a second, data-driven stage: a .safetensors"
                             "/.pt file with tensors x and y, or fashion-mnist[:N] / digits[:N]; "
                             "the shortlist is re-ranked by a short fine-tune of each graft")
    # default None: an option given without --probe-data is refused, not silently unused
    parser.add_argument("--probe-top", type=int, metavar="K",
                        help=f"probe the K best data-free candidates (default {PROBE_DEFAULTS['top']})")
    parser.add_argument("--probe-steps", type=int,
                        help=f"fine-tune steps per probed source (default "
                             f"{PROBE_DEFAULTS['steps']}; 0 = linear probe only)")
    parser.add_argument("--probe-limit", type=_positive_int,
                        help=f"use at most this many labelled examples (default "
                             f"{PROBE_DEFAULTS['limit']})")
    _zoo_arg(parser)
    return parser


def _check_rank_options(args: argparse.Namespace) -> None:
    """Refuse options this ranking would accept and then not use, and bad probe numbers,
    before the ranking (which can take minutes)."""
    if args.top is not None and args.top < 1:
        raise ZooError(f"--top {args.top}: give a positive number")
    if args.force and args.then_transfer is None:
        raise ZooError("--force lets --then-transfer replace an existing file: give "
                       "--then-transfer OUT with it")
    for key in PROBE_DEFAULTS:
        given = getattr(args, f"probe_{key}")
        if given is not None and not args.probe_data:
            raise ZooError(f"--probe-{key} sets the probe stage: give --probe-data with it")
        if given is None:
            setattr(args, f"probe_{key}", PROBE_DEFAULTS[key])
    if args.probe_top < 1:
        raise ZooError(f"--probe-top {args.probe_top}: give a positive number")
    if args.probe_steps < 0:
        raise ZooError(f"--probe-steps {args.probe_steps}: give 0 or a positive number")


def run_rank(args: argparse.Namespace) -> int:
    console = _console()
    _check_rank_options(args)
    zoo = Zoo(args.zoo, create=False)
    from .models import parse_input_size

    input_size = parse_input_size(args.input_size)
    args.in_chans = read_channels(args.target, args.in_chans, input_size)  # as `transfer`
    out = Path(args.then_transfer) if args.then_transfer is not None else None
    if out is not None:  # before ranking: a bad name should not cost a ranking first
        zoo.check_output(out, force=args.force, flag="--then-transfer")
    start = time.perf_counter()
    at = f" at {'×'.join(map(str, input_size))}" if input_size else ""
    # tracing a large input can take minutes: say what runs (a terminal only; rich's status
    # draws nothing when stderr is piped)
    with _console(stderr=True).status(f"tracing {args.target}{at} and ranking the zoo's sources …"):
        every = zoo.rank(args.target, num_classes=args.num_classes, in_chans=args.in_chans,
                         input_size=input_size, method=args.method)
    seconds = time.perf_counter() - start
    ranked = every[:args.top] if args.top else every  # shown; the probe shortlists from all
    best, probe = ranked[0], None
    if args.probe_data:
        best, probe = _probe_stage(zoo, every, args, input_size)
    title = f"sources for {args.target} [{args.method}], best first ({seconds:.2f} s)"
    if args.json:
        doc = {"target": args.target, "method": args.method, "seconds": seconds,
               "ranking": [r.to_dict() for r in ranked]}
        if probe is not None:
            doc["probe"] = probe
        print(json.dumps(doc, indent=1))
    elif args.quiet:
        for r in ranked:
            print(rank_line(r))
        if probe is not None:
            for line in _probe_lines(probe):
                print(line)
    else:
        _print_table(console, rank_table(ranked, title, console.width))
        if probe is not None:
            _print_probe(console, probe)
    if out is not None and not best.compatible:
        raise ZooError(f"--then-transfer: the best source, '{best.name}' ({best.arch}), cannot "
                       f"be grafted onto {args.target}: {best.why}; nothing was written")
    if out is not None and best.coverage <= 0:  # the file would hold the target's random init
        raise ZooError(f"--then-transfer: the best source, '{best.name}' ({best.arch}), gives "
                       f"{args.target} nothing ({best.why}); nothing was written. Add a "
                       f"source of a closer family to the zoo, or graft with calibration data "
                       f"(`netgraft transfer --calibration ... --align on`)")
    if out is not None:
        _, report = zoo.transfer_to(best.entry, args.target, num_classes=args.num_classes,
                                    in_chans=args.in_chans, input_size=input_size,
                                    method=args.method, out=out)
        stream = sys.stderr if args.json else sys.stdout
        print(_one_line(report.summary()), file=stream)
        print(f"wrote {out} (grafted from '{best.name}')", file=stream)
    return 0


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def rank_line(r: Ranked) -> str:
    """One ranked source as one plain line (``rank -q``): never wrapped, never more than one
    line, whatever the terminal."""
    from .transfer import percent

    arch = "" if r.arch == r.name else f" ({r.arch})"
    acc = "" if r.accuracy is None else f" accuracy {_fmt_acc(r.accuracy)}"
    return _one_line(f"{r.rank} {r.name}{arch} similarity {r.similarity:.3f} coverage "
                     f"{percent(r.coverage)}{acc}: {r.why}")


def rank_table(ranked: Sequence[Ranked], title: str, width: int | None = None):
    """The ranking as a plain table (no box, like the README's): #, name, then arch / task /
    accuracy only when some entry has something to say there (an arch other than its name, a
    task, an accuracy), similarity, coverage, why. Number columns never wrap. When the table
    is wider than `width` (a narrow terminal), the why column moves to a second table below,
    # and why only, where it wraps at word boundaries instead of being squeezed into a
    few characters. Piped, `_console` is wide enough that nothing wraps."""
    from rich.console import Console, Group
    from rich.markup import escape
    from rich.table import Table

    from .transfer import percent

    def plain(title: str | None = None):
        return Table(title=None if title is None else escape(title), title_justify="left",
                     box=None, pad_edge=False, show_edge=False)

    columns = [("#", "right", lambda r: str(r.rank)), ("name", "left", lambda r: r.name)]
    if any(r.arch != r.name for r in ranked):
        columns.append(("arch", "left", lambda r: r.arch))
    if any(r.task for r in ranked):
        columns.append(("task", "left", lambda r: r.task or "-"))
    if any(r.accuracy is not None for r in ranked):
        columns.append(("accuracy", "right", lambda r: _fmt_acc(r.accuracy)))
    columns += [("similarity", "right", lambda r: f"{r.similarity:.3f}"),
                ("coverage", "right", lambda r: percent(r.coverage))]
    why = ("why", "left", lambda r: r.why)

    def build(table, cols):
        for col, justify, _ in cols:
            table.add_column(col, justify=justify, overflow="fold",
                             no_wrap=col not in ("name", "arch", "task", "why"))
        for r in ranked:
            table.add_row(*(escape(value(r)) for _, _, value in cols))
        return table

    table = build(plain(title), columns + [why])
    if width is None or Console(width=PIPE_WIDTH).measure(table).maximum <= width:
        return table
    return Group(build(plain(title), columns), build(plain(), [columns[0], why]))


def _print_table(console, renderable) -> None:
    """Print a table; piped, without the trailing spaces rich pads every line with."""
    if console.is_terminal:
        console.print(renderable)
        return
    with console.capture() as capture:
        console.print(renderable)
    text = "\n".join(line.rstrip() for line in capture.get().splitlines())
    console.file.write(text + "\n")


def _probe_stage(zoo: Zoo, ranked: list[Ranked], args: argparse.Namespace,
                 input_size: Sequence[int] | None) -> tuple[Ranked, dict[str, Any]]:
    """Re-rank the data-free shortlist by the probe: (new best, probe summary)."""
    from .probe import load_probe_data

    # the target's own input: the shape it was traced at (--input-size, or its default)
    shape = zoo._target(args.target, args.num_classes, args.in_chans, input_size).arch.input_shape
    chans, size = (shape[1], tuple(shape[2:])) if shape and len(shape) == 4 else (
        args.in_chans or 1, 32)
    data = load_probe_data(args.probe_data, image_size=size, in_chans=chans,
                           limit=args.probe_limit, num_classes=args.num_classes)
    # a source that cannot give its convs (another dimensionality) is not worth a graft
    shortlist = [r for r in ranked if r.compatible][:args.probe_top]
    if not shortlist:
        raise ZooError(f"--probe-data: no source in the ranking can be grafted onto "
                       f"{args.target} ({ranked[0].why})")
    err = _console(stderr=True)
    start = time.perf_counter()
    with err.status("probing") as status:
        probed = zoo.probe(shortlist, args.target, data, steps=args.probe_steps,
                           num_classes=args.num_classes, in_chans=args.in_chans,
                           method=args.method, progress=lambda name: status.update(f"probing {name}"))
    seconds = time.perf_counter() - start
    summary = {"data": args.probe_data, "examples": len(data[1]), "steps": args.probe_steps,
               "candidates": len(shortlist), "seconds": seconds,
               "ranking": [{"name": r.name, "data_free_rank": r.rank, **p.to_dict()}
                           for r, p in probed]}
    return probed[0][0], summary


def _probe_rows(probe: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for i, p in enumerate(probe["ranking"], 1):
        tuned = ((f"{p['tuned']:.1%}", f"{p['tuned_baseline']:.1%}") if p["tuned"] is not None
                 else ("-", "-"))
        rows.append((str(i), p["name"], str(p["data_free_rank"]), f"{p['gain'] * 100:+.1f} pts",
                     *tuned, f"{p['accuracy']:.1%}", f"{p['cka']:.2f}"))
    return rows


def _probe_title(probe: dict[str, Any]) -> str:
    what = f"{probe['steps']}-step fine-tune" if probe["steps"] else "linear probe"
    return (f"probe: {probe['candidates']} candidates on {probe['examples']} labelled examples, "
            f"ranked by {what} gain over random init ({probe['seconds']:.1f} s)")


_PROBE_COLUMNS = ("#", "name", "data-free #", "gain", "fine-tuned", "random", "linear probe", "CKA")


def _probe_lines(probe: dict[str, Any]) -> list[str]:
    """The probe stage for ``rank -q``: one plain line per probed source."""
    return [_one_line(f"probe {row[0]} {row[1]} gain {row[3]} (data-free #{row[2]}, fine-tuned "
                      f"{row[4]}, random {row[5]}, linear probe {row[6]}, CKA {row[7]})")
            for row in _probe_rows(probe)]


def _print_probe(console, probe: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(_probe_title(probe)), title_justify="left", box=None,
                  pad_edge=False, show_edge=False)
    for col in _PROBE_COLUMNS:
        table.add_column(col, justify="left" if col == "name" else "right", overflow="fold",
                         no_wrap=col != "name")
    for row in _probe_rows(probe):
        table.add_row(*map(escape, row))
    _print_table(console, table)


