"""Rows as they finish: `kit.iter_rows(...)` and `job.rows()`.

Rows come in completion order, each a `FinishedRow`. `iter_rows` holds the run back when
the reader is slower than the run: a row is started only while rows started <= rows read
+ `buffer` + the concurrency limit (cache hits and skips count as started), so the rows
waiting to be read stay bounded. Leaving `async with`, breaking out of
`async for row in kit.iter_rows(...)` or `await rows.aclose()` stops the run: requests in
flight are cancelled, and `kit.last_result()` holds the partial frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .events import RowFinished, RunFinished, StopRequested
from .types import RowResult

if TYPE_CHECKING:
    from .frame_job import FrameJob
    from .job import Job
    from .types import Request

_END = object()


@dataclass(frozen=True, slots=True)
class FinishedRow:
    """One finished row: the result columns, its `position` in the frame (labels may
    repeat) and `index` label; `row["column"]` reads the frame's own cells too."""

    position: int
    index: Any
    status: str
    response: str | None
    error: str | None
    error_type: str | None
    attempts: int
    latency_s: float | None
    ttft_s: float | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    finish_reason: str | None
    cached: bool
    parsed: Any
    cells: Mapping[str, Any]

    def __getitem__(self, column: str) -> Any:
        if column in self.cells:
            return self.cells[column]
        return getattr(self, column)

    @classmethod
    def of(cls, result: RowResult, index: Any, cells: Mapping[str, Any]) -> FinishedRow:
        return cls(
            position=result.key,
            index=index,
            status=result.status.value,
            response=result.text,
            error=result.error,
            error_type=result.error_type.value if result.error_type else None,
            attempts=result.attempts,
            latency_s=result.latency_s,
            ttft_s=result.ttft_s,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            cost_usd=result.cost_usd,
            finish_reason=result.finish_reason,
            cached=result.cached,
            parsed=result.parsed,
            cells=cells,
        )


class RowReader:
    """The finished rows of one job, handed out in completion order."""

    def __init__(self, job: Job) -> None:
        self._job = job
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._seen: set[int] = set()
        frame = job.frame
        self._index = list(frame.index)
        self._columns = {str(c): frame[c].tolist() for c in frame.columns}
        job.subscribe(self._event, (RowFinished, RunFinished))

    def _event(self, event: object) -> None:
        if isinstance(event, RowFinished):
            if event.step is None:
                self._queue.put_nowait(event.result)
        else:
            self._queue.put_nowait(_END)

    def earlier(self, results: Iterable[RowResult]) -> None:
        """Rows that finished before this reader listened."""
        for result in results:
            self._queue.put_nowait(result)

    def finished(self) -> None:
        """The run ended before this reader listened."""
        self._queue.put_nowait(_END)

    async def rows(self, on_read: Callable[[], None] = lambda: None) -> AsyncIterator[FinishedRow]:
        while True:
            item = await self._queue.get()
            if item is _END:
                break
            assert isinstance(item, RowResult)
            if item.key in self._seen:
                continue
            self._seen.add(item.key)
            on_read()
            key = item.key
            cells = {name: values[key] for name, values in self._columns.items()}
            yield FinishedRow.of(item, self._index[key], cells)
        task = self._job.task
        if task is not None and task.done() and not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error


async def _stopping_when_closed(
    job: FrameJob, rows: AsyncIterator[FinishedRow]
) -> AsyncGenerator[FinishedRow, None]:
    """The rows; however the reading ends (a break frees this generator, and asyncio
    closes it), the run stops."""
    try:
        async for row in rows:
            yield row
    finally:
        task = job.task
        if task is not None and not task.done():
            job.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(task)


class RowStream:
    """`kit.iter_rows(...)`: an async iterator and an async context manager."""

    def __init__(self, job: FrameJob, start: Callable[[FrameJob], None], buffer: int) -> None:
        self.job = job
        self._entered = False
        self._stopped = False
        self._keep: AsyncGenerator[FinishedRow, None] | None = None
        self._start = start
        self._buffer = buffer
        self._read = 0
        self._started = 0
        self._room = asyncio.Event()
        # the rows' generator, weakly: `async for row in kit.iter_rows(...)` owns it, so a
        # break frees it at once and its cleanup stops the run
        self._rows: weakref.ref[AsyncGenerator[FinishedRow, None]] | None = None

    def __aiter__(self) -> AsyncGenerator[FinishedRow, None]:
        rows = self._rows() if self._rows is not None else None
        if rows is None:
            if self._rows is not None:
                raise RuntimeError("these rows were read already; call kit.iter_rows again")
            reader = RowReader(self.job)
            if self.job.config.mode == "online":  # a batch's rows all come when it ends
                self.job.pace = self._paced
            self.job.subscribe(self._stopping, (StopRequested,))
            self._start(self.job)
            rows = _stopping_when_closed(self.job, reader.rows(self._on_read))
            self._keep = rows if self._entered else None  # `async with` holds it
            self._rows = weakref.ref(rows)
        return rows

    async def __aenter__(self) -> Self:
        self._entered = True
        self.__aiter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the run (requests in flight are cancelled) and wait until it has."""
        task = self.job.task
        if task is not None and not task.done():
            self.job.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(task)
        rows = self._rows() if self._rows is not None else None
        if rows is not None:
            await rows.aclose()
        self._keep = None

    def _on_read(self) -> None:
        self._read += 1
        self._room.set()

    def _stopping(self, event: object) -> None:
        """A stopping run takes no more rows: the pacer lets the next one through to see it."""
        self._stopped = True
        self._room.set()

    async def _paced(
        self, items: Iterable[Request | RowResult]
    ) -> AsyncIterator[Request | RowResult]:
        """The plan's items, each let through only while the reader keeps up."""
        for item in items:
            while (
                not self._stopped
                and self._started >= self._read + self._buffer + self.job.concurrency_limit()
            ):
                self._room.clear()
                await self._room.wait()
            self._started += 1
            yield item
