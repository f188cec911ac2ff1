"""Small offline image datasets for demos and benchmarks.

Two sources, neither needing network access:

* Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (gzip'd IDX
  files under ``/usr/share/datasets/fashion-mnist``; override the directory
  with the ``root`` argument or the ``NETGRAFT_FASHION_MNIST`` variable).
* scikit-learn's bundled 8x8 digits, always available, used as a fallback.

A split is held entirely in memory as tensors (``ImageDataset``), which is
fine at this scale and keeps batching trivial and deterministic.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DatasetNotFoundError",
    "ImageDataset",
    "load_fashion_mnist",
    "load_digits",
    "load_dataset",
    "load_dataset_spec",
    "dataset_name",
    "read_tensors",
    "TENSOR_FILE_SUFFIXES",
    "DEFAULT_FASHION_MNIST_ROOT",
    "FASHION_MNIST_ENV",
]

DEFAULT_FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_ENV = "NETGRAFT_FASHION_MNIST"
_APT_PACKAGE = "dataset-fashion-mnist"

# Mean/std of the *train* pixels scaled to [0, 1], computed once offline.
# Fixed constants (rather than per-load statistics) make the test split use
# exactly the train normalisation, whatever subset or resize is requested.
_FASHION_MNIST_MEAN, _FASHION_MNIST_STD = 0.2860406, 0.3530242
_DIGITS_MEAN, _DIGITS_STD = 0.3053953, 0.3761490  # train split below, pixels / 16

_DIGITS_TEST_SIZE = 300  # 1797 images -> 1497 train / 300 test
_DIGITS_SPLIT_SEED = 0

_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_FASHION_COUNTS = {"train": 60000, "test": 10000}
_IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC = 2051, 2049


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not installed where we looked."""


@dataclass
class ImageDataset:
    """One split of an image classification dataset, held in memory.

    ``x`` is float32 ``(N, C, H, W)`` normalised with the train-split
    statistics; ``y`` is int64 ``(N,)``. When ``in_chans > 1`` the channels are
    an ``expand``-ed view of the gray channel (no extra memory), so write to
    ``x`` only after ``x.contiguous()``.
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, n: int, seed: int = 0) -> "ImageDataset":
        """Stratified random subset of ``n`` examples (deterministic in ``seed``).

        Each class gets its proportional share of ``n`` (largest-remainder
        rounding), so small subsets keep the class balance of the full split.
        """
        total = len(self)
        if not 0 <= n <= total:
            raise ValueError(f"subset size must be in [0, {total}], got {n}")
        g = torch.Generator().manual_seed(seed)
        counts = torch.bincount(self.y, minlength=self.num_classes)
        share = counts.double() * n / total
        quota = share.floor().long()
        # Hand the leftover slots to the classes with the largest remainders;
        # a stable sort keeps tie-breaking (lowest class first) deterministic.
        leftover = n - int(quota.sum())
        order = torch.sort(share - quota.double(), descending=True, stable=True).indices
        quota[order[:leftover]] += 1
        picked = []
        for c in range(self.num_classes):
            idx = torch.nonzero(self.y == c).flatten()
            picked.append(idx[torch.randperm(len(idx), generator=g)[: int(quota[c])]])
        # Keep the original order so a subset is not accidentally class-sorted.
        keep = torch.cat(picked).sort().values
        return ImageDataset(self.name, self.x[keep], self.y[keep], self.num_classes)

    def batches(
        self,
        batch_size: int,
        shuffle: bool,
        seed: int | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` mini-batches covering the split once.

        With ``shuffle`` the order comes from a ``torch.Generator`` seeded with
        ``seed`` (``seed=None`` draws from torch's global RNG instead).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        if shuffle:
            g = None if seed is None else torch.Generator().manual_seed(seed)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield self.x[idx], self.y[idx]


# --------------------------------------------------------------------------- #
# Fashion-MNIST (IDX files)


def _fashion_root(root: str | os.PathLike | None) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get(FASHION_MNIST_ENV)
    return Path(env) if env else DEFAULT_FASHION_MNIST_ROOT


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Decode one gzip'd IDX file (big-endian header, then raw uint8 data)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise ValueError(f"corrupt IDX file {path}: cannot decompress ({e})") from e
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"corrupt IDX file {path}: only {len(raw)} bytes, header needs {header}")
    got_magic = int.from_bytes(raw[:4], "big")
    if got_magic != magic:
        raise ValueError(f"corrupt IDX file {path}: magic number {got_magic}, expected {magic}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = math.prod(dims)  # Python ints: a corrupt header cannot overflow
    if len(raw) - header != expected:
        raise ValueError(
            f"corrupt IDX file {path}: header says {dims} ({expected} bytes of data) "
            f"but the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


@functools.lru_cache(maxsize=8)
def _fashion_arrays(root: str, split: str, stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    # Cached per (root, split): decoding 47 MB of gzip is the slow part of a load.
    # `stamp` (file sizes/mtimes) is part of the key so that a replaced file
    # is re-read. The arrays are read-only views of the decoded bytes.
    images_name, labels_name = _FASHION_FILES[split]
    images = _read_idx(Path(root) / images_name, _IDX_IMAGES_MAGIC, 3)
    labels = _read_idx(Path(root) / labels_name, _IDX_LABELS_MAGIC, 1)
    expected = _FASHION_COUNTS[split]
    for path, arr in ((images_name, images), (labels_name, labels)):
        if arr.shape[0] != expected:
            raise ValueError(
                f"corrupt IDX file {Path(root) / path}: {arr.shape[0]} items, "
                f"Fashion-MNIST {split} has {expected}"
            )
    if images.shape[1:] != (28, 28):
        raise ValueError(f"corrupt IDX file {Path(root) / images_name}: images are {images.shape[1:]}, expected (28, 28)")
    if labels.max() >= 10:
        raise ValueError(f"corrupt IDX file {Path(root) / labels_name}: label {labels.max()} out of range 0..9")
    return images, labels


def load_fashion_mnist(
    split: str = "train",
    size: int | None = None,
    in_chans: int = 1,
    root: str | os.PathLike | None = None,
) -> ImageDataset:
    """Fashion-MNIST (60000 train / 10000 test, 10 classes, 28x28 gray).

    ``root`` defaults to ``$NETGRAFT_FASHION_MNIST`` or
    ``/usr/share/datasets/fashion-mnist``. Raises ``DatasetNotFoundError`` if
    the files are missing and ``ValueError`` if one is corrupt.
    """
    _check_split(split)
    directory = _fashion_root(root)
    missing = [n for n in _FASHION_FILES[split] if not (directory / n).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"Fashion-MNIST {split} files {missing} not found in {directory}. "
            f"Install them with `apt-get install {_APT_PACKAGE}` "
            f"(or set {FASHION_MNIST_ENV} to a directory holding the IDX .gz files)."
        )
    stamp = tuple((s.st_size, s.st_mtime_ns) for s in ((directory / n).stat() for n in _FASHION_FILES[split]))
    images, labels = _fashion_arrays(str(directory.resolve()), split, stamp)
    return _make_dataset(
        "fashion-mnist", images, labels, 255.0, _FASHION_MNIST_MEAN, _FASHION_MNIST_STD,
        10, size, in_chans,
    )


# --------------------------------------------------------------------------- #
# scikit-learn digits


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = bunch.images.astype(np.uint8)  # integer pixel values 0..16
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=_DIGITS_TEST_SIZE,
        stratify=labels,
        random_state=_DIGITS_SPLIT_SEED,
    )
    splits = {
        "train": (images[train_idx], labels[train_idx]),
        "test": (images[test_idx], labels[test_idx]),
    }
    for arrays in splits.values():
        for a in arrays:
            a.setflags(write=False)  # shared by every caller via the cache
    return splits


def load_digits(split: str = "train", size: int | None = None, in_chans: int = 1) -> ImageDataset:
    """scikit-learn's 8x8 digits: fixed stratified split, 1497 train / 300 test, 10 classes."""
    _check_split(split)
    images, labels = _digits_arrays()[split]
    return _make_dataset("digits", images, labels, 16.0, _DIGITS_MEAN, _DIGITS_STD, 10, size, in_chans)


# --------------------------------------------------------------------------- #


def load_dataset(
    name: str,
    split: str,
    size: int | None = None,
    in_chans: int = 1,
    fallback: bool = False,
    root: str | os.PathLike | None = None,
) -> ImageDataset:
    """Load ``"fashion-mnist"`` or ``"digits"`` by name.

    With ``fallback=True`` a missing Fashion-MNIST install is downgraded to a
    warning and the digits dataset is returned instead (check ``.name``).
    Corrupt files still raise: silently swapping datasets would hide them.
    """
    key = dataset_name(name)
    if key == "digits":
        return load_digits(split, size=size, in_chans=in_chans)
    if key == "fashion-mnist":
        try:
            return load_fashion_mnist(split, size=size, in_chans=in_chans, root=root)
        except DatasetNotFoundError as e:
            if not fallback:
                raise
            warnings.warn(
                f"{e} Falling back to the scikit-learn digits dataset "
                f"(install `{_APT_PACKAGE}` for Fashion-MNIST).",
                stacklevel=2,
            )
            return load_digits(split, size=size, in_chans=in_chans)
    raise AssertionError(key)  # dataset_name accepts nothing else


def dataset_name(name: str) -> str:
    """The canonical name of a built-in dataset (``"Fashion_MNIST"`` → ``"fashion-mnist"``),
    so that a search resumed or a pool shared with another spelling finds its own records;
    ValueError for an unknown name."""
    key = str(name).strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist"}.get(key, key)
    if key not in ("fashion-mnist", "digits"):
        raise ValueError(f"unknown dataset {name!r}; expected 'fashion-mnist' or 'digits'")
    return key


def load_dataset_spec(spec: str, *, size: int | None, in_chans: int,
                      default_count: int) -> ImageDataset:
    """``"fashion-mnist:512"`` / ``"digits"`` (command-line style): that many training
    examples of a built-in dataset (a stratified subset, seed 0; `default_count` without a
    count, all of them when fewer exist). ValueError for an unknown name or a bad count."""
    name, _, count = spec.partition(":")
    try:
        n = int(count) if count else default_count
    except ValueError:
        raise ValueError(f"{spec!r}: the count after ':' must be a whole number") from None
    data = load_dataset(name, "train", size=size, in_chans=in_chans)
    return data.subset(min(max(n, 0), len(data)))


#: files `read_tensors` reads; any other command-line data spec names a built-in dataset
TENSOR_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".npy")


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a data file, never unpickling code: ``.safetensors``, a torch file read
    with ``weights_only=True`` (a tensor, or a dict whose tensor values are kept) or ``.npy``
    (``allow_pickle=False``). A lone tensor is returned under the name ``"x"``.
    FileNotFoundError when missing, ValueError (naming the file) when unreadable."""
    from .checkpoint import read_checkpoint
    from .errors import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    if path.suffix == ".npy":
        try:
            return {"x": torch.from_numpy(np.load(path, allow_pickle=False))}
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
            raise ValueError(f"cannot read {path} as a NumPy array file: {exc}") from None
    try:
        obj = read_checkpoint(path, "data file")
    except CheckpointError as exc:
        raise ValueError(str(exc)) from None
    if isinstance(obj, torch.Tensor):
        return {"x": obj}
    if isinstance(obj, dict):
        return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    raise ValueError(f"{path} holds a {type(obj).__name__}, not tensors")


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _make_dataset(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    scale: float,
    mean: float,
    std: float,
    num_classes: int,
    size: int | None,
    in_chans: int,
) -> ImageDataset:
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    if size is not None and size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    x = torch.tensor(images, dtype=torch.float32).div_(scale).unsqueeze(1)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        # Resize before normalising so the fixed statistics refer to [0, 1]
        # pixels; antialias matters when shrinking.
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x = x.sub_(mean).div_(std)
    if in_chans > 1:
        x = x.expand(-1, in_chans, -1, -1)
    y = torch.tensor(labels, dtype=torch.int64)
    return ImageDataset(name, x, y, num_classes)
