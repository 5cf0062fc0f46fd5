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


def text_source(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` the options that say where its texts come from, declared once here:
    the texts as arguments, or ``--file`` with ``--text-column`` and ``--limit``, and the
    pairs' ``--pair`` / ``--pair-column``. The command receives them as one ``source:
    _Texts`` (its first keyword parameter), so every command reads texts alike."""
    hints = typing.get_type_hints(command, include_extras=True)  # objects, not strings
    given = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints[p.name])
        for p in inspect.signature(command).parameters.values()
        if p.name != "source"
    ]
    options = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=None)
        for name, kind in _TEXT_SOURCE
    ]

    @functools.wraps(command)
    def with_source(**kwargs: Any) -> Any:
        found = [kwargs.pop(name, None) for name, _ in _TEXT_SOURCE]
        return command(source=_Texts(*found), **kwargs)

    signature = inspect.Signature([*options, *given])
    with_source.__signature__ = signature  # type: ignore[attr-defined]
    with_source.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    del with_source.__wrapped__  # typer must read the signature above, not the command's
    return with_source


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
    str | None,
    typer.Option("--target", "-t", help="Class to explain (index or label); default: predicted."),
]
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


def _run(
    items: list[tuple[int | str, str]],
    model: str,
    lm_head: str | None,
    allow_pickle: bool,
    device: str = "cpu",
    bf16: bool = False,
    **kwargs: Any,
) -> Iterator[tuple[int | str, Any]]:
    """``(id, explanation)`` of every item, in input order, ``STREAM_TEXTS`` at a time, with a
    progress bar on a terminal (texts done, counting the windows of a long one)."""
    import layersal

    from ..errors import TruncationWarning
    from ..inputs import check_texts
    from ..job import Explainer
    from ..report.progress import text_progress
    from ..saliency import checked

    options = dict(kwargs.pop("options", None) or {})
    target = kwargs.pop("target", None)
    method = checked(kwargs.pop("method", "dls"), options)  # before the model loads
    lm = layersal.load(
        model, lm_head, allow_pickle=allow_pickle, device=device, precision=_precision(bf16)
    )
    job = Explainer(lm, method, **kwargs)
    # settled once for all the texts (DLS's layer="auto" on the first 64, as one call would),
    # so that no group of the stream chooses its own
    texts = check_texts([text for _, text in items])
    lm.check_items(texts)  # a pair model given single texts (or the reverse) fails fast
    job.settle(lambda: texts)
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
            for (key, _), explanations in zip(group, explained):  # a multi-label text: several
                for explanation in explanations:
                    yield key, explanation


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
    results: Iterable[tuple[int | str, Any]], json_out: bool, render: Callable[[Any], Any]
) -> None:
    """Print each result as it comes: a JSON line (with its input ``id``) or a rendering."""
    for i, (key, explanation) in enumerate(results):
        if json_out:
            line = json.dumps({"id": key, **explanation.to_dict()}, ensure_ascii=False)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            continue
        if i:
            out.print()
        # lines of text are not folded at the console's width (80 columns when piped)
        out.print(render(explanation), soft_wrap=True)
