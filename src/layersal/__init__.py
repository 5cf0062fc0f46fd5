"""layersal: which words a transformer text classifier relied on (Decoded Layer Saliency)."""

from .api import TruncationWarning, explain
from .saliency import methods
from .errors import InputError, LayersalError, ModelLoadError
from .explanation import Explanation, LayerReport, Token, Word
from .models import DEFAULT_MODEL, LoadedModel, bundled_models, load
from .saliency.dls import DLSOptions

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "DLSOptions",
    "Explanation",
    "InputError",
    "LayerReport",
    "LayersalError",
    "LoadedModel",
    "ModelLoadError",
    "Token",
    "TruncationWarning",
    "Word",
    "bundled_models",
    "explain",
    "load",
    "methods",
]
