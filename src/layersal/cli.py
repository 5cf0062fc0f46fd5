"""The ``layersal`` command line: ``explain``, ``layers``, ``methods``, ``bench``, ``report``,
``plot``, ``serve`` and ``explain-dataset``.

Heavy imports (torch, transformers) happen inside the commands so ``--help`` stays fast.
User mistakes end with a one-line ``error:`` message and exit status 2, never a traceback.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from .errors import LayersalError
from .targets import int_or_text

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


def main() -> None:
    """Entry point of the ``layersal`` script."""
    app()


def _print_version(value: bool) -> None:
    if value:
        from .version import __version__

        out.print(f"layersal {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Which words did a transformer text classifier rely on? Decoded Layer Saliency."""


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
            from .errors import TruncationWarning

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
        from .errors import InputError
        from .inputs import check_texts, read_items

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
    from .saliency import method_options

    accepted = method_options(method)
    # a flag left at its default leaves the method's own default (the same, for dls)
    options = {k: v for k, v in flags.items() if k in accepted and v != _DLS_FLAG_DEFAULTS[k]}
    if extra:
        from .benchmark import parse_spec  # only then: the benchmark's imports cost a start-up

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

    from .errors import TruncationWarning
    from .inputs import check_texts
    from .job import Explainer
    from .report.progress import text_progress
    from .saliency import checked

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
                explanations = job.explain(
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
            yield from zip([key for key, _ in group], explanations)


@app.command()
def methods() -> None:
    """List the saliency methods and each one's options (type and default), from the registry."""
    with _user_errors():
        from .saliency import method_schema
        from .saliency import methods as names

        for name in names():
            options = ", ".join(f"{o.name}: {o.type} = {o.default!r}" for o in method_schema(name))
            out.print(f"[bold]{name}[/bold]  {options or '(no options)'}", soft_wrap=True)


@app.command()
def explain(
    texts: TextArg = None,
    file: FileOpt = None,
    text_column: TextColumnOpt = None,
    limit: LimitOpt = None,
    pair: PairOpt = None,
    pair_column: PairColumnOpt = None,
    model: ModelOpt = "sst2-tiny",
    lm_head: LmHeadOpt = None,
    method: Annotated[
        str,
        typer.Option(
            "--method", help="Saliency method: dls or a baseline (`layersal methods` lists them)."
        ),
    ] = "dls",
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            help="Method option KEY=VALUE (repeatable), e.g. span=5 for occlusion; "
            "`layersal methods` lists each method's options.",
        ),
    ] = None,
    layer: LayerOpt = "auto",
    rule: RuleOpt = None,
    target: TargetOpt = None,
    saliency: Annotated[
        str, typer.Option(help="Position saliency g: grad_x_act, gradcam or grad_norm.")
    ] = "grad_x_act",
    decode: Annotated[
        bool | None,
        typer.Option(
            "--decode/--no-decode",
            help="Carry saliency back to tokens through the LM head (default: auto's choice, on "
            "at a fixed layer).",
        ),
    ] = None,
    tau: Annotated[
        int | None, typer.Option(help="Top decoded tokens per position that count (default: all).")
    ] = None,
    word_aggregation: WordsOpt = "sum",
    batch_size: Annotated[int, typer.Option(help="Texts per model pass.")] = 16,
    truncate: Annotated[
        bool,
        typer.Option(
            "--truncate",
            help="Cut long texts at the model's maximum instead of explaining overlapping windows.",
        ),
    ] = False,
    window: Annotated[
        int | None,
        typer.Option(help="Tokens per window for long texts (default: the model's maximum)."),
    ] = None,
    stride: Annotated[
        int | None, typer.Option(help="Tokens between window starts (default: half a window).")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per text (JSON Lines).")
    ] = False,
    device: DeviceOpt = "cpu",
    bf16: Bf16Opt = False,
    allow_pickle: PickleOpt = False,
) -> None:
    """Explain texts: prediction and a word heat-map (red: pushed towards the class)."""
    with _user_errors():
        flags = {
            "layer": int_or_text(layer),
            "rule": rule,
            "saliency": saliency,
            "decode": decode,
            "tau": tau,
        }
        results = _run(
            _Texts(
                texts, file, text_column, limit, pair, pair_column
            ).read_items(),  # first: a missing file fails fast
            model,
            lm_head,
            allow_pickle,
            device,
            bf16,
            method=method,
            options=_method_options(method, flags, option or []),
            target=int_or_text(target),
            word_aggregation=word_aggregation,
            batch_size=batch_size,
            long_texts="truncate" if truncate else "windows",
            window=window,
            stride=stride,
        )
        _print(results, json_out, _render_summary)


@app.command()
def layers(
    texts: TextArg = None,
    file: FileOpt = None,
    text_column: TextColumnOpt = None,
    limit: LimitOpt = None,
    pair: PairOpt = None,
    pair_column: PairColumnOpt = None,
    model: ModelOpt = "sst2-tiny",
    lm_head: LmHeadOpt = None,
    top: Annotated[int, typer.Option(help="Decoded tokens shown per position and layer.")] = 3,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per text (JSON Lines).")
    ] = False,
    allow_pickle: PickleOpt = False,
) -> None:
    """Per-layer semantic coherence and each position's top decoded tokens."""
    with _user_errors():
        results = _run(
            _Texts(
                texts, file, text_column, limit, pair, pair_column
            ).read_items(),  # first: a missing file fails fast
            model,
            lm_head,
            allow_pickle,
            options={"top_k": max(top, 1), "layer_report": True},
        )
        _print(results, json_out, lambda e: _render_layers(e, top))


@app.command()
def bench(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            help="Labelled TSV: SST-2 style (header sentence/label) or AG News style (text, "
            "label name).",
        ),
    ],
    model: ModelOpt = "sst2-tiny",
    lm_head: LmHeadOpt = None,
    methods: Annotated[
        str,
        typer.Option(
            "--methods",
            help="Comma-separated methods ('all', 'layers', or name[:key=value;...] with ';' "
            "between options).",
        ),
    ] = "all",
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for results.json, results.md and plots.")
    ] = Path("bench-results"),
    limit: Annotated[int | None, typer.Option(help="Use only the first N rows.")] = None,
    sample: Annotated[
        int | None, typer.Option(help="Use a seeded random sample of N rows.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of --sample and the bootstrap.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Texts per batch.")] = 32,
    level: Annotated[
        str, typer.Option(help="Hide tokens or whole words: token or word.")
    ] = "token",
    perturbation: Annotated[
        str, typer.Option(help="How tokens are hidden: mask, delete or pad.")
    ] = "mask",
    rank_by: Annotated[str, typer.Option(help="Rank by signed or abs score.")] = "signed",
    loo: Annotated[
        bool,
        typer.Option("--loo/--no-loo", help="Kendall tau with leave-one-out (one pass per token)."),
    ] = True,
    calibration: Annotated[
        Path | None,
        typer.Option(
            help="Unlabelled texts for layer=auto (default: the first 64 benchmark texts)."
        ),
    ] = None,
    device: DeviceOpt = "cpu",
    bf16: Bf16Opt = False,
    allow_pickle: PickleOpt = False,
) -> None:
    """Faithfulness benchmark of every method on a labelled dataset (tables and plots)."""
    with _user_errors():
        from .datasets import read_labelled
        from .errors import InputError
        from .outputs import writable_folder

        if batch_size < 1:
            raise InputError(f"`batch_size` must be at least 1, not {batch_size}")
        dataset = read_labelled(data)  # the data and the output first, the heavy imports after
        dataset = dataset.sample(sample, seed) if sample else dataset.head(limit)
        writable_folder(out)
        import layersal

        from .benchmark import expand_specs, run_benchmark
        from .report.bench import markdown, write

        lm = layersal.load(
            model, lm_head, allow_pickle=allow_pickle, device=device, precision=_precision(bf16)
        )
        names = [m.replace(";", ",") for m in _split_methods(methods)]
        specs = expand_specs(names, lm.num_layers)
        metric_options = {
            "level": level,
            "perturbation": perturbation,
            "rank_by": rank_by,
            "loo": loo,
        }
        from .report.progress import progress_lines

        with progress_lines(err, len(specs) * len(dataset), "benchmark") as advance:
            result = run_benchmark(
                lm,
                dataset,
                specs,
                batch_size=batch_size,
                metric_options=metric_options,
                calibration=_calibration_texts(calibration),
                on_progress=advance,
            )
        paths = write(result, out)
        # the markdown tables as they are: never folded, whatever the terminal's width
        Console(highlight=False).print(markdown(result), markup=False, soft_wrap=True)
        err.print("wrote " + ", ".join(str(p) for p in paths))


def _calibration_texts(path: Path | None) -> list[str] | None:
    """The first 64 texts of ``--calibration``, read as the benchmark data is."""
    from .datasets import read_labelled

    if path is None:
        return None
    return read_labelled(path).texts[:64]


ReportMethodsOpt = Annotated[
    str,
    typer.Option(
        "--methods",
        help="Comma-separated methods shown side by side, the first is the main one "
        "(name or name:key=value;key=value).",
    ),
]


def _explain_methods(
    source: _Texts,
    model: str,
    lm_head: str | None,
    allow_pickle: bool,
    methods: str,
    layer: str,
    target: str | None,
    batch_size: int,
    scored: bool,
) -> tuple[list[str], list[list[Any]], list[list[Any]] | None]:
    """What ``report`` and ``plot`` show: load the model, explain every text with every
    method and, when ``scored``, measure each explanation's faithfulness. Returns
    ``(labels, per_text, scores)``: per text, every method's explanation and faithfulness
    (``None`` when not ``scored``)."""
    items = source.read()  # before the heavy imports: a missing file fails fast
    import layersal

    from .benchmark import parse_spec
    from .errors import InputError
    from .saliency import check_method, method_options

    specs = [parse_spec(m.replace(";", ",")) for m in _split_methods(methods)]
    if not specs:
        raise InputError("--methods names no method")
    for spec in specs:
        accepted = method_options(spec.method)
        if "layer" in accepted and layer != _DLS_FLAG_DEFAULTS["layer"]:
            spec.options.setdefault("layer", int_or_text(layer))
        if "layer_report" in accepted:
            spec.options.setdefault("layer_report", True)  # reports and plots show every layer
        check_method(spec.method, spec.options)
    lm = layersal.load(model, lm_head, allow_pickle=allow_pickle)
    per_method = [
        layersal.explain(
            items,
            lm,
            method=spec.method,
            options=spec.options,
            target=int_or_text(target),
            batch_size=batch_size,
        )
        for spec in specs
    ]
    labels, per_text = [s.label for s in specs], [list(group) for group in zip(*per_method)]
    if not scored:
        return labels, per_text, None
    from .evaluate import faithfulness_of

    scores = [faithfulness_of(lm, explained, batch_size=batch_size) for explained in per_method]
    return labels, per_text, [list(row) for row in zip(*scores)]


def _write_plots(
    folder: Path,
    labels: list[str],
    per_text: list[list[Any]],
    scores: list[list[Any]] | None,
) -> list[Path]:
    """Every text's plots into ``folder``: its main method's, with all methods' curves."""
    from .report.plots import write_plots

    written: list[Path] = []
    for index, group in enumerate(per_text, start=1):
        written += write_plots(
            folder, index, group[0], None if scores is None else scores[index - 1], labels
        )
    return written


@app.command()
def report(
    texts: TextArg = None,
    file: FileOpt = None,
    text_column: TextColumnOpt = None,
    limit: LimitOpt = None,
    pair: PairOpt = None,
    pair_column: PairColumnOpt = None,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path(
        "report.html"
    ),
    model: ModelOpt = "sst2-tiny",
    lm_head: LmHeadOpt = None,
    layer: LayerOpt = "auto",
    target: TargetOpt = None,
    methods: ReportMethodsOpt = "dls",
    metrics: Annotated[
        bool,
        typer.Option(
            "--metrics/--no-metrics", help="Add faithfulness numbers and a deletion curve per text."
        ),
    ] = False,
    png: Annotated[
        Path | None, typer.Option("--png", help="Also write the matplotlib plots into this folder.")
    ] = None,
    title: Annotated[str, typer.Option(help="Title of the page.")] = "layersal report",
    batch_size: Annotated[int, typer.Option(help="Texts per model pass.")] = 16,
    allow_pickle: PickleOpt = False,
) -> None:
    """Write one self-contained HTML report: heat-maps, every layer, optional metrics."""
    with _user_errors():
        source = _Texts(texts, file, text_column, limit, pair, pair_column)
        labels, per_text, scores = _explain_methods(
            source, model, lm_head, allow_pickle, methods, layer, target, batch_size, metrics
        )
        from .report.html import render_report, write_report

        html = render_report(per_text, labels=labels, metrics=scores, title=title)
        message = f"wrote {write_report(out_path, html)}"
        if png is not None:
            plots = _write_plots(png, labels, per_text, scores)
            message += f" and {len(plots)} plots into {png}"
        err.print(message, soft_wrap=True)


@app.command()
def plot(
    texts: TextArg = None,
    file: FileOpt = None,
    text_column: TextColumnOpt = None,
    limit: LimitOpt = None,
    pair: PairOpt = None,
    pair_column: PairColumnOpt = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the PNG files.")] = Path(
        "plots"
    ),
    model: ModelOpt = "sst2-tiny",
    lm_head: LmHeadOpt = None,
    layer: LayerOpt = "auto",
    target: TargetOpt = None,
    methods: ReportMethodsOpt = "dls",
    curves: Annotated[
        bool,
        typer.Option(
            "--curves/--no-curves", help="Deletion/insertion curves (extra model passes)."
        ),
    ] = True,
    batch_size: Annotated[int, typer.Option(help="Texts per model pass.")] = 16,
    allow_pickle: PickleOpt = False,
) -> None:
    """Write PNG plots per text: saliency per layer x word, coherence per layer, deletion curves."""
    with _user_errors():
        source = _Texts(texts, file, text_column, limit, pair, pair_column)
        labels, per_text, scores = _explain_methods(
            source, model, lm_head, allow_pickle, methods, layer, target, batch_size, curves
        )
        written = _write_plots(out_dir, labels, per_text, scores)
        err.print(f"wrote {len(written)} plots into {out_dir}", soft_wrap=True)


@app.command()
def serve(
    model: ModelOpt = "sst2-tiny",
    lm_head: LmHeadOpt = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback is reachable by others.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    max_chars: Annotated[int, typer.Option(help="Longest text accepted, in characters.")] = 5000,
    max_batch: Annotated[int, typer.Option(help="Most texts per API request.")] = 32,
    max_rows: Annotated[
        int,
        typer.Option(
            help="Most model rows (a text through one forward pass) one request may cost, "
            "counted from its method's options before it runs."
        ),
    ] = 5000,
    timeout: Annotated[
        float, typer.Option(help="Seconds one request may take before a 503/504 error.")
    ] = 60.0,
    device: DeviceOpt = "cpu",
    allow_pickle: PickleOpt = False,
) -> None:
    """Local web app: type a text, see its heat-map, layers and decoded tokens (and a JSON API)."""
    with _user_errors():
        import layersal

        from .errors import InputError

        try:
            import uvicorn

            from .serve import create_app, is_loopback, loopback_hosts
        except ImportError as exc:
            raise InputError(f"serve needs the fastapi and uvicorn packages ({exc})") from None
        lm = layersal.load(model, lm_head, allow_pickle=allow_pickle, device=device)
        local = is_loopback(host)
        web = create_app(
            lm,
            max_chars=max_chars,
            max_batch=max_batch,
            max_rows=max_rows,
            timeout_s=timeout,
            allowed_hosts=loopback_hosts(host) if local else None,
        )
    if not local:
        err.print(
            f"[bold yellow]warning:[/] listening on {host}, not loopback: anyone who can reach "
            "this "
            f"machine on port {port} can use the app and its API (no authentication). "
            "Use --host 127.0.0.1 to keep it local.",
            soft_wrap=True,
        )
    shown = f"[{host}]" if ":" in host else host
    err.print(f"layersal: serving {lm.name} on http://{shown}:{port}/  (Ctrl+C to stop)")
    from .serve.stalls import header_timeout_protocol

    # a client must finish its request head within 10 s (its body: see create_app)
    uvicorn.run(web, host=host, port=port, log_level="warning", http=header_timeout_protocol(10.0))


@app.command("explain-dataset")
def explain_dataset(
    input_path: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            help="Texts: .txt (one per line), .tsv/.csv, .jsonl or .parquet; a path, or a URI "
            "(s3://, gs://, ...) that the Ray workers read.",
            show_default=False,
        ),
    ],
    out_path: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            help="Output folder of Parquet shards (e.g. results.parquet), a path or a URI "
            "(s3://bucket/results.parquet); bad rows go to results.errors.jsonl beside it.",
        ),
    ],
    text_column: Annotated[
        str | None,
        typer.Option(
            help="Column/field holding the text (default: text, sentence, review or content)."
        ),
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option(help="Column/field holding row ids (default: the row number, from 0)."),
    ] = None,
    label_column: Annotated[
        str | None,
        typer.Option(
            help="Column/field of gold labels, copied to the rows (default: 'label' if present)."
        ),
    ] = None,
    pair_column: PairColumnOpt = None,
    model: ModelOpt = "sst2-tiny",
    lm_head: LmHeadOpt = None,
    method: Annotated[
        str, typer.Option(help="Saliency method (see `layersal.methods()`).")
    ] = "dls",
    layer: Annotated[
        str | None,
        typer.Option(
            "--layer",
            "-l",
            help="Where dls explains: 'auto' (the default: the configuration from the model "
            "card, else calibrated once on the first 64 texts), an int, 'input' or 'coherent'.",
        ),
    ] = None,
    target: TargetOpt = None,
    word_aggregation: WordsOpt = "sum",
    batch_size: Annotated[int, typer.Option(help="Texts per model pass.")] = 32,
    shard_rows: Annotated[
        int | None,
        typer.Option(
            help="Input rows per shard (sorted by length inside it; default: 32 x batch size)."
        ),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="local (this process) or ray (Ray Data actors; pip install 'layersal\\[ray]')."
        ),
    ] = "local",
    num_workers: Annotated[
        int | None, typer.Option(help="Ray actors, each with its own model (default: one per CPU).")
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            envvar="RAY_ADDRESS",
            help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray).",
        ),
    ] = None,
    cpus_per_worker: Annotated[
        float, typer.Option(help="CPUs (and torch threads) per Ray actor.")
    ] = 1,
    ray_reads: Annotated[
        str,
        typer.Option(
            help="Who reads the input and writes the shards on Ray: workers (each reads its "
            "blocks and writes its shards; paths every node can open), driver (this process), "
            "or auto (workers when the cluster is this machine).",
        ),
    ] = "auto",
    max_batch_tokens: Annotated[
        int | None,
        typer.Option(
            help="Form model passes of similar-length texts up to this many padded tokens "
            "instead of --batch-size texts (evenly sized GPU batches).",
        ),
    ] = None,
    device: DeviceOpt = "cpu",
    bf16: Bf16Opt = False,
    limit: Annotated[
        int | None,
        typer.Option("--limit", help="Explain only the first N rows of INPUT.", min=1),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Delete an earlier run in --out and start over.")
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show a progress bar with texts/s.")
    ] = True,
    allow_pickle: PickleOpt = False,
) -> None:
    """Explain a whole file into Parquet shards; resumable (rerun the same command after an
    interruption)."""
    with _user_errors():
        from .engines import explain_dataset as run_dataset

        try:
            summary = run_dataset(
                input_path,
                out_path,
                model=model,
                lm_head=lm_head,
                allow_pickle=allow_pickle,
                device=device,
                precision=_precision(bf16),
                method=method,
                layer=int_or_text(layer),
                target=int_or_text(target),
                word_aggregation=word_aggregation,
                batch_size=batch_size,
                shard_rows=shard_rows,
                text_column=text_column,
                id_column=id_column,
                label_column=label_column,
                pair_column=pair_column,
                engine=engine,
                num_workers=num_workers,
                ray_address=ray_address,
                cpus_per_worker=cpus_per_worker,
                ray_reads=ray_reads,
                max_batch_tokens=max_batch_tokens,
                limit=limit,
                overwrite=overwrite,
                progress=progress,
            )
        except KeyboardInterrupt:
            err.print(
                f"finished shards are kept in {out_path}: rerun the same command to continue",
                soft_wrap=True,
            )
            raise
        err.print(_run_summary(summary, out_path), soft_wrap=True)


def _run_summary(summary: Any, out_path: str) -> str:
    """The one line a dataset run ends with: what it wrote, what it found done, bad rows."""
    from .engines.sink import AUTO_LAYER_FILE

    written = f"{_count(summary.rows, 'row')} in {_count(summary.shards, 'shard')}"
    bad = f"{_count(summary.errors, 'bad row')} in {summary.errors_file}"
    auto = summary.settings.get("auto_layer")
    if auto is not None:
        decoded = "decoded" if summary.settings.get("auto_decode") else "not decoded"
        bad += (
            f"; DLS at layer {auto}, rule {summary.settings.get('auto_rule')}, {decoded} "
            f"(auto: see {out_path.rstrip('/')}/{AUTO_LAYER_FILE})"
        )
    if summary.already_complete:
        return f"{out_path}: the run was already complete ({written}); {bad}"
    if not summary.explained and summary.resumed_shards:
        return (
            f"{out_path}: every shard had been written by the earlier run ({written}), which is "
            f"now marked complete; {bad}"
        )
    resumed = (
        f", {summary.resumed_shards} of them from an earlier run" if summary.resumed_shards else ""
    )
    return (
        f"wrote {written}{resumed} to {out_path} ({_count(summary.explained, 'text')} at "
        f"{summary.texts_per_second:.1f} texts/s); {bad}"
    )


def _count(number: int, noun: str) -> str:
    """``1 shard``, ``2 shards``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _split_methods(text: str) -> list[str]:
    """Split on commas that separate methods (options use ';' or come after ':')."""
    return [m.strip() for m in text.split(",") if m.strip()]


def _render_summary(explanation: Any) -> Any:
    from .report.terminal import summary

    return summary(explanation)


def _render_layers(explanation: Any, top: int) -> Any:
    from .report.terminal import layer_table

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
