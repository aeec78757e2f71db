"""DynamicBatcher: one per model; groups concurrent requests into batches, off the event loop.

A request is one or more *chunks* of at most ``max_batch_size`` rows. Requests wait in a
queue bounded in requests and in rows. Each turn the worker takes one chunk of every waiting
request (round robin, so a large request cannot starve small ones), then more chunks while
the turn has room; it sorts them by length so that each batch pads little and runs the
batches one after another on the model's own thread, so the event loop keeps answering while
ONNX Runtime computes and one session never runs two batches at once. A request that
arrives during a turn is taken before the turn's remaining batches. Chunks of a request that
timed out, or whose client went away, are dropped before they run.
"""

from __future__ import annotations

import asyncio
import collections
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

from nlpforge.serving.errors import NotReady, Overloaded, RequestTimeout
from nlpforge.serving.memory import release_memory

#: The worker looks at up to this many batches' worth of waiting rows when grouping by length.
GROUP_WINDOW = 4
#: What one model run costs beyond its rows, in rows of its longest length (see ``_split``).
RUN_OVERHEAD_ROWS = 1.0


@dataclass(eq=False)
class Job:
    """One chunk of a request: ``size`` rows of ``payload``; batched only with jobs of its
    ``kind``."""

    kind: Hashable
    payload: Any
    size: int
    length: int
    future: asyncio.Future
    enqueued: float
    request: "Waiting | None" = None
    #: The request's arrival number: batches run oldest first.
    order: int = 0


@dataclass(eq=False)
class Waiting:
    """A queued request: its chunks not taken by the worker yet."""

    jobs: collections.deque[Job] = field(default_factory=collections.deque)

    @property
    def rows(self) -> int:
        return sum(job.size for job in self.jobs)


#: Runs a batch of jobs on the model thread; returns one result (or exception) per job.
RunBatch = Callable[[list[Job]], list[Any]]
#: A chunk to queue: (payload, rows, length).
Chunk = tuple[Any, int, int]


class DynamicBatcher:
    """Queue → batches of at most ``max_batch_size`` rows → ``run_batch`` on a worker thread."""

    def __init__(self, name: str, run_batch: RunBatch, metrics: Any, max_batch_size: int = 32,
                 max_queue_delay_ms: float = 0.0, max_queue_size: int = 256,
                 max_queue_rows: int | None = None, max_inputs: int | None = None,
                 express: bool = False):
        self.name = name
        self.run_batch = run_batch
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay_ms / 1000.0
        self.max_queue_size = max_queue_size
        self.max_queue_rows = max_queue_rows or max_queue_size * max_batch_size
        #: The most rows one request may have (checked by the served model, 413).
        self.max_inputs = max_inputs
        self._queue: collections.deque[Waiting] = collections.deque()
        self._queued_rows = 0
        self._running = 0  # batches handed to the model thread and not answered yet
        self._arrivals = 0  # requests queued so far (a turn yields to newer ones)
        self._wakeup = asyncio.Event()
        self._closing = False
        self.aborted = False
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"nlpforge-{name}")
        #: A second model thread for one-chunk requests that arrive while a batch runs (for
        #: models whose ``run_batch`` may run on two threads at once), so a small request
        #: does not wait for a large request's chunk.
        self._express = ThreadPoolExecutor(1, thread_name_prefix=f"nlpforge-{name}-express") \
            if express else None
        self._express_busy = False
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
        if self._express is not None:
            self._express.shutdown(wait=True)

    def close(self) -> None:
        """Refuse new work from now on (the queue still drains)."""
        self._closing = True

    def abort(self, message: str) -> None:
        """Refuse new work and answer every queued request with 503 now; the batch on the
        model thread finishes, nothing after it runs (shutdown past its deadline)."""
        self._closing = self.aborted = True
        while self._queue:
            for job in self._queue.popleft().jobs:
                if not job.future.done():
                    job.future.set_exception(NotReady(message))
        self._queued_rows = 0
        self.metrics.queue_depth.set(0)
        self._wakeup.set()

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def run_on_model_thread(self, func: Callable, *args: Any) -> Any:
        """Run ``func(*args)`` on the model thread, between batches (warm-up, streaming)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    # -- requests ---------------------------------------------------------------------------

    async def submit(self, kind: Hashable, payload: Any, size: int, length: int,
                     timeout: float) -> Any:
        """Queue a request of one chunk and wait for its result (see ``submit_chunks``)."""
        return (await self.submit_chunks(kind, [(payload, size, length)], timeout))[0]

    async def submit_chunks(self, kind: Hashable, chunks: Sequence[Chunk],
                            timeout: float) -> list[Any]:
        """Queue one request made of ``chunks`` and wait for their results, in order; 429 when
        the queue is full (in requests or rows), 504 after ``timeout``."""
        if self._closing:
            raise NotReady("the server is shutting down")
        rows = sum(size for _, size, _ in chunks)
        if len(self._queue) >= self.max_queue_size:
            raise Overloaded(f"model '{self.name}' has {len(self._queue)} requests waiting "
                             f"(--max-queue-size {self.max_queue_size}); retry later",
                             self.retry_after())
        if self._queued_rows and self._queued_rows + rows > self.max_queue_rows:
            raise Overloaded(f"model '{self.name}' has {self._queued_rows} rows waiting; "
                             f"{rows} more would pass --max-queue-rows {self.max_queue_rows}; "
                             f"retry later", self.retry_after())
        loop = asyncio.get_running_loop()
        waiting = Waiting()
        for payload, size, length in chunks:
            waiting.jobs.append(Job(kind, payload, size, length, loop.create_future(),
                                    loop.time(), waiting, self._arrivals))
        jobs = list(waiting.jobs)
        self._queue.append(waiting)
        self._queued_rows += rows
        self._arrivals += 1
        self.metrics.queue_depth.set(len(self._queue))
        self._wakeup.set()
        self._take_express(loop)
        timer = loop.call_later(timeout, self._expire, jobs, timeout)
        try:
            return list(await asyncio.gather(*(job.future for job in jobs)))
        except BaseException:  # a chunk failed, the request timed out or its client went away
            self._forget(waiting, jobs)
            raise
        finally:
            timer.cancel()

    def _expire(self, jobs: list[Job], timeout: float) -> None:
        error = RequestTimeout(f"model '{self.name}' did not answer within {timeout:g} s "
                               f"(--request-timeout-s)")
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(error)

    def _forget(self, waiting: Waiting, jobs: list[Job]) -> None:
        """Drop the chunks of a request nobody waits for any more (queue slot included)."""
        for job in jobs:
            if not job.future.done():
                job.future.cancel()
        if waiting in self._queue:
            self._queue.remove(waiting)
            self._queued_rows -= waiting.rows
        waiting.jobs.clear()
        self.metrics.queue_depth.set(len(self._queue))

    def retry_after(self) -> int:
        """Seconds until the queue has probably drained."""
        batches = self._queued_rows / self.max_batch_size + 1
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
            arrivals = self._arrivals
            batches = self._group(self._take())
            for i, batch in enumerate(batches):
                if i and (self._arrivals != arrivals or self.aborted):
                    self._put_back([job for rest in batches[i:] for job in rest])
                    break  # a new request is taken with the next turn
                await self._run(batch, loop)
            if not self._queue:  # idle: hand the memory freed since back to the system
                loop.run_in_executor(self._executor, release_memory)  # before the next batch

    async def _wait_to_fill(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.max_queue_delay <= 0:
            return
        deadline = self._queue[0].jobs[0].enqueued + self.max_queue_delay
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
        """The chunks of one turn: the next chunk of every waiting request in arrival order,
        then more in the same order while the turn has room (GROUP_WINDOW batches' worth of
        rows). Requests whose chunks are all taken leave the queue; dropped chunks are skipped."""
        limit = self.max_batch_size * GROUP_WINDOW
        jobs: list[Job] = []
        rows = 0
        taken = True
        while taken:
            taken = False
            for waiting in self._queue:
                if not waiting.jobs or (jobs and rows + waiting.jobs[0].size > limit):
                    continue
                job = waiting.jobs.popleft()
                self._queued_rows -= job.size
                taken = True
                if not job.future.done():
                    jobs.append(job)
                    rows += job.size
        self._queue = collections.deque(w for w in self._queue if w.jobs)
        self.metrics.queue_depth.set(len(self._queue))
        return jobs

    def _put_back(self, jobs: list[Job]) -> None:
        """Return chunks taken for a turn but not run to the front of their requests."""
        for job in reversed(jobs):
            if job.future.done() or job.request is None:
                continue
            waiting = job.request
            if not waiting.jobs:
                self._queue.appendleft(waiting)  # re-sorted below
            waiting.jobs.appendleft(job)
            self._queued_rows += job.size
        self._queue = collections.deque(sorted(self._queue, key=lambda w: w.jobs[0].order))
        self.metrics.queue_depth.set(len(self._queue))

    def _group(self, jobs: list[Job]) -> list[list[Job]]:
        """Batches of one kind each, of similar length, at most max_batch_size rows each
        (a single larger chunk makes a batch of its own; ``run_batch`` splits it), the batch
        holding the oldest chunk first (so a turn cut short by new requests cannot starve
        long rows)."""
        kinds: dict[Hashable, list[Job]] = {}
        for job in jobs:
            kinds.setdefault(job.kind, []).append(job)
        batches: list[list[Job]] = []
        for same in kinds.values():
            same.sort(key=lambda j: j.length)
            batches += self._split(same)
        batches.sort(key=lambda batch: min(job.order for job in batch))
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

    def _take_express(self, loop: asyncio.AbstractEventLoop) -> None:
        """While a batch runs, start the oldest waiting one-chunk request on the express
        thread (if it is free)."""
        if self._express is None or self._express_busy or not self._running or self._closing:
            return
        waiting = next((w for w in self._queue if len(w.jobs) == 1), None)
        if waiting is None:
            return
        self._queue.remove(waiting)
        job = waiting.jobs.popleft()
        self._queued_rows -= job.size
        self.metrics.queue_depth.set(len(self._queue))
        self._express_busy = True
        loop.create_task(self._run_express(job, loop))

    async def _run_express(self, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await self._run([job], loop, self._express)
        finally:
            self._express_busy = False
        self._take_express(loop)

    async def _run(self, batch: list[Job], loop: asyncio.AbstractEventLoop,
                   executor: ThreadPoolExecutor | None = None) -> None:
        batch = [job for job in batch if not job.future.done()]  # timed out, client gone
        if not batch:
            return
        start = loop.time()
        for job in batch:
            self.metrics.queue_time.observe(start - job.enqueued)
        self._running += 1
        try:
            await loop.run_in_executor(executor or self._executor, self._call, batch, loop)
        finally:
            self._running -= 1
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
