"""netgraft: graft trained parameters from one network onto a network of another architecture."""
from .errors import (CheckpointError, ModelForwardError, ModelSpecError, NetgraftError,
                     UnsupportedModelError)
from .trace import Architecture, Block, Layer, trace

__version__ = "0.1.0"
