"""The adapter table: where each model family keeps its blocks and its masked-LM head.

Everything family-specific in layersal lives here. A family is found from
``config.model_type``; families not listed still work, decoding through the tied input
embeddings, because hidden states and gradients come from the generic Hugging Face API.
The propagation rules (:mod:`layersal.rules`) need to know more: which modules project the
attention's queries, keys and values, and where the elementwise non-linearities are; that is
each family's :class:`PropagationMap`.
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
class Between:
    """An elementwise non-linearity applied as a function call, not as a module.

    ``producer`` is the module whose output goes into it and ``consumer`` the module that reads
    its result (dropout in between is the identity in eval mode); e.g. RoBERTa's classification
    head calls ``torch.tanh`` between ``classifier.dense`` and ``classifier.out_proj``.
    """

    producer: str
    consumer: str


@dataclass(frozen=True)
class PropagationMap:
    """Where a family's propagation rules apply, as module-name patterns (``fnmatch``).

    ``query``, ``key`` and ``value`` are the attention projections (one module per layer);
    ``activations`` the elementwise non-linearities that are modules (GELU, a pooler's tanh);
    ``between`` the ones that are function calls. ReLU needs no entry: its gradient already is
    the identity rule's ``f(x)/x``. Every LayerNorm is found by type. ``unsupported`` names
    optional parts the rules do not cover; a model that has one is refused.
    """

    query: str
    key: str
    value: str
    activations: tuple[str, ...] = ()
    between: tuple[Between, ...] = ()
    unsupported: tuple[str, ...] = ()


@dataclass(frozen=True)
class Family:
    """Where one model family keeps its parts."""

    name: str
    base: str
    heads: tuple[HeadLayout, ...]
    activation_attr: str | None = None
    default_activation: str = "gelu"
    norm_eps: float | None = None
    propagation: PropagationMap | None = None

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


def _bert_attention(
    activations: tuple[str, ...], between: tuple[Between, ...] = ()
) -> PropagationMap:
    """The BERT layout of the attention projections (BERT, RoBERTa, ELECTRA, MiniLM)."""
    return PropagationMap(
        query="*.attention.self.query",
        key="*.attention.self.key",
        value="*.attention.self.value",
        activations=activations,
        between=between,
    )


_BERT_RULES = _bert_attention(("*.intermediate.intermediate_act_fn", "*.pooler.activation"))
_ROBERTA_RULES = _bert_attention(
    ("*.intermediate.intermediate_act_fn",), (Between("classifier.dense", "classifier.out_proj"),)
)

FAMILIES: dict[str, Family] = {
    "bert": Family(
        "bert",
        "bert",
        (_BERT_HEAD,),
        activation_attr="hidden_act",
        propagation=_BERT_RULES,
    ),
    "distilbert": Family(
        "distilbert",
        "distilbert",
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
        propagation=PropagationMap(
            query="*.attention.q_lin",
            key="*.attention.k_lin",
            value="*.attention.v_lin",
            activations=("*.ffn.activation",),
        ),
    ),
    "roberta": Family("roberta", "roberta", (_ROBERTA_HEAD,), propagation=_ROBERTA_RULES),
    "xlm-roberta": Family("xlm-roberta", "roberta", (_ROBERTA_HEAD,), propagation=_ROBERTA_RULES),
    "electra": Family(
        "electra",
        "electra",
        (
            HeadLayout(
                dense="generator_predictions.dense",
                norm="generator_predictions.LayerNorm",
                bias=("generator_lm_head.bias",),
                decoder="generator_lm_head.weight",
            ),
        ),
        propagation=_bert_attention(
            ("*.intermediate.intermediate_act_fn", "classifier.activation")
        ),
    ),
    "deberta-v2": Family(
        "deberta-v2",
        "deberta",
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
        propagation=PropagationMap(
            query="*.attention.self.query_proj",
            key="*.attention.self.key_proj",
            value="*.attention.self.value_proj",
            activations=("*.intermediate.intermediate_act_fn",),
            between=(Between("pooler.dense", "classifier"),),
            unsupported=("*.encoder.conv",),
        ),
    ),
}


def family_for(config: Any) -> Family | None:
    """The family of a Hugging Face config, or ``None`` when layersal has no adapter for it."""
    return FAMILIES.get(getattr(config, "model_type", ""))
