"""Robustness and coverage over the timm zoo: graft vs dpiat on cross-family pairs.

    python benchmarks/coverage_sweep.py [--limit N] [--json benchmarks/results/coverage_sweep.json]

Every model of `benchmarks/timm_zoo.py` is grafted from the model half a zoo away (another
family), with the target's input channels cycling through 3, 1 and 13. For each pair and each
method the script records whether the transfer worked, the report's coverage, and the fraction
of target elements the transfer actually changed (measured, not reported). The test
`tests/test_timm_sweep.py` runs the same pairs and asserts on them.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import timm
import torch
import warnings

warnings.filterwarnings("ignore", category=UserWarning, module="timm")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import netgraft  # noqa: E402
from benchmarks.timm_zoo import FAMILY, SWEEP_INPUT, SWEEP_MODELS  # noqa: E402

IN_CHANS = (3, 1, 13)
METHODS = ("graft", "dpiat")


@dataclass
class Pair:
    source: str
    target: str
    in_chans: int


@dataclass
class Outcome:
    source: str
    target: str
    in_chans: int
    method: str
    status: str  # "ok" | "unsupported" | "failed"
    coverage: float = 0.0
    changed: float = 0.0  # fraction of target parameter elements whose value changed
    seconds: float = 0.0
    finite: bool = True
    convolutional: bool = False
    error: str = ""


def sweep_pairs(models: int | None = None) -> list[Pair]:
    """Each model as a target once, its source half the zoo away in family order.

    With `models`, a sample of that many names that still holds every family (the first model
    of each family, then evenly spaced others)."""
    names = sorted(SWEEP_MODELS, key=lambda n: (FAMILY[n], n))
    if models is not None and models < len(names):
        firsts = {n for n in names if n == next(m for m in names if FAMILY[m] == FAMILY[n])}
        rest = [n for n in names if n not in firsts]
        extra = max(models - len(firsts), 0)
        picked = firsts | {rest[i * len(rest) // extra] for i in range(extra)} if extra else firsts
        names = [n for n in names if n in picked]
    half = len(names) // 2
    return [Pair(source=names[(i + half) % len(names)], target=name,
                 in_chans=IN_CHANS[i % len(IN_CHANS)]) for i, name in enumerate(names)]


def _build(name: str, in_chans: int) -> tuple[torch.nn.Module, torch.Tensor]:
    c, h, w = SWEEP_INPUT[name]
    if in_chans != c:
        try:  # a few timm models accept in_chans but only work with 3 channels
            model = timm.create_model(name, pretrained=False, num_classes=10, in_chans=in_chans,
                                      **SWEEP_MODELS[name]).eval()
            x = torch.randn(2, in_chans, h, w)
            with torch.no_grad():
                model(x)
            return model, x
        except Exception:
            pass
    model = timm.create_model(name, pretrained=False, num_classes=10, **SWEEP_MODELS[name])
    return model.eval(), torch.randn(2, c, h, w)


def _has_conv(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1) for m in model.modules())


def run_pair(pair: Pair) -> list[Outcome]:
    """One Outcome per method; both start from the same target init."""
    torch.manual_seed(0)
    source, src_x = _build(pair.source, 3)
    target, dst_x = _build(pair.target, pair.in_chans)
    init = {k: v.clone() for k, v in target.state_dict().items()}
    outcomes = []
    for method in METHODS:
        target.load_state_dict(init)
        outcomes.append(_run_method(pair, method, source, src_x, target, dst_x))
    return outcomes


def _run_method(pair: Pair, method: str, source, src_x, target, dst_x) -> Outcome:
    out = Outcome(pair.source, pair.target, dst_x.shape[1], method, "ok",
                  convolutional=_has_conv(source) and _has_conv(target))
    before = {k: v.clone() for k, v in target.named_parameters()}
    try:
        # min_score=0: the sweep measures how far matching and adaptation reach, so weak
        # matches of distant pairs are transferred too (the default leaves them at init)
        options = {"min_score": 0} if method != "dpiat" else {}
        report = netgraft.transfer(source, target, method=method, example_input=dst_x[:1],
                                   source_input=src_x[:1], **options)
    except netgraft.UnsupportedModelError as exc:
        out.status, out.error = "unsupported", str(exc)
        return out
    except Exception as exc:  # anything else is a bug the sweep must surface
        out.status, out.error = "failed", f"{type(exc).__name__}: {exc}"
        return out
    changed = sum(int((before[k] != v).sum()) for k, v in target.named_parameters())
    total = sum(v.numel() for v in before.values())
    with torch.no_grad():
        y = target(dst_x)
    out.coverage, out.seconds = report.coverage, report.seconds
    out.changed = changed / total
    out.finite = bool(torch.isfinite(y).all())
    return out


def summarise(outcomes: list[Outcome]) -> dict:
    summary = {}
    for method in METHODS:
        rows = [o for o in outcomes if o.method == method]
        ok = [o for o in rows if o.status == "ok"]
        summary[method] = {
            "pairs": len(rows), "ok": len(ok),
            "unsupported": sum(o.status == "unsupported" for o in rows),
            "failed": sum(o.status == "failed" for o in rows),
            "nonfinite": sum(not o.finite for o in ok),
            "mean_changed": statistics.fmean(o.changed for o in ok) if ok else math.nan,
            "mean_coverage": statistics.fmean(o.coverage for o in ok) if ok else math.nan,
            "median_seconds": statistics.median(o.seconds for o in ok) if ok else math.nan,
        }
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="only the first N pairs")
    parser.add_argument("--models", type=int, help="a sample of N models covering every family")
    parser.add_argument("--json", default="benchmarks/results/coverage_sweep.json")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pairs = sweep_pairs(args.models)[: args.limit]
    outcomes = []
    start = time.perf_counter()
    for i, pair in enumerate(pairs):
        outcomes += run_pair(pair)
        g, d = outcomes[-2], outcomes[-1]
        print(f"[{i + 1:3d}/{len(pairs)}] {pair.source:>28} → {pair.target:<28} in={g.in_chans:<2} "
              f"graft {g.status} {g.changed:6.1%}  dpiat {d.status} {d.changed:6.1%}", flush=True)
    summary = summarise(outcomes)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "date": date.today().isoformat(), "machine": platform.machine(),
        "torch": torch.__version__, "timm": timm.__version__,
        "seconds": time.perf_counter() - start, "summary": summary,
        "outcomes": [asdict(o) for o in outcomes]}, indent=1))
    print("\n| method | pairs | ok | unsupported | failed | mean changed | mean coverage |")
    print("|---|---|---|---|---|---|---|")
    for method, s in summary.items():
        print(f"| {method} | {s['pairs']} | {s['ok']} | {s['unsupported']} | {s['failed']} | "
              f"{s['mean_changed']:.1%} | {s['mean_coverage']:.1%} |")
    for o in outcomes:
        if o.status != "ok":
            print(f"{o.method}: {o.source} → {o.target}: {o.status}: {o.error[:200]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
