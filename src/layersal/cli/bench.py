"""``layersal bench``: every method's faithfulness on a labelled file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from .common import (
    Bf16Opt,
    DeviceOpt,
    LmHeadOpt,
    ModelOpt,
    PickleOpt,
    _split_methods,
    _user_errors,
    _ZeroShot,
    app,
    check_items,
    err,
    load_model,
    zero_shot_options,
)


@app.command()
@zero_shot_options
def bench(
    zero_shot: _ZeroShot,
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
    seed: Annotated[
        int,
        typer.Option(
            help="Seed of --sample, the bootstrap, the soft metrics' noise, the --ceilings "
            "subsample and --sanity's random weights."
        ),
    ] = 0,
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
    soft: Annotated[
        bool,
        typer.Option(
            "--soft/--no-soft",
            help="Soft comprehensiveness and sufficiency (Zhao & Aletras 2023: word embeddings "
            "dropped in proportion to importance; 2 passes per text).",
        ),
    ] = True,
    ceilings: Annotated[
        int,
        typer.Option(
            help="Search the ceilings of comp./suff. AOPC by beam search on a seeded sample "
            "of N texts, and add every method's normalised AOPC and fraction of the ceiling "
            "(costly: up to about 2 x beam x units^2 passes per text; 0: off).",
        ),
    ] = 0,
    beam: Annotated[int, typer.Option(help="Beam width of --ceilings.")] = 4,
    calibration: Annotated[
        Path | None,
        typer.Option(
            help="Unlabelled texts for layer=auto (default: the first 64 benchmark texts)."
        ),
    ] = None,
    sanity: Annotated[
        bool,
        typer.Option(
            "--sanity/--no-sanity",
            help="Randomisation sanity check: explain the texts again on copies of the model "
            "re-initialised from the top (head, then block by block, then everything) and "
            "report each method's Spearman with its own explanation of the trained model "
            "(sanity.json).",
        ),
    ] = False,
    seeds: Annotated[
        int,
        typer.Option(
            "--seeds",
            help="Run every method that takes a seed with N seeds and report its agreement "
            "with itself (seed_agreement.json; 0: off).",
        ),
    ] = 0,
    eval_model: Annotated[
        str | None,
        typer.Option(
            "--eval-model",
            help="Score the explanations with this model's predictions instead of the explained "
            "model's: an in-distribution copy fine-tuned with masking "
            "(scripts/masked_finetune.py), sharing its tokenizer and labels.",
        ),
    ] = None,
    device: DeviceOpt = "cpu",
    bf16: Bf16Opt = False,
    allow_pickle: PickleOpt = False,
) -> None:
    """Faithfulness benchmark of every method on a labelled dataset (tables and plots). A
    token classifier's metrics are per entity it predicts; with --labels, a natural-language-
    inference model is benchmarked as a zero-shot classifier (each text's top label; its
    accuracy against the gold labels when they are among --labels). The tables end with the
    metrics' agreement (Kendall tau between the rankings of the methods each gives); --sanity
    adds the randomisation sanity check, --seeds N each sampling method's agreement with
    itself across N seeds."""
    with _user_errors():
        from ..datasets import read_labelled
        from ..errors import InputError
        from ..outputs import writable_folder

        if batch_size < 1:
            raise InputError(f"`batch_size` must be at least 1, not {batch_size}")
        if seeds == 1 or seeds < 0:
            raise InputError(f"--seeds takes 0 (off) or at least 2 seeds, not {seeds}")
        if ceilings < 0 or beam < 1:
            raise InputError(
                f"--ceilings is a number of texts (0: off) and --beam at least 1; got "
                f"{ceilings} and {beam}"
            )
        dataset = read_labelled(data)  # the data and the output first, the heavy imports after
        dataset = dataset.sample(sample, seed) if sample else dataset.head(limit)
        writable_folder(out)
        from ..benchmark import expand_specs, run_benchmark
        from ..report.bench import full_markdown, write

        lm = load_model(model, lm_head, allow_pickle, device, bf16, zero_shot)
        check_items(lm, dataset.texts)
        judge = None
        if eval_model is not None:
            from ..evaluate import eval_predictor

            judge = load_model(eval_model, None, allow_pickle, device, bf16, zero_shot)
            eval_predictor(lm, judge)  # refused here, before any method runs
        rows = _explained_rows(lm, dataset, batch_size)
        names = [m.replace(";", ",") for m in _split_methods(methods)]
        specs = expand_specs(names, lm.num_layers)
        metric_options = {
            "level": level,
            "perturbation": perturbation,
            "rank_by": rank_by,
            "loo": loo,
            "soft": soft,
            "seed": seed,
        }
        from ..report.progress import progress_lines

        count = len(dataset) if rows is None else len(rows)
        texts = _calibration_texts(calibration)
        total = len(specs) * count + min(ceilings, count)
        with progress_lines(err, total, "benchmark") as advance:
            result = run_benchmark(
                lm,
                dataset,
                specs,
                batch_size=batch_size,
                metric_options=metric_options,
                calibration=texts,
                on_progress=advance,
                ceilings=ceilings,
                beam=beam,
                seed=seed,
                eval_model=judge,
            )
        if lm.task.hypotheses and rows is not None:
            result.accuracy = _zero_shot_accuracy(rows, dataset.labels, lm.labels)
        checked = None
        if sanity:
            from ..randomise import cascade
            from ..sanity import run_sanity

            stages = cascade(lm.model)
            total = len(specs) * count * (1 + len(stages))
            with progress_lines(err, total, "sanity check") as advance:
                checked = run_sanity(
                    lm,
                    dataset,
                    specs,
                    batch_size=batch_size,
                    seed=seed,
                    stages=stages,
                    calibration=texts,
                    on_progress=advance,
                )
        agreement = None
        if seeds:
            from ..agreement import run_seed_agreement, seeded_specs

            total = len(seeded_specs(specs)) * count * seeds
            with progress_lines(err, total, "seed agreement") as advance:
                agreement = run_seed_agreement(
                    lm,
                    dataset,
                    specs,
                    n_seeds=seeds,
                    batch_size=batch_size,
                    calibration=texts,
                    on_progress=advance,
                )
        paths = write(result, out, sanity=checked, seeds=agreement)
        # the markdown tables as they are: never folded, whatever the terminal's width
        Console(highlight=False).print(
            full_markdown(result, sanity=checked, seeds=agreement), markup=False, soft_wrap=True
        )
        err.print("wrote " + ", ".join(str(p) for p in paths))


def _calibration_texts(path: Path | None) -> list[str] | None:
    """The first 64 texts of ``--calibration``, read as the benchmark data is."""
    from ..datasets import read_labelled

    if path is None:
        return None
    return read_labelled(path).texts[:64]


def _explained_rows(lm: Any, dataset: Any, batch_size: int) -> list[Any] | None:
    """The rows the benchmark explains, where they are not its texts: a token classifier's
    entities, a zero-shot classifier's top label of each text (``None`` otherwise). Said
    before any method runs when there is none to explain."""
    if not (lm.task.focused or lm.task.hypotheses):
        return None
    from ..benchmark import bench_rows
    from ..errors import InputError
    from ..job import Explainer

    rows = bench_rows(Explainer(lm, "gradient", batch_size=batch_size), dataset.texts)
    if not rows:
        raise InputError(
            f"the model finds no entity in the {len(dataset)} texts of {dataset.source}: "
            "nothing to benchmark"
        )
    return rows


def _zero_shot_accuracy(rows: list[Any], gold: list[str | None], labels: list[str]) -> float | None:
    """The share of texts whose top zero-shot label is the gold one (names, any case, or
    indices of the candidate labels); ``None``, said on stderr, when a text has no gold label
    or one that is no candidate."""
    from ..datasets import label_indices
    from ..errors import InputError

    try:
        wanted = label_indices(gold, labels)
    except InputError as exc:
        err.print(f"no zero-shot accuracy: {exc}", soft_wrap=True, markup=False)
        return None
    if wanted is None:
        return None
    top = []
    for row in rows:
        scores = row.shown.probabilities
        top.append(labels.index(max(scores, key=scores.get)))
    return sum(t == g for t, g in zip(top, wanted)) / len(wanted)
