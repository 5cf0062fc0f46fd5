"""Runs the web app's explanations on its one shared model: gathered into micro-batches, one
batch at a time, each request within its own time budget.

Torch models are not re-entrant for autograd from several threads, so one worker thread runs
the model. Requests that arrive while it is busy queue up; when it is free it takes the
oldest request and every queued one that may share its model call (the same method, options,
target and word aggregation: the same ``key``) up to ``max_texts`` texts and ``max_chars``
characters, and explains them together. Each request keeps its own result, its own error (a
batch that fails is rerun request by request) and its own time budget: a request past its
budget is answered 503 (it never reached the model) or 504 (its batch ran too long) while the
batch goes on for the others, and a batch whose requests have all given up is stopped at its
next forward pass, so the model frees up.

Admission: each request brings its ``work`` (model row-tokens, counted before it runs) and
the runner keeps, per method, the seconds one unit of work took in the batches it ran. A
request that the queue ahead of it (and the batch running) would keep waiting past its budget
is refused at once (:class:`QueueFull`, with the seconds after which to retry) instead of
after the whole budget. Until a method has run once its own cost counts as nothing (only the
work ahead of it does); a request with nothing ahead of it is always taken.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..errors import ExplanationTimeout, QueueFull, ServerBusy
from ..inputs import item_length
from ..models import LoadedModel

Explain = Callable[[list[str]], list[Any]]
"""Explain some texts: one result per text, in order."""


class Cancelled(Exception):
    """Raised inside a forward pass of a batch whose requests have all given up."""


@dataclass(eq=False)
class Job:
    """One request: its texts, how to explain them, when it gives up."""

    key: Hashable
    texts: list[str]
    explain: Explain
    deadline: float
    work: float = 0.0
    """Model row-tokens the request costs (what the admission estimate counts)."""
    kind: str = ""
    """What its cost per unit of work is measured under (the method)."""
    future: Future[list[Any]] = field(default_factory=Future)
    cancel: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)

    @property
    def chars(self) -> int:
        return sum(item_length(t) for t in self.texts)


def _nothing(texts: list[str]) -> list[Any]:
    return []


class Runner:
    """The worker thread, its queue, and the lock it holds while the model runs a batch."""

    def __init__(
        self,
        lm: LoadedModel,
        timeout_s: float,
        *,
        max_texts: int = 32,
        max_chars: int = 20_000,
        gather_s: float = 0.002,
    ) -> None:
        self.lm = lm
        self.timeout_s = timeout_s
        self.max_texts = max_texts
        self.max_chars = max_chars
        self.gather_s = gather_s
        self.lock = threading.Lock()
        self.batches: deque[int] = deque(maxlen=1000)  # requests per model call, newest last
        self.seconds_per_work: dict[str, float] = {}  # per kind, a moving average
        self._queue: deque[Job] = deque()
        # the batch taken from the queue: its expected seconds, when it got the model (None:
        # not yet) and its requests
        self._running: tuple[float, float | None, int] | None = None
        self._ready = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name="layersal-explain", daemon=True)
        self._worker.start()

    async def run(
        self, key: Hashable, texts: list[str], explain: Explain, work: float = 0.0, kind: str = ""
    ) -> list[Any]:
        """The results of ``explain(texts)``, maybe computed together with other requests of
        the same ``key``; past the budget ``ServerBusy`` or ``ExplanationTimeout``, and
        ``QueueFull`` at once when the queue would keep it waiting past the budget."""
        job = Job(key, list(texts), explain, time.monotonic() + self.timeout_s, work, kind)
        with self._ready:
            self._admit(job)
            self._queue.append(job)
            self._ready.notify_all()
        try:
            return await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(job.future)), self.timeout_s
            )
        except asyncio.TimeoutError:
            job.cancel.set()
            if job.started.is_set():
                raise ExplanationTimeout from None
            raise ServerBusy from None

    def queued(self) -> int:
        """Requests waiting for the model (not counting the batch it is running)."""
        with self._ready:
            return len(self._queue)

    def pending(self) -> int:
        """Requests waiting for the model or in the batch it is running."""
        with self._ready:
            return len(self._queue) + (self._running[2] if self._running else 0)

    def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``condition()`` holds, checked whenever a request is queued or taken
        from the queue; whether it holds (for tests and monitoring, not for requests)."""
        with self._ready:
            return self._ready.wait_for(condition, timeout)

    def expected_wait(self) -> float:
        """Seconds the queued requests and the running batch are expected to take (0 for the
        work of a kind not measured yet)."""
        with self._ready:
            return self._backlog(time.monotonic())

    def check(self, work: float = 0.0, kind: str = "") -> None:
        """Raise ``QueueFull`` where a request of ``work`` of ``kind`` would be refused now
        (with no work: where the work queued alone is past the budget), so that a server can
        refuse before it spends anything on the request."""
        with self._ready:
            self._admit(Job(None, [], _nothing, 0.0, work, kind))

    def _cost(self, job: Job) -> float:
        return job.work * self.seconds_per_work.get(job.kind, 0.0)

    def _backlog(self, now: float) -> float:
        running = 0.0
        if self._running is not None:
            expected, began, _ = self._running
            running = expected if began is None else max(0.0, expected - (now - began))
        return running + sum(self._cost(job) for job in self._queue if not job.cancel.is_set())

    def _admit(self, job: Job) -> None:
        """Refuse ``job`` (``QueueFull``) when the work ahead of it and its own would end
        past its budget. Called with ``_ready`` held. A request with nothing ahead of it is
        always taken: it may take long, but the model is free, and running it corrects the
        estimate (one that refused everything would never be measured again)."""
        own = self._cost(job)  # 0 for a kind never measured: only the work ahead counts
        wait = self._backlog(time.monotonic())
        if wait > 0.0 and wait + own > self.timeout_s:
            # when the work ahead has shrunk enough for this request to fit its budget
            retry = max(1, math.ceil(wait + own - self.timeout_s))
            raise QueueFull(wait, retry)

    def _measured(self, jobs: list[Job], seconds: float) -> None:
        """Learn the seconds per unit of work from a batch that ran to its end."""
        work = sum(job.work for job in jobs)
        if work <= 0 or not jobs[0].kind:
            return
        sample = seconds / work
        with self._ready:
            old = self.seconds_per_work.get(jobs[0].kind)
            new = sample if old is None else 0.7 * old + 0.3 * sample
            self.seconds_per_work[jobs[0].kind] = new

    def close(self) -> None:
        """Stop the worker; queued and running requests give up."""
        with self._ready:
            self._closed = True
            for job in self._queue:
                job.cancel.set()
            self._ready.notify_all()

    # -- the worker thread ------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            group = self._next_group()
            if group is None:
                return
            self._run_group(group)

    def _next_group(self) -> list[Job] | None:
        """The oldest waiting request and the queued ones that may share its model call."""
        with self._ready:
            while not self._queue and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            first = self._queue.popleft()
            group, texts, chars = [first], len(first.texts), first.chars
            # taken from the queue: counted as the running batch from now on. Before the
            # gathering wait below, which lets requests in: one admitted then must see this
            # work ahead of it (counted nowhere, it was once admitted past its budget)
            self._running = (self._cost(first), None, 1)
            until = time.monotonic() + self.gather_s
            while texts < self.max_texts:
                for job in list(self._queue):
                    fits = (
                        texts + len(job.texts) <= self.max_texts
                        and chars + job.chars <= self.max_chars
                    )
                    if job.key == first.key and fits:
                        self._queue.remove(job)
                        group.append(job)
                        texts, chars = texts + len(job.texts), chars + job.chars
                self._running = (sum(self._cost(job) for job in group), None, len(group))
                left = until - time.monotonic()
                if left <= 0 or self._closed:
                    break
                self._ready.wait(left)
        return group

    def _run_group(self, group: list[Job]) -> None:
        live = [job for job in group if not job.cancel.is_set()]
        for job in group:
            if job.cancel.is_set():
                job.future.set_exception(ServerBusy())
        if not live:
            return
        expected = sum(self._cost(job) for job in live)
        with self._ready:
            self._running = (expected, None, len(live))
            self._ready.notify_all()
        try:
            patience = max(job.deadline for job in live) - time.monotonic()
            if not self.lock.acquire(timeout=max(0.0, patience)):
                for job in live:
                    job.future.set_exception(ServerBusy())
                return
            try:
                for job in live:
                    job.started.set()
                began = time.monotonic()
                with self._ready:
                    self._running = (expected, began, len(live))
                if self._explain(live):
                    self._measured(live, time.monotonic() - began)
            finally:
                self.lock.release()
        finally:
            with self._ready:
                self._running = None
                self._ready.notify_all()

    def _explain(self, jobs: list[Job]) -> bool:
        """Explain ``jobs`` in one call, stopping at a forward pass once all have given up; if
        the call fails, each job alone (so that each gets its own result or error). Whether
        the one call succeeded."""
        owner = threading.get_ident()

        def stop_if_cancelled(module: Any, args: Any) -> None:
            # only this thread's passes: another app sharing the model runs in another thread
            if threading.get_ident() == owner and all(job.cancel.is_set() for job in jobs):
                raise Cancelled

        self.batches.append(len(jobs))
        handle = self.lm.model.register_forward_pre_hook(stop_if_cancelled)
        try:
            try:
                results = jobs[0].explain([text for job in jobs for text in job.texts])
            finally:
                handle.remove()
        except Cancelled:
            for job in jobs:
                job.future.set_exception(ExplanationTimeout())
            return False
        except Exception as exc:
            if len(jobs) == 1:
                jobs[0].future.set_exception(exc)
            else:
                for job in jobs:
                    self._explain([job])
            return False
        start = 0
        for job in jobs:
            job.future.set_result(results[start : start + len(job.texts)])
            start += len(job.texts)
        return True
