"""The ``netgraft`` command: transfer, similarity, inspect, bench, search, report, zoo, rank, demo."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from .errors import NetgraftError, Terminated as _Terminated
from .models import MODEL_SPEC_HELP


#: the width of a console that is not a terminal (a pipe, a file): wide enough that no line
#: and no table column is ever wrapped, so `| cat`, `| grep` and `> file` get one row per line
PIPE_WIDTH = 10_000


def make_console(stderr: bool = False):
    """A rich console: the terminal's width on a terminal, else ``PIPE_WIDTH`` (rich would
    wrap everything at 80 columns)."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich exits with 1 here, before the command has done its work; a reader that
            # has gone (`netgraft zoo add ... | true`) is no failure: say nothing more, and
            # let the command finish (Python's remedy: the stream goes to devnull)
            self.quiet = True
            stream = sys.stderr if self.stderr else sys.stdout
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())

    out = _Console(highlight=False, stderr=stderr)
    if not out.is_terminal:
        out = _Console(highlight=False, stderr=stderr, width=PIPE_WIDTH)
    return out


@contextmanager
def _steps(enabled: bool, total: int) -> Iterator:
    """A rich progress bar on standard error, advanced once per named step (silent when
    disabled or when standard error is no terminal: a pipe or a log gets no bar's residue)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = make_console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda description: None
        return
    with Progress(TextColumn("{task.description:<28}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  transient=True, console=console) as progress:
        task = progress.add_task("starting", total=total)
        first = [True]

        def advance(description: str) -> None:
            if not first[0]:
                progress.advance(task)
            first[0] = False
            progress.update(task, description=description)

        yield advance
        progress.update(task, completed=total)


def _min_score(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number in [0, 1] or 'auto'") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: give a number in [0, 1] or 'auto'")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of at least 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: give a whole number of at least 1")
    return value


def file_name(text: str) -> str:
    """An argparse type for a file, folder or study name: an empty one is refused, not taken
    as "not given" (`--report ""` wrote no report and said nothing)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty name: give one, or leave the option out")
    return text


#: how the library's warnings name its keyword arguments, and the flags that set them here
_FLAGS = [("example_input= (CLI: --input-size C,H,W)", "--input-size C,H,W"),
          ("source_input= (CLI: --source-input-size C,H,W)", "--source-input-size C,H,W"),
          ("calibration_data=", "--calibration"), ("align=True", "--align on"),
          ("min_score=0", "--min-score 0"), ("head='reset'", "--head reset"),
          ("source_input=", "--source-input-size"), ("example_input=", "--input-size")]


def _flags(text: str) -> str:
    """A library message with its keyword arguments named as `netgraft transfer`'s flags
    (whole keywords only: ``malign=True`` stays as it is)."""
    for keyword, flag in _FLAGS:
        text = re.sub(r"(?<![\w-])" + re.escape(keyword), lambda _: flag, text)
    return text


@contextmanager
def _cli_warnings(console, translate: bool) -> Iterator[None]:
    """Print the library's warnings as `warning: ...` lines on `console` (stderr: never in
    the middle of --json output), without the file and line they were raised at; with
    `translate`, naming `netgraft transfer`'s flags instead of Python keyword arguments."""
    import warnings

    from rich.markup import escape

    from .errors import NetgraftWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, NetgraftWarning):
            return shown(message, category, filename, lineno, file, line)
        text = _flags(str(message)) if translate else str(message)
        console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def _check_outputs(args: argparse.Namespace, out: Path) -> None:
    """Refuse to overwrite an input, to write two outputs to one file, or to replace an
    existing file without --force (`checkpoint.check_output`)."""
    from .checkpoint import WEIGHT_SUFFIXES, check_output

    report = Path(args.report) if args.report is not None else None
    if report is not None and _same_file(report, out):
        raise NetgraftError(f"--out and --report are the same file ({out}): give two names")
    for name, path in (("--out", out), ("--report", report)):
        def taken(path: Path, name: str = name) -> str | None:
            for flag, given in (("--source-weights", args.source_weights),
                                ("--target-weights", args.target_weights)):
                if given and _same_file(path, Path(given)) and (
                        flag == "--source-weights" or name == "--report" or not args.force):
                    return (f"is the file given as {flag}: writing it would replace those "
                            f"weights; choose another {name}")
            return None

        if path is not None:
            check_output(path, name, force=args.force, taken=taken, error=NetgraftError,
                         suffixes=WEIGHT_SUFFIXES if name == "--out" else ())


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (symbolic or hard links included)."""
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _input_shape(text: str | None):
    from .models import parse_input_size

    dims = parse_input_size(text)
    return None if dims is None else torch.randn(1, *dims)


def read_channels(spec: str, in_chans: int | None, input_size) -> int | None:
    """The input channels to build `spec` for: --in-chans, else the C of --input-size's C,H,W
    (`input_size`: those dims, or an example batch) for a timm name; a factory builds what
    it builds."""
    if in_chans or ":" in spec or input_size is None:
        return in_chans
    return input_size.shape[1] if isinstance(input_size, torch.Tensor) else input_size[0]


def _build(spec: str, weights: str | None, num_classes: int | None, in_chans: int | None,
           role: str, flags: str = "--num-classes and --in-chans"):
    from .checkpoint import load_state_dict, load_weights
    from .models import create_model, head_shape

    state = load_state_dict(weights) if weights else None
    # build the model the way the weights were trained unless told otherwise
    kwargs = head_shape(spec, state) if state is not None else {}
    kwargs.update({k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans))
                   if v is not None})
    model = create_model(spec, **kwargs)
    if state is not None:
        load_weights(model, state, what=f"{role} '{spec}'", source=weights, flags=flags)
    return model


def cmd_transfer(args: argparse.Namespace) -> int:
    from .checkpoint import atomic_write_all, state_writer
    from .calibrate import check_calibration_spec
    from .transfer import transfer

    console = make_console()
    out = Path(args.out)
    _check_outputs(args, out)
    if args.align != "off" and not args.calibration:
        raise NetgraftError(f"--align {args.align} needs --calibration: the inputs on which the "
                            f"target is aligned to the source")
    if args.calibration and args.method == "dpiat":
        raise NetgraftError("--calibration is for --method graft: dpiat is the paper's method "
                            "exactly, without calibration")
    if args.calibration:
        check_calibration_spec(args.calibration)
    if not 0.0 <= args.split_noise < 1.0:
        raise NetgraftError(f"--split-noise {args.split_noise}: use 0 up to below 1")
    if args.seed < 0:
        raise NetgraftError(f"--seed {args.seed}: use 0 or more")
    if args.align_steps is not None and args.align == "off":
        raise NetgraftError("--align-steps sets the steps of the alignment: give --align on "
                            "(or auto) with it")
    if args.align_steps is not None and args.align_steps < 0:
        raise NetgraftError(f"--align-steps {args.align_steps}: use 0 or more")
    if not args.source_weights:
        make_console(stderr=True).print("[yellow]warning:[/] no --source-weights given: grafting from a randomly "
                      "initialised source (useful only to try the command)")
    with _steps(not args.quiet, 5) as step:
        step(f"building source {args.source}")
        source = _build(args.source, args.source_weights, args.source_num_classes,
                        args.source_in_chans, "source",
                        "--source-num-classes and --source-in-chans")
        step(f"building target {args.target}")
        torch.manual_seed(args.seed)  # its init: what the graft leaves untouched
        example = _input_shape(args.input_size)
        # built for the channels --input-size gives, as `inspect` and `similarity` do
        target = _build(args.target, args.target_weights, args.num_classes,
                        read_channels(args.target, args.in_chans, example)
                        if not args.target_weights else args.in_chans, "target")
        calibration = None
        if args.calibration:
            from .calibrate import load_calibration
            from .trace import default_input_shape

            shape = tuple(example.shape[1:]) if example is not None else \
                default_input_shape(target)[1:]
            calibration = load_calibration(args.calibration, shape)
        step("tracing, matching, grafting" + (", aligning" if args.align != "off" else ""))
        report = transfer(source, target, method=args.method, head=args.head,
                          shrink=args.shrink, autoinit=args.autoinit,
                          min_score=args.min_score, example_input=example,
                          split_noise=args.split_noise, seed=args.seed,
                          source_input=_input_shape(args.source_input_size),
                          calibration_data=calibration,
                          align={"off": False, "on": True, "auto": "auto"}[args.align],
                          align_steps=args.align_steps)
        report.source, report.target = args.source, args.target  # as the user named them
        step("checking the grafted model")
        from .trace import eval_output

        for model, what in ((source, f"the source {args.source}"),
                            (target, f"the grafted target {args.target}")):
            arch = report.matching.source if model is source else report.matching.target
            y = eval_output(model, arch.example_input)
            if isinstance(y, torch.Tensor) and not torch.isfinite(y).all():
                if model is source:
                    raise NetgraftError(
                        f"{what} itself produces NaN/inf on a random input: its weights or "
                        f"batch-norm statistics (--source-weights) are broken; nothing was "
                        f"written")
                raise NetgraftError(f"{what} produces NaN/inf on a random input; nothing was "
                                    f"written. Please report this with the two model names.")
        step(f"writing {out.name}")
        outputs = [(out, state_writer(target.state_dict(), out, metadata={
            "netgraft_source": args.source, "netgraft_target": args.target,
            "netgraft_method": report.method, "netgraft_coverage": f"{report.coverage:.6f}"}))]
        if args.report is not None:  # both or neither
            text = json.dumps(report.to_dict(), indent=1)
            outputs.append((Path(args.report), lambda tmp: Path(tmp).write_text(text)))
        atomic_write_all(outputs)
    if args.align == "auto" and report.alignment is None:
        console.print(f"note: --align auto aligns distant pairs only; {args.source} → "
                      f"{args.target} is one family (similarity {report.similarity:.2f}), "
                      f"nothing was aligned (--align on forces it)", highlight=False)
    if args.quiet:
        console.print(report.summary(), soft_wrap=True, markup=False, highlight=False)
    else:
        _print_report(console, report, args.all)
    console.print(f"wrote {out}")
    return 0


def _print_report(console, report, show_all: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    # the summary says "[graft]", the rows hold layer names and notes: text, not markup; it is
    # a line of its own, not the table's title (which rich pads and wraps to the table's width)
    console.print(report.summary(), soft_wrap=True, markup=False, highlight=False)
    table = Table(show_lines=False)
    for col in ("target layer", "kind", "source layer", "score", "action", "detail"):
        table.add_column(col, overflow="fold")
    colours = {"copied": "green", "adapted": "cyan", "init": "yellow", "estimated": "magenta"}
    rows = report.rows()
    shown = rows if show_all or len(rows) <= 60 else rows[:25] + [("…",) * 6] + rows[-25:]
    for r in shown:
        colour = colours.get(r[4])
        table.add_row(*map(escape, r[:4]), f"[{colour}]{r[4]}[/]" if colour else escape(r[4]),
                      escape(r[5]))
    console.print(table)
    if len(shown) < len(rows):
        console.print(f"({len(rows) - len(shown) + 1} rows hidden; --all shows every layer)")


def cmd_similarity(args: argparse.Namespace) -> int:
    from .models import create_model
    from .similarity import similarity
    from .trace import trace

    example = _input_shape(args.input_size)
    a, b = (trace(create_model(s, in_chans=read_channels(s, args.in_chans, example)), example,
                  name=s) for s in (args.a, args.b))
    methods = [args.method] if args.method else ["graft", "dpiat"]
    for method in methods:
        print(f"similarity({args.a}, {args.b}) [{method}] = {similarity(a, b, method):.4f}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .models import create_model
    from .trace import trace

    example = _input_shape(args.input_size)
    model = create_model(args.model, num_classes=args.num_classes,
                         in_chans=read_channels(args.model, args.in_chans, example))
    arch = trace(model, example, name=args.model)
    if args.json:
        print(json.dumps(arch.to_dict(), indent=1))
    else:
        print(arch)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    run_demo(steps=args.steps, source_steps=args.source_steps, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .match import DEFAULT_METHOD, METHODS
    from .transfer import HEAD_POLICIES, SHRINK_POLICIES, SPLIT_NOISE

    parser = argparse.ArgumentParser(
        prog="netgraft", description="Graft trained weights onto a network of another architecture.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("transfer", help="initialise a target model from a trained source model")
    p.add_argument("--source", required=True, help=MODEL_SPEC_HELP)
    p.add_argument("--source-weights", help=".safetensors or torch checkpoint of the source")
    p.add_argument("--source-num-classes", type=_positive_int, help="default: read from the weights")
    p.add_argument("--source-in-chans", type=_positive_int, help="default: read from the weights")
    p.add_argument("--source-input-size", help="C,H,W example input of the source (default: inferred)")
    p.add_argument("--target", required=True, help=MODEL_SPEC_HELP)
    p.add_argument("--target-weights", help="start the target from these weights instead of its init")
    p.add_argument("--num-classes", type=_positive_int, help="classes of the target")
    p.add_argument("--in-chans", type=_positive_int, help="input channels of the target")
    p.add_argument("--input-size", help="C,H,W example input of the target (default: inferred)")
    p.add_argument("--method", default=DEFAULT_METHOD, choices=sorted(METHODS))
    p.add_argument("--head", default="auto", choices=HEAD_POLICIES,
                   help="classifier head: copied only when class counts agree (auto)")
    p.add_argument("--shrink", default="auto", choices=SHRINK_POLICIES,
                   help="which channels a narrower target keeps: the first ones (consecutive), "
                        "evenly spaced (uniform), the largest-weight ones (importance), those "
                        "with the largest batch-norm scales (norm_scale); auto: within a "
                        "family norm_scale (consecutive for a source with grouped convs or "
                        "no batch norms), "
                        "uniform across families")
    p.add_argument("--autoinit", action="store_true",
                   help="rescale layers nothing was transferred to so they preserve signal scale")
    p.add_argument("--split-noise", type=float, default=SPLIT_NOISE, metavar="F",
                   help="relative, zero-sum jitter of a widened layer's fan-in split among "
                        "replicated units, so they do not stay identical in training "
                        f"(default {SPLIT_NOISE:g}; 0 = Net2Net's exact even split; same "
                        f"function either way)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the target's random init (the layers left at init), the split "
                        "jitter and the alignment: the same command writes the same file "
                        "(default 0)")
    p.add_argument("--min-score", type=_min_score, default="auto", metavar="S|auto",
                   help="leave matched layers scoring below S at their init (auto: 0.25 for a "
                        "distant pair, else 0; 0 transfers every match)")
    p.add_argument("--calibration", metavar="FILE|DATASET:N",
                   help="unlabeled inputs of the target (.safetensors/.pt/.npy holding an "
                        "(N, C, H, W) tensor, or fashion-mnist:512 / digits:512): batch norms "
                        "re-estimate their statistics on them after the graft")
    p.add_argument("--align", default="off", choices=("off", "auto", "on"),
                   help="with --calibration: align the target's stages and logits to the "
                        "source's on those inputs (auto: only for distant pairs)")
    p.add_argument("--align-steps", type=int, metavar="N",
                   help="training steps of the alignment (default 30)")
    p.add_argument("--out", required=True, type=file_name,
                   help="where to write the grafted target: .safetensors (recommended) or "
                        ".pt/.pth/.bin (a torch state_dict); an existing file needs --force")
    p.add_argument("--report", type=file_name, help="also write the full report as JSON here")
    p.add_argument("--force", action="store_true",
                   help="replace --out / --report if they exist (never --source-weights)")
    shown = p.add_mutually_exclusive_group()  # -q prints no table for --all to widen
    shown.add_argument("--all", action="store_true", help="print every layer of the report")
    shown.add_argument("-q", "--quiet", action="store_true",
                       help="no progress bar, one-line summary")
    p.set_defaults(func=cmd_transfer)

    p = sub.add_parser("similarity", help="architecture similarity of two models (no data needed)")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--method", choices=sorted(METHODS), help="default: show every method")
    p.add_argument("--input-size", help="C,H,W example input of both models (default: inferred)")
    p.add_argument("--in-chans", type=_positive_int,
                   help="input channels both (timm) models are built for (default: the C of "
                        "--input-size, else the model's own)")
    p.set_defaults(func=cmd_similarity)

    p = sub.add_parser("inspect", help="show the traced layers and blocks of a model")
    p.add_argument("model")
    p.add_argument("--num-classes", type=_positive_int)
    p.add_argument("--in-chans", type=_positive_int)
    p.add_argument("--input-size", help="C,H,W example input (default: inferred)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    from . import bench
    p = sub.add_parser("bench", help="transfer-quality benchmark: graft vs random init on Fashion-MNIST")
    bench.add_arguments(p)
    p.set_defaults(func=bench.run)

    from .nas import cli as nas_cli
    p = sub.add_parser("search", help="architecture search (Optuna) where each trial is grafted from "
                                      "the most similar model the study has trained")
    nas_cli.add_arguments(p)
    p.set_defaults(func=nas_cli.run)

    from . import zoo
    p = sub.add_parser("zoo", help="manage a zoo of trained checkpoints (add, list, index, remove)")
    zoo.add_zoo_arguments(p)
    p.set_defaults(func=zoo.run_zoo)
    p = sub.add_parser("rank", help="rank the zoo's checkpoints as sources for a target, without training")
    zoo.add_rank_arguments(p)
    p.set_defaults(func=zoo.run_rank)

    from .report import cli as report_cli
    p = sub.add_parser("report", help=report_cli.HELP)
    report_cli.add_arguments(p)
    p.set_defaults(func=report_cli.run)

    p = sub.add_parser("demo", help="train a source on Fashion-MNIST, graft it, compare with random init")
    p.add_argument("--steps", type=_positive_int, default=60,
                   help="training steps of the target (default 60)")
    p.add_argument("--source-steps", type=_positive_int, default=600,
                   help="training steps of the source")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def _on_sigterm() -> Any:
    """Make SIGTERM raise `_Terminated` in the main thread while a command runs; returns the
    handler it replaced (restored by `main`)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def terminated(signum, frame):
        raise _Terminated()
    return signal.signal(signal.SIGTERM, terminated)


def main(argv: Sequence[str] | None = None) -> int:
    from .checkpoint import WRITTEN

    try:  # the parser imports every command's modules (optuna, plotly): seconds of Ctrl-C
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        print("interrupted; no output written", file=sys.stderr)
        return 130
    WRITTEN.clear()  # what this command writes (named if it is interrupted)
    terminate = _on_sigterm()
    try:
        translate = args.command in ("transfer", "inspect", "similarity")  # have --input-size
        with _cli_warnings(make_console(stderr=True), translate=translate):
            return args.func(args)
    except NetgraftError as exc:
        text = _flags(str(exc)) if translate else str(exc)
        print(f"netgraft {args.command}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        done = f"wrote {', '.join(map(str, WRITTEN))} before" if WRITTEN else "no output written"
        print(f"{'terminated' if isinstance(exc, _Terminated) else 'interrupted'}; {done}",
              file=sys.stderr)
        return 143 if isinstance(exc, _Terminated) else 130
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "DefaultCPUAllocator" not in str(exc):
            raise  # a bug: its traceback is what a report needs
        print(f"netgraft {args.command}: error: out of memory (an input size or a model too "
              f"large for this machine: try a smaller --input-size or model)", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `netgraft similarity a b | head -1`: the reader has gone
        # (before OSError, its base class.) Python's documented remedy: point stdout at
        # devnull so the exit flush cannot fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a file the command reads or writes: name it, no traceback
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"netgraft {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    finally:
        if terminate is not None:  # the caller's SIGTERM handling, as it was
            import signal
            signal.signal(signal.SIGTERM, terminate)


if __name__ == "__main__":
    sys.exit(main())
