"""The adapter table: where each model family keeps its blocks and its language-model head.

Everything family-specific in layersal lives here. A family is found from
``config.model_type``; encoder families not listed still work, decoding through the tied
input embeddings, because hidden states and gradients come from the generic Hugging Face API
(without propagation rules); decoder-only ones are refused, since padding, pooling and
decoding differ for them (:func:`layersal.models.known_family`).
Encoder families (BERT and its kin, ModernBERT) decode through a masked-LM head; decoder-only
families (GPT-2, Llama, Qwen2, Mistral, Gemma) through a causal-LM head, which predicts the
*next* token (``Family.causal``; see :mod:`layersal.decoding`).
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

    A masked-LM head is dense -> activation -> layer norm -> decoder (+ bias); ``decoder`` is
    ``None`` where the decoder is always the word-embedding matrix. A causal-LM head has no
    transform (``dense`` and ``norm`` are ``None``): just the decoder, after the model's final
    norm. ``marker`` is a tensor that must be present for a state dict to hold this head, where
    the head's other names also occur in a classifier (ModernBERT's classification head is
    ``head.dense``/``head.norm`` too).
    """

    dense: str | None
    norm: str | None
    bias: tuple[str, ...]
    decoder: str | None
    marker: str | None = None


@dataclass(frozen=True)
class Chunk:
    """Part ``index`` of ``count`` equal parts (along the last dimension) of the output of the
    modules matching ``pattern``: one projection of a fused query-key-value module, or one
    factor of a fused gate."""

    pattern: str
    index: int = 0
    count: int = 1


Part = str | Chunk


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
class LinearScores:
    """A method of the attention modules matching ``pattern`` that adds to the attention scores
    terms linear in the query or in the key (the other factor a constant of the model), e.g.
    DeBERTa's relative-position terms: content-to-position ``q . k_pos(r)`` and
    position-to-content ``k . q_pos(r)``. ``arguments`` name the method's parameters holding the
    query and key layers. A module hook cannot reach these terms (they are computed from the
    projections' outputs inside the attention), so the rules patch the method for the pass."""

    pattern: str
    method: str
    arguments: tuple[str, ...]


@dataclass(frozen=True)
class PropagationMap:
    """Where a family's propagation rules apply, as module-name patterns (``fnmatch``).

    ``query``, ``key`` and ``value`` are the attention projections (one module, or one
    :class:`Chunk` of a fused module, per layer); ``activations`` the elementwise
    non-linearities that are modules (GELU, SiLU, a pooler's tanh); ``between`` the ones that
    are function calls. ReLU needs no entry: its gradient already is the identity rule's
    ``f(x)/x``. A gated MLP (SwiGLU, GeGLU) multiplies ``gates`` (the activation's output) by
    ``ups`` (a linear projection) elementwise; the rules treat that product like attention's
    (constant gate under CP-LRP, the uniform 1/2 split under AttnLRP). ``linear_scores`` is where
    score terms linear in the query or the key are computed (:class:`LinearScores`), which the
    uniform rule must not split. Every LayerNorm is found by type, and every RMSNorm (see
    :attr:`Family.rms_offset`). ``unsupported`` names optional parts the rules do not cover; a
    model that has one is refused. ``head_activations`` and ``head_between`` are the same for
    the sequence-classification head (a pooler's tanh, a dense layer's activation): applied
    where the model has them, and absent from a token classifier, whose head is one linear
    layer.
    """

    query: Part
    key: Part
    value: Part
    activations: tuple[str, ...] = ()
    between: tuple[Between, ...] = ()
    gates: tuple[Part, ...] = ()
    ups: tuple[Part, ...] = ()
    unsupported: tuple[str, ...] = ()
    linear_scores: LinearScores | None = None
    head_activations: tuple[str, ...] = ()
    head_between: tuple[Between, ...] = ()


@dataclass(frozen=True)
class Family:
    """Where one model family keeps its parts.

    ``final_norm``: the module of a pre-norm model that normalises the last block's output
    before any head; the last hidden state Hugging Face reports is taken after it, so layersal
    reads the last layer at its input instead (every layer is then a residual stream), and the
    LM head applies it before decoding. ``causal``: a decoder-only model (padded on the right,
    pooled at the last real token, decoded as next-token predictions). ``rms_offset``: an
    RMSNorm of the family scales by ``rms_offset + weight`` (1 for Gemma, else 0).
    """

    name: str
    base: str
    heads: tuple[HeadLayout, ...]
    activation_attr: str | None = None
    default_activation: str = "gelu"
    norm_eps: float | None = None
    propagation: PropagationMap | None = None
    embeddings: str | None = None
    final_norm: str | None = None
    causal: bool = False
    rms_offset: float = 0.0

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
        return float(getattr(config, "layer_norm_eps", getattr(config, "norm_eps", 1e-12)))

    @property
    def embedding_key(self) -> str:
        """State-dict name of the word-embedding matrix (tied decoder)."""
        return self.embeddings or f"{self.base}.embeddings.word_embeddings.weight"


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
    head_activations: tuple[str, ...] = (), head_between: tuple[Between, ...] = ()
) -> PropagationMap:
    """The BERT layout of the attention projections (BERT, RoBERTa, ELECTRA, MiniLM)."""
    return PropagationMap(
        query="*.attention.self.query",
        key="*.attention.self.key",
        value="*.attention.self.value",
        activations=("*.intermediate.intermediate_act_fn",),
        head_activations=head_activations,
        head_between=head_between,
    )


_BERT_RULES = _bert_attention(("*.pooler.activation",))
_ROBERTA_RULES = _bert_attention(head_between=(Between("classifier.dense", "classifier.out_proj"),))

_CAUSAL_HEAD = HeadLayout(dense=None, norm=None, bias=(), decoder="lm_head.weight")


def _llama_style(name: str, rms_offset: float = 0.0) -> Family:
    """Llama and its descendants (Qwen2, Mistral, Gemma): pre-RMSNorm blocks, rotary
    attention, a SwiGLU (GeGLU for Gemma) MLP, a final RMSNorm, a causal-LM head."""
    return Family(
        name,
        "model",
        (_CAUSAL_HEAD,),
        embeddings="model.embed_tokens.weight",
        final_norm="model.norm",
        causal=True,
        rms_offset=rms_offset,
        propagation=PropagationMap(
            query="*.self_attn.q_proj",
            key="*.self_attn.k_proj",
            value="*.self_attn.v_proj",
            activations=("*.mlp.act_fn",),
            gates=("*.mlp.act_fn",),
            ups=("*.mlp.up_proj",),
        ),
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
        propagation=_bert_attention(("classifier.activation",)),
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
            head_between=(Between("pooler.dense", "classifier"),),
            unsupported=("*.encoder.conv",),
            linear_scores=LinearScores(
                "*.attention.self", "disentangled_attention_bias", ("query_layer", "key_layer")
            ),
        ),
    ),
    "modernbert": Family(
        "modernbert",
        "model",
        (
            HeadLayout(
                dense="head.dense",
                norm="head.norm",
                bias=("decoder.bias",),
                decoder="decoder.weight",
                marker="decoder.bias",
            ),
        ),
        activation_attr="classifier_activation",
        embeddings="model.embeddings.tok_embeddings.weight",
        final_norm="model.final_norm",
        propagation=PropagationMap(
            query=Chunk("*.attn.Wqkv", 0, 3),
            key=Chunk("*.attn.Wqkv", 1, 3),
            value=Chunk("*.attn.Wqkv", 2, 3),
            activations=("*.mlp.act",),
            head_activations=("head.act",),
            gates=("*.mlp.act",),
            ups=(Chunk("*.mlp.Wi", 1, 2),),
        ),
    ),
    "gpt2": Family(
        "gpt2",
        "transformer",
        (_CAUSAL_HEAD,),
        embeddings="transformer.wte.weight",
        final_norm="transformer.ln_f",
        causal=True,
        propagation=PropagationMap(
            query=Chunk("*.attn.c_attn", 0, 3),
            key=Chunk("*.attn.c_attn", 1, 3),
            value=Chunk("*.attn.c_attn", 2, 3),
            activations=("*.mlp.act",),
        ),
    ),
    "llama": _llama_style("llama"),
    "qwen2": _llama_style("qwen2"),
    "mistral": _llama_style("mistral"),
    "gemma": _llama_style("gemma", rms_offset=1.0),
}


def norm_eps(module: Any) -> float:
    """The epsilon of a norm module, whatever the family calls it (``variance_epsilon`` in
    Llama's RMSNorm, ``eps`` elsewhere)."""
    return float(getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6)))


def family_for(config: Any) -> Family | None:
    """The family of a Hugging Face config, or ``None`` when layersal has no adapter for it."""
    return FAMILIES.get(getattr(config, "model_type", ""))
