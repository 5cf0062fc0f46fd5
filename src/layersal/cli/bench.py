"""``layersal bench``: every method's faithfulness on a labelled file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .common import (
    Bf16Opt,
    DeviceOpt,
    LmHeadOpt,
    ModelOpt,
    PickleOpt,
    _precision,
    _split_methods,
    _user_errors,
    app,
    err,
)


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
        from ..datasets import read_labelled
        from ..errors import InputError
        from ..outputs import writable_folder

        if batch_size < 1:
            raise InputError(f"`batch_size` must be at least 1, not {batch_size}")
        dataset = read_labelled(data)  # the data and the output first, the heavy imports after
        dataset = dataset.sample(sample, seed) if sample else dataset.head(limit)
        writable_folder(out)
        import layersal

        from ..benchmark import expand_specs, run_benchmark
        from ..report.bench import markdown, write

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
        from ..report.progress import progress_lines

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
    from ..datasets import read_labelled

    if path is None:
        return None
    return read_labelled(path).texts[:64]
