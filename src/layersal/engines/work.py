"""The work both engines share: cutting the input into shards, :func:`explain_shard` (one
shard of input rows -> the Arrow table of its explained rows and the list of its bad rows),
handing memory back after a shard, and the progress bar. Nothing is kept between shards, so
memory stays flat over a run of any length.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import InputError, LayersalError
from ..inputs import Row
from .sink import rows_table

if TYPE_CHECKING:
    from ..job import Explainer
    from . import DatasetJob


def release_memory() -> None:
    """Hand freed heap memory back to the system after a shard (glibc's ``malloc_trim``).

    Tensors of changing shapes leave the heap fragmented, and glibc keeps what was freed: RSS
    then creeps up by some MiB per thousand texts although nothing is kept. Elsewhere a no-op.
    """
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM: Any = None


def shards(rows: Iterable[Row], size: int) -> Iterator[tuple[int, list[Row]]]:
    """``(k, rows)`` for consecutive shards of ``size`` rows: shard k is rows k*size ..."""
    chunk: list[Row] = []
    number = 0
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield number, chunk
            number, chunk = number + 1, []
    if chunk:
        yield number, chunk


def explain_shard(
    explainer: Explainer, job: DatasetJob, rows: list[Row]
) -> tuple[Any, list[dict[str, Any]]]:
    """Explain one shard: ``(arrow_table, errors)``; errors are ``{"id", "reason"}`` dicts.

    Rows with a read error or an empty text are not explained. The rest go to the job's
    ``explainer`` together (it sorts them by length and batches them ``job.batch_size`` at a
    time), or, with ``job.max_batch_tokens``, in the batches of :func:`token_batches`, one
    call each; rows come out in input order either way. If that raises a
    :class:`LayersalError`, the shard is halved until the offending rows are alone, and each
    is recorded with the error's message.
    """
    lm = explainer.lm
    bad: list[tuple[Row, str]] = []
    good: list[Row] = []
    for row in rows:
        if row.error is not None:
            bad.append((row, row.error))
        elif not row.text:
            bad.append((row, "empty text"))
        elif not row.text.strip():
            bad.append((row, "text is only whitespace"))
        elif row.text_pair is not None and not row.text_pair.strip():
            bad.append((row, "the pair's second text is empty"))
        else:
            good.append(row)
    if job.max_batch_tokens:
        explained, explanations = [], []
        for batch in token_batches(lm, good, job.max_batch_tokens):
            rows, done = _explain_rows(explainer, job, batch, bad, batch_size=len(batch))
            explained += rows
            explanations += done
        order = sorted(range(len(explained)), key=lambda i: explained[i].index)
        explained = [explained[i] for i in order]
        explanations = [explanations[i] for i in order]
    else:
        explained, explanations = _explain_rows(explainer, job, good, bad)
    metadata = {
        "labels": lm.labels,
        "model": lm.name,
        "method": job.method,
        "options": job.options,
        "task": lm.task.name,
    }
    scored = not lm.task.probabilistic
    table = rows_table(
        explained,
        explanations,
        lm.labels,
        job.id_type,
        metadata,
        scored,
        entities=lm.task.focused,
    )
    bad.sort(key=lambda item: item[0].index)
    errors = [{"id": row.id, "reason": reason} for row, reason in bad]
    return table, errors


def token_batches(lm: Any, rows: list[Row], max_tokens: int) -> list[list[Row]]:
    """``rows`` sorted by token length and cut into batches whose padded size (texts x the
    longest one's tokens) stays within ``max_tokens``: many short texts or a few long ones per
    model pass, so a GPU gets evenly sized work. A text longer than the model's window counts
    as its windows' tokens; a text over the budget on its own is a batch of one."""
    if not rows:
        return []
    texts = [r.text or "" for r in rows]
    pairs = [r.text_pair for r in rows] if rows[0].text_pair is not None else None
    ids = lm.tokenizer(texts, pairs, add_special_tokens=True, verbose=False)["input_ids"]
    window = lm.max_length
    # a long text is cut into windows; a pair is truncated to one
    cost = [
        len(i) if len(i) <= window else window * (1 if pairs else -(-len(i) // window)) for i in ids
    ]
    order = sorted(range(len(rows)), key=lambda i: cost[i])
    batches: list[list[Row]] = []
    batch: list[Row] = []
    longest = 0
    for i in order:
        longest_with = max(longest, cost[i])
        if batch and longest_with * (len(batch) + 1) > max_tokens:
            batches.append(batch)
            batch, longest_with = [], cost[i]
        batch.append(rows[i])
        longest = longest_with
    batches.append(batch)
    return batches


def _explain_rows(
    explainer: Explainer,
    job: DatasetJob,
    rows: list[Row],
    bad: list[tuple[Row, str]],
    batch_size: int | None = None,
) -> tuple[list[Row], list[Any]]:
    from ..errors import TruncationWarning
    from ..inputs import check_texts

    if not rows:
        return [], []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)
            items = check_texts([r.item for r in rows])  # empty rows were set aside as errors
            grouped = explainer.explain_grouped(items, target=job.target, batch_size=batch_size)
        # a row per explanation: a multi-label text's labels, a token classifier's entities
        # (none for a text without one), a zero-shot text's labels named as targets
        return [r for r, g in zip(rows, grouped) for _ in g], [e for g in grouped for e in g]
    except LayersalError as exc:
        if len(rows) == 1:
            bad.append((rows[0], str(exc) or type(exc).__name__))
            return [], []
    half = len(rows) // 2
    first_rows, first = _explain_rows(explainer, job, rows[:half], bad, batch_size)
    second_rows, second = _explain_rows(explainer, job, rows[half:], bad, batch_size)
    return first_rows + second_rows, first + second


def calibration_items(
    lm: Any, texts: list[Any], target: Any = None, batch_size: int = 16
) -> list[Any]:
    """What a run's method settles on (DLS's ``layer="auto"`` calibration) for these
    ``texts``: the texts themselves, or, for a task whose rows look at a span or a label's
    hypothesis, the rows the texts are explained as: a token classifier's entities, a
    zero-shot classifier's labels' pairs (``target``'s, else each text's top label), as
    :func:`layersal.explain` settles on its rows. A text whose target names no entity of it is
    left out; none at all is an :class:`~layersal.errors.InputError`."""
    task = lm.task
    if not (task.focused or task.hypotheses):
        return texts
    from ..inputs import check_texts
    from ..job import Explainer
    from ..rows import row_plan

    planner = Explainer(lm, "gradient", batch_size=batch_size)
    items = check_texts(list(texts))
    try:
        plans = row_plan(planner, items, target)
    except LayersalError:  # a target that names no entity of some text: the others
        plans = []
        for item in items:
            try:
                plans += row_plan(planner, [item], target)
            except LayersalError:
                continue
    found = [row.item for own in plans for row in own]
    if not found:
        raise InputError(
            f"the method settles its options (layer='auto') on the entities of the first "
            f"{len(items)} texts, and the model finds none there: name a `layer`"
        )
    return found


class Progressing(Protocol):
    """What the bar asks how far the run is: a :class:`~layersal.inputs.Source`, or the
    block count of a Ray run whose workers read the input."""

    def progress(self) -> float: ...


class RunProgress:
    """A rich progress bar (share of the input read, texts explained, texts/s) on stderr."""

    def __init__(self, enabled: bool, source: Progressing, description: str) -> None:
        self.source = source
        self.started = time.perf_counter()
        self.explained = 0
        self.errors = 0
        self.skipped = 0
        self._progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[texts]} texts"),
                TextColumn("{task.fields[rate]} texts/s"),
                TextColumn("{task.fields[errors]} errors"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._task = self._progress.add_task(
                description, total=1000, texts=0, rate="-", errors=0
            )
            self._progress.start()

    def update(self, explained: int = 0, errors: int = 0, skipped: int = 0) -> None:
        self.explained += explained
        self.errors += errors
        self.skipped += skipped
        if self._progress is None:
            return
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self._progress.update(
            self._task,
            completed=int(1000 * self.source.progress()),
            texts=self.explained + self.skipped,
            rate=f"{self.explained / elapsed:.1f}" if self.explained else "-",
            errors=self.errors,
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
