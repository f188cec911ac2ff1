"""netgraft: graft trained parameters from one network onto a network of another architecture.

    >>> import netgraft, timm
    >>> report = netgraft.transfer(trained_resnet, timm.create_model("efficientnet_b0"))
    >>> print(report)
"""
import os as _os
import sys as _sys

def _command_line() -> bool:
    """Whether this process is netgraft's command line (`netgraft ...`, `python -m
    netgraft[.nas|.report] ...`), not a program that imports netgraft."""
    argv = getattr(_sys, "orig_argv", None) or _sys.argv
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1].split(".")[0] == "netgraft"
    return _os.path.basename(_sys.argv[0] if _sys.argv else "") == "netgraft"


try:  # torch and timm take a second or two to import
    from .align import AlignReport, align
    from .autoinit import AutoInitReport, autoinit
    from .errors import (CheckpointError, ModelForwardError, ModelSpecError, NetgraftError,
                         NetgraftWarning, UnsupportedModelError)
    from .match import DEFAULT_METHOD, METHODS, Matching, match
    from .metrics import ModelMetrics, metrics
    from .similarity import similarity
    from .trace import Architecture, Block, Layer, trace
    from .transfer import LayerRecord, TransferReport, transfer
except KeyboardInterrupt:
    # Ctrl-C while the command line starts (`netgraft ...`, `python -m netgraft ...`): what
    # the command says when interrupted later, not Python's traceback; a program that
    # imports netgraft gets its KeyboardInterrupt
    if _command_line():
        print("interrupted; no output written", file=_sys.stderr)
        raise SystemExit(130) from None
    raise

__version__ = "0.1.0"

#: submodules imported on first use (``netgraft.zoo.Zoo``, ``netgraft.nas.WarmStartPool``):
#: they pull in Optuna, SQLite, plotting, data sets — more than a transfer needs
_LAZY = ("bench", "calibrate", "checkpoint", "data", "models", "nas", "probe", "report", "zoo")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "AlignReport", "AutoInitReport", "NetgraftWarning", "align", "autoinit",
    "Architecture", "Block", "CheckpointError", "DEFAULT_METHOD", "Layer", "LayerRecord",
    "METHODS", "Matching", "ModelMetrics", "ModelForwardError", "ModelSpecError", "NetgraftError",
    "TransferReport", "UnsupportedModelError", "match", "metrics", "similarity", "trace", "transfer",
]
