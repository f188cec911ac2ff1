"""Architecture search with Optuna, every trial warm-started from the pool (or cold).

``run_search(SearchConfig(...))`` is what ``netgraft search`` runs; one call is one worker.
Several workers (processes, machines) given the same storage, study and pool directory share
the work. The study and every trial carry the user attributes ``netgraft report`` reads
(study: netgraft_version, space, dataset, objectives, warm, pool; trial: arch, arch_params,
accuracy, params, flops, latency_ms, warm, parent, parent_trial, parent_arch, parent_study,
similarity, coverage, pool_key, train_seconds, steps, accuracy_at_0, worker; failed:
fail_reason).

Warm start: a trial's model is grafted from the most similar trained model of the study
(``WarmStartPool``), if one is at least ``min_similarity`` similar (default 0.5: grafts
between very different blocks, e.g. depthwise-separable into full convolutions, measured
worse than random init after one epoch), then trained exactly like a cold trial.

Budget and resuming: ``trials`` is the number of *finished* trials the study should reach:
COMPLETE trials plus trials that failed on their own (architecture could not be built,
training diverged). A trial that failed with an unexpected error (a bug, a full disk: nothing
learned about its architecture) or was interrupted does not count. A worker starts a trial
only while finished + running trials are fewer than that, waits while other workers' trials
are still running, and returns when the study has its trials (or when ``minutes`` have
passed). Re-running the same command on the same storage continues the study to the
requested total; finished trials are never redone.

Killed workers: RDB storages run Optuna's heartbeat. A trial whose worker stopped beating
(SIGKILL, crash, lost machine) for ``grace`` seconds is marked FAIL by the next worker that
looks (its ``fail_reason`` says it was interrupted) and re-queued with the same architecture
(``RetryHeartbeatStaleTrialCallback``); it does not count toward the budget, its retry does.

Failures: a trial whose architecture cannot be built or run, whose training diverges (NaN/inf
loss) or that raises is recorded as FAIL with the user attribute ``fail_reason`` (one line)
and the search goes on. Five unexpected errors in a row stop the worker (that is a bug, not a
bad architecture). Settings no trial could run with (``lr`` <= 0 or NaN, ``threads`` 0, ...)
are refused by ``SearchConfig`` before anything is created.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import math
import numbers
import os
import socket
import sqlite3
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..errors import NetgraftError, Terminated, first_line
from .pool import WarmStartPool
from .space import get_space

__all__ = ["OBJECTIVES", "SearchConfig", "SearchResult", "TrialFailed", "budget_counts",
           "front", "hypervolume_2d", "open_study", "parse_objectives", "run_search",
           "storage_url"]

OBJECTIVES = {"accuracy": "maximize", "params": "minimize", "flops": "minimize",
              "latency_ms": "minimize"}
_ALIASES = {"acc": "accuracy", "latency": "latency_ms", "parameters": "params"}
INTERRUPTED = "interrupted: the worker stopped during this trial (killed, crashed or lost)"
_MAX_ERRORS_IN_A_ROW = 5


class TrialFailed(Exception):
    """A trial that failed for a reason worth recording (the search goes on)."""

    def __init__(self, reason: str, kind: str):
        super().__init__(reason)
        self.kind = kind


@dataclass
class SearchConfig:
    """Everything one search worker needs (``netgraft search`` options, same names)."""

    dataset: str = "fashion-mnist"
    space: Any = "effnet"
    objectives: Sequence[str] = ("accuracy",)
    trials: int | None = 20
    minutes: float | None = None
    warm: bool = True
    storage: str = "sqlite:///netgraft-search.db"
    study: str | None = None          # default: "<space>-<warm|cold>"
    pool: str | None = None           # default: next to a sqlite file, else ./netgraft-pool
    pool_scope: str = "study"
    seed: int = 0
    image_size: int = 28
    train_size: int = 3000
    test_size: int = 1000
    epochs: float = 1.0
    batch_size: int = 64
    lr: float = 2e-3
    calibration: int = 256            # unlabeled images to re-estimate batch norms after a graft
    min_similarity: float = 0.5       # graft only from pool models at least this similar
    latency_repeats: int = 20
    threads: int | None = 1
    heartbeat: int = 10               # seconds between heartbeats (RDB storages)
    grace: int = 30                   # seconds without heartbeat before a trial counts as dead
    max_retry: int = 3
    population: int | None = None     # NSGA-II population (default: trials // 3, in [4, 50])
    startup_trials: int | None = None  # TPE random trials (default: trials // 3, in [4, 10])
    poll: float = 2.0                 # seconds between checks while waiting for other workers

    def __post_init__(self):
        self.objectives = parse_objectives(self.objectives)
        from ..data import dataset_name
        try:
            self.dataset = dataset_name(self.dataset)
        except ValueError as exc:
            raise NetgraftError(f"--dataset: {exc}") from None
        if self.trials is None and self.minutes is None:
            raise NetgraftError("give a budget: --trials N and/or --minutes M")
        _check_numbers(self)

    @property
    def space_name(self) -> str:
        return get_space(self.space).name

    @property
    def study_name(self) -> str:
        return self.study or f"{self.space_name}-{'warm' if self.warm else 'cold'}"


#: whole-number settings: (lowest, highest or None); a None value means "the default" for
#: the settings in _OPTIONAL. Settings that are not options of `netgraft search` are named
#: without dashes in messages.
_WHOLE = {"trials": (1, None), "image_size": (8, 256), "train_size": (1, None),
          "test_size": (1, None), "batch_size": (1, None), "threads": (1, None),
          "seed": (0, 2 ** 32 - 1), "heartbeat": (1, None), "calibration": (0, None),
          "latency_repeats": (1, None), "max_retry": (0, None), "population": (2, None),
          "startup_trials": (0, None)}
_OPTIONAL = {"trials", "threads", "population", "startup_trials"}
_NOT_OPTIONS = {"calibration", "latency_repeats", "max_retry", "population", "startup_trials",
                "poll"}


def _flag(name: str) -> str:
    return name if name in _NOT_OPTIONS else "--" + name.replace("_", "-")


def _default(name: str) -> str:
    default = SearchConfig.__dataclass_fields__[name].default
    return "" if default is None else f" (default {default:g})" if isinstance(default, float) \
        else f" (default {default})"


def _check_whole(name: str, value: Any, low: int, high: int | None = None) -> None:
    if value is None and name in _OPTIONAL:
        return
    span = f">= {low}" if high is None else f"in {low}..{high}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or \
            (high is not None and value > high):
        raise NetgraftError(f"{_flag(name)} must be a whole number {span}, got {value!r}"
                            f"{_default(name)}")


def _check_real(name: str, value: Any, span: str, ok: Callable[[float], bool]) -> None:
    try:
        good = math.isfinite(float(value)) and ok(float(value))
    except (TypeError, ValueError):
        good = False
    if not good:
        raise NetgraftError(f"{_flag(name)} must be a number {span}, got {value!r}{_default(name)}")


def _check_numbers(cfg: SearchConfig) -> None:
    """Refuse a setting no trial can run with before anything is created (a negative or NaN
    --lr used to fail every trial, --threads -2 to end in torch's traceback)."""
    for name, (low, high) in _WHOLE.items():
        _check_whole(name, getattr(cfg, name), low, high)
    if cfg.minutes is not None:
        _check_real("minutes", cfg.minutes, "> 0", lambda v: v > 0)
    _check_real("epochs", cfg.epochs, "> 0", lambda v: v > 0)
    _check_real("lr", cfg.lr, "in (0, 1] (Adam's learning rate)", lambda v: 0 < v <= 1)
    _check_real("min_similarity", cfg.min_similarity, "in [0, 1]", lambda v: 0 <= v <= 1)
    _check_real("poll", cfg.poll, "> 0 (seconds)", lambda v: v > 0)
    if isinstance(cfg.grace, bool) or not isinstance(cfg.grace, numbers.Integral) or \
            cfg.grace <= cfg.heartbeat:
        raise NetgraftError(f"--grace must be a whole number of seconds greater than --heartbeat "
                            f"({cfg.heartbeat}), got {cfg.grace!r}{_default('grace')}")


def parse_objectives(objectives: str | Sequence[str]) -> list[str]:
    """``"accuracy,params"`` → ``["accuracy", "params"]`` (aliases: acc, latency)."""
    items = objectives.split(",") if isinstance(objectives, str) else list(objectives)
    out = []
    for item in items:
        name = _ALIASES.get(item.strip().lower(), item.strip().lower())
        if name not in OBJECTIVES:
            raise NetgraftError(f"unknown objective {item!r}; choose from "
                                f"{', '.join(OBJECTIVES)} (comma-separated)")
        if name in out:
            raise NetgraftError(f"objective {name!r} given twice")
        out.append(name)
    if not out:
        raise NetgraftError("no objective given")
    if "accuracy" not in out:
        raise NetgraftError("the objectives must include accuracy (a search over cost alone "
                            "would pick the emptiest network)")
    return out


# ------------------------------------------------------------------------ storage

def storage_url(text: str) -> str:
    """An SQLAlchemy URL from ``sqlite:///…``, ``postgresql://…`` or a plain file path."""
    text = str(text).strip()
    if not text:
        raise NetgraftError("empty --storage")
    if "://" not in text:
        path = Path(text).expanduser().resolve()
        if path.is_dir():
            raise NetgraftError(f"--storage {text}: is a directory; give a file such as search.db")
        check_sqlite_storage(path, text)
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    scheme, rest = text.split("://", 1)
    base = scheme.split("+")[0].lower()
    if base == "postgres":  # SQLAlchemy only knows the long name
        scheme, base = "postgresql" + scheme[len("postgres"):], "postgresql"
    if base == "sqlite":
        path = rest[1:] if rest.startswith("/") else rest
        if not path or path == ":memory:":
            raise NetgraftError("--storage sqlite:///:memory: cannot be shared or resumed; give "
                                "a file (sqlite:///search.db)")
        check_sqlite_storage(Path(path.split("?", 1)[0]).expanduser(), text)
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if base in ("postgresql", "mysql"):
        if "+" not in scheme:  # pick an installed driver (SQLAlchemy's default may be absent)
            options = (("psycopg", "psycopg"), ("psycopg2", "psycopg2")) if base == "postgresql" \
                else (("mysqldb", "MySQLdb"), ("pymysql", "pymysql"))
            for driver, module in options:
                if importlib.util.find_spec(module) is not None:
                    return f"{base}+{driver}://{rest}"
            hint = "pip install 'psycopg[binary]'" if base == "postgresql" else "pip install pymysql"
            raise NetgraftError(f"--storage {base}://…: no database driver installed ({hint})")
        driver = scheme.split("+", 1)[1]
        module = {"psycopg": "psycopg", "psycopg2": "psycopg2", "mysqldb": "MySQLdb"}.get(driver, driver)
        if importlib.util.find_spec(module) is None:
            raise NetgraftError(f"--storage {scheme}://…: the database driver '{module}' is not "
                                f"installed (pip install {module})")
        return f"{scheme}://{rest}"
    raise NetgraftError(f"--storage {text!r}: unsupported URL scheme '{scheme}'; use a file path, "
                        f"sqlite:///FILE, postgresql://USER@HOST/DB or mysql://…")


#: tables of an Optuna RDB storage (the first two are the first it creates: a database that
#: another worker is setting up right now already has one of them)
OPTUNA_TABLES = frozenset({"studies", "version_info", "alembic_version", "trials"})


def sqlite_tables(path: Path) -> set[str]:
    """The tables of the sqlite database `path`, opened read-only (sqlite3.DatabaseError if
    it is no sqlite database)."""
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = con.execute("select name from sqlite_master where type='table'").fetchall()
    finally:
        con.close()
    return {r[0] for r in rows if not r[0].startswith("sqlite_")}


def check_sqlite_storage(path: Path, shown: str) -> None:
    """Refuse an existing file that is not an Optuna storage: Optuna would add its tables to
    another application's database (an empty file or database is fine: a new storage)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        tables = sqlite_tables(path)
    except sqlite3.DatabaseError as exc:
        if "not a database" not in str(exc):
            return  # locked by a worker writing it, ...: Optuna says what is wrong, if anything
        raise NetgraftError(f"--storage {shown}: {path} exists and is not a sqlite database; "
                            f"give the search's database or a new file name such as "
                            f"search.db") from None
    if tables and not tables & OPTUNA_TABLES:
        listed = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise NetgraftError(f"--storage {shown}: {path} is a sqlite database of another "
                            f"application (tables {listed}), not an Optuna storage: the search "
                            f"would add its tables to it. Give the search's database or a new "
                            f"file name such as search.db")


def make_storage(cfg: SearchConfig):
    import optuna

    url = storage_url(cfg.storage)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 120}}
    last: Exception | None = None
    for attempt in range(5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", FutureWarning)
            try:
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=cfg.heartbeat,
                    grace_period=cfg.grace,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=cfg.max_retry))
            except Exception as exc:  # sqlalchemy OperationalError, ArgumentError, ...
                last = exc
                # workers starting together race to create Optuna's tables: the loser retries
                if "already exists" not in str(exc) and "UniqueViolation" not in str(exc) \
                        and "IntegrityError" not in type(exc).__name__:
                    break
                time.sleep(0.5 + attempt)
    raise NetgraftError(f"cannot open storage {_redact(url)}: {first_line(last)}") from last


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


# ------------------------------------------------------------------------- sampler

def _mix(*numbers: int) -> int:
    digest = hashlib.sha256(":".join(map(str, numbers)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _sampler_class():
    import optuna

    class TrialSeededSampler(optuna.samplers.BaseSampler):
        """Delegates to a sampler re-created for every trial with a seed from (seed, trial
        number): reproducible for one worker, and neither parallel workers nor a resumed run
        replay the random draws of other trials."""

        def __init__(self, factory: Callable[[int], Any], seed: int):
            self._factory, self._seed = factory, seed
            self._inner = factory(seed)

        def before_trial(self, study, trial):
            self._inner = self._factory(_mix(self._seed, trial.number))
            self._inner.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self._inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._inner.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values):
            self._inner.after_trial(study, trial, state, values)

        def reseed_rng(self):
            self._inner.reseed_rng()

    return TrialSeededSampler


def make_sampler(cfg: SearchConfig):
    import optuna

    budget = cfg.trials or 30
    if len(cfg.objectives) == 1:
        startup = cfg.startup_trials or max(4, min(10, budget // 3))

        def factory(seed):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup,
                                                  multivariate=True, constant_liar=True)
    else:
        population = cfg.population or max(4, min(50, budget // 3))

        def factory(seed):
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    return _sampler_class()(factory, cfg.seed)


# --------------------------------------------------------------------------- study

def _study_attrs(cfg: SearchConfig, pool_dir: str) -> dict[str, Any]:
    from .. import __version__
    return {"netgraft_version": __version__, "space": cfg.space_name, "dataset": cfg.dataset,
            "objectives": list(cfg.objectives), "warm": cfg.warm, "pool": pool_dir,
            "config": {k: v for k, v in asdict(cfg).items()
                       if k in ("image_size", "train_size", "test_size", "epochs", "batch_size",
                                "lr", "calibration", "seed", "trials", "pool_scope",
                                "min_similarity")}}


def default_pool_dir(cfg: SearchConfig) -> str:
    if cfg.pool:
        return str(Path(cfg.pool).expanduser().resolve())
    url = storage_url(cfg.storage)
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///"):]).resolve()
        return str(db.with_name(db.stem + "-pool"))
    return str(Path("netgraft-pool").resolve())


def open_study(cfg: SearchConfig, storage=None, pool_dir: str | None = None):
    """Create or load the study (checking a loaded one was made with the same settings)."""
    import optuna

    storage = storage if storage is not None else make_storage(cfg)
    pool_dir = pool_dir if pool_dir is not None else default_pool_dir(cfg)
    directions = [OBJECTIVES[o] for o in cfg.objectives]
    try:
        with _quiet_optuna():
            study = optuna.create_study(storage=storage, study_name=cfg.study_name,
                                        directions=directions, sampler=make_sampler(cfg),
                                        load_if_exists=True)
    except Exception as exc:
        if isinstance(exc, NetgraftError):
            raise
        cause = exc  # the database driver's words (a read-only file), not Optuna's wrapper
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__
        why = first_line(cause) if cause is not exc else str(exc)
        raise NetgraftError(f"cannot create or load study '{cfg.study_name}': {why}") from exc
    attrs = study.user_attrs
    wanted = _study_attrs(cfg, pool_dir)
    where = f"study '{cfg.study_name}' in {_redact(storage_url(cfg.storage))}"
    if "objectives" not in attrs and study.get_trials(deepcopy=False):
        # netgraft records its settings before any trial: trials without them are another
        # program's (an Optuna study minimising a loss), which this search must not take over
        raise NetgraftError(f"{where} was not made by netgraft search (it has trials and no "
                            f"netgraft settings); name a new study with --study")
    got = [d.name.lower() for d in study.directions]
    if "objectives" not in attrs and got != [d.lower() for d in directions]:
        raise NetgraftError(f"{where} has the directions {got}, not {directions} for the "
                            f"objectives {list(cfg.objectives)}; name a new study with --study")
    if "objectives" not in attrs:
        # "objectives" marks a study whose settings are recorded: written last, so that a
        # worker loading the study while its creator is still writing never compares
        # against a half-written record (two workers started together)
        for k, v in sorted(wanted.items(), key=lambda kv: kv[0] == "objectives"):
            study.set_user_attr(k, v)
    else:
        recorded = {**attrs, **attrs.get("config", {})}
        wanted = {**wanted, **wanted["config"]}
        # what its trials were measured with, and where their weights are: another value
        # would compare accuracies measured otherwise, or graft from none of them
        # the default pool of a server storage is a folder of the working directory, which
        # another machine or folder names otherwise: compared only when named (--pool)
        pool = ("pool",) if cfg.pool or storage_url(cfg.storage).startswith("sqlite") else ()
        for k in ("objectives", "warm", "space", "dataset", *MEASURED_WITH, *CHOSEN_WITH,
                  *pool):
            if k in recorded and recorded[k] != wanted[k]:
                raise NetgraftError(
                    f"{where} was created with {k}={recorded[k]!r}, not {wanted[k]!r}; resume "
                    f"it with the same options or name a new one with --study")
    return study


#: the settings a study's accuracies were measured with: a resumed study keeps them
MEASURED_WITH = ("image_size", "train_size", "test_size", "epochs", "batch_size", "lr",
                 "calibration")
#: the settings its trials were drawn, seeded and warm-started with: a resumed study keeps
#: them too, so that its record says how every trial came about
CHOSEN_WITH = ("seed", "min_similarity", "pool_scope")


# ---------------------------------------------------------------------------- data

@dataclass
class SearchData:
    train: Any
    test: Any
    calibration: torch.Tensor | None
    example: torch.Tensor
    num_classes: int
    in_chans: int


def load_data(cfg: SearchConfig) -> SearchData:
    from ..data import load_dataset

    try:
        train = load_dataset(cfg.dataset, "train", size=cfg.image_size)
        test = load_dataset(cfg.dataset, "test", size=cfg.image_size)
    except (FileNotFoundError, ValueError) as exc:
        raise NetgraftError(f"dataset {cfg.dataset!r}: {exc}") from exc
    train = train.subset(min(cfg.train_size, len(train)), seed=0)
    test = test.subset(min(cfg.test_size, len(test)), seed=0)
    calib = train.x[: cfg.calibration] if cfg.calibration else None
    return SearchData(train, test, calib, train.x[:1].clone(), train.num_classes,
                      int(train.x.shape[1]))


# ----------------------------------------------------------------------- objective

def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:400]


class Objective:
    """The Optuna objective of a search: build, warm-start, measure, train, evaluate, store."""

    def __init__(self, cfg: SearchConfig, data: SearchData, pool: WarmStartPool, space):
        self.cfg, self.data, self.pool, self.space = cfg, data, pool, space
        self.errors_in_a_row = 0
        self.last_number: int | None = None

    def build(self, params: dict[str, Any]):
        return self.space.build(params, num_classes=self.data.num_classes,
                                in_chans=self.data.in_chans)

    def __call__(self, trial) -> tuple[float, ...]:
        self.last_number = trial.number
        trial.set_user_attr("fail_reason", INTERRUPTED)
        trial.set_user_attr("fail_kind", "interrupted")
        try:
            values = self._run(trial)
        except TrialFailed as exc:
            self._fail(trial, str(exc), exc.kind)
            raise
        except KeyboardInterrupt as exc:
            by = ("terminated (SIGTERM)" if isinstance(exc, Terminated)
                  else "interrupted by the user (Ctrl-C)")
            self._fail(trial, by, "interrupted")
            raise
        except Exception as exc:  # a bug or an unforeseen failure: record it, go on
            self._fail(trial, f"error: {_one_line(exc)}", "error")
            raise TrialFailed(f"error: {_one_line(exc)}", "error") from exc
        self.errors_in_a_row = 0
        return values

    def _fail(self, trial, reason: str, kind: str) -> None:
        self.errors_in_a_row = self.errors_in_a_row + 1 if kind == "error" else 0
        with contextlib.suppress(Exception):
            trial.set_user_attr("fail_reason", reason)
            trial.set_user_attr("fail_kind", kind)

    def _run(self, trial) -> tuple[float, ...]:
        from ..metrics import metrics
        from ..training import evaluate, train

        cfg, data = self.cfg, self.data
        start = time.perf_counter()
        params = self.space.sample(trial)
        arch = self.space.describe(params)
        trial.set_user_attr("arch", arch)
        trial.set_user_attr("arch_params", params)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        seed = _mix(cfg.seed, trial.number) % (2 ** 31)
        torch.manual_seed(seed)
        try:
            model = self.build(params)
            model.eval()
            with torch.no_grad():
                out = model(data.example)
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, data.num_classes):
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"output {shape}, expected (1, {data.num_classes})")
        except Exception as exc:
            raise TrialFailed(f"build: {_one_line(exc)}", "build") from exc
        cost = metrics(model, data.example, latency_repeats=cfg.latency_repeats)
        values = {"params": cost.params, "flops": cost.flops, "latency_ms": cost.latency_ms}
        if cfg.warm:
            ws = self.pool.warm_start(model, params, trial=trial)
            parent = ws.entry.key if ws.entry else None
            trial.set_user_attr("warm_seconds", round(ws.seconds, 3))
        else:
            for k, v in {"warm": False, "parent": None, "parent_trial": None,
                         "parent_arch": None, "parent_study": None, "similarity": None,
                         "coverage": None}.items():
                trial.set_user_attr(k, v)
            parent = None
        acc0 = evaluate(model, data.test)
        steps = max(1, int(round(cfg.epochs * (len(data.train) // cfg.batch_size or 1))))
        result = train(model, data.train, steps=steps, batch_size=cfg.batch_size, lr=cfg.lr,
                       seed=seed)
        if result.diverged:
            raise TrialFailed(f"diverged: the training loss became {result.final_loss} "
                              f"(lr {cfg.lr}, {steps} steps planned)", "diverged")
        accuracy = evaluate(model, data.test)
        values["accuracy"] = accuracy
        key = self.pool.add(model, params, trial=trial, parent=parent, metrics={
            "accuracy": accuracy, "accuracy_at_0": acc0, **values})
        attrs = {"accuracy": accuracy, **values, "accuracy_at_0": acc0,
                 "train_seconds": round(result.seconds, 3), "steps": steps, "seed": seed,
                 "trial_seconds": round(time.perf_counter() - start, 3), "pool_key": key,
                 "fail_reason": None, "fail_kind": None}
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        return tuple(float(values[o]) for o in cfg.objectives)


# -------------------------------------------------------------------------- worker

@dataclass
class SearchResult:
    study: Any
    pool_dir: str
    ran: list[int] = field(default_factory=list)  # trial numbers this worker ran
    seconds: float = 0.0
    stopped: str = ""                              # why the worker returned


#: fail kind -> its count in budget_counts; "failed" (build, diverged) counts toward the budget
_FAIL_COUNT = {None: "interrupted", "interrupted": "interrupted", "error": "errors"}


def budget_counts(study) -> dict[str, int]:
    """complete / failed (on their own: build, diverged) / errors (an unexpected error) /
    interrupted / running / waiting trials; finished = complete + failed (the budget's)."""
    from optuna.trial import TrialState

    counts = dict(complete=0, failed=0, errors=0, interrupted=0, running=0, waiting=0)
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            counts["complete"] += 1
        elif t.state == TrialState.FAIL:
            kind = t.user_attrs.get("fail_kind", "interrupted")
            counts[_FAIL_COUNT.get(kind, "failed")] += 1
        elif t.state == TrialState.RUNNING:
            counts["running"] += 1
        elif t.state == TrialState.WAITING:
            counts["waiting"] += 1
    counts["finished"] = counts["complete"] + counts["failed"]
    return counts


@contextlib.contextmanager
def _quiet_optuna():
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            yield
        finally:
            optuna.logging.set_verbosity(level)


@contextlib.contextmanager
def _threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_search(cfg: SearchConfig, *, on_trial: Callable[[Any, Any, dict], None] | None = None,
               data: SearchData | None = None) -> SearchResult:
    """Run one search worker until the study has `cfg.trials` finished trials (or time is up).

    `on_trial(study, frozen_trial, counts)` is called after every trial this worker ran and
    whenever the counts change while it waits.
    """
    import optuna

    space = get_space(cfg.space)
    t0 = time.perf_counter()
    deadline = t0 + cfg.minutes * 60 if cfg.minutes else math.inf
    pool_dir = default_pool_dir(cfg)
    with _quiet_optuna(), _threads(cfg.threads):
        storage = make_storage(cfg)
        study = open_study(cfg, storage, pool_dir)
        data = data or load_data(cfg)
        pool = WarmStartPool(
            pool_dir, lambda p: space.build(p, num_classes=data.num_classes, in_chans=data.in_chans),
            example_input=data.example, study=cfg.study_name, scope=cfg.pool_scope,
            tag={"space": space.name, "dataset": cfg.dataset, "image_size": cfg.image_size,
                 "num_classes": data.num_classes, "in_chans": data.in_chans},
            calibration_data=data.calibration, describe=space.describe,
            min_similarity=cfg.min_similarity)
        objective = Objective(cfg, data, pool, space)
        result = SearchResult(study, pool_dir)
        target = cfg.trials if cfg.trials is not None else math.inf
        last = None
        while True:
            if time.perf_counter() >= deadline:
                result.stopped = "time budget reached"
                break
            optuna.storages.fail_stale_trials(study)
            counts = budget_counts(study)
            if counts["finished"] >= target:
                result.stopped = "study has its trials"
                break
            if counts["waiting"] or counts["finished"] + counts["running"] < target:
                objective.last_number = None
                study.optimize(objective, n_trials=1, catch=(TrialFailed,))
                trial = _last_run(study, objective.last_number)
                if trial is not None:
                    result.ran.append(trial.number)
                    if on_trial:
                        on_trial(study, trial, budget_counts(study))
                if objective.errors_in_a_row >= _MAX_ERRORS_IN_A_ROW:
                    reason = trial.user_attrs.get("fail_reason") if trial is not None else "?"
                    raise NetgraftError(f"{_MAX_ERRORS_IN_A_ROW} trials in a row failed with an "
                                        f"unexpected error; stopping. Last: {reason}")
                continue
            # every remaining slot is held by a running trial of another worker: wait for it
            # (if that worker died, its trial goes stale after `grace` seconds and is retried)
            if on_trial and counts != last:
                on_trial(study, None, counts)
            last = counts
            time.sleep(cfg.poll)
    result.seconds = time.perf_counter() - t0
    return result


def _last_run(study, number: int | None) -> Any:
    """The frozen trial `number` (the one the last optimize(n_trials=1) call ran)."""
    if number is None:
        return None
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            return t
    return None


# ------------------------------------------------------------------------ analysis

def completed(study) -> list:
    from optuna.trial import TrialState
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def front(study) -> list:
    """The Pareto front (several objectives) or the trials sorted by accuracy (one)."""
    trials = completed(study)
    if len(study.directions) > 1:
        trials = list(study.best_trials)
    return sorted(trials, key=lambda t: (-t.user_attrs.get("accuracy", 0.0),
                                         t.user_attrs.get("params", 0)))


def hypervolume_2d(points: Sequence[tuple[float, float]], ref_cost: float,
                   ref_accuracy: float = 0.0) -> float:
    """Area dominated by (accuracy ↑, cost ↓) points, normalised to [0, 1].

    The box is accuracy in [ref_accuracy, 1] × cost in [0, ref_cost]; points outside
    contribute only their part inside it. 1.0 = a zero-cost model of accuracy 1.
    """
    if ref_cost <= 0:
        raise ValueError("ref_cost must be > 0")
    pts = sorted(((min(c, ref_cost) / ref_cost, max(a, ref_accuracy)) for a, c in points
                  if math.isfinite(a) and math.isfinite(c)), key=lambda p: (p[0], -p[1]))
    area, best = 0.0, ref_accuracy
    for cost, acc in pts:
        if acc > best:
            area += (1.0 - cost) * (acc - best)
            best = acc
    return area / (1.0 - ref_accuracy)
