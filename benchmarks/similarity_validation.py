"""Does architecture similarity predict how much grafting helps?

Reads a transfer-quality result (several sources per target, inits ``random`` and ``graft``),
computes every similarity score for each (source, target) pair from the architectures alone,
and reports how well each score predicts the accuracy gain of grafting over random init:
Spearman's ρ over all pairs, and the per-target top-1 hit rate (is the best-scored source the
one that helped most?).

    python benchmarks/similarity_validation.py benchmarks/results/similarity_pairs.json

``--probe N`` adds the data-driven second stage (``netgraft.probe``) as three more scores, each
measured on N labelled training images with the run's trained sources: ``finetune`` (gain of a
``--probe-steps``-step fine-tune of the graft over the random target's), ``linear`` (gain of a
Head2Toe-style linear probe on pooled block features) and ``cka`` (linear CKA, source vs
grafted target). Besides ρ over all pairs it reports the mean per-target ρ (ranking the
sources of one target, which is what ``netgraft rank`` does).

The result JSON is produced by the transfer-quality benchmark, e.g.::

    python benchmarks/transfer_quality.py --pairs "$(cat benchmarks/similarity_pairs.txt)" \
        --inits random,graft --seeds 2 --train-size 6000 --low-data-size 0 --epochs 1 \
        --out /tmp/sim && cp /tmp/sim/transfer_quality.json benchmarks/results/similarity_pairs.json
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from netgraft.similarity import SCORES, score_pair  # noqa: E402

#: the sources and targets of the validation grid (5 × 5 = 25 pairs)
SOURCES = ("resnet18", "efficientnet_b0", "mobilenetv3_large_100", "regnetx_004", "convnext_atto")
TARGETS = ("resnet34", "efficientnet_b1", "mobilenetv3_large_075", "regnetx_002", "convnext_femto")
#: point accuracies after 50 steps / one epoch, and the mean accuracy over the evaluations up to
#: those budgets (the area under the learning curve: less sensitive to one noisy evaluation)
BUDGETS = ("step_50", "epoch_1", "mean_50", "mean_epoch_1")


def pair_specs(sources: Sequence[str] = SOURCES, targets: Sequence[str] = TARGETS) -> list[str]:
    """``source:target[:cross-family]`` specs for the transfer-quality benchmark's --pairs."""
    from netgraft.bench import PAIRS

    known = {p.key for p in PAIRS}
    return [f"{s}:{t}" if f"{s}:{t}" in known else f"{s}:{t}:cross-family"
            for t in targets for s in sources]


def gains(result: dict[str, Any], init: str = "graft", regime: str = "main") -> list[dict[str, Any]]:
    """Per pair: accuracy of ``init`` minus random init's at each budget (seed means)."""
    rows = []
    for p in result["metrics"][regime]["pairs"]:
        inits = p["inits"]
        if init not in inits or "random" not in inits:
            continue
        acc, rnd = inits[init]["accuracy"], inits["random"]["accuracy"]
        row = {"source": p["source"], "target": p["target"], "relation": p["relation"]}
        for b in BUDGETS:
            if acc.get(b) is not None and rnd.get(b) is not None:
                row[f"gain_{b}"] = acc[b] - rnd[b]
                row[f"acc_{b}"] = acc[b]
                row[f"random_{b}"] = rnd[b]
        rows.append(row)
    _curve_means(result, rows, init, regime)
    return rows


def _curve_means(result: dict[str, Any], rows: list[dict], init: str, regime: str) -> None:
    """Add gain_mean_50 / gain_mean_epoch_1: seed-mean of the mean accuracy over all
    evaluations up to the budget, ``init`` minus random."""
    epoch = result["metrics"][regime]["budgets"]["epoch_1"]
    curves: dict[tuple, list[dict]] = defaultdict(list)
    for run in result["runs"]:
        if run.get("regime") == regime and run.get("history"):
            curves[(run["source"], run["target"], run["init"])].append(dict(run["history"]))

    def mean_acc(key: tuple, upto: int) -> float | None:
        per_seed = [[a for s, a in h.items() if s <= upto] for h in curves.get(key, [])]
        per_seed = [sum(v) / len(v) for v in per_seed if v]
        return sum(per_seed) / len(per_seed) if per_seed else None

    for row in rows:
        for name, upto in (("mean_50", 50), ("mean_epoch_1", epoch)):
            a = mean_acc((row["source"], row["target"], init), upto)
            b = mean_acc((row["source"], row["target"], "random"), upto)
            if a is not None and b is not None:
                row[f"gain_{name}"] = a - b


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    if len(x) < 3:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def top1_hit_rate(rows: Sequence[dict], score: str, gain: str) -> tuple[float, int]:
    """Fraction of targets whose highest-scored source is also the one with the largest gain."""
    by_target: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_target[r["target"]].append(r)
    hits = 0
    for group in by_target.values():
        best_score = max(group, key=lambda r: r[score])
        best_gain = max(group, key=lambda r: r[gain])
        hits += best_score is best_gain
    return (hits / len(by_target) if by_target else float("nan")), len(by_target)


def evaluate_scores(rows: list[dict], scores: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for s in scores:
        out[s] = {}
        for b in BUDGETS:
            g = f"gain_{b}"
            use = [r for r in rows if g in r]
            rate, n = top1_hit_rate(use, s, g)
            per_target = [spearman([r[s] for r in group], [r[g] for r in group])
                          for group in _by_target(use).values()]
            out[s][b] = {"spearman": spearman([r[s] for r in use], [r[g] for r in use]),
                         "per_target": float(np.nanmean(per_target)) if per_target else float("nan"),
                         "top1": rate, "targets": n, "pairs": len(use)}
    return out


def _by_target(rows: Sequence[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["target"]].append(r)
    return groups


#: data-driven scores added by --probe (names in the result rows)
PROBE_SCORES = ("finetune", "linear", "cka")


def probe_rows(rows: list[dict], result: dict[str, Any], n: int, steps: int,
               log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Score every pair with the data-driven probe (netgraft.probe) on n labelled images."""
    import time

    from netgraft.checkpoint import load_weights
    from netgraft.data import load_dataset
    from netgraft.models import create_model
    from netgraft.probe import probe_sources

    cfg = result["config"]
    data = load_dataset(cfg["dataset"], "train", size=cfg["image_size"],
                        in_chans=cfg["in_chans"]).subset(n, seed=1)
    sources = {}
    for name in dict.fromkeys(r["source"] for r in rows):
        model = create_model(name, num_classes=10, in_chans=cfg["in_chans"])
        load_weights(model, result["sources"][name]["path"], what=f"trained source {name}")
        sources[name] = model
    start = time.perf_counter()
    for target, group in _by_target(rows).items():
        def make_target(target=target):
            torch.manual_seed(0)
            return create_model(target, num_classes=10, in_chans=cfg["in_chans"])

        probed = probe_sources([(r["source"], sources[r["source"]]) for r in group], make_target,
                               data, limit=None, target_name=target, steps=steps)
        for r, p in zip(group, probed):
            r.update(finetune=p.gain, linear=p.accuracy - p.baseline, cka=p.cka,
                     probe=p.to_dict())
            log(f"  {r['source']:>22} → {target:<22} finetune={p.gain:+.3f} "
                f"linear={p.accuracy - p.baseline:+.3f} cka={p.cka:.3f} ({p.seconds:.1f} s)")
    return {"images": n, "steps": steps, "seconds": time.perf_counter() - start,
            "sample": "stratified train subset, seed 1"}


def _architecture(name: str, cfg: dict[str, Any], cache: dict):
    if name not in cache:
        from netgraft.models import create_model
        from netgraft.trace import trace

        model = create_model(name, num_classes=10, in_chans=cfg["in_chans"])
        x = torch.randn(1, cfg["in_chans"], cfg["image_size"], cfg["image_size"])
        cache[name] = trace(model, x, name=name)
    return cache[name]


def score_rows(rows: list[dict], cfg: dict[str, Any], scores: Sequence[str],
               log: Callable[[str], None] = lambda s: None) -> None:
    archs: dict[str, Any] = {}
    for r in rows:
        a, b = _architecture(r["source"], cfg, archs), _architecture(r["target"], cfg, archs)
        for s in scores:
            r[s] = score_pair(a, b, s)
        log(f"  {r['source']:>22} → {r['target']:<22} " +
            " ".join(f"{s}={r[s]:.3f}" for s in scores))


def to_markdown(rows: list[dict], table: dict[str, dict], scores: Sequence[str]) -> str:
    labels = {"step_50": "@50 steps", "epoch_1": "@epoch 1", "mean_50": "mean over 50 steps",
              "mean_epoch_1": "mean over epoch 1"}
    lines = ["Spearman ρ between score and accuracy gain over random init: over all pairs / mean "
             "per target (top-1 hit rate per target)",
             "", "| score | " + " | ".join(labels[b] for b in BUDGETS) + " |",
             "|---|" + "---|" * len(BUDGETS)]
    for s in scores:
        lines.append(f"| {s} | " + " | ".join(
            f"{table[s][b]['spearman']:+.2f} / {table[s][b]['per_target']:+.2f} "
            f"({table[s][b]['top1']:.0%})" for b in BUDGETS) + " |")
    lines += ["", "| source → target | " + " | ".join(scores) + " | " +
              " | ".join(f"gain {labels[b]}" for b in BUDGETS) + " |",
              "|---|" + "---|" * (len(scores) + len(BUDGETS))]
    for r in sorted(rows, key=lambda r: (r["target"], -r.get("gain_mean_50", 0))):
        lines.append(f"| {r['source']} → {r['target']} | " +
                     " | ".join(f"{r[s]:.3f}" for s in scores) + " | " +
                     " | ".join(f"{100 * r.get('gain_' + b, float('nan')):+.1f}" for b in BUDGETS) + " |")
    return "\n".join(lines)


PROTOCOL_KEYS = ("dataset", "image_size", "in_chans", "regimes", "test_size", "epochs",
                 "batch_size", "lr", "optimizer", "seeds", "source_steps")


def merge_results(results: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Several transfer-quality runs of one protocol as one (their pairs side by side)."""
    first = copy.deepcopy(results[0])
    for other, name in zip(results[1:], names[1:]):
        differ = [k for k in PROTOCOL_KEYS if other["config"].get(k) != first["config"].get(k)]
        if differ:
            raise SystemExit(f"{name}: not the protocol of {names[0]} ({', '.join(differ)} "
                             f"differ); validate runs of one protocol together")
        first["runs"] += other["runs"]
        first["config"]["pairs"] += other["config"]["pairs"]
        first["sources"].update(other["sources"])
        for regime, m in other["metrics"].items():
            first["metrics"][regime]["pairs"] += m["pairs"]
    return first


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("result", nargs="*",
                        default=[str(ROOT / "benchmarks/results/similarity_pairs.json")],
                        help="transfer-quality JSON(s) with several sources per target (runs of "
                             "one protocol are pooled)")
    parser.add_argument("--init", default="graft", help="whose gain to predict (default graft)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/similarity_validation.json"))
    parser.add_argument("--probe", type=int, default=0, metavar="N",
                        help="also score the data-driven probe on N labelled images (e.g. 1000)")
    parser.add_argument("--probe-steps", type=int, default=20, help="fine-tune steps of the probe")
    parser.add_argument("--pairs", action="store_true",
                        help="print the --pairs argument for the transfer-quality run and exit")
    args = parser.parse_args(argv)
    if args.pairs:
        print(",".join(pair_specs()))
        return 0
    torch.set_num_threads(1)
    result = merge_results([json.loads(Path(f).read_text()) for f in args.result], args.result)
    rows = gains(result, args.init)
    if not rows:
        print(f"{', '.join(args.result)}: no pair has both 'random' and '{args.init}' runs", file=sys.stderr)
        return 2
    scores = tuple(SCORES)
    print(f"{len(rows)} pairs, {len({r['target'] for r in rows})} targets; scores: {', '.join(scores)}")
    score_rows(rows, result["config"], scores, print)
    probe_info = None
    if args.probe:
        print(f"probe: {args.probe} labelled images, {args.probe_steps} fine-tune steps")
        probe_info = probe_rows(rows, result, args.probe, args.probe_steps, print)
        scores += PROBE_SCORES
    table = evaluate_scores(rows, scores)
    md = to_markdown(rows, table, scores)
    print("\n" + md)
    out = Path(args.out)
    payload = {"benchmark": "similarity_validation", "date": datetime.now(timezone.utc).isoformat(
        timespec="seconds"), "source_result": [str(f) for f in args.result], "init": args.init,
        "probe": probe_info, "summary": table, "pairs": rows}
    from netgraft.checkpoint import atomic_write
    atomic_write(out, lambda p: Path(p).write_text(json.dumps(payload, indent=1)))
    atomic_write(out.with_suffix(".md"), lambda p: Path(p).write_text(md + "\n"))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
