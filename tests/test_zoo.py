import argparse
import copy
import json
import sqlite3
import sys
from pathlib import Path

import pytest
import timm
import torch

import netgraft
from netgraft import fingerprint as fpr
from netgraft.checkpoint import load_state_dict, save_state_dict
from netgraft.errors import CheckpointError, NetgraftError
from netgraft.similarity import below
from netgraft.zoo import Zoo, ZooError, add_rank_arguments, add_zoo_arguments, run_rank, run_zoo

SOURCES = ["resnet18", "mobilenetv3_small_050", "convnext_atto"]


def _trained_like(arch: str, seed: int):
    """A source whose weights are generic (no zero-init residual branch), as a trained one."""
    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=5, in_chans=1)
    fpr._nondegenerate(model)
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    out = {}
    for i, arch in enumerate(SOURCES):
        path = d / f"{arch}.safetensors"
        save_state_dict(_trained_like(arch, i).state_dict(), path)
        out[arch] = path
    return out


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory, checkpoints):
    d = tmp_path_factory.mktemp("zoo") / "zoo"
    zoo = Zoo(d)
    for i, (arch, path) in enumerate(checkpoints.items()):
        zoo.add(path, arch, task="fmnist", accuracy=0.8 + i / 100)
    return d


def test_add_writes_weights_metadata_and_index(zoo_dir, checkpoints):
    zoo = Zoo(zoo_dir)
    entries = {e.name: e for e in zoo.entries()}
    assert sorted(entries) == sorted(SOURCES)
    e = entries["resnet18"]
    assert (e.arch, e.num_classes, e.in_chans, e.task, e.accuracy) == ("resnet18", 5, 1, "fmnist", 0.8)
    assert e.params == sum(p.numel() for p in timm.create_model("resnet18", num_classes=5, in_chans=1).parameters())
    import hashlib
    weights = zoo_dir / "resnet18.safetensors"
    assert e.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert weights.read_bytes() == checkpoints["resnet18"].read_bytes() and not weights.is_symlink()
    assert json.loads((zoo_dir / "resnet18.json").read_text())["weights"] == "resnet18.safetensors"
    with sqlite3.connect(zoo_dir / "index.sqlite") as con:
        keys = {row[:4] for row in con.execute("SELECT spec, num_classes, in_chans, input FROM fingerprints")}
        self_dp = con.execute("SELECT COUNT(*) FROM dp WHERE a = b AND method='graft'").fetchone()[0]
        self_dpiat = con.execute("SELECT COUNT(*) FROM dp WHERE a = b AND method='dpiat'").fetchone()[0]
    assert keys == {(a, 5, 1, "auto") for a in SOURCES}
    assert self_dp == self_dpiat == 3  # the index is ready for either method
    assert not list(zoo_dir.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_add_refuses_duplicates_unless_forced(zoo_dir, checkpoints, tmp_path):
    zoo = Zoo(zoo_dir)
    with pytest.raises(ZooError, match="already has an entry 'resnet18'.*--force"):
        zoo.add(checkpoints["resnet18"], "resnet18")
    with pytest.raises(ZooError, match="already in the zoo as 'resnet18'"):
        zoo.add(checkpoints["resnet18"], "resnet18", name="copy_of_r18")
    assert not (zoo_dir / "copy_of_r18.json").exists()
    entry = zoo.add(checkpoints["resnet18"], "resnet18", task="again", accuracy=0.8, force=True)
    assert entry.task == "again" and len(zoo) == 3
    zoo.add(checkpoints["resnet18"], "resnet18", task="fmnist", accuracy=0.8, force=True)


def test_add_mismatch_names_file_and_arch(tmp_path, checkpoints):
    zoo = Zoo(tmp_path / "z")
    with pytest.raises(CheckpointError) as info:
        zoo.add(checkpoints["resnet18"], "resnet34", name="wrong")
    msg = str(info.value)
    assert "resnet18.safetensors" in msg and "resnet34" in msg and "missing" in msg
    assert not list((tmp_path / "z").glob("wrong*"))
    with pytest.raises(ZooError, match="entry name"):
        zoo.add(checkpoints["resnet18"], "resnet18", name="../evil")
    with pytest.raises(NetgraftError, match="not found"):
        zoo.add(tmp_path / "missing.safetensors", "resnet18")
    with pytest.raises(netgraft.ModelSpecError, match="unknown model"):
        zoo.add(checkpoints["resnet18"], "resnet_does_not_exist")


def test_add_link_and_torch_checkpoint(tmp_path, checkpoints):
    zoo = Zoo(tmp_path / "z")
    e = zoo.add(checkpoints["mobilenetv3_small_050"], "mobilenetv3_small_050", link=True)
    weights = tmp_path / "z" / "mobilenetv3_small_050.safetensors"
    assert weights.is_symlink() and weights.resolve() == checkpoints["mobilenetv3_small_050"].resolve()
    assert e.linked == str(checkpoints["mobilenetv3_small_050"].resolve())
    pt = tmp_path / "r18.pt"
    torch.save({"state_dict": load_state_dict(checkpoints["resnet18"])}, pt)
    with pytest.raises(ZooError, match="--link needs a .safetensors"):
        zoo.add(pt, "resnet18", link=True)
    e = zoo.add(pt, "resnet18", name="r18_from_pt")
    stored = load_state_dict(tmp_path / "z" / "r18_from_pt.safetensors")
    original = load_state_dict(checkpoints["resnet18"])
    assert stored.keys() == original.keys() and all(torch.equal(stored[k], original[k]) for k in stored)
    zoo.remove("r18_from_pt")
    assert not (tmp_path / "z" / "r18_from_pt.safetensors").exists()
    assert [x.name for x in zoo.entries()] == ["mobilenetv3_small_050"]


def test_rank_matches_similarity_and_transfer_coverage_exactly(zoo_dir, checkpoints):
    zoo = Zoo(zoo_dir)
    ranked = zoo.rank("resnet34", num_classes=10, in_chans=1)
    assert [r.rank for r in ranked] == [1, 2, 3]
    assert ranked[0].name == "resnet18"  # same family first
    sims = [r.similarity for r in ranked]
    assert sims == sorted(sims, reverse=True)
    for r in ranked:
        source = zoo.load_source(r.entry)
        target = timm.create_model("resnet34", num_classes=10, in_chans=1)
        report = netgraft.transfer(source, target)
        assert r.similarity == pytest.approx(report.similarity, abs=1e-12)
        assert r.similarity == netgraft.similarity(netgraft.trace(copy.deepcopy(source)),
                                                   netgraft.trace(target))
        # identity blocks are probed on generic weights, a transfer probes the grafted ones: a
        # block whose grafted activations already vanish is left alone there (layer4 of
        # resnet34 from mobilenetv3), so cross-family coverage is an estimate to 0.1%
        tolerance = 1e-9 if r.name == "resnet18" else 1e-3
        assert r.coverage == pytest.approx(report.coverage, abs=tolerance)
        assert r.target_blocks == len(report.matching.target.blocks)
    best = ranked[0]
    assert best.why == "19/19 target blocks matched; stem, all 4 stages; head differs (5→10 outputs)"
    assert 0.99 < best.coverage < 1.0
    assert [r.name for r in zoo.rank("resnet34", num_classes=10, in_chans=1, top=2)] == \
        [r.name for r in ranked[:2]]


def test_rank_dpiat_matches_transfer(zoo_dir):
    zoo = Zoo(zoo_dir)
    for r in zoo.rank("efficientnet_b0", num_classes=5, in_chans=1, method="dpiat"):
        target = timm.create_model("efficientnet_b0", num_classes=5, in_chans=1)
        report = netgraft.transfer(zoo.load_source(r.entry), target, method="dpiat")
        assert r.similarity == pytest.approx(report.similarity, abs=1e-12)
        assert r.coverage == pytest.approx(report.coverage, abs=1e-9)
        assert r.method == "dpiat"


def test_warm_rank_instantiates_nothing_and_recomputes_nothing(zoo_dir, monkeypatch):
    first = Zoo(zoo_dir).rank("efficientnet_b0", num_classes=10, in_chans=1)

    def forbidden(*a, **k):
        raise AssertionError("warm rank must not build or match anything")

    import netgraft.models
    import netgraft.zoo
    monkeypatch.setattr(netgraft.models, "create_model", forbidden)
    monkeypatch.setattr(sys.modules["netgraft.match"], "dp_value", forbidden)
    monkeypatch.setattr(netgraft.zoo, "match", forbidden)
    again = Zoo(zoo_dir).rank("efficientnet_b0", num_classes=10, in_chans=1)  # a fresh process
    assert [(r.name, r.similarity, r.coverage, r.why) for r in again] == \
        [(r.name, r.similarity, r.coverage, r.why) for r in first]


def test_stale_scores_are_recomputed_after_a_score_change(zoo_dir, monkeypatch):
    zoo = Zoo(zoo_dir)
    zoo.rank("resnet10t", num_classes=5, in_chans=1)
    calls = []
    match_module = sys.modules["netgraft.match"]
    real = match_module.dp_value
    monkeypatch.setattr(match_module, "dp_value", lambda *a, **k: calls.append(1) or real(*a, **k))
    Zoo(zoo_dir).rank("resnet10t", num_classes=5, in_chans=1)
    assert calls == []
    monkeypatch.setattr(fpr, "score_version", lambda: "changed")
    Zoo(zoo_dir).rank("resnet10t", num_classes=5, in_chans=1)
    assert len(calls) == 3 + 3 + 1  # dp(t→s) and dp(s→s) per entry, dp(t→t) once
    counts = Zoo(zoo_dir).index.counts()
    monkeypatch.undo()
    info = Zoo(zoo_dir).build_index()  # drops the rows of the "changed" scores
    assert info["pruned"] >= 7 and Zoo(zoo_dir).index.counts()["dp"] < counts["dp"]


def test_damaged_fingerprint_rows_are_rebuilt(tmp_path, checkpoints):
    zoo = Zoo(tmp_path / "z")
    zoo.add(checkpoints["mobilenetv3_small_050"], "mobilenetv3_small_050")
    with sqlite3.connect(tmp_path / "z" / "index.sqlite") as con:
        import zlib
        con.execute("UPDATE fingerprints SET data = ?", (zlib.compress(b'{"layers": []}'),))
    ranked = Zoo(tmp_path / "z").rank("mobilenetv3_small_050", num_classes=5, in_chans=1)
    assert ranked[0].similarity == pytest.approx(1.0)


def test_rank_accepts_a_module_and_rejects_bad_requests(zoo_dir, tmp_path):
    zoo = Zoo(zoo_dir)
    by_name = zoo.rank("resnet10t", num_classes=5, in_chans=1)
    by_module = zoo.rank(timm.create_model("resnet10t", num_classes=5, in_chans=1))
    assert [(r.name, r.similarity) for r in by_module] == [(r.name, r.similarity) for r in by_name]
    with pytest.raises(ZooError, match="unknown method"):
        zoo.rank("resnet10t", method="nope")
    with pytest.raises(ZooError, match="--top"):
        zoo.rank("resnet10t", top=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooError, match="is empty"):
        Zoo(tmp_path / "empty").rank("resnet10t")
    with pytest.raises(ZooError, match="no zoo at"):
        Zoo(tmp_path / "nowhere", create=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "index.sqlite").write_text("not a database")
    with pytest.raises(ZooError, match="not a usable netgraft index"):
        Zoo(tmp_path / "bad").index.counts()


def _cli(argv, adder, runner):
    parser = argparse.ArgumentParser()
    adder(parser)
    return runner(parser.parse_args(argv))


def test_cli_list_index_rank_and_then_transfer(zoo_dir, tmp_path, capsys):
    assert _cli(["list", "--zoo", str(zoo_dir)], add_zoo_arguments, run_zoo) == 0
    out = capsys.readouterr().out
    assert "3 entries" in out and "resnet18" in out and "80.0%" in out and "11,17" in out
    assert _cli(["list", "--zoo", str(zoo_dir), "--json"], add_zoo_arguments, run_zoo) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert _cli(["index", "--zoo", str(zoo_dir)], add_zoo_arguments, run_zoo) == 0
    assert "indexed 3 entries (0 fingerprinted now" in capsys.readouterr().out

    assert _cli(["--target", "resnet34", "--num-classes", "10", "--in-chans", "1", "--zoo",
                 str(zoo_dir), "--top", "2", "--json"], add_rank_arguments, run_rank) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in data["ranking"]] == [1, 2] and data["ranking"][0]["name"] == "resnet18"
    assert {"similarity", "coverage", "why", "params", "accuracy", "task"} <= set(data["ranking"][0])

    out_file = tmp_path / "grafted.safetensors"
    assert _cli(["--target", "resnet34", "--num-classes", "10", "--in-chans", "1", "--zoo",
                 str(zoo_dir), "--then-transfer", str(out_file)], add_rank_arguments, run_rank) == 0
    out = capsys.readouterr().out
    assert "sources for resnet34" in out and "resnet18" in out and "stages" in out
    assert "resnet18 → resnet34" in out and f"wrote {out_file}" in out.replace("\n", "")
    target = timm.create_model("resnet34", num_classes=10, in_chans=1)
    netgraft.checkpoint.load_weights(target, out_file)
    source = load_state_dict(zoo_dir / "resnet18.safetensors")
    assert torch.equal(target.state_dict()["layer1.0.conv1.weight"], source["layer1.0.conv1.weight"])
    with pytest.raises(ZooError, match="output folder does not exist"):
        _cli(["--target", "resnet34", "--zoo", str(zoo_dir), "--then-transfer",
              str(tmp_path / "no" / "x.safetensors")], add_rank_arguments, run_rank)


def test_cli_add(tmp_path, checkpoints, capsys):
    z = tmp_path / "z"
    assert _cli(["add", str(checkpoints["convnext_atto"]), "--arch", "convnext_atto", "--zoo", str(z),
                 "--task", "fmnist", "--accuracy", "0.86", "--name", "cnx"], add_zoo_arguments, run_zoo) == 0
    assert "added 'cnx' (convnext_atto" in capsys.readouterr().out
    assert (z / "cnx.safetensors").is_file() and (z / "cnx.json").is_file()


def test_default_zoo_dir_follows_the_environment(tmp_path, monkeypatch):
    from netgraft.zoo import default_zoo_dir
    monkeypatch.setenv("NETGRAFT_ZOO", str(tmp_path / "envzoo"))
    assert default_zoo_dir() == tmp_path / "envzoo"
    assert Zoo().dir == tmp_path / "envzoo"
    monkeypatch.delenv("NETGRAFT_ZOO")
    assert default_zoo_dir() == Path("~/.cache/netgraft/zoo").expanduser()


def test_benchmark_script_tiny(tmp_path, capsys):
    import benchmarks.rank_zoo as bench
    out = tmp_path / "rank_zoo.json"
    assert bench.main(["--entries", "3", "--targets", "resnet10t", "--zoo", str(tmp_path / "b"),
                       "--json", str(out), "-q"]) == 0
    data = json.loads(out.read_text())
    assert data["entries"] == 3 and data["under_10s"] is True
    assert set(data["rank"]) == {"graft", "dpiat"}
    rank = data["rank"]["graft"]["resnet10t"]
    assert rank["entries"] == 3 and rank["warm"]["instantiated"] == []
    assert rank["cold"]["instantiated"] == ["resnet10t"]  # the new target only, never an entry
    assert data["build"]["index_rebuild_instantiated"] == 3
    assert 0 < rank["warm"]["seconds"] < 10 and 0 < rank["cold"]["seconds"] < 10  # no timing race on a busy CI
    assert "default method: under 10 s" in capsys.readouterr().out


@pytest.mark.parametrize("source,target,roles,kwargs", [
    ((8, 4, 3, 3), (16, 4, 5, 5), ("out", "in", "k", "k"), {}),  # wider, kernel zero-padded
    ((8, 4, 5, 5), (6, 2, 3, 3), ("out", "in", "k", "k"), {}),  # narrower, kernel cropped
    ((8, 4), (8, 6, 3, 3), ("out", "in", "k", "k"), {}),  # linear → conv 3×3
    ((8, 4, 3, 3), (5, 4), ("out", "in"), {}),  # conv centre tap → linear
    ((8, 3, 3, 3), (8, 1, 7, 7), ("out", "in", "k", "k"), {"mix_input": True}),
    ((30, 8), (60, 8), ("rows", "out"), {"base": torch.zeros(60, 8)}),  # embedding rows grow
    ((60, 8), (30, 12), ("rows", "out"), {}),
    ((24, 8), (36, 12), ("qkv", "in"), {}),
    ((1, 197, 8), (1, 50, 16), ("out", "out", "out"), {"tokens": True}),  # position grid
    ((8, 4, 3), (8, 4, 3, 3, 3), ("out", "in", "k", "k", "k"), {}),
])
def test_coverage_fraction_agrees_with_adapt_graft(source, target, roles, kwargs):
    from netgraft import adapt
    from netgraft.zoo import _graft_fraction

    _, plan = adapt.graft(torch.randn(source), target, roles, **kwargs)
    assert _graft_fraction(source, target, roles) == pytest.approx(plan.fraction, rel=1e-12)


# ----------------------------------------------------------------------------- review fixes
def _main(argv):
    from netgraft.cli import main
    return main(argv)


def test_accuracy_is_a_fraction_or_a_percentage_and_out_of_range_is_refused(tmp_path, checkpoints,
                                                                            capsys):
    z = tmp_path / "z"
    ckpt = str(checkpoints["mobilenetv3_small_050"])
    for bad in ("150", "-1", "100.5", "nan", "inf"):
        assert _main(["zoo", "add", ckpt, "--arch", "mobilenetv3_small_050", "--zoo", str(z),
                      "--accuracy", bad]) == 2
        err = capsys.readouterr().err
        assert "--accuracy" in err and "[0, 1]" in err and "(1, 100]" in err, err
        assert not list(z.glob("*.json")) and not list(z.glob("*.safetensors"))  # nothing written
    with pytest.raises(ZooError, match=r"--accuracy True is not a number"):
        Zoo(z).add(ckpt, "mobilenetv3_small_050", accuracy=True)
    # one convention: 83.3 (a percentage) and 0.833 (a fraction) are the same accuracy
    assert _main(["zoo", "add", ckpt, "--arch", "mobilenetv3_small_050", "--zoo", str(z),
                  "--name", "pct", "--accuracy", "83.3"]) == 0
    assert _main(["zoo", "add", ckpt, "--arch", "mobilenetv3_small_050", "--zoo", str(z),
                  "--name", "frac", "--accuracy", "0.833", "--force"]) == 0
    assert _main(["zoo", "add", ckpt, "--arch", "mobilenetv3_small_050", "--zoo", str(z),
                  "--name", "one", "--accuracy", "1", "--force"]) == 0
    stored = {n: json.loads((z / f"{n}.json").read_text())["accuracy"] for n in ("pct", "frac", "one")}
    assert stored == {"pct": 0.833, "frac": 0.833, "one": 1.0}  # exactly: 83.3 / 100 rounded
    with pytest.raises(ZooError, match="holds a line break or tab"):
        Zoo(z).add(ckpt, "mobilenetv3_small_050", name="nl", task="digits\nsecond line")
    capsys.readouterr()
    assert _main(["zoo", "list", "--zoo", str(z)]) == 0
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()
            if line.split()[1:2] in (["pct"], ["frac"], ["one"])}
    assert "83.3%" in rows["pct"] and "83.3%" in rows["frac"] and "100.0%" in rows["one"]


def test_zoos_written_before_the_accuracy_check_still_load(tmp_path, checkpoints, capsys):
    z = tmp_path / "z"
    Zoo(z).add(checkpoints["mobilenetv3_small_050"], "mobilenetv3_small_050", name="old_pct")
    Zoo(z).add(checkpoints["mobilenetv3_small_050"], "mobilenetv3_small_050", name="old_bad",
               force=True)
    for name, value in (("old_pct", 83.3), ("old_bad", 150)):  # what the old `zoo add` wrote
        data = json.loads((z / f"{name}.json").read_text())
        data["accuracy"] = value
        (z / f"{name}.json").write_text(json.dumps(data))
    entries = {e.name: e for e in Zoo(z).entries()}
    assert entries["old_pct"].accuracy == pytest.approx(0.833)  # a percentage, read as the fraction
    assert entries["old_bad"].accuracy == 150  # kept, not refused: the zoo loads
    assert _main(["zoo", "list", "--zoo", str(z)]) == 0
    out = capsys.readouterr().out
    assert "83.3%" in out and "150 (invalid)" in out
    ranked = Zoo(z).rank("mobilenetv3_small_050", num_classes=5, in_chans=1)
    assert {r.name: r.accuracy for r in ranked} == {"old_pct": pytest.approx(0.833), "old_bad": 150}


def _blocks_filled_by(report):
    """Target blocks a real transfer filled: a weight layer (or, in a block of norms only, any
    layer) not left at init."""
    from netgraft.trace import DIMENSIONAL_KINDS
    arch = report.matching.target
    record = {p.target: p for p in report.pairs}
    n = 0
    for block in arch.blocks:
        layers = [arch.layers[i] for i in block.layers]
        weights = [layer for layer in layers if layer.kind in DIMENSIONAL_KINDS] or layers
        n += any(record[layer.name].action != "init" for layer in weights)
    return n


def test_why_says_what_the_default_transfer_does(zoo_dir):
    import warnings

    zoo = Zoo(zoo_dir)
    ranked = {r.name: r for r in zoo.rank("efficientnet_b1", num_classes=5, in_chans=1)}
    r18 = ranked["resnet18"]  # a distant pair: weak matches are left at init, the head tempered
    assert 0.1 < r18.similarity < 0.4
    assert r18.why == ("2/28 target blocks matched (weak ones left at init); stem left at init, "
                       "0/7 stages; head tempered if over-confident (distant pair)")
    assert "head copied" not in r18.why and "all 7 stages" not in r18.why
    for r in ranked.values():
        target = timm.create_model("efficientnet_b1", num_classes=5, in_chans=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = netgraft.transfer(zoo.load_source(r.entry), target)
        assert r.matched_blocks == _blocks_filled_by(report), r.name
        assert r.coverage == pytest.approx(report.coverage, abs=1e-3)
        assert r.why.startswith(f"{r.matched_blocks}/28 target blocks matched (weak ones left at init)")
    # an unrelated pair: the default transfer leaves the whole target at its init
    unrelated = Zoo(zoo_dir).rank("resnet34", num_classes=5, in_chans=1)[1:]
    assert [r.name for r in unrelated] == ["mobilenetv3_small_050", "convnext_atto"]
    for r in unrelated:
        assert r.similarity < 0.1 and r.coverage == 0.0 and r.matched_blocks == 0
        assert r.why == (f"nothing transferred: unrelated pair (similarity {below(r.similarity)} < 0.1), "
                         f"the target keeps its init")
        target = timm.create_model("resnet34", num_classes=5, in_chans=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert netgraft.transfer(zoo.load_source(r.entry), target).coverage == 0.0


def test_explain_computes_the_similarity_when_not_given(zoo_dir):
    from netgraft.zoo import explain
    source = Zoo(zoo_dir).load_source("resnet18")
    target = timm.create_model("efficientnet_b1", num_classes=5, in_chans=1)
    m = netgraft.match(netgraft.trace(source), netgraft.trace(target))
    sim = netgraft.similarity(netgraft.trace(source), netgraft.trace(target))
    assert explain(m) == explain(m, sim)
    assert explain(m)[2].endswith("head tempered if over-confident (distant pair)")


_SIGNAL_MODELS = '''
from torch import nn


def _net(conv, bn, pool, num_classes, in_chans):
    return nn.Sequential(
        conv(in_chans, 32, 7, stride=2, padding=3), bn(32), nn.ReLU(),
        conv(32, 64, 3, stride=2, padding=1), bn(64), nn.ReLU(),
        conv(64, 128, 3, stride=2, padding=1), bn(128), nn.ReLU(),
        pool(1), nn.Flatten(), nn.Linear(128, num_classes))


def conv1d_net(num_classes=5, in_chans=1):
    return _net(nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d, num_classes, in_chans)


def conv2d_net(num_classes=5, in_chans=1):
    return _net(nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d, num_classes, in_chans)
'''


@pytest.fixture
def signal_zoo(tmp_path, monkeypatch, checkpoints):
    """A zoo holding a Conv1d model next to 2-D ones, and its factory module importable."""
    (tmp_path / "ng_signal_models.py").write_text(_SIGNAL_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    models = importlib.import_module("ng_signal_models")
    torch.manual_seed(0)
    path = tmp_path / "sig1d.safetensors"
    save_state_dict(models.conv1d_net().state_dict(), path)
    z = tmp_path / "z"
    Zoo(z).add(path, "ng_signal_models:conv1d_net", name="sig1d")
    Zoo(z).add(checkpoints["resnet18"], "resnet18")
    yield z
    sys.modules.pop("ng_signal_models", None)


def test_a_source_of_another_conv_dimensionality_is_ranked_last(signal_zoo, tmp_path, capsys):
    zoo = Zoo(signal_zoo)
    # the 2-D twin of the 1-D model: the 1-D one is the most alike by structure, yet it
    # cannot give its 1-D kernels to 2-D convolutions: similarity 0 (session 27; was 0.6)
    ranked = zoo.rank("ng_signal_models:conv2d_net", num_classes=5, in_chans=1)
    assert [r.name for r in ranked] == ["resnet18", "sig1d"]
    sig = ranked[1]
    assert sig.similarity == 0.0 < ranked[0].similarity and sig.rank == 2 and not sig.compatible
    assert sig.why == "1-D convolutions, the target's are 2-D: cannot give its convs (ranked last)"
    assert ranked[0].compatible and "convolutions" not in ranked[0].why
    assert [r.name for r in zoo.rank("ng_signal_models:conv2d_net", top=1)] == ["resnet18"]
    r = zoo.rank("efficientnet_b0", num_classes=5, in_chans=1)[-1]
    assert (r.name, r.compatible, r.coverage) == ("sig1d", False, 0.0) and "head copied" not in r.why
    assert r.why.startswith("1-D convolutions, the target's are 2-D")
    # a 1-D target ranks the 1-D source first and the 2-D ones last
    ranked = zoo.rank("ng_signal_models:conv1d_net", num_classes=5, in_chans=1)
    assert [(r.name, r.compatible) for r in ranked] == [("sig1d", True), ("resnet18", False)]
    assert ranked[1].why.startswith("2-D convolutions, the target's are 1-D")
    assert _main(["rank", "--target", "ng_signal_models:conv2d_net", "--zoo", str(signal_zoo),
                  "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["compatible"]) for r in doc["ranking"]] == [("resnet18", True), ("sig1d", False)]
    # --then-transfer never grafts such a source, even when it is the only one
    only = tmp_path / "only1d"
    Zoo(only).add(tmp_path / "sig1d.safetensors", "ng_signal_models:conv1d_net", name="sig1d")
    out = tmp_path / "t.safetensors"
    assert _main(["rank", "--target", "ng_signal_models:conv2d_net", "--zoo", str(only),
                  "--then-transfer", str(out)]) == 2
    captured = capsys.readouterr()
    assert "1 sig1d" in " ".join(captured.out.split())  # the ranking is still shown
    assert "--then-transfer: the best source, 'sig1d'" in captured.err
    assert "cannot give its convs" in captured.err and not out.exists()


def test_rank_output_is_one_line_per_entry_when_piped_or_quiet(zoo_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")  # what rich assumes for a pipe
    argv = ["rank", "--target", "efficientnet_b1", "--num-classes", "5", "--in-chans", "1",
            "--zoo", str(zoo_dir)]
    ranked = Zoo(zoo_dir).rank("efficientnet_b1", num_classes=5, in_chans=1)
    assert _main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("sources for efficientnet_b1 [graft], best first (")
    assert lines[1].split() == ["#", "name", "task", "accuracy", "similarity", "coverage", "why"]
    assert len(lines) == 2 + len(ranked)  # one line per source: nothing wrapped
    for line, r in zip(lines[2:], ranked):
        assert line.split()[:6] == [str(r.rank), r.name, "fmnist", f"{r.accuracy:.1%}",
                                    f"{r.similarity:.3f}", f"{r.coverage:.1%}"]
        assert line.endswith("  " + r.why)  # the whole why, on the row's line
    assert max(map(len, lines)) > 80 and not any(line != line.rstrip() for line in lines)
    assert not any(c in "".join(lines) for c in "┃│┏━")  # plain, like the README's

    assert _main(argv + ["-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{r.rank} {r.name} similarity {r.similarity:.3f} coverage {r.coverage:.1%} "
                     f"accuracy {r.accuracy:.1%}: {r.why}" for r in ranked]

    out_file = tmp_path / "g.safetensors"
    assert _main(argv[:2] + ["resnet34"] + argv[3:] + ["-q", "--then-transfer", str(out_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 + 2 and lines[3].startswith("resnet18 → resnet34 [graft]: ")
    assert lines[4] == f"wrote {out_file} (grafted from 'resnet18')"


def test_rank_says_what_it_traces_on_a_terminal(zoo_dir, monkeypatch, capsys):
    """QA (session 16): `rank --input-size 1,8000,8000` ran for minutes with nothing on the
    screen. On a terminal a status line names the target and the size while it works."""
    import io

    from rich.console import Console

    from netgraft import zoo as zoo_module

    seen = io.StringIO()
    real = zoo_module._console

    def console(stderr=False):
        if stderr:
            return Console(file=seen, force_terminal=True, width=120)
        return real(stderr)

    monkeypatch.setattr(zoo_module, "_console", console)
    argv = ["rank", "--target", "resnet34", "--num-classes", "5", "--in-chans", "1",
            "--input-size", "1,40,40", "--zoo", str(zoo_dir), "-q"]
    assert _main(argv) == 0
    assert "tracing resnet34 at 1×40×40 and ranking the zoo's sources" in seen.getvalue()
    assert "tracing" not in capsys.readouterr().out  # the ranking itself is unchanged


def test_rank_table_on_a_narrow_terminal_puts_the_why_below(zoo_dir):
    from rich.console import Console

    from netgraft.zoo import rank_table
    ranked = Zoo(zoo_dir).rank("efficientnet_b1", num_classes=5, in_chans=1)
    for width in (80, 100):
        console = Console(width=width, force_terminal=True, color_system=None, record=True)
        console.print(rank_table(ranked, "sources", width))
        lines = console.export_text().splitlines()
        assert max(map(len, lines)) <= width
        why_header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["#", "why"])
        assert why_header == 2 + len(ranked)  # first table: title, header, one row per source
        for line, r in zip(lines[2:why_header], ranked):
            assert line.split() == [str(r.rank), r.name, "fmnist", f"{r.accuracy:.1%}",
                                    f"{r.similarity:.3f}", f"{r.coverage:.1%}"]
        whys = " ".join(" ".join(lines[why_header + 1:]).split())
        assert whys == " ".join(f"{r.rank} {r.why}" for r in ranked)  # wrapped, never cut
    console = Console(width=300, force_terminal=True, color_system=None, record=True)
    console.print(rank_table(ranked, "sources", 300))  # wide enough: one table, why last
    lines = console.export_text().splitlines()
    assert len(lines) == 2 + len(ranked) and lines[1].split()[-1] == "why"


# ----------------------------------------------------------------------------- QA fixes: files
def _sha(path) -> str:
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


_MNV3 = "mobilenetv3_small_050"
_RANK = ["rank", "--target", _MNV3, "--num-classes", "5", "--in-chans", "1", "-q"]


@pytest.fixture
def small_zoo(tmp_path, checkpoints):
    """A zoo with one copied entry 'm' and one --link entry 'lnk' (linked to a file outside)."""
    z = tmp_path / "z"
    Zoo(z).add(checkpoints[_MNV3], _MNV3, name="m")
    outside = tmp_path / "linked.safetensors"
    outside.write_bytes(checkpoints[_MNV3].read_bytes())
    Zoo(z).add(outside, _MNV3, name="lnk", link=True, force=True)
    return z


def test_then_transfer_refuses_an_existing_file_and_never_writes_over_the_zoo(small_zoo, tmp_path,
                                                                             capsys, monkeypatch):
    zoo = Zoo(small_zoo)
    before = {p: _sha(p) for p in (small_zoo / "m.safetensors", tmp_path / "linked.safetensors")}
    other = tmp_path / "trained.safetensors"
    other.write_bytes(b"someone's trained weights")
    argv = _RANK + ["--zoo", str(small_zoo), "--then-transfer"]
    assert _main(argv + [str(other)]) == 2
    assert "already exists: pass --force" in capsys.readouterr().err
    assert other.read_bytes() == b"someone's trained weights"
    # the zoo's files are never written, --force or not: its copy, a link's target, a new name
    symlink = tmp_path / "to_zoo.safetensors"
    symlink.symlink_to(small_zoo / "m.safetensors")
    for out, why in ((small_zoo / "m.safetensors", "is the weights of zoo entry 'm'"),
                     (tmp_path / "linked.safetensors", "is the weights of zoo entry 'lnk'"),
                     (symlink, "is the weights of zoo entry 'm'"),
                     (small_zoo / "new.safetensors", "is inside zoo")):
        assert _main(argv + [str(out), "--force"]) == 2
        err = capsys.readouterr().err
        assert why in err and "never written into the zoo" in err, err
    assert {p: _sha(p) for p in before} == before
    assert {e.name: e.sha256 for e in zoo.entries()} == {"m": before[small_zoo / "m.safetensors"],
                                                           "lnk": before[tmp_path / "linked.safetensors"]}
    assert not (small_zoo / "new.safetensors").exists()
    # a bad output name is refused before any ranking
    monkeypatch.setattr(Zoo, "rank", lambda *a, **k: pytest.fail("ranked before checking OUT"))
    (tmp_path / "folder.safetensors").mkdir()
    for out, why in ((tmp_path / "g.txt", "use a .safetensors"),
                     (tmp_path / "no" / "g.safetensors", "output folder does not exist"),
                     (tmp_path / "folder.safetensors", "is a folder")):
        assert _main(argv + [str(out)]) == 2 and why in capsys.readouterr().err
    monkeypatch.undo()
    assert _main(argv + [str(other), "--force"]) == 0  # --force replaces a file outside the zoo
    assert f"wrote {other}" in capsys.readouterr().out
    assert set(load_state_dict(other)) == set(load_state_dict(small_zoo / "m.safetensors"))
    with pytest.raises(ZooError, match="is the weights of zoo entry 'm'"):
        zoo.transfer_to("m", _MNV3, num_classes=5, in_chans=1, out=small_zoo / "m.safetensors")


def test_adding_the_zoos_own_file_is_refused_and_destroys_nothing(small_zoo, capsys):
    own = small_zoo / "m.safetensors"
    sha = _sha(own)
    for extra, message in ((["--link"], "is the zoo's own copy of the weights of entry 'm'"),
                           ([], "is the zoo's own copy of the weights of entry 'm'"),
                           (["--link", "--name", "m2"], "inside zoo")):
        assert _main(["zoo", "add", str(own), "--arch", _MNV3, "--zoo", str(small_zoo),
                      "--force", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not own.is_symlink() and _sha(own) == sha == Zoo(small_zoo).get("m").sha256
    assert not (small_zoo / "m2.json").exists()
    Zoo(small_zoo).load_source("m")  # still loads
    # re-adding a --link entry from its original file (outside the zoo) is still allowed
    Zoo(small_zoo).add(small_zoo.parent / "linked.safetensors", _MNV3, name="lnk", link=True,
                       force=True)


def test_remove_takes_an_entry_name_never_a_path(tmp_path, checkpoints, capsys):
    other = tmp_path / "zooV"
    Zoo(other).add(checkpoints[_MNV3], _MNV3, name="r")
    empty = tmp_path / "zoo0"
    empty.mkdir()
    assert _main(["zoo", "remove", "../zooV/r", "--zoo", str(empty)]) == 2
    assert "entry name '../zooV/r'" in capsys.readouterr().err
    assert (other / "r.json").is_file() and (other / "r.safetensors").is_file()
    assert _main(["zoo", "remove", "nope", "--zoo", str(other)]) == 2
    assert f"no entry 'nope' in zoo {other}" in capsys.readouterr().err
    for bad in ("..", "/tmp/x", "a/b", ""):
        with pytest.raises(ZooError, match="entry name"):
            Zoo(other).remove(bad)
    assert [e.name for e in Zoo(other).entries()] == ["r"]


def test_a_damaged_entry_file_is_skipped_with_a_warning_naming_it(small_zoo, tmp_path, capsys):
    from netgraft.zoo import ZooWarning
    (small_zoo / "stray.json").write_text('{"netgraft_zoo_entry": 1, "name": "stray"}')
    (small_zoo / "bad.json").write_text("{not json")
    (small_zoo / "notmine.json").write_text('{"something": "else"}')  # not an entry: ignored
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes(b"keep me")
    evil = json.loads((small_zoo / "m.json").read_text())
    evil.update(name="evil", weights="../victim.safetensors")
    (small_zoo / "evil.json").write_text(json.dumps(evil))
    with pytest.warns(ZooWarning) as caught:
        assert sorted(e.name for e in Zoo(small_zoo).entries()) == ["lnk", "m"]
    text = "\n".join(str(w.message) for w in caught)
    assert "stray.json: incomplete zoo entry (no arch" in text and "zoo remove stray" in text
    assert "bad.json: unreadable zoo entry" in text
    assert "evil.json: damaged zoo entry (weights '../victim.safetensors'" in text
    assert "notmine" not in text
    assert _main(["zoo", "list", "--zoo", str(small_zoo)]) == 0
    captured = capsys.readouterr()
    assert "2 entries" in captured.out and "stray.json" in captured.err
    assert _main(_RANK + ["--zoo", str(small_zoo), "--then-transfer",
                          str(tmp_path / "t.safetensors")]) == 0
    captured = capsys.readouterr()
    assert [line.split()[1] for line in captured.out.splitlines()[:2]] == ["lnk", "m"]
    # QA (session 25): read from several places, a damaged file was warned about 2–4 times
    assert captured.err.count("bad.json: unreadable zoo entry") == 1, captured.err
    for name in ("stray", "bad", "evil"):  # removable, and never outside the zoo
        assert _main(["zoo", "remove", name, "--zoo", str(small_zoo)]) == 0
        assert not (small_zoo / f"{name}.json").exists()
    assert victim.read_bytes() == b"keep me" and (small_zoo / "notmine.json").exists()
    assert _main(["zoo", "remove", "notmine", "--zoo", str(small_zoo)]) == 2


def test_an_entry_whose_model_cannot_be_built_is_skipped_naming_it(small_zoo, capsys):
    """QA (session 22): one entry of a factory not importable here (another machine, another
    directory) stopped `rank` and `zoo index` for the whole zoo, without naming the entry."""
    from netgraft.zoo import ZooWarning
    entry = json.loads((small_zoo / "m.json").read_text())
    entry["arch"] = "nosuchpackage_qa.models:tiny"
    (small_zoo / "m.json").write_text(json.dumps(entry))
    for index in small_zoo.glob("index.sqlite*"):
        index.unlink()
    assert _main(_RANK + ["--zoo", str(small_zoo)]) == 0
    captured = capsys.readouterr()
    assert [line.split()[1] for line in captured.out.splitlines()] == ["lnk"]
    assert "zoo entry 'm': its model cannot be built here, so it is not ranked" in captured.err
    assert _main(["zoo", "index", "--zoo", str(small_zoo)]) == 0
    assert "zoo entry 'm'" in capsys.readouterr().err
    with pytest.warns(ZooWarning, match="zoo entry 'm'"):  # the Python API warns
        ranked = Zoo(small_zoo).rank(_MNV3, num_classes=5, in_chans=1)
    assert [r.name for r in ranked] == ["lnk"]


def test_missing_weights_are_marked_skipped_and_name_the_link_target(small_zoo, tmp_path, capsys):
    from netgraft.zoo import ZooWarning
    target = tmp_path / "linked.safetensors"
    target.unlink()  # a --link entry whose file was deleted
    assert _main(["zoo", "list", "--zoo", str(small_zoo)]) == 0
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()
            if line.startswith("│")}
    assert "UNUSABLE" in rows["lnk"] and str(target) in rows["lnk"] and rows["m"].split()[-2] == "ok"
    assert _main(["zoo", "list", "--zoo", str(small_zoo), "--json"]) == 0
    listed = {e["name"]: e["weights_missing"] for e in json.loads(capsys.readouterr().out)}
    assert listed["m"] is None and str(target) in listed["lnk"]
    assert _main(["zoo", "index", "--zoo", str(small_zoo)]) == 0
    assert f"zoo entry 'lnk': its weights link to {target}" in capsys.readouterr().err
    assert _main(_RANK + ["--zoo", str(small_zoo)]) == 0
    captured = capsys.readouterr()
    assert [line.split()[1] for line in captured.out.splitlines()] == ["m"]
    assert f"zoo entry 'lnk' skipped: its weights link to {target}" in captured.err
    with pytest.raises(ZooError, match=f"zoo entry 'lnk': its weights link to {target}"):
        Zoo(small_zoo).transfer_to("lnk", _MNV3, num_classes=5, in_chans=1)
    (small_zoo / "m.safetensors").unlink()  # a copied entry whose file was deleted
    with pytest.raises(ZooError, match="no entry of zoo .* has its weights"), \
            pytest.warns(ZooWarning) as caught:
        Zoo(small_zoo).rank(_MNV3, num_classes=5, in_chans=1)
    assert any("its weights file" in str(w.message) and "m.safetensors is missing" in str(w.message)
               for w in caught)


def test_counts_must_be_positive_and_a_model_name_typo_gets_a_suggestion(small_zoo, capsys):
    for argv in (_RANK[:3] + ["--num-classes", "-3"], _RANK[:3] + ["--num-classes", "0"],
                 _RANK[:3] + ["--in-chans", "0"],
                 _RANK[:3] + ["--probe-data", "digits:60", "--probe-limit", "-5"],
                 ["zoo", "add", "x.safetensors", "--arch", _MNV3, "--num-classes", "-1"]):
        with pytest.raises(SystemExit) as info:
            _main(argv + ["--zoo", str(small_zoo)])
        assert info.value.code == 2
        assert "give a whole number of at least 1" in capsys.readouterr().err
    assert _main(["rank", "--target", "MOBILENETV3_SMALL_050", "--zoo", str(small_zoo)]) == 2
    assert "Did you mean mobilenetv3_small_050?" in capsys.readouterr().err


def test_add_refuses_non_finite_weights_and_a_failed_add_leaves_no_new_folder(
        tmp_path, checkpoints, capsys):
    """QA (session 16): `zoo add` took weights holding NaN (then `rank` aborted on them), and a
    failed add left the empty zoo folder it had made."""
    arch, path = next(iter(checkpoints.items()))
    state = load_state_dict(path)
    name = next(k for k in state if k.endswith("running_var"))
    state[name][0] = float("nan")
    bad = tmp_path / "nan.safetensors"
    save_state_dict(state, bad)
    fresh = tmp_path / "fresh-zoo"
    from netgraft.cli import main

    assert main(["zoo", "add", str(bad), "--arch", arch, "--zoo", str(fresh)]) == 2
    assert f"tensor '{name}' holds NaN or inf values" in capsys.readouterr().err
    assert not fresh.exists()
    # ... unless another `zoo add` wrote an entry there meanwhile (review, session 16)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "index.sqlite").touch()
    (shared / "B.json").write_text("{}")
    Zoo(shared)._remove_if_unused()
    assert (shared / "B.json").exists()
    (shared / "B.json").unlink()
    Zoo(shared)._remove_if_unused()
    assert not shared.exists()
    # a folder that existed is left in place, with the entries it had
    (tmp_path / "kept").mkdir()
    zoo = Zoo(tmp_path / "kept")
    with pytest.raises(ZooError, match="NaN or inf"):
        zoo.add(bad, arch)
    assert zoo.dir.is_dir() and zoo.entries() == []
    # an add in progress (its lock) refuses a second one of the same name
    (zoo.dir / ".m.adding").touch()
    with pytest.raises(ZooError, match="'m' is being added to zoo .* by another process"):
        zoo.add(path, arch, name="m")
    assert not (zoo.dir / "m.json").exists()



def test_then_transfer_writes_nothing_when_the_best_source_gives_nothing(checkpoints, tmp_path,
                                                                         capsys):
    """QA (session 16): an unrelated best source (coverage 0: the target keeps its init) was
    grafted and the file written, a random init under a trained source's name."""
    zoo = tmp_path / "z"
    Zoo(zoo).add(checkpoints["convnext_atto"], "convnext_atto")
    best = Zoo(zoo).rank("resnet18", num_classes=5, in_chans=1)[0]
    assert best.coverage == 0.0 and best.compatible
    out = tmp_path / "t.safetensors"
    assert _main(["rank", "--target", "resnet18", "--num-classes", "5", "--in-chans", "1",
                  "--zoo", str(zoo), "--then-transfer", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "the best source, 'convnext_atto' (convnext_atto), gives resnet18 nothing" in err
    assert "nothing was written" in err and not out.exists()


def test_a_read_only_zoo_still_ranks_and_its_writers_say_why_they_cannot(tmp_path, checkpoints,
                                                                          monkeypatch):
    """QA (session 24): on a zoo whose index could not be written, `rank` (which only needs
    it as a cache) failed with a raw sqlite3.OperationalError traceback, as did `zoo add`."""
    from netgraft.zoo import Index

    zoo = Zoo(tmp_path / "z")
    zoo.add(checkpoints["mobilenetv3_small_050"], "mobilenetv3_small_050")
    expected = zoo.rank("resnet10t", num_classes=5, in_chans=1)[0].similarity
    index = tmp_path / "z" / "index.sqlite"
    with sqlite3.connect(index) as con:
        con.execute("DELETE FROM dp")
        con.execute("DELETE FROM fingerprints")

    def read_only(self):  # what a zoo on a read-only mount or folder gives
        return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
    monkeypatch.setattr(Index, "connect", read_only)
    with pytest.warns(netgraft.NetgraftWarning, match="cannot be written.*not cached"):
        ranked = Zoo(tmp_path / "z").rank("resnet10t", num_classes=5, in_chans=1)
    assert ranked[0].similarity == pytest.approx(expected)
    with pytest.raises(ZooError, match="cannot write the zoo index .*index.sqlite"):
        Zoo(tmp_path / "z").add(checkpoints["resnet18"], "resnet18")


def test_a_mistyped_zoo_path_is_named_and_not_made(tmp_path, checkpoints):
    """QA (session 25): `Zoo(typo).rank(...)` made an empty folder at the typo before saying
    the zoo was empty."""
    typo = tmp_path / "zooo"
    for call in (lambda z: z.rank(_MNV3, num_classes=5, in_chans=1), lambda z: z.build_index()):
        with pytest.raises(ZooError, match=f"no zoo at {typo}: add a checkpoint"):
            call(Zoo(typo))
        assert not typo.exists()
    assert Zoo(typo).entries() == [] and not typo.exists()
    with pytest.raises(NetgraftError, match="unknown model"):  # a failed first add: no folder
        Zoo(typo).add(checkpoints[_MNV3], "no_such_model_xyz")
    assert not typo.exists()
    with pytest.raises(ZooError, match="entry name '': use letters"):  # not the file's name
        Zoo(typo).add(checkpoints[_MNV3], _MNV3, name="")
    Zoo(typo).add(checkpoints[_MNV3], _MNV3)  # the first entry makes it
    assert [e.name for e in Zoo(typo).entries()] == [_MNV3]


def test_a_zoo_not_made_yet_fingerprints_a_model_spec_without_making_its_folder(zoo_dir, tmp_path):
    """QA (session 27): `Zoo(dir).fingerprint(...)` on a folder the first `add` had not made
    yet failed with "index.sqlite is not a usable netgraft index ...; delete it", though a
    model spec's fingerprint needs nothing from the zoo."""
    later = tmp_path / "later"
    stored = Zoo(zoo_dir).index.get_fingerprint("resnet18", 5, 1)  # what `add` stored
    digest, fp = Zoo(later).fingerprint("resnet18", num_classes=5, in_chans=1)
    assert digest == stored[0] == fpr.fingerprint_hash(fp)
    assert json.loads(fpr.dumps({k: v for k, v in fp.items() if k != "identity"})) == \
        {k: v for k, v in stored[1].items() if k != "identity"}
    digest, fp = Zoo(later).fingerprint("resnet18", num_classes=5, in_chans=1, identity=True)
    assert digest == stored[0] and fpr.identity_of(fp)  # a target's, with its identity blocks
    assert not later.exists()  # neither made nor written to


def test_a_truncated_weights_file_is_not_ranked(small_zoo, capsys):
    """QA (session 25): a weights file cut short by a copy that did not finish was ranked
    first, and only --then-transfer failed on it (advising to re-export the checkpoint)."""
    from netgraft.zoo import ZooWarning
    weights = small_zoo / "m.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[:len(whole) // 2])
    with pytest.warns(ZooWarning, match=r"zoo entry 'm' skipped: its weights file .*m\.safetensors "
                                        r"is damaged \(.* bytes where its header describes"):
        ranked = Zoo(small_zoo).rank(_MNV3, num_classes=5, in_chans=1)
    assert [r.name for r in ranked] == ["lnk"]
    assert _main(["zoo", "list", "--zoo", str(small_zoo)]) == 0
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()
            if line.startswith("│")}
    assert "UNUSABLE" in rows["m"] and rows["lnk"].split()[-2] == "ok"
    with pytest.raises(ZooError, match="zoo entry 'm': its weights file .* is damaged"):
        Zoo(small_zoo).transfer_to("m", _MNV3, num_classes=5, in_chans=1)
    weights.write_bytes(b"not safetensors at all")
    assert "not a readable safetensors file" in Zoo(small_zoo).missing_weights(Zoo(small_zoo).get("m"))
    weights.write_bytes(whole)
    assert Zoo(small_zoo).missing_weights(Zoo(small_zoo).get("m")) is None


def test_a_linked_file_changed_after_zoo_add_is_named_not_the_link(small_zoo, tmp_path, capsys):
    """QA (session 27): for a --link entry whose file (the user's own) was cut short, the
    messages named the zoo's link (lnk.safetensors) and guessed "truncated by a copy that did
    not finish?", a copy the zoo never made."""
    linked = tmp_path / "linked.safetensors"
    whole = linked.read_bytes()
    linked.write_bytes(whole[:len(whole) // 2])
    why = (f"its weights link to {linked}, which was changed or truncated after `zoo add "
           f"--link` ({len(whole) // 2:,} bytes where its header describes {len(whole):,})")
    # the commands name the zoo: without --zoo they would act on the default one
    hint = (f"restore that file, re-add it with `netgraft zoo add {linked} --arch {_MNV3} "
            f"--name lnk --num-classes 5 --in-chans 1 --link --force --zoo {small_zoo}`, or remove the entry with "
            f"`netgraft zoo remove lnk --zoo {small_zoo}`")
    zoo = Zoo(small_zoo)
    assert zoo.missing_weights(zoo.get("lnk")) == why
    assert _main(["zoo", "list", "--zoo", str(small_zoo), "--json"]) == 0
    assert {e["name"]: e["weights_missing"] for e in json.loads(capsys.readouterr().out)} == \
        {"lnk": why, "m": None}
    assert _main(["zoo", "list", "--zoo", str(small_zoo)]) == 0
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()
            if line.startswith("│")}
    assert "UNUSABLE: its weights link to" in rows["lnk"] and str(linked) in rows["lnk"]
    assert _main(_RANK + ["--zoo", str(small_zoo)]) == 0
    captured = capsys.readouterr()
    assert [line.split()[1] for line in captured.out.splitlines()] == ["m"]
    err = " ".join(captured.err.split())
    assert f"zoo entry 'lnk' skipped: {why}; {hint}" in err
    assert "lnk.safetensors" not in err and "copy" not in err
    with pytest.raises(ZooError) as info:
        zoo.transfer_to("lnk", _MNV3, num_classes=5, in_chans=1)
    assert str(info.value) == f"zoo entry 'lnk': {why}; {hint}"
    linked.write_bytes(b"not safetensors at all")
    assert zoo.missing_weights(zoo.get("lnk")) == (
        f"its weights link to {linked}, which is no longer a readable safetensors file: it was "
        f"changed after `zoo add --link`")
    linked.write_bytes(whole)
    assert zoo.missing_weights(zoo.get("lnk")) is None


def test_zoo_add_takes_the_input_size_a_model_needs(tmp_path, capsys):
    """QA (session 25): a model that takes one input size only could not be added (`zoo add`
    had no --input-size, yet the error advised it)."""
    import signal_nets
    torch.manual_seed(0)
    src = signal_nets.fixed()
    path = tmp_path / "fixed.safetensors"
    save_state_dict(src.state_dict(), path)
    z = str(tmp_path / "z")
    assert _main(["zoo", "add", str(path), "--arch", "signal_nets:fixed", "--zoo", z]) == 2
    assert "--input-size" in capsys.readouterr().err
    assert not (tmp_path / "z").exists()
    assert _main(["zoo", "add", str(path), "--arch", "signal_nets:fixed", "--zoo", z,
                  "--in-chans", "3", "--input-size", "2,100"]) == 2
    assert "--in-chans 3 and --input-size 2,100 disagree" in capsys.readouterr().err
    assert _main(["zoo", "add", str(path), "--arch", "signal_nets:fixed", "--zoo", z,
                  "--input-size", "2,100"]) == 0
    assert "traced at 2×100" in capsys.readouterr().out
    zoo = Zoo(z)
    assert zoo.get("fixed").input_size == [2, 100]
    ranked = zoo.rank("signal_nets:fixed", input_size=(2, 100))
    assert [(r.name, round(r.similarity, 6), r.coverage) for r in ranked] == [("fixed", 1.0, 1.0)]
    model, report = zoo.transfer_to("fixed", "signal_nets:fixed", input_size=(2, 100),
                                    out=tmp_path / "t.safetensors")
    x = torch.randn(3, 2, 100)
    src.eval(), model.eval()
    assert report.coverage == 1.0 and torch.allclose(model(x), src(x))
    assert _main(["zoo", "index", "--zoo", z]) == 0
    assert "(0 fingerprinted now" in capsys.readouterr().out
    entry = json.loads((tmp_path / "z" / "fixed.json").read_text())
    entry["input_size"] = [2, 0]
    (tmp_path / "z" / "fixed.json").write_text(json.dumps(entry))
    from netgraft.zoo import ZooWarning
    with pytest.warns(ZooWarning, match=r"damaged zoo entry \(input_size is \[2, 0\]\)"):
        assert Zoo(z).entries() == []


def test_zoo_add_refuses_an_input_size_whose_channels_the_weights_do_not_take(
        tmp_path, checkpoints, capsys):
    """QA (session 27): `zoo add --input-size 3,64,64` of 1-channel weights failed in the
    trace with torch's "expected input[1, 3, 64, 64] to have 1 channels", advising --in-chans
    (which the weights do not load into)."""
    z = tmp_path / "z"
    argv = ["zoo", "add", str(checkpoints[_MNV3]), "--arch", _MNV3, "--zoo", str(z)]
    assert _main(argv + ["--input-size", "3,64,64"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (f"error: --input-size 3,64,64 gives 3 input channels, but the weights of "
            f"{checkpoints[_MNV3]} ({_MNV3}) take 1 (the input channels of their first "
            f"convolution): give --input-size 1,64,64; nothing was added") in err
    assert "Traceback" not in err and not z.exists()
    # in a zoo that exists, nothing is written either: no entry, no index row, no lock
    assert _main(argv + ["--name", "first"]) == 0
    before = {p.name: p.read_bytes() for p in z.iterdir()}
    # (--force: not refused as a duplicate of "first" instead)
    assert _main(argv + ["--name", "second", "--input-size", "3,64,64", "--force"]) == 2
    assert "take 1 (the input channels" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in z.iterdir()} == before
    assert [e.name for e in Zoo(z).entries()] == ["first"]
    # a factory model (no timm config to read): its first convolution's, once it fails
    import signal_nets
    save_state_dict(signal_nets.fixed().state_dict(), tmp_path / "fixed.safetensors")
    assert _main(["zoo", "add", str(tmp_path / "fixed.safetensors"), "--arch", "signal_nets:fixed",
                  "--zoo", str(tmp_path / "z2"), "--input-size", "3,100"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (f"error: --input-size 3,100 gives 3 input channels, but the weights of "
            f"{tmp_path / 'fixed.safetensors'} (signal_nets:fixed) take 2 (the channel count it "
            f"runs on): give --input-size 2,100; nothing was added") in err
    assert not (tmp_path / "z2").exists()


def test_zoo_add_blames_the_channels_the_model_runs_on_and_only_channel_failures(
        tmp_path, capsys):
    """Review (session 27): the fallback blamed the channels of the first registered conv,
    an ECA-style gate (1 channel) before the stem (2), and blamed channels for a failure
    that was the length's."""
    import signal_nets
    weights = tmp_path / "gate.safetensors"
    save_state_dict(signal_nets.gate_first().state_dict(), weights)
    argv = ["zoo", "add", str(weights), "--arch", "signal_nets:gate_first",
            "--zoo", str(tmp_path / "z")]
    assert _main(argv + ["--input-size", "3,100"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (f"error: --input-size 3,100 gives 3 input channels, but the weights of {weights} "
            f"(signal_nets:gate_first) take 2 (the channel count it runs on): give "
            f"--input-size 2,100; nothing was added") in err
    # right channels, wrong length (the head reads 8 × 100): not blamed on the channels
    assert _main(argv + ["--input-size", "2,50"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "input channels" not in err and "Traceback" not in err
    assert "error: GateFirst failed on the example input of shape (1, 2, 50)" in err
    assert not (tmp_path / "z").exists() or not list((tmp_path / "z").glob("*.json"))
    assert _main(argv + ["--input-size", "2,100"]) == 0
    assert [e.input_size for e in Zoo(tmp_path / "z").entries()] == [[2, 100]]


def test_the_commands_a_hint_gives_name_the_zoo_unless_it_is_the_default(small_zoo, monkeypatch):
    """Review (session 27): the re-add / remove commands a damaged entry's message suggests
    left out `--zoo`, so for any zoo but the default one they would act on the default one."""
    (small_zoo / "m.safetensors").unlink()
    with pytest.raises(ZooError) as info:
        Zoo(small_zoo).transfer_to("m", _MNV3, num_classes=5, in_chans=1)
    assert str(info.value).endswith(
        f"--name m --num-classes 5 --in-chans 1 --force --zoo {small_zoo}`, or remove the entry with `netgraft zoo remove m "
        f"--zoo {small_zoo}`")
    monkeypatch.setenv("NETGRAFT_ZOO", str(small_zoo))
    with pytest.raises(ZooError) as info:
        Zoo().transfer_to("m", _MNV3, num_classes=5, in_chans=1)
    assert str(info.value).endswith(
        "--name m --num-classes 5 --in-chans 1 --force`, or remove the entry with "
        "`netgraft zoo remove m`")


def test_damage_message_follows_the_entrys_linked_flag_not_the_file(small_zoo, tmp_path):
    """Review (session 28): the message was chosen by path.is_symlink(), so a --link entry
    whose link was replaced by a regular (damaged) file read as a broken copy, and a copied
    entry that is now a symlink read as a changed --link file."""
    zoo = Zoo(small_zoo)
    lnk, outside = small_zoo / "lnk.safetensors", tmp_path / "linked.safetensors"
    whole = outside.read_bytes()
    lnk.unlink()
    lnk.write_bytes(whole[:len(whole) // 2])
    assert zoo.missing_weights(zoo.get("lnk")) == (
        f"its weights link {lnk} (added with --link, to {outside.resolve()}) was replaced by a "
        f"regular file, which is changed or truncated ({len(whole) // 2:,} bytes where its "
        f"header describes {len(whole):,})")
    own = small_zoo / "m.safetensors"
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not safetensors at all")
    own.unlink()
    own.symlink_to(broken)
    assert zoo.missing_weights(zoo.get("m")) == (
        f"its weights file {own} (a copy made by `zoo add`) is now a symbolic link to "
        f"{broken.resolve()}, which is no longer a readable safetensors file")


def test_the_re_add_command_a_hint_gives_registers_the_entry_as_it_was(tmp_path, checkpoints):
    """Review (session 27): the hinted `zoo add` left out --num-classes, --in-chans, --task
    and --accuracy, so running it registered another entry. Run it: the same metadata."""
    import shlex
    z, weights = tmp_path / "my zoo", tmp_path / "w.safetensors"
    weights.write_bytes(checkpoints[_MNV3].read_bytes())
    assert _main(["zoo", "add", str(weights), "--arch", _MNV3, "--name", "m", "--zoo", str(z),
                  "--task", "fashion mnist, 32px", "--accuracy", "83.3",
                  "--input-size", "1,48,48"]) == 0
    before = Zoo(z).get("m")
    (z / "m.safetensors").unlink()
    with pytest.raises(ZooError) as info:
        Zoo(z).transfer_to("m", _MNV3, num_classes=before.num_classes, in_chans=1)
    command = str(info.value).split("re-add the checkpoint with `netgraft ")[1].split("`")[0]
    argv = [str(weights) if word == "FILE" else word for word in shlex.split(command)]
    assert _main(argv) == 0
    after = Zoo(z).get("m")
    fields = ("arch", "num_classes", "in_chans", "task", "accuracy", "input_size")
    assert ([getattr(after, f) for f in fields] == [getattr(before, f) for f in fields]
            == [_MNV3, before.num_classes, 1, "fashion mnist, 32px", 0.833, [1, 48, 48]])
