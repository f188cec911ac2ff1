"""A ViT grafted onto ViTs of another patch size: FlexiViT's resampling vs cropping the kernel.

    python benchmarks/patch_resize.py [--seeds 1] [--json benchmarks/results/patch_resize.json]

The source is the transfer-quality benchmark's trained vit_tiny (6 blocks, 8-pixel patches,
32-pixel Fashion-MNIST; cached, or trained in ~3 min). Targets: the same ViT with 16-pixel
patches on 64-pixel images (the same 4×4 token grid: FlexiViT's setting), with 4-pixel patches
at 32 px (8×8 tokens, position grid resampled) and with 16-pixel patches at 32 px (2×2 tokens).
Inits: random; the default graft, whose patch embedding is resampled by timm's pseudo-inverse
`resample_patch_embed`; the same graft with the patch embedding's kernel centre-cropped or
zero-padded (the rule for every other conv, and this one's before 2026-11-26); `dpiat`. Each
target trains one epoch (3,000 images, Adam 1e-3, batch 64, the benchmark's recipe), evaluated
on 1,000 test images at steps 0, 25 and 46. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from pathlib import Path
from unittest import mock

import torch

import netgraft
from netgraft import adapt
from netgraft.bench import Config, get_source, save_result
from netgraft.data import load_dataset
from netgraft.models import create_model
from netgraft.training import train

STEPS = (0, 25, 46)  # one epoch of 3,000 images at batch 64
SOURCE = "vit_tiny_patch16_224(img_size=32,patch_size=8,depth=6)"
#: label → (target spec, image size)
TARGETS = {
    "16-px patches, 64 px (4×4 tokens)": ("vit_tiny_patch16_224(img_size=64,patch_size=16,depth=6)", 64),
    "4-px patches, 32 px (8×8 tokens)": ("vit_tiny_patch16_224(img_size=32,patch_size=4,depth=6)", 32),
    "16-px patches, 32 px (2×2 tokens)": ("vit_tiny_patch16_224(img_size=32,patch_size=16,depth=6)", 32),
}
INITS = ("random", "graft (resampled)", "graft, kernel cropped/padded", "dpiat")


def graft(source, target, init: str) -> None:
    if init == "random":
        return
    if init == "dpiat":
        netgraft.transfer(source, target, method="dpiat")
    elif init == "graft, kernel cropped/padded":  # the patch embedding treated as any conv
        with mock.patch.object(adapt, "is_patchify", lambda layer: False):
            netgraft.transfer(source, target)
    else:
        netgraft.transfer(source, target)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--json", default="benchmarks/results/patch_resize.json")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache/netgraft/bench"),
                        help="where the benchmark's trained sources are cached")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=netgraft.NetgraftWarning)
    cfg, device, start = Config(), torch.device("cpu"), time.perf_counter()
    data = {}
    for size in sorted({size for _, size in TARGETS.values()}):
        train_full = load_dataset(cfg.dataset, "train", size=size, in_chans=cfg.in_chans)
        test_full = load_dataset(cfg.dataset, "test", size=size, in_chans=cfg.in_chans)
        data[size] = (train_full, test_full)
    source, info = get_source(SOURCE, cfg, Path(args.cache), *data[cfg.image_size], device,
                              lambda msg: print(msg, file=sys.stderr), False)
    rows = []
    for label, (spec, size) in TARGETS.items():
        train_full, test_full = data[size]
        test, train_set = test_full.subset(1000, seed=0), train_full.subset(3000, seed=0)
        for seed in range(args.seeds):
            torch.manual_seed(1000 + seed)
            base = create_model(spec, num_classes=10, in_chans=cfg.in_chans)
            for init in INITS:
                model = copy.deepcopy(base)
                graft(source, model, init)
                history = dict(train(model, train_set, steps=STEPS[-1], eval_at=list(STEPS),
                                     eval_data=test, seed=seed).history)
                rows.append({"target": label, "spec": spec, "init": init, "seed": seed,
                             "accuracy": {str(s): round(history[s], 4) for s in STEPS}})
                print(f"{label:36s} seed {seed} {init:30s} "
                      + " / ".join(f"{100 * history[s]:.1f}" for s in STEPS), flush=True)
    lines = [f"source {SOURCE}: {100 * info['test_accuracy_full']:.1f}% on the test split", "",
             "| target | init | step 0 | step 25 | epoch 1 |", "|---|---|---|---|---|"]
    for label in TARGETS:
        for init in INITS:
            got = [r for r in rows if r["target"] == label and r["init"] == init]
            mean = [100 * sum(r["accuracy"][str(s)] for r in got) / len(got) for s in STEPS]
            lines.append(f"| {label} | {init} | " + " | ".join(f"{m:.1f}" for m in mean) + " |")
    table = "\n".join(lines)
    print("\n" + table)
    save_result(args.json, "patch_resize", {
        "source": SOURCE, "source_accuracy": info["test_accuracy_full"], "seeds": args.seeds,
        "steps": list(STEPS), "runs": rows, "table": table}, start=start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
