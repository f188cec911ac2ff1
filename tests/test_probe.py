"""The data-driven ranking stage: linear probe, CKA, short fine-tune, CLI."""
import argparse
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from netgraft.data import load_digits
from netgraft.probe import (ProbeError, labelled, linear_cka, linear_probe, load_probe_data,
                            pooled_features, probe_sources)
from netgraft.training import train


def test_linear_cka_is_one_for_the_same_representation_up_to_rotation_and_scale():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 16))
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert linear_cka(a, a) == pytest.approx(1.0)
    assert linear_cka(a, 3.0 * a @ q) == pytest.approx(1.0)
    assert linear_cka(a, rng.normal(size=(200, 16))) < 0.2
    assert linear_cka(a, np.zeros((200, 4))) == 0.0


def test_linear_probe_separates_clusters_and_not_noise():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 60)
    centres = rng.normal(size=(4, 20)) * 4
    assert linear_probe(centres[y] + rng.normal(size=(240, 20)), y) > 0.95
    assert linear_probe(rng.normal(size=(240, 20)), y) < 0.45  # chance is 0.25


def test_labelled_accepts_tensors_datasets_and_batches_and_rejects_bad_data():
    x, y = torch.randn(30, 1, 8, 8), torch.arange(30) % 3
    for data in ((x, y), [(x[:15], y[:15]), (x[15:], y[15:])]):
        got_x, got_y = labelled(data)
        assert got_x.shape == (30, 1, 8, 8) and torch.equal(got_y, y)
    assert labelled(load_digits("test"), limit=50)[0].shape == (50, 1, 8, 8)
    with pytest.raises(ProbeError, match="at least 2 classes"):
        labelled((x, torch.zeros(30)))
    with pytest.raises(ProbeError, match="needs ≥ 3 examples"):
        labelled((x[:4], torch.tensor([0, 0, 1, 1])))
    with pytest.raises(ProbeError, match="30 inputs but 29 labels"):
        labelled((x, y[:29]))
    with pytest.raises(ProbeError, match="iterable of"):
        labelled(42)
    nan = x.clone()
    nan[3, 0, 0, 0] = float("nan")  # QA (session 16): every CKA read 0.00, no error
    with pytest.raises(ProbeError, match="1 of the 30 inputs hold NaN or inf values"):
        labelled((nan, y))


def _net(width: int = 16) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


@pytest.fixture(scope="module")
def digits_source():
    torch.manual_seed(0)
    model = _net()
    train(model, load_digits("train"), steps=150, batch_size=64, lr=3e-3)
    return model


def test_pooled_features_concatenate_every_block(digits_source):
    x = load_digits("test").x[:20]
    feats, final = pooled_features(digits_source, x)
    assert feats.shape[0] == 20 and final.shape == (20, 16)
    assert feats.shape[1] > final.shape[1] and np.array_equal(feats[:, -16:], final)


def test_trained_source_beats_untrained_source_on_every_probe(digits_source):
    torch.manual_seed(1)
    untrained = _net()
    data = load_digits("test")  # 300 labelled examples, 10 classes

    def make_target():
        torch.manual_seed(2)
        return _net()

    results = probe_sources([("trained", digits_source), ("untrained", untrained)], make_target,
                            data, steps=15, target_name="net")
    trained, other = results
    assert [r.source for r in results] == ["trained", "untrained"] and trained.target == "net"
    assert trained.coverage == pytest.approx(1.0)
    assert trained.cka == pytest.approx(1.0, abs=1e-6)  # same architecture: an exact copy
    assert trained.accuracy > trained.baseline + 0.05
    assert trained.tuned > trained.tuned_baseline + 0.05
    assert trained.gain == pytest.approx(trained.tuned - trained.tuned_baseline)
    assert trained.gain > other.gain and trained.baseline == other.baseline
    d = trained.to_dict()
    assert d["gain"] == round(trained.gain, 6) and d["source"] == "trained"
    with pytest.raises(ProbeError, match="steps=-1"):
        probe_sources([], make_target, data, steps=-1)


def test_load_probe_data_from_files_and_builtin_datasets(tmp_path):
    x, y = torch.randn(12, 1, 8, 8), torch.arange(12) % 2
    save_file({"x": x, "y": y}, tmp_path / "d.safetensors")
    got = load_probe_data(str(tmp_path / "d.safetensors"))
    assert torch.equal(got[0], x) and torch.equal(got[1], y)
    torch.save({"x": x, "y": y}, tmp_path / "d.pt")
    assert torch.equal(load_probe_data(str(tmp_path / "d.pt"), limit=6)[0], x[:6])
    save_file({"inputs": x}, tmp_path / "bad.safetensors")
    with pytest.raises(ProbeError, match="named 'x'"):
        load_probe_data(str(tmp_path / "bad.safetensors"))
    with pytest.raises(ProbeError, match="not found"):
        load_probe_data(str(tmp_path / "missing.safetensors"))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ProbeError, match="probe data: .*junk.pt"):
        load_probe_data(str(tmp_path / "junk.pt"))
    xs, ys = load_probe_data("digits:120", image_size=16)
    assert xs.shape == (120, 1, 16, 16) and set(ys.tolist()) == set(range(10))
    with pytest.raises(ProbeError, match="unknown dataset"):
        load_probe_data("imagenet:10")


def test_cli_rank_probe_reranks_the_shortlist(tmp_path, capsys):
    from netgraft.checkpoint import save_state_dict
    from netgraft.zoo import Zoo, ZooError, add_rank_arguments, run_rank

    torch.manual_seed(0)
    digits = load_digits("train", in_chans=1)
    keep = digits.y < 5
    x, y = digits.x[keep][:400], digits.y[keep][:400]
    good = _timm_trained(x, y)
    zoo = Zoo(tmp_path / "zoo")
    for name, model in (("good", good), ("fresh", _timm_fresh())):
        save_state_dict(model.state_dict(), tmp_path / f"{name}.safetensors")
        zoo.add(tmp_path / f"{name}.safetensors", f"resnet10t{NARROW}", name=name)
    save_file({"x": x.contiguous(), "y": y}, tmp_path / "probe.safetensors")

    parser = add_rank_arguments(argparse.ArgumentParser())
    args = ["--target", f"resnet14t{NARROW}", "--num-classes", "5", "--in-chans", "1", "--zoo",
            str(tmp_path / "zoo"), "--input-size", "1,8,8"]
    assert run_rank(parser.parse_args(args + ["--probe-data", str(tmp_path / "probe.safetensors"),
                                              "--probe-steps", "10", "--json"])) == 0
    doc = json.loads(capsys.readouterr().out)
    probe = doc["probe"]
    assert probe["examples"] == 400 and probe["steps"] == 10 and probe["candidates"] == 2
    assert [r["name"] for r in probe["ranking"]] == ["good", "fresh"]
    assert probe["ranking"][0]["gain"] > probe["ranking"][1]["gain"]
    assert run_rank(parser.parse_args(args + ["--probe-data", str(tmp_path / "probe.safetensors"),
                                              "--probe-steps", "0", "--probe-top", "1"])) == 0
    out = capsys.readouterr().out
    assert "probe: 1 candidates on 400 labelled examples" in out and "linear probe" in out
    with pytest.raises(ProbeError, match=r"labels out of range 0..4 \(found 9\)"):
        run_rank(parser.parse_args(args + ["--probe-data", "digits:100"]))
    with pytest.raises(ZooError, match="--probe-top 0"):
        run_rank(parser.parse_args(args + ["--probe-data", "digits:100", "--probe-top", "0"]))
    # QA (session 25): --top cut the probe's shortlist to 1 candidate, and without --in-chans
    # the probe data took the best source's channels, not the target's (--input-size's here)
    no_chans = [a for a in args if a not in ("--in-chans", "1")]
    assert run_rank(parser.parse_args(no_chans + ["--top", "1", "--probe-data",
                                                  str(tmp_path / "probe.safetensors"),
                                                  "--probe-steps", "0", "--probe-limit", "100",
                                                  "--json"])) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["ranking"]) == 1 and doc["probe"]["candidates"] == 2
    assert doc["probe"]["examples"] == 100
    # QA (session 24): probe settings without --probe-data were accepted and unused
    for option in ("--probe-top", "--probe-steps", "--probe-limit"):
        with pytest.raises(ZooError, match=f"{option} sets the probe stage: give --probe-data"):
            run_rank(parser.parse_args(args + [option, "3"]))


#: a quarter of the usual widths: the ranking is the same, the steps 10× cheaper
NARROW = "(channels=(16,32,64,128))"


def _timm_fresh():
    from netgraft.models import create_model
    torch.manual_seed(3)
    return create_model(f"resnet10t{NARROW}", num_classes=5, in_chans=1)


def _timm_trained(x, y):
    from netgraft.data import ImageDataset
    model = _timm_fresh()
    train(model, ImageDataset("d", x, y, 5), steps=60, batch_size=64, lr=3e-3)
    return model


def test_labels_must_be_class_numbers_and_the_limit_positive():
    x = torch.randn(30, 1, 8, 8)
    y = torch.arange(30) % 3
    got_x, got_y = labelled((x, y.float()))  # whole numbers stored as floats are fine
    assert got_y.dtype == torch.int64 and torch.equal(got_y, y)
    assert torch.equal(labelled((x, y[:, None]))[1], y)  # (N, 1) too
    for bad, message in ((torch.randn(30), "float32 values such as"),
                         (y.float() + 0.5, "values such as 0.5"),
                         (torch.full((30,), float("nan")), "values such as nan"),
                         (y - 1, "label -1 is negative"),
                         (torch.nn.functional.one_hot(y), r"shape \(30, 3\): give one class number")):
        with pytest.raises(ProbeError, match=message):
            labelled((x, bad), what="d.safetensors")
    for limit in (0, -5, 2.5):
        with pytest.raises(ProbeError, match=f"limit {limit}: give a positive number"):
            labelled((x, y), limit)
    # labels beyond the target's classes are named as such, before the cross-validation check
    with pytest.raises(ProbeError, match=r"labels out of range 0..9 \(found 29\)"):
        labelled((x, torch.arange(30)), num_classes=10)


def test_cli_probe_data_errors_name_the_file(tmp_path, capsys):
    import timm

    from netgraft.checkpoint import save_state_dict
    from netgraft.cli import main
    from netgraft.zoo import Zoo

    save_state_dict(timm.create_model("mobilenetv3_small_050", num_classes=10, in_chans=1)
                    .state_dict(), tmp_path / "m.safetensors")
    Zoo(tmp_path / "zoo").add(tmp_path / "m.safetensors", "mobilenetv3_small_050", name="m")
    x = torch.randn(60, 1, 8, 8)
    files = {"floaty": torch.randn(60), "neg": torch.full((60,), -1), "wide": torch.arange(60) % 50,
             "ok": torch.arange(60) % 3}
    for name, y in files.items():
        save_file({"x": x, "y": y}, tmp_path / f"{name}.safetensors")
    argv = ["rank", "--target", "mobilenetv3_small_050", "--num-classes", "10", "--in-chans", "1",
            "--input-size", "1,8,8", "--zoo", str(tmp_path / "zoo"), "-q", "--probe-data"]
    for name, message in (("floaty", "labels y are float32 values such as"),
                          ("neg", "label -1 is negative"),
                          ("wide", "labels out of range 0..9 (found 49) for a target of 10 classes")):
        assert main(argv + [str(tmp_path / f"{name}.safetensors")]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / name}.safetensors: {message}" in err and "Traceback" not in err, err
    for limit in ("-5", "0"):
        with pytest.raises(SystemExit) as info:
            main(argv + [str(tmp_path / "ok.safetensors"), "--probe-limit", limit])
        assert info.value.code == 2
        assert f"--probe-limit: {limit}: give a whole number of at least 1" in capsys.readouterr().err
    with pytest.raises(ProbeError, match="--probe-limit 0: give a positive number"):
        load_probe_data(str(tmp_path / "ok.safetensors"), limit=0)


def test_a_built_in_probe_set_takes_the_limit_and_the_models_input_shape():
    """QA (session 25): --probe-limit was ignored for fashion-mnist / digits, and the images
    were square whatever the target's input (--input-size 1,16,24 gave 24×24)."""
    x, y = load_probe_data("digits:300", image_size=(16, 24), limit=100)
    assert tuple(x.shape) == (100, 1, 16, 24) and len(y) == 100
    x, _ = load_probe_data("digits:50", image_size=12, in_chans=3)
    assert tuple(x.shape) == (50, 3, 12, 12)


def test_cli_rank_probe_runs_a_source_added_with_an_input_size_at_its_own_size(
        tmp_path, capsys):
    """QA (session 27): `rank --probe-data` ran every source on the probe data, so a zoo entry
    added with --input-size (a model that takes one input size only) failed: "FixedLength
    failed on the example input of shape (1, 2, 64)"."""
    import copy
    import warnings

    import torch.nn.functional as F

    import netgraft
    from netgraft.checkpoint import save_state_dict
    from netgraft.cli import main
    from netgraft.zoo import Zoo

    import signal_nets as models
    torch.manual_seed(0)
    save_state_dict(models.fixed().state_dict(), tmp_path / "fixed.safetensors")
    z = str(tmp_path / "zoo")
    assert main(["zoo", "add", str(tmp_path / "fixed.safetensors"), "--arch",
                 "signal_nets:fixed", "--input-size", "2,100", "--zoo", z]) == 0
    x, y = torch.randn(60, 2, 64), torch.arange(60) % 3
    save_file({"x": x, "y": y}, tmp_path / "probe.safetensors")
    capsys.readouterr()
    assert main(["rank", "--target", "signal_nets:anylen", "--input-size", "2,64",
                 "--zoo", z, "--json", "--probe-data", str(tmp_path / "probe.safetensors"),
                 "--probe-steps", "0"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (ranked,), (probed,) = doc["ranking"], doc["probe"]["ranking"]
    assert probed["name"] == ranked["name"] == "fixed" and doc["probe"]["examples"] == 60
    assert probed["coverage"] == pytest.approx(ranked["coverage"], abs=1e-6)
    # the CKA compares the graft on the probe inputs with the source on the same inputs
    # resized to its own length (100), as `zoo add --input-size 2,100` says it takes
    source = Zoo(z).load_source("fixed")
    torch.manual_seed(0)
    target = models.anylen()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        netgraft.transfer(copy.deepcopy(source), target, example_input=x[:1],
                          source_input=torch.randn(1, 2, 100))
    _, final = pooled_features(target, x)
    _, source_final = pooled_features(source, F.interpolate(x, size=100, mode="linear"))
    assert probed["cka"] == pytest.approx(linear_cka(source_final, final), abs=1e-5)
    from netgraft.probe import source_view
    with pytest.raises(ProbeError, match=r"source 'fixed' takes inputs of shape \(2, 10, 10\), "
                                         r"the probe inputs are \(2, 64\): give probe data"):
        source_view(x, source, torch.randn(1, 2, 10, 10), "fixed")


def test_a_token_model_source_sees_the_probe_inputs_as_they_are():
    """Review (session 27): `source_view` read dimension 1 as channels, so a source without
    convs taking (N, L, D) tokens, stored with its own input (1, 10, 8), got (N, 10, 8) inputs
    whose every token was the mean of the 20 probe tokens."""
    from netgraft.probe import source_view
    source = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(4, 20, 8)
    assert torch.equal(source_view(x, source, torch.randn(1, 10, 8), "tokens"), x)
