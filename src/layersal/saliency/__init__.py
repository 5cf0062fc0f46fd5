"""Saliency methods, one module per family; each maps a batch to per-token scores.

Importing this package registers every method with :mod:`layersal.saliency.base`.
"""

from . import (  # methods register on import
    attention,
    dls_method,
    gradients,
    perturbation,
    sequential_ig,
    shapley_budget,
    simple,
)
from .base import (
    Attribution,
    Checked,
    MethodDetail,
    OptionSpec,
    Prepared,
    Settled,
    check_method,
    checked,
    method_cost,
    method_options,
    method_schema,
    methods,
    named_values,
    prepare_options,
    register,
    renamed_options,
    run_method,
    settle,
)
from .dls import SALIENCY_KINDS, DLSOptions, position_saliency, run_dls

__all__ = [
    "SALIENCY_KINDS",
    "Attribution",
    "Checked",
    "DLSOptions",
    "MethodDetail",
    "OptionSpec",
    "Prepared",
    "Settled",
    "check_method",
    "checked",
    "dls",
    "method_cost",
    "method_options",
    "method_schema",
    "methods",
    "named_values",
    "position_saliency",
    "prepare_options",
    "register",
    "renamed_options",
    "run_dls",
    "run_method",
    "settle",
]
