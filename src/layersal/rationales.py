"""Human rationales and plausibility: does a saliency map point where annotators did?

Two inputs are read into :class:`RationaleExample` (words = whitespace tokens of the text):

* the ERASER layout (DeYoung et al., 2020): a folder with ``{split}.jsonl`` annotations and a
  ``docs/`` folder of whitespace-tokenised documents, one sentence per line;
* a self-contained jsonl, one object per line:
  ``{"text": ..., "label": ..., "rationale": [[start_char, end_char], ...], "id": optional}``.

The metrics compare word scores with the gold rationale words. Definitions: ``docs/metrics.md``.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

IOU_THRESHOLD = 0.5


@dataclass
class RationaleExample:
    """One annotated text. ``spans`` are gold rationale spans over ``words`` (end exclusive);
    ``offsets`` are each word's character span in ``text``."""

    id: str
    text: str
    words: list[str]
    offsets: list[tuple[int, int]]
    label: str | int | None
    spans: list[tuple[int, int]]

    @property
    def mask(self) -> np.ndarray:
        """Boolean gold rationale per word (the union of ``spans``)."""
        out = np.zeros(len(self.words), dtype=bool)
        for start, end in self.spans:
            out[start:end] = True
        return out


@dataclass
class Plausibility:
    """Agreement of one text's word scores with its gold rationale (higher is better, all in
    [0, 1]; NaN when the text has no gold rationale). ``k``: words in the predicted rationale."""

    token_f1: float
    iou_f1: float
    auprc: float
    k: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def whitespace_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Whitespace tokens of ``text`` and their character spans."""
    matches = list(re.finditer(r"\S+", text))
    return [m.group() for m in matches], [(m.start(), m.end()) for m in matches]


def read_rationales(path: str | Path, split: str = "val") -> list[RationaleExample]:
    """Read a simple jsonl file, or an ERASER folder's ``split`` (``train``/``val``/``test``)."""
    path = Path(path)
    if path.is_dir():
        return read_eraser(path, split)
    if path.is_file():
        return read_simple(path)
    raise InputError(f"no rationale file or ERASER folder at {path}")


def read_simple(path: str | Path) -> list[RationaleExample]:
    """Examples from a jsonl of ``{"text", "label", "rationale": [[start_char, end_char], ...]}``
    (optional ``"id"``; other fields ignored). A character span marks every word it overlaps."""
    path = Path(path)
    examples = []
    for number, record in _jsonl(path):
        where = f"{path.name} line {number}"
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{where}: needs a non-empty 'text'")
        words, offsets = whitespace_words(text)
        spans = [
            _char_span_to_words(span, offsets, len(text), where)
            for span in record.get("rationale") or []
        ]
        examples.append(
            RationaleExample(
                id=str(record.get("id", f"{path.name}:{number}")),
                text=text,
                words=words,
                offsets=offsets,
                label=record.get("label"),
                spans=sorted(set(spans)),
            )
        )
    return examples


def read_eraser(folder: str | Path, split: str = "val") -> list[RationaleExample]:
    """Examples from an ERASER folder: ``{split}.jsonl`` annotations (``annotation_id``,
    ``classification``, ``evidences``: groups of ``{docid, start_token, end_token, ...}``) and
    ``docs/{docid}``. The text is the document's tokens joined by single spaces; every evidence
    of every group becomes a gold span. Examples whose evidences span several documents (e-SNLI
    style) are refused."""
    folder = Path(folder)
    annotations = folder / f"{split}.jsonl"
    if not annotations.is_file():
        raise InputError(f"ERASER folder {folder} has no {split}.jsonl")
    examples = []
    for number, record in _jsonl(annotations):
        where = f"{annotations.name} line {number}"
        try:
            examples.append(_eraser_example(record, folder, where))
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"{where}: malformed ERASER annotation ({error!r})") from None
    return examples


def _eraser_example(record: dict[str, Any], folder: Path, where: str) -> RationaleExample:
    evidences = [e for group in record.get("evidences") or [] for e in group]
    docids = {e["docid"] for e in evidences}
    if not docids:
        docids = set(record.get("docids") or [record["annotation_id"]])
    if len(docids) != 1:
        raise InputError(f"{where}: evidences from several documents are not supported")
    words = _eraser_document(folder / "docs" / docids.pop(), where)
    spans = set()
    for e in evidences:
        start, end = int(e["start_token"]), int(e["end_token"])
        if not 0 <= start < end <= len(words):
            raise InputError(
                f"{where}: evidence tokens {start}:{end} outside a {len(words)}-token document"
            )
        spans.add((start, end))
    text = " ".join(words)
    return RationaleExample(
        id=str(record["annotation_id"]),
        text=text,
        words=words,
        offsets=whitespace_words(text)[1],
        label=record.get("classification"),
        spans=sorted(spans),
    )


def word_scores(example: RationaleExample, pieces: Iterable[tuple[int, int, float]]) -> np.ndarray:
    """Scores of ``example.words`` from scored character spans ``(start, end, score)`` of its
    text, such as an explanation's tokens or words: each piece adds its score to the word holding
    its first character. Words no piece reaches (cut by truncation) score 0."""
    starts = [s for s, _ in example.offsets]
    out = np.zeros(len(example.words))
    for start, _end, score in pieces:
        index = bisect.bisect_right(starts, start) - 1
        if index >= 0 and start < example.offsets[index][1]:
            out[index] += score
    return out


def top_k_mask(scores: Sequence[float], k: int) -> np.ndarray:
    """The ``k`` highest scores as a boolean mask; ties go to the earlier position."""
    values = np.asarray(scores, dtype=float)
    out = np.zeros(len(values), dtype=bool)
    out[np.argsort(-values, kind="stable")[:k]] = True
    return out


def runs(mask: Sequence[bool] | np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as ``(start, end)`` spans, end exclusive."""
    padded = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(s), int(e)) for s, e in zip(edges[::2], edges[1::2])]


def token_f1(
    scores: Sequence[float], gold: Sequence[bool] | np.ndarray, k: int | None = None
) -> float:
    """F1 of the top-``k`` words (default: as many as gold words) against the gold mask.

    With the default ``k`` precision equals recall equals F1. NaN without gold words.
    """
    truth = np.asarray(gold, dtype=bool)
    if not truth.any():
        return float("nan")
    predicted = top_k_mask(scores, int(truth.sum()) if k is None else k)
    hits = int((predicted & truth).sum())
    precision = hits / predicted.sum() if predicted.any() else 0.0
    return _f1(precision, hits / truth.sum())


def iou_f1(
    scores: Sequence[float],
    gold_spans: Sequence[tuple[int, int]],
    k: int | None = None,
    threshold: float = IOU_THRESHOLD,
) -> float:
    """ERASER's IOU F1 for one text. The predicted rationale (top-``k`` words, default: as many
    as gold words) is split into maximal contiguous spans; a predicted span is a true positive
    when its best word-IOU with a gold span is at least ``threshold``. Precision = TP /
    predicted spans, recall = TP / gold spans. NaN without gold spans."""
    gold = [set(range(s, e)) for s, e in gold_spans]
    if not gold:
        return float("nan")
    n_gold_words = len(set().union(*gold))
    selected = top_k_mask(scores, n_gold_words if k is None else k)
    predicted = [set(range(s, e)) for s, e in runs(selected)]
    if not predicted:
        return 0.0
    hits = sum(max(len(p & g) / len(p | g) for g in gold) >= threshold for p in predicted)
    return _f1(hits / len(predicted), hits / len(gold))


def auprc(scores: Sequence[float], gold: Sequence[bool] | np.ndarray) -> float:
    """Average precision of ``scores`` ranking the gold words: sum over score thresholds of
    (recall gain) x precision; tied scores enter together. NaN without gold words."""
    values = np.asarray(scores, dtype=float)
    truth = np.asarray(gold, dtype=bool)
    if not truth.any():
        return float("nan")
    order = np.argsort(-values, kind="stable")
    values, truth = values[order], truth[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(values) != 0), len(values) - 1]
    true_positives = np.cumsum(truth)[last_of_tie]
    precision = true_positives / (last_of_tie + 1)
    recall = true_positives / truth.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def plausibility(
    scores: Sequence[float],
    example: RationaleExample,
    k: int | None = None,
    iou_threshold: float = IOU_THRESHOLD,
) -> Plausibility:
    """Token F1, IOU F1 and AUPRC of word ``scores`` (one per ``example.words``)."""
    if len(scores) != len(example.words):
        raise InputError(
            f"got {len(scores)} word scores for {len(example.words)} words of {example.id}"
        )
    gold = example.mask
    return Plausibility(
        token_f1=token_f1(scores, gold, k),
        iou_f1=iou_f1(scores, example.spans, k, iou_threshold),
        auprc=auprc(scores, gold),
        k=int(gold.sum()) if k is None else k,
    )


def _f1(precision: float, recall: float) -> float:
    if precision == 0 or recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def _jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path.name} line {number}: not JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise InputError(f"{path.name} line {number}: expected a JSON object")
            yield number, record


def _char_span_to_words(
    span: Sequence[int], offsets: list[tuple[int, int]], length: int, where: str
) -> tuple[int, int]:
    try:
        start, end = (int(x) for x in span)
    except (TypeError, ValueError):
        raise InputError(
            f"{where}: a rationale span must be [start_char, end_char], not {span!r}"
        ) from None
    if not 0 <= start < end <= length:
        raise InputError(
            f"{where}: rationale span {start}:{end} is outside a {length}-character text"
        )
    covered = [i for i, (s, e) in enumerate(offsets) if s < end and e > start]
    if not covered:
        raise InputError(f"{where}: rationale span {start}:{end} covers only whitespace")
    return covered[0], covered[-1] + 1


def _eraser_document(path: Path, where: str) -> list[str]:
    if not path.is_file():
        raise InputError(f"{where}: document {path.name} not found in {path.parent}")
    return path.read_text(encoding="utf-8").split()
