"""The transfer-quality benchmark (netgraft.bench): metrics, pair list, outputs, a micro run."""
import json
import math
import os
import re

import pytest
import torch
from torch import nn

from netgraft import bench, training
from netgraft.models import canonical_spec, split_specs
from netgraft.bench import (BUDGETS, INITS, PAIRS, QUICK_PAIRS, RELATIONS, ZOO, Config, Pair,
                            budget_steps, compute_metrics, eval_points, format_speedup, mean_curve,
                            speedup, steps_to_reach, to_markdown, write_outputs)


# ----------------------------------------------------------------------------- schedule
def test_eval_points_main_regime():
    pts = eval_points(62, 3)  # 4,000 images, batch 64
    assert pts == sorted(set(pts))
    assert {0, 25, 50, 75, 100, 62, 186} <= set(pts)
    assert max(pts) == 186
    q = 62 / 4
    grid = [p for p in pts if p not in (0, 25, 50, 75, 100, 62, 186)]
    assert grid and all(min(abs(p - f) for f in (0, 25, 50, 75, 100)) >= q / 2 for p in grid)
    assert all(b - a >= 5 for a, b in zip(pts, pts[1:]))  # no near-duplicate evaluations


def test_eval_points_short_run_keeps_quarter_epochs():
    pts = eval_points(15, 3)  # 1,000 images: 45 steps, shorter than the 50/100-step budgets
    assert pts[0] == 0 and pts[-1] == 45 and 15 in pts and 25 in pts
    assert 50 not in pts and 100 not in pts
    assert len(pts) >= 10  # a curve dense enough for a speedup


def test_budget_steps():
    assert budget_steps(62, 3) == {"step_0": 0, "step_50": 50, "step_100": 100, "epoch_1": 62,
                                   "final": 186}
    short = budget_steps(15, 3)
    assert short["step_50"] is None and short["step_100"] is None and short["final"] == 45
    assert tuple(short) == BUDGETS


# ----------------------------------------------------------------------------- metrics
RANDOM = [(0, 0.10), (50, 0.50), (100, 0.70), (150, 0.80)]


def test_steps_to_reach_first_evaluated_step():
    assert steps_to_reach(RANDOM, 0.80) == 150
    assert steps_to_reach(RANDOM, 0.60) == 100  # not interpolated between evaluations
    assert steps_to_reach([(0, 0.9), (10, 0.95)], 0.8) == 0
    assert steps_to_reach([(0, 0.1), (10, 0.5)], 0.8) is None


def test_speedup_number():
    sp = speedup(RANDOM, [(0, 0.30), (50, 0.80), (100, 0.85), (150, 0.86)])
    assert sp["status"] == "ok" and sp["threshold"] == 0.80
    assert sp["steps_random"] == 150 and sp["steps"] == 50 and sp["speedup"] == pytest.approx(3.0)
    assert format_speedup(sp) == "3.0×"
    later = speedup(RANDOM, [(0, 0.30), (50, 0.70), (100, 0.90), (150, 0.90)])
    assert later["steps"] == 100 and later["speedup"] == pytest.approx(1.5)
    # just below the threshold at step 0 and above it at the first evaluation: no blow-up
    early = speedup(RANDOM, [(0, 0.799), (50, 0.81), (100, 0.82), (150, 0.83)])
    assert early["steps"] == 50 and early["speedup"] == pytest.approx(3.0)


def test_speedup_never_reached_is_null():
    sp = speedup(RANDOM, [(0, 0.30), (50, 0.60), (100, 0.70), (150, 0.79)])
    assert sp["status"] == "never" and sp["speedup"] is None and sp["steps"] is None
    assert format_speedup(sp).startswith("<1")


def test_speedup_at_step_zero_and_degenerate():
    sp = speedup(RANDOM, [(0, 0.85), (50, 0.70), (100, 0.80), (150, 0.82)])
    assert sp["status"] == "at_step_0" and sp["speedup"] is None
    assert format_speedup(sp).startswith("∞")
    flat = speedup([(0, 0.1), (50, 0.1)], [(0, 0.2), (50, 0.3)])
    assert flat["status"] == "degenerate" and flat["speedup"] is None


def test_mean_curve_over_seeds_and_divergence():
    assert mean_curve([[(0, 0.1), (10, 0.5)], [(0, 0.3), (10, 0.7)]]) == [
        (0, pytest.approx(0.2)), (10, pytest.approx(0.6))]
    # a diverged seed stops early: its missing points count as chance
    assert mean_curve([[(0, 0.2), (10, 0.6)], [(0, 0.2)]], chance=0.1)[1] == (10, pytest.approx(0.35))
    assert mean_curve([]) == []


def _runs(pair, init, curves, coverage=0.5, regime="main"):
    return [{"pair": pair.key, "source": pair.source, "target": pair.target,
             "relation": pair.relation, "init": init, "seed": seed, "regime": regime,
             "coverage": 0.0 if init == "random" else coverage, "transfer_seconds": 0.1,
             "history": [list(p) for p in curve], "train_seconds": 1.0, "diverged": False,
             "shared_with": None} for seed, curve in enumerate(curves)]


SAME = Pair("resnet18", "resnet34", "deeper")
CROSS = Pair("convnext_atto", "resnet18", "cross-family")


def _fake_runs():
    # steps per epoch 50 with batch 64 -> 3,200 images; 3 epochs = 150 steps
    runs = []
    runs += _runs(SAME, "random", [RANDOM, RANDOM])
    runs += _runs(SAME, "graft", [[(0, 0.60), (50, 0.80), (100, 0.85), (150, 0.88)]] * 2, 1.0)
    runs += _runs(CROSS, "random", [RANDOM, [(0, 0.10), (50, 0.40), (100, 0.60), (150, 0.70)]])
    runs += _runs(CROSS, "graft", [[(0, 0.10), (50, 0.55), (100, 0.60), (150, 0.70)]] * 2, 0.4)
    return runs


def _fake_metrics():
    cfg = Config(regimes={"main": 3200}, pairs=(SAME, CROSS), inits=("random", "graft"))
    return cfg, compute_metrics(_fake_runs(), cfg.pairs, cfg.inits, cfg.regimes, cfg,
                                {"resnet18": 0.90, "convnext_atto": 0.88})


def test_compute_metrics_ratios_gains_speedup():
    _, metrics = _fake_metrics()
    m = metrics["main"]
    assert m["steps"] == 150 and m["budgets"]["epoch_1"] == 50
    same = m["pairs"][0]["inits"]["graft"]
    assert same["ratio"]["step_0"] == pytest.approx(6.0)
    assert same["ratio"]["final"] == pytest.approx(0.88 / 0.80)
    assert same["gain_points"]["final"] == pytest.approx(8.0)
    assert same["speedup"]["speedup"] == pytest.approx(3.0)
    assert same["step0_vs_source"] == pytest.approx(0.60 / 0.90)
    cross = m["pairs"][1]["inits"]["graft"]
    # random's seed-mean final accuracy is 0.75; the graft ends at 0.70: never reached
    assert cross["speedup"]["status"] == "never" and cross["speedup"]["speedup"] is None
    assert cross["gain_points"]["final"] == pytest.approx(-5.0)


def test_summary_means_by_family():
    _, metrics = _fake_metrics()
    s = metrics["main"]["summary"]
    assert s["all"]["pairs"] == 2 and s["same-family"]["pairs"] == 1 and s["cross-family"]["pairs"] == 1
    g = s["all"]["graft"]
    assert g["ratio"]["final"] == pytest.approx((0.88 / 0.80 + 0.70 / 0.75) / 2)
    assert g["gain_points"]["final"] == pytest.approx((8.0 - 5.0) / 2)
    assert g["coverage"] == pytest.approx(0.7)
    assert g["speedup"]["ok"] == 1 and g["speedup"]["never"] == 1
    assert g["speedup"]["geomean_finite"] == pytest.approx(3.0)
    assert g["speedup"]["median"] == pytest.approx(1.5)  # median of (3.0, never = 0)
    assert s["growth"]["graft"]["step0_vs_source"] == pytest.approx(0.60 / 0.90)
    assert s["same-family"]["graft"]["speedup"]["median"] == pytest.approx(3.0)
    assert "ratio" not in s["all"]["random"]


# ----------------------------------------------------------------------------- pairs, inits
def test_pair_list():
    import timm

    assert len(PAIRS) >= 12
    assert len({p.key for p in PAIRS}) == len(PAIRS)
    for p in PAIRS:
        assert p.source in ZOO, p
        assert p.relation in RELATIONS, p
        assert p.source != p.target
        assert timm.is_model(p.source) and timm.is_model(p.target)
    assert {p.family for p in PAIRS} == {"same-family", "cross-family"}
    assert {p.relation for p in PAIRS} == set(RELATIONS)
    assert set(ZOO) == {p.source for p in PAIRS}
    assert set(QUICK_PAIRS) <= {p.key for p in PAIRS}
    assert len(QUICK_PAIRS) == 3


def test_find_pairs():
    assert bench.find_pairs(["resnet18:resnet34"]) == (PAIRS[0],)
    custom = bench.find_pairs(["a:b:wider"])[0]
    assert custom == Pair("a", "b", "wider") and custom.family == "same-family"
    with pytest.raises(ValueError, match="relation"):
        bench.find_pairs(["resnet18:vgg11"])
    # models with builder arguments: split at the colons and commas outside them
    spec = "resnet18:vit_tiny_patch16_224(img_size=32,patch_size=8):cross-family,a:b:deeper"
    vit = bench.find_pairs(split_specs(spec))[0]
    assert vit == Pair("resnet18", "vit_tiny_patch16_224(img_size=32,patch_size=8)", "cross-family")
    # a named list, and its pairs by name
    assert bench.find_pairs(["transformers"]) == bench.TRANSFORMER_PAIRS
    vit = bench.TRANSFORMER_PAIRS[0]
    assert bench.find_pairs([vit.key]) == (vit,) and vit.relation == "deeper"
    spaced = vit.key.replace(",", ", ")  # spelled with spaces: the same pair
    assert bench.find_pairs([spaced]) == (vit,)
    # a pair outside the lists, spaced: its models are named (and cached) in one spelling
    (own,) = bench.find_pairs([spaced.replace("depth=6", "depth=4") + ":shallower"])
    assert own.source == vit.source.replace("depth=6", "depth=4") and own.target == vit.target
    with pytest.raises(ValueError, match="a list \\(transformers\\)"):
        bench.find_pairs(["resnet18:vgg11"])


def test_source_cache_names_are_file_names_apart():
    cfg = bench.Config()
    assert bench._source_stem("resnet18", cfg).startswith("resnet18__")
    stems = {bench._source_stem(f"vit_tiny_patch16_224(img_size=32, patch_size={p})", cfg)
             for p in (4, 8)}
    assert len(stems) == 2
    assert stems == {bench._source_stem(f"vit_tiny_patch16_224( img_size = 32,patch_size={p} )", cfg)
                     for p in (4, 8)}  # however spaced, one cache file
    for pair in bench.TRANSFORMER_PAIRS:  # spelled canonically: cached sources keep their names
        assert canonical_spec(pair.source) == pair.source
    for stem in stems:
        assert stem.startswith("vit_tiny_patch16_224_img_size=32_patch_size=")
        assert re.fullmatch(r"[A-Za-z0-9_.=-]+", stem)


def test_inits_registry():
    assert list(INITS)[0] == "random"
    assert {"random", "iatransfer", "dpiat", "graft"} <= set(INITS)

    def net(width):
        torch.manual_seed(width)
        return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))

    source, target = net(8), net(12)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    out = INITS["random"](source, target)
    assert out == {"coverage": 0.0, "transfer_seconds": 0.0}
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
    out = INITS["graft"](source, target)
    assert 0.5 < out["coverage"] <= 1.0 and out["transfer_seconds"] >= 0
    assert not torch.equal(before["0.weight"], target.state_dict()["0.weight"])


def test_config_modes():
    parser = bench.add_arguments(__import__("argparse").ArgumentParser())
    full = bench.config_from_args(parser.parse_args([]))
    assert len(full.pairs) == len(PAIRS) and full.seeds == (0, 1)
    assert full.regimes == {"main": 4000, "low-data": 1000} and full.test_size == 1000
    quick = bench.config_from_args(parser.parse_args(["--quick"]))
    assert [p.key for p in quick.pairs] == list(QUICK_PAIRS) and quick.seeds == (0,)
    assert list(quick.regimes) == ["main"]
    some = bench.config_from_args(parser.parse_args(["--inits", "graft", "--low-data-size", "0"]))
    assert some.inits == ("random", "graft") and list(some.regimes) == ["main"]
    with pytest.raises(ValueError, match="unknown init"):
        bench.config_from_args(parser.parse_args(["--inits", "magic"]))


def test_threads_sizes_and_source_steps_are_checked():
    """QA (session 16): `--threads 0` ran on 1 thread, and a --train-size above the data set
    silently used all of it."""
    parser = bench.add_arguments(__import__("argparse").ArgumentParser())
    with pytest.raises(ValueError, match="--threads must be >= 0"):
        bench.config_from_args(parser.parse_args(["--threads", "-1"]))
    with pytest.raises(ValueError, match="--source-steps must be >= 1, got 0"):
        bench.config_from_args(parser.parse_args(["--source-steps", "0"]))
    assert bench._threads(3) == 3
    assert bench._threads(0) == len(os.sched_getaffinity(0)) >= 1
    cfg = bench.config_from_args(parser.parse_args(["--train-size", "70000", "--test-size", "500"]))
    assert bench.size_notes(cfg, 60000, 10000) == [
        "the main regime asks for 70000 training images; fashion-mnist has 60000, so it uses "
        "all of them"]
    assert bench.size_notes(cfg, 60000, 400)[-1] == (
        "--test-size 500 is more than the 400 test images of fashion-mnist; using all of them")
    assert bench.size_notes(bench.config_from_args(parser.parse_args([])), 60000, 10000) == []


# ----------------------------------------------------------------------------- outputs
def _fake_result():
    cfg, metrics = _fake_metrics()
    return {"benchmark": "transfer_quality", "mode": "quick", "date": "2025-01-01T00:00:00+00:00",
            "machine": {"summary": "test machine"}, "config": cfg.to_dict(),
            "sources": {name: {"accuracy": acc, "test_accuracy_full": acc, "steps": 10,
                               "batch_size": 128, "lr": 1e-3, "train_seconds": 1.0, "cached": True}
                        for name, acc in (("resnet18", 0.90), ("convnext_atto", 0.88))},
            "skipped_inits": {}, "runs": _fake_runs(), "notes": ["a note"],
            "wall_seconds": 60.0, "complete": True, "metrics": metrics}


def test_markdown_table():
    md = to_markdown(_fake_result())
    assert "| resnet18 → resnet34 | deeper | graft | 100% | 60.0 (6.00×) |" in md
    assert "3.0×" in md and "<1 (never)" in md
    assert "**mean, all**" in md and "**mean, same-family**" in md and "**mean, cross-family**" in md
    assert "Note: a note" in md
    header = next(line for line in md.splitlines() if line.startswith("| pair |"))
    for line in md.splitlines():
        if line.startswith("| ") and "→" in line or line.startswith("| **mean"):
            assert line.count("|") == header.count("|"), line


def test_write_outputs(tmp_path):
    result = _fake_result()
    result["metrics"]["main"]["pairs"][0]["inits"]["graft"]["speedup"]["extra"] = math.inf
    paths = write_outputs(result, tmp_path / "out", "tq")
    data = json.loads(paths["json"].read_text())  # strict JSON: inf became a string
    assert data["metrics"]["main"]["pairs"][0]["inits"]["graft"]["speedup"]["extra"] == "inf"
    assert data["metrics"]["main"]["summary"]["all"]["graft"]["speedup"]["never"] == 1
    assert paths["md"].read_text() == to_markdown(result)
    png = paths["png_main"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # metrics can be recomputed from the raw runs alone
    again = bench.recompute(json.loads(paths["json"].read_text()))
    assert again["metrics"]["main"]["summary"] == json.loads(json.dumps(
        bench._jsonable(_fake_metrics()[1]["main"]["summary"])))


# ----------------------------------------------------------------------------- micro run
@pytest.fixture
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_micro_run_on_digits(tmp_path, monkeypatch, _restore_threads, capsys):
    cache, out = tmp_path / "cache", tmp_path / "out"
    argv = ["--dataset", "digits", "--image-size", "16", "--pairs",
            "test_resnet:test_byobnet:cross-family", "--source-steps", "8", "--train-size", "256",
            "--low-data-size", "128", "--test-size", "60", "--epochs", "1", "--seeds", "1",
            "--cache", str(cache), "--out", str(out), "--threads", "1", "--no-progress"]
    assert bench.main(argv) == 0
    data = json.loads((out / "transfer_quality_digits.json").read_text())
    assert data["complete"] and data["machine"]["cpu_count"] and data["date"]
    assert set(data["metrics"]) == {"main", "low-data"}
    runs = data["runs"]
    assert {r["init"] for r in runs} == set(INITS)
    assert len(runs) == len(INITS) * 2 and all(r["history"][0][0] == 0 for r in runs)
    assert all(r["history"][-1][0] == 4 for r in runs if r["regime"] == "main")  # 256 // 64
    row = data["metrics"]["main"]["pairs"][0]
    assert row["relation"] == "cross-family" and "speedup" in row["inits"]["graft"]
    assert 0 < row["inits"]["graft"]["coverage"] <= 1
    aligned = row["inits"]["graft+align"]
    assert aligned["equal_time"]["extra_steps"] > 0 and aligned["step_seconds"] > 0
    assert any(r.get("alignment", {}).get("steps", 0) > 0 for r in runs if r["init"] == "graft+align")
    assert "Equal wall-clock time" in (out / "transfer_quality_digits.md").read_text()
    lr = data["config"]["lr"]
    assert all(r["lr"] == pytest.approx(0.3 * lr) for r in runs if r["init"] == "graft+align")
    assert all(r["lr"] == lr for r in runs if r["init"] != "graft+align")
    assert not data["sources"]["test_resnet"]["cached"]
    assert len(list(cache.glob("test_resnet__digits16c1__*.safetensors"))) == 1
    sidecar = json.loads(next(cache.glob("test_resnet__*.json")).read_text())
    assert sidecar["steps"] == 8 and 0 <= sidecar["test_accuracy_full"] <= 1
    assert "| test_resnet → test_byobnet | cross-family |" in capsys.readouterr().out
    assert (out / "transfer_quality_digits_main.png").is_file()

    # a rerun loads the cached source; an init whose package is missing is skipped with a note
    def missing(source, target):
        raise ImportError("iatransfer is not installed")

    monkeypatch.setitem(INITS, "iatransfer", missing)
    assert bench.main(argv + ["--low-data-size", "0"]) == 0
    data = json.loads((out / "transfer_quality_digits.json").read_text())
    assert data["sources"]["test_resnet"]["cached"]
    assert "iatransfer" in data["skipped_inits"]
    assert any("iatransfer" in n and "skipped" in n for n in data["notes"])
    assert "iatransfer" not in {r["init"] for r in data["runs"]}
    assert "iatransfer" not in data["metrics"]["main"]["pairs"][0]["inits"]


def test_equal_wall_clock_gives_random_init_the_transfer_time_as_steps():
    from netgraft.bench import equal_time, value_interpolated

    assert value_interpolated(RANDOM, 75) == (pytest.approx(0.60), False)
    assert value_interpolated(RANDOM, 400) == (0.80, True)
    entry = {"transfer_seconds": 5.0, "accuracy": {"step_50": 0.75, "step_100": 0.78,
                                                   "epoch_1": 0.72}}
    eq = equal_time(RANDOM, entry, {"step_50": 50, "step_100": 100, "epoch_1": 40}, 0.2)
    assert eq["extra_steps"] == pytest.approx(25.0)
    b50 = eq["budgets"]["step_50"]
    assert b50["random_step"] == pytest.approx(75) and b50["random_accuracy"] == pytest.approx(0.60)
    assert b50["gain_points"] == pytest.approx(15.0) and b50["ratio"] == pytest.approx(1.25)
    assert eq["budgets"]["step_100"]["random_accuracy"] == pytest.approx(0.75)
    assert equal_time(RANDOM, entry, {"step_50": 50}, None) is None  # no step time measured
    assert "graft+align" in INITS


def test_an_out_that_is_a_file_is_refused_before_any_training(tmp_path, capsys,
                                                              _restore_threads):
    """QA (session 16): `--out` naming a file failed only when the first result was written."""
    out = tmp_path / "a-file"
    out.write_text("not a folder")
    argv = ["--dataset", "digits", "--image-size", "16", "--pairs",
            "test_resnet:test_byobnet:cross-family", "--cache", str(tmp_path / "cache"),
            "--out", str(out), "--threads", "1", "--no-progress"]
    assert bench.main(argv) == 2
    assert f"--out {out}: a file, not a folder" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # no source was trained


def test_partial_results_are_written_after_every_run(tmp_path, monkeypatch, _restore_threads):
    """QA (session 30): partial results were written once a pair, so a run stopped mid-pair (a
    pair of the full run takes up to an hour) lost every training of that pair."""
    written = []
    real = bench.write_outputs

    def spy(result, out_dir, stem, **kw):
        written.append((result["metrics"] is None, len(result["runs"]), result["complete"]))
        return real(result, out_dir, stem, **kw)

    monkeypatch.setattr(bench, "write_outputs", spy)
    trained = []
    real_train = training.train

    def train_spy(model, data, **kw):
        if "eval_at" in kw:  # a target's run, not the source's training
            trained.append((kw["lr"], kw.get("warmup_steps", 0)))
        return real_train(model, data, **kw)

    monkeypatch.setattr(training, "train", train_spy)
    # an init may ask for its own fine-tuning recipe: a rate factor and a linear warm-up
    monkeypatch.setitem(INITS, "dpiat", lambda s, t: {"lr_factor": 0.5, "warmup_steps": 3})
    argv = ["--dataset", "digits", "--image-size", "16", "--pairs",
            "test_resnet:test_byobnet:cross-family", "--inits", "random,graft,dpiat",
            "--source-steps", "4", "--train-size", "128", "--low-data-size", "64",
            "--test-size", "40", "--epochs", "1", "--seeds", "1", "--cache", str(tmp_path / "c"),
            "--out", str(tmp_path / "out"), "--threads", "1", "--no-progress", "--no-plot"]
    assert bench.main(argv) == 0
    # 3 inits × 2 regimes: one partial write after each run, then the complete result
    assert written == [(True, n, False) for n in range(1, 7)] + [(False, 6, True)]
    data = json.loads((tmp_path / "out" / "transfer_quality_digits.json").read_text())
    assert data["complete"] and len(data["runs"]) == 6
    assert sorted(trained) == [(pytest.approx(5e-4), 3)] * 2 + [(1e-3, 0)] * 4
    assert sorted((r["init"], r["lr"], r.get("warmup_steps") or 0) for r in data["runs"]) == [
        ("dpiat", pytest.approx(5e-4), 3)] * 2 + [("graft", 1e-3, 0)] * 2 + [("random", 1e-3, 0)] * 2
