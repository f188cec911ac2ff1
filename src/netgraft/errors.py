"""Exceptions raised by netgraft.

Every error says what is wrong, where (which layer, which file) and what to do about it, so
users never have to read a traceback from deep inside torch.
"""
from __future__ import annotations


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
