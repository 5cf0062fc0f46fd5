"""Entities of a token classifier: what one is, how tags become entities, how a target names one.

An :class:`Entity` is a span of characters of the text with a label (``PER``, ``ORG``, ...).
A token classifier tags every token (``B-PER``, ``I-PER``, ``O``, ...); :func:`decode_entities`
merges the tags into entities exactly as ``pipeline("token-classification",
aggregation_strategy="simple")`` does: a token tagged ``B-X``, or tagged with another type
than the token before it, starts an entity; an ``I-X`` token after an ``X`` token continues
it; ``O`` tokens are no entity. Sub-word pieces are tokens like any other, so a word whose
pieces are tagged alike is one entity, and a word is never merged with a repeat of itself
elsewhere: entities are spans, not strings.

A target (:func:`entity_target`) names a span by character offsets (``(10, 16)``,
``"10:16"``), or by word index (``3``: the explanation's fourth word), with or without a
label (``"10:16=ORG"``, ``{"start": 10, "end": 16, "label": "ORG"}``); the span with no
label must be an entity the model predicts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InputError

OUTSIDE = "O"


@dataclass(frozen=True)
class Entity:
    """A labelled span of a text: characters ``start:end`` (``text[start:end]`` is ``word``),
    its entity type ``label`` and ``probability``: the geometric mean, over the span's tokens,
    of each token's probability of the type (``exp`` of the explained scalar)."""

    start: int
    end: int
    label: str
    word: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "label": self.label,
            "word": self.word,
            "probability": self.probability,
        }


@dataclass(frozen=True)
class EntityTarget:
    """A span the user names (character offsets, or a word index to resolve), with or
    without a label."""

    start: int | None = None
    end: int | None = None
    word: int | None = None
    label: str | None = None

    def __str__(self) -> str:
        where = f"word {self.word}" if self.word is not None else f"{self.start}:{self.end}"
        return where + ("" if self.label is None else f"={self.label}")


def split_tag(tag: str) -> tuple[str, str]:
    """``("B", "PER")`` for ``B-PER`` (also ``B_PER``), ``("I", "PER")`` for ``I-PER``, and
    ``("I", tag)`` for a tag without a prefix (``O``, ``NOUN``), as the pipeline reads tags."""
    for prefix in ("B-", "I-", "B_", "I_"):
        if tag.startswith(prefix):
            return prefix[0], tag[2:]
    return "I", tag


def entity_types(tags: Sequence[str]) -> list[str]:
    """The entity types of a tag set, in first-seen order: ``O, B-PER, I-PER`` -> ``O, PER``."""
    types: list[str] = []
    for tag in tags:
        kind = split_tag(tag)[1]
        if kind not in types:
            types.append(kind)
    return types


def type_matrix(tags: Sequence[str]) -> torch.Tensor:
    """``(tags, types)`` 0/1 matrix: which type each tag belongs to (``B-X`` and ``I-X`` to X)."""
    types = entity_types(tags)
    matrix = torch.zeros(len(tags), len(types))
    for i, tag in enumerate(tags):
        matrix[i, types.index(split_tag(tag)[1])] = 1.0
    return matrix


def span_log_probs(logits: torch.Tensor, focus: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``(B, types)``: per type, the mean over a row's ``focus`` tokens of the log of the
    token's probability of that type (the sum of its tags' probabilities, ``B-X`` + ``I-X``).

    ``logits`` are ``(B, n, tags)``, ``focus`` ``(B, n)`` (non-zero on the span). A row whose
    focus is empty (its tokens all deleted by a metric) gets the uniform ``log(1/types)``.
    """
    log_p = torch.log_softmax(logits.float(), dim=-1)
    grouped = torch.logsumexp(
        log_p.unsqueeze(-1) + torch.log(matrix.to(log_p.device)).view(1, 1, *matrix.shape),
        dim=-2,
    )  # (B, n, types): log sum of the type's tags' probabilities
    weights = (focus.to(log_p.device) != 0).float()
    count = weights.sum(-1, keepdim=True)
    mean = (grouped * weights.unsqueeze(-1)).sum(-2) / count.clamp(min=1.0)
    uniform = torch.full_like(mean, -math.log(matrix.shape[1]))
    return torch.where(count > 0, mean, uniform)


def decode_entities(
    text: str,
    tags: Sequence[str],
    probs: torch.Tensor,
    offsets: Sequence[tuple[int, int]],
) -> list[Entity]:
    """The entities of one text from its content tokens' tag probabilities ``(k, tags)`` and
    character ``offsets``, merged as the pipeline's ``"simple"`` aggregation merges them.
    Each entity's probability is the geometric mean of its tokens' probability of its type."""
    matrix = type_matrix(tags)
    types = entity_types(tags)
    type_probs = probs.float() @ matrix  # (k, types)
    groups: list[tuple[str, list[int]]] = []
    last: str | None = None
    for i, tag_index in enumerate(probs.argmax(-1).tolist()):
        bi, kind = split_tag(tags[tag_index])
        if groups and kind == last and bi != "B":
            groups[-1][1].append(i)
        else:
            groups.append((kind, [i]))
        last = kind
    found = []
    for kind, members in groups:
        if kind == OUTSIDE:
            continue
        start, end = int(offsets[members[0]][0]), int(offsets[members[-1]][1])
        column = type_probs[members, types.index(kind)].clamp(min=1e-12)
        found.append(
            Entity(start, end, kind, text[start:end], float(torch.log(column).mean().exp()))
        )
    return found


def entity_target(value: Any, labels: Sequence[str]) -> EntityTarget:
    """Read a target that names a span: a word index (``3``), offsets (``(10, 16)``,
    ``"10:16"``), either with a label (``"10:16=ORG"``, ``"3=ORG"``, ``{"start": 10, "end":
    16, "label": "ORG"}``, ``{"word": 3}``). The label is checked against ``labels``."""
    label: Any = None
    if isinstance(value, EntityTarget):
        found = value
    elif isinstance(value, Mapping):
        unknown = sorted(set(value) - {"start", "end", "word", "label"})
        if unknown:
            raise InputError(f"an entity target has start, end, word and label, not {unknown[0]!r}")
        found = _span(value.get("start"), value.get("end"), value.get("word"))
        label = value.get("label")
    elif isinstance(value, str):
        where, _, label = value.partition("=")
        label = label.strip() or None
        start, colon, end = where.partition(":")
        found = (
            _span(_int(start, value), _int(end, value), None)
            if colon
            else _span(None, None, _int(where, value))
        )
    elif isinstance(value, (tuple, list)) and len(value) in (2, 3):
        found = _span(value[0], value[1], None)
        label = value[2] if len(value) == 3 else None
    elif isinstance(value, int) and not isinstance(value, bool):
        found = _span(None, None, value)
    else:
        raise InputError(
            f"cannot read {value!r} as an entity target: give a word index (3), character "
            "offsets ((10, 16) or '10:16'), optionally with a label ('10:16=ORG')"
        )
    if label is None:
        label = found.label
    if label is not None:
        lowered = [name.lower() for name in labels]
        if str(label).lower() not in lowered:
            raise InputError(f"unknown entity label {label!r}; labels are: {', '.join(labels)}")
        label = labels[lowered.index(str(label).lower())]
    return EntityTarget(found.start, found.end, found.word, label)


def _int(text: str, whole: str) -> int:
    stripped = text.strip()
    if not stripped.lstrip("-").isdigit():
        raise InputError(
            f"cannot read {whole!r} as an entity target: give a word index ('3') or character "
            "offsets ('10:16'), optionally with '=LABEL'"
        )
    return int(stripped)


def _span(start: Any, end: Any, word: Any) -> EntityTarget:
    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if word is not None:
        if not whole(word) or word < 0:
            raise InputError(f"a word index must be an integer >= 0, not {word!r}")
        return EntityTarget(word=word)
    if not (whole(start) and whole(end)) or not 0 <= start < end:
        raise InputError(
            f"an entity span needs character offsets 0 <= start < end, not {start!r}:{end!r}"
        )
    return EntityTarget(start=start, end=end)


def resolve_target(
    target: EntityTarget,
    text: str,
    words: Sequence[tuple[int, int]],
    predicted: Sequence[Entity],
    probability: Any,
) -> Entity:
    """The entity a target names in ``text``.

    ``words`` are the text's word spans (for a word index); ``predicted`` the model's entities.
    A span that overlaps a predicted entity is that entity (its span; the target's label if it
    names one); any other span must name a label, and is explained as the target says, widened
    to the edges of the words it touches (``0:5`` of "Angela" is "Angela").
    ``probability(start, end, label)`` gives the span's probability of a label.
    """
    if target.word is not None:
        if target.word >= len(words):
            raise InputError(
                f"word {target.word} is out of range: the text has {len(words)} words "
                f"(0..{len(words) - 1})"
            )
        start, end = words[target.word]
    else:
        assert target.start is not None and target.end is not None
        start, end = target.start, target.end
        if end > len(text):
            raise InputError(
                f"span {start}:{end} is past the end of the text ({len(text)} characters)"
            )
    if target.word is None:  # a span typed by hand covers whole words: snap to their edges
        touched = [(s, e) for s, e in words if s < end and start < e]
        if touched:
            start, end = min(s for s, _ in touched), max(e for _, e in touched)
    overlapping = [e for e in predicted if e.start < end and start < e.end]
    if overlapping:
        chosen = overlapping[0]
        start, end = chosen.start, chosen.end
        if target.label is None or target.label == chosen.label:
            return chosen
    elif target.label is None:
        where = f"word {target.word}" if target.word is not None else f"span {start}:{end}"
        raise InputError(
            f"{where} ({text[start:end]!r}) is not an entity the model predicts; name a label to "
            f"explain it anyway (e.g. '{start}:{end}=LABEL')"
        )
    assert target.label is not None
    chance = float(probability(start, end, target.label))
    return Entity(start, end, target.label, text[start:end], chance)


__all__ = [
    "Entity",
    "EntityTarget",
    "decode_entities",
    "entity_target",
    "entity_types",
    "resolve_target",
    "span_log_probs",
    "split_tag",
    "type_matrix",
]
