"""Warm-started vs cold architecture search at equal budget (`netgraft.nas`).

    python benchmarks/nas_warmstart.py [--trials 20] [--seeds 2] [--estimate] [--quick] [--fresh]

Protocol: Fashion-MNIST at 28 px, one gray channel; a fixed stratified subset of 3,000
training images (one epoch = 46 steps of batch 64, Adam lr 2e-3) and 1,000 test images the
accuracy is measured on. The same search space (`effnet`: timm EfficientNet builder, width /
depth per stage / kernel / block type), the same objectives (accuracy ↑, params ↓: NSGA-II)
and the same sampler seed for both arms; each trial trains for 1 epoch on 1 CPU thread.

* **cold**: every trial starts from its random init.
* **warm**: every trial is grafted from the most similar trained model of its own study
  (`netgraft.similarity`, then `netgraft.transfer` + batch-norm recalibration on 256
  unlabeled training images) and then trained exactly like a cold trial.

Per (arm, seed): best accuracy, mean accuracy over completed trials, and the hypervolume of the
(accuracy, params) front: accuracy ↑ from the chance level 1/classes = 0.1 and log10(params) ↓
normalised between the smallest and the largest network of the space, so the box is
[0.1, 1] × [min, max] and a hypervolume of 1 would be a 100%-accurate smallest network.
Means over seeds and warm − cold differences are printed as a table and written, with every
trial, to ``benchmarks/results/nas_warmstart.json``. The studies stay in
``benchmarks/results/nas_warmstart.db`` (``netgraft report`` draws them); re-running resumes
them (a killed benchmark loses no finished trial), ``--fresh`` starts over.
"""
from __future__ import annotations

import argparse
import itertools
import math
import platform
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from netgraft.nas import SearchConfig, get_space, hypervolume_2d, run_search  # noqa: E402
from netgraft.nas.search import completed, load_data  # noqa: E402

ARMS = ("cold", "warm")


def space_param_range(space, data) -> tuple[int, int]:
    """Smallest and largest parameter count of the (grid-valued) space."""
    grid = {k: getattr(space, k) for k in ("widths", "kernels", "blocks") if hasattr(space, k)}
    lo, hi = space.depths
    counts = []
    for width, kernel, block in itertools.product(grid.get("widths", [None]),
                                                  grid.get("kernels", [None]),
                                                  grid.get("blocks", [None])):
        for depth in (lo, hi):
            params = {"width": width, "kernel": kernel, "block": block,
                      **{f"depth{i}": depth for i in (1, 2, 3)}}
            model = space.build({k: v for k, v in params.items() if v is not None},
                                num_classes=data.num_classes, in_chans=data.in_chans)
            counts.append(sum(p.numel() for p in model.parameters()))
    return min(counts), max(counts)


def summarize(study, pmin: int, pmax: int, ref_accuracy: float) -> dict:
    trials = completed(study)
    accs = [t.user_attrs["accuracy"] for t in trials]
    span = math.log10(pmax) - math.log10(pmin)
    points = [(t.user_attrs["accuracy"], math.log10(t.user_attrs["params"]) - math.log10(pmin))
              for t in trials]
    warm = [t for t in trials if t.user_attrs.get("parent")]
    fails = [t for t in study.trials if t.state.name == "FAIL"]
    return {
        "study": study.study_name, "complete": len(trials), "failed": len(fails),
        "fail_reasons": [t.user_attrs.get("fail_reason") for t in fails],
        "best_accuracy": max(accs) if accs else None,
        "mean_accuracy": statistics.fmean(accs) if accs else None,
        "hypervolume": hypervolume_2d(points, ref_cost=span, ref_accuracy=ref_accuracy),
        "grafted_trials": len(warm),
        "mean_coverage": statistics.fmean(t.user_attrs["coverage"] for t in warm) if warm else None,
        "mean_accuracy_at_0": statistics.fmean(t.user_attrs["accuracy_at_0"] for t in trials)
        if trials else None,
        "mean_trial_seconds": statistics.fmean(t.user_attrs["trial_seconds"] for t in trials)
        if trials else None,
        "trials": [{"number": t.number, "arch": t.user_attrs["arch"],
                    "accuracy": t.user_attrs["accuracy"], "params": t.user_attrs["params"],
                    "accuracy_at_0": t.user_attrs["accuracy_at_0"],
                    "parent_trial": t.user_attrs.get("parent_trial"),
                    "similarity": t.user_attrs.get("similarity"),
                    "coverage": t.user_attrs.get("coverage"),
                    "seconds": t.user_attrs["trial_seconds"]} for t in trials],
    }


class _RandomTrial:
    """Just enough of an Optuna trial to draw a random architecture from a space."""

    def __init__(self, rng):
        self.rng = rng

    def suggest_int(self, name, low, high, **_):
        return self.rng.randint(low, high)

    def suggest_categorical(self, name, choices):
        return self.rng.choice(list(choices))


def estimate(args, data, samples: int = 4) -> float:
    """Seconds the whole benchmark should take, from `samples` measured random trials."""
    import random

    from netgraft.training import evaluate, train

    space = get_space(args.space)
    steps = max(1, round(args.epochs * (len(data.train) // 64)))
    rng, times = random.Random(0), []
    for _ in range(samples):
        params = space.sample(_RandomTrial(rng))
        model = space.build(params, num_classes=data.num_classes, in_chans=data.in_chans)
        start = time.perf_counter()
        train(model, data.train, steps=steps, batch_size=64, lr=2e-3)
        evaluate(model, data.test)
        evaluate(model, data.test)
        times.append(time.perf_counter() - start + 0.5)  # + metrics, storage, pool writes
        print(f"  {space.describe(params)}: {times[-1]:.1f} s", flush=True)
    per_trial = statistics.fmean(times)
    runs = 2 * args.seeds
    total = per_trial * args.trials * runs + 0.5 * args.trials * args.seeds  # + grafting
    print(f"estimate: a random trial ({steps} steps) takes {per_trial:.1f} s on "
          f"{torch.get_num_threads()} thread(s); {runs} searches × {args.trials} trials ≈ "
          f"{total / 60:.1f} min (more if the search favours large networks or the machine "
          f"is busy)")
    return total


def check_resumable(args, cfg: SearchConfig) -> None:
    """Refuse to resume a benchmark study that was run with other settings."""
    import optuna

    url = f"sqlite:///{Path(args.storage).resolve()}"
    if not Path(args.storage).exists():
        return
    names = {s.study_name for s in optuna.get_all_study_summaries(storage=url)}
    if cfg.study_name not in names:
        return
    old = optuna.load_study(study_name=cfg.study_name, storage=url).user_attrs.get("config", {})
    for key in ("image_size", "train_size", "test_size", "epochs", "seed", "lr", "min_similarity"):
        if key in old and old[key] != getattr(cfg, key):
            raise SystemExit(f"study {cfg.study_name} in {args.storage} was run with {key}="
                             f"{old[key]}, not {getattr(cfg, key)}: add --fresh to start over")


def table(result: dict) -> str:
    rows = ["| arm | seed | complete | best acc % | mean acc % | hypervolume | mean acc@0 % | "
            "grafted | s/trial |", "|---|---|---|---|---|---|---|---|---|"]
    f = lambda v, k=100, d=1: "–" if v is None else f"{k * v:.{d}f}"  # noqa: E731
    for arm in ARMS:
        for seed, s in sorted(result["runs"][arm].items()):
            rows.append(f"| {arm} | {seed} | {s['complete']} | {f(s['best_accuracy'])} | "
                        f"{f(s['mean_accuracy'])} | {f(s['hypervolume'], 1, 4)} | "
                        f"{f(s['mean_accuracy_at_0'])} | {s['grafted_trials']} | "
                        f"{f(s['mean_trial_seconds'], 1)} |")
    for arm in ARMS:
        m = result["mean"][arm]
        rows.append(f"| **{arm}** | mean | | **{f(m['best_accuracy'])}** | "
                    f"**{f(m['mean_accuracy'])}** | **{f(m['hypervolume'], 1, 4)}** | | | |")
    d = result["warm_minus_cold"]
    rows.append(f"| warm − cold | | | {d['best_accuracy'] * 100:+.1f} pts | "
                f"{d['mean_accuracy'] * 100:+.1f} pts | {d['hypervolume']:+.4f} | | | |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--space", default="effnet")
    p.add_argument("--objectives", default="accuracy,params")
    p.add_argument("--train-size", type=int, default=3000)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-similarity", type=float, default=0.5)
    p.add_argument("--storage", default=str(ROOT / "benchmarks/results/nas_warmstart.db"))
    p.add_argument("--pool", default=str(Path("~/.cache/netgraft/nas_warmstart").expanduser()),
                   help="weight pool directory (one, shared by the studies; each warm study "
                        "grafts only from its own trials)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/nas_warmstart.json"))
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 6 trials, 1 seed, 600 training images, separate files")
    p.add_argument("--estimate", action="store_true", help="print the expected run time and exit")
    p.add_argument("--fresh", action="store_true", help="delete the benchmark's studies and pool first")
    args = p.parse_args(argv)
    if args.quick:
        args.trials, args.seeds, args.train_size, args.test_size = 6, 1, 600, 300
        args.storage = args.storage.replace(".db", "_quick.db")
        args.out = args.out.replace(".json", "_quick.json")
        args.pool = args.pool.rstrip("/") + "_quick"
    torch.set_num_threads(args.threads)
    import optuna

    def cfg_for(arm: str, seed: int) -> SearchConfig:
        return SearchConfig(dataset=args.dataset, space=args.space, objectives=args.objectives,
                            trials=args.trials, warm=arm == "warm", storage=args.storage,
                            study=f"{args.space}-{arm}-s{seed}", pool=args.pool, seed=seed,
                            image_size=args.image_size, train_size=args.train_size,
                            test_size=args.test_size, epochs=args.epochs, threads=args.threads,
                            min_similarity=args.min_similarity)

    data = load_data(cfg_for("cold", 0))
    if args.estimate:
        estimate(args, data)
        return 0
    if args.fresh:
        url = f"sqlite:///{Path(args.storage).resolve()}"
        if Path(args.storage).exists():
            for s in optuna.get_all_study_summaries(storage=url):
                if s.study_name.startswith(f"{args.space}-") and s.study_name.rsplit("-s", 1)[0] \
                        in (f"{args.space}-cold", f"{args.space}-warm"):
                    optuna.delete_study(study_name=s.study_name, storage=url)
        shutil.rmtree(args.pool, ignore_errors=True)
    space = get_space(args.space)
    pmin, pmax = space_param_range(space, data)
    wall = time.perf_counter()
    result = {"benchmark": "nas_warmstart", "version": 1,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "python": platform.python_version(), "torch": torch.__version__,
                          "optuna": optuna.__version__, "threads": args.threads},
              "config": {k: v for k, v in vars(args).items() if k not in ("estimate",)},
              "space_params": [pmin, pmax], "ref_accuracy": 1 / data.num_classes,
              "runs": {arm: {} for arm in ARMS}}
    for seed in range(args.seeds):
        for arm in ARMS:
            cfg = cfg_for(arm, seed)
            check_resumable(args, cfg)
            start = time.perf_counter()
            print(f"[{arm} seed {seed}] study {cfg.study_name}: {args.trials} trials ...", flush=True)
            res = run_search(cfg, data=data)
            summary = summarize(res.study, pmin, pmax, 1 / data.num_classes)
            summary["seconds"] = round(time.perf_counter() - start, 1)
            result["runs"][arm][str(seed)] = summary
            print(f"  best {100 * summary['best_accuracy']:.1f}%, mean "
                  f"{100 * summary['mean_accuracy']:.1f}%, hypervolume "
                  f"{summary['hypervolume']:.4f}, {summary['seconds']:.0f} s", flush=True)
    keys = ("best_accuracy", "mean_accuracy", "hypervolume")
    result["mean"] = {arm: {k: statistics.fmean(s[k] for s in result["runs"][arm].values())
                            for k in keys} for arm in ARMS}
    result["warm_minus_cold"] = {k: result["mean"]["warm"][k] - result["mean"]["cold"][k]
                                 for k in keys}
    result["warm_wins"] = {k: sum(result["runs"]["warm"][s][k] > result["runs"]["cold"][s][k]
                                  for s in result["runs"]["warm"]) for k in keys}
    result["seconds"] = round(time.perf_counter() - wall, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from netgraft.checkpoint import save_json
    save_json(result, out)
    print()
    print(table(result))
    print(f"\nwarm beats cold on seeds: {result['warm_wins']} of {args.seeds}; "
          f"{result['seconds'] / 60:.1f} min; wrote {out} (studies in {args.storage})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
