"""layersal: which words a transformer text classifier relied on (Decoded Layer Saliency).

The public names are imported on first use (PEP 562), so ``import layersal.errors`` (as the
command line does before parsing its arguments) does not pay for torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

_EXPORTS = {
    "DEFAULT_MODEL": "checkpoints",
    "DLSOptions": "saliency.dls",
    "Explainer": "job",
    "Explanation": "explanation",
    "InputError": "errors",
    "LayerReport": "explanation",
    "LayersalError": "errors",
    "LoadedModel": "models",
    "ModelLoadError": "errors",
    "Token": "explanation",
    "TruncationWarning": "errors",
    "Word": "explanation",
    "bundled_models": "checkpoints",
    "explain": "api",
    "explainer": "job",
    "load": "models",
    "method_schema": "saliency",
    "methods": "saliency",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .api import explain
    from .checkpoints import DEFAULT_MODEL, bundled_models
    from .errors import InputError, LayersalError, ModelLoadError, TruncationWarning
    from .explanation import Explanation, LayerReport, Token, Word
    from .job import Explainer, explainer
    from .models import LoadedModel, load
    from .saliency import method_schema, methods
    from .saliency.dls import DLSOptions


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'layersal' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
