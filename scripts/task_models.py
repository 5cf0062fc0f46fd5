"""Benchmark models for the regression and multi-label tasks, fine-tuned from sst2-minilm.

- ``sst2-minilm-reward``: a reward-style regression head (one output, ``problem_type
  "regression"``) trained with MSE to score an SST-2 sentence's sentiment: +1 positive, -1
  negative. Evaluated on SST-2's GLUE dev sentences (``sst2/test.tsv``): MSE, Pearson r and
  the accuracy of the score's sign.
- ``mix-minilm-multilabel``: six independent sigmoids (``problem_type
  "multi_label_classification"``) on inputs that join an SST-2 sentence and an AG News text in
  random order; the labels are the sentence's sentiment and the news text's topic. A label's
  evidence is known to lie in the part it came from; ``bench/data/mix-test.jsonl`` keeps each
  test input with the character span of each part, for the benchmark to check.

Both start from the bundled ``sst2-minilm`` (its encoder, its frozen word embeddings and its
stored masked-LM head, copied unchanged), with a fresh seeded head. Data: ``../shared/data``
(its README). Selection picks the best of the evaluations every ``--eval-every`` steps on a
held-out split; the test split is read once, after training, from the fp16 bundle reloaded.

Usage::

    OMP_NUM_THREADS=2 python scripts/task_models.py [--only NAME] [--data DIR] [--out models]
        [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoTokenizer, BertForSequenceClassification

from build_models import (
    AGNEWS_LABELS,
    REPO,
    Split,
    Target,
    agnews_splits,
    bundle_size,
    check_mlm_head,
    collate,
    encode,
    relative,
    save_bundle,
    set_seed,
    setup_logging,
    sst2_splits,
    train,
    write_model_card,
)

log = logging.getLogger("build_models")

SENTIMENT = ("negative", "positive")
BASE = "sst2-minilm"


@dataclasses.dataclass(frozen=True)
class TaskData:
    """What one model trains, selects and is tested on: texts and float targets."""

    train: list[str]
    train_targets: torch.Tensor
    select: list[str]
    select_targets: torch.Tensor
    test: list[str]
    test_targets: torch.Tensor
    files: dict
    test_records: list[dict] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class TaskTarget:
    """One bundle: its head (labels, problem type), data, recipe and metrics."""

    name: str
    task: str
    labels: tuple[str, ...]
    problem_type: str
    data: Callable[[Path, int], TaskData]
    metrics: Callable[[torch.Tensor, torch.Tensor], dict]
    selection_metric: str
    recipe: Target


# ----------------------------------------------------------------------------- data


def _sample(split: Split, count: int, rng: np.random.Generator) -> Split:
    chosen = sorted(rng.permutation(len(split.texts))[:count])
    return Split([split.texts[i] for i in chosen], [split.labels[i] for i in chosen], split.source)


def reward_data(data_dir: Path, seed: int, train_rows: int = 12_000) -> TaskData:
    """SST-2: a seeded sample of train.tsv, 2,000 of dev.tsv to select, test.tsv to test."""
    train_split, select_split, test_split, files = sst2_splits(data_dir, seed)
    rng = np.random.default_rng(seed)
    train_split, select_split = (
        _sample(train_split, train_rows, rng),
        _sample(select_split, 2000, rng),
    )
    files["train"]["used_for_training"] = len(train_split.texts)
    files["selection"]["used_for_selection"] = len(select_split.texts)
    files["test"] = {
        "file": relative(Path(test_split.source), data_dir),
        "rows": len(test_split.texts),
    }

    def score(split: Split) -> torch.Tensor:
        return torch.tensor([[2.0 * y - 1.0] for y in split.labels])

    return TaskData(
        train_split.texts,
        score(train_split),
        select_split.texts,
        score(select_split),
        test_split.texts,
        score(test_split),
        files,
    )


def reward_metrics(scores: torch.Tensor, targets: torch.Tensor) -> dict:
    s, t = scores[:, 0].double(), targets[:, 0].double()
    pearson = torch.corrcoef(torch.stack([s, t]))[0, 1].item()
    return {
        "mse": round(torch.mean((s - t) ** 2).item(), 4),
        "pearson_r": round(pearson, 4),
        "sign_accuracy": round(torch.mean(((s > 0) == (t > 0)).double()).item(), 4),
    }


def mixed(sentences: Split, news: Split, count: int, rng: np.random.Generator) -> list[dict]:
    """``count`` inputs, each an SST-2 sentence and an AG News text joined by a space in random
    order, with the character span of each part and the labels it carries."""
    first = rng.permutation(len(sentences.texts))
    second = rng.permutation(len(news.texts))
    records = []
    for k in range(count):
        i, j = int(first[k % len(first)]), int(second[k % len(second)])
        sentence, article = sentences.texts[i], news.texts[j]
        sentiment, topic = SENTIMENT[sentences.labels[i]], AGNEWS_LABELS[news.labels[j]]
        if rng.random() < 0.5:
            text = f"{sentence} {article}"
            spans = {"sentiment": [0, len(sentence)], "topic": [len(sentence) + 1, len(text)]}
        else:
            text = f"{article} {sentence}"
            spans = {"topic": [0, len(article)], "sentiment": [len(article) + 1, len(text)]}
        records.append({"text": text, "labels": [sentiment, topic], "spans": spans})
    return records


MIX_LABELS = SENTIMENT + AGNEWS_LABELS


def _multi_hot(records: list[dict]) -> torch.Tensor:
    index = {name: i for i, name in enumerate(MIX_LABELS)}
    targets = torch.zeros(len(records), len(MIX_LABELS))
    for row, record in enumerate(records):
        for label in record["labels"]:
            targets[row, index[label]] = 1.0
    return targets


def mix_data(data_dir: Path, seed: int, train_rows: int = 16_000) -> TaskData:
    """Train: SST-2 train x AG News training rows; select: SST-2 dev x the AG News hold-out;
    test: SST-2's GLUE dev (test.tsv) x AG News test.tsv, one input per SST-2 test sentence."""
    sst_train, sst_select, sst_test, sst_files = sst2_splits(data_dir, seed)
    news_train, news_select, news_test, news_files = agnews_splits(data_dir, seed)
    rng = np.random.default_rng(seed)
    train_records = mixed(sst_train, news_train, train_rows, rng)
    select_records = mixed(sst_select, news_select, 1000, rng)
    test_records = mixed(sst_test, news_test, len(sst_test.texts), rng)
    files = {
        "sst2": sst_files,
        "agnews": news_files,
        "train": f"{train_rows} inputs: SST-2 train x AG News training rows",
        "selection": "1000 inputs: SST-2 dev x the AG News hold-out",
        "test": f"{len(test_records)} inputs: sst2/test.tsv x agnews/test.tsv",
        "mixing": "each input joins one sentence and one news text with a space, in random "
        "order (numpy default_rng(seed)); each part drawn without replacement",
    }
    return TaskData(
        [r["text"] for r in train_records],
        _multi_hot(train_records),
        [r["text"] for r in select_records],
        _multi_hot(select_records),
        [r["text"] for r in test_records],
        _multi_hot(test_records),
        files,
        test_records,
    )


def mix_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict:
    predicted = (torch.sigmoid(logits) >= 0.5).float()
    per_label = (predicted == targets).float().mean(0)
    true_positive = (predicted * targets).sum().item()
    precision = true_positive / max(predicted.sum().item(), 1.0)
    recall = true_positive / max(targets.sum().item(), 1.0)
    sentiment = logits[:, :2].argmax(-1) == targets[:, :2].argmax(-1)
    topic = logits[:, 2:].argmax(-1) == targets[:, 2:].argmax(-1)
    return {
        "mean_label_accuracy": round(per_label.mean().item(), 4),
        "label_accuracy": {name: round(v, 4) for name, v in zip(MIX_LABELS, per_label.tolist())},
        "micro_f1": round(2 * precision * recall / max(precision + recall, 1e-12), 4),
        "exact_match": round((predicted == targets).all(-1).float().mean().item(), 4),
        "sentiment_accuracy_top1": round(sentiment.float().mean().item(), 4),
        "topic_accuracy_top1": round(topic.float().mean().item(), 4),
    }


TARGETS = {
    "sst2-minilm-reward": TaskTarget(
        name="sst2-minilm-reward",
        task="reward-style sentiment score (regression, SST-2): +1 positive, -1 negative",
        labels=("score",),
        problem_type="regression",
        data=reward_data,
        metrics=reward_metrics,
        selection_metric="pearson_r",
        recipe=Target(
            "sst2-minilm-reward", "", ("score",), sst2_splits, 64, 1, 32, 5e-5, 0.06, 100
        ),
    ),
    "mix-minilm-multilabel": TaskTarget(
        name="mix-minilm-multilabel",
        task="multi-label: the sentiment of an SST-2 sentence and the topic of an AG News text "
        "joined in one input, six independent sigmoids",
        labels=MIX_LABELS,
        problem_type="multi_label_classification",
        data=mix_data,
        metrics=mix_metrics,
        selection_metric="mean_label_accuracy",
        recipe=Target(
            "mix-minilm-multilabel", "", MIX_LABELS, sst2_splits, 128, 1, 32, 1e-4, 0.06, 150
        ),
    ),
}


# ----------------------------------------------------------------------------- model


def start_from(base_dir: Path, target: TaskTarget, seed: int) -> BertForSequenceClassification:
    """The base bundle's encoder with a fresh, seeded head for ``target``; word embeddings
    frozen, so the stored masked-LM head still decodes every layer."""
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(
        base_dir,
        num_labels=len(target.labels),
        problem_type=target.problem_type,
        id2label=dict(enumerate(target.labels)),
        label2id={name: i for i, name in enumerate(target.labels)},
        ignore_mismatched_sizes=True,
        dtype=torch.float32,
    )
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    return model


@torch.no_grad()
def outputs(model: torch.nn.Module, ids: list[list[int]], pad_id: int) -> torch.Tensor:
    """The model's raw outputs (logits or scores) for pre-tokenised texts, in their order."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    result = torch.zeros(len(ids), model.config.num_labels)
    for start in range(0, len(order), 256):
        batch = order[start : start + 256]
        result[batch] = model(**collate([ids[i] for i in batch], pad_id)).logits.float()
    model.train(was_training)
    return result


def build(target: TaskTarget, base_dir: Path, data_dir: Path, out_root: Path, seed: int) -> dict:
    """Train, save, reload (fp16 round trip) and test one bundle; return its model card."""
    set_seed(seed)
    started = time.time()
    data = target.data(data_dir, seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    pad_id = tokenizer.pad_token_id
    length = target.recipe.max_length
    train_ids = encode(tokenizer, data.train, length)
    select_ids = encode(tokenizer, data.select, length)
    log.info("[%s] %d training / %d selection inputs", target.name, len(train_ids), len(select_ids))
    model = start_from(base_dir, target, seed)

    def select_score(m: torch.nn.Module) -> float:
        return float(
            target.metrics(outputs(m, select_ids, pad_id), data.select_targets)[
                target.selection_metric
            ]
        )

    best, step = train(
        model,
        target.recipe,
        train_ids,
        [0] * len(train_ids),
        select_ids,
        [0] * len(select_ids),
        pad_id,
        seed,
        select_score=select_score,
        train_targets=data.train_targets,
    )
    log.info(
        "[%s] best selection %s %.4f at step %d", target.name, target.selection_metric, best, step
    )
    out_dir = out_root / target.name
    save_bundle(model, base_dir, out_dir)
    wall_time = time.time() - started
    check_mlm_head(out_dir, base_dir)
    reloaded = BertForSequenceClassification.from_pretrained(out_dir, dtype=torch.float32)
    test = target.metrics(
        outputs(reloaded, encode(tokenizer, data.test, length), pad_id), data.test_targets
    )
    log.info("[%s] test: %s", target.name, json.dumps(test))
    if data.test_records:
        mix_file = REPO / "bench" / "data" / "mix-test.jsonl"
        mix_file.parent.mkdir(parents=True, exist_ok=True)
        mix_file.write_text(
            "".join(json.dumps({"id": i, **r}) + "\n" for i, r in enumerate(data.test_records))
        )
    base_card = json.loads((base_dir / "model_card.json").read_text())
    card = {
        "name": target.name,
        "task": target.task,
        "problem_type": target.problem_type,
        "labels": list(target.labels),
        "base": {"bundle": f"models/{BASE}", "its_base": base_card.get("base")},
        "mlm_head": f"the masked-LM head of models/{BASE}, copied unchanged (word embeddings "
        "frozen while fine-tuning, so its tied decoder still decodes every layer)",
        "training": {
            "data": data.files,
            "selection": f"best {target.selection_metric} on the selection inputs ({best:.4f}) "
            f"at step {step}, evaluated every {target.recipe.eval_every} steps",
            "epochs": target.recipe.epochs,
            "batch_size": target.recipe.batch_size,
            "lr": target.recipe.lr,
            "loss": "MSE" if target.problem_type == "regression" else "binary cross-entropy",
            "max_length": length,
            "seed": seed,
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
            "wall_time_s": round(wall_time, 1),
            "machine": "2-core CPU, shared",
        },
        "evaluation": {
            **test,
            "measured_on": "the bundle reloaded from its fp16 files (dtype float32)",
        },
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "script": "scripts/task_models.py",
    }
    write_model_card(out_dir, card)
    log.info("[%s] written to %s (%.1f MB)", target.name, out_dir, bundle_size(out_dir) / 1e6)
    return card


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(TARGETS))
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "models")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    setup_logging()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    base_dir = REPO / "models" / BASE
    for name in [args.only] if args.only else list(TARGETS):
        card = build(TARGETS[name], base_dir, args.data.resolve(), args.out.resolve(), args.seed)
        log.info("FINAL %s: %s", name, json.dumps(card["evaluation"]))


if __name__ == "__main__":
    main()
