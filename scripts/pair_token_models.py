"""Benchmark models for token classification and text pairs, fine-tuned from sst2-minilm.

- ``agnews-minilm-ner``: a token classifier (``BertForTokenClassification``) with BIO tags for
  PER, ORG, LOC and MISC, trained on the silver entity spans of ``agnews-ner/`` (predictions of
  spaCy's ``en_core_web_sm``, not human annotations). Every sub-word piece is tagged: B-X for
  the first token whose characters overlap an entity of type X, I-X for its later tokens, O
  otherwise; special tokens are ignored (-100). Tested on ``agnews-ner/test.jsonl`` with
  entity-level precision, recall and F1: entities are decoded from the predicted tags as
  transformers' token-classification pipeline does with ``aggregation_strategy="simple"``, each
  becomes a character span (first token's start, last token's end) and is matched exactly
  (start, end, type) against the silver spans. That is agreement with spaCy's small pipeline,
  not NER accuracy.
- ``esnli-minilm-nli``: a cross-encoder (``BertForSequenceClassification`` reading a BERT pair,
  segment ids 0 and 1) that labels (premise, hypothesis) as entailment, neutral or
  contradiction. Trained on e-SNLI's copy of the SNLI dev pairs (about 8.8k, not SNLI's 550k
  training pairs), tested on its copy of the SNLI test pairs: accuracy, overall and per class.

Both start from the bundled ``sst2-minilm`` (its encoder, its frozen word embeddings and its
stored masked-LM head, copied unchanged) with a fresh, seeded head. Data: ``../shared/data``
(its README). 1,000 seeded rows of the training file are held out; selection keeps the best of
the evaluations on them every ``eval_every`` steps and at each epoch end. Batches hold texts of
similar length (seeded). The test split is read once, after training, from the fp16 bundle
reloaded. A full run checkpoints to ``build/pair_token/NAME/`` at each evaluation and resumes
from there when started again with the same recipe.

Usage::

    OMP_NUM_THREADS=2 nice -n 5 python scripts/pair_token_models.py [--only NAME] [--data DIR]
        [--out models] [--seed 0] [--max-steps N] [--limit N]

``--max-steps`` (optimiser steps) and ``--limit`` (rows of each split) make a quick smoke run
of the whole pipeline (write it to another ``--out``): it never checkpoints, and its card says
it was cut short. Progress goes to stdout and ``build/build_models.log``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import (
    AutoTokenizer,
    BertForSequenceClassification,
    BertForTokenClassification,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)

from build_models import (
    BUILD_DIR,
    REPO,
    bundle_size,
    check_mlm_head,
    read_tsv,
    relative,
    save_bundle,
    set_seed,
    setup_logging,
    write_model_card,
)
from minilm import Checkpoint, adamw, length_batches, optimise

log = logging.getLogger("build_models")

BASE = "sst2-minilm"
HOLDOUT = 1000
ENTITY_TYPES = ("PER", "ORG", "LOC", "MISC")
NER_LABELS = ("O",) + tuple(f"{bio}-{kind}" for kind in ENTITY_TYPES for bio in "BI")
NLI_LABELS = ("entailment", "neutral", "contradiction")
IGNORED = -100
SILVER = (
    "spaCy en_core_web_sm 3.0.0 (run with spaCy 3.8), OntoNotes types mapped to CoNLL-style "
    "PER / ORG / LOC / MISC; see the data README"
)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one model is trained."""

    epochs: int
    lr: float
    max_length: int = 128
    batch_size: int = 32
    warmup_ratio: float = 0.06
    eval_every: int = 100


@dataclasses.dataclass
class Encoded:
    """Tokenised rows of one split: token ids, segment ids, and the targets (a label id per
    row, or a tag id per token with -100 on special tokens); ``offsets`` and ``gold`` (the
    silver spans per text) only for token classification."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    targets: list[Any]
    offsets: list[list[tuple[int, int]]] = dataclasses.field(default_factory=list)
    gold: list[list[tuple[int, int, str]]] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclasses.dataclass
class Prepared:
    """A target's splits, tokenised, with what the card says about where they came from."""

    train: Encoded
    select: Encoded
    test: Encoded
    files: dict
    notes: dict = dataclasses.field(default_factory=dict)
    """Per split, what the encoding lost (silver entities cut off by truncation, ...)."""


@dataclasses.dataclass(frozen=True)
class PairTokenTarget:
    """One bundle: its head, data, recipe and metrics."""

    name: str
    task: str
    labels: tuple[str, ...]
    model_class: type
    problem_type: str | None
    """``problem_type`` written to the config (``None``: left out, token classification)."""
    pairs: bool
    prepare: Callable[[Path, int, PreTrainedTokenizerBase, int, int | None], Prepared]
    metrics: Callable[[list[Any], Encoded], dict]
    selection_metric: str
    recipe: Recipe


# ----------------------------------------------------------------------------- shared


def holdout(count: int, seed: int) -> tuple[list[int], list[int]]:
    """Rows kept for training and the seeded 1,000 held out for selection, each in file order."""
    order = np.random.default_rng(seed).permutation(count)
    return sorted(order[HOLDOUT:].tolist()), sorted(order[:HOLDOUT].tolist())


def collate(data: Encoded, rows: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Model inputs for ``rows``, padded to their longest, with ``labels`` (token targets
    padded with -100)."""
    width = max(len(data.input_ids[i]) for i in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    per_token = isinstance(data.targets[rows[0]], list)
    labels = torch.full((len(rows), width), IGNORED) if per_token else torch.zeros(len(rows))
    labels = labels.long()
    for row, i in enumerate(rows):
        n = len(data.input_ids[i])
        input_ids[row, :n] = torch.tensor(data.input_ids[i])
        token_type_ids[row, :n] = torch.tensor(data.token_type_ids[i])
        mask[row, :n] = 1
        if per_token:
            labels[row, :n] = torch.tensor(data.targets[i])
        else:
            labels[row] = data.targets[i]
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": mask,
        "labels": labels,
    }


@torch.no_grad()
def predict(model: torch.nn.Module, data: Encoded, pad_id: int) -> list[Any]:
    """Argmax label per row (a list per row, one per token, for a token classifier)."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data.input_ids[i]))
    result: list[Any] = [None] * len(data)
    for start in range(0, len(order), 128):
        rows = order[start : start + 128]
        batch = collate(data, rows, pad_id)
        batch.pop("labels")
        predicted = model(**batch).logits.argmax(-1).tolist()
        for row, i in enumerate(rows):
            value = predicted[row]
            result[i] = value[: len(data.input_ids[i])] if isinstance(value, list) else value
    model.train(was_training)
    return result


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 4) if denominator else 0.0


# ----------------------------------------------------------------------------- NER


def read_ner(path: Path) -> list[dict]:
    """``{"text", "entities": [[start, end, type], ...]}`` per line."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def bio_tags(
    offsets: list[tuple[int, int]], special: list[bool], entities: list[list]
) -> tuple[list[int], Counter]:
    """Tag ids per token for the silver ``entities`` (character spans), and what was lost.

    A token gets B-X when it is the first token whose characters overlap entity X, I-X when it
    is a later one, O when it overlaps none; special tokens get -100. A token two entities
    overlap keeps the first entity's tag. Counted: entities with no token left after truncation
    (``lost_to_truncation``), with no token for another reason (``no_token``), cut short by
    truncation, sharing a token with another entity, and whose span does not begin and end on
    token boundaries (those cannot be matched exactly by decoded token spans).
    """
    index = {name: i for i, name in enumerate(NER_LABELS)}
    tags = [IGNORED if s else index["O"] for s in special]
    kept_end = max((end for (_, end), s in zip(offsets, special) if not s), default=0)
    lost: Counter = Counter()
    for start, end, kind in entities:
        lost["entities"] += 1
        hits = [
            i
            for i, ((a, b), s) in enumerate(zip(offsets, special))
            if not s and a < end and b > start
        ]
        if not hits:
            lost["lost_to_truncation" if start >= kept_end else "no_token"] += 1
            continue
        free = [i for i in hits if tags[i] == index["O"]]
        if len(free) < len(hits):
            lost["sharing_a_token"] += 1
        if not free:
            lost["no_token"] += 1
            continue
        tags[free[0]] = index[f"B-{kind}"]
        for i in free[1:]:
            tags[i] = index[f"I-{kind}"]
        if end > kept_end:
            lost["cut_by_truncation"] += 1
        if offsets[hits[0]][0] != start or offsets[hits[-1]][1] != end:
            lost["not_on_token_boundaries"] += 1
    return tags, lost


def encode_ner(
    tokenizer: PreTrainedTokenizerBase, records: list[dict], max_length: int
) -> tuple[Encoded, dict]:
    """Tokenised texts with their BIO tags and silver spans, and the alignment losses."""
    batch = tokenizer(
        [r["text"] for r in records],
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
    )
    data = Encoded([], [], [])
    lost: Counter = Counter()
    truncated = 0
    for row, record in enumerate(records):
        ids = batch["input_ids"][row]
        offsets = [tuple(o) for o in batch["offset_mapping"][row]]
        special = [s is None for s in batch.sequence_ids(row)]
        tags, row_lost = bio_tags(offsets, special, record["entities"])
        lost += row_lost
        truncated += len(tokenizer(record["text"])["input_ids"]) > max_length
        data.input_ids.append(ids)
        data.token_type_ids.append([0] * len(ids))
        data.targets.append(tags)
        data.offsets.append(offsets)
        data.gold.append([(int(s), int(e), str(t)) for s, e, t in record["entities"]])
    note = {
        "texts": len(records),
        "texts_truncated": truncated,
        "silver_entities": lost["entities"],
        **{
            key: lost[key]
            for key in (
                "lost_to_truncation",
                "no_token",
                "cut_by_truncation",
                "sharing_a_token",
                "not_on_token_boundaries",
            )
        },
    }
    return data, note


def ner_data(
    data_dir: Path, seed: int, tokenizer: PreTrainedTokenizerBase, length: int, limit: int | None
) -> Prepared:
    """agnews-ner: train.jsonl minus a seeded 1,000-text hold-out; test.jsonl to test."""
    train_path = data_dir / "agnews-ner" / "train.jsonl"
    test_path = data_dir / "agnews-ner" / "test.jsonl"
    records = read_ner(train_path)
    test_records = read_ner(test_path)
    kept, held = holdout(len(records), seed)
    splits = {
        "train": [records[i] for i in kept][:limit],
        "select": [records[i] for i in held][:limit],
        "test": test_records[:limit],
    }
    encoded, notes = {}, {}
    for name, rows in splits.items():
        encoded[name], notes[name] = encode_ner(tokenizer, rows, length)
    files = {
        "train": {
            "file": relative(train_path, data_dir),
            "rows": len(records),
            "used_for_training": len(splits["train"]),
            "held_out_for_selection": len(splits["select"]),
            "hold_out": f"random {HOLDOUT} texts, numpy default_rng(seed) permutation",
        },
        "test": {"file": relative(test_path, data_dir), "rows": len(splits["test"])},
        "silver_labels": SILVER,
    }
    return Prepared(encoded["train"], encoded["select"], encoded["test"], files, notes)


def decode_entities(tags: list[str], offsets: list[tuple[int, int]]) -> list[tuple[int, int, str]]:
    """Entities from the tags of a text's tokens (special tokens left out), grouped like the
    token-classification pipeline's ``aggregation_strategy="simple"``: a B- tag or a change of
    type starts an entity, an I- tag of the same type continues it (an I- after O starts one),
    O ends it; each entity spans its first token's start to its last token's end."""
    entities: list[tuple[int, int, str]] = []
    current: list | None = None
    for tag, (start, end) in zip(tags, offsets):
        bio, kind = tag.split("-", 1) if tag != "O" else ("I", "O")
        if current is not None and bio == "I" and kind == current[2]:
            current[1] = end
            continue
        if current is not None and current[2] != "O":
            entities.append(tuple(current))
        current = [start, end, kind]
    if current is not None and current[2] != "O":
        entities.append(tuple(current))
    return entities


def entity_scores(predicted: Counter, silver: Counter, matched: Counter, kind: str | None) -> dict:
    keys = ENTITY_TYPES if kind is None else (kind,)
    p, s, m = (sum(c[k] for k in keys) for c in (predicted, silver, matched))
    precision, recall = ratio(m, p), ratio(m, s)
    f1 = round(2 * m / (p + s), 4) if p + s else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "predicted": p,
        "silver": s,
        "matched": m,
    }


def ner_metrics(predictions: list[list[int]], data: Encoded) -> dict:
    """Entity-level precision, recall and F1 (exact character span and type) against the silver
    spans, overall and per type, and the accuracy of the tags on labelled tokens."""
    predicted, silver, matched = Counter(), Counter(), Counter()
    right = labelled = 0
    for tags, targets, offsets, gold in zip(predictions, data.targets, data.offsets, data.gold):
        kept = [i for i, t in enumerate(targets) if t != IGNORED]
        right += sum(tags[i] == targets[i] for i in kept)
        labelled += len(kept)
        found = set(
            decode_entities([NER_LABELS[tags[i]] for i in kept], [offsets[i] for i in kept])
        )
        truth = set(gold)
        predicted.update(kind for _, _, kind in found)
        silver.update(kind for _, _, kind in truth)
        matched.update(kind for _, _, kind in found & truth)
    overall = entity_scores(predicted, silver, matched, None)
    return {
        **overall,
        "per_type": {
            kind: entity_scores(predicted, silver, matched, kind) for kind in ENTITY_TYPES
        },
        "token_accuracy": ratio(right, labelled),
    }


# ----------------------------------------------------------------------------- NLI


def read_esnli(path: Path) -> tuple[list[tuple[str, str]], list[int]]:
    """(premise, hypothesis) pairs and label ids of an e-SNLI file (header
    ``premise<TAB>hypothesis<TAB>label``)."""
    rows = read_tsv(path)
    if rows[0] != ["premise", "hypothesis", "label"]:
        raise ValueError(f"unexpected header in {path}: {rows[0]}")
    index = {name: i for i, name in enumerate(NLI_LABELS)}
    return [(r[0], r[1]) for r in rows[1:]], [index[r[2]] for r in rows[1:]]


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[str, str]], labels: list[int], length: int
) -> tuple[Encoded, dict]:
    """BERT pairs ([CLS] premise [SEP] hypothesis [SEP], segment ids 0 then 1); the longer text
    cut first when a pair is too long."""
    batch = tokenizer(
        [p for p, _ in pairs], [h for _, h in pairs], truncation=True, max_length=length
    )
    full = tokenizer([p for p, _ in pairs], [h for _, h in pairs])["input_ids"]
    truncated = sum(len(ids) > length for ids in full)
    note = {"pairs": len(pairs), "pairs_truncated": truncated}
    return Encoded(batch["input_ids"], batch["token_type_ids"], list(labels)), note


def nli_data(
    data_dir: Path, seed: int, tokenizer: PreTrainedTokenizerBase, length: int, limit: int | None
) -> Prepared:
    """e-SNLI: dev.tsv minus a seeded 1,000-pair hold-out to train, test.tsv to test."""
    dev_path = data_dir / "esnli" / "dev.tsv"
    test_path = data_dir / "esnli" / "test.tsv"
    pairs, labels = read_esnli(dev_path)
    test_pairs, test_labels = read_esnli(test_path)
    kept, held = holdout(len(pairs), seed)
    splits = {
        "train": ([pairs[i] for i in kept][:limit], [labels[i] for i in kept][:limit]),
        "select": ([pairs[i] for i in held][:limit], [labels[i] for i in held][:limit]),
        "test": (test_pairs[:limit], test_labels[:limit]),
    }
    encoded, notes = {}, {}
    for name, (rows, targets) in splits.items():
        encoded[name], notes[name] = encode_pairs(tokenizer, rows, targets, length)
    files = {
        "train": {
            "file": relative(dev_path, data_dir),
            "rows": len(pairs),
            "used_for_training": len(splits["train"][0]),
            "held_out_for_selection": len(splits["select"][0]),
            "hold_out": f"random {HOLDOUT} pairs, numpy default_rng(seed) permutation",
            "label_counts": {
                name: sum(labels[i] == k for i in kept) for k, name in enumerate(NLI_LABELS)
            },
        },
        "test": {"file": relative(test_path, data_dir), "rows": len(splits["test"][0])},
    }
    return Prepared(encoded["train"], encoded["select"], encoded["test"], files, notes)


def nli_metrics(predictions: list[int], data: Encoded) -> dict:
    """Accuracy, and per class its recall (accuracy on that class's pairs) and precision, and
    the confusion matrix (rows: true label, columns: predicted)."""
    gold = data.targets
    confusion = [[0] * len(NLI_LABELS) for _ in NLI_LABELS]
    for p, g in zip(predictions, gold):
        confusion[g][p] += 1
    per_class = {}
    for k, name in enumerate(NLI_LABELS):
        column = sum(row[k] for row in confusion)
        per_class[name] = {
            "n": sum(confusion[k]),
            "accuracy": ratio(confusion[k][k], sum(confusion[k])),
            "precision": ratio(confusion[k][k], column),
        }
    return {
        "accuracy": ratio(sum(confusion[k][k] for k in range(len(NLI_LABELS))), len(gold)),
        "n": len(gold),
        "per_class": per_class,
        "confusion": {"rows_true_columns_predicted": list(NLI_LABELS), "matrix": confusion},
    }


# ----------------------------------------------------------------------------- targets


TARGETS = {
    "esnli-minilm-nli": PairTokenTarget(
        name="esnli-minilm-nli",
        task="natural-language inference (e-SNLI's copy of SNLI): a cross-encoder reading "
        "(premise, hypothesis) as one BERT pair",
        labels=NLI_LABELS,
        model_class=BertForSequenceClassification,
        problem_type="single_label_classification",
        pairs=True,
        prepare=nli_data,
        metrics=nli_metrics,
        selection_metric="accuracy",
        recipe=Recipe(epochs=2, lr=5e-5),
    ),
    "agnews-minilm-ner": PairTokenTarget(
        name="agnews-minilm-ner",
        task="named-entity tagging (BIO, PER / ORG / LOC / MISC) of AG News texts, trained on "
        "spaCy en_core_web_sm silver spans",
        labels=NER_LABELS,
        model_class=BertForTokenClassification,
        problem_type=None,
        pairs=False,
        prepare=ner_data,
        metrics=ner_metrics,
        selection_metric="f1",
        recipe=Recipe(epochs=1, lr=1e-4),
    ),
}


# ----------------------------------------------------------------------------- model


def start_from(base_dir: Path, target: PairTokenTarget, seed: int) -> torch.nn.Module:
    """The base bundle's encoder with a fresh, seeded head for ``target``; word embeddings
    frozen, so the stored masked-LM head still decodes every layer."""
    torch.manual_seed(seed)
    extra = {"problem_type": target.problem_type} if target.problem_type else {}
    model = target.model_class.from_pretrained(
        base_dir,
        num_labels=len(target.labels),
        id2label=dict(enumerate(target.labels)),
        label2id={name: i for i, name in enumerate(target.labels)},
        ignore_mismatched_sizes=True,
        dtype=torch.float32,
        **extra,
    )
    model.config.architectures = [type(model).__name__]
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    return model


def fit(
    model: torch.nn.Module,
    target: PairTokenTarget,
    data: Prepared,
    pad_id: int,
    seed: int,
    max_steps: int | None,
) -> dict:
    """Fine-tune ``model`` in place and load the weights with the best selection score into it;
    returns what the card says about the run. Checkpoints (unless ``max_steps`` cuts the run
    short) to ``build/pair_token/NAME/``."""
    recipe = target.recipe
    lengths = [len(ids) for ids in data.train.input_ids]
    batches = [
        batch
        for epoch in range(recipe.epochs)
        for batch in length_batches(lengths, recipe.batch_size, seed, epoch)
    ][:max_steps]
    steps_per_epoch = math.ceil(len(lengths) / recipe.batch_size)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = adamw(params, recipe.lr)
    schedule = get_linear_schedule_with_warmup(
        optimizer, int(recipe.warmup_ratio * len(batches)), len(batches)
    )
    stage = BUILD_DIR / "pair_token" / target.name
    stage.mkdir(parents=True, exist_ok=True)
    checkpoint = Checkpoint(stage / "train.pt") if max_steps is None else None
    best_file = stage / ("best.safetensors" if checkpoint else "smoke-best.safetensors")
    step, extra = checkpoint.load(model, optimizer, schedule) if checkpoint else (0, {})
    if extra and extra.get("recipe") != dataclasses.asdict(recipe):
        raise RuntimeError(f"{stage / 'train.pt'} was made with another recipe; delete it")
    best = extra.get("best", [-1.0, 0])
    history = extra.get("history", [])
    started = time.time() - extra.get("elapsed", 0.0)
    losses: list[float] = []
    model.train()
    for index in range(step, len(batches)):
        batch = collate(data.train, batches[index], pad_id)
        losses.append(optimise(model(**batch).loss, params, optimizer, schedule))
        done = index + 1
        if done % recipe.eval_every and done % steps_per_epoch and done != len(batches):
            continue
        scores = target.metrics(predict(model, data.select, pad_id), data.select)
        score = float(scores[target.selection_metric])
        log.info(
            "[%s] step %d/%d loss %.4f selection %s %.4f (%.0f s)",
            target.name,
            done,
            len(batches),
            sum(losses) / max(len(losses), 1),
            target.selection_metric,
            score,
            time.time() - started,
        )
        history.append([done, round(sum(losses) / max(len(losses), 1), 4), round(score, 4)])
        losses.clear()
        if score > best[0]:
            best = [score, done]
            state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(best_file))
        if checkpoint:
            extra = {
                "best": best,
                "history": history,
                "elapsed": time.time() - started,
                "recipe": dataclasses.asdict(recipe),
            }
            checkpoint.save(model, optimizer, schedule, done, extra)
    model.load_state_dict(load_file(str(best_file)))
    return {
        "steps": len(batches),
        "steps_per_epoch": steps_per_epoch,
        "best": best,
        "history": history,
        "training_s": round(time.time() - started, 1),
    }


# ----------------------------------------------------------------------------- driver


def build(
    target: PairTokenTarget,
    base_dir: Path,
    data_dir: Path,
    out_root: Path,
    seed: int,
    max_steps: int | None = None,
    limit: int | None = None,
) -> dict:
    """Train, save, reload (fp16 round trip) and test one bundle; return its model card."""
    set_seed(seed)
    started = time.time()
    recipe = target.recipe
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    pad_id = tokenizer.pad_token_id
    data = target.prepare(data_dir, seed, tokenizer, recipe.max_length, limit)
    log.info(
        "[%s] %d training / %d selection / %d test rows; encoding: %s",
        target.name,
        len(data.train),
        len(data.select),
        len(data.test),
        json.dumps(data.notes),
    )
    model = start_from(base_dir, target, seed)
    run = fit(model, target, data, pad_id, seed, max_steps)
    best_score, best_step = run["best"]
    log.info(
        "[%s] best selection %s %.4f at step %d",
        target.name,
        target.selection_metric,
        best_score,
        best_step,
    )
    out_dir = out_root / target.name
    save_bundle(model, base_dir, out_dir)
    wall_time = time.time() - started
    check_mlm_head(out_dir, base_dir)
    tested = time.time()
    reloaded = target.model_class.from_pretrained(out_dir, dtype=torch.float32)
    test = target.metrics(predict(reloaded, data.test, pad_id), data.test)
    test_time = time.time() - tested
    log.info("[%s] test (%.0f s): %s", target.name, test_time, json.dumps(test))
    evaluation: dict[str, Any] = {"test_file": data.files["test"]["file"], **test}
    if target.name == "agnews-minilm-ner":
        evaluation = {
            **evaluation,
            "encoding": data.notes["test"],
            "matching": "entities decoded from the predicted tags of every non-special token "
            "like transformers' token-classification pipeline with "
            'aggregation_strategy="simple" (a B- tag or a change of type starts an entity, an '
            "I- tag of the same type continues it, an I- after O starts one); each entity's "
            "span runs from its first token's start to its last token's end and counts when "
            "(start, end, type) equals a silver span; silver entities past the 128-token cut "
            "stay in the denominator",
            "what_it_measures": "agreement with the silver labels of spaCy en_core_web_sm "
            "(a small statistical pipeline), not NER accuracy against human annotations",
        }
    else:
        evaluation["caveat"] = (
            f"trained on {len(data.train):,} pairs (e-SNLI's copy of the SNLI dev split minus "
            "the hold-out), not SNLI's 550k training pairs: weaker than published SNLI models "
            "(about 90% test accuracy)"
        )
    evaluation["measured_on"] = "the bundle reloaded from its fp16 files (dtype float32)"
    evaluation["wall_time_s"] = round(test_time, 1)
    base_card = json.loads((base_dir / "model_card.json").read_text())
    history = ", ".join(f"{s}: {v}" for s, _, v in run["history"])
    card = {
        "name": target.name,
        "task": target.task,
        "architecture": type(model).__name__,
        "problem_type": target.problem_type or "token_classification",
        "labels": list(target.labels),
        "base": {"bundle": f"models/{BASE}", "its_base": base_card.get("base")},
        "mlm_head": f"the masked-LM head of models/{BASE}, copied unchanged (word embeddings "
        "frozen while fine-tuning, so its tied decoder still decodes every layer)",
        "training": {
            "data": data.files,
            "encoding": {"train": data.notes["train"], "selection": data.notes["select"]},
            "selection": f"best {target.selection_metric} on the held-out rows "
            f"({best_score:.4f}) at step {best_step} of {run['steps']}, evaluated every "
            f"{recipe.eval_every} steps and at each epoch end ({history})",
            "labels": "a tag per sub-word piece (B- on the first token overlapping a silver "
            "span, I- on its later tokens, O elsewhere), -100 on [CLS]/[SEP]"
            if target.pairs is False
            else "one label per pair",
            **dataclasses.asdict(recipe),
            "steps": run["steps"],
            "loss": "cross-entropy" + (" per token" if target.pairs is False else ""),
            "optimizer": "AdamW, weight decay 0.01 (none on biases/LayerNorm), grad-norm clip "
            "1.0; linear warmup then linear decay to 0",
            "batching": "seeded shuffle, sorted by length inside windows of 50 batches",
            "seed": seed,
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
            "safetensors_version": safetensors.__version__,
            "wall_time_s": round(wall_time, 1),
            "machine": "2-core CPU, shared (nice 5, 2 torch threads)",
        },
        "evaluation": evaluation,
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "script": "scripts/pair_token_models.py",
    }
    if max_steps is not None or limit is not None:
        card["smoke_run"] = f"cut short: --max-steps {max_steps} --limit {limit}; not a result"
    write_model_card(out_dir, card, pairs=target.pairs)
    log.info("[%s] written to %s (%.1f MB)", target.name, out_dir, bundle_size(out_dir) / 1e6)
    return card


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(TARGETS))
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, help="smoke run: stop after this many steps")
    parser.add_argument("--limit", type=int, help="smoke run: use this many rows of each split")
    args = parser.parse_args(argv)
    setup_logging()
    torch.set_num_threads(2)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    base_dir = REPO / "models" / BASE
    for name in [args.only] if args.only else list(TARGETS):
        card = build(
            TARGETS[name],
            base_dir,
            args.data.resolve(),
            args.out.resolve(),
            args.seed,
            args.max_steps,
            args.limit,
        )
        log.info("FINAL %s: %s", name, json.dumps(card["evaluation"]))


if __name__ == "__main__":
    main()
