import pytest
import timm
import torch
from safetensors.torch import save_file

from netgraft.checkpoint import (_os_reason, atomic_write_all, load_into, load_state_dict,
                                 load_weights, read_checkpoint, save_state_dict)
from netgraft.errors import CheckpointError


def test_round_trip_safetensors_and_torch(tmp_path):
    model = timm.create_model("resnet18", num_classes=10)
    for name in ("w.safetensors", "w.pt"):
        path = save_state_dict(model.state_dict(), tmp_path / name)
        fresh = timm.create_model("resnet18", num_classes=10)
        load_weights(fresh, path)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt", "w.safetensors"]  # no temp files left


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_state_dict(bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable torch file"):
        load_state_dict(junk)


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError, match="Python objects other than tensors") as err:
        load_state_dict(path)
    assert "weights_only set to False" not in str(err.value)  # never advise running it


def test_wrapped_and_data_parallel_checkpoints_are_unwrapped(tmp_path):
    model = torch.nn.Linear(3, 2)
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               tmp_path / "ckpt.pt")
    assert set(load_state_dict(tmp_path / "ckpt.pt")) == {"weight", "bias"}
    # a torch.compile'd model's state dict (QA, session 22: rejected as 2 missing tensors)
    torch.save({f"_orig_mod.{k}": v for k, v in model.state_dict().items()}, tmp_path / "c.pt")
    assert set(load_state_dict(tmp_path / "c.pt")) == {"weight", "bias"}


def test_wrong_architecture_is_explained(tmp_path):
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match=r"does not fit .*shape mismatches.*fc.weight.*--num-classes"):
        load_weights(timm.create_model("resnet18", num_classes=10), path)
    with pytest.raises(CheckpointError, match="missing from the file"):
        load_weights(timm.create_model("resnet34"), path)


def test_failed_write_leaves_no_partial_file(tmp_path):
    with pytest.raises(Exception):
        save_state_dict({"x": "not a tensor"}, tmp_path / "out.safetensors")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CheckpointError, match="output folder does not exist"):
        save_state_dict({"x": torch.ones(1)}, tmp_path / "nope" / "out.safetensors")


@pytest.mark.parametrize("content", [b"some text", bytes(range(256)) * 4,
                                     b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01u."])
def test_any_corrupt_torch_file_is_a_checkpoint_error(tmp_path, content):
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"w\.pth could not be loaded") as err:
        load_state_dict(path)
    assert "Re-running" not in str(err.value) and "weights_only set to False" not in str(err.value)


def test_odd_files_are_named_and_a_renamed_safetensors_file_is_read(tmp_path):
    torch.save({1: torch.ones(2)}, tmp_path / "intkeys.pt")
    with pytest.raises(CheckpointError, match="keys that are not parameter names"):
        load_state_dict(tmp_path / "intkeys.pt")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_state_dict(tmp_path)
    save_file({"w": torch.arange(3.0)}, str(tmp_path / "renamed.pt"))  # safetensors, .pt name
    assert torch.equal(load_state_dict(tmp_path / "renamed.pt")["w"], torch.arange(3.0))
    assert set(read_checkpoint(tmp_path / "renamed.pt")) == {"w"}


def test_several_outputs_are_written_all_or_nothing(tmp_path):
    (tmp_path / "a.json").write_text("old")

    def fail(tmp):
        raise OSError(28, "No space left on device")

    with pytest.raises(CheckpointError, match=r"cannot write .*b\.bin: No space left on device"):
        atomic_write_all([(tmp_path / "a.json", lambda t: open(t, "w").write("new")),
                          (tmp_path / "b.bin", fail)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temp file, no b.bin
    assert (tmp_path / "a.json").read_text() == "old"  # the first output was not replaced
    with pytest.raises(CheckpointError, match="is a folder"):
        save_state_dict({"x": torch.ones(1)}, tmp_path)


def test_a_safetensors_file_whose_name_is_not_utf8_loads(tmp_path):
    """QA (session 22): the reader refused the name, and the error said to re-export the file."""
    import os
    from safetensors.torch import save_file
    weights = {"w": torch.arange(4.0)}
    path = os.path.join(os.fsencode(tmp_path), b"bad\xff\xfe.safetensors")
    save_file(weights, str(tmp_path / "ok.safetensors"))
    os.rename(os.fsencode(tmp_path / "ok.safetensors"), path)
    assert torch.equal(load_state_dict(os.fsdecode(path))["w"], weights["w"])


def test_an_unreadable_file_is_named_as_such(tmp_path, monkeypatch):
    """QA (session 24): a weights file without read permission was called "not a readable
    safetensors file (No such file or directory)" with advice to re-export it."""
    import builtins

    path = tmp_path / "w.safetensors"
    path.write_bytes(b"x")
    real = builtins.open

    def denied(file, *args, **kwargs):  # what a file of mode 000 gives (root reads anything)
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real(file, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", denied)
    with pytest.raises(CheckpointError, match=r"cannot read file .*w.safetensors: Permission "
                                              r"denied \(check its permissions\)"):
        read_checkpoint(path)


def test_an_interruption_between_two_renames_leaves_a_consistent_pair(tmp_path, monkeypatch):
    """QA (session 24): Ctrl-C after the first of two renames replaced the weights and left
    the report stale, and the command line said "no output written". The renames now hold
    SIGINT until both are done; what was written is recorded rename by rename."""
    import os
    import signal

    from netgraft import checkpoint

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old"), b.write_text("old")
    real = os.replace
    calls = []

    def replace(src, dst):
        real(src, dst)
        calls.append(dst)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C right after the first rename
    monkeypatch.setattr(checkpoint.os, "replace", replace)
    checkpoint.WRITTEN.clear()
    # Python's own Ctrl-C handler, however this run was started (a background job of a
    # non-interactive shell starts with SIGINT ignored, and Python then installs none)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            atomic_write_all([(a, lambda t: open(t, "w").write("new")),
                              (b, lambda t: open(t, "w").write("new"))])
    finally:
        signal.signal(signal.SIGINT, before)
    assert a.read_text() == b.read_text() == "new"
    assert checkpoint.WRITTEN == [a, b]
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


@pytest.mark.parametrize("wrap", ["lightning", "swa"])
def test_lightning_and_swa_checkpoints_load(tmp_path, wrap):
    """QA (session 24): keys under a shared module path (Lightning's `model.`, an SWA
    AveragedModel's `module.` plus its `n_averaged`) were refused as 86 missing tensors."""
    model = timm.create_model("resnet10t", num_classes=3)
    prefix = "model." if wrap == "lightning" else "module."
    state = {prefix + k: v for k, v in model.state_dict().items()}
    if wrap == "swa":
        state["n_averaged"] = torch.tensor(5)
    torch.save({"state_dict": state} if wrap == "lightning" else state, tmp_path / "c.pt")
    fresh = timm.create_model("resnet10t", num_classes=3)
    load_weights(fresh, tmp_path / "c.pt")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in fresh.state_dict().items())


def test_a_torch_file_on_a_full_disk_names_the_full_disk(tmp_path, monkeypatch):
    """QA (session 24): a .pt output on a full disk failed with torch's "unexpected pos 576 vs
    534" (checked on a 200 KB tmpfs). Here the file refuses every write as a full disk does."""
    import io

    from netgraft import checkpoint

    class Full(io.BytesIO):  # the first write fills the disk
        def write(self, data):
            if self.tell() > 0:
                raise OSError(28, "No space left on device")
            return super().write(data)

    monkeypatch.setattr(checkpoint, "open", lambda path, mode: Full(), raising=False)
    with pytest.raises(CheckpointError, match=r"cannot write .*out\.pt: No space left on device; "
                                              r"nothing was written"):
        save_state_dict({"w": torch.randn(1000)}, tmp_path / "out.pt")
    assert list(tmp_path.iterdir()) == []
    assert _os_reason(RuntimeError("Error while serializing: I/O error: No space left on device "
                                   "(os error 28)")) == "No space left on device"


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_module_that_checks_its_version_on_loading_loads_from_a_plain_state_dict(tmp_path,
                                                                                    suffix):
    """QA (session 32): torchvision's MNASNet reads its version while loading and raised
    "version should be set to 1 or 2 instead of None" on any state dict without torch's
    `_metadata` (a safetensors file, a dict copy). `load_weights` now gives such a dict the
    model's own metadata."""
    import torchvision

    torch.manual_seed(0)
    trained = torchvision.models.mnasnet0_5(num_classes=10).eval()
    path = save_state_dict(dict(trained.state_dict()), tmp_path / f"mnasnet{suffix}")
    fresh = torchvision.models.mnasnet0_5(num_classes=10).eval()
    load_weights(fresh, path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), trained(x))
    plain = {k: v.clone() for k, v in trained.state_dict().items()}
    with pytest.raises(ValueError, match="version should be set"):  # what torch alone does
        torchvision.models.mnasnet0_5(num_classes=10).load_state_dict(plain)
    other = torchvision.models.mnasnet0_5(num_classes=10)
    load_into(other, plain)
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), plain.values()))
