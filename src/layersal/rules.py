"""Propagation rules: named changes to the backward pass that make gradient x input faithful.

A rule set changes only how the gradient flows back through a transformer's LayerNorms,
attention and elementwise non-linearities; the forward values, and so the prediction, are
exactly the model's own. Relevance is then activation x modified gradient (``g~``), at the
input embeddings or at any layer (docs/method.md, step 7):

- ``gradient``: no change.
- ``ln``: LayerNorm's standard deviation is a constant (its centring keeps its gradient).
- ``cp`` (Ali et al., ICML 2022): ``ln`` + the attention probabilities are constants (no
  gradient into the query and key projections).
- ``cp_id``: ``cp`` + the identity rule on elementwise non-linearities,
  ``g~ = g * f(x) / x``, so that ``x . g~`` passes relevance through unchanged.
- ``attnlrp`` (Achtibat et al., ICML 2024): ``ln`` + the identity rule + the uniform rule on
  the two bilinear attention products: the gradient into the query and key projections is
  scaled by 1/4 and into the value projection by 1/2; the softmax's own gradient is kept.
  A score term linear in the query or the key (DeBERTa's relative-position terms, ``q . k_pos``
  and ``k . q_pos``, the position factor a constant of the model) is no product of two inputs:
  it gets only A.V's 1/2, so the rules double the gradient into the query and key through it
  (1/4 x 2) by patching the method that computes it for the pass
  (:class:`~layersal.families.LinearScores`).

RMSNorm (Llama-style families) is treated like LayerNorm's scale: its root mean square is the
constant. A gated MLP (SwiGLU, GeGLU: ``act(gate(x)) * up(x)``) is a multiplicative gate like
the attention probabilities: under ``cp`` and ``cp_id`` the gate ``act(gate(x))`` is a
constant (relevance flows through ``up``), under ``attnlrp`` the uniform rule gives each of
the two factors half the gradient, and the identity rule covers ``act`` as everywhere.

:func:`propagation_rules` installs a rule set as forward hooks for the passes run inside it
and removes them when it exits, whatever happens. It needs the family's
:class:`~layersal.families.PropagationMap` to know which modules to touch, and refuses a model
whose family has none rather than silently falling back to plain gradients. The hooks live on
the model's modules for the duration of the ``with`` block, so passes inside it must not run
concurrently with other passes on the same model (the web app runs one explanation at a time).
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import InputError
from .families import Family, LinearScores, Part, norm_eps


@dataclass(frozen=True)
class RuleSet:
    """What one rule set changes in the backward pass.

    ``query_key`` and ``value`` scale the gradient into the attention projections (0: the
    attention probabilities are constants; 1: unchanged); ``gate`` and ``up`` the gradient
    into the two factors of a gated MLP's product; ``linear_scores`` the gradient into the query
    or the key through a score term linear in it (``query_key`` without the split of q.k).
    """

    name: str
    constant_std: bool
    query_key: float
    value: float
    identity: bool
    summary: str
    gate: float = 1.0
    up: float = 1.0
    linear_scores: float = 1.0

    @property
    def changes_anything(self) -> bool:
        factors = (self.query_key, self.value, self.gate, self.up, self.linear_scores)
        return self.constant_std or self.identity or any(f != 1.0 for f in factors)


RULE_SETS: dict[str, RuleSet] = {
    rule.name: rule
    for rule in (
        RuleSet("gradient", False, 1.0, 1.0, False, "plain gradient"),
        RuleSet("ln", True, 1.0, 1.0, False, "LayerNorm std constant"),
        RuleSet(
            "cp",
            True,
            0.0,
            1.0,
            False,
            "LayerNorm std, attention and MLP gates constant (CP-LRP)",
            gate=0.0,
            linear_scores=0.0,
        ),
        RuleSet(
            "cp_id",
            True,
            0.0,
            1.0,
            True,
            "CP-LRP + identity rule on non-linearities",
            gate=0.0,
            linear_scores=0.0,
        ),
        RuleSet(
            "attnlrp",
            True,
            0.25,
            0.5,
            True,
            "AttnLRP: std constant, identity and uniform rules",
            gate=0.5,
            up=0.5,
            linear_scores=0.5,
        ),
    )
}


def rule_names() -> list[str]:
    """Names of the available rule sets."""
    return list(RULE_SETS)


def check_rule(name: Any) -> RuleSet:
    """The rule set called ``name``, or a clear error."""
    if not isinstance(name, str) or name not in RULE_SETS:
        raise InputError(f"unknown rule {name!r}; choose one of {', '.join(RULE_SETS)}")
    return RULE_SETS[name]


class _Rescaled(torch.autograd.Function):
    """Forward: ``y`` unchanged. Backward: the incoming gradient times ``f(x)/x`` into ``x``
    (0 where ``x`` is 0), and none into ``y``: the identity rule."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, y)
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, y = ctx.saved_tensors
        return grad * torch.where(x == 0, 0.0, y / x), None


class _Scaled(torch.autograd.Function):
    """Forward: ``y`` unchanged. Backward: the incoming gradient times ``factor``."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.factor, None


class _ConstantStd(torch.autograd.Function):
    """Forward: LayerNorm's output ``y`` unchanged. Backward: the gradient of
    ``(x - mean(x)) / sigma * gamma + beta`` with ``sigma`` a constant, into ``x``."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor | None,
        eps: float,
        dims: int,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.eps, ctx.dims = eps, dims
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        shape = x.shape[-ctx.dims :]
        dims = tuple(range(-ctx.dims, 0))
        # 1/sigma from the fused kernel: one op, where writing it out took six
        _, _, rstd = torch.native_layer_norm(x.float(), shape, None, None, ctx.eps)
        g = grad.float() if weight is None else grad.float() * weight.float()
        out = (g - g.mean(dims, keepdim=True)) * rstd
        return out.to(x.dtype), None, None, None, None


class _ConstantRms(torch.autograd.Function):
    """Forward: RMSNorm's output ``y`` unchanged. Backward: the gradient of
    ``x / rms * (offset + gamma)`` with ``rms`` a constant, into ``x``."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor | None,
        eps: float,
        offset: float,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.eps, ctx.offset = eps, offset
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        rstd = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + ctx.eps)
        g = grad.float() if weight is None else grad.float() * (ctx.offset + weight.float())
        return (g * rstd).to(x.dtype), None, None, None, None


class _ScaledChunk(torch.autograd.Function):
    """Forward: ``y`` unchanged. Backward: the incoming gradient of chunk ``index`` of
    ``count`` (along the last dimension) times ``factor``, the rest unchanged."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, factor: float, index: int, count: int) -> torch.Tensor:
        ctx.factor, ctx.index, ctx.count = factor, index, count
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        width = grad.shape[-1] // ctx.count
        out = grad.clone()
        out[..., ctx.index * width : (ctx.index + 1) * width] *= ctx.factor
        return out, None, None, None


def scale_gradient(value: torch.Tensor, factor: float) -> torch.Tensor:
    """``value`` unchanged in the forward pass, its incoming gradient multiplied by ``factor``."""
    if factor == 0.0:
        return value.detach()
    return _Scaled.apply(value, factor)


def identity_rule(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y = f(x)`` with the gradient ``g * f(x)/x`` into ``x`` (0 where ``x`` is 0, where
    ``f(x)`` is 0 too for every activation the families use)."""
    return _Rescaled.apply(x, y)


def constant_std_layer_norm(module: nn.LayerNorm, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y = LayerNorm(x)`` with the gradient of ``(x - mean(x)) / sigma * gamma + beta`` for a
    constant ``sigma``: the centring keeps its gradient, the scale does not."""
    return _ConstantStd.apply(x, y, module.weight, module.eps, len(module.normalized_shape))


def constant_rms_norm(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, offset: float
) -> torch.Tensor:
    """``y = RMSNorm(x)`` with the gradient of ``x / rms * (offset + gamma)`` for a constant
    ``rms`` (the RMSNorm analogue of :func:`constant_std_layer_norm`)."""
    return _ConstantRms.apply(x, y, getattr(module, "weight", None), norm_eps(module), offset)


def scale_part(value: torch.Tensor, part: Part, factor: float) -> torch.Tensor:
    """``value`` unchanged; the gradient into the :class:`~layersal.families.Chunk` ``part``
    of it (all of it for a plain pattern) multiplied by ``factor``."""
    if isinstance(part, str) or part.count == 1:
        return scale_gradient(value, factor)
    return _ScaledChunk.apply(value, factor, part.index, part.count)


@functools.lru_cache(maxsize=256)
def _pattern(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regular expression matching any of the ``fnmatch`` ``patterns`` (compiled once:
    matching every module name against every pattern on each pass was a third of the rules'
    cost on a small model)."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or "(?!)")


def _matching(modules: list[tuple[str, nn.Module]], *patterns: str) -> list[tuple[str, nn.Module]]:
    match = _pattern(patterns).match
    return [(n, m) for n, m in modules if match(n)]


def _refuse(family: Family, what: str) -> InputError:
    return InputError(
        f"propagation rules cannot be applied to this {family.name} model: {what}; "
        "use rule='gradient'"
    )


@contextlib.contextmanager
def propagation_rules(model: nn.Module, family: Family | None, rule: str) -> Iterator[None]:
    """Install rule set ``rule`` on ``model`` for the passes run inside the block.

    ``gradient`` installs nothing. Any other rule needs ``family.propagation``; the hooks (and
    the patched score methods of :class:`~layersal.families.LinearScores`) are removed on exit,
    also after an exception, and no parameter, buffer or flag is changed.
    """
    rules = check_rule(rule)
    if not rules.changes_anything:
        yield
        return
    if family is None or family.propagation is None:
        kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise InputError(
            f"rule {rule!r} needs to know where this model's attention and non-linearities are, "
            f"and layersal has no propagation map for model type {kind!r}; use rule='gradient'"
        )
    handles: list[Any] = []
    try:
        _install(model, family, rules, handles)
        yield
    finally:
        for handle in handles:
            handle.remove()


def _install(model: nn.Module, family: Family, rules: RuleSet, handles: list[Any]) -> None:
    mapping = family.propagation
    assert mapping is not None
    modules = list(model.named_modules())  # one walk of the module tree per pass
    for pattern in mapping.unsupported:
        if _matching(modules, pattern):
            raise _refuse(family, f"it has a part ({pattern}) the rules do not cover")

    def on_output(module: nn.Module, change: Callable[..., Any]) -> None:
        handles.append(module.register_forward_hook(lambda m, args, out: change(m, args[0], out)))

    if rules.constant_std:
        for name, module in modules:
            if isinstance(module, nn.LayerNorm):
                on_output(module, constant_std_layer_norm)
            elif type(module).__name__.endswith("RMSNorm"):
                on_output(module, lambda m, x, y: constant_rms_norm(m, x, y, family.rms_offset))
            elif type(module).__name__.endswith("Norm"):
                raise _refuse(family, f"{name} is a {type(module).__name__}, not a LayerNorm")
    layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    projections = (
        (mapping.query, rules.query_key),
        (mapping.key, rules.query_key),
        (mapping.value, rules.value),
    )
    for part, factor in projections:
        found = _matching(modules, _name(part))
        if len(found) != layers:
            raise _refuse(family, f"{len(found)} modules match {_name(part)!r}, expected {layers}")
        _scale_outputs(found, part, factor, on_output)
    if rules.identity:
        for pattern in mapping.activations:
            if not _matching(modules, pattern):
                raise _refuse(family, f"no module matches {pattern!r}")
        for _, module in _matching(modules, *mapping.activations, *mapping.head_activations):
            on_output(module, lambda m, x, y: identity_rule(x, y))
        named = dict(modules)
        present = [b for b in mapping.head_between if b.producer in named]
        for between in (*mapping.between, *present):
            _install_between(named, family, between.producer, between.consumer, handles)
    for parts, factor in ((mapping.gates, rules.gate), (mapping.ups, rules.up)):
        for part in parts:
            found = _matching(modules, _name(part))
            if len(found) != layers:
                raise _refuse(
                    family, f"{len(found)} modules match {_name(part)!r}, expected {layers}"
                )
            _scale_outputs(found, part, factor, on_output)
    if mapping.linear_scores is not None and rules.query_key != 0.0:
        # the projection's hook already scales every path into q and k by query_key
        factor = rules.linear_scores / rules.query_key
        if factor != 1.0:
            _patch_linear_scores(modules, family, mapping.linear_scores, factor, layers, handles)


def _name(part: Part) -> str:
    return part if isinstance(part, str) else part.pattern


def _scale_outputs(
    found: list[tuple[str, nn.Module]],
    part: Part,
    factor: float,
    on_output: Callable[[nn.Module, Callable[..., Any]], None],
) -> None:
    """Scale the gradient into ``part`` of each found module's output by ``factor``."""
    if factor != 1.0:
        for _, module in found:
            on_output(module, lambda m, x, y, f=factor: scale_part(y, part, f))


class _Patched:
    """One module's method replaced for the pass; ``remove()`` (a hook handle's interface)
    puts back what the instance had: nothing of its own (the class's method again), or its own
    attribute."""

    def __init__(self, module: nn.Module, name: str, value: Callable[..., Any]) -> None:
        self.module, self.name = module, name
        self.had_own = name in vars(module)
        self.previous = vars(module).get(name)
        object.__setattr__(module, name, value)

    def remove(self) -> None:
        if self.had_own:
            object.__setattr__(self.module, self.name, self.previous)
        else:
            vars(self.module).pop(self.name, None)


def _patch_linear_scores(
    modules: list[tuple[str, nn.Module]],
    family: Family,
    where: LinearScores,
    factor: float,
    layers: int,
    handles: list[Any],
) -> None:
    """Multiply by ``factor`` the gradient into the query and key arguments of
    ``where.method`` on each matching attention module (its outputs are unchanged)."""
    found = _matching(modules, where.pattern)
    if len(found) != layers:
        raise _refuse(family, f"{len(found)} modules match {where.pattern!r}, expected {layers}")
    for name, module in found:
        method = getattr(module, where.method, None)
        parameters = inspect.signature(method).parameters if callable(method) else {}
        if method is None or not all(argument in parameters for argument in where.arguments):
            raise _refuse(
                family, f"{name}.{where.method} does not take {', '.join(where.arguments)}"
            )
        handles.append(_Patched(module, where.method, _scaling(method, where.arguments, factor)))


def _scaling(
    method: Callable[..., Any], arguments: tuple[str, ...], factor: float
) -> Callable[..., Any]:
    """``method`` with the gradient into its tensor ``arguments`` multiplied by ``factor``."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def scaled(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        for argument in arguments:
            value = bound.arguments.get(argument)
            if isinstance(value, torch.Tensor):
                bound.arguments[argument] = scale_gradient(value, factor)
        return method(*bound.args, **bound.kwargs)

    return scaled


def _install_between(
    modules: dict[str, nn.Module], family: Family, producer: str, consumer: str, handles: list[Any]
) -> None:
    """Identity rule on a function call between two modules: the consumer's input ``f(x)``
    gets the gradient path ``x * f(x)/x`` back to the producer's output ``x``."""
    if producer not in modules or consumer not in modules:
        raise _refuse(family, f"it has no {producer!r} followed by {consumer!r}")
    seen: list[torch.Tensor] = []

    def remember(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        seen[:] = [output]

    def reroute(module: nn.Module, args: tuple) -> tuple:
        if not seen or seen[0].shape != args[0].shape:
            raise _refuse(
                family, f"the input of {consumer!r} is not an elementwise function of {producer!r}"
            )
        x = seen.pop()
        return (identity_rule(x, args[0]),) + tuple(args[1:])

    handles.append(modules[producer].register_forward_hook(remember))
    handles.append(modules[consumer].register_forward_pre_hook(reroute))
