import gzip
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from netgraft.data import (
    DEFAULT_FASHION_MNIST_ROOT,
    FASHION_MNIST_ENV,
    DatasetNotFoundError,
    dataset_name,
    ImageDataset,
    load_dataset,
    load_digits,
    load_fashion_mnist,
)

FASHION_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]
FASHION_ROOT = Path(os.environ.get(FASHION_MNIST_ENV) or DEFAULT_FASHION_MNIST_ROOT)
needs_fashion = pytest.mark.skipif(
    not all((FASHION_ROOT / f).is_file() for f in FASHION_FILES),
    reason=f"Fashion-MNIST not installed in {FASHION_ROOT} (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch):
    # Tests pass `root` explicitly; a developer's env var must not leak into them.
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)


# ----------------------------------------------------------------- digits


def test_digits_split_shapes_and_classes():
    train, test = load_digits("train"), load_digits("test")
    assert isinstance(train, ImageDataset)
    assert (len(train), len(test)) == (1497, 300)
    assert train.x.shape == (1497, 1, 8, 8) and test.x.shape == (300, 1, 8, 8)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert train.num_classes == 10 and train.name == "digits"
    assert sorted(train.y.unique().tolist()) == list(range(10))
    # Stratified split: every class has 30 test examples (+-1).
    counts = torch.bincount(test.y, minlength=10)
    assert counts.min() >= 29 and counts.max() <= 31


def test_digits_split_is_fixed_and_disjoint():
    a, b = load_digits("train"), load_digits("train")
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    train, test = load_digits("train"), load_digits("test")
    train_rows = {tuple(r) for r in train.x.flatten(1).tolist()}
    test_rows = [tuple(r) for r in test.x.flatten(1).tolist()]
    # sklearn's digits contain a few duplicate images, so allow a handful.
    assert sum(r in train_rows for r in test_rows) < 10


def test_digits_normalised_with_train_statistics():
    train, test = load_digits("train"), load_digits("test")
    assert abs(train.x.mean().item()) < 1e-4
    assert abs(train.x.std().item() - 1.0) < 1e-4
    # Test split uses the train constants, so it is close to but not exactly 0/1.
    assert abs(test.x.mean().item()) < 0.1
    assert abs(test.x.std().item() - 1.0) < 0.1
    # Pixel value 0 (background) maps to -mean/std for both splits.
    assert train.x.min().item() == pytest.approx(test.x.min().item())
    assert train.x.min().item() == pytest.approx(-0.3053953 / 0.3761490, abs=1e-5)


def test_digits_in_chans_and_resize():
    ds = load_digits("test", size=32, in_chans=3)
    assert ds.x.shape == (300, 3, 32, 32) and ds.x.dtype == torch.float32
    assert torch.equal(ds.x[:, 0], ds.x[:, 2])  # channels are copies of the gray image
    base = load_digits("test")
    # Resizing changes pixels but keeps the overall intensity of each image.
    assert torch.allclose(ds.x.mean(dim=(1, 2, 3)), base.x.mean(dim=(1, 2, 3)), atol=0.05)
    assert torch.equal(ds.y, base.y)
    assert load_digits("test", size=8).x.shape == (300, 1, 8, 8)
    assert torch.equal(load_digits("test", size=8).x, base.x)  # same size: untouched


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        load_digits("val")
    with pytest.raises(ValueError, match="in_chans"):
        load_digits("train", in_chans=0)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar10", "train")


def test_dataset_names_are_canonical():
    # one name per dataset, whatever the spelling: a search resumed (or a pool shared) as
    # "Fashion_MNIST" must find what "fashion-mnist" recorded
    for spelling in ("fashion-mnist", "Fashion_MNIST", " FashionMNIST "):
        assert dataset_name(spelling) == "fashion-mnist"
    assert dataset_name("Digits") == "digits"
    assert load_dataset("DIGITS", "test", size=8).x.shape == (300, 1, 8, 8)
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        dataset_name("mnist")


# ----------------------------------------------------------------- subset / batches


def test_subset_is_stratified_and_deterministic():
    train = load_digits("train")
    sub = train.subset(100, seed=3)
    assert len(sub) == 100 and sub.x.shape == (100, 1, 8, 8)
    assert torch.bincount(sub.y, minlength=10).tolist() == [10] * 10
    again = train.subset(100, seed=3)
    assert torch.equal(sub.x, again.x) and torch.equal(sub.y, again.y)
    other = train.subset(100, seed=4)
    assert not torch.equal(sub.x, other.x)


def test_subset_uneven_sizes_and_bounds():
    train = load_digits("train")
    sub = train.subset(25, seed=0)
    counts = torch.bincount(sub.y, minlength=10)
    assert counts.sum() == 25 and counts.min() >= 2 and counts.max() <= 3
    assert len(train.subset(0)) == 0
    assert len(train.subset(len(train))) == len(train)
    with pytest.raises(ValueError):
        train.subset(len(train) + 1)


def test_subset_rows_come_from_the_parent():
    train = load_digits("train")
    sub = train.subset(50, seed=1)
    parent = {(tuple(x.flatten().tolist()), int(y)) for x, y in zip(train.x, train.y)}
    assert all((tuple(x.flatten().tolist()), int(y)) in parent for x, y in zip(sub.x, sub.y))


def test_batches_cover_split_and_shuffle_is_seeded():
    ds = load_digits("test")  # 300 examples
    plain = list(ds.batches(128, shuffle=False))
    assert [len(y) for _, y in plain] == [128, 128, 44]
    assert torch.equal(torch.cat([y for _, y in plain]), ds.y)
    a = torch.cat([y for _, y in ds.batches(64, shuffle=True, seed=7)])
    b = torch.cat([y for _, y in ds.batches(64, shuffle=True, seed=7)])
    c = torch.cat([y for _, y in ds.batches(64, shuffle=True, seed=8)])
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a.sort().values, ds.y.sort().values)  # a permutation
    assert [len(y) for _, y in ds.batches(128, shuffle=True, seed=0, drop_last=True)] == [128, 128]


# ----------------------------------------------------------------- Fashion-MNIST


@needs_fashion
def test_fashion_mnist_shapes():
    train = load_fashion_mnist("train", root=FASHION_ROOT)
    test = load_fashion_mnist("test", root=FASHION_ROOT)
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert train.num_classes == 10 and train.name == "fashion-mnist"
    assert torch.bincount(train.y).tolist() == [6000] * 10
    assert torch.bincount(test.y).tolist() == [1000] * 10
    assert abs(train.x.mean().item()) < 1e-3 and abs(train.x.std().item() - 1) < 1e-3


@needs_fashion
def test_fashion_mnist_env_var_resize_and_channels(monkeypatch):
    monkeypatch.setenv(FASHION_MNIST_ENV, str(FASHION_ROOT))
    ds = load_dataset("fashion-mnist", "test", size=32, in_chans=3)
    assert ds.x.shape == (10000, 3, 32, 32) and ds.name == "fashion-mnist"


def test_missing_root_raises_helpful_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        load_fashion_mnist("train", root=missing)
    assert isinstance(info.value, FileNotFoundError)
    assert "dataset-fashion-mnist" in str(info.value)
    assert str(missing) in str(info.value)
    assert FASHION_MNIST_ENV in str(info.value)


def test_env_var_overrides_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path)):
        load_fashion_mnist("test")


def _write_idx(path, magic, dims, data: bytes):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    with gzip.open(path, "wb") as f:
        f.write(header + data)


def _write_test_split(root, images_dims=(10000, 28, 28), images_magic=2051):
    n_img = int(np.prod(images_dims))
    _write_idx(root / "t10k-images-idx3-ubyte.gz", images_magic, images_dims, bytes(n_img))
    _write_idx(root / "t10k-labels-idx1-ubyte.gz", 2049, (10000,), bytes(10000))


def test_synthetic_idx_files_load(tmp_path):
    _write_test_split(tmp_path)
    ds = load_fashion_mnist("test", root=tmp_path)
    assert ds.x.shape == (10000, 1, 28, 28)
    assert ds.x.unique().tolist() == pytest.approx([-0.2860406 / 0.3530242])


def test_wrong_magic_raises_value_error_naming_file(tmp_path):
    _write_test_split(tmp_path, images_magic=1234)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz.*magic"):
        load_fashion_mnist("test", root=tmp_path)


def test_truncated_gzip_raises_value_error_naming_file(tmp_path):
    _write_test_split(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut the gzip stream short
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz"):
        load_fashion_mnist("test", root=tmp_path)


def test_short_payload_and_wrong_count_raise(tmp_path):
    _write_test_split(tmp_path)
    # Valid gzip, but the header promises more bytes than follow.
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 2049, (10000,), bytes(9000))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz"):
        load_fashion_mnist("test", root=tmp_path)
    # Self-consistent file with the wrong number of items for the split.
    _write_test_split(tmp_path, images_dims=(500, 28, 28))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz.*500"):
        load_fashion_mnist("test", root=tmp_path)


def test_replaced_file_is_not_served_from_cache(tmp_path):
    _write_test_split(tmp_path)
    assert len(load_fashion_mnist("test", root=tmp_path)) == 10000
    labels = np.full(10000, 3, dtype=np.uint8).tobytes()
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 2049, (10000,), labels)
    os.utime(tmp_path / "t10k-labels-idx1-ubyte.gz", ns=(1, 1))  # distinct mtime
    assert load_fashion_mnist("test", root=tmp_path).y.unique().tolist() == [3]


def test_not_gzip_raises_value_error(tmp_path):
    _write_test_split(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"this is not gzip data at all")
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz"):
        load_fashion_mnist("test", root=tmp_path)


# ----------------------------------------------------------------- load_dataset


def test_fallback_warns_and_returns_digits(tmp_path):
    with pytest.warns(UserWarning, match="dataset-fashion-mnist"):
        ds = load_dataset("fashion-mnist", "test", size=16, in_chans=3, fallback=True, root=tmp_path)
    assert ds.name == "digits" and ds.x.shape == (300, 3, 16, 16)


def test_fallback_via_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "missing"))
    with pytest.warns(UserWarning, match="dataset-fashion-mnist"):
        ds = load_dataset("fashion-mnist", "train", fallback=True)
    assert ds.name == "digits" and len(ds) == 1497


def test_no_fallback_raises(tmp_path):
    with pytest.raises(DatasetNotFoundError):
        load_dataset("fashion-mnist", "train", root=tmp_path)


def test_fallback_does_not_hide_corrupt_files(tmp_path):
    _write_test_split(tmp_path, images_magic=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="magic"):
            load_dataset("fashion-mnist", "test", fallback=True, root=tmp_path)


def test_load_dataset_digits_by_name():
    ds = load_dataset("digits", "train", in_chans=3)
    assert ds.name == "digits" and ds.x.shape == (1497, 3, 8, 8)


def test_read_tensors_never_unpickles_and_names_a_lone_tensor(tmp_path):
    import numpy as np
    from safetensors.torch import save_file

    from netgraft.data import load_dataset_spec, read_tensors

    x = torch.randn(4, 1, 8, 8)
    torch.save(x, tmp_path / "a.pt")
    np.save(tmp_path / "a.npy", x.numpy())
    save_file({"x": x, "y": torch.zeros(4)}, str(tmp_path / "a.safetensors"))
    torch.save({"x": x, "note": "text"}, tmp_path / "d.pt")
    assert torch.equal(read_tensors(tmp_path / "a.pt")["x"], x)
    assert torch.equal(read_tensors(tmp_path / "a.npy")["x"], x)
    assert set(read_tensors(tmp_path / "a.safetensors")) == {"x", "y"}
    assert set(read_tensors(tmp_path / "d.pt")) == {"x"}  # non-tensor values dropped
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="cannot read .*obj.npy"):
        read_tensors(tmp_path / "obj.npy")  # object arrays would need pickles: refused
    with pytest.raises(FileNotFoundError):
        read_tensors(tmp_path / "missing.pt")
    digits = load_dataset_spec("digits:30", size=8, in_chans=1, default_count=10)
    assert digits.x.shape == (30, 1, 8, 8)
    assert len(load_dataset_spec("digits", size=8, in_chans=1, default_count=10)) == 10
    with pytest.raises(ValueError, match="whole number"):
        load_dataset_spec("digits:many", size=8, in_chans=1, default_count=10)
