"""The adapter table: where each model family keeps its blocks and its masked-LM head.

Everything family-specific in layersal lives here. A family is found from
``config.model_type``; families not listed still work, decoding through the tied input
embeddings, because hidden states and gradients come from the generic Hugging Face API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HeadLayout:
    """Names of one masked-LM head layout's tensors in a ``*ForMaskedLM`` state dict.

    The head is always dense -> activation -> layer norm -> decoder (+ bias); ``decoder`` is
    ``None`` where the decoder is always the word-embedding matrix.
    """

    dense: str
    norm: str
    bias: tuple[str, ...]
    decoder: str | None


@dataclass(frozen=True)
class Family:
    """Where one model family keeps its parts."""

    name: str
    base: str
    layers: str
    heads: tuple[HeadLayout, ...]
    activation_attr: str | None = None
    default_activation: str = "gelu"
    norm_eps: float | None = None

    def activation(self, config: Any) -> str:
        """Name of the LM head's activation function for ``config``."""
        if self.activation_attr is None:
            return self.default_activation
        act = getattr(config, self.activation_attr, self.default_activation)
        return act if isinstance(act, str) else self.default_activation

    def layer_norm_eps(self, config: Any) -> float:
        """Epsilon of the LM head's layer norm."""
        if self.norm_eps is not None:
            return self.norm_eps
        return float(getattr(config, "layer_norm_eps", 1e-12))

    @property
    def embedding_key(self) -> str:
        """State-dict name of the word-embedding matrix (tied decoder)."""
        return f"{self.base}.embeddings.word_embeddings.weight"


_BERT_HEAD = HeadLayout(
    dense="cls.predictions.transform.dense",
    norm="cls.predictions.transform.LayerNorm",
    bias=("cls.predictions.bias", "cls.predictions.decoder.bias"),
    decoder="cls.predictions.decoder.weight",
)
_ROBERTA_HEAD = HeadLayout(
    dense="lm_head.dense",
    norm="lm_head.layer_norm",
    bias=("lm_head.bias", "lm_head.decoder.bias"),
    decoder="lm_head.decoder.weight",
)

FAMILIES: dict[str, Family] = {
    "bert": Family("bert", "bert", "encoder.layer", (_BERT_HEAD,), activation_attr="hidden_act"),
    "distilbert": Family(
        "distilbert",
        "distilbert",
        "transformer.layer",
        (
            HeadLayout(
                dense="vocab_transform",
                norm="vocab_layer_norm",
                bias=("vocab_projector.bias",),
                decoder="vocab_projector.weight",
            ),
        ),
        activation_attr="activation",
        norm_eps=1e-12,
    ),
    "roberta": Family("roberta", "roberta", "encoder.layer", (_ROBERTA_HEAD,)),
    "xlm-roberta": Family("xlm-roberta", "roberta", "encoder.layer", (_ROBERTA_HEAD,)),
    "electra": Family(
        "electra",
        "electra",
        "encoder.layer",
        (
            HeadLayout(
                dense="generator_predictions.dense",
                norm="generator_predictions.LayerNorm",
                bias=("generator_lm_head.bias",),
                decoder="generator_lm_head.weight",
            ),
        ),
    ),
    "deberta-v2": Family(
        "deberta-v2",
        "deberta",
        "encoder.layer",
        (
            HeadLayout(
                dense="lm_predictions.lm_head.dense",
                norm="lm_predictions.lm_head.LayerNorm",
                bias=("lm_predictions.lm_head.bias",),
                decoder=None,
            ),
            _BERT_HEAD,
        ),
        activation_attr="hidden_act",
    ),
}


def family_for(config: Any) -> Family | None:
    """The family of a Hugging Face config, or ``None`` when layersal has no adapter for it."""
    return FAMILIES.get(getattr(config, "model_type", ""))
