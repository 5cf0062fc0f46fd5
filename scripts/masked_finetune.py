"""Build a masked-fine-tuned copy of a bundled classifier: an in-distribution model for the
erasure metrics (``layersal bench --eval-model``; ``docs/metrics.md``, "In-distribution
models").

The copy continues the model's training on its own training data, with [MASK] put in place of
a random share of each text's content tokens, so that inputs with hidden tokens, which the
faithfulness metrics build, are no longer out of distribution (Madsen, Reddy & Chandar,
"Faithfulness Measurable Masked Language Models", ICML 2024; Zheng et al., "F-Fidelity",
ICLR 2025). Per training text: with probability ``--unmasked`` it is left whole; otherwise
a rate r ~ U(0, ``--max-rate``) is drawn and round(r k) of its k content tokens, drawn
uniformly, become [MASK]. The default range 0-100% covers every rate the metrics hide:
comprehensiveness hides 1-50% of the tokens, sufficiency keeps 1-50% (hides 50-99%), and the
deletion and insertion curves run from 0 to 100%.

The word embeddings stay frozen (the LM head that DLS decodes with is tied to them), and the
LM head tensors are copied unchanged, so the copy can also be explained. Only the encoder
above the word embeddings, the pooler and the classifier move. The copy's accuracy on the
held-out test file is measured unmasked and with 10/25/50/90% of the content tokens masked
(seeded), next to the original's, after a reload of the fp16 files. It goes to
``models/<name>-masked/`` (fp16 safetensors, config, tokenizer, ``model_card.json``).

Usage (from the repository root; ``../shared/data`` by default)::

    OMP_NUM_THREADS=1 nice -n 10 python scripts/masked_finetune.py --model sst2-tiny \\
        [--steps 2000] [--batch-size 32] [--lr 1e-4] [--seed 0] [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import math
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import torch
import transformers
from safetensors.torch import load_file, save_file

from layersal.checkpoints import read_card, resolve
from layersal.datasets import label_indices, read_labelled

REPO = Path(__file__).resolve().parent.parent

log = logging.getLogger("masked_finetune")
EVAL_RATES = (0.0, 0.10, 0.25, 0.50, 0.90)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_files(card: dict[str, Any], data_dir: Path) -> tuple[Path, Path]:
    """The model's training file and its held-out test file, as its card names them."""
    data = card.get("training", {}).get("data", {})
    train = data.get("train", {}).get("file")
    test = card.get("evaluation", {}).get("test_file") or data.get("test", {}).get("file")
    if not train or not test:
        raise SystemExit("the model card names no training or test file: give --train/--test")
    return data_dir / train, data_dir / test


def encode(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def content_mask(ids: torch.Tensor, special: set[int]) -> torch.Tensor:
    """Content tokens: neither padding nor [CLS]/[SEP] (any special id)."""
    out = torch.ones_like(ids, dtype=torch.bool)
    for token in special:
        out &= ids != token
    return out


def collate(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
    return ids, attention


def mask_at_rates(
    ids: torch.Tensor,
    content: torch.Tensor,
    rates: torch.Tensor,
    mask_id: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Each row with round(rate k) of its k content tokens, drawn uniformly, set to [MASK]."""
    out = ids.clone()
    for row in range(ids.shape[0]):
        positions = content[row].nonzero().flatten()
        k = len(positions)
        hide = min(k, math.floor(float(rates[row]) * k + 0.5))
        if hide:
            chosen = positions[torch.randperm(k, generator=generator)[:hide]]
            out[row, chosen] = mask_id
    return out


def training_rates(n: int, unmasked: float, max_rate: float, g: torch.Generator) -> torch.Tensor:
    """Per text: 0 with probability ``unmasked``, else U(0, max_rate)."""
    rates = torch.rand(n, generator=g) * max_rate
    return torch.where(torch.rand(n, generator=g) < unmasked, torch.zeros(n), rates)


@torch.no_grad()
def accuracy(
    model: Any,
    ids: list[list[int]],
    labels: list[int],
    pad_id: int,
    mask_id: int,
    special: set[int],
    rate: float,
    seed: int,
) -> float:
    """Accuracy with ``rate`` of each text's content tokens masked (seeded draw)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    correct = 0
    for start in range(0, len(order), 128):
        batch = order[start : start + 128]
        x, attention = collate([ids[i] for i in batch], pad_id)
        if rate > 0:
            content = content_mask(x, special)
            x = mask_at_rates(x, content, torch.full((len(batch),), rate), mask_id, generator)
        predicted = model(input_ids=x, attention_mask=attention).logits.argmax(-1)
        correct += sum(int(p) == labels[i] for p, i in zip(predicted.tolist(), batch))
    return correct / len(ids)


def accuracies(model: Any, ids: list[list[int]], labels: list[int], tok: Any, seed: int) -> dict:
    special = {int(t) for t in tok.all_special_ids}
    return {
        f"{round(rate * 100)}%": round(
            accuracy(model, ids, labels, tok.pad_token_id, tok.mask_token_id, special, rate, seed),
            4,
        )
        for rate in EVAL_RATES
    }


def train(model: Any, ids: list[list[int]], labels: list[int], tok: Any, args: Any) -> list[float]:
    """``args.steps`` AdamW steps on seeded batches, each text masked as the docstring says."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = [p for n, p in params if n.endswith(".bias") or "LayerNorm" in n]
    decay = [p for n, p in params if not (n.endswith(".bias") or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
    )
    schedule = transformers.get_linear_schedule_with_warmup(
        optimizer, int(0.06 * args.steps), args.steps
    )
    generator = torch.Generator().manual_seed(args.seed)
    special = {int(t) for t in tok.all_special_ids}
    gold = torch.tensor(labels)
    order: list[int] = []
    losses: list[float] = []
    curve = []
    model.train()
    for step in range(1, args.steps + 1):
        if len(order) < args.batch_size:
            order += torch.randperm(len(ids), generator=generator).tolist()
        batch, order = order[: args.batch_size], order[args.batch_size :]
        x, attention = collate([ids[i] for i in batch], tok.pad_token_id)
        rates = training_rates(len(batch), args.unmasked, args.max_rate, generator)
        x = mask_at_rates(x, content_mask(x, special), rates, tok.mask_token_id, generator)
        loss = model(input_ids=x, attention_mask=attention, labels=gold[batch]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if step % 100 == 0 or step == args.steps:
            curve.append(round(float(np.mean(losses)), 4))
            log.info("step %d/%d loss %.4f", step, args.steps, curve[-1])
            losses.clear()
    model.eval()
    return curve


def save(model: Any, source: Path, out: Path) -> None:
    """fp16 safetensors: the source's tensors, with the trained ones replaced (the LM head and
    the word embeddings checked unchanged); config and tokenizer files copied."""
    out.mkdir(parents=True, exist_ok=True)
    original = load_file(str(source / "model.safetensors"))
    trained = model.state_dict()
    tensors = {}
    for key, value in original.items():
        new = trained.get(key)
        tensors[key] = (value if new is None else new.detach()).to(torch.float16).contiguous()
    frozen = [k for k in original if "word_embeddings" in k or k.startswith("cls.")]
    for key in frozen:
        if not torch.equal(tensors[key], original[key].to(torch.float16)):
            raise RuntimeError(f"{key} changed, but it was frozen")
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "model.safetensors").chmod(0o644)
    shutil.copyfile(source / "config.json", out / "config.json")
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a bundled model's name or a folder")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--train", type=Path, help="training file (default: the card's)")
    parser.add_argument("--test", type=Path, help="held-out file (default: the card's)")
    parser.add_argument("--out", type=Path, help="default: models/<name>-masked")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, help="default: the card's, else 128")
    parser.add_argument("--unmasked", type=float, default=0.5, help="share of texts kept whole")
    parser.add_argument("--max-rate", type=float, default=1.0, help="masking rate ~ U(0, this)")
    parser.add_argument("--eval-rows", type=int, default=2000, help="held-out rows (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.time()

    source = resolve(args.model)
    card = read_card(source)
    name = card.get("name") or source.name
    out = args.out or REPO / "models" / f"{name}-masked"
    default_train, default_test = data_files(card, args.data)
    train_file, test_file = args.train or default_train, args.test or default_test
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        source, dtype=torch.float32
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    train_data, test_data = read_labelled(train_file), read_labelled(test_file)
    if args.eval_rows and len(test_data) > args.eval_rows:
        test_data = test_data.sample(args.eval_rows, args.seed)
    train_labels = label_indices(train_data.labels, names)
    test_labels = label_indices(test_data.labels, names)
    if train_labels is None or test_labels is None:
        raise SystemExit("every training and held-out row needs a gold label")
    recipe = card.get("training", {})
    args.max_length = (
        args.max_length
        or recipe.get("max_length")
        or (recipe.get("recipe", {}).get("max_length", 128))
    )
    train_ids = encode(tokenizer, train_data.texts, args.max_length)
    test_ids = encode(tokenizer, test_data.texts, args.max_length)
    log.info("%s: %d training texts, %d held-out", name, len(train_ids), len(test_ids))
    before = accuracies(model, test_ids, test_labels, tokenizer, args.seed)
    log.info("original, held-out accuracy by masked share: %s", before)

    model.get_input_embeddings().weight.requires_grad_(False)
    curve = train(model, train_ids, train_labels, tokenizer, args)
    save(model, source, out)
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(
        out, dtype=torch.float32
    )
    after = accuracies(reloaded, test_ids, test_labels, tokenizer, args.seed)
    log.info("masked copy (fp16 reloaded), held-out accuracy by masked share: %s", after)
    command = "python scripts/masked_finetune.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    built = {
        "name": out.name,
        "task": card.get("task"),
        "labels": names,
        "in_distribution_copy_of": {
            "model": name,
            "weights_sha256": sha256(source / "model.safetensors"),
        },
        "training": {
            "what": "masked fine-tuning: the original's training continued with [MASK] in place "
            "of random content tokens, so that inputs with hidden tokens are in distribution "
            "(Madsen et al., ICML 2024; F-Fidelity, Zheng et al., ICLR 2025)",
            "masking": f"per text: whole with probability {args.unmasked}, else a rate r ~ "
            f"U(0, {args.max_rate}) and round(r k) of its k content tokens (drawn uniformly) "
            "set to [MASK]; a fresh draw every batch",
            "data": {
                "train": {"file": _relative(train_file, args.data), "rows": len(train_ids)},
                "held_out": {"file": _relative(test_file, args.data), "rows": len(test_ids)},
            },
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "schedule": "linear warmup over 6% of steps, then linear decay to 0",
            "optimizer": "AdamW, weight decay 0.01 (none on biases/LayerNorm), grad-norm clip 1.0",
            "max_length": args.max_length,
            "frozen": "word embeddings (the LM head is tied to them); LM head tensors copied",
            "seed": args.seed,
            "loss_every_100_steps": curve,
            "wall_time_s": round(time.time() - started, 1),
            "threads": args.threads,
            "machine": f"{platform.processor() or platform.machine()}, CPU",
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
            "safetensors_version": safetensors.__version__,
        },
        "evaluation": {
            "file": _relative(test_file, args.data),
            "n": len(test_ids),
            "accuracy_by_masked_share": {"original": before, "masked_copy": after},
            "accuracy": after["0%"],
            "masked_at": "each text's content tokens, drawn with a seeded generator "
            f"(seed {args.seed}); the copy measured after an fp16 reload",
        },
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "script": "scripts/masked_finetune.py",
        "command": command,
        "pairs": bool(card.get("pairs", False)),
    }
    (out / "model_card.json").write_text(json.dumps(built, indent=2) + "\n")
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    log.info("wrote %s (%.1f MB) in %.0f s", out, size / 1e6, time.time() - started)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


if __name__ == "__main__":
    main()
