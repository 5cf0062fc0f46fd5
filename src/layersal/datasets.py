"""Labelled evaluation data: SST-2 style TSV (with header) and AG News style TSV (without)."""

from __future__ import annotations

import csv
import html
import random
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

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


def read_labelled(path: str | Path) -> LabelledTexts:
    """Read a TSV of texts and labels.

    With a header naming a ``sentence``/``text`` and a ``label`` column (SST-2), those columns;
    without one (AG News: ``text<TAB>label-name``), the first column is the text and the last
    the label, and AG News escapes are undone. Labels are kept as strings (names or indices).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such data file: {path}")
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = [r for r in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None
    if not rows:
        raise InputError(f"{path} is empty")
    header = [h.strip().lower() for h in rows[0]]
    text_column = next((header.index(c) for c in ("sentence", "text") if c in header), None)
    if text_column is not None:
        label_column = header.index("label") if "label" in header else None
        body = rows[1:]
        texts = [r[text_column] for r in body]
    else:
        label_column = len(rows[0]) - 1 if len(rows[0]) > 1 else None
        body = rows
        texts = [clean_agnews(r[0]) for r in body]
    labels = [r[label_column] if label_column is not None else None for r in body]
    keep = [i for i, t in enumerate(texts) if t.strip()]
    return LabelledTexts([texts[i] for i in keep], [labels[i] for i in keep], str(path))


def label_indices(labels: list[str | None], names: list[str]) -> list[int] | None:
    """Map gold labels (names, case-insensitive, or integer strings) to class indices."""
    if any(label is None for label in labels):
        return None
    lowered = [n.lower() for n in names]
    out = []
    for label in labels:
        text = str(label).strip()
        if text.lower() in lowered:
            out.append(lowered.index(text.lower()))
        elif text.isdigit() and int(text) < len(names):
            out.append(int(text))
        else:
            raise InputError(
                f"gold label {text!r} is not one of the model's labels ({', '.join(names)})"
            )
    return out
