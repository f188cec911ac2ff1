"""netgraft.report: synthetic studies following docs/NAS contract -> one self-contained HTML page."""
from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime, timedelta

import optuna
import pytest

from netgraft.errors import NetgraftError
from netgraft.report import ReportError, load_studies, pareto_front, write_report
from netgraft.report.data import redact
from netgraft.report.cli import main as report_main

optuna.logging.set_verbosity(optuna.logging.WARNING)
T0 = datetime(2026, 11, 25, 12, 0, 0)

# (number, accuracy, params, latency, parent_trial, similarity) -- COMPLETE trials of "warm";
# trial 1 is grafted from a pool model outside the study (parent set, parent_trial None)
WARM = [(0, 0.70, 50_000, 1.0, None, None), (1, 0.78, 80_000, 1.4, "outside", 0.55),
        (2, 0.81, 120_000, 1.9, 1, 0.92), (4, 0.83, 300_000, 3.0, 2, 0.74),
        (5, 0.76, 40_000, 0.8, 0, 0.35), (6, 0.80, 150_000, 2.2, 2, 0.88),
        (8, 0.79, 100_000, 1.5, "elsewhere", 0.6)]
# trial 8 names parent_trial 4 but its parent's pool key is not trial 4's: grafted from trial
# 4 of another study sharing the pool, so no lineage edge in this study
WARM_FAILED = {3: "diverged at step 37", 7: "build: <width 8> too narrow for groups=16"}
# warm front on (accuracy max, params min): 0 (cheapest-but-one, 0.70? dominated by 5? 5 has
# 40k params and 0.76 > 0.70 -> 0 dominated), 5, 1, 2, 4; 6 dominated by 2 (0.81 @120k)
WARM_FRONT = {5, 1, 2, 4, 8}
WARM_EDGES = {(1, 2), (2, 4), (0, 5), (2, 6)}
COLD = [(0, 0.65, 60_000, 1.1), (1, 0.72, 200_000, 2.5), (2, 0.69, 90_000, 1.5),
        (4, 0.74, 400_000, 4.0), (5, 0.72, 200_000, 2.6)]
COLD_FAILED = {3: "diverged at step 12"}
COLD_FRONT = {0, 2, 1, 5, 4}            # 1 and 5 are duplicates: both on the front
# 2-objective study (accuracy max, latency_ms min); params deliberately anti-correlated so a
# front on params would differ
MO = [(0, 0.70, 900_000, 1.0), (1, 0.75, 800_000, 2.0), (2, 0.74, 100_000, 2.5),
      (3, 0.80, 50_000, 4.0), (4, 0.79, 20_000, 5.0), (5, 0.60, 10_000, 0.9)]
MO_FRONT = {0, 1, 3, 5}                 # 2 dominated by 1, 4 by 3


def _attrs(n, acc, params, lat, *, warm=False, parent_trial=None, sim=None, parent_arch=None):
    grafted = sim is not None
    return {"arch": f"resnet d=1-{n % 3 + 1}-2-1 w={8 * (n + 1)} k=3 basic",
            "arch_params": {"depth": n % 3 + 1, "width": 8 * (n + 1)},
            "accuracy": acc, "params": params, "flops": params * 40, "latency_ms": lat,
            "warm": grafted, "parent": (f"key{parent_trial}" if grafted else None),
            "parent_trial": (parent_trial if isinstance(parent_trial, int)
                             else 4 if parent_trial == "elsewhere" else None),
            "parent_arch": parent_arch if grafted else None, "similarity": sim,
            "coverage": (0.5 + sim / 2) if grafted else None, "pool_key": f"key{n}",
            "train_seconds": 30.0 + n, "steps": 200,
            "accuracy_at_0": (acc * sim if grafted else 0.1)}


def _add(study, n, state, values=None, attrs=None, minutes=None):
    dist = {"width": optuna.distributions.IntDistribution(8, 128, step=8)}
    t = optuna.trial.create_trial(state=state, values=values, params={"width": 8 * (n + 1)},
                                  distributions=dist, user_attrs=attrs or {})
    start = T0 + timedelta(minutes=2 * n if minutes is None else minutes)
    t.datetime_start = start
    t.datetime_complete = None if state == optuna.trial.TrialState.RUNNING else start + timedelta(seconds=90)
    study.add_trial(t)


def _new(url, name, objectives, warm):
    dirs = ["maximize" if o == "accuracy" else "minimize" for o in objectives]
    s = optuna.create_study(storage=url, study_name=name, directions=dirs)
    for k, v in {"netgraft_version": "0.1.0", "space": "resnet-small", "dataset": "fashion-mnist",
                 "objectives": objectives, "warm": warm, "pool": "/tmp/pool" if warm else ""}.items():
        s.set_user_attr(k, v)
    return s


def build_db(path, with_mo=True, with_running=True):
    url = f"sqlite:///{path}"
    F, C = optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE
    warm = _new(url, "warm", ["accuracy"], True)
    rows = {r[0]: r for r in WARM}
    for n in range(9):
        if n in WARM_FAILED:
            _add(warm, n, F, attrs={"fail_reason": WARM_FAILED[n]})
            continue
        _, acc, params, lat, pt, sim = rows[n]
        _add(warm, n, C, [acc], _attrs(n, acc, params, lat, warm=True, parent_trial=pt, sim=sim,
                                      parent_arch="resnet d=1-1-1-1 w=8"))
    cold = _new(url, "cold", ["accuracy"], False)
    rows = {r[0]: r for r in COLD}
    for n in range(6):
        if n in COLD_FAILED:
            _add(cold, n, F, attrs={"fail_reason": COLD_FAILED[n]})
        else:
            _, acc, params, lat = rows[n]
            _add(cold, n, C, [acc], _attrs(n, acc, params, lat), minutes=3 * n)
    if with_running:
        # netgraft.nas marks a running trial in advance, for the case it gets interrupted
        _add(cold, 6, optuna.trial.TrialState.RUNNING, attrs={"fail_reason": "interrupted (provisional)"})
    if with_mo:
        mo = _new(url, "mo", ["accuracy", "latency_ms"], False)
        for n, acc, params, lat in MO:
            _add(mo, n, C, [acc, lat], _attrs(n, acc, params, lat))
    return url


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "search.db"
    build_db(path)
    return path


def plot_data(page: str, div_id: str) -> tuple[list[dict], dict]:
    """The (data, layout) plotly was given for the figure in div `div_id`."""
    m = re.search(r'Plotly\.newPlot\(\s*"%s",\s*' % re.escape(div_id), page)
    assert m, f"no figure {div_id}"
    dec = json.JSONDecoder()
    data, end = dec.raw_decode(page, m.end())
    layout, _ = dec.raw_decode(page, page.index("{", end))
    return data, layout


def data_points(page: str, div_id: str) -> int:
    return int(re.search(r'data-plot="%s" data-points="(\d+)"' % div_id, page).group(1))


def markers(data, study):
    return [t for t in data if t.get("mode") == "markers" and t.get("legendgroup") == study]


# ---------------------------------------------------------------------------------------------


def test_pareto_front_by_hand():
    mx, mn = "maximize", "minimize"
    pts = [(0.7, 50), (0.8, 100), (0.75, 100), (0.8, 100), (0.6, 10), (0.6, 20), (None, 1), (float("nan"), 1)]
    assert pareto_front(pts, [mx, mn]) == [0, 1, 3, 4]
    assert pareto_front([(1, 1, 1), (2, 0, 0), (0, 2, 0), (1, 1, 0)], [mx, mx, mx]) == [0, 1, 2]
    assert pareto_front([], [mx]) == []
    assert pareto_front([(3,), (5,), (5,)], [mx]) == [1, 2]


def test_load_studies_contract(db):
    studies = {s.name: s for s in load_studies(db)}
    assert list(studies) == ["warm", "cold", "mo"]
    warm, cold, mo = studies["warm"], studies["cold"], studies["mo"]
    assert warm.warm is True and cold.warm is False
    assert [t.number for t in warm.finished] == [r[0] for r in WARM]
    assert {t.number: t.fail_reason for t in warm.failed} == WARM_FAILED
    assert [t.state for t in cold.trials].count("RUNNING") == 1
    # single objective: front on (accuracy max, params min); two objectives: the study's own
    assert warm.front_objectives == (["accuracy", "params"], ["maximize", "minimize"])
    assert mo.front_objectives == (["accuracy", "latency_ms"], ["maximize", "minimize"])
    assert {t.number for t in warm.finished if t.pareto} == WARM_FRONT
    assert {t.number for t in cold.finished if t.pareto} == COLD_FRONT
    assert {t.number for t in mo.finished if t.pareto} == MO_FRONT
    t2 = next(t for t in warm.trials if t.number == 2)
    assert (t2.parent_trial, t2.similarity, t2.coverage, t2.params) == (1, 0.92, 0.5 + 0.92 / 2, 120_000)
    assert load_studies(f"sqlite:///{db}", ["mo", "warm"])[0].name == "mo"


def test_page_points_pareto_lineage_progress(db, tmp_path):
    out = tmp_path / "report.html"
    write_report(db, out)
    page = out.read_text()
    # self-contained: plotly.js inlined, nothing fetched from the network
    from plotly.offline import get_plotlyjs
    js = get_plotlyjs()
    assert page.count(js) == 1 and "Plotly.newPlot" in page
    rest = page.replace(js, "")           # (plotly.js itself names CDNs for map tiles only)
    assert "<script src" not in rest and "http://" not in rest and "https://" not in rest

    n_fin = {"warm": len(WARM), "cold": len(COLD), "mo": len(MO)}
    # --- scatter: one markers trace per study and x-axis (params, latency), Pareto outlined
    data, layout = plot_data(page, "pareto")
    assert layout["xaxis"]["title"]["text"] == "parameters" and layout["xaxis"]["type"] == "log"
    assert layout["xaxis2"]["title"]["text"].startswith("CPU latency")
    fronts = {"warm": WARM_FRONT, "cold": COLD_FRONT, "mo": MO_FRONT}
    for name, n in n_fin.items():
        traces = markers(data, name)
        assert [len(t["x"]) for t in traces] == [n, n]
        for t in traces:
            on_front = {num for num, size in zip(t["customdata"], t["marker"]["size"]) if size == 11}
            assert on_front == fronts[name]
            assert all("parent:" in h and "similarity:" in h and "coverage:" in h and "arch:" in h
                       for h in t["hovertext"])
    assert data_points(page, "pareto") == 2 * sum(n_fin.values())
    # 2-objective staircases: accuracy-params front in the params panel for warm/cold,
    # accuracy-latency front in the latency panel for "mo"
    stairs = {t["legendgroup"]: t for t in data if t.get("mode") == "lines"}
    assert set(stairs) == {"warm", "cold", "mo"}
    assert stairs["mo"]["name"] == "Pareto front (mo (cold))" and stairs["mo"]["xaxis"] == "x2"
    assert stairs["mo"]["x"] == sorted(r[3] for r in MO if r[0] in MO_FRONT)
    assert stairs["warm"]["x"] == sorted(r[2] for r in WARM if r[0] in WARM_FRONT)
    assert stairs["warm"]["xaxis"] == "x"
    warm_hover = markers(data, "warm")[0]["hovertext"]
    assert "trial #2" in warm_hover[2] and "similarity: 0.92" in warm_hover[2] and "coverage: 96.0%" in warm_hover[2]
    assert "parent: trial #1" in warm_hover[2] and "none (random init)" in warm_hover[0]
    assert "trial #4 outside this study" in warm_hover[-1]

    # --- lineage: edges parent -> child, one subplot per study
    data, layout = plot_data(page, "lineage")
    assert data_points(page, "lineage") == sum(n_fin.values())
    edges = set()
    for t in data:
        if t.get("mode") == "lines" and t["name"].startswith("similarity") and t.get("yaxis", "y") == "y":
            xs = t["x"]
            edges |= {(xs[i], xs[i + 1]) for i in range(0, len(xs), 3)}
    assert edges == WARM_EDGES
    grafted = [t for t in data if t.get("mode") == "markers" and t["name"].startswith("grafted")]
    assert len(grafted) == 1 and sorted(grafted[0]["customdata"]) == [1, 2, 4, 5, 6, 8]
    symbols = dict(zip(grafted[0]["customdata"], grafted[0]["marker"]["symbol"]))
    assert symbols == {1: "diamond", 2: "circle", 4: "circle", 5: "circle", 6: "circle", 8: "diamond"}
    assert sum(len(t["x"]) for t in data if t.get("mode") == "markers") == sum(n_fin.values())

    # --- progress: best so far by trial number and by time, per study
    data, _ = plot_data(page, "progress")
    best = [t for t in data if t.get("mode") == "lines" and t["legendgroup"] == "cold"]
    assert best[0]["y"] == [0.65, 0.72, 0.72, 0.74, 0.74]
    assert best[1]["x"] == pytest.approx([1.5, 4.5, 7.5, 13.5, 16.5])   # minutes: 3n + 1.5
    assert data_points(page, "progress") == 2 * sum(n_fin.values())

    # --- tables: every trial once, failed ones with their reason (escaped)
    assert page.count('<tr class="fail"') == len(WARM_FAILED) + len(COLD_FAILED)
    assert page.count('<tr class="other"') == 1
    assert "diverged at step 37" in page and "build: &lt;width 8&gt; too narrow" in page
    assert "<width 8>" not in page and "provisional" not in page
    assert page.count("data-study=") == 9 + 7 + len(MO)
    assert "pool entry keyelsew (trial #4 outside this study)" in page


def test_study_selection_and_partial(tmp_path):
    path = tmp_path / "s.db"
    url = build_db(path, with_mo=False)
    empty = _new(url, "empty", ["accuracy"], True)
    _add(empty, 0, optuna.trial.TrialState.FAIL, attrs={"fail_reason": "build: bad width"})
    out = tmp_path / "r.html"
    write_report(path, out, studies=["cold", "empty"])
    page = out.read_text()
    assert 'has no finished trials yet' in page and "build: bad width" in page
    data, _ = plot_data(page, "pareto")
    assert {t["name"] for t in data if t.get("mode") == "markers"} == {"cold"}
    assert data_points(page, "pareto") == 2 * len(COLD)
    with pytest.raises(ReportError, match=r"no finished trials in empty .*1× build: bad width"):
        write_report(path, tmp_path / "e.html", studies=["empty"])
    assert not (tmp_path / "e.html").exists()


def test_plain_optuna_study_without_contract_attrs(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    s = optuna.create_study(storage=url, study_name="plain", direction="maximize")
    s.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=4)
    out = tmp_path / "p.html"
    write_report(url, out)
    data, _ = plot_data(out.read_text(), "lineage")
    assert sum(len(t["x"]) for t in data if t.get("mode") == "markers") == 4


def test_foreign_study_without_accuracy(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    s = optuna.create_study(storage=url, study_name="loss", directions=["minimize", "minimize"])
    s.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=2)
    with pytest.raises(ReportError, match=r"2× complete without an 'accuracy'"):
        write_report(url, tmp_path / "x.html")


def test_errors(tmp_path):
    with pytest.raises(ReportError, match="no such file"):
        write_report(tmp_path / "nope.db", tmp_path / "r.html")
    with pytest.raises(ReportError, match="no such file"):
        write_report(f"sqlite:///{tmp_path / 'nope.db'}", tmp_path / "r.html")
    assert not (tmp_path / "nope.db").exists()          # optuna must not create it
    (tmp_path / "text.db").write_text("hello, not sqlite " * 100)
    with pytest.raises(ReportError, match="not a sqlite database"):
        write_report(tmp_path / "text.db", tmp_path / "r.html")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as con:
        con.execute("create table foo (x int)")
    before = other.read_bytes()
    with pytest.raises(ReportError, match="without Optuna tables"):
        write_report(other, tmp_path / "r.html")
    assert other.read_bytes() == before                 # untouched
    optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(ReportError, match="holds no studies"):
        write_report(tmp_path / "empty.db", tmp_path / "r.html")
    build_db(tmp_path / "s.db", with_mo=False)
    with pytest.raises(ReportError, match=r"no study named 'hot'; studies here: warm, cold"):
        write_report(tmp_path / "s.db", tmp_path / "r.html", studies=["warm", "hot"])
    # damaged past the pages that list the studies (QA, session 16: an Optuna traceback)
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes((tmp_path / "s.db").read_bytes())
    with open(damaged, "r+b") as f:
        f.seek(8192)
        f.write(b"X" * 53)
    with pytest.raises(ReportError, match="damaged.db: cannot read the Optuna storage: "
                                          "DatabaseError: database disk image is malformed"):
        write_report(damaged, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
    with pytest.raises(NetgraftError, match="output folder does not exist"):
        write_report(tmp_path / "s.db", tmp_path / "missing" / "r.html")
    assert not (tmp_path / "r.html").exists()
    assert list(tmp_path.glob(".r.html*")) == []        # no temporary file left behind
    assert issubclass(ReportError, NetgraftError)
    # passwords in storage URLs never reach messages or pages
    assert redact("postgresql://bob:s3cret@db.host:5432/nas") == "postgresql://bob:***@db.host:5432/nas"
    assert redact("postgresql+psycopg2://bob:p:w@h/nas") == "postgresql+psycopg2://bob:***@h/nas"
    assert redact("sqlite:///a/b:c@d.db") == "sqlite:///a/b:c@d.db" and redact("x.db") == "x.db"
    with pytest.raises(ReportError, match=r"postgresql://bob:\*\*\*@127.0.0.1:1/nas: cannot read") as err:
        write_report("postgresql://bob:s3cret@127.0.0.1:1/nas", tmp_path / "r.html")
    assert "s3cret" not in str(err.value)


def test_cli(db, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert report_main([str(db), "--study", "warm", "--study", "cold", "--out", str(out),
                        "--title", "warm vs cold"]) == 0
    msg = capsys.readouterr().out
    assert f"wrote {out}" in msg and "warm: 7 finished, 2 failed, best 83.0%" in msg
    page = out.read_text()
    assert "<title>warm vs cold</title>" in page and "Pareto front (mo)" not in page
    assert report_main([str(tmp_path / "missing.db"), "--out", str(tmp_path / "new.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("netgraft report: error:") and "no such file" in err and "Traceback" not in err


def test_cli_never_writes_over_the_database_it_shows(db, tmp_path, capsys):
    before = db.read_bytes()
    (tmp_path / "link.html").symlink_to(db)
    (tmp_path / "hard.html").hardlink_to(db)
    for storage, out in ((db, db), (f"sqlite:///{db}", db), (db, tmp_path / "link.html"),
                         (db, tmp_path / "hard.html")):
        for force in ([], ["--force"]):   # --force never allows it
            assert report_main([str(storage), "--out", str(out)] + force) == 2, (out, force)
            err = capsys.readouterr().err
            assert f"--out {out} is the search's database" in err and "Traceback" not in err, err
    assert db.read_bytes() == before and (tmp_path / "link.html").is_symlink()
    with pytest.raises(ReportError, match="is the search's database"):
        write_report(db, tmp_path / "link.html")   # the library refuses too
    assert db.read_bytes() == before and len(load_studies(db)) == 3


def test_cli_replaces_an_existing_out_only_with_force(db, tmp_path, capsys):
    from netgraft.cli import main as netgraft_main

    out = tmp_path / "r.html"
    out.write_text("my notes")
    assert netgraft_main(["report", str(db), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"netgraft report: error: --out {out} already exists: pass --force" in err, err
    assert out.read_text() == "my notes"
    assert netgraft_main(["report", str(db), "--out", str(out), "--force"]) == 0
    assert "<html" in out.read_text()[:500]
    upper = tmp_path / "R.HTM"
    assert report_main([str(db), "--out", str(upper)]) == 0 and upper.is_file()


@pytest.mark.parametrize("name", ["r12.pdf", "report", "r.html.txt", "other.db"])
def test_cli_refuses_an_out_that_is_not_html(db, tmp_path, capsys, name):
    out = tmp_path / name
    assert report_main([str(db), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out}: the report is an HTML page; give a file name ending in .html" in err
    assert not out.exists()


def test_flops_panel_and_three_objectives(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    C = optuna.trial.TrialState.COMPLETE
    fl = _new(url, "flops2", ["accuracy", "flops"], True)
    for n, acc, params, lat in MO:               # flops = 40 * params
        _add(fl, n, C, [acc, params * 40], _attrs(n, acc, params, lat))
    three = _new(url, "three", ["accuracy", "params", "latency_ms"], False)
    for n, acc, params, lat in MO:
        _add(three, n, C, [acc, params, lat], _attrs(n, acc, params, lat))
    studies = {s.name: s for s in load_studies(url)}
    # (accuracy max, flops min): 4 (0.79 @ 800k) dominates 2 (0.74 @ 4M) ... by hand:
    assert {t.number for t in studies["flops2"].finished if t.pareto} == {3, 4, 5}
    # three objectives: 2 is dominated by 1 on accuracy and latency but has fewer params -> front
    assert {t.number for t in studies["three"].finished if t.pareto} == {0, 1, 2, 3, 4, 5}
    out = tmp_path / "f.html"
    write_report(url, out)
    data, layout = plot_data(out.read_text(), "pareto")
    assert layout["xaxis3"]["title"]["text"] == "FLOPs"
    stairs = [t for t in data if t.get("mode") == "lines"]
    assert [(t["legendgroup"], t["xaxis"]) for t in stairs] == [("flops2", "x3")]   # none for 3-D
    assert stairs[0]["x"] == [r[2] * 40 for r in sorted(MO, key=lambda r: r[2]) if r[0] in {3, 4, 5}]
    assert data_points(out.read_text(), "pareto") == 3 * 2 * len(MO)


def test_a_warm_trial_that_did_not_graft_says_why_and_foreign_studies_are_named(tmp_path):
    """QA (session 16): a warm trial whose pool weights could not be read was shown as random
    init with its reason (`warm_note`) nowhere; a study minimising a loss was shown as
    accuracy ("best 189.4%"); an infinite attribute crashed the report."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    C = optuna.trial.TrialState.COMPLETE
    warm = _new(url, "warm", ["accuracy"], True)
    note = "skipped 92a516c4b875: pool/92a5.safetensors is not a readable safetensors file"
    _add(warm, 0, C, [0.6], {**_attrs(0, 0.6, 1000, 1.0), "warm_note": note})
    _add(warm, 1, C, [0.7], {**_attrs(1, 0.7, 2000, 1.0), "params": float("inf")})
    out = tmp_path / "r.html"
    write_report(tmp_path / "s.db", out)
    page = out.read_text()
    assert f"none (random init): {note}" in page
    loss = optuna.create_study(storage=url, study_name="loss", direction="minimize")
    _add(loss, 0, C, [1.894])
    with pytest.raises(ReportError, match="study 'loss' was not made by `netgraft search`: it "
                                          "minimises its one objective"):
        write_report(tmp_path / "s.db", tmp_path / "r2.html", studies=["loss"])
    assert not (tmp_path / "r2.html").exists()


def test_a_foreign_study_in_percent_is_read_as_percent(tmp_path):
    """QA (session 16): a study made by another tool that maximises an accuracy in percent
    was shown ×100 ("best 8940.0%"); an objective that is no accuracy is refused by name."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    C = optuna.trial.TrialState.COMPLETE
    pct = optuna.create_study(storage=url, study_name="pct", direction="maximize")
    _add(pct, 0, C, [71.5])
    _add(pct, 1, C, [89.4])
    (data,) = load_studies(url, ["pct"])
    assert [t.accuracy for t in data.finished] == pytest.approx([0.715, 0.894])
    frac = optuna.create_study(storage=url, study_name="frac", direction="maximize")
    _add(frac, 0, C, [0.894])
    (data,) = load_studies(url, ["frac"])
    assert data.finished[0].accuracy == pytest.approx(0.894)
    reward = optuna.create_study(storage=url, study_name="reward", direction="maximize")
    _add(reward, 0, C, [-3.0])
    _add(reward, 1, C, [250.0])
    with pytest.raises(ReportError, match="its one objective ranges -3 to 250, which is no accuracy"):
        write_report(tmp_path / "s.db", tmp_path / "r.html", studies=["reward"])
    assert not (tmp_path / "r.html").exists()


def test_a_failed_or_running_trial_names_its_parent_in_this_study(tmp_path):
    """QA (session 23): a trial interrupted (FAIL) or still running, grafted from trial #0 of
    the same study, was shown as grafted from "trial #0 outside this study"."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    C, F, R = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
               optuna.trial.TrialState.RUNNING)
    warm = _new(url, "warm", ["accuracy"], True)
    _add(warm, 0, C, [0.6], _attrs(0, 0.6, 1000, 1.0))
    grafted = {k: v for k, v in _attrs(1, 0.7, 2000, 1.0, parent_trial=0, sim=0.8).items()
               if k in ("warm", "parent", "parent_trial", "similarity", "parent_arch")}
    _add(warm, 1, F, attrs={**grafted, "fail_reason": "interrupted"})
    _add(warm, 2, R, attrs=grafted)
    (study,) = load_studies(tmp_path / "s.db")
    assert {t.number: t.lineage_parent for t in study.trials} == {0: None, 1: 0, 2: 0}
    out = tmp_path / "r.html"
    write_report(tmp_path / "s.db", out)
    assert "trial #0 outside this study" not in out.read_text()


def test_an_interrupted_trial_is_counted_as_search_counts_it(tmp_path, capsys):
    """QA (session 24): `report` counted a trial stopped by Ctrl-C (or a killed worker) as
    failed, where `netgraft search` leaves it out of the budget and reruns it."""
    from netgraft.cli import main
    from netgraft.nas.search import INTERRUPTED

    url = f"sqlite:///{tmp_path / 's.db'}"
    C, F = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL
    warm = _new(url, "warm", ["accuracy"], True)
    _add(warm, 0, C, [0.6], _attrs(0, 0.6, 1000, 1.0))
    _add(warm, 1, F, attrs={"fail_reason": "diverged (loss nan)", "fail_kind": "failed"})
    _add(warm, 2, F, attrs={"fail_reason": "error: boom", "fail_kind": "error"})
    _add(warm, 3, F, attrs={"fail_reason": "interrupted by the user (Ctrl-C)",
                            "fail_kind": "interrupted"})
    _add(warm, 4, F, attrs={"fail_reason": INTERRUPTED})  # a study from before fail_kind
    (study,) = load_studies(tmp_path / "s.db")
    assert [t.number for t in study.failed] == [1, 2]
    assert [t.number for t in study.interrupted] == [3, 4]
    out = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "s.db"), "--out", str(out)]) == 0
    assert "warm: 1 finished, 2 failed, 2 interrupted, best 60.0%" in capsys.readouterr().out
    page = out.read_text()
    # the summary row: finished 1, failed 2, interrupted 2, other 0
    assert "<td>1</td><td>2</td><td>2</td><td>0</td>" in page
    assert page.count(">INTERRUPTED<") == 2
