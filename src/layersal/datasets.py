"""Labelled evaluation data: texts with gold labels, read by :class:`~layersal.inputs.Source`."""

from __future__ import annotations

import html
import random
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .inputs import Source, text_rows
from .targets import target_index

_NUMERIC_ENTITY = re.compile(r"(?<!&)#(\d+);")


@dataclass
class LabelledTexts:
    """Texts with gold label names (``None`` where a file has no labels)."""

    texts: list[str]
    labels: list[str | None]
    source: str

    def __len__(self) -> int:
        return len(self.texts)

    def sample(self, n: int | None, seed: int = 0) -> LabelledTexts:
        """A seeded random subset of ``n`` rows in file order (all rows when ``n`` is None)."""
        if n is None or n >= len(self.texts):
            return self
        keep = sorted(random.Random(seed).sample(range(len(self.texts)), n))
        return LabelledTexts(
            [self.texts[i] for i in keep],
            [self.labels[i] for i in keep],
            f"{self.source} (sample {n}, seed {seed})",
        )

    def head(self, n: int | None) -> LabelledTexts:
        """The first ``n`` rows."""
        if n is None:
            return self
        return LabelledTexts(self.texts[:n], self.labels[:n], f"{self.source} (first {n})")


def clean_agnews(text: str) -> str:
    """Undo AG News escapes: CSV quoting left in some rows (``"..."`` with doubled inner
    quotes), ``\\`` for a line break, ``#36;`` for ``$``, HTML entities."""
    if len(text) > 1 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('""', '"')
    text = _NUMERIC_ENTITY.sub(r"&#\1;", text.replace("\\", " "))
    return re.sub(r"\s+", " ", html.unescape(text)).strip()


def read_labelled(path: str | Path, text_column: str | None = None) -> LabelledTexts:
    """Texts and gold labels from any file :class:`~layersal.inputs.Source` reads.

    A table with a header (SST-2) gives its text column and its ``label`` column; one without
    (AG News: ``text<TAB>label-name``) gives its first column as the text and its last as the
    label, with AG News escapes undone. Labels are kept as strings (names or indices); a file
    without labels gives ``None`` for each. Rows that cannot be read are errors.
    """
    source = Source(path, text_column, label_last=True)
    clean = source.format in ("tsv", "csv") and not source.has_header
    texts: list[str] = []
    labels: list[str | None] = []
    for row in text_rows(source):
        text = clean_agnews(row.text or "") if clean else row.text or ""
        if text.strip():
            texts.append(text)
            labels.append(row.label)
    if not texts:
        raise InputError(f"{path} contains no texts")
    return LabelledTexts(texts, labels, str(path))


def label_indices(labels: list[str | None], names: list[str]) -> list[int] | None:
    """Gold labels (names, any case, or indices) as class indices; ``None`` if any is missing."""
    if any(label is None for label in labels):
        return None
    return [target_index(str(label), names, what="gold label") for label in labels]
