"""Saliency methods, one module per family; each maps a batch to per-token scores.

Importing this package registers every method with :mod:`layersal.saliency.base`.
"""

from . import dls
from . import attention, gradients, perturbation, simple  # baselines register on import
from .base import Attribution, check_method, method_options, methods, register, run_method
from .dls import SALIENCY_KINDS, DLSOptions, position_saliency, run_dls

__all__ = [
    "SALIENCY_KINDS",
    "Attribution",
    "DLSOptions",
    "check_method",
    "dls",
    "method_options",
    "methods",
    "position_saliency",
    "register",
    "run_dls",
    "run_method",
]
