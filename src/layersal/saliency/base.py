"""What every saliency method returns, and the registry that ``explain(method=...)`` reads."""

from __future__ import annotations

from collections.abc import Callable
import inspect
from dataclasses import dataclass, fields
from typing import Any

import torch

from ..encoding import Encoded
from ..errors import InputError


@dataclass
class Attribution:
    """One method's token scores for a batch.

    ``scores`` is ``(B, n)`` and zero outside content tokens. Pass counts are per text, so
    methods can be compared at equal cost. ``layers[b]`` is the layer text ``b`` was explained
    at (``None`` for input-level methods); ``detail`` holds method-specific extras.
    """

    scores: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    forward_passes: int
    backward_passes: int
    layers: list[int | None]
    detail: Any = None


MethodFn = Callable[..., Attribution]


@dataclass(frozen=True)
class _Entry:
    fn: MethodFn
    options: frozenset[str]


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, options: type | None = None) -> Callable[[MethodFn], MethodFn]:
    """Decorator: make ``fn(lm, encoded, targets, **options)`` available as ``method=name``.

    The accepted options are the fields of the ``options`` dataclass, or else the function's
    keyword-only parameters.
    """

    def add(fn: MethodFn) -> MethodFn:
        if options is not None:
            names = {f.name for f in fields(options)}
        else:
            params = inspect.signature(fn).parameters.values()
            names = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        _REGISTRY[name] = _Entry(fn, frozenset(names))
        return fn

    return add


def methods() -> list[str]:
    """Names of the available methods."""
    return list(_REGISTRY)


def method_options(name: str) -> frozenset[str]:
    """The option names method ``name`` accepts."""
    check_method(name, {})
    return _REGISTRY[name].options


def check_method(name: str, options: dict[str, Any]) -> None:
    """Raise a clear error for an unknown method or an option it does not take."""
    if name not in _REGISTRY:
        raise InputError(f"unknown method {name!r}; available: {', '.join(_REGISTRY)}")
    unknown = sorted(set(options) - _REGISTRY[name].options)
    if unknown:
        accepted = ", ".join(sorted(_REGISTRY[name].options)) or "none"
        raise InputError(f"method {name!r} has no option {unknown[0]!r} (options: {accepted})")


def run_method(
    name: str, lm: Any, encoded: Encoded, targets: torch.Tensor | None, options: dict[str, Any]
) -> Attribution:
    """Run method ``name`` on one batch, under the model's autocast (bf16 when loaded so)."""
    check_method(name, options)
    with lm.autocast():
        return _REGISTRY[name].fn(lm, encoded, targets, **options)
