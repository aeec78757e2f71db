"""DynamicBatcher: one per model; groups concurrent requests into batches, off the event loop.

Requests wait in a bounded queue. The worker takes what is waiting (waiting up to
``max_queue_delay`` for a batch to fill), sorts it by length so that each batch pads little,
and runs the batches one after another on the model's own thread, so the event loop keeps
answering while ONNX Runtime computes and one session never runs two batches at once.
"""

from __future__ import annotations

import asyncio
import collections
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from nlpforge.serving.errors import NotReady, Overloaded, RequestTimeout

#: The worker looks at up to this many batches' worth of waiting rows when grouping by length.
GROUP_WINDOW = 4
#: What one model run costs beyond its rows, in rows of its longest length (see ``_split``).
RUN_OVERHEAD_ROWS = 1.0


@dataclass(eq=False)
class Job:
    """One request's work: ``size`` rows of ``payload``; batched only with jobs of its ``kind``."""

    kind: Hashable
    payload: Any
    size: int
    length: int
    future: asyncio.Future
    enqueued: float


#: Runs a batch of jobs on the model thread; returns one result (or exception) per job.
RunBatch = Callable[[list[Job]], list[Any]]


class DynamicBatcher:
    """Queue → batches of at most ``max_batch_size`` rows → ``run_batch`` on a worker thread."""

    def __init__(self, name: str, run_batch: RunBatch, metrics: Any, max_batch_size: int = 32,
                 max_queue_delay_ms: float = 0.0, max_queue_size: int = 256):
        self.name = name
        self.run_batch = run_batch
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay_ms / 1000.0
        self.max_queue_size = max_queue_size
        self._queue: collections.deque[Job] = collections.deque()
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"nlpforge-{name}")
        self._batch_seconds = 0.01  # moving average, for Retry-After

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        """Refuse new work, finish what is queued, then stop the worker thread."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def close(self) -> None:
        """Refuse new work from now on (the queue still drains)."""
        self._closing = True

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def run_on_model_thread(self, func: Callable, *args: Any) -> Any:
        """Run ``func(*args)`` on the model thread, between batches (warm-up, streaming)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    # -- requests ---------------------------------------------------------------------------

    async def submit(self, kind: Hashable, payload: Any, size: int, length: int,
                     timeout: float) -> Any:
        """Queue one request and wait for its result; 429 when full, 504 after ``timeout``."""
        if self._closing:
            raise NotReady("the server is shutting down")
        if len(self._queue) >= self.max_queue_size:
            raise Overloaded(f"model '{self.name}' has {len(self._queue)} requests waiting "
                             f"(--max-queue-size {self.max_queue_size}); retry later",
                             self.retry_after())
        loop = asyncio.get_running_loop()
        job = Job(kind, payload, size, length, loop.create_future(), loop.time())
        self._queue.append(job)
        self._queued_rows += size
        self.metrics.queue_depth.set(len(self._queue))
        self._wakeup.set()
        timer = loop.call_later(timeout, self._expire, job, timeout)
        try:
            return await job.future
        except asyncio.CancelledError:  # the client went away
            self._forget(job)
            raise
        finally:
            timer.cancel()

    def _expire(self, job: Job, timeout: float) -> None:
        if not job.future.done():
            self._forget(job)
            job.future.set_exception(RequestTimeout(
                f"model '{self.name}' did not answer within {timeout:g} s "
                f"(--request-timeout-s)"))

    def _forget(self, job: Job) -> None:
        """Free the queue slot of a request nobody waits for any more."""
        try:
            self._queue.remove(job)
        except ValueError:  # already taken by the worker
            return
        self._queued_rows -= job.size
        self.metrics.queue_depth.set(len(self._queue))

    def retry_after(self) -> int:
        """Seconds until the queue has probably drained."""
        batches = len(self._queue) / self.max_batch_size + 1
        return max(1, math.ceil(batches * self._batch_seconds))

    # -- the worker -------------------------------------------------------------------------

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._wait_to_fill(loop)
            for batch in self._group(self._take()):
                await self._run(batch, loop)

    async def _wait_to_fill(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.max_queue_delay <= 0:
            return
        deadline = self._queue[0].enqueued + self.max_queue_delay
        while self._queued_rows < self.max_batch_size and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[Job]:
        """Waiting jobs, up to GROUP_WINDOW batches' worth of rows; drops timed-out ones."""
        limit = self.max_batch_size * GROUP_WINDOW
        jobs: list[Job] = []
        rows = 0
        while self._queue:
            job = self._queue[0]
            if jobs and rows + job.size > limit:
                break
            self._queue.popleft()
            self._queued_rows -= job.size
            if not job.future.done():
                jobs.append(job)
                rows += job.size
        self.metrics.queue_depth.set(len(self._queue))
        return jobs

    def _group(self, jobs: list[Job]) -> list[list[Job]]:
        """Batches of one kind each, of similar length, at most max_batch_size rows each
        (a single larger request makes a batch of its own; ``run_batch`` splits it)."""
        kinds: dict[Hashable, list[Job]] = {}
        for job in jobs:
            kinds.setdefault(job.kind, []).append(job)
        batches: list[list[Job]] = []
        for same in kinds.values():
            same.sort(key=lambda j: j.length)
            batches += self._split(same)
        return batches

    def _split(self, jobs: list[Job]) -> list[list[Job]]:
        """Cut length-sorted jobs into batches at the least padded cost.

        A run costs about (rows + RUN_OVERHEAD_ROWS) x its longest length: padding to the
        longest row is work, and so is each extra run. Dynamic programming over the cut
        points finds the cheapest split (at most max_batch_size rows per batch).
        """
        best = [0.0] + [math.inf] * len(jobs)
        start = [0] * (len(jobs) + 1)
        for end in range(1, len(jobs) + 1):
            longest = max(jobs[end - 1].length, 1)
            rows = 0
            for first in range(end - 1, -1, -1):
                rows += jobs[first].size
                if rows > self.max_batch_size and first < end - 1:
                    break
                cost = best[first] + (rows + RUN_OVERHEAD_ROWS) * longest
                if cost < best[end]:
                    best[end], start[end] = cost, first
        batches, end = [], len(jobs)
        while end > 0:
            batches.append(jobs[start[end]:end])
            end = start[end]
        return batches[::-1]

    async def _run(self, batch: list[Job], loop: asyncio.AbstractEventLoop) -> None:
        batch = [job for job in batch if not job.future.done()]
        if not batch:
            return
        start = loop.time()
        for job in batch:
            self.metrics.queue_time.observe(start - job.enqueued)
        await loop.run_in_executor(self._executor, self._call, batch, loop)
        seconds = loop.time() - start
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * seconds
        self.metrics.batch_size.observe(sum(job.size for job in batch))
        self.metrics.batch_seconds.observe(seconds)

    def _call(self, batch: list[Job], loop: asyncio.AbstractEventLoop) -> None:
        """On the model thread: run the batch, then hand each request its result straight
        from here (the waiting handlers wake on the loop's next turn)."""
        try:
            results = self.run_batch(batch)
        except Exception as exc:  # a failed batch fails each of its requests, not the server
            results = [exc] * len(batch)
        loop.call_soon_threadsafe(_resolve, batch, results)


def _resolve(batch: list[Job], results: list[Any]) -> None:
    for job, result in zip(batch, results):
        if job.future.done():  # timed out, or the client went away
            continue
        if isinstance(result, BaseException):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)
