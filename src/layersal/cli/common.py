"""What every command of the command line shares: the app, the consoles, the options, reading
texts, turning library errors into one ``error:`` line, running an explainer over a stream of
texts, and printing results."""

from __future__ import annotations

import functools
import inspect
import json
import re
import sys
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import LayersalError

app = typer.Typer(
    help="Which words did a transformer text classifier rely on? Decoded Layer Saliency.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Bundled model name (sst2-tiny, agnews-tiny; sst2-minilm, agnews-minilm from a "
        "checkout), folder or hub id.",
    ),
]
LmHeadOpt = Annotated[
    str | None,
    typer.Option("--lm-head", help="Base checkpoint whose masked-LM head decodes the layers."),
]
LayerOpt = Annotated[
    str,
    typer.Option(
        "--layer",
        "-l",
        help="Where to explain: 'auto' (the rule set, layer and decoding measured most faithful "
        "for this model: from its card, else calibrated once and cached), an integer layer "
        "(negative from the top), 'input' (the word embeddings) or 'coherent' (the paper's "
        "layer rule).",
    ),
]
PickleOpt = Annotated[
    bool,
    typer.Option(
        "--allow-pickle", help="Allow pickle (.bin) weights. They can run code: trust the source."
    ),
]
FileOpt = Annotated[
    Path | None,
    typer.Option(
        "--file",
        "-f",
        help="Texts from a file: .txt (one per line), .tsv/.csv, .jsonl; '-' for stdin.",
    ),
]
TextColumnOpt = Annotated[
    str | None,
    typer.Option(
        "--text-column",
        help="Column/field holding the text (default: text, sentence, review or content).",
    ),
]
PairOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--pair",
        help="Second text of a pair (for pair models: NLI, cross-encoders); one per text argument.",
        show_default=False,
    ),
]
PairColumnOpt = Annotated[
    str | None,
    typer.Option(
        "--pair-column", help="Column/field holding the second text of each pair (pair models)."
    ),
]
LimitOpt = Annotated[
    int | None, typer.Option("--limit", help="Read at most N texts from --file.", min=1)
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="Where the model runs: cpu, cuda, cuda:N or auto (a GPU if torch sees one).",
    ),
]
Bf16Opt = Annotated[
    bool,
    typer.Option(
        "--bf16", help="bfloat16 autocast for the model passes (for GPUs; scores stay fp32)."
    ),
]
TextArg = Annotated[
    list[str] | None, typer.Argument(help="Text(s) to explain.", show_default=False)
]

# the options of text_source, in the order _Texts takes them
_TEXT_SOURCE = [
    ("texts", TextArg),
    ("file", FileOpt),
    ("text_column", TextColumnOpt),
    ("limit", LimitOpt),
    ("pair", PairOpt),
    ("pair_column", PairColumnOpt),
]


def as_flags(message: str) -> str:
    """A library message in command-line terms: the parameters it names in backticks become
    flags (`allow_pickle=True` -> --allow-pickle, `device="cpu"` -> --device cpu,
    `text_column` -> --text-column)."""

    def flag(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        option = "--" + name.replace("_", "-")
        if value in (None, "True"):
            return option
        return f"{option} {value.strip(chr(34))}"

    return re.sub(r"`([a-z][a-z0-9_]*)(?:=([^`]+))?`", flag, message)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Print layersal errors and warnings as single lines; exit 2 on an error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except LayersalError as exc:
            err.print(f"[bold red]error:[/] {escape(as_flags(str(exc)))}", soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        finally:
            from ..errors import TruncationWarning

            for warning in caught:
                if issubclass(warning.category, TruncationWarning):
                    err.print(f"[bold yellow]warning:[/] {warning.message}", soft_wrap=True)


@dataclass(frozen=True)
class _Texts:
    """Where a command's texts come from: its arguments, or ``--file`` (with its options)."""

    texts: list[str] | None
    file: Path | None
    text_column: str | None = None
    limit: int | None = None
    pairs: list[str] | None = None
    pair_column: str | None = None

    def read(self) -> list[Any]:
        """The texts (or pairs of texts), checked."""
        return [text for _, text in self.read_items()]

    def read_items(self) -> list[tuple[int | str, Any]]:
        """``(id, text or pair)``: the id is the text's row in the file, or its argument
        position (from 0)."""
        from ..errors import InputError
        from ..inputs import check_texts, read_items

        if self.texts and self.file is not None:
            raise InputError("give texts as arguments or with --file, not both")
        if self.file is not None:
            if self.pairs:
                raise InputError("--pair goes with text arguments; for --file use --pair-column")
            return read_items(self.file, self.text_column, self.limit, self.pair_column)
        if self.text_column is not None or self.limit is not None or self.pair_column:
            raise InputError("--text-column, --pair-column and --limit apply to --file")
        if not self.texts:
            raise InputError("no text given: pass a text argument or --file")
        if self.pairs:
            if len(self.pairs) != len(self.texts):
                raise InputError(
                    f"{len(self.texts)} text(s) and {len(self.pairs)} --pair: give one --pair "
                    "per text"
                )
            return list(enumerate(check_texts(list(zip(self.texts, self.pairs)))))
        return list(enumerate(check_texts(self.texts)))


def _option_group(
    name: str,
    spec: list[tuple[str, Any, Any]],
    build: Callable[..., Any],
    after: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator giving a command the options of ``spec`` (``(parameter, annotation,
    default)``, declared once), which the command receives built into one keyword ``name``:
    ``build(*values)``. The options go first, or right after the parameter ``after`` when the
    command has it (where ``--help`` lists them)."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(command, include_extras=True)  # objects, not strings
        given = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints[p.name])
            for p in inspect.signature(command).parameters.values()
            if p.name != name
        ]
        options = [
            inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default)
            for key, kind, default in spec
        ]
        names = [p.name for p in given]
        at = names.index(after) + 1 if after in names else 0
        signature = inspect.Signature([*given[:at], *options, *given[at:]])

        @functools.wraps(command)
        def grouped(**kwargs: Any) -> Any:
            found = [kwargs.pop(key, default) for key, _, default in spec]
            return command(**{name: build(*found)}, **kwargs)

        grouped.__signature__ = signature  # type: ignore[attr-defined]
        grouped.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        del grouped.__wrapped__  # typer must read the signature above, not the command's
        return grouped

    return decorate


text_source = _option_group("source", [(n, kind, None) for n, kind in _TEXT_SOURCE], _Texts)
"""Give a command the options that say where its texts come from, declared once here: the
texts as arguments, or ``--file`` with ``--text-column`` and ``--limit``, and the pairs'
``--pair`` / ``--pair-column``. The command receives them as one ``source: _Texts`` (its
first keyword parameter), so every command reads texts alike."""


LabelsOpt = Annotated[
    str | None,
    typer.Option(
        "--labels",
        help="Read a natural-language-inference model as a zero-shot classifier of these "
        "comma-separated candidate labels (e.g. 'sports,politics,business'); a label holding a "
        "comma goes in --label.",
    ),
]
LabelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--label",
        help="One zero-shot candidate label, taken whole (commas included); repeatable, and "
        "added after --labels.",
        show_default=False,
    ),
]
TemplateOpt = Annotated[
    str | None,
    typer.Option(
        "--template",
        help="Zero-shot hypothesis, '{}' where the label goes (default: 'This example is {}.').",
    ),
]
MultiLabelOpt = Annotated[
    bool,
    typer.Option(
        "--multi-label",
        help="Zero-shot labels scored independently (entailment against contradiction), as the "
        "pipeline's multi_label=True; default: one softmax across the labels.",
    ),
]


@dataclass(frozen=True)
class _ZeroShot:
    """The zero-shot options of a command: ``--labels`` (comma-separated), ``--label``
    (repeatable, taken whole), ``--template``, ``--multi-label``."""

    labels: str | None = None
    label: list[str] | None = None
    template: str | None = None
    multi_label: bool = False

    @property
    def candidates(self) -> list[str] | None:
        """The candidate labels, in order (``None``: not zero-shot)."""
        found = [part.strip() for part in (self.labels or "").split(",") if part.strip()]
        found += [label.strip() for label in self.label or []]
        if self.labels is not None or self.label:
            return found
        return None

    def load_options(self) -> dict[str, Any]:
        """What :func:`layersal.load` takes to read the model as a zero-shot classifier
        (nothing when no labels are given)."""
        from ..errors import InputError
        from ..models import DEFAULT_TEMPLATE

        candidates = self.candidates
        if candidates is None:
            if self.template is not None or self.multi_label:
                raise InputError(
                    "--template and --multi-label are options of a zero-shot classifier: give "
                    "its candidate labels with --labels (e.g. --labels 'sports,politics')"
                )
            return {}
        if not candidates:
            raise InputError(
                "--labels names no label: give the zero-shot candidate labels, comma-separated"
            )
        return {
            "task": "zero-shot",
            "labels": candidates,
            "template": DEFAULT_TEMPLATE if self.template is None else self.template,
            "multi_label": self.multi_label,
        }


zero_shot_options = _option_group(
    "zero_shot",
    [
        ("labels", LabelsOpt, None),
        ("label", LabelOpt, None),
        ("template", TemplateOpt, None),
        ("multi_label", MultiLabelOpt, False),
    ],
    _ZeroShot,
    after="lm_head",
)
"""Give a command ``--labels``, ``--label``, ``--template`` and ``--multi-label`` (after its
``--lm-head``), received as one ``zero_shot: _ZeroShot``."""


def _precision(bf16: bool) -> str:
    """``load(precision=...)`` for the ``--bf16`` flag."""
    return "bf16" if bf16 else "fp32"


_DLS_FLAG_DEFAULTS = {
    "layer": "auto",
    "rule": None,
    "saliency": "grad_x_act",
    "decode": None,
    "tau": None,
}
TargetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        "-t",
        help="Class to explain (index or label); default: predicted. A token classifier's: an "
        "entity, by character offsets ('10:16') or word index ('3'), with a label to explain a "
        "span as that type ('10:16=ORG'); default: every entity. A zero-shot classifier's: a "
        "label, repeatable (or comma-separated) for several; default: the top label.",
        show_default=False,
    ),
]


def read_target(values: list[str] | None, candidates: list[str] | None = None) -> Any:
    """The ``target`` of ``--target`` (given ``values`` times): ``None``, one target (``"2"``
    read as 2), or for a zero-shot classifier of ``candidates`` a list of labels when several
    are named, each ``--target`` once or comma-separated (a value that names a label whole is
    that label, commas and all)."""
    from ..errors import InputError
    from ..targets import int_or_text

    if not values:
        return None
    if candidates is None:
        if len(values) > 1:
            raise InputError(
                f"--target is given {len(values)} times: this model explains one target per text "
                "(several --target name labels of a zero-shot classifier, with --labels)"
            )
        return int_or_text(values[0])
    lowered = {label.lower() for label in candidates}
    labels: list[Any] = []
    for value in values:
        split = _split_labels(value, lowered)
        labels += split if split is not None else [int_or_text(value)]
    return labels[0] if len(labels) == 1 else labels


WordsOpt = Annotated[
    str,
    typer.Option("--words", help="Merge sub-word scores into word scores: sum, mean or max."),
]
RuleOpt = Annotated[
    str | None,
    typer.Option(
        "--rule",
        help="Propagation rule set of the backward pass: gradient, ln, cp, cp_id or attnlrp "
        "(default: auto's choice, gradient at a fixed layer).",
    ),
]


def _method_options(method: str, flags: dict[str, Any], extra: list[str]) -> dict[str, Any]:
    """Options for ``method``: the DLS flags it accepts (for other methods only those changed
    from their defaults), plus ``--option KEY=VALUE`` pairs."""
    from ..saliency import method_options

    accepted = method_options(method)
    # a flag left at its default leaves the method's own default (the same, for dls)
    options = {k: v for k, v in flags.items() if k in accepted and v != _DLS_FLAG_DEFAULTS[k]}
    if extra:
        from ..benchmark import parse_spec  # only then: the benchmark's imports cost a start-up

        options.update(parse_spec(f"{method}:" + ",".join(extra)).options)
    return options


# Texts explained per call when a command streams its output: results appear as each group
# finishes, in input order, and memory holds one group's explanations at a time.
STREAM_TEXTS = 64


def _split_labels(value: str, labels: set[str]) -> list[str] | None:
    """``value`` cut at commas into labels of ``labels`` (lower-cased), the longest label
    first at each place, so that a label holding commas stays whole (``None``: no such cut)."""
    parts = value.split(",")
    found: list[str] = []
    start = 0
    while start < len(parts):
        for end in range(len(parts), start, -1):
            piece = ",".join(parts[start:end]).strip()
            if piece.lower() in labels:
                found.append(piece)
                start = end
                break
        else:
            return None
    return found


def load_model(
    model: str,
    lm_head: str | None,
    allow_pickle: bool,
    device: str = "cpu",
    bf16: bool = False,
    zero_shot: _ZeroShot | None = None,
) -> Any:
    """:func:`layersal.load` for a command: a zero-shot classifier when ``zero_shot`` names
    labels (``--labels``, ``--label``)."""
    import layersal

    return layersal.load(
        model,
        lm_head,
        allow_pickle=allow_pickle,
        device=device,
        precision=_precision(bf16),
        **(zero_shot or _ZeroShot()).load_options(),
    )


def check_items(lm: Any, texts: list[Any]) -> None:
    """A pair model given single texts (or the reverse) fails fast, with one line; a
    natural-language-inference model given single texts is told of ``--labels`` too."""
    from ..errors import InputError
    from ..inputs import is_pair

    labels = {label.lower() for label in lm.labels}
    if lm.pairs and texts and not is_pair(texts[0]) and {"entailment", "contradiction"} <= labels:
        raise InputError(
            f"{lm.name!r} classifies pairs of texts ({', '.join(lm.labels)}): give each text "
            "its second text (--pair, or --pair-column with --file), or read it as a zero-shot "
            "classifier of candidate labels (--labels 'sports,politics,business')"
        )
    lm.check_items(texts)


def _run(
    items: list[tuple[int | str, str]],
    model: str,
    lm_head: str | None,
    allow_pickle: bool,
    device: str = "cpu",
    bf16: bool = False,
    zero_shot: _ZeroShot | None = None,
    **kwargs: Any,
) -> Iterator[tuple[int | str, list[Any]]]:
    """``(id, explanations)`` of every item, in input order, ``STREAM_TEXTS`` at a time, with a
    progress bar on a terminal (texts done, counting the windows of a long one). An item has
    one explanation, or several: a multi-label text's labels, a token classifier's entities
    (maybe none), the zero-shot labels named as targets."""
    from ..errors import TruncationWarning
    from ..inputs import check_texts
    from ..job import Explainer
    from ..report.progress import text_progress
    from ..saliency import checked

    options = dict(kwargs.pop("options", None) or {})
    target = kwargs.pop("target", None)
    budget = kwargs.pop("budget", None)
    name = kwargs.pop("method", "dls")
    if budget is not None:
        from ..budget_choice import budget_alone, choose_for

        budget_alone(budget, name != "dls" or bool(options))
    method = checked(name, options)  # before the model loads
    lm = load_model(model, lm_head, allow_pickle, device, bf16, zero_shot)
    if budget is not None:
        choice = choose_for(lm, budget)
        method = checked(choice.method, choice.options)
        kwargs["recorded"] = {"budget": choice.record(budget)}
    job = Explainer(lm, method, **kwargs)
    texts = check_texts([text for _, text in items])
    check_items(lm, texts)
    if not (lm.task.focused or lm.task.hypotheses):
        # settled once for all the texts (DLS's layer="auto" on the first 64, as one call
        # would), so that no group of the stream chooses its own
        job.settle(lambda: texts)
    # else the rows explained are entities or labels' pairs, not the texts: the first group
    # that has rows settles the job on them, as one call would, and every later group keeps it
    with text_progress(err, len(items)) as progress:
        for start in range(0, len(items), STREAM_TEXTS):
            group = items[start : start + STREAM_TEXTS]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                explained = job.explain_grouped(
                    [text for _, text in group],
                    target=target,
                    progress=progress(start, len(group)),
                )
            for warning in caught:  # named by the text's id, not its place in the group
                index = getattr(warning.message, "index", None)
                if isinstance(warning.message, TruncationWarning) and index is not None:
                    own = f"text {group[index][0]}" + str(warning.message)[len(f"text {index}") :]
                    warnings.warn(TruncationWarning(own, index), stacklevel=1)
                else:
                    warnings.warn(warning.message, warning.category, stacklevel=1)
            for (key, _), explanations in zip(group, explained):
                yield key, explanations


def _count(number: int, noun: str) -> str:
    """``1 shard``, ``2 shards``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _split_methods(text: str) -> list[str]:
    """Split on commas that separate methods (options use ';' or come after ':')."""
    return [m.strip() for m in text.split(",") if m.strip()]


def _render_summary(explanation: Any) -> Any:
    from ..report.terminal import summary

    return summary(explanation)


def _render_layers(explanation: Any, top: int) -> Any:
    from ..report.terminal import layer_table

    return layer_table(explanation, top)


def _print(
    results: Iterable[tuple[int | str, list[Any]]],
    json_out: bool,
    render: Callable[[Any], Any],
) -> None:
    """Print each text's results as they come: a JSON line per explanation (with the text's
    input ``id``), or a rendering of each; a token classifier's text first gets a line listing
    its entities (or saying it has none)."""
    from ..report.terminal import entities_line

    first = True
    for key, explanations in results:
        if json_out:
            for explanation in explanations:
                line = json.dumps({"id": key, **explanation.to_dict()}, ensure_ascii=False)
                sys.stdout.write(line + "\n")
            sys.stdout.flush()
            continue
        entities = not explanations or explanations[0].entity is not None
        blocks = [entities_line(key, explanations)] if entities else []
        for block in blocks + [render(e) for e in explanations]:
            if not first:
                out.print()
            first = False
            # lines of text are not folded at the console's width (80 columns when piped)
            out.print(block, soft_wrap=True)
