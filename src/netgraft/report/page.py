"""Build the self-contained HTML page from `StudyData` (plotly figures + plain HTML tables).

The page inlines plotly.js (no CDN: it works offline from a file:// URL). Each figure sits in a
``<div class="figure" data-points="N">`` where N is the number of markers it draws, so a browser
test can check the rendering against the data.
"""
from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from typing import Sequence

import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from .data import StudyData, TrialRow, best_so_far, study_start

SIM_SCALE = "Viridis"
SIM_BINS = 5                     # lineage edges are coloured by similarity in this many bins
_WARM = ["#e6550d", "#a63603", "#fd8d3c", "#d94801"]
_COLD = ["#3182bd", "#08519c", "#6baed6", "#2171b5"]
_OTHER = ["#31a354", "#756bb1", "#636363", "#e7298a"]
AXIS_TITLES = {"params": "parameters", "flops": "FLOPs", "latency_ms": "CPU latency, batch 1 (ms)"}
PLOT_CONFIG = {"displaylogo": False, "responsive": True,
               "modeBarButtonsToRemove": ["lasso2d", "select2d", "zoomIn2d", "zoomOut2d", "autoScale2d"],
               "toImageButtonOptions": {"format": "png", "scale": 2}}


def study_colors(studies: Sequence[StudyData]) -> dict[str, str]:
    out, used = {}, {"warm": 0, "cold": 0, "other": 0}
    for s in studies:
        kind = {True: "warm", False: "cold", None: "other"}[s.warm]
        pal = {"warm": _WARM, "cold": _COLD, "other": _OTHER}[kind]
        out[s.name] = pal[used[kind] % len(pal)]
        used[kind] += 1
    return out


# ---------------------------------------------------------------------------------------------
# formatting

def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _int(v: int | None) -> str:
    return "–" if v is None else f"{v:,}"


def _f(v: float | None, nd: int = 2) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def _si(v: float | None) -> str:
    if v is None:
        return "–"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f}{unit}"
    return f"{v:g}"


def _parent_text(t: TrialRow) -> str:
    if t.parent is None and t.parent_trial is None:
        return "none (random init)" + (f": {t.warm_note}" if t.warm_note else "")
    if t.lineage_parent is not None:
        who = f"trial #{t.lineage_parent}"
    else:
        who = f"pool entry {str(t.parent)[:8]}" if t.parent else "pool entry"
        if t.parent_trial is not None:
            who += f" (trial #{t.parent_trial} outside this study)"
    return who + (f" — {t.parent_arch}" if t.parent_arch else "")


def hover_text(t: TrialRow, label: str) -> str:
    e = html.escape
    lines = [f"<b>{e(label)} — trial #{t.number}</b>" + (" ★ Pareto" if t.pareto else ""),
             f"arch: {e(t.arch)}",
             f"accuracy: {_pct(t.accuracy)}" + (f" (at init {_pct(t.accuracy_at_0)})"
                                               if t.accuracy_at_0 is not None else ""),
             f"params: {_int(t.params)}   FLOPs: {_si(t.flops)}",
             f"latency: {_f(t.latency_ms)} ms",
             f"parent: {e(_parent_text(t))}",
             f"similarity: {_f(t.similarity)}   coverage: {_pct(t.coverage)}"]
    return "<br>".join(lines)


# ---------------------------------------------------------------------------------------------
# figures: each returns (figure, number of markers drawn)

def _marker(t_list: list[TrialRow], color, **kw) -> dict:
    return dict(color=color, size=[11 if t.pareto else 7 for t in t_list],
                line=dict(color=["#111" if t.pareto else "rgba(255,255,255,0.8)" for t in t_list],
                          width=[2 if t.pareto else 0.6 for t in t_list]), **kw)


def scatter_figure(studies: Sequence[StudyData], colors: dict[str, str]) -> tuple[go.Figure, int]:
    """Accuracy vs params / latency (/ FLOPs when an objective), Pareto members outlined, and the
    2-objective front drawn as a staircase in the panel of its cost objective."""
    xs = ["params", "latency_ms"]
    if any("flops" in s.objectives for s in studies):
        xs.append("flops")
    fig = make_subplots(rows=1, cols=len(xs), shared_yaxes=True, horizontal_spacing=0.04)
    n_points = 0
    for s in studies:
        names, dirs = s.front_objectives
        staircase_x = None
        if len(names) == 2 and "accuracy" in names and dirs[names.index("accuracy")] == "maximize":
            other = names[1 - names.index("accuracy")]
            if other in xs and dirs[names.index(other)] == "minimize":
                staircase_x = other
        for col, x in enumerate(xs, start=1):
            rows = [t for t in s.finished if t.get(x) is not None]
            n_points += len(rows)
            fig.add_trace(go.Scatter(
                x=[t.get(x) for t in rows], y=[t.accuracy for t in rows], mode="markers",
                name=s.label, legendgroup=s.name, showlegend=col == 1,
                marker=_marker(rows, colors[s.name], opacity=0.9),
                hovertext=[hover_text(t, s.label) for t in rows], hoverinfo="text",
                customdata=[t.number for t in rows]), row=1, col=col)
            if x == staircase_x:
                front = sorted((t for t in rows if t.pareto), key=lambda t: (t.get(x), -t.accuracy))
                fig.add_trace(go.Scatter(
                    x=[t.get(x) for t in front], y=[t.accuracy for t in front], mode="lines",
                    line=dict(color=colors[s.name], width=2, dash="dot", shape="hv"),
                    name=f"Pareto front ({s.label})", legendgroup=s.name, hoverinfo="skip"),
                    row=1, col=col)
    for col, x in enumerate(xs, start=1):
        fig.update_xaxes(title_text=AXIS_TITLES.get(x, x), type="log",
                         row=1, col=col)
    fig.update_yaxes(title_text="test accuracy", tickformat=".0%", row=1, col=1)
    fig.update_layout(height=360, margin=dict(l=60, r=20, t=30, b=45), template="plotly_white",
                      legend=dict(orientation="h", yanchor="bottom", y=1.01, x=0),
                      hoverlabel=dict(align="left"))
    return fig, n_points


def lineage_figure(studies: Sequence[StudyData], colors: dict[str, str]) -> tuple[go.Figure, int]:
    """Per study: trial number vs accuracy, a line from each parent trial to the child grafted
    from it (coloured by similarity), a dotted stem from the accuracy right after the graft to
    the trained accuracy; grafted trials coloured by similarity, random-init trials grey."""
    titles = []
    for s in studies:
        extra = f", {len(s.failed)} failed (see table)" if s.failed else ""
        extra += f", {len(s.interrupted)} interrupted" if s.interrupted else ""
        titles.append(f"{s.label}: {len(s.finished)} trials{extra}")
    # studies with grafted trials get taller panels (their init-accuracy stems span more range)
    weights = [1.6 if any(t.similarity is not None for t in s.finished) else 1.0 for s in studies]
    fig = make_subplots(rows=len(studies), cols=1, subplot_titles=titles, vertical_spacing=0.1,
                        row_heights=[w / sum(weights) for w in weights])
    bin_colors = sample_colorscale(SIM_SCALE, [(b + 0.5) / SIM_BINS for b in range(SIM_BINS)])
    n_points, colorbar_done, stem_legend, plain_legend = 0, False, False, False
    for r, s in enumerate(studies, start=1):
        fin = {t.number: t for t in s.finished}
        bins: list[tuple[list, list]] = [([], []) for _ in range(SIM_BINS)]
        for t in fin.values():
            p = fin.get(t.lineage_parent) if t.lineage_parent is not None else None
            if p is None:
                continue
            sim = t.similarity if t.similarity is not None else 0.0
            b = min(SIM_BINS - 1, max(0, int(sim * SIM_BINS)))
            bins[b][0].extend([p.number, t.number, None])
            bins[b][1].extend([p.accuracy, t.accuracy, None])
        for b, (ex, ey) in enumerate(bins):
            if ex:
                fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines", hoverinfo="skip", showlegend=False,
                                         line=dict(color=bin_colors[b], width=1.4), opacity=0.75,
                                         name=f"similarity {b / SIM_BINS:.1f}–{(b + 1) / SIM_BINS:.1f}"),
                              row=r, col=1)
        stems = [t for t in fin.values() if t.accuracy_at_0 is not None and t.similarity is not None]
        if stems:
            sx, sy = [], []
            for t in stems:
                sx.extend([t.number, t.number, None])
                sy.extend([t.accuracy_at_0, t.accuracy, None])
            fig.add_trace(go.Scatter(x=sx, y=sy, mode="lines", hoverinfo="skip",
                                     line=dict(color="rgba(90,90,90,0.45)", width=1, dash="dot"),
                                     name="accuracy at init → trained", legendgroup="stems",
                                     showlegend=not stem_legend), row=r, col=1)
            stem_legend = True
        grafted = [t for t in fin.values() if t.similarity is not None]
        plain = [t for t in fin.values() if t.similarity is None]
        if grafted:
            fig.add_trace(go.Scatter(
                x=[t.number for t in grafted], y=[t.accuracy for t in grafted], mode="markers",
                name="grafted (colour: similarity to parent)", legendgroup="grafted",
                showlegend=not colorbar_done,
                marker=dict(color=[t.similarity for t in grafted], colorscale=SIM_SCALE, cmin=0, cmax=1,
                            size=[10 if t.pareto else 7 for t in grafted],
                            symbol=["diamond" if t.lineage_parent is None else "circle" for t in grafted],
                            line=dict(color=colors[s.name], width=1.5),
                            showscale=not colorbar_done,
                            colorbar=dict(title=dict(text="similarity", side="right"), len=0.8, thickness=12)),
                hovertext=[hover_text(t, s.label) for t in grafted], hoverinfo="text",
                customdata=[t.number for t in grafted]), row=r, col=1)
            colorbar_done = True
        if plain:
            fig.add_trace(go.Scatter(
                x=[t.number for t in plain], y=[t.accuracy for t in plain], mode="markers",
                name="random init", legendgroup="plain", showlegend=not plain_legend,
                marker=dict(color="rgba(150,150,150,0.55)", size=[10 if t.pareto else 7 for t in plain],
                            line=dict(color=colors[s.name], width=1.5)),
                hovertext=[hover_text(t, s.label) for t in plain], hoverinfo="text",
                customdata=[t.number for t in plain]), row=r, col=1)
            plain_legend = True
        n_points += len(grafted) + len(plain)
        fig.update_yaxes(title_text="accuracy", tickformat=".0%", row=r, col=1)
    fig.update_xaxes(title_text="trial number", row=len(studies), col=1)
    fig.update_layout(height=60 + int(round(150 * sum(weights))), margin=dict(l=60, r=20, t=40, b=45),
                      template="plotly_white", hoverlabel=dict(align="left"),
                      legend=dict(orientation="h", yanchor="bottom", y=1.04, x=0))
    return fig, n_points


def progress_figure(studies: Sequence[StudyData], colors: dict[str, str]) -> tuple[go.Figure, int]:
    """Best accuracy so far vs trial number (top) and vs wall-clock minutes (bottom), one line
    per study, every trial's own accuracy as a faint marker."""
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.22,
                        subplot_titles=["best accuracy so far vs trial number",
                                        "best accuracy so far vs wall-clock time"])
    n_points = 0
    for s in studies:
        fin = {t.number: t for t in s.finished}
        for r, by in ((1, "number"), (2, "time")):
            curve = best_so_far(s, by)
            if not curve:
                continue
            x = [c[0] for c in curve]
            trials = [fin[c[2]] for c in curve]
            fig.add_trace(go.Scatter(
                x=x, y=[t.accuracy for t in trials], mode="markers", legendgroup=s.name,
                showlegend=False, name=s.label,
                marker=dict(color=colors[s.name], size=5, opacity=0.35),
                hovertext=[hover_text(t, s.label) for t in trials], hoverinfo="text",
                customdata=[t.number for t in trials]), row=r, col=1)
            n_points += len(curve)
            fig.add_trace(go.Scatter(
                x=x, y=[c[1] for c in curve], mode="lines", line=dict(color=colors[s.name], width=2.5, shape="hv"),
                name=s.label, legendgroup=s.name, showlegend=r == 1,
                hovertemplate=f"{html.escape(s.label)}<br>best so far %{{y:.1%}}<extra></extra>"), row=r, col=1)
    fig.update_xaxes(title_text="trial number", row=1, col=1)
    fig.update_xaxes(title_text="minutes since the study started", row=2, col=1)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%")
    fig.update_layout(height=60 + 190 * max(2, len(studies)), margin=dict(l=60, r=20, t=40, b=45),
                      template="plotly_white",
                      legend=dict(orientation="h", yanchor="bottom", y=1.06, x=0),
                      hoverlabel=dict(align="left"))
    return fig, n_points


# ---------------------------------------------------------------------------------------------
# tables

def _duration(s: StudyData) -> str:
    t0 = study_start(s)
    ends = [t.complete for t in s.trials if t.complete is not None]
    if t0 is None or not ends:
        return "–"
    sec = (max(ends) - t0).total_seconds()
    return f"{sec / 60:.1f} min" if sec < 3 * 3600 else f"{sec / 3600:.1f} h"


def summary_table(studies: Sequence[StudyData]) -> str:
    e = html.escape
    head = ("<tr><th>study</th><th>init</th><th>space</th><th>dataset</th><th>objectives</th>"
            "<th>finished</th><th>failed</th><th>interrupted</th><th>other</th><th>best accuracy</th><th>Pareto front</th>"
            "<th>wall clock</th><th>grafted</th></tr>")
    rows = []
    for s in studies:
        fin = s.finished
        best = max(fin, key=lambda t: t.accuracy, default=None)
        names, dirs = s.front_objectives
        front = ", ".join(f"{n} {'↑' if d == 'maximize' else '↓'}" for n, d in zip(names, dirs))
        grafted = sum(1 for t in fin if t.warm or t.parent is not None)
        rows.append(
            f"<tr><td><b>{e(s.name)}</b></td><td>{ {True: 'warm', False: 'cold', None: '–'}[s.warm] }</td>"
            f"<td>{e(str(s.attrs.get('space', '–')))}</td><td>{e(str(s.attrs.get('dataset', '–')))}</td>"
            f"<td>{e(', '.join(s.objectives))}</td><td>{len(fin)}</td><td>{len(s.failed)}</td>"
            f"<td>{len(s.interrupted)}</td>"
            f"<td>{len(s.trials) - len(fin) - len(s.failed) - len(s.interrupted)}</td>"
            f"<td>{_pct(best.accuracy) + f' (#{best.number})' if best else '–'}</td>"
            f"<td>{sum(t.pareto for t in fin)} trials ({e(front)})</td><td>{_duration(s)}</td>"
            f"<td>{grafted}</td></tr>")
    return f'<table class="summary">{head}{"".join(rows)}</table>'


TRIAL_COLUMNS = ["study", "trial", "state", "accuracy", "at init", "params", "FLOPs", "latency ms",
                 "Pareto", "parent", "similarity", "coverage", "train s", "steps", "arch",
                 "fail reason"]


def _cell(text: str, sort=None) -> str:
    key = "" if sort is None or (isinstance(sort, float) and not math.isfinite(sort)) else f' data-v="{sort}"'
    return f"<td{key}>{text}</td>"


def trials_table(studies: Sequence[StudyData]) -> str:
    e = html.escape
    head = "".join(f'<th title="click to sort">{c}</th>' for c in TRIAL_COLUMNS)
    rows = []
    for s in studies:
        for t in sorted(s.trials, key=lambda t: t.number):
            parent = ("–" if t.parent_trial is None and t.parent is None and not t.warm_note
                      else e(_parent_text(t)))
            cls = "other" if t.interrupted else {"FAIL": "fail", "COMPLETE": ""}.get(t.state, "other")
            rows.append(
                f'<tr class="{cls}" data-study="{e(s.name)}">' + "".join([
                    _cell(e(s.name)), _cell(str(t.number), t.number),
                    _cell("INTERRUPTED" if t.interrupted else t.state),
                    _cell(_pct(t.accuracy), t.accuracy), _cell(_pct(t.accuracy_at_0), t.accuracy_at_0),
                    _cell(_int(t.params), t.params), _cell(_si(t.flops), t.flops),
                    _cell(_f(t.latency_ms), t.latency_ms), _cell("★" if t.pareto else "", int(t.pareto)),
                    _cell(parent, t.lineage_parent if t.lineage_parent is not None else t.parent_trial), _cell(_f(t.similarity), t.similarity),
                    _cell(_pct(t.coverage), t.coverage), _cell(_f(t.train_seconds, 1), t.train_seconds),
                    _cell(_int(t.steps), t.steps), _cell(e(t.arch)), _cell(e(t.fail_reason or "")),
                ]) + "</tr>")
    return (f'<table class="trials" id="trials"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


# ---------------------------------------------------------------------------------------------
# page

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 18px 30px;color:#222}
h1{font-size:21px;margin:12px 0 2px} h2{font-size:16px;margin:16px 0 4px}
.meta{color:#666;font-size:12px;margin-bottom:6px}
.notice{background:#fff4e5;border-left:4px solid #f0a020;padding:6px 10px;margin:6px 0;font-size:13px}
table{border-collapse:collapse;font-size:12px} td,th{padding:3px 7px;border-bottom:1px solid #e4e4e4;text-align:left}
th{background:#f4f6f8;position:sticky;top:0} table.trials th{cursor:pointer;user-select:none}
tr.fail td{background:#fdecec} tr.other td{color:#888}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:8px}
.figure{min-width:0} .caption{font-size:12px;color:#555;margin:2px 0 8px}
.tablewrap{max-height:520px;overflow:auto;border:1px solid #e4e4e4}
"""

SORT_JS = """
document.querySelectorAll('table.trials th').forEach(function(th, col){
  th.addEventListener('click', function(){
    var body = th.closest('table').tBodies[0], asc = th.dataset.asc !== '1';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(a, b){
      var x = a.cells[col], y = b.cells[col], u = x.dataset.v, v = y.dataset.v, r;
      if (u !== undefined && v !== undefined) r = parseFloat(u) - parseFloat(v);
      else if (u !== undefined || v !== undefined) return u === undefined ? 1 : -1;
      else r = x.textContent.localeCompare(y.textContent);
      return asc ? r : -r;
    });
    rows.forEach(function(r){ body.appendChild(r); });
    th.parentNode.querySelectorAll('th').forEach(function(h){ delete h.dataset.asc; });
    th.dataset.asc = asc ? '1' : '0';
  });
});
"""


def _figure_div(fig: go.Figure, div_id: str, n_points: int, caption: str) -> str:
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)
    return (f'<div class="figure" id="{div_id}-box" data-plot="{div_id}" data-points="{n_points}">'
            f'{body}<div class="caption">{caption}</div></div>')


def render_page(studies: Sequence[StudyData], source: str, title: str | None = None) -> str:
    from plotly.offline import get_plotlyjs

    from .. import __version__ as version

    e = html.escape
    colors = study_colors(studies)
    plotted = [s for s in studies if s.finished]
    notices = []
    for s in studies:
        if not s.finished:
            reasons = sorted({t.fail_reason for t in s.failed if t.fail_reason})
            notices.append(f'<div class="notice">study <b>{e(s.name)}</b> has no finished trials yet '
                           f"({len(s.failed)} failed, {len(s.interrupted)} interrupted, "
                           f"{len(s.trials) - len(s.failed) - len(s.interrupted)} other)"
                           + (f": {e('; '.join(reasons[:3]))}" if reasons else "") + "</div>")
    figs = ""
    if plotted:
        scatter, n1 = scatter_figure(plotted, colors)
        lineage, n2 = lineage_figure(plotted, colors)
        progress, n3 = progress_figure(plotted, colors)
        fronts = "; ".join(
            f"{e(s.name)}: " + ", ".join(f"{n} {'max' if d == 'maximize' else 'min'}"
                                         for n, d in zip(*s.front_objectives)) for s in plotted)
        figs = (
            _figure_div(scatter, "pareto", n1,
                        f"One point per finished trial. Outlined, larger points are on their study's "
                        f"Pareto front ({fronts}); the dotted staircase is a 2-objective front. "
                        f"Hover for the trial's architecture and lineage.")
            + '<div class="grid">'
            + _figure_div(lineage, "lineage", n2,
                          "Lineage: a line joins each trial to the trial whose trained weights it was "
                          "grafted from (line and fill colour: architecture similarity; diamonds: "
                          "grafted from a model outside this study); dotted stems rise from a grafted "
                          "trial's accuracy right after the graft to its trained accuracy.")
            + _figure_div(progress, "progress", n3,
                          "Best accuracy so far, by trial and by wall-clock time since the first "
                          "trial started; faint points are single trials.")
            + "</div>")
    n_trials = sum(len(s.trials) for s in studies)
    heading = title or "netgraft search report: " + ", ".join(s.label for s in studies)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="netgraft {e(version)}">
<title>{e(heading)}</title>
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>{e(heading)}</h1>
<div class="meta">storage {e(source)} · {len(studies)} stud{'y' if len(studies) == 1 else 'ies'},
{n_trials} trials · generated {generated} by netgraft {e(version)}</div>
{"".join(notices)}
{summary_table(studies)}
{figs}
<h2>All trials</h2>
<div class="caption">Failed trials are red, with the reason; click a column header to sort.</div>
<div class="tablewrap">{trials_table(studies)}</div>
<script>{SORT_JS}</script>
</body></html>
"""
