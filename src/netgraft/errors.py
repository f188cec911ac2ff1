"""Exceptions raised by netgraft.

Every error says what is wrong, where (which layer, which file) and what to do about it, so
users never have to read a traceback from deep inside torch.
"""
from __future__ import annotations

import re


class NetgraftError(Exception):
    """Base class of every error netgraft raises on purpose."""


class UnsupportedModelError(NetgraftError):
    """The model (or one of its layers) cannot be traced or grafted."""

    def __init__(self, message: str, layer: str | None = None):
        self.layer = layer
        super().__init__(f"layer '{layer}': {message}" if layer else message)


class ModelForwardError(NetgraftError):
    """Running the model on the example input failed while tracing it."""


class CheckpointError(NetgraftError):
    """A weights file is missing, unreadable or does not fit the model."""


class ModelSpecError(NetgraftError):
    """A model name / factory string could not be turned into a model."""


class NetgraftWarning(UserWarning):
    """A transfer that ran but is likely to help little, or to hurt, as configured."""


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message, without terminal colour codes (torch bolds
    parts of its own), cut to `limit` characters; the exception's type when it has none."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if limit is None or len(line) <= limit else line[:limit - 1] + "…"


class Terminated(KeyboardInterrupt):
    """SIGTERM (`timeout`, a batch scheduler, `docker stop`) while a command runs, handled as
    Ctrl-C is: temporary files removed, what was written named, "terminated", exit 143."""
