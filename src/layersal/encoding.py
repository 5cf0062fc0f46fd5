"""Text -> :class:`Encoded` batch: token ids, character offsets, which tokens are content."""

from __future__ import annotations

from collections.abc import Sequence
import inspect
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InputError


@dataclass
class Encoded:
    """A padded batch of tokenised texts.

    ``content`` marks real input tokens: not padding and not special tokens ([CLS], [SEP], ...).
    ``offsets`` are character spans into ``texts`` (``(0, 0)`` for special tokens and padding).
    """

    texts: list[str]
    inputs: dict[str, torch.Tensor]
    offsets: torch.Tensor
    content: torch.Tensor
    word_ids: list[list[int | None]]
    truncated: list[bool]

    @property
    def input_ids(self) -> torch.Tensor:
        return self.inputs["input_ids"]

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.inputs["attention_mask"]

    def __len__(self) -> int:
        return len(self.texts)


def model_input_names(model: Any) -> set[str]:
    """Named parameters of ``model.forward``: which tokenizer outputs it accepts."""
    return set(inspect.signature(model.forward).parameters)


def check_texts(texts: Sequence[Any]) -> list[str]:
    """Reject what cannot be explained: non-strings and empty or whitespace-only texts."""
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"text {i} is a {type(text).__name__}, not a string")
        if not text.strip():
            raise InputError(f"text {i} is empty" if not text else f"text {i} is only whitespace")
        out.append(text)
    if not out:
        raise InputError("no texts to explain")
    return out


def encode(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    model_inputs: Sequence[str] | None = None,
) -> Encoded:
    """Tokenise ``texts`` into one padded batch, truncating each to ``max_length`` tokens.

    ``truncated[b]`` tells whether text ``b`` lost tokens; ``model_inputs`` names the optional
    tensors the model accepts (DistilBERT, for one, takes no ``token_type_ids``).
    """
    texts = check_texts(texts)
    batch = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        padding=True,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_tensors="pt",
    )
    sample = batch.pop("overflow_to_sample_mapping").tolist()
    first = [sample.index(b) for b in range(len(texts))]
    truncated = [sample.count(b) > 1 for b in range(len(texts))]
    rows = torch.tensor(first)
    offsets = batch.pop("offset_mapping")[rows]
    special = batch.pop("special_tokens_mask")[rows].bool()
    word_ids = [batch.word_ids(r) for r in first]
    keep = {"input_ids", "attention_mask"} | set(batch.keys() if model_inputs is None else model_inputs)
    inputs = {k: v[rows] for k, v in batch.items() if k in keep}
    length = int(inputs["attention_mask"].sum(-1).max())
    inputs = {k: v[:, :length].contiguous() for k, v in inputs.items()}
    content = inputs["attention_mask"].bool() & ~special[:, :length]
    return Encoded(
        texts=list(texts),
        inputs=inputs,
        offsets=offsets[:, :length],
        content=content,
        word_ids=[w[:length] for w in word_ids],
        truncated=truncated,
    )
