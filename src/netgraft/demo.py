"""`netgraft demo`: the main job end to end, on real data, in a couple of minutes on a CPU.

1. Train a small source network briefly on Fashion-MNIST (scikit-learn's 8×8 digits when the
   Debian package `dataset-fashion-mnist` is absent).
2. Graft it onto targets of other architectures (deeper, and another family), with a few
   hundred unlabeled images to re-estimate batch-norm statistics.
3. Train each target for a few dozen steps from the graft and from random init, same recipe,
   and print test accuracy side by side.
"""
from __future__ import annotations

import copy
import time

import torch

from .calibrate import recalibrate_norms
from .data import load_dataset
from .models import create_model
from .training import evaluate, train
from .transfer import transfer

SOURCE = "resnet18"
TARGETS = ("resnet34", "efficientnet_b0")
LR = 1e-3
BATCH = 64


def run_demo(steps: int = 60, source_steps: int = 600, seed: int = 0,
             targets: tuple[str, ...] = TARGETS, print_fn=print) -> list[dict]:
    from rich.table import Table

    from .cli import make_console

    console = make_console()  # piped: no table cut at 80 columns
    torch.manual_seed(seed)
    train_set = load_dataset("fashion-mnist", "train", size=32, fallback=True)
    test_set = load_dataset(train_set.name, "test", size=32)
    test_set = test_set.subset(min(len(test_set), 2000), seed=seed)
    classes = train_set.num_classes
    console.print(f"data: {train_set.name}, {len(train_set)} train / {len(test_set)} test images, "
                  f"{tuple(train_set.x.shape[1:])}")

    source = create_model(SOURCE, num_classes=classes, in_chans=1)
    console.print(f"training source {SOURCE} for {source_steps} steps …")
    result = train(source, train_set, steps=source_steps, batch_size=BATCH, lr=LR, seed=seed,
                   progress=True)
    source_acc = evaluate(source, test_set)
    # the grafts re-estimate their batch-norm statistics on the calibration images; so does
    # a copy of the source, to compare like with like (its running statistics lag behind
    # weights trained for only a few hundred steps)
    recalibrated = copy.deepcopy(source)
    recalibrate_norms(recalibrated, train_set.x[:512])
    source_cal = evaluate(recalibrated, test_set)
    console.print(f"source {SOURCE}: test accuracy {source_acc:.1%} with its running batch-norm "
                  f"statistics, {source_cal:.1%} with them re-estimated on the 512 calibration "
                  f"images as the grafts' are ({result.seconds:.0f} s)")

    rows = []
    for name in targets:
        accs = {}
        for init in ("random", "netgraft"):
            torch.manual_seed(seed + 1)
            target = create_model(name, num_classes=classes, in_chans=1)
            coverage, seconds = 0.0, 0.0
            if init == "netgraft":
                # a few hundred unlabeled images re-estimate the batch-norm statistics
                report = transfer(source, target, calibration_data=train_set.x[:512])
                coverage, seconds = report.coverage, report.seconds
            res = train(target, train_set, steps=steps, batch_size=BATCH, lr=LR, seed=seed,
                        eval_data=test_set, eval_at=(0, steps), progress=True)
            accs[init] = dict(res.history)
            if init == "netgraft":
                rows.append({"target": name, "source": source_acc,
                             "source_recalibrated": source_cal,
                             "coverage": coverage, "transfer_s": seconds,
                             "random_0": accs["random"][0], "random_end": accs["random"][steps],
                             "graft_0": accs["netgraft"][0], "graft_end": accs["netgraft"][steps]})
        r = rows[-1]
        console.print(f"  {name}: random {r['random_end']:.1%} vs netgraft {r['graft_end']:.1%} "
                      f"after {steps} steps")

    table = Table(title=f"{SOURCE} ({source_acc:.1%}; {source_cal:.1%} with re-estimated norms) "
                        f"grafted onto other architectures, test accuracy on {train_set.name}",
                  title_justify="left")
    for col in ("target", "coverage", "random @0", "graft @0", f"random @{steps}",
                f"graft @{steps}"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["target"], f"{r['coverage']:.0%}", f"{r['random_0']:.1%}",
                      f"{r['graft_0']:.1%}", f"{r['random_end']:.1%}", f"[bold]{r['graft_end']:.1%}[/]")
    console.print(table)
    return rows


if __name__ == "__main__":
    start = time.time()
    run_demo()
    print(f"{time.time() - start:.0f} s")
