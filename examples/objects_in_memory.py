"""Explaining the model objects a notebook already holds.

    .venv/bin/python examples/objects_in_memory.py

Downloads nothing and fine-tunes nothing. It holds, in memory: the bundled ``sst2-tiny``
classifier as a plain ``transformers`` object, a pipeline around it, a tiny random BERT
classifier with a separate masked-LM object as its LM head, a tiny random BERT that reads
pairs of texts (natural-language inference), and a tiny random GPT-2 classifier (decoder-only,
pooled at its last token, decoded through a causal-LM head: next-token predictions) with a
byte-level BPE tokenizer trained here on a few sentences. It explains with each and prints
what each gives. ``tests/test_examples.py`` runs this script.
"""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    pipeline,
)

import layersal
from layersal.checkpoints import named_models

TEXT = "a gripping, beautifully acted film"


def bert_config(vocab_size: int, labels: list[str]) -> BertConfig:
    """A 2-layer, 32-wide BERT config with these class names."""
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )


def build() -> tuple[BertForSequenceClassification, BertForMaskedLM, object]:
    """A 2-layer, 32-wide classifier and masked-LM with one encoder, and a fast tokenizer."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(named_models()["sst2-tiny"])
    config = bert_config(tokenizer.vocab_size, ["negative", "positive"])
    masked = BertForMaskedLM(config)
    classifier = BertForSequenceClassification(config)
    classifier.bert.load_state_dict(masked.bert.state_dict(), strict=False)
    classifier.train()  # as a notebook might leave it; layersal restores it after each pass
    return classifier, masked, tokenizer


def nli_model(tokenizer: object) -> BertForSequenceClassification:
    """A tiny random BERT with natural-language-inference labels: it reads pairs of texts."""
    torch.manual_seed(1)
    labels = ["entailment", "neutral", "contradiction"]
    vocab_size = tokenizer.vocab_size  # type: ignore[attr-defined]
    return BertForSequenceClassification(bert_config(vocab_size, labels)).eval()


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE tokenizer trained on a few sentences (no [MASK], pads with
    its end-of-text token, on the left as many decoder tokenizers do)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = [
        "a gripping, beautifully acted film about nothing much; the plot meanders, the cast "
        "shines, and the dialogue is clumsy but honest. A dull, lifeless and tired story."
    ] * 4
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        padding_side="left",
        model_input_names=["input_ids", "attention_mask"],
    )


def gpt2_models(tokenizer: PreTrainedTokenizerFast) -> tuple[object, object]:
    """A tiny random GPT-2 causal LM and a classifier sharing its blocks."""
    torch.manual_seed(2)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=128,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    causal = GPT2LMHeadModel(config).eval()
    classifier = GPT2ForSequenceClassification(config).eval()
    classifier.transformer.load_state_dict(causal.transformer.state_dict())
    return classifier, causal


def show(title: str, explanation: layersal.Explanation) -> None:
    words = ", ".join(f"{w.text} {w.score:+.3g}" for w in explanation.top_words(3))
    print(
        f"{title}: {explanation.prediction}, layer {explanation.layer}, "
        f"decoder {explanation.decoder}; top words: {words}"
    )


def main() -> None:
    folder = named_models()["sst2-tiny"]
    trained = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    show("sst2-tiny as an object", layersal.explain(TEXT, trained))  # head from its folder
    classify = pipeline("text-classification", model=trained, tokenizer=tokenizer)
    show("a pipeline around it", layersal.explain(TEXT, classify))
    report = layersal.explain(TEXT, classify, layer_report=True)
    coherence = ", ".join(f"{r.layer}: {r.coherence:.2f}" for r in report.layers)
    print(f"coherence per layer: {coherence}")

    classifier, masked, tiny_tokenizer = build()
    lm = layersal.load(classifier, tokenizer=tiny_tokenizer, lm_head=masked)
    show("random tiny BERT + LM-head object", layersal.explain(TEXT, lm, layer=1, decode=True))
    print(f"the tiny BERT is still in training mode: {classifier.training}")

    nli = layersal.load(nli_model(tiny_tokenizer), tokenizer=tiny_tokenizer, lm_head=masked)
    pair = layersal.explain(("a man plays a guitar", "a person makes music"), nli, layer=1)
    segments = " | ".join(
        ", ".join(f"{w.text} {w.score:+.2g}" for w in pair.words if w.segment == k) for k in (0, 1)
    )
    print(f"pair model ({', '.join(nli.labels)}): {pair.prediction}; words: {segments}")

    bpe = bpe_tokenizer()
    gpt2, causal = gpt2_models(bpe)
    decoder = layersal.load(gpt2, tokenizer=bpe, lm_head=causal)
    decoded = layersal.explain(TEXT, decoder, layer=1, decode=True, layer_report=True)
    plain = layersal.explain(TEXT, decoder, layer=1, decode=False)
    show("decoder-only GPT-2 + causal-LM head", decoded)
    coherence = ", ".join(f"{r.layer}: {r.coherence:.3f}" for r in decoded.layers)
    print(f"next-token coherence per layer: {coherence}")
    change = max(abs(a - b) for a, b in zip(decoded.scores, plain.scores))
    print(f"largest change decoding makes to a token score: {change:.3g}")
    print(f"the user's tokenizer still pads on the {bpe.padding_side}")


if __name__ == "__main__":
    main()
