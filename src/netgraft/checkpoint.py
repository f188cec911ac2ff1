"""Reading and writing weights safely: safetensors, or torch files with weights_only=True.

Writes are atomic (a temporary file in the same folder, then a rename), so an interrupted or
failed run never leaves a half-written output file behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .errors import CheckpointError, first_line

_WRAPPERS = ("state_dict", "model", "model_state_dict", "module", "ema")


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a torch checkpoint (loaded with weights_only=True)."""
    return _unwrap(read_checkpoint(path, "weights file"), Path(path))


def read_checkpoint(path: str | os.PathLike, what: str = "file") -> Any:
    """What a .safetensors file or a torch file holds, never running code from it: a
    safetensors file (whatever its suffix: its header is recognised) gives its tensors, a torch
    file is read with ``weights_only=True`` (tensors, dicts, lists and numbers only).
    CheckpointError names the file and says what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a folder: give the file inside it")
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:  # the readers' own messages name another cause (file not found)
        raise CheckpointError(f"cannot read {what} {path}: {exc.strerror or exc} (check its "
                              f"permissions)") from None
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        from safetensors.torch import load, load_file
        try:
            try:
                str(path).encode()
            except UnicodeEncodeError:  # a name that is not UTF-8: the reader takes only those
                return load(path.read_bytes())
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - any reader failure means a bad file
            raise CheckpointError(f"{path} is not a readable safetensors file "
                                  f"({_first_line(exc)}); re-export it with "
                                  f"safetensors.torch.save_file") from None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt pickle fails in many ways
        # torch's weights-only reader says why after "WeightsUnpickler error:" (and advises
        # weights_only=False, which would run the file's code: never repeated here)
        text = _plain(exc)
        found = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:\. Please|\n\s*\n|$)", text,
                          re.S)
        detail = found.group(1).strip() if found else _first_line(exc)
        global_ = re.search(r"GLOBAL ([\w.]+)", text)
        why = (f"it holds Python objects other than tensors ({global_.group(1)}), which are "
               f"never loaded: they could run code" if global_ else
               f"it is not a readable torch file ({detail})")
        raise CheckpointError(
            f"{path} could not be loaded as a torch checkpoint: {why}. Save a state_dict "
            f"(torch.save(model.state_dict(), path)) or a .safetensors file") from None


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then a JSON header."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        size = path.stat().st_size
    except OSError:
        return False
    return (len(head) == 9 and head[8:9] == b"{"
            and 0 < int.from_bytes(head[:8], "little") <= size - 8)


def _plain(exc: BaseException) -> str:
    """An exception's message without terminal colour codes (torch bolds parts of its own)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", str(exc))


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, without torch's advice to retry with
    weights_only=False (which would run the file's code)."""
    line = first_line(exc)
    return type(exc).__name__ if "weights_only" in line or "Re-running" in line else line


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _WRAPPERS:
            if key in obj and isinstance(obj[key], dict):
                return _unwrap(obj[key], path)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            odd = [k for k in tensors if not isinstance(k, str)]
            if odd:
                raise CheckpointError(f"{path} holds tensors under keys that are not parameter "
                                      f"names (e.g. {odd[0]!r}); save model.state_dict()")
            # saved from DataParallel / DistributedDataParallel, or from a torch.compile'd model
            for prefix in ("module.", "_orig_mod."):
                if all(k.startswith(prefix) for k in tensors):
                    tensors = {k[len(prefix):]: v for k, v in tensors.items()}
            return tensors
    raise CheckpointError(f"{path} holds no state_dict (found {type(obj).__name__}); save "
                          f"model.state_dict() instead")


def _without_wrapper_prefix(state: dict[str, torch.Tensor], expected: dict[str, Any]
                            ) -> dict[str, torch.Tensor]:
    """`state` with the module path every key shares removed, when that makes its keys the
    model's exactly: a Lightning module's ``model.``, an SWA `AveragedModel`'s ``module.``
    (its ``n_averaged`` counter dropped). Otherwise `state` as it is."""
    keys = [k for k in state if k != "n_averaged"]
    if not keys or set(keys) == set(expected):
        return state
    first = keys[0]
    for end in [i + 1 for i, ch in enumerate(first) if ch == "."]:
        prefix = first[:end]
        if all(k.startswith(prefix) for k in keys) and \
                {k[end:] for k in keys} == set(expected):
            return {k[end:]: state[k] for k in keys}
    return state


def load_into(model: nn.Module, state: dict[str, torch.Tensor], **kwargs: Any) -> Any:
    """``model.load_state_dict(state, **kwargs)``, where a state dict without torch's
    ``_metadata`` (a plain dict: a copy, a safetensors file) is given the model's own: modules
    that read their version while loading get the current one (torchvision's MNASNet raised
    "version should be set to 1 or 2 instead of None" on any such dict)."""
    if getattr(state, "_metadata", None) is None:
        metadata = getattr(model.state_dict(), "_metadata", None)
        if metadata is not None:
            state = OrderedDict(state)
            state._metadata = metadata  # type: ignore[attr-defined]
    return model.load_state_dict(state, **kwargs)


def load_weights(model: nn.Module, path: str | os.PathLike | dict, *, what: str = "model",
                 source: str | os.PathLike | None = None,
                 flags: str = "--num-classes and --in-chans") -> None:
    """Load `path` (or an already loaded state dict, read from `source`) into `model`, or
    explain exactly how the file and the architecture differ (`flags`: the options that set
    the model's shape, named in that explanation)."""
    if isinstance(path, dict):
        state, path = path, source or "the state dict"
    else:
        state = load_state_dict(path)
    expected = model.state_dict()
    state = _without_wrapper_prefix(state, expected)
    # buffers that only count steps make poor examples of what is missing
    missing = sorted((k for k in expected if k not in state),
                     key=lambda k: k.endswith("num_batches_tracked"))
    unexpected = sorted((k for k in state if k not in expected),
                        key=lambda k: k.endswith("num_batches_tracked"))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches, e.g. {'; '.join(wrong[:3])}")
        if missing:
            parts.append(f"{len(missing)} tensors missing from the file, e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors, e.g. {', '.join(unexpected[:3])}")
        raise CheckpointError(
            f"{path} does not fit the {what} architecture ({type(model).__name__}): "
            f"{'; '.join(parts)}. Check the model name, {flags} the weights "
            f"were trained with.")
    load_into(model, state)


#: file names weights are written to (.safetensors recommended; the others are torch files)
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
WEIGHTS_HINT = "use a .safetensors (recommended) or .pt file name"


def check_output(path: str | os.PathLike, flag: str, *, force: bool,
                 suffixes: tuple[str, ...] = (), hint: str = WEIGHTS_HINT,
                 taken: Callable[[Path], str | None] | None = None,
                 error: type[Exception] = CheckpointError) -> None:
    """Refuse an output name before any work is done, as `error` naming `flag`: a suffix not
    in `suffixes` (`hint` says what to give), a folder that does not exist, a folder, a file
    that `taken(path)` says must never be written (always, with its words), or an existing
    file unless `force`."""
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise error(f"{flag} {path}: {hint}")
    if not path.parent.is_dir():
        raise error(f"output folder does not exist: {path.parent}")
    if path.is_dir():
        raise error(f"{flag} {path} is a folder: give a file name")
    why = taken(path) if taken is not None else None
    if why:
        raise error(f"{flag} {path} {why}")
    if not force and (path.exists() or path.is_symlink()):
        raise error(f"{flag} {path} already exists: pass --force to replace it, or choose "
                    f"another name")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp)` on a temporary file next to `path`, then rename it onto `path`."""
    return atomic_write_all([(path, write)])[0]


def atomic_write_all(outputs: list[tuple[str | os.PathLike, Callable[[str], None]]]) -> list[Path]:
    """Write several files all or nothing: each `write(tmp)` to a temporary file next to its
    path, and only when every one succeeded, rename them onto their paths. A failure (a full
    disk, a folder without write permission, Ctrl-C) leaves no temporary file and no output;
    it is raised as CheckpointError naming the file, unless interrupted."""
    paths = [Path(p) for p, _ in outputs]
    for path in paths:
        if not path.parent.is_dir():
            raise CheckpointError(f"output folder does not exist: {path.parent}")
        if path.is_dir():
            raise CheckpointError(f"{path} is a folder: give a file name")
    tmps: list[str] = []
    try:
        for path, (_, write) in zip(paths, outputs):
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                           dir=path.parent)
                os.close(fd)
                tmps.append(tmp)
                write(tmp)
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600: normal permissions
            except Exception as exc:  # noqa: BLE001 - OSError, SafetensorError, torch's
                raise CheckpointError(f"cannot write {path}: {_os_reason(exc)}; nothing was "
                                      f"written") from None
        with _signals_deferred():  # a Ctrl-C between two renames would leave a mixed pair
            for path, tmp in zip(paths, tmps):
                os.replace(tmp, path)
                WRITTEN.append(path)
    except BaseException:
        for tmp in tmps:
            Path(tmp).unlink(missing_ok=True)
        raise
    return paths


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT and SIGTERM until the block ends, then act on them (the renames of an
    all-or-nothing write take microseconds). Only the main thread can catch signals; in any
    other the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda n, _: caught.append(n))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for n in caught[:1]:
            signal.raise_signal(n)


#: every file written by `atomic_write_all` in this process (the command line says, when
#: interrupted, which outputs were complete)
WRITTEN: list[Path] = []


def _os_reason(exc: BaseException) -> str:
    """Why a write failed, in one line: the system's words for an OSError, else the writer's.
    torch's zip writer replaces the OSError of a full disk by "unexpected pos N vs M" while it
    closes the file: the OSError is then the context of the error raised."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__context__
    code = re.search(r"\(os error (\d+)\)", str(exc))  # safetensors' "I/O error: ... (os error 28)"
    return os.strerror(int(code.group(1))) if code else _first_line(exc)


def state_writer(state: dict[str, torch.Tensor], path: str | os.PathLike,
                 metadata: dict[str, str] | None = None) -> Callable[[str], None]:
    """A `write(tmp)` for `atomic_write`: `state` as .safetensors, or a torch file for other
    suffixes of `path`."""
    # safetensors refuses tensors that share memory: store independent contiguous copies
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    if Path(path).suffix.lower() == ".safetensors":
        from safetensors.torch import save_file
        return lambda tmp: save_file(state, tmp, metadata=metadata)
    return lambda tmp: _torch_save(state, tmp)


def _torch_save(obj: Any, path: str) -> None:
    """`torch.save` through a Python file: a failed write (a full disk) raises the system's
    OSError (as the context of torch's "unexpected pos"), where torch's own file writer gives
    only "unexpected pos N vs M"."""
    with open(path, "wb") as file:
        torch.save(obj, file)


def save_state_dict(state: dict[str, torch.Tensor], path: str | os.PathLike,
                    metadata: dict[str, str] | None = None) -> Path:
    """Write `state` to `path` atomically (.safetensors, or a torch file for other suffixes)."""
    return atomic_write(path, state_writer(state, path, metadata))


def save_json(obj: Any, path: str | os.PathLike) -> Path:
    text = json.dumps(obj, indent=1)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))
