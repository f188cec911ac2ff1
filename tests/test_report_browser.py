"""Open a `netgraft report` page in a real headless Chromium (Debian's chromium + chromium-driver,
driven by selenium, which downloads nothing when given both paths) and check what it renders.

Also makes the README screenshot from a realistic synthetic warm-vs-cold search:

    PYTHONPATH=src python tests/test_report_browser.py --screenshot docs/report.png
"""
from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


# ---------------------------------------------------------------------------------------------
# a realistic synthetic search (contract of netgraft.nas): warm study grafts each trial from the
# most similar good trial so far; the cold study trains every trial from random init


def _key(study: str, n: int) -> str:
    return hashlib.sha256(f"{study}-{n}".encode()).hexdigest()[:16]


def _arch(rng: random.Random) -> dict:
    return {"d": [rng.randint(1, 3) for _ in range(4)], "w": rng.choice([8, 16, 24, 32]),
            "k": rng.choice([3, 5]), "block": rng.choice(["basic", "basic", "bottleneck"])}


def _arch_text(a: dict) -> str:
    return f"resnet d={'-'.join(map(str, a['d']))} w={a['w']} k={a['k']} {a['block']}"


def _params(a: dict) -> int:
    total, c_in = 1 * a["w"] * 9, a["w"]
    for s, d in enumerate(a["d"]):
        c = a["w"] * 2 ** s
        per = (2 * a["k"] ** 2 * c * c) if a["block"] == "basic" else (c * c // 2 + a["k"] ** 2 * c * c // 4 + c * c // 2)
        total += d * per + a["k"] ** 2 * c_in * c
        c_in = c
    return int(total + c_in * 10)


def _similarity(a: dict, b: dict) -> float:
    depth = sum(abs(x - y) for x, y in zip(a["d"], b["d"])) / 8
    width = abs(math.log2(a["w"] / b["w"])) / 2
    return max(0.2, 1 - 0.35 * depth - 0.25 * width - 0.1 * (a["k"] != b["k"]) - 0.2 * (a["block"] != b["block"]))


def make_search(path: str | Path, n_trials: int = 40, seed: int = 0) -> dict[str, int]:
    """Write studies "warm" and "cold" to a sqlite file; returns finished trials per study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{path}"
    finished = {}
    for warm in (True, False):
        rng = random.Random(seed)          # same sampled architectures in both studies
        noise = random.Random(seed + (1 if warm else 2))
        name = "warm" if warm else "cold"
        study = optuna.create_study(storage=url, study_name=name, directions=["maximize", "minimize"])
        for k, v in {"netgraft_version": "0.1.0", "space": "resnet-small", "dataset": "fashion-mnist",
                     "objectives": ["accuracy", "params"], "warm": warm,
                     "pool": "~/.cache/netgraft/pool" if warm else ""}.items():
            study.set_user_attr(k, v)
        clock = datetime(2026, 11, 25, 9, 0, 0)
        done: list[tuple[int, dict, float]] = []
        for n in range(n_trials):
            a = _arch(rng)
            params = _params(a)
            flops = params * 60 * (2 if a["k"] == 5 else 1)
            latency = 0.25 + flops / 4e7 * noise.uniform(0.9, 1.15)
            train_s = 18 + params / 9000 * noise.uniform(0.9, 1.1)
            start = clock
            clock += timedelta(seconds=train_s + noise.uniform(1, 4))
            dist = {"w": optuna.distributions.CategoricalDistribution([8, 16, 24, 32])}
            if noise.random() < 0.06:
                reason = noise.choice(["diverged at step 37", "diverged at step 112",
                                       f"build: width {a['w']} not divisible by groups=3"])
                t = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={"w": a["w"]},
                                              distributions=dist, user_attrs={"fail_reason": reason})
            else:
                base = 0.70 + 0.075 * math.tanh((math.log10(params) - 4.6) * 1.4) + noise.gauss(0, 0.012)
                parent = parent_trial = parent_arch = sim = cov = None
                acc0 = noise.uniform(0.08, 0.12)
                if warm:
                    good = sorted(done, key=lambda d: -d[2])[:6]
                    if len(done) < 3 or not good:
                        parent, parent_arch, pacc = "9c1f03ab57e2d4c8", "resnet18 (trained on fashion-mnist)", 0.83
                        sim = 0.35 + noise.uniform(0, 0.15)
                    else:
                        pn, pa, pacc = max(good, key=lambda d: _similarity(a, d[1]))
                        parent, parent_trial, parent_arch = _key(name, pn), pn, _arch_text(pa)
                        sim = _similarity(a, pa)
                    cov = min(1.0, 0.45 + 0.6 * sim)
                    acc0 = max(0.09, pacc * (0.2 + 0.75 * sim ** 2) + noise.gauss(0, 0.02))
                    base += 0.02 + 0.06 * sim
                acc = min(0.93, max(0.4, base))
                done.append((n, a, acc))
                t = optuna.trial.create_trial(
                    values=[acc, params], params={"w": a["w"]}, distributions=dist,
                    user_attrs={"arch": _arch_text(a), "arch_params": a, "accuracy": acc, "params": params,
                                "flops": flops, "latency_ms": latency, "warm": warm and parent is not None,
                                "parent": parent, "parent_trial": parent_trial, "parent_arch": parent_arch,
                                "similarity": sim, "coverage": cov, "pool_key": _key(name, n),
                                "train_seconds": train_s, "steps": 300, "accuracy_at_0": acc0})
            t.datetime_start, t.datetime_complete = start, clock
            study.add_trial(t)
        finished[name] = len(done)
    return finished


# ---------------------------------------------------------------------------------------------


def start_chromium(width: int = 1400, height: int = 1000):
    """A selenium Chrome driver on Debian's chromium; raises RuntimeError saying why not."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        raise RuntimeError(f"selenium is not installed ({exc})") from None
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        raise RuntimeError(f"chromium / chromedriver not found ({CHROMIUM}, {CHROMEDRIVER}); "
                           f"apt-get install chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="netgraft-chromium-")
    for f in FLAGS + [f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        opts.add_argument(f)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    except WebDriverException as exc:
        shutil.rmtree(profile, ignore_errors=True)
        raise RuntimeError(f"chromium could not be started: {str(exc).splitlines()[0]}") from None
    driver._netgraft_profile = profile
    # exact viewport, whatever the window decorations
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    return driver


def stop_chromium(driver) -> None:
    try:
        driver.quit()
    finally:
        shutil.rmtree(getattr(driver, "_netgraft_profile", ""), ignore_errors=True)


COUNT_JS = """
var out = {};
document.querySelectorAll('div.figure').forEach(function(box){
  out[box.dataset.plot] = [box.querySelectorAll('.scatterlayer .point').length, parseInt(box.dataset.points)];
});
return out;
"""


def wait_rendered(driver, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        counts = driver.execute_script(COUNT_JS)
        if counts and all(n == want for n, want in counts.values()):
            return counts
        if time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


@pytest.fixture(scope="module")
def browser():
    try:
        driver = start_chromium()
    except RuntimeError as exc:
        pytest.skip(f"headless browser test skipped: {exc}")
    yield driver
    stop_chromium(driver)


def test_report_renders_in_chromium(browser, tmp_path):
    from netgraft.report import write_report

    finished = make_search(tmp_path / "search.db", n_trials=30)
    out = tmp_path / "report.html"
    write_report(tmp_path / "search.db", out)
    browser.get(out.resolve().as_uri())
    counts = wait_rendered(browser)
    n = sum(finished.values())
    # scatter: every finished trial in the params and latency panels; lineage: once;
    # progress: by trial number and by time
    assert counts == {"pareto": [2 * n, 2 * n], "lineage": [n, n], "progress": [2 * n, 2 * n]}
    # the front's staircase lines are drawn too (one per study, in the params panel)
    assert browser.execute_script(
        "return document.querySelectorAll('#pareto .scatterlayer .trace .js-line').length") >= 2
    # hovering a point shows the trial's details (plotly draws them in .hoverlayer)
    from selenium.webdriver.common.action_chains import ActionChains
    point = browser.find_elements("css selector", "#pareto .scatterlayer .point")[0]
    ActionChains(browser).move_to_element(point).perform()
    deadline, hover = time.monotonic() + 5, ""
    while time.monotonic() < deadline and "trial #" not in hover:
        hover = browser.execute_script(
            "var h = document.querySelector('#pareto .hoverlayer'); return h ? h.textContent : ''")
        time.sleep(0.1)
    for part in ("trial #", "arch: resnet", "accuracy:", "params:", "latency:", "parent:",
                 "similarity:", "coverage:"):
        assert part in hover, (part, hover)
    # every trial is in the table; clicking a header sorts it by that column (accuracy ascending,
    # failed trials without accuracy last)
    rows = browser.find_elements("css selector", "#trials tbody tr")
    assert len(rows) == 2 * 30
    header = browser.find_elements("css selector", "#trials thead th")[3]
    assert header.text == "accuracy"
    header.click()
    accs = browser.execute_script(
        "return Array.from(document.querySelectorAll('#trials tbody tr')).map(r => r.cells[3].dataset.v)")
    vals = [float(v) for v in accs if v is not None]
    assert len(vals) == n and vals == sorted(vals) and all(v is None for v in accs[n:])
    severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == [], severe


def main(argv=None) -> int:
    import argparse

    from netgraft.report import write_report

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--screenshot", default="docs/report.png")
    p.add_argument("--html", help="also keep the HTML page here")
    p.add_argument("--size", default="1400x1000")
    p.add_argument("--storage", help="show this real search (sqlite file or URL) instead of a synthetic one")
    p.add_argument("--study", action="append", help="studies of --storage to show (default: all)")
    p.add_argument("--title", default="netgraft search: warm-started (grafted) vs cold")
    args = p.parse_args(argv)
    w, h = map(int, args.size.split("x"))
    shot = Path(args.screenshot).resolve()
    page = Path(args.html).resolve() if args.html else None
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)                      # the page shows the storage as given: "search.db"
        try:
            page = page or Path(tmp) / "report.html"
            if args.storage:
                storage = args.storage
                if "://" not in storage:  # a copy next to the page: it shows the file's name only
                    shutil.copy(Path(cwd, storage), Path(tmp, Path(storage).name))
                    storage = Path(storage).name
                write_report(storage, page, studies=args.study, title=args.title)
            else:
                make_search("search.db")
                write_report("search.db", page, title=args.title)
        finally:
            os.chdir(cwd)
        driver = start_chromium(w, h)
        try:
            driver.get(page.resolve().as_uri())
            counts = wait_rendered(driver)
            time.sleep(0.5)
            driver.save_screenshot(str(shot))
        finally:
            stop_chromium(driver)
    print(f"wrote {shot} ({counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
