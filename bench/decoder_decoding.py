"""What next-token decoding does for a decoder-only classifier (issue 13's measurement).

    OMP_NUM_THREADS=1 nice .venv/bin/python bench/decoder_decoding.py [--texts 200] [--seed 0]

Builds, on this machine and from SST-2's training sentences only: a byte-level BPE tokenizer,
a small GPT-2 causal LM (4 blocks, 128 wide) trained for a few hundred steps, and a
classifier fine-tuned from it (the same blocks, last-token pooling). Then, on the first
``--texts`` SST-2 test (GLUE dev) sentences, it prints

- coherence per layer under next-token decoding (what layersal does for causal heads: position
  i credits the tokens it has seen and the one it predicts) and, for contrast, under the
  paper's masked-LM reading (position i decodes to token i, any input token), which a causal
  head does not fit;
- the faithfulness (comprehensiveness and sufficiency AOPC, and their difference) of DLS at
  each layer with and without decoding, plain gradients: the difference decoding makes.

Nothing is saved; the numbers vary with ``--seed``. Takes a few CPU minutes.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sst2"


def read(name: str, limit: int | None = None) -> tuple[list[str], list[int]]:
    with (DATA / name).open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    rows = rows[:limit] if limit else rows
    return [r[0].strip() for r in rows], [int(r[1]) for r in rows]


def tokenizer_for(texts: list[str]):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4000,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_input_names=["input_ids", "attention_mask"],
    )


def train(model, batches, steps: int, lr: float, loss_of) -> float:  # type: ignore[no-untyped-def]
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    last = []
    for step in range(steps):
        loss = loss_of(model, batches[step % len(batches)])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        last = (last + [float(loss)])[-20:]
    model.eval()
    return statistics.mean(last)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lm-steps", type=int, default=600)
    parser.add_argument("--cls-steps", type=int, default=300)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    import layersal
    from layersal.decoding import decode_layer
    from layersal.encoding import encode, model_input_names
    from layersal.evaluate import faithfulness_of
    from layersal.passes import forward_backward

    began = time.perf_counter()
    train_texts, train_labels = read("train.tsv")
    tokenizer = tokenizer_for(train_texts)
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=128, n_layer=4, n_head=4, n_positions=128,
        num_labels=2, id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1}, pad_token_id=eos, eos_token_id=eos,
        bos_token_id=eos,
    )  # fmt: skip
    lm = GPT2LMHeadModel(config)
    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(train_texts), generator=generator).tolist()

    def batch(indices: list[int]) -> dict[str, torch.Tensor]:
        out = tokenizer(
            [train_texts[i] for i in indices],
            truncation=True,
            max_length=64,
            padding=True,
            return_tensors="pt",
        )
        out["labels"] = torch.tensor([train_labels[i] for i in indices])
        return out

    batches = [batch(order[s : s + 64]) for s in range(0, 64 * args.lm_steps, 64)]

    def lm_loss(model, b):  # type: ignore[no-untyped-def]
        labels = b["input_ids"].masked_fill(b["attention_mask"] == 0, -100)
        return model(
            input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=labels
        ).loss

    lm_loss_value = train(lm, batches, args.lm_steps, 3e-3, lm_loss)
    classifier = GPT2ForSequenceClassification(config)
    classifier.transformer.load_state_dict(lm.transformer.state_dict())

    def cls_loss(model, b):  # type: ignore[no-untyped-def]
        return model(**b).loss

    tokenizer.padding_side = "right"
    cls_batches = [batch(order[s : s + 32]) for s in range(0, 32 * args.cls_steps, 32)]
    cls_loss_value = train(classifier, cls_batches, args.cls_steps, 1e-3, cls_loss)
    trained_s = time.perf_counter() - began
    loaded = layersal.load(classifier, tokenizer=tokenizer, lm_head=lm)
    texts, labels = read("test.tsv", args.texts)
    predictions = [e.prediction for e in layersal.explain(texts, loaded, method="gradient")]
    accuracy = statistics.mean(int(p == loaded.labels[y]) for p, y in zip(predictions, labels))
    print(f"# decoder-only decoding, SST-2, seed {args.seed}, {len(texts)} test texts")
    print(
        f"trained in {trained_s:.0f} s: LM loss {lm_loss_value:.2f}, classifier loss "
        f"{cls_loss_value:.2f}, accuracy {accuracy:.3f}"
    )

    # coherence per layer, next-token (layersal) vs own-token (the masked-LM reading)
    own = layersal.decoding.LMHead(**{**loaded.lm_head.__dict__, "next_token": False})
    sums: dict[str, list[list[float]]] = {"next": [], "own": [], "top1": []}
    inputs = model_input_names(loaded.model)
    for start in range(0, len(texts), 16):
        encoded = encode(loaded.tokenizer, texts[start : start + 16], loaded.max_length, inputs)
        result = forward_backward(loaded.model, encoded, family=loaded.family)
        for name, head in (("next", loaded.lm_head), ("own", own)):
            per_layer = []
            for hidden in result.hidden:
                decoded = decode_layer(
                    head, hidden, encoded.input_ids, encoded.content, tau=None, ranks=True
                )
                assert decoded.coherence is not None
                per_layer.append(decoded.coherence.tolist())
                if name == "next":
                    ranks = decoded.own_rank
                    assert ranks is not None
                    valid = ranks[encoded.content & (ranks >= 0)]
                    sums["top1"].append([float((valid == 0).float().mean())])
            sums[name].append([statistics.mean(v) for v in per_layer])
    layers = range(loaded.num_layers + 1)
    print("\n| layer | coherence, next-token | coherence, own-token | next token in top 1 |")
    print("|---|---|---|---|")
    top1 = [r[0] for r in sums["top1"]]
    n_layers = len(layers)
    for layer in layers:
        nxt = statistics.mean(r[layer] for r in sums["next"])
        mine = statistics.mean(r[layer] for r in sums["own"])
        hit = statistics.mean(top1[layer::n_layers])
        print(f"| {layer} | {nxt:.3f} | {mine:.3f} | {hit:.3f} |")

    print("\n| DLS layer | decode | comp. AOPC | suff. AOPC | comp. - suff. |")
    print("|---|---|---|---|---|")
    for layer in layers:
        for decode in (True, False):
            explained = layersal.explain(
                texts, loaded, layer=layer, decode=decode, rule="gradient", batch_size=16
            )
            scores = faithfulness_of(loaded, explained)
            comp = statistics.mean(s.aopc_comprehensiveness for s in scores)
            suff = statistics.mean(s.aopc_sufficiency for s in scores)
            print(f"| {layer} | {decode} | {comp:.4f} | {suff:.4f} | {comp - suff:.4f} |")
    print(f"\n{time.perf_counter() - began:.0f} s in all")


if __name__ == "__main__":
    sys.exit(main())
