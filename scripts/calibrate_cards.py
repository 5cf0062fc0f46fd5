"""Ship each bundled model's ``layer="auto"`` calibration in its model card.

    python scripts/calibrate_cards.py [--data ../shared/data] [--only sst2-tiny ...]
        [--texts 512] [--screen 64] [--keep 3]

For every model built by ``scripts/build_models.py`` this runs the label-free calibration of
:mod:`layersal.saliency.layer_choice` (comprehensiveness minus sufficiency AOPC of every rule
set x layer x decoding configuration) on a seeded sample of the model's own *selection* texts
(SST-2:
``sst2/dev.tsv``; AG News: the 1,000 rows of ``agnews/dev.tsv`` held out from training), never
on the test sets the benchmark scores, and writes the table into ``model_card.json`` under
``calibration`` with the SHA-256 of the weights it belongs to. A default ``layersal explain``
then reads the choice from the card and calibrates nothing.

A card is calibrated once, offline, so it uses more texts than the one-minute calibration a
user's own checkpoint gets (64 texts, 8 screened): on 64 texts the configurations of a model
are often within each other's noise (``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import layersal
from build_models import Split, agnews_splits, sst2_splits
from layersal.benchmark import bench_rows
from layersal.checkpoints import CARD_FILE, named_models
from layersal.saliency.auto_configs import choose
from layersal.saliency.auto_race import calibrate
from layersal.saliency.auto_store import card_entry
from layersal.saliency.dls import DLSOptions


def mix_splits(data: Path, seed: int) -> tuple[None, Split, None, None]:
    """The multi-label model's selection inputs (SST-2 dev x the AG News hold-out), as
    ``scripts/task_models.py`` made them for choosing its weights."""
    from task_models import mix_data

    made = mix_data(data, seed, train_rows=1)
    return None, Split(made.select, [0] * len(made.select), "selection mixes"), None, None


def nli_splits(data: Path, seed: int) -> tuple[None, Split, None, None]:
    """The NLI model's selection pairs: the 1,000 of ``esnli/dev.tsv`` held out from training
    by ``scripts/pair_token_models.py``."""
    from pair_token_models import holdout, read_esnli

    pairs, labels = read_esnli(data / "esnli" / "dev.tsv")
    _, held = holdout(len(pairs), seed)
    return None, Split([pairs[i] for i in held], [labels[i] for i in held], "held out"), None, None


def ner_splits(data: Path, seed: int) -> tuple[None, Split, None, None]:
    """The NER model's selection texts: the 1,000 of ``agnews-ner/train.jsonl`` held out from
    training by ``scripts/pair_token_models.py`` (calibrated on their predicted entities)."""
    from pair_token_models import holdout, read_ner

    records = read_ner(data / "agnews-ner" / "train.jsonl")
    _, held = holdout(len(records), seed)
    texts = [records[i]["text"] for i in held]
    return None, Split(texts, [0] * len(texts), "held out"), None, None


SELECTION = {
    "sst2-tiny": ("sst2/dev.tsv (the selection split)", sst2_splits),
    "sst2-minilm": ("sst2/dev.tsv (the selection split)", sst2_splits),
    "agnews-tiny": ("agnews/dev.tsv (the 1,000 rows held out from training)", agnews_splits),
    "agnews-minilm": ("agnews/dev.tsv (the 1,000 rows held out from training)", agnews_splits),
    "sst2-minilm-reward": ("sst2/dev.tsv (the selection split)", sst2_splits),
    "mix-minilm-multilabel": ("the selection mixes of scripts/task_models.py", mix_splits),
    "esnli-minilm-nli": ("esnli/dev.tsv (the 1,000 pairs held out from training)", nli_splits),
    "agnews-minilm-ner": (
        "agnews-ner/train.jsonl (the 1,000 texts held out from training), every entity the "
        "model predicts in them",
        ner_splits,
    ),
}


def calibration_texts(name: str, data: Path, n: int, seed: int) -> tuple[list[str], str]:
    """A seeded sample of ``n`` texts of the model's selection split, and a description."""
    described, splits = SELECTION[name]
    _, select, _, _ = splits(data, seed)
    pick = np.random.default_rng(seed).permutation(len(select.texts))[:n]
    return [select.texts[i] for i in pick], f"{n} texts drawn with seed {seed} from {described}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    parser.add_argument("--only", nargs="*", default=list(SELECTION))
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument(
        "--screen", type=int, default=64, help="texts every configuration is scored on"
    )
    parser.add_argument("--keep", type=int, default=3, help="finalists per rule set")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folders = named_models()
    for name in args.only:
        lm = layersal.load(name)
        texts, described = calibration_texts(name, args.data, args.texts, args.seed)
        if lm.task.focused:  # a token classifier calibrates on its entities' rows
            planner = layersal.explainer(lm, "gradient", batch_size=64)
            texts = [row.item for row in bench_rows(planner, texts)][: args.texts]
            described += f": {len(texts)} entity rows"
        options = DLSOptions()
        started = time.perf_counter()
        table, n_texts = calibrate(
            lm, texts, options, max_texts=args.texts, screen=args.screen, keep=args.keep
        )
        seconds = time.perf_counter() - started
        entry = card_entry(lm, options, table, n_texts, described)
        entry["wall_time_s"] = round(seconds, 1)
        card_path = folders[name] / CARD_FILE
        card = json.loads(card_path.read_text(encoding="utf-8"))
        card["calibration"] = entry
        card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        print(f"{name}: {choose(table, options, n_texts, 'model card').reason} [{seconds:.1f} s]")


if __name__ == "__main__":
    main()
