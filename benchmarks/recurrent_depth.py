"""Deeper stacked LSTMs: new layers started near the identity vs at init vs random.

    python benchmarks/recurrent_depth.py [--seeds 3] [--json benchmarks/results/recurrent_depth.json]

Row-sequential Fashion-MNIST (each 28×28 image read as 28 steps of 28 features): a 2-layer
LSTM source is trained, then grafted into 3- and 4-layer LSTMs (same width, and 1.5× wider).
Four inits of each target are fine-tuned with the same data order: random init, the graft with
the new layers left at their init (netgraft before this benchmark), the graft with the new
layers repeating the source's last layer, and the default graft, whose new layers start near
the identity (gates saturated). Prints test accuracy after 0 / 50 / 200 steps (mean over
seeds) and writes JSON.
"""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from unittest import mock

import torch
from torch import nn

import netgraft
from netgraft.data import load_fashion_mnist
from netgraft.training import evaluate, train

STEPS = (0, 50, 200)
INITS = ("random", "graft, new layers at init", "graft, new layers repeat the last one",
         "graft (default: new layers near the identity)")


class RowLSTM(nn.Module):
    """Reads an image (N, 1, H, W) as H steps of W features; classifies from the last step."""

    def __init__(self, layers: int, hidden: int = 64, width: int = 28, classes: int = 10):
        super().__init__()
        self.rnn = nn.LSTM(width, hidden, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x.flatten(1, 2))[0][:, -1])


def _target(init: str, source: nn.Module, layers: int, hidden: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = RowLSTM(layers, hidden)
    example = torch.randn(2, 1, 28, 28)
    if init == INITS[1]:
        with mock.patch.object(importlib.import_module("netgraft.transfer"), "_near_identity",
                               lambda *args: None):
            netgraft.transfer(source, model, example_input=example)
    elif init == INITS[2]:
        netgraft.transfer(source, model, example_input=example)
        last = source.rnn.num_layers - 1
        with torch.no_grad():
            for k in range(source.rnn.num_layers, layers):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):  # hidden-sized
                    getattr(model.rnn, f"{name}_l{k}").copy_(getattr(model.rnn, f"{name}_l{last}"))
    elif init == INITS[3]:
        netgraft.transfer(source, model, example_input=example)
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--source-steps", type=int, default=800)
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--json", default="benchmarks/results/recurrent_depth.json")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = load_fashion_mnist("train").subset(args.train_size)
    test = load_fashion_mnist("test").subset(args.test_size)

    torch.manual_seed(0)
    source = RowLSTM(2)
    train(source, data, steps=args.source_steps, lr=2e-3, seed=0)
    source_accuracy = evaluate(source.eval(), test)
    print(f"source: 2-layer LSTM, hidden 64, {args.source_steps} steps: {100 * source_accuracy:.1f}%")

    rows = []
    for layers, hidden in ((3, 64), (4, 64), (3, 96)):
        for init in INITS:
            runs = []
            for seed in range(args.seeds):
                model = _target(init, source, layers, hidden, seed)
                result = train(model, data, steps=max(STEPS), lr=1e-3, seed=100 + seed,
                               eval_data=test, eval_at=STEPS)
                runs.append(dict(result.history))
            mean = {s: statistics.fmean(r[s] for r in runs) for s in STEPS}
            rows.append({"target": f"{layers} layers, hidden {hidden}", "init": init,
                         "accuracy": mean, "runs": runs})

    header = "| target | init | " + " | ".join(f"step {s}" for s in STEPS) + " |"
    print(header + "\n|" + "---|" * (2 + len(STEPS)))
    for r in rows:
        cells = " | ".join(f"{100 * r['accuracy'][s]:.1f}" for s in STEPS)
        print(f"| {r['target']} | {r['init']} | {cells} |")
    out = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
           "torch": torch.__version__, "seeds": args.seeds, "source_steps": args.source_steps,
           "train_size": args.train_size, "test_size": args.test_size,
           "source_accuracy": source_accuracy, "rows": rows,
           "minutes": round((time.perf_counter() - started) / 60, 1)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {args.json} ({out['minutes']} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
