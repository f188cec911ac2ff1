"""`netgraft report`: one self-contained HTML page that shows a `netgraft.nas` search.

    from netgraft.report import write_report
    write_report("search.db", "report.html")                 # every study in the storage
    write_report("sqlite:///search.db", "r.html", studies=["warm", "cold"])

The page (plotly.js inlined, works offline from a file:// URL) shows

* the trials as accuracy vs parameters / latency (/ FLOPs) scatter, one colour per study, each
  study's Pareto front outlined (on the study's objectives; accuracy ↑ and params ↓ for a
  single-objective study) — hover a point for trial, arch, accuracy, params, latency, parent,
  similarity and coverage;
* each trial's lineage: trial number vs accuracy with a line from the trial it was grafted
  from, coloured by architecture similarity;
* best accuracy so far vs trial number and vs wall-clock time, one line per study (warm vs cold);
* a summary per study and a sortable table of every trial, failed ones with their fail_reason.

Errors (`ReportError`, a `NetgraftError`): the storage file does not exist or is not an Optuna
database, it holds no studies, a named study is missing, or none of the selected studies has
a finished trial (nothing to plot; the message lists why trials failed). A study without
finished trials next to others that have some is reported with a notice on the page. The
page is never written over the sqlite database it shows (a link to it included).
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence

from ..checkpoint import atomic_write
from .data import (ReportError, StudyData, TrialRow, best_so_far, load_studies, pareto_front,
                   redact, sqlite_file)
from .page import render_page

__all__ = ["write_report", "check_not_storage", "load_studies", "render_page", "pareto_front", "best_so_far",
           "ReportError", "StudyData", "TrialRow"]


def write_report(storage: str | os.PathLike, out: str | os.PathLike,
                 studies: Sequence[str] | None = None, title: str | None = None) -> list[StudyData]:
    """Write the HTML page for `studies` (default: all) of `storage` (a sqlite file or an
    Optuna storage URL) to `out`, atomically. Returns the studies as loaded."""
    check_not_storage(storage, out)
    data = load_studies(storage, studies)
    if not any(s.finished for s in data):
        reasons = Counter(t.fail_reason or t.state for s in data for t in s.trials if t.state != "COMPLETE")
        no_acc = sum(1 for s in data for t in s.trials if t.state == "COMPLETE")
        if no_acc:
            reasons["complete without an 'accuracy' (user attribute or objective; not a "
                    "netgraft search?)"] = no_acc
        why = "; ".join(f"{n}× {r}" for r, n in reasons.most_common(3))
        raise ReportError(f"{redact(storage)}: no finished trials in {', '.join(s.name for s in data)} "
                          f"— nothing to plot" + (f" ({why})" if why else " (no trials yet)"))
    page = render_page(data, source=redact(storage), title=title)
    out = Path(out)

    def _write(tmp: str) -> None:
        Path(tmp).write_text(page, encoding="utf-8")

    atomic_write(out, _write)
    return data


def check_not_storage(storage: str | os.PathLike, out: str | os.PathLike) -> None:
    """Refuse to write the page over the sqlite database it shows (a symbolic or hard link to
    it included): the search's trials would be replaced by HTML."""
    from ..cli import _same_file

    db = sqlite_file(storage)
    if db is not None and _same_file(Path(out), db):
        raise ReportError(f"--out {out} is the search's database {redact(storage)}: writing the "
                          f"page there would destroy its trials; choose another --out such as "
                          f"report.html")
