"""`netgraft search`: architecture search on a small image dataset, warm-started by grafting.

    netgraft search --dataset fashion-mnist --trials 20 [--minutes M]
                    [--objectives accuracy,params] [--warm | --cold]
                    [--storage sqlite:///search.db | postgresql://user@host/db] [--study NAME]
                    [--pool DIR] [--space effnet|resnet|pkg.mod:attr] [--seed 0]
                    [--train-size 3000] [--epochs 1] [--threads 1]
    python -m netgraft.nas ...            (the same)

Run the same command on several machines / processes (same --storage, --study and --pool) to
share one search; run it again after an interruption to continue it.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from ..cli import file_name
from ..errors import NetgraftError, Terminated


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = _defaults()
    parser.add_argument("--dataset", default=d.dataset, help="fashion-mnist (default) or digits")
    parser.add_argument("--space", default=d.space,
                        help="search space: effnet (default), resnet, or package.module:attr")
    parser.add_argument("--trials", type=int, default=None,
                        help="finished trials the study should reach: complete ones and those "
                             "that could not be built or diverged (default 20, or no limit "
                             "when only --minutes is given)")
    parser.add_argument("--minutes", type=float,
                        help="stop starting trials after this long (default: no time limit)")
    parser.add_argument("--objectives", default="accuracy",
                        help="comma-separated: accuracy (required), params, flops, latency_ms; "
                             "several = Pareto search with NSGA-II (default: accuracy, TPE)")
    warm = parser.add_mutually_exclusive_group()
    warm.add_argument("--warm", dest="warm", action="store_true", default=True,
                      help="graft every trial from the most similar trained model (default)")
    warm.add_argument("--cold", dest="warm", action="store_false",
                      help="random init for every trial (the baseline)")
    parser.add_argument("--storage", default=d.storage,
                        help="Optuna storage: a file path / sqlite:///FILE (default "
                             "netgraft-search.db) or postgresql://USER:PASS@HOST/DB")
    parser.add_argument("--study", type=file_name, help="study name (default: <space>-warm or <space>-cold)")
    parser.add_argument("--pool", type=file_name, help="weight pool directory (default: <storage file>-pool "
                                       "next to a sqlite file, else ./netgraft-pool)")
    # default None: with --cold they would choose nothing, and are refused (_check_start)
    parser.add_argument("--pool-scope", choices=("study", "all"),
                        help="graft only from this study's trials (default) or from any entry")
    parser.add_argument("--min-similarity", type=float,
                        help=f"graft only from pool models at least this similar (default "
                             f"{d.min_similarity}; 0 = always graft from the most similar)")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help=f"sampler and training seed (default {d.seed})")
    parser.add_argument("--image-size", type=int, default=d.image_size,
                        help=f"pixels (default {d.image_size})")
    # default None: only a size the user asked for is worth a warning when the data set is smaller
    parser.add_argument("--train-size", type=int,
                        help=f"training images (default {d.train_size}, or all when fewer)")
    parser.add_argument("--test-size", type=int,
                        help=f"test images the accuracy is measured on (default {d.test_size}, "
                             f"or all when fewer)")
    parser.add_argument("--epochs", type=float, default=d.epochs,
                        help=f"epochs per trial (default {d.epochs:g})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size,
                        help=f"training batch size (default {d.batch_size})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    parser.add_argument("--threads", type=int, default=d.threads,
                        help=f"torch threads (default {d.threads})")
    parser.add_argument("--heartbeat", type=int, default=d.heartbeat,
                        help=f"seconds between a worker's heartbeats (default {d.heartbeat})")
    parser.add_argument("--grace", type=int, default=d.grace,
                        help=f"seconds without heartbeat before a trial is retried (default {d.grace})")
    parser.add_argument("--top", type=int, default=15, help="rows of the final table (default 15)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def _defaults():
    from .search import SearchConfig
    return SearchConfig(trials=20)


def config_from_args(args: argparse.Namespace):
    from .search import SearchConfig

    trials = args.trials if args.trials is not None else (None if args.minutes else 20)
    d = _defaults()
    return SearchConfig(
        dataset=args.dataset, space=args.space, objectives=args.objectives, trials=trials,
        minutes=args.minutes, warm=args.warm, storage=args.storage, study=args.study,
        pool=args.pool, pool_scope=d.pool_scope if args.pool_scope is None else args.pool_scope,
        min_similarity=d.min_similarity if args.min_similarity is None else args.min_similarity,
        seed=args.seed, image_size=args.image_size,
        train_size=d.train_size if args.train_size is None else args.train_size,
        test_size=d.test_size if args.test_size is None else args.test_size, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, threads=args.threads, heartbeat=args.heartbeat,
        grace=args.grace)


def check_storage_folder(storage: str) -> None:
    """Refuse a sqlite file in a folder that does not exist (like `transfer --out`), before
    anything is created; other storages (postgresql://…) are the database server's business."""
    text = str(storage).strip()
    if "://" in text:
        scheme, rest = text.split("://", 1)
        if scheme.split("+")[0].lower() != "sqlite":
            return
        text = (rest[1:] if rest.startswith("/") else rest).split("?", 1)[0]
        if not text or text == ":memory:":
            return  # storage_url explains what is wrong with these
    folder = Path(text).expanduser().parent
    if not folder.is_dir():
        raise NetgraftError(f"--storage {storage}: folder does not exist: {folder}")


def _fmt(v, kind: str) -> str:
    if v is None:
        return "–"
    if kind == "pct":
        return f"{100 * v:.1f}"
    if kind == "int":
        return f"{int(v):,}"
    if kind == "flops":
        for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
            if v >= scale:
                return f"{v / scale:.1f}{unit}"
        return str(int(v))
    return f"{v:.2f}"


def front_table(study, top: int = 15):
    """A rich table of the Pareto front (several objectives) or the best trials (one)."""
    from rich.table import Table

    from .search import front

    rows = front(study)
    multi = len(study.directions) > 1
    title = (f"Pareto front of '{study.study_name}' ({len(rows)} trials)" if multi
             else f"best trials of '{study.study_name}'")
    table = Table(title=title, title_justify="left")
    table.add_column("trial", justify="right", no_wrap=True, min_width=5)
    table.add_column("architecture", overflow="fold", min_width=12)
    for col in ("acc%", "params", "FLOPs", "ms", "parent", "sim", "cov%", "acc@0%"):
        table.add_column(col, justify="right", no_wrap=True)
    for t in rows[:top]:
        a = t.user_attrs
        table.add_row(str(t.number), a.get("arch", "?"), _fmt(a.get("accuracy"), "pct"),
                      _fmt(a.get("params"), "int"), _fmt(a.get("flops"), "flops"),
                      _fmt(a.get("latency_ms"), "f"),
                      "–" if a.get("parent_trial") is None
                      else _parent(a, study.study_name).lstrip("#"),
                      _fmt(a.get("similarity"), "f"), _fmt(a.get("coverage"), "pct"),
                      _fmt(a.get("accuracy_at_0"), "pct"))
    return table


def _check_start(args: argparse.Namespace, console):
    """Every check that needs no storage, in order (a failed start leaves no study behind):
    the settings, the space, the storage's folder, URL and driver, then the dataset."""
    from .search import default_pool_dir, load_data, storage_url
    from .space import get_space

    if args.top < 1:
        raise NetgraftError(f"--top must be a whole number >= 1 (rows of the final table), "
                            f"got {args.top}")
    cfg = config_from_args(args)  # objectives, budget, sizes, every number
    for option, given in (("--min-similarity", args.min_similarity),
                          ("--pool-scope", args.pool_scope)):
        if given is not None and not args.warm:
            raise NetgraftError(f"{option} chooses the model a trial is grafted from, and "
                                f"--cold grafts none: drop one of them")
    get_space(cfg.space)
    check_storage_folder(cfg.storage)
    storage_url(cfg.storage)  # the URL and its driver; an existing file must be Optuna's
    pool = Path(default_pool_dir(cfg))
    if pool.exists() and not pool.is_dir():
        raise NetgraftError(f"--pool {pool}: a file; give a folder for the trained weights "
                            f"(it is created if missing)")
    data = load_data(cfg)
    made = None if pool.exists() else pool  # removed again if the study is refused
    try:  # before the study: a folder that cannot be made would leave an empty study behind
        pool.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NetgraftError(f"--pool {pool}: cannot create the folder for the trained weights "
                            f"({exc.strerror or exc})") from None
    try:  # every trial writes its weights there: find out before the first one trains
        tempfile.TemporaryFile(dir=pool).close()
    except OSError as exc:
        raise NetgraftError(f"--pool {pool}: cannot write the trained weights there "
                            f"({exc.strerror or exc}); give a folder you can write to") from None
    for option, asked, split, used in (("--train-size", args.train_size, "training", data.train),
                                       ("--test-size", args.test_size, "test", data.test)):
        if asked is not None and asked > len(used):
            console.print(f"[yellow]warning:[/] {option} {asked}: {cfg.dataset} has only "
                          f"{len(used):,} {split} images; using all {len(used):,}")
    return cfg, data, made


def _parent(a: dict, study_name: str | None) -> str:
    """"#N", or "<study> #N" for a parent of another study (`--pool-scope all`)."""
    other = a.get("parent_study")
    where = f"{other} " if other is not None and other != study_name else ""
    return f"{where}#{a['parent_trial']}"


def _describe(t, study_name: str | None = None) -> str:
    from rich.markup import escape

    a = t.user_attrs
    if t.state.name != "COMPLETE":
        return f"trial {t.number} [red]failed[/]: {escape(str(a.get('fail_reason')))}"
    src = (f"from {escape(_parent(a, study_name))} (sim {a['similarity']:.2f}, "
           f"cov {100 * a['coverage']:.0f}%)" if a.get("parent") else "cold")
    if not a.get("parent") and a.get("warm_note"):  # a warm start that did not graft
        note = str(a["warm_note"])
        src += f" ({escape(note if len(note) <= 160 else note[:157] + '...')})"
    return (f"trial {t.number} {escape(a.get('arch', '?'))}: acc {100 * a['accuracy']:.1f}% "
            f"(@0 {100 * a['accuracy_at_0']:.1f}%), {a['params']:,} params, {src}, "
            f"{a['trial_seconds']:.1f}s")


def _search(args: argparse.Namespace, cfg, data, console, study=None):
    """run_search with a progress bar and one line per trial; "best" counts the trials
    `study` (resumed) already holds."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    from .search import run_search

    done = [t.user_attrs["accuracy"] for t in (study.get_trials(deepcopy=False) if study else ())
            if t.state.name == "COMPLETE" and isinstance(t.user_attrs.get("accuracy"), float)]
    best = [max(done, default=None)]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, disable=args.quiet,
                  transient=False) as progress:
        task = progress.add_task("starting", total=cfg.trials)

        def on_trial(study, trial, counts):
            if trial is not None:
                if trial.state.name == "COMPLETE":
                    acc = trial.user_attrs["accuracy"]
                    best[0] = acc if best[0] is None else max(best[0], acc)
                progress.console.print(_describe(trial, study.study_name))
            desc = f"best {100 * best[0]:.1f}%" if best[0] is not None else "searching"
            if counts.get("running"):
                desc += f", {counts['running']} running"
            progress.update(task, completed=counts["finished"], description=desc)

        return run_search(cfg, on_trial=on_trial, data=data)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _header(cfg, data) -> str:
    budget = _plural(cfg.trials, "trial") if cfg.trials else "unlimited trials"
    return (f"search '{cfg.study_name}' ({'warm-started' if cfg.warm else 'cold'}, "
            f"{', '.join(cfg.objectives)}) on {cfg.dataset} ({len(data.train):,} training / "
            f"{len(data.test):,} test images): {budget}"
            + (f", {cfg.minutes:g} min" if cfg.minutes else ""))


def _nothing_to_run(cfg, counts) -> str | None:
    """Why this run will start no trial (the study already has --trials finished ones)."""
    if cfg.trials is None or counts["finished"] < cfg.trials:
        return None
    return (f"[yellow]note:[/] study '{cfg.study_name}' already has "
            f"{_plural(counts['finished'], 'finished trial')} ({counts['complete']} complete, "
            f"{counts['failed']} failed) of the --trials "
            f"{cfg.trials} asked: nothing to run. Give a larger --trials to continue it, or a "
            f"new --study")


def _all_failed(study, ran: list[int]) -> str | None:
    """The error when every trial this worker ran failed (None when one completed)."""
    from collections import Counter

    trials = [t for t in study.get_trials(deepcopy=False) if t.number in set(ran)]
    if not trials or any(t.state.name == "COMPLETE" for t in trials):
        return None
    reasons = Counter(str(t.user_attrs.get("fail_reason"))[:160] for t in trials)
    why = "; ".join(f"{n}× {r}" for r, n in reasons.most_common(2))
    counted = [t for t in trials if t.user_attrs.get("fail_kind") in ("build", "diverged")]
    hint = ("trials that could not be built or diverged count toward --trials: after fixing the "
            "cause, continue with a larger --trials or start a new --study" if counted else
            "they do not count toward --trials: fix the cause and run the same command again")
    return f"all {_plural(len(trials), 'trial')} of this run failed ({why}); {hint}"


def _summary(cfg, result, counts) -> str:
    from .search import _redact

    return (f"{counts['complete']} complete, {counts['failed']} failed"
            + (f", {_plural(counts['errors'], 'error')} (not counted)" if counts["errors"] else "")
            + (f", {counts['interrupted']} interrupted (not counted)" if counts["interrupted"]
               else "")
            + f"; this worker ran {_plural(len(result.ran), 'trial')} in {result.seconds:.0f}s "
            f"({result.stopped}). Storage {_redact(cfg.storage)}, study '{cfg.study_name}', pool "
            f"{result.pool_dir}")


def _interrupted(cfg, study, verb: str = "interrupted") -> str:
    """What a Ctrl-C (or SIGTERM: `verb` "terminated") leaves behind: the study (resumable)
    and its pool, never nothing."""
    from .search import _redact, budget_counts, default_pool_dir

    where = f"the study '{cfg.study_name}' in {_redact(cfg.storage)}"
    if study is None:
        return f"{verb} while opening {where}; rerun the same command to start it"
    try:
        kept = f" keeps {_plural(budget_counts(study)['finished'], 'finished trial')}"
    except Exception:  # noqa: BLE001 - the storage went away too: say what is sure
        kept = " keeps its finished trials"
    return (f"{verb}; {where}{kept} (weights in {default_pool_dir(cfg)}): rerun the same "
            f"command to resume")


def run(args: argparse.Namespace) -> int:
    from ..cli import make_console
    from .search import budget_counts, open_study

    console = make_console()
    cfg, data, made = _check_start(args, console)
    study = None
    try:
        try:  # creates the study, or checks a stored one has the same settings
            study = open_study(cfg)
        except BaseException:
            if made is not None and not any(made.iterdir()):
                made.rmdir()  # a search refused (or stopped) before it began leaves no folder
            raise
        console.print(_header(cfg, data))
        note = _nothing_to_run(cfg, budget_counts(study))
        if note:
            console.print(note)
        result = _search(args, cfg, data, console, study)
        console.print(front_table(result.study, args.top))
        console.print(_summary(cfg, result, budget_counts(result.study)))
    except KeyboardInterrupt as exc:
        term = isinstance(exc, Terminated)  # SIGTERM (netgraft.cli), as `timeout` sends
        print(_interrupted(cfg, study, "terminated" if term else "interrupted"), file=sys.stderr)
        return 143 if term else 130
    failed = _all_failed(result.study, result.ran)
    if failed:
        raise NetgraftError(failed)
    return 0


def _prog() -> str:
    """The command as typed: `python -m netgraft.nas` (or `.nas.cli`), else `netgraft search`."""
    if sys.argv and sys.argv[0]:
        script = Path(sys.argv[0]).resolve()
        here = Path(__file__).resolve()
        if script == here.with_name("__main__.py"):
            return "python -m netgraft.nas"
        if script == here:
            return "python -m netgraft.nas.cli"
    return "netgraft search"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=_prog(), description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except NetgraftError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # run() names the study once it exists: here, nothing was written
        print("interrupted before the search started; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
