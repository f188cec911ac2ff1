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
from pathlib import Path
from typing import Sequence

from ..errors import NetgraftError


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = _defaults()
    parser.add_argument("--dataset", default=d.dataset, help="fashion-mnist (default) or digits")
    parser.add_argument("--space", default=d.space,
                        help="search space: effnet (default), resnet, or package.module:attr")
    parser.add_argument("--trials", type=int, default=None,
                        help="finished trials the study should reach (default 20, or no limit "
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
    parser.add_argument("--study", help="study name (default: <space>-warm or <space>-cold)")
    parser.add_argument("--pool", help="weight pool directory (default: <storage file>-pool "
                                       "next to a sqlite file, else ./netgraft-pool)")
    parser.add_argument("--pool-scope", default=d.pool_scope, choices=("study", "all"),
                        help="graft only from this study's trials (default) or from any entry")
    parser.add_argument("--min-similarity", type=float, default=d.min_similarity,
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
        pool=args.pool, pool_scope=args.pool_scope, min_similarity=args.min_similarity,
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
                      "–" if a.get("parent_trial") is None else str(a["parent_trial"]),
                      _fmt(a.get("similarity"), "f"), _fmt(a.get("coverage"), "pct"),
                      _fmt(a.get("accuracy_at_0"), "pct"))
    return table


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    from .search import budget_counts, load_data, open_study, run_search, storage_url
    from .space import get_space

    console = Console(highlight=False)
    # every check that needs no storage comes first: a failed start leaves no study behind
    cfg = config_from_args(args)  # objectives, budget, sizes
    get_space(cfg.space)
    check_storage_folder(cfg.storage)
    storage_url(cfg.storage)  # the URL and its driver
    data = load_data(cfg)  # the dataset
    for option, asked, split, used in (("--train-size", args.train_size, "training", data.train),
                                       ("--test-size", args.test_size, "test", data.test)):
        if asked is not None and asked > len(used):
            console.print(f"[yellow]warning:[/] {option} {asked}: {cfg.dataset} has only "
                          f"{len(used):,} {split} images; using all {len(used):,}")
    open_study(cfg)  # creates the study, or checks a stored one has the same settings
    total = cfg.trials
    mode = "warm-started" if cfg.warm else "cold"
    console.print(f"search '{cfg.study_name}' ({mode}, {', '.join(cfg.objectives)}) on "
                  f"{cfg.dataset} ({len(data.train):,} training / {len(data.test):,} test "
                  f"images): {total or 'unlimited'} trials"
                  + (f", {cfg.minutes:g} min" if cfg.minutes else ""))
    best = [None]

    def describe(t) -> str:
        a = t.user_attrs
        if t.state.name != "COMPLETE":
            return f"trial {t.number} [red]failed[/]: {escape(str(a.get('fail_reason')))}"
        src = (f"from #{a['parent_trial']} (sim {a['similarity']:.2f}, cov {100 * a['coverage']:.0f}%)"
               if a.get("parent") else "cold")
        return (f"trial {t.number} {escape(a.get('arch', '?'))}: acc {100 * a['accuracy']:.1f}% "
                f"(@0 {100 * a['accuracy_at_0']:.1f}%), {a['params']:,} params, {src}, "
                f"{a['trial_seconds']:.1f}s")

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, disable=args.quiet,
                  transient=False) as progress:
        task = progress.add_task("starting", total=total)

        def on_trial(study, trial, counts):
            if trial is not None:
                if trial.state.name == "COMPLETE":
                    acc = trial.user_attrs["accuracy"]
                    best[0] = acc if best[0] is None else max(best[0], acc)
                progress.console.print(describe(trial))
            desc = f"best {100 * best[0]:.1f}%" if best[0] is not None else "searching"
            if counts.get("running"):
                desc += f", {counts['running']} running"
            progress.update(task, completed=counts["finished"], description=desc)

        result = run_search(cfg, on_trial=on_trial, data=data)
    study = result.study
    counts = budget_counts(study)
    console.print(front_table(study, args.top))
    console.print(f"{counts['complete']} complete, {counts['failed']} failed"
                  + (f", {counts['interrupted']} interrupted (retried)" if counts["interrupted"] else "")
                  + f"; this worker ran {len(result.ran)} trials in {result.seconds:.0f}s "
                  f"({result.stopped}). Storage {cfg.storage}, study '{cfg.study_name}', pool "
                  f"{result.pool_dir}")
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
    except KeyboardInterrupt:
        print("interrupted; finished trials are saved in the study (run again to resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
