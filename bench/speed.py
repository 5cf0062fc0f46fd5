"""Speed and memory benchmark (not a test: prints tables, asserts nothing about time).

    .venv/bin/python bench/speed.py                       # everything, CPU
    .venv/bin/python bench/speed.py --limit 32 --skip-long --skip-engines
    .venv/bin/python bench/speed.py --device cuda         # on a GPU machine

1. **Methods**: on the same SST-2 sentences (``sst2/test.tsv``) at batch sizes 1 and 32,
   texts/s and peak memory of a bare forward pass, a plain gradient (``method="gradient"``),
   DLS with its default options at a fixed layer without the per-layer report (what a dataset
   run does once ``layer="auto"`` has picked the layer), ``dls-default`` (``layersal explain``
   now: the configuration from the model card, no per-layer report), ``lrp``, the paper's
   variant (Grad-CAM,
   ``tau=50``: a full vocabulary projection), DLS as ``layersal explain`` ran it before the
   propagation rules
   (``layer="coherent"`` and the per-layer report: every layer projected), integrated
   gradients (50 steps), LIME (25 samples) and ``shapley_control_variate`` at each
   ``--budgets`` N (timed against the default plus N forward passes), for the bundled
   default model and for a random
   6-layer, 384-wide BERT: ``sst2-minilm`` from a checkout's ``models/``, else a random one
   (with a random masked-LM head). Cost ratios are seconds per text of
   one over the other (``DLS/forward = 3`` means DLS costs three forward passes' time).
   Peak memory: the process's RSS high-water mark during the cell (reset before it through
   ``/proc/self/clear_refs``), or the CUDA allocator's peak on a GPU.
2. **Long run** (run first): ``explain_dataset`` over ``--long`` texts of ``sst2/train.tsv``
   with RSS
   sampled after every ``--every`` texts, and the process's peak RSS.
3. **Engines**: the local and the Ray engine (if installed) over ``--engine-texts`` rows of
   ``sst2/train.tsv``: texts/s and whether both wrote the same rows.

``--device`` and ``--bf16`` (``precision="bf16"``) are passed to :func:`layersal.load`.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import layersal
from layersal.checkpoints import BUNDLED_DIR
from layersal.datasets import read_labelled
from layersal.encoding import encode, model_input_names
from layersal.passes import forward

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sst2"
FIXED_LAYER = 1

METHODS: list[tuple[str, str, dict[str, Any]]] = [
    ("forward", "forward", {}),
    ("gradient", "gradient", {}),
    ("dls", "dls", {"layer": FIXED_LAYER, "layer_report": False}),
    (
        "dls-paper",
        "dls",
        {"layer": FIXED_LAYER, "layer_report": False, "saliency": "gradcam", "tau": 50},
    ),
    ("dls-default", "dls", {}),
    ("lrp", "lrp", {}),
    ("dls-full", "dls", {"layer": "coherent", "layer_report": True}),
    ("ig-50", "integrated_gradients", {"n_steps": 50}),
    ("lime-25", "lime", {"n_samples": 25}),
]
BUDGETED = "shapley_control_variate"
RATIOS = [
    ("DLS/forward", "dls", "forward"),
    ("DLS/gradient", "dls", "gradient"),
    ("default/gradient", "dls-default", "gradient"),
    ("LRP/gradient", "lrp", "gradient"),
    ("DLS-paper/gradient", "dls-paper", "gradient"),
    ("DLS-full/gradient", "dls-full", "gradient"),
    ("IG/DLS", "ig-50", "dls"),
    ("LIME/DLS", "lime-25", "dls"),
]


def read_sentences(path: Path, limit: int | None) -> list[str]:
    return read_labelled(path).head(limit).texts


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak(device: str) -> None:
    """Start a new peak-memory window (RSS high-water mark, or the CUDA allocator's peak)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def window_peak_mib(device: str) -> float:
    """Peak memory since :func:`reset_peak`, MiB."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return peak_rss_mib()


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device here")
    return name


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def random_bert(root: Path) -> tuple[Path, Path]:
    """A random 6-layer, 384-wide BERT classifier and a random masked-LM checkpoint for its head."""
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=6,
        intermediate_size=1536,
        max_position_embeddings=512,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    mlm = BertForMaskedLM(config)
    classifier = BertForSequenceClassification(config)
    classifier.bert.load_state_dict(mlm.bert.state_dict(), strict=False)
    mlm_dir, clf_dir = root / "bert6-mlm", root / "bert6-classifier"
    mlm.save_pretrained(mlm_dir)
    classifier.save_pretrained(clf_dir)
    for folder in (mlm_dir, clf_dir):
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(BUNDLED_DIR / "sst2-tiny" / name, folder / name)
    return clf_dir, mlm_dir


def forward_only(lm: Any, texts: list[str], batch_size: int) -> None:
    """Predictions only: tokenise (length-sorted batches, as explain does) and one forward."""
    inputs = model_input_names(lm.model)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        batch = [texts[i] for i in order[start : start + batch_size]]
        forward(lm.model, encode(lm.tokenizer, batch, lm.max_length, inputs))


def timed(fn: Callable[[], Any], device: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def bench_methods(
    lm: Any, texts: list[str], batch_sizes: list[int], device: str, repeats: int
) -> tuple[dict[tuple[str, int], float], dict[tuple[str, int], float]]:
    """texts/s and peak memory (MiB) per (method label, batch size).

    Every method is run once untimed first (one-time costs: lazy imports, allocations), then
    the methods are timed in ``repeats`` interleaved rounds and each keeps its best round, so
    that load from other jobs on the machine falls on all of them alike.
    """
    speeds: dict[tuple[str, int], float] = {}
    peaks: dict[tuple[str, int], float] = {}
    for batch_size in batch_sizes:
        runs: dict[str, Callable[[], Any]] = {}
        for label, method, options in METHODS:
            if method == "forward":
                runs[label] = lambda b=batch_size: forward_only(lm, texts, b)
                forward_only(lm, texts[:batch_size], batch_size)
            else:
                runs[label] = lambda b=batch_size, m=method, o=options: layersal.explain(
                    texts, lm, method=m, batch_size=b, options=o
                )
                layersal.explain(
                    texts[:batch_size], lm, method=method, batch_size=batch_size, options=options
                )
        best: dict[str, float] = {}
        for round_ in range(max(1, repeats)):
            for label, run in runs.items():
                gc.collect()
                if round_ == 0:
                    reset_peak(device)
                seconds = timed(run, device, 1)
                if round_ == 0:
                    peaks[(label, batch_size)] = window_peak_mib(device)
                best[label] = min(best.get(label, float("inf")), seconds)
        for label, _, _ in METHODS:
            speeds[(label, batch_size)] = len(texts) / best[label]
            print(
                f"  {lm.name[-40:]:<40} bs={batch_size:<3} {label:<11} "
                f"{speeds[(label, batch_size)]:9.1f} texts/s "
                f"peak {peaks[(label, batch_size)]:.0f} MiB",
                flush=True,
            )
    return speeds, peaks


def print_speed_table(
    title: str,
    measured: tuple[dict[tuple[str, int], float], dict[tuple[str, int], float]],
    batch_sizes: list[int],
) -> None:
    speeds, peaks = measured
    print(f"\n### {title}\n")
    head = "| method | " + " | ".join(f"texts/s bs={b}" for b in batch_sizes)
    head += " | " + " | ".join(f"peak MiB bs={b}" for b in batch_sizes) + " |"
    print(head)
    print("|" + "---|" * (2 * len(batch_sizes) + 1))
    for label, _, _ in METHODS:
        cells = [f"{speeds[(label, b)]:.1f}" for b in batch_sizes] + [
            f"{peaks[(label, b)]:.0f}" for b in batch_sizes
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(
        "\n| cost ratio (s/text over s/text) | " + " | ".join(f"bs={b}" for b in batch_sizes) + " |"
    )
    print("|" + "---|" * (len(batch_sizes) + 1))
    for name, a, b in RATIOS:
        print(
            f"| {name} | "
            + " | ".join(f"{speeds[(b, s)] / speeds[(a, s)]:.2f}" for s in batch_sizes)
            + " |"
        )
    budgets = [(label, options["budget"]) for label, method, options in METHODS if
               method == BUDGETED]  # fmt: skip
    if budgets:
        print(
            "\n| budgeted s/text over (default + N forward passes) s/text | "
            + " | ".join(f"bs={b}" for b in batch_sizes)
            + " |"
        )
        print("|" + "---|" * (len(batch_sizes) + 1))
        for label, n in budgets:
            cells = []
            for size in batch_sizes:
                expected = 1 / speeds[("dls-default", size)] + n / speeds[("forward", size)]
                cells.append(f"{(1 / speeds[(label, size)]) / expected:.2f}")
            print(f"| {label} (N = {n}) | " + " | ".join(cells) + " |")


def long_run(model: Any, n: int, every: int, batch_size: int, device: str, work: Path) -> None:
    from layersal.engines import explain_dataset

    texts = read_sentences(DATA / "train.tsv", n)
    source = work / "long.txt"
    source.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    samples: list[tuple[int, float]] = [(0, rss_mib())]

    def sample(info: dict[str, Any]) -> None:
        samples.append((info["explained"], rss_mib()))

    summary = explain_dataset(
        source,
        work / "long.parquet",
        model=model,
        device=device,
        batch_size=batch_size,
        shard_rows=every,
        overwrite=True,
        on_shard=sample,
    )
    print(
        f"\n### RSS over explain_dataset on {len(texts)} texts of sst2/train.tsv "
        f"(default DLS settings, batch {batch_size}, sampled every {every} texts)\n"
    )
    print(f"{summary.rows} rows, {summary.errors} errors, {summary.texts_per_second:.1f} texts/s\n")
    print("| texts done | RSS MiB |")
    print("|---|---|")
    step = max(1, len(samples) // 20)
    for done, rss in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        print(f"| {done} | {rss:.0f} |")
    quarter = max(1, len(samples) // 4)
    first = max(r for _, r in samples[1 : quarter + 1])
    last = max(r for _, r in samples[-quarter:])
    print(
        f"\nmax RSS first quarter {first:.0f} MiB, last quarter {last:.0f} MiB (growth "
        f"{last - first:+.0f} MiB); "
        f"peak RSS of this process {peak_rss_mib():.0f} MiB"
    )


def engines(model: str, n: int, workers: int, batch_size: int, device: str, work: Path) -> None:
    import pyarrow.parquet as pq

    from layersal.engines import explain_dataset

    texts = read_sentences(DATA / "train.tsv", n)
    source = work / "engines.txt"
    source.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    common = {"model": model, "device": device, "batch_size": batch_size, "overwrite": True}
    results = {}
    local = explain_dataset(source, work / "local.parquet", engine="local", **common)
    results["local (1 process)"] = local
    try:
        import ray
    except ImportError:
        ray = None
        print("\nray is not installed: Ray engine not measured (pip install 'layersal[ray]')")
    if ray is not None:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
        try:
            started = time.perf_counter()
            remote = explain_dataset(
                source, work / "ray.parquet", engine="ray", num_workers=workers, **common
            )
            results[f"ray ({workers} workers)"] = remote
            print(f"(ray run incl. actor start-up: {time.perf_counter() - started:.1f} s)")
        finally:
            ray.shutdown()
    print(
        f"\n### Engines over the first {len(texts)} texts of sst2/train.tsv ({os.cpu_count()} "
        "CPUs here)\n"
    )
    print("| engine | rows | seconds | texts/s |")
    print("|---|---|---|---|")
    for name, summary in results.items():
        print(
            f"| {name} | {summary.rows} | {summary.seconds:.1f} | {summary.texts_per_second:.1f} |"
        )
    if len(results) == 2:
        a = pq.read_table(work / "local.parquet").to_pylist()
        b = pq.read_table(work / "ray.parquet").to_pylist()
        same_ids = [r["id"] for r in a] == [r["id"] for r in b]
        diff = max(
            (
                abs(x - y)
                for r, s in zip(a, b)
                for x, y in zip(r["token_scores"], s["token_scores"])
            ),
            default=0.0,
        )
        print(
            f"\nsame ids in the same order: {same_ids}; largest token-score difference: {diff:.2e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--limit", type=int, default=64, help="SST-2 test sentences per measurement"
    )
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved timing rounds (best kept per cell)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast for the model passes"
    )
    parser.add_argument("--skip-methods", action="store_true")
    parser.add_argument(
        "--skip-big", action="store_true", help="skip the 6-layer, 384-wide random BERT"
    )
    parser.add_argument(
        "--skip-slow",
        action="store_true",
        help="skip the multi-pass methods (ig-50, lime-25, dls-full)",
    )
    parser.add_argument(
        "--long", type=int, default=10_000, help="texts of the long explain_dataset run (0: skip)"
    )
    parser.add_argument(
        "--every", type=int, default=500, help="RSS sample (and shard) every N texts"
    )
    parser.add_argument("--long-batch-size", type=int, default=32)
    parser.add_argument(
        "--engine-texts", type=int, default=2000, help="texts for local vs Ray (0: skip)"
    )
    parser.add_argument("--workers", type=int, default=2, help="Ray workers")
    parser.add_argument(
        "--budgets",
        default="8,32,64",
        help="budgets N of shapley_control_variate to time against the default plus N "
        "forward passes ('' : none)",
    )
    args = parser.parse_args()
    if not (DATA / "test.tsv").is_file():
        sys.exit(f"{DATA} not found: this benchmark needs the shared SST-2 data")
    device = pick_device(args.device)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    print(
        f"device: {device}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs"
    )
    precision = "bf16" if args.bf16 else "fp32"
    print(f"precision: {precision}")
    work = Path(tempfile.mkdtemp(prefix="layersal-bench-"))
    try:
        if args.long:  # first, so the peak RSS it reports is the dataset run's own
            long_run("sst2-tiny", args.long, args.every, args.long_batch_size, device, work)
        if args.engine_texts:
            engines(
                "sst2-tiny", args.engine_texts, args.workers, args.long_batch_size, device, work
            )
        if not args.skip_methods:
            texts = read_sentences(DATA / "test.tsv", args.limit)
            print(
                f"{len(texts)} SST-2 test sentences, mean "
                f"{sum(len(t.split()) for t in texts) / len(texts):.1f} words"
            )
            models = [
                (
                    "sst2-tiny (bundled default)",
                    lambda: layersal.load("sst2-tiny", device=device, precision=precision),
                )
            ]
            if not args.skip_big and "sst2-minilm" in layersal.bundled_models():
                models.append(
                    (
                        "sst2-minilm, 6 layers x 384",
                        lambda: layersal.load("sst2-minilm", device=device, precision=precision),
                    )
                )
            elif not args.skip_big:
                clf, mlm = random_bert(work)
                models.append(
                    (
                        "random BERT, 6 layers x 384",
                        lambda: layersal.load(clf, lm_head=mlm, device=device, precision=precision),
                    )
                )
            for n in [int(b) for b in args.budgets.split(",") if b.strip()]:
                METHODS.append((f"budget-{n}", BUDGETED, {"budget": n}))
            if args.skip_slow:
                METHODS[:] = [m for m in METHODS if m[0] not in ("ig-50", "lime-25", "dls-full")]
                RATIOS[:] = [
                    r for r in RATIOS if not ({r[1], r[2]} & {"ig-50", "lime-25", "dls-full"})
                ]
            tables = []
            for title, loader in models:
                lm = loader()
                tables.append((title, bench_methods(lm, texts, batch_sizes, device, args.repeats)))
                del lm
                gc.collect()
            for title, speeds in tables:
                print_speed_table(f"{title}, {len(texts)} texts, {device}", speeds, batch_sizes)
            print(f"\npeak RSS so far: {peak_rss_mib():.0f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
