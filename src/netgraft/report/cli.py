"""`netgraft report STUDY_OR_STORAGE [--study NAME ...] [--out report.html] [--force]`.

--out must end in .html or .htm; an existing --out is replaced only with --force, and the
search's own database never (it would lose its trials)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import file_name

HELP = "write one self-contained HTML page showing a NAS search (Pareto front, lineage, warm vs cold)"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("storage", metavar="STUDY_OR_STORAGE",
                        help="the search's sqlite file (search.db) or an Optuna storage URL")
    parser.add_argument("--study", action="append", dest="studies", metavar="NAME",
                        help="study to show (repeatable; default: every study in the storage)")
    parser.add_argument("--out", default="report.html", type=file_name,
                        help="HTML file to write, .html or .htm (default report.html)")
    parser.add_argument("--force", action="store_true",
                        help="replace --out if it exists (never the search's database)")
    parser.add_argument("--title", help="page title (default: the studies' names)")
    return parser


def check_out(args: argparse.Namespace) -> None:
    """Before reading any study: --out is an HTML file name in an existing folder, not the
    database being reported on, and not an existing file unless --force."""
    from ..checkpoint import check_output
    from ..errors import NetgraftError
    from . import check_not_storage

    out = Path(args.out)
    check_not_storage(args.storage, out)
    check_output(out, "--out", force=args.force, suffixes=(".html", ".htm"), error=NetgraftError,
                 hint="the report is an HTML page; give a file name ending in .html (e.g. "
                      "report.html)")


def run(args: argparse.Namespace) -> int:
    from . import write_report

    check_out(args)
    data = write_report(args.storage, args.out, studies=args.studies, title=args.title)
    for s in data:
        if not s.finished:
            print(f"netgraft report: warning: study {s.name!r} has no finished trials "
                  f"({len(s.failed)} failed, {len(s.interrupted)} interrupted)", file=sys.stderr)
    parts = []
    for s in data:
        best = max((t.accuracy for t in s.finished), default=None)
        parts.append(f"{s.label}: {len(s.finished)} finished, {len(s.failed)} failed"
                     + (f", {len(s.interrupted)} interrupted" if s.interrupted else "")
                     + (f", best {100 * best:.1f}%" if best is not None else ""))
    print(f"wrote {args.out} ({'; '.join(parts)})")
    return 0


def main(argv=None) -> int:
    """`python -m netgraft.report ...` = `netgraft report ...` (its errors, Ctrl-C and pipes
    handled alike)."""
    from ..cli import main as netgraft_main

    return netgraft_main(["report", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
