"""Which channels should a narrower target keep? Width-shrink pairs outside the main benchmark.

    python benchmarks/shrink_widths.py [--seeds 3] [--json benchmarks/results/shrink_widths.json]

A trained source (the transfer-quality benchmark's, cached) is grafted onto the *same*
architecture at a smaller width — timm's EfficientNet builder at ``channel_multiplier=0.75``,
timm's ResNet-18 with stage widths (48, 96, 192, 384), optionally ConvNeXt-atto at dims ×0.8 /
×0.6 (``--pairs convnext80,convnext60``: LayerNorm networks, which ``"auto"`` leaves to
consecutive selection) — so that only the channel selection
differs between the inits: `dpiat` (the authors' centre crop), ``shrink="consecutive"`` (the
first channels), ``"norm_scale"`` (largest batch-norm scales) and the default ``"auto"``.
Each target trains one epoch (3,000 Fashion-MNIST images, Adam 1e-3, batch 64, the benchmark's
recipe) with PreciseBN evaluation on 1,000 test images at steps 0, 25 and 46. Prints a table
(mean over seeds, and per seed the default minus `dpiat` at epoch 1) and writes JSON.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from pathlib import Path

import torch

import netgraft
from netgraft.bench import Config, get_source, save_result
from netgraft.data import load_dataset
from netgraft.training import train

STEPS = (0, 25, 46)  # one epoch of 3,000 images at batch 64
INITS = {"random": None, "dpiat": {"method": "dpiat"}, "consecutive": {"shrink": "consecutive"},
         "norm_scale": {"shrink": "norm_scale"}, "auto (default)": {}}


def efficientnet_075(**kw):
    from timm.models.efficientnet import _gen_efficientnet
    return _gen_efficientnet("efficientnet_b0", channel_multiplier=0.75, **kw)


def resnet18_075(**kw):
    from timm.models.resnet import BasicBlock, ResNet
    return ResNet(BasicBlock, [2, 2, 2, 2], channels=(48, 96, 192, 384), **kw)


def convnext_080(**kw):
    from timm.models.convnext import ConvNeXt
    return ConvNeXt(depths=(2, 2, 6, 2), dims=(32, 64, 128, 256), conv_mlp=True, **kw)


def convnext_060(**kw):
    from timm.models.convnext import ConvNeXt
    return ConvNeXt(depths=(2, 2, 6, 2), dims=(24, 48, 96, 192), conv_mlp=True, **kw)


PAIRS = {"efficientnet": ("efficientnet_b0", "efficientnet_b0 ×0.75 width", efficientnet_075),
         "resnet": ("resnet18", "resnet18 ×0.75 width", resnet18_075),
         "convnext80": ("convnext_atto", "convnext_atto ×0.8 width", convnext_080),
         "convnext60": ("convnext_atto", "convnext_atto ×0.6 width", convnext_060)}
DEFAULT_PAIRS = "efficientnet,resnet"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pairs", default=DEFAULT_PAIRS,
                        help=f"comma-separated, of {', '.join(PAIRS)} (default {DEFAULT_PAIRS})")
    parser.add_argument("--json", default="benchmarks/results/shrink_widths.json")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache/netgraft/bench"),
                        help="where the benchmark's trained sources are cached")
    args = parser.parse_args(argv)
    unknown = [p for p in args.pairs.split(",") if p not in PAIRS]
    if unknown:
        parser.error(f"unknown pair(s) {unknown}: choose from {', '.join(PAIRS)}")
    pairs = [PAIRS[p] for p in args.pairs.split(",")]
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=netgraft.NetgraftWarning)
    cfg, device, start = Config(), torch.device("cpu"), time.perf_counter()
    train_full = load_dataset(cfg.dataset, "train", size=cfg.image_size, in_chans=cfg.in_chans)
    test_full = load_dataset(cfg.dataset, "test", size=cfg.image_size, in_chans=cfg.in_chans)
    test, train_set = test_full.subset(1000, seed=0), train_full.subset(3000, seed=0)
    rows = []
    for src_name, label, build in pairs:
        source, _ = get_source(src_name, cfg, Path(args.cache), train_full, test_full, device,
                               lambda msg: print(msg, file=sys.stderr), False)
        for seed in range(args.seeds):
            torch.manual_seed(1000 + seed)
            base = build(num_classes=10, in_chans=cfg.in_chans)
            for init, kwargs in INITS.items():
                model, shrink = copy.deepcopy(base), None
                if kwargs is not None:
                    shrink = netgraft.transfer(source, model, **kwargs).shrink
                history = dict(train(model, train_set, steps=STEPS[-1], eval_at=list(STEPS),
                                     eval_data=test, seed=seed, precise_bn=512).history)
                rows.append({"source": src_name, "target": label, "init": init, "seed": seed,
                             "shrink": shrink,
                             "accuracy": {str(s): round(history[s], 4) for s in STEPS}})
                print(f"{src_name} → {label} seed {seed} {init:15s} "
                      + " / ".join(f"{100 * history[s]:.1f}" for s in STEPS), flush=True)
    lines = ["| source → target | init | step 0 | step 25 | epoch 1 | epoch 1 − dpiat per seed |",
             "|---|---|---|---|---|---|"]
    for src_name, label, _ in pairs:
        mine = [r for r in rows if r["target"] == label]
        dpiat = {r["seed"]: r["accuracy"][str(STEPS[-1])] for r in mine if r["init"] == "dpiat"}
        for init in INITS:
            got = [r for r in mine if r["init"] == init]
            mean = [100 * sum(r["accuracy"][str(s)] for r in got) / len(got) for s in STEPS]
            diffs = ", ".join(f"{100 * (r['accuracy'][str(STEPS[-1])] - dpiat[r['seed']]):+.1f}"
                              for r in got) if init != "dpiat" else ""
            used = f" ({got[0]['shrink']})" if init == "auto (default)" else ""
            lines.append(f"| {src_name} → {label} | {init}{used} | "
                         + " | ".join(f"{m:.1f}" for m in mean) + f" | {diffs} |")
    table = "\n".join(lines)
    print("\n" + table)
    save_result(args.json, "shrink_widths", {"seeds": args.seeds, "steps": list(STEPS),
                                              "runs": rows, "table": table}, start=start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
