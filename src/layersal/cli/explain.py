"""The commands that explain texts and show the results: ``methods``, ``explain``, ``layers``,
``report`` and ``plot``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..targets import int_or_text
from .common import (
    _DLS_FLAG_DEFAULTS,
    Bf16Opt,
    DeviceOpt,
    LayerOpt,
    LmHeadOpt,
    ModelOpt,
    PickleOpt,
    RuleOpt,
    TargetOpt,
    WordsOpt,
    _method_options,
    _print,
    _render_layers,
    _render_summary,
    _run,
    _Texts,
    _user_errors,
    _ZeroShot,
    app,
    check_items,
    err,
    load_model,
    out,
    read_target,
    text_source,
    zero_shot_options,
)


@app.command()
def methods() -> None:
    """List the saliency methods and each one's options (type and default), from the registry."""
    with _user_errors():
        from ..saliency import method_schema
        from ..saliency import methods as names

        for name in names():
            options = ", ".join(f"{o.name}: {o.type} = {o.default!r}" for o in method_schema(name))
            out.print(f"[bold]{name}[/bold]  {options or '(no options)'}", soft_wrap=True)


@app.command()
@text_source
@zero_shot_options
def explain(
    source: _Texts,
    zero_shot: _ZeroShot,
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
    budget: Annotated[
        int | None,
        typer.Option(
            "--budget",
            help="Instead of --method: at most N model passes per text; the most faithful "
            "method the model's card measured within it (the output says which).",
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
    """Explain texts: prediction and a word heat-map (red: pushed towards the class). A token
    classifier's texts: each entity (label, probability) and its heat-map; with --labels, a
    natural-language-inference model as a zero-shot classifier."""
    with _user_errors():
        flags = {
            "layer": int_or_text(layer),
            "rule": rule,
            "saliency": saliency,
            "decode": decode,
            "tau": tau,
        }
        results = _run(
            source.read_items(),  # first: a missing file fails fast
            model,
            lm_head,
            allow_pickle,
            device,
            bf16,
            zero_shot,
            method=method,
            options=_method_options(method, flags, option or []),
            budget=budget,
            target=read_target(target, zero_shot.candidates),
            word_aggregation=word_aggregation,
            batch_size=batch_size,
            long_texts="truncate" if truncate else "windows",
            window=window,
            stride=stride,
        )
        _print(results, json_out, _render_summary)


@app.command()
@text_source
@zero_shot_options
def layers(
    source: _Texts,
    zero_shot: _ZeroShot,
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
            source.read_items(),  # first: a missing file fails fast
            model,
            lm_head,
            allow_pickle,
            zero_shot=zero_shot,
            options={"top_k": max(top, 1), "layer_report": True},
        )
        _print(results, json_out, lambda e: _render_layers(e, top))


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
    zero_shot: _ZeroShot,
    model: str,
    lm_head: str | None,
    allow_pickle: bool,
    methods: str,
    layer: str,
    target: list[str] | None,
    batch_size: int,
    scored: bool,
    soft: bool = False,
) -> tuple[list[str], list[list[Any]], list[list[Any]] | None]:
    """What ``report`` and ``plot`` show: load the model, explain every text with every
    method and, when ``scored``, measure each explanation's faithfulness (with the soft
    metrics too when ``soft``: two passes per text and method). Returns
    ``(labels, per_text, scores)``: per text, every method's explanation and faithfulness
    (``None`` when not ``scored``)."""
    items = source.read()  # before the heavy imports: a missing file fails fast
    explained_target = read_target(target, zero_shot.candidates)
    import layersal

    from ..benchmark import parse_spec
    from ..errors import InputError
    from ..saliency import check_method, method_options

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
    lm = load_model(model, lm_head, allow_pickle, zero_shot=zero_shot)
    check_items(lm, items)
    per_method = [
        layersal.explain(
            items,
            lm,
            method=spec.method,
            options=spec.options,
            target=explained_target,
            batch_size=batch_size,
        )
        for spec in specs
    ]
    labels, per_text = [s.label for s in specs], [list(group) for group in zip(*per_method)]
    if not scored:
        return labels, per_text, None
    from ..evaluate import faithfulness_of

    scores = [
        faithfulness_of(lm, explained, batch_size=batch_size, soft=soft) for explained in per_method
    ]
    return labels, per_text, [list(row) for row in zip(*scores)]


def _write_plots(
    folder: Path,
    labels: list[str],
    per_text: list[list[Any]],
    scores: list[list[Any]] | None,
) -> list[Path]:
    """Every text's plots into ``folder``: its main method's, with all methods' curves."""
    from ..report.plots import write_plots

    written: list[Path] = []
    for index, group in enumerate(per_text, start=1):
        written += write_plots(
            folder, index, group[0], None if scores is None else scores[index - 1], labels
        )
    return written


@app.command()
@text_source
@zero_shot_options
def report(
    source: _Texts,
    zero_shot: _ZeroShot,
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
            "--metrics/--no-metrics",
            help="Add faithfulness numbers (soft comp./suff. included) and a deletion curve "
            "per text.",
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
        labels, per_text, scores = _explain_methods(
            source,
            zero_shot,
            model,
            lm_head,
            allow_pickle,
            methods,
            layer,
            target,
            batch_size,
            metrics,
            soft=True,
        )
        from ..report.html import render_report, write_report

        html = render_report(per_text, labels=labels, metrics=scores, title=title)
        message = f"wrote {write_report(out_path, html)}"
        if png is not None:
            plots = _write_plots(png, labels, per_text, scores)
            message += f" and {len(plots)} plots into {png}"
        err.print(message, soft_wrap=True)


@app.command()
@text_source
@zero_shot_options
def plot(
    source: _Texts,
    zero_shot: _ZeroShot,
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
        labels, per_text, scores = _explain_methods(
            source,
            zero_shot,
            model,
            lm_head,
            allow_pickle,
            methods,
            layer,
            target,
            batch_size,
            curves,
        )
        written = _write_plots(out_dir, labels, per_text, scores)
        err.print(f"wrote {len(written)} plots into {out_dir}", soft_wrap=True)


def _split_methods(text: str) -> list[str]:
    """Split on commas that separate methods (options use ';' or come after ':')."""
    return [m.strip() for m in text.split(",") if m.strip()]
