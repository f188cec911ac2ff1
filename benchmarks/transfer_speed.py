"""How long does one transfer take? (tracing both models + matching + writing every tensor)

    python benchmarks/transfer_speed.py [--repeats 5] [--json results/transfer_speed.json]

Prints a table (median of repeats, after one warm-up) and writes JSON. The models are built
once outside the timing: the figure is what `netgraft.transfer(source, target)` costs.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import timm
import torch

import netgraft
from netgraft.baselines import iatransfer_transfer

PAIRS = [
    ("resnet50", "efficientnet_b0"),
    ("resnet18", "resnet34"),
    ("efficientnet_b0", "efficientnet_b2"),
    ("convnext_atto", "convnext_femto"),
    ("vit_tiny_patch16_224", "vit_small_patch16_224"),
]


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default="benchmarks/results/transfer_speed.json")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for src_name, dst_name in PAIRS:
        src, dst = timm.create_model(src_name), timm.create_model(dst_name)
        row = {"source": src_name, "target": dst_name}
        for method in ("graft", "dpiat"):
            row[f"{method}_s"] = timed(lambda: netgraft.transfer(src, dst, method=method), args.repeats)
        try:
            row["iatransfer_s"] = timed(lambda: iatransfer_transfer(src, dst), args.repeats)
        except ImportError:
            row["iatransfer_s"] = None
        rows.append(row)
        iat = f"{row['iatransfer_s']:.3f}" if row["iatransfer_s"] is not None else "n/a"
        print(f"{src_name:>22} → {dst_name:<22} graft {row['graft_s']:.3f} s  "
              f"dpiat {row['dpiat_s']:.3f} s  iatransfer {iat} s", flush=True)
    out = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, "
           f"{torch.get_num_threads()} threads, torch {torch.__version__}",
           "python": sys.version.split()[0], "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print("\n| source | target | netgraft (graft) | netgraft (dpiat) | iatransfer |\n|---|---|---|---|---|")
    for r in rows:
        iat = f"{r['iatransfer_s']:.3f} s" if r["iatransfer_s"] is not None else "n/a"
        print(f"| {r['source']} | {r['target']} | {r['graft_s']:.3f} s | {r['dpiat_s']:.3f} s | {iat} |")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
