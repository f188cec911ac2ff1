"""`netgraft report STUDY_OR_STORAGE [--study NAME ...] [--out report.html]`."""
from __future__ import annotations

import argparse
import sys

HELP = "write one self-contained HTML page showing a NAS search (Pareto front, lineage, warm vs cold)"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("storage", metavar="STUDY_OR_STORAGE",
                        help="the search's sqlite file (search.db) or an Optuna storage URL")
    parser.add_argument("--study", action="append", dest="studies", metavar="NAME",
                        help="study to show (repeatable; default: every study in the storage)")
    parser.add_argument("--out", default="report.html", help="HTML file to write (default report.html)")
    parser.add_argument("--title", help="page title (default: the studies' names)")
    return parser


def run(args: argparse.Namespace) -> int:
    from . import write_report

    data = write_report(args.storage, args.out, studies=args.studies, title=args.title)
    for s in data:
        if not s.finished:
            print(f"netgraft report: warning: study {s.name!r} has no finished trials "
                  f"({len(s.failed)} failed)", file=sys.stderr)
    parts = []
    for s in data:
        best = max((t.accuracy for t in s.finished), default=None)
        parts.append(f"{s.label}: {len(s.finished)} finished, {len(s.failed)} failed"
                     + (f", best {100 * best:.1f}%" if best is not None else ""))
    print(f"wrote {args.out} ({'; '.join(parts)})")
    return 0


def main(argv=None) -> int:
    """Standalone entry (`python -m netgraft.report.cli`) until `netgraft report` is wired."""
    from ..errors import NetgraftError

    args = add_arguments(argparse.ArgumentParser(prog="netgraft report", description=HELP)).parse_args(argv)
    try:
        return run(args)
    except NetgraftError as exc:
        print(f"netgraft report: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
