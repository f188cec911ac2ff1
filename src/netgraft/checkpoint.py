"""Reading and writing weights safely: safetensors, or torch files with weights_only=True.

Writes are atomic (a temporary file in the same folder, then a rename), so an interrupted or
failed run never leaves a half-written output file behind.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .errors import CheckpointError

_WRAPPERS = ("state_dict", "model", "model_state_dict", "module", "ema")


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a torch checkpoint (loaded with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); "
                                  f"re-export it with safetensors.torch.save_file") from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} could not be loaded as a torch checkpoint with weights_only=True "
            f"({_first_line(exc)}). "
            f"Only tensors are loaded, never code: save a state_dict "
            f"(torch.save(model.state_dict(), path)) or a .safetensors file") from exc
    return _unwrap(obj, path)


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, without terminal colour codes (torch's
    weights_only error runs over many lines and advises weights_only=False, which would run
    the file's code)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _WRAPPERS:
            if key in obj and isinstance(obj[key], dict):
                return _unwrap(obj[key], path)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            prefix = "module."  # saved from DataParallel / DistributedDataParallel
            if all(k.startswith(prefix) for k in tensors):
                tensors = {k[len(prefix):]: v for k, v in tensors.items()}
            return tensors
    raise CheckpointError(f"{path} holds no state_dict (found {type(obj).__name__}); save "
                          f"model.state_dict() instead")


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
    model.load_state_dict(state)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp)` on a temporary file next to `path`, then rename it onto `path`."""
    path = Path(path)
    if not path.parent.exists():
        raise CheckpointError(f"output folder does not exist: {path.parent}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_state_dict(state: dict[str, torch.Tensor], path: str | os.PathLike,
                    metadata: dict[str, str] | None = None) -> Path:
    """Write `state` to `path` atomically (.safetensors, or a torch file for other suffixes)."""
    # safetensors refuses tensors that share memory: store independent contiguous copies
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import save_file
        return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def save_json(obj: Any, path: str | os.PathLike) -> Path:
    text = json.dumps(obj, indent=1)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))
