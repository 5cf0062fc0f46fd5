"""Explaining the model objects a notebook already holds (issue 13, the part done so far).

    .venv/bin/python examples/objects_in_memory.py

Downloads nothing and fine-tunes nothing. It holds, in memory: the bundled ``sst2-tiny``
classifier as a plain ``transformers`` object, a pipeline around it, and a tiny random BERT
classifier with a separate masked-LM object as its LM head. It explains one text with each
and prints what each gives. ``tests/test_examples.py`` runs this script.
"""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    pipeline,
)

import layersal
from layersal.models import named_models

TEXT = "a gripping, beautifully acted film"


def build() -> tuple[BertForSequenceClassification, BertForMaskedLM, object]:
    """A 2-layer, 32-wide classifier and masked-LM with one encoder, and a fast tokenizer."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(named_models()["sst2-tiny"])
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    masked = BertForMaskedLM(config)
    classifier = BertForSequenceClassification(config)
    classifier.bert.load_state_dict(masked.bert.state_dict(), strict=False)
    classifier.train()  # as a notebook might leave it; layersal restores it after each pass
    return classifier, masked, tokenizer


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


if __name__ == "__main__":
    main()
