"""Progress for long commands: a Rich bar on a terminal, dated plain lines in a log file.

Rich draws nothing live when stderr is not a terminal (``nohup``, CI, ``2> log``), so a long
benchmark would look stuck; there, one line is written per finished step of work (a method)
and at most every ``every`` seconds in between.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

Advance = Callable[[str, int], None]


@contextmanager
def progress_lines(
    console: Console, total: int, title: str, every: float = 30.0
) -> Iterator[Advance]:
    """Yield ``advance(label, n)``: ``n`` more units done, currently working on ``label``."""
    if console.is_terminal:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task(title, total=total)
            yield lambda label, n: bar.update(task, advance=n, description=f"{label:<28}")
        return
    started = time.perf_counter()
    state: dict[str, Any] = {"done": 0, "label": "", "printed": started}

    def advance(label: str, n: int) -> None:
        now = time.perf_counter()
        changed = label != state["label"] and state["label"]
        state["done"] += n
        if changed or now - state["printed"] >= every or state["done"] >= total:
            console.print(
                f"{title}: {state['done']}/{total} ({100 * state['done'] / max(total, 1):.0f}%) "
                f"{now - started:.0f} s, at {label}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            state["printed"] = now
        state["label"] = label

    console.print(f"{title}: 0/{total}", markup=False, highlight=False)
    yield advance


TextProgress = Callable[[int, int], Callable[[int, int], None] | bool]


@contextmanager
def text_progress(console: Console, total: int) -> Iterator[TextProgress]:
    """Yield ``part(start, n)``: the ``progress`` argument of ``explain`` for texts
    ``start..start+n`` of ``total``. On a terminal a bar counts texts done (a long text's
    windows move it in fractions) with the rate; elsewhere nothing is drawn (``False``)."""
    if not console.is_terminal:
        yield lambda start, n: False
        return
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("explaining"),
        BarColumn(),
        TextColumn("{task.fields[texts]}/{task.total:.0f} texts{task.fields[windows]}"),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        # results printed to stdout go above the bar only when stdout is this terminal too;
        # redirected (``--json > out.jsonl``, ``| jq``) they must stay on stdout
        redirect_stdout=sys.stdout.isatty(),
        redirect_stderr=False,
    ) as bar:
        task = bar.add_task("explain", total=total, texts=0, rate="", windows="")
        began = time.perf_counter()

        def part(start: int, n: int) -> Callable[[int, int], None]:
            def advance(done: int, rows: int) -> None:
                completed = start + n * done / max(rows, 1)
                elapsed = time.perf_counter() - began
                rate = f"{completed / elapsed:.1f} texts/s" if elapsed > 0 else ""
                windows = f" ({done}/{rows} windows)" if rows > n else ""
                bar.update(
                    task,
                    completed=completed,
                    texts=int(completed),
                    rate=rate,
                    windows=windows,
                    refresh=True,  # once per batch: every step is shown
                )

            return advance

        yield part
