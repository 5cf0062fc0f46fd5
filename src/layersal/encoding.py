"""Text -> :class:`Encoded` batch: token ids, character offsets, which tokens are content."""

from __future__ import annotations

import inspect
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .inputs import Focused, check_texts, is_pair
from .tasks import FOCUS


@dataclass
class Encoded:
    """A padded batch of tokenised texts.

    ``content`` marks real input tokens: not padding and not special tokens ([CLS], [SEP], ...).
    ``offsets`` are character spans into ``texts`` (``(0, 0)`` for special tokens and padding).
    ``text_of[r]`` is the index (in the caller's list) of the text row ``r`` belongs to; rows
    are windows of one text when long texts are split. For pairs of texts, ``texts`` holds the
    pairs, ``segments[r][i]`` says which text of the pair token ``i`` comes from (0, 1, or
    ``None`` for special tokens and padding; offsets index into that text), and word ids run on
    across the two texts, so that no word of the second shares an id with one of the first.
    """

    texts: list[Any]
    inputs: dict[str, torch.Tensor]
    offsets: torch.Tensor
    content: torch.Tensor
    word_ids: list[list[int | None]]
    truncated: list[bool]
    text_of: list[int] = field(default_factory=list)
    segments: list[list[int | None]] | None = None

    @property
    def input_ids(self) -> torch.Tensor:
        return self.inputs["input_ids"]

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.inputs["attention_mask"]

    def __len__(self) -> int:
        return len(self.texts)


def token_pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Display text of each token: the tokenizer's own piece (``##ing``, ``▁story``), except
    that a byte-level BPE piece (RoBERTa, GPT-2, Llama 3, Qwen2: ``Ġstory``, ``âĢĻ``) is
    decoded back to the characters it stands for (`` story``; a piece holding part of a
    character's bytes shows as ``�``). An id the tokenizer does not know (models often have more
    embedding rows than tokens) shows as ``<id N>``."""
    ids = list(ids)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    readable = "ByteLevel" in repr(getattr(backend, "decoder", None))
    return [
        f"<id {i}>"
        if piece is None
        else tokenizer.convert_tokens_to_string([piece])
        if readable
        else piece
        for i, piece in zip(ids, pieces)
    ]


def model_input_names(model: Any) -> set[str]:
    """Named parameters of ``model.forward``: which tokenizer outputs it accepts."""
    return set(inspect.signature(model.forward).parameters)


def encode(
    tokenizer: Any,
    texts: Sequence[Any],
    max_length: int,
    model_inputs: Collection[str] | None = None,
    *,
    overlap: int | None = None,
) -> Encoded:
    """Tokenise ``texts`` into one padded batch of at most ``max_length`` tokens per row.

    With ``overlap=None`` each text is one row, truncated if too long (``truncated[b]``).
    With an ``overlap`` (tokens shared by neighbouring windows), a long text becomes several
    rows (windows) whose offsets still index the full text; ``text_of[r]`` names each row's
    text. ``model_inputs`` names the optional tensors the model accepts (DistilBERT, for one,
    takes no ``token_type_ids``). Pairs of texts (2-tuples) are one row each, never windows.
    """
    if texts and isinstance(texts[0], Focused):
        return _encode_focused(tokenizer, list(texts), max_length, model_inputs, overlap)
    texts = check_texts(texts)
    if is_pair(texts[0]):
        return _encode_pairs(tokenizer, texts, max_length, model_inputs)
    batch = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        stride=overlap or 0,
        padding=True,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_tensors="pt",
        split_special_tokens=True,  # "[SEP]" typed in a text is text, not a separator
    )
    sample = batch.pop("overflow_to_sample_mapping").tolist()
    if overlap is None:
        chosen = [sample.index(b) for b in range(len(texts))]
        truncated = [sample.count(b) > 1 for b in range(len(texts))]
    else:
        chosen = list(range(len(sample)))
        truncated = [False] * len(sample)
    rows = torch.tensor(chosen)
    offsets = batch.pop("offset_mapping")[rows]
    special = batch.pop("special_tokens_mask")[rows].bool()
    word_ids = [batch.word_ids(r) for r in chosen]
    keep = {"input_ids", "attention_mask"} | set(
        batch.keys() if model_inputs is None else model_inputs
    )
    inputs = {k: v[rows] for k, v in batch.items() if k in keep}
    length = int(inputs["attention_mask"].sum(-1).max())
    inputs = {k: v[:, :length].contiguous() for k, v in inputs.items()}
    content = inputs["attention_mask"].bool() & ~special[:, :length]
    return Encoded(
        texts=[texts[sample[r]] for r in chosen],
        inputs=inputs,
        offsets=offsets[:, :length],
        content=content,
        word_ids=[w[:length] for w in word_ids],
        truncated=truncated,
        text_of=[sample[r] for r in chosen],
    )


def _encode_focused(
    tokenizer: Any,
    items: list[Any],
    max_length: int,
    model_inputs: Collection[str] | None,
    overlap: int | None,
) -> Encoded:
    """Items read with a focus (:class:`~layersal.inputs.Focused`): encoded as their inner
    texts, with a :data:`~layersal.tasks.FOCUS` input that is, per row, the item's ``offset``
    on the content tokens of its span (of its first text), or on every attended position when
    it names no span. ``texts`` keep the focused items."""
    if not all(isinstance(item, Focused) for item in items):
        raise TypeError("a batch mixes focused items with plain ones")
    inner = encode(tokenizer, [item.item for item in items], max_length, model_inputs,
                   overlap=overlap)  # fmt: skip
    focus = torch.zeros(inner.input_ids.shape, dtype=torch.float32)
    for r, b in enumerate(inner.text_of):
        item = items[b]
        if item.start is None:
            focus[r] = inner.attention_mask[r].float()
        else:
            segments = inner.segments[r] if inner.segments is not None else [0] * focus.shape[1]
            first = torch.tensor([s == 0 for s in segments])
            starts, ends = inner.offsets[r, :, 0], inner.offsets[r, :, 1]
            inside = (starts < item.end) & (ends > item.start)
            focus[r] = (inner.content[r] & first & inside).float()
        focus[r] *= item.weight
    inner.inputs[FOCUS] = focus
    inner.texts = [items[b] for b in inner.text_of]
    return inner


def _encode_pairs(
    tokenizer: Any, pairs: Sequence[Any], max_length: int, model_inputs: Collection[str] | None
) -> Encoded:
    """Pairs of texts, one row each, the longer text of a pair cut first when too long (pairs
    are never split into windows)."""
    firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
    common = {"split_special_tokens": True, "verbose": False}
    whole = tokenizer(firsts, seconds, truncation=False, **common)["input_ids"]
    batch = tokenizer(
        firsts,
        seconds,
        truncation="longest_first",
        max_length=max_length,
        padding=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_tensors="pt",
        **common,
    )
    special = batch.pop("special_tokens_mask").bool()
    offsets = batch.pop("offset_mapping")
    segments = [batch.sequence_ids(r) for r in range(len(pairs))]
    word_ids = [_running_word_ids(batch.word_ids(r), segments[r]) for r in range(len(pairs))]
    keep = {"input_ids", "attention_mask"} | set(
        batch.keys() if model_inputs is None else model_inputs
    )
    inputs = {k: v for k, v in batch.items() if k in keep}
    return Encoded(
        texts=list(pairs),
        inputs=inputs,
        offsets=offsets,
        content=inputs["attention_mask"].bool() & ~special,
        word_ids=word_ids,
        truncated=[len(ids) > max_length for ids in whole],
        text_of=list(range(len(pairs))),
        segments=segments,
    )


def _running_word_ids(word_ids: list[int | None], segments: list[int | None]) -> list[int | None]:
    """Word ids of a pair's row with the second text's ids moved past the first text's."""
    first = [w for w, s in zip(word_ids, segments) if s == 0 and w is not None]
    shift = max(first) + 1 if first else 0
    return [w + shift if w is not None and s == 1 else w for w, s in zip(word_ids, segments)]


def select_rows(encoded: Encoded, rows: Sequence[int]) -> Encoded:
    """A sub-batch of ``encoded`` (used to keep window batches to a bounded size)."""
    index = torch.tensor(list(rows))
    length = int(encoded.attention_mask[index].sum(-1).max())
    return Encoded(
        texts=[encoded.texts[r] for r in rows],
        inputs={k: v[index, :length].contiguous() for k, v in encoded.inputs.items()},
        offsets=encoded.offsets[index, :length],
        content=encoded.content[index, :length],
        word_ids=[encoded.word_ids[r][:length] for r in rows],
        truncated=[encoded.truncated[r] for r in rows],
        text_of=[encoded.text_of[r] for r in rows],
        segments=None if encoded.segments is None else [encoded.segments[r][:length] for r in rows],
    )
