"""Read the Optuna studies written by `netgraft.nas` into plain rows (see the NAS data contract).

Everything the page shows is computed here, without plotting, so it can be tested on its own:
the trials of each study (`TrialRow`), its Pareto front (`pareto_front`) and its best-so-far
curves (`best_so_far`).
"""
from __future__ import annotations

import math
import re
import sqlite3
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import NetgraftError

#: objective name -> direction when a study does not say (the contract's defaults)
DEFAULT_DIRECTIONS = {"accuracy": "maximize", "params": "minimize", "flops": "minimize",
                      "latency_ms": "minimize"}
#: the front used when a study optimises a single objective
FALLBACK_OBJECTIVES = ("accuracy", "params")


class ReportError(NetgraftError):
    """The storage or the studies asked for cannot be reported on."""


@dataclass
class TrialRow:
    """One trial of one study, with the contract's user attributes pulled out."""

    study: str
    number: int
    state: str                      # COMPLETE, FAIL, RUNNING, PRUNED, WAITING
    values: dict[str, float]        # objective name -> value (complete trials)
    arch: str = ""
    accuracy: float | None = None
    params: int | None = None
    flops: int | None = None
    latency_ms: float | None = None
    warm: bool = False
    parent: str | None = None
    parent_trial: int | None = None
    parent_arch: str | None = None
    similarity: float | None = None
    coverage: float | None = None
    accuracy_at_0: float | None = None
    train_seconds: float | None = None
    steps: int | None = None
    pool_key: str | None = None
    fail_reason: str | None = None
    fail_kind: str | None = None    # netgraft.nas: failed (build, diverged), error, interrupted
    warm_note: str | None = None    # why a warm trial was not grafted (``pool.warm_start``)
    start: datetime | None = None
    complete: datetime | None = None
    pareto: bool = False
    lineage_parent: int | None = None   # finished trial of this study it was grafted from

    @property
    def finished(self) -> bool:
        """Complete with an accuracy: a point on the plots."""
        return self.state == "COMPLETE" and self.accuracy is not None

    @property
    def interrupted(self) -> bool:
        """Failed because its worker stopped (Ctrl-C, killed, lost), not because of its
        architecture: `netgraft search` does not count it, and reruns it."""
        if self.state != "FAIL":
            return False
        if self.fail_kind is not None:
            return self.fail_kind == "interrupted"
        return (self.fail_reason or "").startswith("interrupted")  # older studies: the reason

    def get(self, name: str) -> float | None:
        """Objective / metric value by contract name (accuracy, params, flops, latency_ms)."""
        v = getattr(self, name, None) if name in DEFAULT_DIRECTIONS else None
        return self.values.get(name) if v is None else v


@dataclass
class StudyData:
    name: str
    attrs: dict[str, Any]
    objectives: list[str]
    directions: list[str]           # "maximize" / "minimize", one per objective
    trials: list[TrialRow] = field(default_factory=list)

    @property
    def warm(self) -> bool | None:
        w = self.attrs.get("warm")
        return None if w is None else bool(w)

    @property
    def finished(self) -> list[TrialRow]:
        return [t for t in self.trials if t.finished]

    @property
    def failed(self) -> list[TrialRow]:
        """Trials that failed on their own (could not be built, diverged, an error)."""
        return [t for t in self.trials if t.state == "FAIL" and not t.interrupted]

    @property
    def interrupted(self) -> list[TrialRow]:
        return [t for t in self.trials if t.interrupted]

    @property
    def front_objectives(self) -> tuple[list[str], list[str]]:
        """(names, directions) the Pareto front is computed on."""
        if len(self.objectives) >= 2:
            return list(self.objectives), list(self.directions)
        return list(FALLBACK_OBJECTIVES), [DEFAULT_DIRECTIONS[n] for n in FALLBACK_OBJECTIVES]

    @property
    def label(self) -> str:
        kind = {True: "warm", False: "cold", None: ""}[self.warm]
        return f"{self.name} ({kind})" if kind and kind not in self.name else self.name


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points (all objectives at least as good, one strictly better
    dominates). Points with a missing or non-finite value are never on the front; duplicates of a
    front point are all on it."""
    sign = [1.0 if d == "maximize" else -1.0 for d in directions]
    ok = [i for i, p in enumerate(points)
          if all(v is not None and math.isfinite(float(v)) for v in p)]
    scored = {i: [s * float(v) for s, v in zip(sign, points[i])] for i in ok}
    front = []
    for i in ok:
        a = scored[i]
        dominated = any(all(b_k >= a_k for a_k, b_k in zip(a, b)) and any(b_k > a_k for a_k, b_k in zip(a, b))
                        for j, b in scored.items() if j != i)
        if not dominated:
            front.append(i)
    return front


def best_so_far(study: StudyData, by: str = "number") -> list[tuple[float, float, int]]:
    """[(x, best accuracy up to x, trial number)] over the finished trials, x = trial number
    (`by="number"`) or minutes since the study's first trial started (`by="time"`)."""
    rows = study.finished
    if by == "time":
        t0 = study_start(study)
        rows = [r for r in rows if r.complete is not None and t0 is not None]
        rows.sort(key=lambda r: (r.complete, r.number))
        xs = [(r.complete - t0).total_seconds() / 60.0 for r in rows]
    else:
        rows = sorted(rows, key=lambda r: r.number)
        xs = [float(r.number) for r in rows]
    out, best = [], -math.inf
    for x, r in zip(xs, rows):
        best = max(best, r.accuracy)
        out.append((x, best, r.number))
    return out


def study_start(study: StudyData) -> datetime | None:
    starts = [t.start for t in study.trials if t.start is not None]
    return min(starts) if starts else None


# ---------------------------------------------------------------------------------------------
# loading

def redact(storage: str | Path) -> str:
    """The storage as shown to people: a password in a URL is replaced by ***."""
    return re.sub(r"^([a-zA-Z][\w+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", str(storage))


def sqlite_file(storage: str | Path) -> Path | None:
    """The database file of a sqlite storage (a path or sqlite:///FILE), else None."""
    text = str(storage)
    if "://" not in text:
        return Path(text).expanduser()
    if not text.startswith("sqlite:") or ":///" not in text:
        return None
    path = text.split(":///", 1)[1].split("?", 1)[0]
    return Path(path).expanduser() if path and path != ":memory:" else None


def existing_storage_url(storage: str | Path) -> str:
    """A sqlite file path or an Optuna storage URL -> storage URL, checking that a sqlite file
    exists and holds Optuna tables (Optuna would otherwise create a new, empty database)."""
    text = str(storage)
    path = sqlite_file(text)
    if path is not None:
        _check_sqlite(path, text)
    return text if "://" in text else f"sqlite:///{path.resolve()}"


def _check_sqlite(path: Path, shown: str) -> None:
    if not path.exists():
        raise ReportError(f"{shown}: no such file (expected the search's sqlite database, "
                          f"e.g. search.db, or an Optuna storage URL)")
    if path.is_dir():
        raise ReportError(f"{shown}: is a directory, expected a sqlite database file")
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise ReportError(f"{shown}: not a sqlite database ({exc})") from None
    if "studies" not in tables:
        raise ReportError(f"{shown}: a sqlite database without Optuna tables (no 'studies' table); "
                          f"is it the search's storage?")


def load_studies(storage: str | Path, studies: Sequence[str] | None = None) -> list[StudyData]:
    """Load the named studies (default: every study, in creation order) from `storage`."""
    import optuna

    url = existing_storage_url(storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with _readable(storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            summaries = optuna.get_all_study_summaries(url, include_best_trial=False)
    names = [s.study_name for s in summaries]
    if not names:
        raise ReportError(f"{redact(storage)}: the storage holds no studies")
    if studies:
        missing = [s for s in studies if s not in names]
        if missing:
            raise ReportError(f"{redact(storage)}: no study named {', '.join(map(repr, missing))}; "
                              f"studies here: {', '.join(names)}")
        names = list(dict.fromkeys(studies))
    with _readable(storage):  # a database damaged past its first pages fails only here
        return [_study_data(optuna.load_study(study_name=n, storage=url)) for n in names]


@contextmanager
def _readable(storage: str | Path) -> Iterator[None]:
    """Reading `storage`: what the database layers raise (an unreachable server, a schema
    version, a damaged file) becomes a `ReportError` naming the storage, password hidden."""
    try:
        yield
    except NetgraftError:
        raise
    except Exception as exc:  # sqlalchemy / optuna
        cause = exc
        while cause.__cause__ is not None or cause.__context__ is not None:  # the driver's words
            cause = cause.__cause__ or cause.__context__
        msg = str(cause).splitlines()[0] if str(cause) else ""
        m = re.match(r"^[a-zA-Z][\w+.-]*://[^/@:]*:([^/@]*)@", str(storage))
        if m and m.group(1):
            msg = msg.replace(m.group(1), "***")
        raise ReportError(f"{redact(storage)}: cannot read the Optuna storage: "
                          f"{type(cause).__name__}: {msg}") from None


def _study_data(study) -> StudyData:
    attrs = dict(study.user_attrs)
    directions = [d.name.lower() for d in study.directions]
    objectives = attrs.get("objectives")
    scale = 1.0  # a foreign study's accuracy, in percent, is read as a fraction
    if not isinstance(objectives, list) or len(objectives) != len(directions):
        # not written by netgraft.nas (or inconsistent): name single-objective studies
        # "accuracy", others by position — unless the one objective is minimised (a loss)
        if directions == ["minimize"]:
            raise ReportError(
                f"study {study.study_name!r} was not made by `netgraft search`: it minimises "
                f"its one objective, which the report cannot show as accuracy (name the "
                f"search's studies with --study)")
        objectives = ["accuracy"] if len(directions) == 1 else [f"objective {i}" for i in range(len(directions))]
        if len(directions) == 1:
            scale = _foreign_accuracy_scale(study)
    objectives = [str(o) for o in objectives]
    data = StudyData(study.study_name, attrs, objectives, directions)
    for t in study.get_trials(deepcopy=False):
        data.trials.append(_trial_row(study.study_name, t, objectives, scale))
    names, dirs = data.front_objectives
    fin = data.finished
    _resolve_lineage(data.trials, fin)
    for i in pareto_front([[t.get(n) for n in names] for t in fin], dirs):
        fin[i].pareto = True
    return data


def _foreign_accuracy_scale(study) -> float:
    """How a study not made by `netgraft search`, maximising one objective, gives its accuracy:
    as a fraction (1.0) or, when a value is above 1 and none above 100, in percent (0.01).
    Anything else is no accuracy, and is refused by name."""
    vals = [float(t.values[0]) for t in study.get_trials(deepcopy=False)
            if t.values and t.values[0] is not None and math.isfinite(float(t.values[0]))]
    if not vals or max(vals) <= 1.0:
        return 1.0
    if min(vals) >= 0.0 and max(vals) <= 100.0:
        return 0.01
    raise ReportError(
        f"study {study.study_name!r} was not made by `netgraft search`: its one objective ranges "
        f"{min(vals):g} to {max(vals):g}, which is no accuracy (a fraction 0–1 or a percent "
        f"0–100); name the search's studies with --study")


def _resolve_lineage(trials: list[TrialRow], finished: list[TrialRow]) -> None:
    """Set `lineage_parent` of every trial (finished, failed or running): the finished trial of
    this study whose trained weights (pool key) it was grafted from. The pool key decides when
    both sides have one, so a `parent_trial` number that belongs to another study sharing the
    pool is not mistaken for a trial of this one."""
    by_key = {t.pool_key: t.number for t in finished if t.pool_key}
    by_number = {t.number: t for t in finished}
    for t in trials:
        if t.parent is not None and str(t.parent) in by_key:
            t.lineage_parent = by_key[str(t.parent)]
        elif t.parent_trial is not None and t.parent_trial in by_number:
            p = by_number[t.parent_trial]
            if not (t.parent and p.pool_key and p.pool_key != str(t.parent)):
                t.lineage_parent = p.number
        if t.lineage_parent == t.number:
            t.lineage_parent = None


def _num(v: Any, kind=float):
    if v is None or isinstance(v, bool):
        return None
    try:
        x = kind(v)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        return None
    return x if not isinstance(x, float) or math.isfinite(x) else None


def _trial_row(study_name: str, t, objectives: list[str], scale: float = 1.0) -> TrialRow:
    """One trial; `scale` turns a foreign study's accuracy objective into a fraction."""
    ua = t.user_attrs
    values = {}
    if t.values is not None:
        values = {n: float(v) * (scale if n == "accuracy" else 1.0)
                  for n, v in zip(objectives, t.values)}
    acc = _num(ua.get("accuracy"))
    if acc is None:
        acc = values.get("accuracy")
    pt = ua.get("parent_trial")
    return TrialRow(
        study=study_name, number=t.number, state=t.state.name, values=values,
        arch=str(ua.get("arch") or ", ".join(f"{k}={v}" for k, v in t.params.items())),
        accuracy=acc,
        params=_num(ua.get("params", values.get("params")), int),
        flops=_num(ua.get("flops", values.get("flops")), int),
        latency_ms=_num(ua.get("latency_ms", values.get("latency_ms"))),
        warm=bool(ua.get("warm", False)),
        parent=ua.get("parent"), parent_trial=_num(pt, int), parent_arch=ua.get("parent_arch"),
        similarity=_num(ua.get("similarity")), coverage=_num(ua.get("coverage")),
        accuracy_at_0=_num(ua.get("accuracy_at_0")),
        train_seconds=_num(ua.get("train_seconds")), steps=_num(ua.get("steps"), int),
        pool_key=(str(ua["pool_key"]) if ua.get("pool_key") else None),
        # a running trial may carry a provisional reason (for the case it gets interrupted)
        fail_reason=(str(ua["fail_reason"]) if ua.get("fail_reason") is not None
                     and t.state.name == "FAIL" else None),
        fail_kind=str(ua["fail_kind"]) if ua.get("fail_kind") and t.state.name == "FAIL" else None,
        warm_note=str(ua["warm_note"]) if ua.get("warm_note") else None,
        start=t.datetime_start, complete=t.datetime_complete,
    )
