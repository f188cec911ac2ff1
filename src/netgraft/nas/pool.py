"""A warm-start pool: trained models of a search, kept on disk, grafted into new trials.

The pool is a directory of content-addressed entries::

    <sha256>.safetensors   the trained weights (sha256 of this file's bytes = the entry's key)
    <sha256>.json          architecture parameters, metrics, study / trial, parent, tag

Both files are written atomically (temporary file + rename), weights first; an entry exists
once its JSON exists, so readers in other processes never see a half-written entry and a
worker killed while writing leaves at most an orphan weights file that nobody reads.

Use it in any Optuna objective (`build(params)` returns the randomly initialised model of an
architecture; the pool rebuilds parents with it)::

    pool = netgraft.nas.WarmStartPool("pool/", build=make_model,
                                      example_input=torch.randn(1, 1, 28, 28))

    def objective(trial):
        params = {"depth": trial.suggest_int("depth", 1, 4),
                  "width": trial.suggest_categorical("width", [16, 32, 64])}
        model = make_model(params)
        pool.warm_start(model, params, trial=trial)   # graft from the most similar trained model
        accuracy = train_and_evaluate(model)
        pool.add(model, params, trial=trial, metrics={"accuracy": accuracy})
        return accuracy

`warm_start` picks, among the pool's entries of the same study (``scope="study"``, entries of
trials that are COMPLETE) or of any study (``scope="all"``) with the same `tag`, the one whose
architecture is most similar to the new model's (``netgraft.similarity``; ties go to the
higher accuracy, then to the newer trial), grafts its weights with ``netgraft.transfer`` (the
classifier head too when the class counts agree) and records ``warm``, ``parent``,
``parent_trial``, ``parent_arch``, ``parent_study``, ``similarity`` and ``coverage`` as the
trial's user attributes. `add` stores the trained weights and sets ``pool_key``.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..checkpoint import atomic_write, load_state_dict, load_weights, save_json
from ..errors import NetgraftError

__all__ = ["PoolEntry", "WarmStart", "WarmStartPool", "arch_key"]

FORMAT = "netgraft-pool/1"
SCOPES = ("study", "all")


def arch_key(params: dict[str, Any]) -> str:
    """Canonical text of architecture parameters (cache key; equal params, equal key)."""
    return json.dumps(params, sort_keys=True, default=str)


@dataclass(frozen=True)
class PoolEntry:
    key: str
    meta: dict[str, Any]
    directory: Path

    @property
    def weights(self) -> Path:
        return self.directory / f"{self.key}.safetensors"

    @property
    def params(self) -> dict[str, Any]:
        return self.meta.get("arch_params", {})

    @property
    def accuracy(self) -> float:
        acc = self.meta.get("metrics", {}).get("accuracy")
        return float(acc) if isinstance(acc, (int, float)) and math.isfinite(acc) else -math.inf

    @property
    def study(self) -> str | None:
        return self.meta.get("study")

    @property
    def trial(self) -> int | None:
        return self.meta.get("trial")

    @property
    def arch(self) -> str:
        return self.meta.get("arch") or arch_key(self.params)


@dataclass
class WarmStart:
    """What `WarmStartPool.warm_start` did (``entry`` None: nothing grafted, see ``note``)."""

    entry: PoolEntry | None = None
    similarity: float | None = None
    coverage: float | None = None
    seconds: float = 0.0
    candidates: int = 0
    note: str = ""
    report: Any = field(default=None, repr=False)

    @property
    def warm(self) -> bool:
        return self.entry is not None

    def attrs(self) -> dict[str, Any]:
        """The trial user attributes of the NAS contract."""
        e = self.entry
        return {"warm": e is not None, "parent": e.key if e else None,
                "parent_trial": e.trial if e else None, "parent_arch": e.arch if e else None,
                "parent_study": e.study if e else None,
                "similarity": self.similarity, "coverage": self.coverage}


class WarmStartPool:
    """A directory of trained models to warm-start new architectures from (module docstring).

    `build(params) -> nn.Module` builds the (untrained) model of architecture `params`;
    `example_input` is an input it accepts (for tracing; inferred for timm models when None).
    `tag` (JSON-able dict) is stored with every entry and only entries with an equal tag are
    candidates (e.g. the space, class count and input channels `build` is bound to).
    `calibration_data`: unlabeled inputs to re-estimate batch norms after each graft.
    `min_similarity`: graft only from entries at least this similar (in [0, 1]); grafts
    between very different architectures (e.g. depthwise-separable blocks into full
    convolutions) can start worse than random init.
    """

    def __init__(self, directory: str | Path, build: Callable[[dict[str, Any]], nn.Module], *,
                 example_input: Any = None, study: str | None = None, scope: str = "study",
                 tag: dict[str, Any] | None = None, calibration_data: Any = None,
                 method: str = "graft", min_similarity: float = 0.0, describe=None):
        if scope not in SCOPES:
            raise NetgraftError(f"pool scope {scope!r}: choose one of {', '.join(SCOPES)}")
        # checked here: a bad value would only make every warm start fall back to random init
        from ..match import METHODS

        if method not in METHODS:
            raise NetgraftError(f"method={method!r}: choose one of {', '.join(sorted(METHODS))}")
        if isinstance(min_similarity, bool) or not isinstance(min_similarity, (int, float)) \
                or not 0.0 <= min_similarity <= 1.0:  # (NaN fails both comparisons)
            raise NetgraftError(f"min_similarity={min_similarity!r}: give a number in [0, 1]")
        if calibration_data is not None and not isinstance(calibration_data, torch.Tensor) \
                and not hasattr(calibration_data, "__iter__") or isinstance(calibration_data, str):
            raise NetgraftError(f"calibration_data: give a tensor of inputs or an iterable of "
                                f"batches, not {type(calibration_data).__name__}")
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NetgraftError(f"cannot create pool directory {self.directory}: {exc}") from exc
        self.build = build
        self.example_input = example_input
        self.study = study
        self.scope = scope
        self.tag = dict(tag or {})
        self.calibration_data = calibration_data
        self.method = method
        self.min_similarity = min_similarity
        self.describe = describe
        self._archs: dict[str, Any] = {}
        self._sims: dict[tuple[str, str], float] = {}

    # ---------------------------------------------------------------- reading
    def entries(self) -> list[PoolEntry]:
        """Every complete entry (JSON and weights present, JSON readable), oldest first."""
        out = []
        for path in self.directory.glob("*.json"):
            key = path.stem
            if len(key) != 64 or not (self.directory / f"{key}.safetensors").is_file():
                continue
            try:
                meta = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # unreadable: treat as absent
            if isinstance(meta, dict) and meta.get("format") == FORMAT:
                out.append(PoolEntry(key, meta, self.directory))
        out.sort(key=lambda e: (e.meta.get("created", ""), e.key))
        return out

    def get(self, key: str) -> PoolEntry:
        for entry in self.entries():
            if entry.key == key:
                return entry
        raise NetgraftError(f"no complete entry {key} in pool {self.directory}")

    def load(self, entry: PoolEntry | str) -> nn.Module:
        """The trained model of an entry (rebuilt with `build`, weights loaded safely)."""
        entry = self.get(entry) if isinstance(entry, str) else entry
        model = self.build(dict(entry.params))
        load_weights(model, load_state_dict(entry.weights), what=f"pool entry {entry.key[:12]}",
                     source=entry.weights)
        return model

    def candidates(self, trial=None, study: str | None = None) -> list[PoolEntry]:
        """Entries a new model of `study` may be grafted from (see `scope`)."""
        study = study or (trial.study.study_name if trial is not None else None) or self.study
        entries = [e for e in self.entries() if e.meta.get("tag", {}) == self.tag]
        if self.scope == "all":
            return entries
        complete, study_id = None, None
        if trial is not None:
            from optuna.trial import TrialState
            complete = {t.number for t in trial.study.get_trials(deepcopy=False,
                                                                 states=(TrialState.COMPLETE,))}
            study_id = _study_id(trial)
        # a study deleted and re-created under the same name gets another id: its old
        # entries are not this study's trials
        return [e for e in entries if e.study == study
                and (complete is None or e.trial in complete)
                and (study_id is None or e.meta.get("study_id") in (None, study_id))]

    # ------------------------------------------------------------- similarity
    def _arch(self, params: dict[str, Any]):
        key = arch_key(params)
        if key not in self._archs:
            from ..trace import trace
            self._archs[key] = trace(self.build(dict(params)), self.example_input, name=key)
        return self._archs[key]

    def similarity(self, source: dict[str, Any], target: dict[str, Any]) -> float:
        """netgraft.similarity for grafting the `source` architecture onto `target` (cached
        per ordered pair: across families the score is not symmetric)."""
        key = (arch_key(source), arch_key(target))
        if key not in self._sims:
            from ..similarity import similarity
            self._sims[key] = 1.0 if key[0] == key[1] else similarity(self._arch(source),
                                                                      self._arch(target))
        return self._sims[key]

    def rank(self, params: dict[str, Any], candidates: list[PoolEntry]) -> list[tuple[PoolEntry, float]]:
        """Candidates by decreasing similarity of a graft from each onto `params` (ties:
        accuracy, then newer)."""
        scored = [(e, self.similarity(e.params, params)) for e in candidates]
        order = sorted(range(len(scored)), key=lambda i: (scored[i][1], scored[i][0].accuracy,
                                                          scored[i][0].meta.get("created", "")),
                       reverse=True)
        return [scored[i] for i in order if scored[i][1] >= self.min_similarity]

    # --------------------------------------------------------------- warm start
    def warm_start(self, model: nn.Module, params: dict[str, Any], *, trial=None,
                   study: str | None = None) -> WarmStart:
        """Graft the most similar trained entry into `model` (in place); see the module doc.

        Never raises for a graft that fails: the model keeps its init and ``note`` says why
        (also the trial's ``warm_note`` attribute); the next candidate is tried when an
        entry's weights cannot be read.
        """
        from ..transfer import transfer

        start = time.perf_counter()
        result = WarmStart()
        cands = self.candidates(trial, study)
        result.candidates = len(cands)
        ranked = self.rank(params, cands)
        if not cands:
            result.note = "pool has no trained model of this study yet"
        elif not ranked:
            best = max(self.similarity(e.params, params) for e in cands)
            from ..similarity import below
            result.note = (f"no pool model is similar enough (best similarity {below(best)} < "
                           f"{self.min_similarity}): random init kept")
        for entry, sim in ranked:
            try:
                parent = self.load(entry)
            except NetgraftError as exc:  # corrupt / mismatched file: try the next one
                result.note = f"skipped {entry.key[:12]}: {exc}"
                continue
            try:
                report = transfer(parent, model, example_input=self.example_input,
                                  source_input=self.example_input, method=self.method,
                                  calibration_data=self.calibration_data)
            except (NetgraftError, RuntimeError, ValueError) as exc:
                result.note = f"graft from {entry.key[:12]} failed, random init kept: {exc}"
                break
            result.entry, result.similarity, result.coverage = entry, sim, report.coverage
            result.report = report
            result.note = ""
            break
        result.seconds = time.perf_counter() - start
        if trial is not None:
            for k, v in result.attrs().items():
                trial.set_user_attr(k, v)
            if result.note:
                trial.set_user_attr("warm_note", result.note[:500])
        return result

    # ----------------------------------------------------------------- writing
    def add(self, model: nn.Module, params: dict[str, Any], *, trial=None,
            study: str | None = None, metrics: dict[str, Any] | None = None,
            parent: str | None = None, extra: dict[str, Any] | None = None) -> str:
        """Store `model`'s weights with its metadata; returns the key (sha256 of the file)."""
        from safetensors.torch import save

        from .. import __version__

        if trial is not None:
            study = study or trial.study.study_name
            parent = parent if parent is not None else trial.user_attrs.get("parent")
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
        # the study and trial are in the file, so that two trials whose weights are equal (one
        # seed and architecture in two studies sharing a pool) are two entries, each its own
        data = save(state, metadata={
            "format": FORMAT, "arch_params": arch_key(params), "study": str(study or self.study),
            "trial": str(trial.number if trial is not None else None)})
        key = hashlib.sha256(data).hexdigest()
        meta = {
            "format": FORMAT, "key": key, "arch_params": dict(params),
            "arch": self.describe(params) if self.describe else arch_key(params),
            "tag": self.tag, "study": study or self.study,
            "trial": trial.number if trial is not None else None,
            "study_id": _study_id(trial) if trial is not None else None, "parent": parent,
            "metrics": dict(metrics or {}), "netgraft_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            **(extra or {}),
        }
        weights = self.directory / f"{key}.safetensors"
        if not weights.is_file():
            atomic_write(weights, lambda tmp: Path(tmp).write_bytes(data))
        save_json(meta, self.directory / f"{key}.json")
        if trial is not None:
            trial.set_user_attr("pool_key", key)
        return key

    def __len__(self) -> int:
        return len(self.entries())

    def __repr__(self) -> str:
        return f"WarmStartPool({str(self.directory)!r}, scope={self.scope!r}, study={self.study!r})"


def _study_id(trial) -> int | None:
    sid = getattr(trial.study, "_study_id", None)  # the storage's id of the study
    return sid if isinstance(sid, int) else None
