"""What every saliency method returns, and the registry that ``explain(method=...)`` reads."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import torch

from ..encoding import Encoded
from ..errors import InputError

if TYPE_CHECKING:
    from ..explanation import LayerReport


class MethodDetail:
    """What a method can report beyond its token scores. Every method's result may carry
    one (:attr:`Attribution.detail`); generic code (``explain``, the benchmark, the engines)
    asks it through these methods and never needs to know which method made it. The
    defaults report nothing."""

    def applied_options(self) -> dict[str, Any] | None:
        """The options as the method applied them (defaults resolved), or ``None``: the
        options it was given."""
        return None

    def layer_reports(self, row: int, content: list[int], tokenizer: Any) -> list[LayerReport]:
        """Per-layer report of text ``row`` over its content positions (none by default)."""
        return []

    def coherence(self) -> dict[int, list[float]]:
        """Semantic coherence per layer of every text of the batch, where it was measured."""
        return {}


@dataclass
class Attribution:
    """One method's token scores for a batch.

    ``scores`` is ``(B, n)`` and zero outside content tokens. Pass counts are per text, so
    methods can be compared at equal cost. ``layers[b]`` is the layer text ``b`` was explained
    at (``None`` for input-level methods); ``detail`` is what the method reports beyond
    scores (:class:`MethodDetail`).
    """

    scores: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    forward_passes: int
    backward_passes: int
    layers: list[int | None]
    detail: MethodDetail = field(default_factory=MethodDetail)


@dataclass
class Prepared:
    """A method's options made concrete for one job, before any text is explained.

    ``options``: what the method runs with. ``recorded``: merged into every explanation's
    options (what was chosen and why). ``settings``: added to a dataset run's settings.
    ``evidence``: the full record a dataset run keeps in its folder, so that a resumed run
    uses the same options (``None``: nothing was chosen).
    """

    options: dict[str, Any]
    recorded: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] | None = None


MethodFn = Callable[..., Attribution]
CostFn = Callable[[dict[str, Any], int], int]
"""``cost(options, n_tokens)``: the model rows (one row: one text through one forward, with or
without its backward) a method spends on one text of ``n_tokens`` tokens, given its options."""
PrepareFn = Callable[
    [Callable[[], Any], Callable[[], list[str]], dict[str, Any], Any, int, bool], Prepared
]
"""``prepare(model, texts, options, typed, batch_size, fresh)``: ``model()`` gives the loaded
model and ``texts()`` the job's first texts (a calibration sample), each only when needed (a
dataset run's driver may not hold the model); ``typed`` is ``options`` as the method's options
dataclass, already built; ``fresh`` asks for a choice made on those texts, not one stored
earlier (a model card, a cache)."""

EXPLAIN_PARAMETERS = frozenset(
    {
        "method",
        "options",
        "target",
        "word_aggregation",
        "batch_size",
        "lm_head",
        "progress",
        "long_texts",
        "window",
        "stride",
        "labels",
        "template",
        "multi_label",
        "budget",
    }
)
"""``explain()``'s own keyword parameters: no method option may take one of these names, so
that an option passed the old way (as a keyword of ``explain``) is never taken for one.
:data:`PASS_BOUND` is the exception: ``explain(budget=N)`` bounds the passes per text and
picks the method, and a method may bound its own passes with an option of that name;
``explain`` refuses a method and a budget together, so the two never mix."""

PASS_BOUND = "budget"


@dataclass(frozen=True)
class OptionSpec:
    """One option of a method: its name, type (as written in the code) and default."""

    name: str
    type: str
    default: Any


@dataclass(frozen=True)
class _Entry:
    fn: MethodFn
    options: tuple[OptionSpec, ...]
    renamed: dict[str, str]
    validate: type | None = None
    prepare: PrepareFn | None = None
    cost: CostFn | None = None
    named: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(o.name for o in self.options)


_REGISTRY: dict[str, _Entry] = {}


def register(
    name: str,
    options: type | None = None,
    renamed: dict[str, str] | None = None,
    prepare: PrepareFn | None = None,
    cost: CostFn | None = None,
    named: dict[str, tuple[str, ...]] | None = None,
) -> Callable[[MethodFn], MethodFn]:
    """Decorator: make ``fn(lm, encoded, targets, **options)`` available as ``method=name``.

    The accepted options are the fields of the ``options`` dataclass (built once by
    :func:`check_method`, so that its own checks run before any model work), or else the
    function's keyword-only parameters, each with its type and default (the method's schema).
    An option named like one of ``explain()``'s own parameters is refused here. ``renamed`` maps old
    option names to new ones, so that the old spelling fails with an error naming the new.
    ``prepare`` makes the options concrete for a job once, before its texts are explained
    (DLS's ``layer="auto"``); see :func:`prepare_options`. ``cost`` says how many model rows
    one text costs under given options (default: one pass); see :func:`method_cost`.
    ``named`` lists, per option, the words it takes besides numbers (DLS's ``layer``:
    ``auto``, ``coherent``, ``input``), for faces that offer them; see :func:`named_values`.
    """

    def add(fn: MethodFn) -> MethodFn:
        if options is not None:
            specs = tuple(_from_field(f) for f in fields(options))
        else:
            params = inspect.signature(fn).parameters.values()
            specs = tuple(
                OptionSpec(p.name, _type_text(p.annotation), p.default)
                for p in params
                if p.kind is inspect.Parameter.KEYWORD_ONLY
            )
        clash = sorted({o.name for o in specs} & (EXPLAIN_PARAMETERS - {PASS_BOUND}))
        if clash:
            raise TypeError(
                f"method {name!r} cannot have an option named {clash[0]!r}: it is a parameter "
                "of explain() itself"
            )
        _REGISTRY[name] = _Entry(
            fn, specs, dict(renamed or {}), options, prepare, cost, dict(named or {})
        )
        return fn

    return add


def _from_field(f: Any) -> OptionSpec:
    default = None if f.default is MISSING else f.default
    return OptionSpec(f.name, _type_text(f.type), default)


def _type_text(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "any"
    return (
        annotation
        if isinstance(annotation, str)
        else getattr(annotation, "__name__", str(annotation))
    )


def methods() -> list[str]:
    """Names of the available methods."""
    return list(_REGISTRY)


def method_options(name: str) -> frozenset[str]:
    """The option names method ``name`` accepts."""
    return _entry(name).names


def method_schema(name: str) -> tuple[OptionSpec, ...]:
    """Method ``name``'s options, each with its type and default, in declaration order."""
    return _entry(name).options


def named_values(name: str, option: str) -> tuple[str, ...]:
    """The words method ``name``'s ``option`` takes besides numbers (none unless declared)."""
    return _entry(name).named.get(option, ())


def renamed_options(name: str) -> dict[str, str]:
    """Old option names of method ``name`` and what they are called now."""
    return dict(_entry(name).renamed)


def method_cost(name: str, options: dict[str, Any], n_tokens: int) -> int:
    """Model rows ``name`` spends on one text of ``n_tokens`` tokens with ``options`` (its
    defaults filling the rest): what a server bounds a request by before running it."""
    check_method(name, options)
    entry = _REGISTRY[name]
    if entry.cost is None:
        return 1
    full = {o.name: o.default for o in entry.options} | dict(options)
    return max(1, int(entry.cost(full, max(1, n_tokens))))


def _entry(name: str) -> _Entry:
    """The registry's entry of method ``name``; an unknown name is a clear error."""
    if name not in _REGISTRY:
        raise InputError(f"unknown method {name!r}; available: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def check_method(name: str, options: Mapping[str, Any]) -> Any:
    """Raise a clear error for an unknown method, an option it does not take, or a value of
    the wrong type. Returns the method's typed options (its options dataclass, built once
    here: its own checks run) or ``None`` for a method whose options are keywords."""
    entry = _entry(name)
    for key in sorted(options):
        if key in entry.renamed:
            raise InputError(
                f"method {name!r}'s option {key!r} is now called {entry.renamed[key]!r}: "
                f"write {entry.renamed[key]}={options[key]!r}"
            )
    unknown = sorted(set(options) - entry.names)
    if unknown:
        accepted = ", ".join(sorted(entry.names)) or "none"
        raise InputError(f"method {name!r} has no option {unknown[0]!r} (options: {accepted})")
    for spec in entry.options:
        if spec.name in options and not _fits(options[spec.name], spec.type):
            raise InputError(
                f"method {name!r}'s option {spec.name!r} takes {spec.type}, "
                f"not {options[spec.name]!r}"
            )
    if entry.validate is not None:
        return entry.validate(**options)
    return None


_SIMPLE = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "None": (type(None),),
}


def _fits(value: Any, type_text: str) -> bool:
    """Whether ``value`` fits a simple annotation (``int``, ``float | None``, ``int | str``);
    anything more complex is left to the method to check."""
    parts = [
        part.strip() for part in type_text.replace("Optional[", "None | ").rstrip("]").split("|")
    ]
    if not all(part in _SIMPLE for part in parts):
        return True
    if isinstance(value, bool) and "bool" not in parts:
        return False
    return any(isinstance(value, _SIMPLE[part]) for part in parts)


def prepare_options(
    name: str,
    model: Callable[[], Any],
    texts: Callable[[], list[str]],
    options: dict[str, Any],
    batch_size: int,
    *,
    fresh: bool = False,
) -> Prepared:
    """Method ``name``'s options for a job, checked and made concrete (unchanged for a method
    that registered no ``prepare``)."""
    return settle(checked(name, options), model, texts, batch_size, fresh=fresh).prepared


@dataclass(frozen=True)
class Checked:
    """A method and its options, checked once (:func:`checked`): ``typed`` is the options
    dataclass built by the check (``None`` for a method whose options are keywords). No model
    is needed to check, so a bad option fails before one loads."""

    name: str
    options: dict[str, Any]
    typed: Any


def checked(name: str, options: Mapping[str, Any]) -> Checked:
    """Check method ``name`` and its ``options`` (:func:`check_method`), once."""
    return Checked(name, dict(options), check_method(name, options))


@dataclass(frozen=True)
class Settled:
    """A method with its options checked and made concrete for one job: what every batch of
    the job runs, without checking or building its options again.

    ``options``: the concrete options (``auto`` settled; ``prepared.options``); ``typed``:
    the same as the method's options dataclass (``None`` for a method whose options are
    keywords); ``prepared``: what the job records of the settling (:class:`Prepared`).
    """

    name: str
    typed: Any
    prepared: Prepared

    @property
    def options(self) -> dict[str, Any]:
        return self.prepared.options

    def run(self, lm: Any, encoded: Encoded, targets: torch.Tensor | None) -> Attribution:
        """The method's attribution of one batch, under the model's autocast (bf16 when
        loaded so), in eval mode (a model object's own modes restored after)."""
        return _call(self.name, lm, encoded, targets, self.options, self.typed)


def settle(
    method: Checked,
    model: Callable[[], Any],
    texts: Callable[[], list[Any]],
    batch_size: int,
    *,
    fresh: bool = False,
) -> Settled:
    """Make a checked method's options concrete for one job (its ``prepare``, if it
    registered one: DLS's ``layer="auto"``). The options dataclass is built again only when
    settling changed the options."""
    name, options, typed = method.name, method.options, method.typed
    entry = _REGISTRY[name]
    prepared = (
        Prepared(dict(options))
        if entry.prepare is None
        else entry.prepare(model, texts, dict(options), typed, batch_size, fresh)
    )
    if entry.validate is not None and prepared.options != options:
        typed = entry.validate(**prepared.options)
    return Settled(name, typed, prepared)


def run_method(
    name: str, lm: Any, encoded: Encoded, targets: torch.Tensor | None, options: dict[str, Any]
) -> Attribution:
    """Run method ``name`` on one batch with ``options`` checked here (a one-off call; a job
    settles its method once, :func:`settle`, and runs :meth:`Settled.run`)."""
    typed = check_method(name, options)
    return _call(name, lm, encoded, targets, options, typed)


def _call(
    name: str,
    lm: Any,
    encoded: Encoded,
    targets: torch.Tensor | None,
    options: dict[str, Any],
    typed: Any,
) -> Attribution:
    """A method registered with an options dataclass gets the built instance (``options=``);
    the others their options as keywords."""
    fn = _REGISTRY[name].fn
    with lm.autocast(), lm.borrowed():  # eval mode; a model object's own modes restored after
        if typed is not None:
            return fn(lm, encoded, targets, options=typed)
        return fn(lm, encoded, targets, **options)
