import json

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from netgraft.cli import main




def _save(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def test_transfer_end_to_end(tmp_path, capsys):
    src = timm.create_model("resnet18", num_classes=7)
    _save(src, tmp_path / "src.safetensors")
    out = tmp_path / "dst.safetensors"
    code = main(["transfer", "--source", "resnet18", "--source-weights", str(tmp_path / "src.safetensors"),
                 "--target", "efficientnet_b0", "--num-classes", "10", "--in-chans", "1",
                 "--out", str(out), "--report", str(tmp_path / "r.json"),
                 "--min-score", "0"])
    assert code == 0
    text = capsys.readouterr().out
    assert "coverage" in text and "conv_stem" in text and f"wrote {out}" in text
    # in a pipe: the summary is the first line, whole (QA, session 22: a blank line came first
    # and rich padded the summary as the table's title)
    assert text.splitlines()[0] == json.loads((tmp_path / "r.json").read_text())["summary"]
    state = load_file(str(out))
    assert state["conv_stem.weight"].shape == (32, 1, 3, 3)
    target = timm.create_model("efficientnet_b0", num_classes=10, in_chans=1)
    target.load_state_dict(state)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["source"] == "resnet18" and 0 < report["coverage"] < 1
    # the grafted stem sums the three RGB kernels of the source's conv1 (centre 3x3 of its 7x7)
    expected = src.conv1.weight.sum(1, keepdim=True)[::2, :, 2:5, 2:5]  # 64 → 32: every other unit
    assert torch.allclose(state["conv_stem.weight"], expected, atol=1e-5)


@pytest.mark.parametrize("make_bad, message", [
    (lambda p: None, "weights file not found"),
    (lambda p: p.write_bytes(b"\x00" * 20), "not a readable safetensors file"),
    (lambda p: _save(timm.create_model("resnet34"), p), "does not fit the source 'resnet18'"),
])
def test_bad_source_weights_give_a_clear_error_and_no_output(tmp_path, capsys, make_bad, message):
    weights = tmp_path / "src.safetensors"
    make_bad(weights)
    out = tmp_path / "dst.safetensors"
    code = main(["transfer", "--source", "resnet18", "--source-weights", str(weights),
                 "--target", "resnet34", "--out", str(out), "-q"])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name != "src.safetensors"] == []


def _tiny_nets(tmp_path):
    """A source/target pair small enough for a CLI test: two timm ResNet-ish widths."""
    src = timm.create_model("resnet10t", num_classes=10, in_chans=1)
    _save(src, tmp_path / "src.safetensors")
    return ["--source", "resnet10t", "--source-weights", str(tmp_path / "src.safetensors"),
            "--target", "resnet14t", "--num-classes", "10", "--in-chans", "1",
            "--input-size", "1,32,32"]


def test_the_same_transfer_command_writes_the_same_file(tmp_path):
    """QA (session 22): three runs wrote three files (the layers left at init and the split
    jitter drew from an unseeded stream); --seed sets both, 0 by default."""
    args = [*_tiny_nets(tmp_path), "-q"]
    for name, extra in (("a", []), ("b", []), ("c", ["--seed", "1"])):
        assert main(["transfer", *args, *extra, "--out", str(tmp_path / f"{name}.safetensors")]) == 0
    a, b, c = (load_file(str(tmp_path / f"{n}.safetensors")) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_integer_calibration_images_are_warned_about_as_in_python(tmp_path, capsys):
    """QA (session 26): `--calibration` with uint8 images (0..255) said nothing, where
    `transfer(calibration_data=...)` warns; the norms then held statistics of 0..255."""
    import numpy as np

    path = tmp_path / "calib_u8.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (16, 1, 32, 32), dtype=np.uint8))
    out = tmp_path / "dst.safetensors"
    assert main(["transfer", *_tiny_nets(tmp_path), "--calibration", str(path), "--out",
                 str(out), "-q"]) == 0
    err = capsys.readouterr().err
    assert f"{path} holds uint8 values; they are cast to float as they are (e.g. 0..255)" in err
    assert out.is_file()


@pytest.mark.parametrize("kind", ["pt", "safetensors", "npy"])
def test_transfer_with_calibration_file_and_alignment(tmp_path, capsys, kind):
    import numpy as np

    x = torch.randn(48, 1, 32, 32)
    path = tmp_path / f"calib.{kind}"
    if kind == "pt":
        torch.save(x, path)
    elif kind == "safetensors":
        save_file({"x": x, "y": torch.zeros(48)}, str(path))  # 'x' is picked among several
    else:
        np.save(path, x.numpy())
    out = tmp_path / "dst.safetensors"
    code = main(["transfer", *_tiny_nets(tmp_path), "--calibration", str(path), "--align", "on",
                 "--align-steps", "3", "--out", str(out), "--report", str(tmp_path / "r.json"),
                 "-q"])
    assert code == 0
    assert "aligned" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["alignment"]["steps"] == 3 and report["alignment"]["images"] == 48
    assert report["calibrated_norms"] > 0
    target = timm.create_model("resnet14t", num_classes=10, in_chans=1)
    target.load_state_dict(load_file(str(out)))  # a complete state dict of the target


def test_transfer_with_a_builtin_dataset_as_calibration(tmp_path, capsys):
    out = tmp_path / "dst.safetensors"
    code = main(["transfer", *_tiny_nets(tmp_path), "--calibration", "digits:64",
                 "--out", str(out), "--report", str(tmp_path / "r.json"), "-q"])
    assert code == 0 and out.exists()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["alignment"] is None and report["calibrated_norms"] > 0  # statistics only
    # more than the dataset holds: said (QA, session 23: all were used silently)
    code = main(["transfer", *_tiny_nets(tmp_path), "--calibration", "digits:4000",
                 "--out", str(out), "--force", "-q"])
    assert code == 0 and ("--calibration digits:4000: the dataset holds 1497 training images; "
                          "all 1497 are used") in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("args, message", [
    (["--align", "on"], "--align on needs --calibration"),
    (["--split-noise", "2"], "--split-noise 2.0: use 0 up to below 1"),
    (["--calibration", "missing.npy"], "calibration data not found: missing.npy"),
    (["--calibration", "digits:64", "--method", "dpiat"], "--calibration is for --method graft"),
    (["--calibration", "digits:1"], "ask for at least 2"),
    (["--calibration", "fashion-mnist:999999"], "at most 4096 images"),  # QA, session 23
    (["--calibration", "imagenet:64"], "unknown dataset"),
    (["--calibration", "WRONG_SHAPE"], "but the model takes (N, 1, H, W), e.g. (N, 1, 32, 32)"),
    (["--calibration", "TWO"], "holds 2 tensors (a, b): name the inputs 'x'"),
])
def test_bad_calibration_gives_a_clear_error_and_no_output(tmp_path, capsys, args, message):
    torch.save(torch.randn(8, 3, 32, 32), tmp_path / "rgb.pt")
    torch.save({"a": torch.randn(8, 1, 32, 32), "b": torch.randn(8)}, tmp_path / "two.pt")
    args = [{"WRONG_SHAPE": str(tmp_path / "rgb.pt"), "TWO": str(tmp_path / "two.pt"),
             "missing.npy": "missing.npy"}.get(a, a) for a in args]
    out = tmp_path / "dst.safetensors"
    code = main(["transfer", *_tiny_nets(tmp_path), *args, "--out", str(out), "-q"])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_unknown_model_and_failing_forward(tmp_path, capsys):
    code = main(["transfer", "--source", "resnet1", "--target", "resnet18", "--out", str(tmp_path / "o.safetensors")])
    assert code == 2 and "Did you mean" in capsys.readouterr().err
    # (without --in-chans the target is now built for the 5 channels --input-size gives)
    code = main(["transfer", "--source", "resnet18", "--target", "resnet18", "--input-size", "5,64,64",
                 "--in-chans", "3", "--out", str(tmp_path / "o.safetensors"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "failed on the example input" in err and "--input-size" in err
    assert list(tmp_path.iterdir()) == []
    # QA (session 22): an --input-size of the wrong length (C,W for a 2-D conv net)
    code = main(["inspect", "resnet18", "--input-size", "3,32"])
    err = capsys.readouterr().err
    assert code == 2 and ("Its first convolution reads inputs of 3 dimensions (C,H,W, besides "
                          "the batch); this one has 2.") in err
    assert "--in-chans" not in err  # the channels torch complains of are not the problem


def test_custom_factory_model(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_models.py").write_text(
        "import torch.nn as nn\n"
        "def mlp(num_classes=10):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "o.safetensors"
    code = main(["transfer", "--source", "my_models:mlp", "--target", "my_models:mlp", "--num-classes", "5",
                 "--input-size", "1,28,28", "--source-input-size", "1,28,28", "--out", str(out), "-q"])
    assert code == 0 and load_file(str(out))["3.weight"].shape == (5, 64)
    code = main(["inspect", "my_models:nope"])
    assert code == 2 and "has no callable 'nope'" in capsys.readouterr().err


def test_similarity_and_inspect(capsys, tmp_path):
    assert main(["similarity", "resnet18", "resnet18", "--method", "graft"]) == 0
    assert "= 1.0000" in capsys.readouterr().out
    assert main(["inspect", "resnet18", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["layers"]) == 41
    # gray inputs: the models are built for the channels --input-size gives (QA, session 16:
    # a channel error that pointed at --input-size, the flag just given)
    assert main(["similarity", "resnet10t", "resnet14t", "--input-size", "1,32,32",
                 "--method", "graft"]) == 0
    assert "= 0.5452" in capsys.readouterr().out
    assert main(["similarity", "resnet10t", "resnet14t", "--input-size", "1,32,32",
                 "--in-chans", "3"]) == 2
    assert "build it for them (timm: in_chans=; CLI: --in-chans)" in " ".join(
        capsys.readouterr().err.split())
    # the source's input names the source's flag (QA, session 26: it said --in-chans)
    assert main(["transfer", "--source", "resnet10t", "--target", "resnet14t", "--num-classes",
                 "10", "--source-input-size", "1,32,32", "--out",
                 str(tmp_path / "unused.safetensors")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "with --source-input-size C,H,W" in err and "CLI: --source-in-chans)" in err
    assert not (tmp_path / "unused.safetensors").exists()
    # inspect too (QA, session 22: it needed --in-chans 1 as well)
    assert main(["inspect", "resnet10t", "--input-size", "1,32,32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layers"][0]["in_dim"] == 1


def test_python_dash_m_runs_the_cli():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "netgraft", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0
    assert all(cmd in out.stdout for cmd in ("transfer", "similarity", "rank", "zoo", "search"))


def test_a_reader_that_has_gone_is_not_an_error(tmp_path):
    """`netgraft similarity a b | head -1`: the pipe closes before the output is written (QA,
    session 16: "error: Broken pipe", exit 1, since BrokenPipeError is an OSError; and exit 1
    with no word from commands printing through rich, `zoo add ... | true`, after the work was
    done)."""
    import subprocess
    import sys

    from safetensors.torch import save_file

    weights = tmp_path / "r.safetensors"
    save_file(timm.create_model("resnet10t", num_classes=10, in_chans=1).state_dict(), weights)
    procs = []
    for args in (["similarity", "resnet10t", "resnet14t"],
                 ["zoo", "add", str(weights), "--arch", "resnet10t", "--zoo",
                  str(tmp_path / "zoo")]):  # both at once: most of their time is imports
        procs.append(subprocess.Popen([sys.executable, "-m", "netgraft", *args],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        procs[-1].stdout.close()  # the reader has gone before anything is written
    for proc in procs:
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 0, err
        assert "Broken pipe" not in err and "Traceback" not in err
    assert (tmp_path / "zoo" / "r.json").is_file()  # the work was done


def test_ctrl_c_while_the_command_line_starts_is_no_traceback():
    """QA (session 13): a Ctrl-C during the first second (torch being imported) printed
    Python's traceback. Simulated: the import of netgraft.align raises KeyboardInterrupt."""
    import subprocess
    import sys

    code = ("import sys, builtins\n"
            "sys.argv = [{argv0!r}]\n"
            "real = builtins.__import__\n"
            "def fake(name, *a, **k):\n"
            "    if name == 'align' or name.endswith('.align'):\n"
            "        raise KeyboardInterrupt\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = fake\n"
            "import netgraft\n")
    for argv0 in ("/usr/bin/netgraft", "my_script.py"):
        out = subprocess.run([sys.executable, "-c", code.format(argv0=argv0)],
                             capture_output=True, text=True, timeout=120)
        if argv0.endswith("netgraft"):  # the command line: its own words
            assert out.returncode == 130 and out.stderr.strip() == "interrupted; no output written"
        else:  # a program importing netgraft gets its KeyboardInterrupt (killed by SIGINT)
            assert out.returncode != 130 and "KeyboardInterrupt" in out.stderr


def test_ctrl_c_while_the_parser_imports_the_commands_is_no_traceback(monkeypatch, capsys):
    """QA (session 22): building the parser imports optuna and plotly (2–3 s); a Ctrl-C then
    printed Python's traceback."""
    import netgraft.cli as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["transfer", "--help"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted; no output written"


def _resnet10t_args(tmp_path):
    """`_tiny_nets`, quiet, and the source module it saved."""
    args = [*_tiny_nets(tmp_path), "-q"]
    src = timm.create_model("resnet10t", num_classes=10, in_chans=1)
    src.load_state_dict(load_file(str(tmp_path / "src.safetensors")))
    return src, args


def test_outputs_are_never_overwritten_without_force_and_never_onto_an_input(tmp_path, capsys):
    src, args = _resnet10t_args(tmp_path)
    weights = tmp_path / "src.safetensors"
    before = weights.read_bytes()
    # the source's own weights: refused even with --force
    for extra in ([], ["--force"]):
        assert main(["transfer", *args, "--out", str(weights), *extra]) == 2
        assert "is the file given as --source-weights" in capsys.readouterr().err
    assert weights.read_bytes() == before
    # nor the report, even with --force, even through a hard link
    import os

    os.link(weights, tmp_path / "hard.safetensors")
    assert main(["transfer", *args, "--out", str(tmp_path / "o.safetensors"), "--force",
                 "--report", str(tmp_path / "hard.safetensors")]) == 2
    assert "--report" in capsys.readouterr().err and weights.read_bytes() == before
    out = tmp_path / "dst.safetensors"
    assert main(["transfer", *args, "--out", str(out), "--report", str(out)]) == 2
    assert "--out and --report are the same file" in capsys.readouterr().err
    out.write_bytes(b"keep me")
    assert main(["transfer", *args, "--out", str(out)]) == 2
    assert "already exists: pass --force" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(["transfer", *args, "--out", str(out), "--force"]) == 0
    assert load_file(str(out))["conv1.0.weight"].shape == (24, 1, 3, 3)


def test_shape_flags_and_hints_name_the_side_they_belong_to(tmp_path, capsys):
    _, args = _resnet10t_args(tmp_path)
    with pytest.raises(SystemExit):
        main(["transfer", *args, "--num-classes", "-3", "--out", str(tmp_path / "o.safetensors")])
    assert "give a whole number of at least 1" in capsys.readouterr().err
    # the source file was trained with 1 input channel: the hint names the source's flags
    code = main(["transfer", "--source", "resnet10t", "--source-weights",
                 str(tmp_path / "src.safetensors"), "--source-in-chans", "3", "--target",
                 "resnet14t", "--out", str(tmp_path / "o.safetensors"), "-q"])
    assert code == 2
    assert "--source-num-classes and --source-in-chans" in capsys.readouterr().err


def test_a_broken_source_is_blamed_on_the_source(tmp_path, capsys):
    src, args = _resnet10t_args(tmp_path)
    with torch.no_grad():
        src.bn1.running_var[0] = -1.0
    _save(src, tmp_path / "src.safetensors")
    out = tmp_path / "dst.safetensors"
    assert main(["transfer", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'bn1.running_var' has negative variances" in err and not out.exists()


def test_library_warnings_name_the_cli_flags(tmp_path, capsys):
    src = timm.create_model("resnet18", num_classes=10, in_chans=1)
    _save(src, tmp_path / "src.safetensors")
    code = main(["transfer", "--source", "resnet18", "--source-weights",
                 str(tmp_path / "src.safetensors"), "--target", "efficientnet_b0",
                 "--num-classes", "10", "--in-chans", "1", "-q",
                 "--out", str(tmp_path / "dst.safetensors")])
    assert code == 0
    out, text = capsys.readouterr()
    assert "warning: resnet18 → efficientnet_b0 is a distant pair" in text  # on stderr
    assert "--calibration" in text and "calibration_data=" not in text and "cli.py" not in text
    assert "warning:" not in out
    from netgraft.cli import _flags

    assert _flags("pass calibration_data= or malign=True") == "pass --calibration or malign=True"


def test_align_steps_without_align_is_refused_and_auto_says_when_it_does_nothing(tmp_path, capsys):
    _, args = _resnet10t_args(tmp_path)
    out = tmp_path / "o.safetensors"
    assert main(["transfer", *args, "--out", str(out), "--align-steps", "5"]) == 2
    assert "--align-steps sets the steps of the alignment" in capsys.readouterr().err
    assert main(["transfer", *args, "--out", str(out), "--calibration", "digits:16",
                 "--align", "auto"]) == 0
    assert "--align auto aligns distant pairs only" in " ".join(capsys.readouterr().out.split())


def test_a_failed_or_interrupted_transfer_names_what_it_wrote(tmp_path, capsys, monkeypatch):
    _, args = _resnet10t_args(tmp_path)
    report = tmp_path / "r.json"
    # --out is a folder: refused before any work, and no report is left behind either
    (tmp_path / "dir.safetensors").mkdir()
    assert main(["transfer", *args, "--out", str(tmp_path / "dir.safetensors"), "--force",
                 "--report", str(report)]) == 2
    assert "is a folder" in capsys.readouterr().err and not report.exists()
    # a write that fails half-way (a full disk): neither file
    import netgraft.cli as cli_module

    def full_disk(tmp):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("netgraft.checkpoint.state_writer", lambda *a, **k: full_disk)
    out = tmp_path / "o.safetensors"
    assert main(["transfer", *args, "--out", str(out), "--report", str(report)]) == 2
    assert "No space left on device; nothing was written" in capsys.readouterr().err
    assert not out.exists() and not report.exists()
    monkeypatch.undo()
    # Ctrl-C after both files were written says so; before, that nothing was
    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "_print_report", interrupt)
    assert main(["transfer", *[a for a in args if a != "-q"], "--out", str(out),
                 "--report", str(report)]) == 130
    assert f"interrupted; wrote {out}, {report} before" in capsys.readouterr().err
    import importlib

    monkeypatch.setattr(importlib.import_module("netgraft.transfer"), "transfer", interrupt)
    assert main(["transfer", *args, "--out", str(tmp_path / "p.safetensors")]) == 130
    assert "interrupted; no output written" in capsys.readouterr().err


def test_bad_data_and_counts_are_named(tmp_path, capsys):
    _, args = _resnet10t_args(tmp_path)
    x = torch.randn(8, 1, 32, 32)
    x[3, 0, 5, 5] = float("nan")
    save_file({"x": x}, str(tmp_path / "nan.safetensors"))
    out = tmp_path / "o.safetensors"
    assert main(["transfer", *args, "--calibration", str(tmp_path / "nan.safetensors"),
                 "--out", str(out)]) == 2
    assert "1 of its 8 calibration inputs hold NaN or inf values (the first is input 3)" in \
        capsys.readouterr().err
    assert main(["transfer", "--source", "resnet10t", "--target", "resnet10t(num_classes=-5)",
                 "--out", str(out), "-q"]) == 2
    assert "num_classes=-5; give a whole number of at least 0" in capsys.readouterr().err
    assert main(["transfer", *args, "--target", "RESNET18", "--out", str(out)]) == 2
    assert "Did you mean resnet18?" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):
        main(["demo", "--steps", "-1"])
    assert "--steps: -1: give a whole number of at least 1" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not json")
    assert main(["bench", "--recompute", str(tmp_path / "notes.txt")]) == 2
    assert "not a result of this benchmark" in capsys.readouterr().err


def test_input_sizes_are_asked_for_with_the_flag_of_the_command(tmp_path, capsys):
    unguessable = "torch.nn:Embedding(num_embeddings=10,embedding_dim=3)"  # reads token ids
    assert main(["transfer", "--source", unguessable, "--target", "resnet10t", "-q",
                 "--out", str(tmp_path / "o.safetensors")]) == 2
    assert "pass --source-input-size C,H,W" in capsys.readouterr().err
    for command in (["inspect", unguessable], ["similarity", unguessable, "resnet10t"]):
        assert main(command) == 2
        assert "pass --input-size C,H,W" in capsys.readouterr().err
    assert main(["similarity", "resnet10t", "resnet14t", "--input-size", "3,32,32",
                 "--method", "graft"]) == 0
    assert "similarity(resnet10t, resnet14t) [graft] = 0." in capsys.readouterr().out


def test_out_of_memory_is_said_without_a_traceback(monkeypatch, capsys):
    import importlib

    def huge(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 120000000000 bytes")

    monkeypatch.setattr(importlib.import_module("netgraft.trace"), "trace", huge)
    assert main(["inspect", "resnet10t", "--input-size", "3,100000,100000"]) == 1
    assert "out of memory" in capsys.readouterr().err
    monkeypatch.setattr(importlib.import_module("netgraft.trace"), "trace",
                        lambda *a, **k: 1 / 0)  # any other error is a bug: its traceback stays
    with pytest.raises(ZeroDivisionError):
        main(["inspect", "resnet10t"])


def test_transfer_builds_the_target_for_the_channels_of_the_input_size(tmp_path):
    """QA (session 24): `transfer --input-size 1,32,32` built the target for 3 channels and
    failed on its own example input, where `inspect` and `similarity` build it for 1."""
    out = tmp_path / "o.safetensors"
    assert main(["transfer", "--source", "resnet10t", "--target", "resnet10t", "--input-size",
                 "1,32,32", "--out", str(out), "-q"]) == 0
    assert load_file(out)["conv1.0.weight"].shape[1] == 1


@pytest.mark.parametrize("argv, message", [
    (["transfer", "--source", "resnet18", "--target", "resnet34", "--out", "o.safetensors",
      "--report", ""], "argument --report: an empty name: give one, or leave the option out"),
    (["transfer", "--source", "resnet18", "--target", "resnet34", "--out", " "],
     "argument --out: an empty name"),
    (["transfer", "--source", "resnet18", "--target", "resnet34", "--out", "o.safetensors",
      "-q", "--all"], "argument --all: not allowed with argument -q/--quiet"),
    (["rank", "--target", "resnet18", "--then-transfer", ""], "argument --then-transfer: an empty"),
    (["rank", "--target", "resnet18", "--force"],
     "--force lets --then-transfer replace an existing file: give --then-transfer OUT with it"),
    (["search", "--cold", "--min-similarity", "0.3"],
     "--min-similarity chooses the model a trial is grafted from, and --cold grafts none"),
    (["search", "--cold", "--pool-scope", "all"], "--pool-scope chooses the model a trial"),
    (["search", "--pool", ""], "argument --pool: an empty name"),
    (["search", "--study", ""], "argument --study: an empty name"),
    (["report", "s.db", "--out", ""], "argument --out: an empty name"),
])
def test_options_that_would_be_ignored_are_refused_before_any_work(tmp_path, monkeypatch, capsys,
                                                                   argv, message):
    """QA (session 24): each of these was accepted and then did nothing (`--report ""` wrote no
    report, `-q --all` printed no table, `rank --force` without a file to replace, `search
    --cold --min-similarity` grafted nothing)."""
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []  # nothing created: no output, no study, no pool
