"""Saliency methods, one module per family; each maps a model pass to per-token scores."""

from .dls import SALIENCY_KINDS, DLSOptions, position_saliency, run_dls

__all__ = ["SALIENCY_KINDS", "DLSOptions", "position_saliency", "run_dls"]
