"""``layersal explain-dataset``: a whole file into Parquet shards, resumably."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..targets import int_or_text
from .common import (
    Bf16Opt,
    DeviceOpt,
    LmHeadOpt,
    ModelOpt,
    PairColumnOpt,
    PickleOpt,
    TargetOpt,
    WordsOpt,
    _count,
    _precision,
    _user_errors,
    _ZeroShot,
    app,
    err,
    read_target,
    zero_shot_options,
)


@app.command("explain-dataset")
@zero_shot_options
def explain_dataset(
    zero_shot: _ZeroShot,
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
    interruption). A row per explanation: a token classifier's per entity (its span, word,
    label and probability in entity_* columns), a zero-shot classifier's per label explained."""
    with _user_errors():
        chosen = zero_shot.load_options()
        from ..engines import Columns, RayOptions
        from ..engines import explain_dataset as run_dataset

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
                options=None if layer is None else {"layer": int_or_text(layer)},
                target=read_target(target, zero_shot.candidates),
                word_aggregation=word_aggregation,
                batch_size=batch_size,
                shard_rows=shard_rows,
                columns=Columns(text_column, id_column, label_column, pair_column),
                engine=engine,
                ray=RayOptions(num_workers, ray_address, cpus_per_worker, ray_reads),
                max_batch_tokens=max_batch_tokens,
                limit=limit,
                overwrite=overwrite,
                progress=progress,
                labels=chosen.get("labels"),
                template=chosen.get("template"),
                multi_label=bool(chosen.get("multi_label", False)),
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
    from ..engines.sink import AUTO_LAYER_FILE

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
