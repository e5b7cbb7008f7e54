"""One run over a frame: wires plan and scheduler, takes controls, builds the frames.

`Job` is what every run shares (the loop, controls from any thread, the display, the
final frame); `FrameJob` runs one request per row through an `Engine`, and
`pipeline_job.PipelineJob` runs rows through steps. Displays are handed in
(`job.display`, set by the public functions): the job knows only that a display is an
async context manager around the run. Displays read `snapshot()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from contextlib import AbstractAsyncContextManager
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from . import frame as frames
from .cache import Cache
from .clock import Clock
from .config import whole
from .errors import ConfigError, RunError
from .events import Event, EventBus
from .pricing import prices_as_of
from .reporting import RunReport, Snapshot
from .types import Request, RowResult, RowStatus

if TYPE_CHECKING:
    from .row_stream import FinishedRow

Display = AbstractAsyncContextManager[object]
Pace = Callable[[Iterator[Request | RowResult]], AsyncIterator[Request | RowResult]]


class Scheduler(Protocol):
    """What a job drives: an `Engine`, or a `Pipeline` of them."""

    stop_reason: str | None
    events: EventBus

    @property
    def state(self) -> str: ...

    def snapshot(self) -> Snapshot: ...

    def set_concurrency(self, value: int, step: str | None = None) -> None: ...

    def set_model(self, model: str, step: str | None = None) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def set_budget(self, usd: float) -> None: ...

    def stop(self, reason: str = ...) -> None: ...


class Job:
    """A run over a frame: its live frame, its controls, and its final frame.

    `await job.run()` runs it in the calling task (an interrupt stops it). `kit.start`
    runs it as a background task instead; then `await job` waits for the final frame, and
    interrupting that wait stops the waiting, not the job. The control methods may be called
    from any thread (widget callbacks can run on a kernel subshell thread): they only hand
    the change to the job's own loop.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        cache: Cache | None = None,
        progress: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.frame = frame  # the user's rows
        self.cache = cache
        self.progress = progress
        self.report = RunReport(run_id=uuid.uuid4().hex[:12])
        self.engine: Scheduler | None = None
        self.result: pd.DataFrame | None = None
        self.display: Display | None = None  # entered around the run
        self.panel: Any = None  # the job's ipywidgets panel, when one is shown
        self.cell: str | None = None  # the notebook cell that started it, when known
        self.task: asyncio.Task[pd.DataFrame] | None = None
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: deque[Callable[[Scheduler], None]] = deque()  # controls before the start
        self._starting = threading.Lock()  # a control sent while run() starts is not lost
        self._failed = False
        self._subscribers: list[tuple[Callable[[Event], None], tuple[type[Any], ...]]] = []

    def __repr__(self) -> str:
        snap = self.snapshot()
        done = f"{snap.done - snap.cancelled}/{snap.total}"
        return f"<notebook_kit Job {self.report.run_id} {snap.state}, {done} rows done>"

    def _ipython_display_(self) -> None:
        """In a notebook a job shows its live panel (not twice in the cell that started it);
        without a panel, its one-line repr."""
        if self.panel is not None:
            self.panel.show_again()
        else:
            print(repr(self))

    def __await__(self) -> Generator[Any, None, pd.DataFrame]:
        if self.task is None:
            raise RuntimeError("this job was not started with kit.start(...); await job.run()")
        return asyncio.shield(self.task).__await__()

    @property
    def df(self) -> pd.DataFrame:
        """The frame so far: finished rows filled in, the others `pending`."""
        if self.result is not None:
            return self.result
        return self._frame(self.engine, unfinished=RowStatus.PENDING)

    @property
    def running(self) -> bool:
        """Not finished yet, and still able to finish (its task and loop are alive)."""
        if self.result is not None or self._failed:
            return False
        if self.task is not None and self.task.done():
            return False
        return self._loop is None or not self._loop.is_closed()

    @property
    def state(self) -> str:
        """queued, running, paused, paused at the budget, stopping, done, stopped or failed."""
        engine = self.engine
        if self._failed:
            return "failed"
        if self.result is not None:
            return "stopped" if engine and engine.stop_reason else "done"
        return "queued" if engine is None else engine.state

    def snapshot(self) -> Snapshot:
        """The run's counters, limits and state now (immutable)."""
        snap = self._queued() if self.engine is None else self.engine.snapshot()
        state = self.state
        return snap if snap.state == state else dataclasses.replace(snap, state=state)

    def rows(self) -> AsyncIterator[FinishedRow]:
        """The rows as they finish (those finished already first), until the run ends."""
        from .row_stream import RowReader

        reader = RowReader(self)
        if self.engine is not None:
            reader.earlier(self._finished_rows())
        if self.result is not None or (self.task is not None and self.task.done()):
            reader.finished()
        return reader.rows()

    def _finished_rows(self) -> list[RowResult]:
        """The whole rows finished so far, in the order they finished."""
        raise NotImplementedError

    def subscribe(
        self, handler: Callable[[Event], None], kinds: tuple[type[Any], ...] = ()
    ) -> None:
        """Call `handler` on the job's loop with every event of the run (`events.py`), or
        with the events of `kinds` only (events nobody asks for are not even made)."""
        with self._starting:
            self._subscribers.append((handler, kinds))
            if self.engine is not None:
                _subscribe(self.engine.events, handler, kinds)

    # -- controls (any thread) -----------------------------------------------------------

    def set_concurrency(self, value: int, *, step: str | None = None) -> None:
        """Requests in flight at most, from now on (in-flight requests are not interrupted);
        in a pipeline, of the model step named `step`. `ConfigError` for anything but a
        whole number >= 1 or an unknown step; the limit is then unchanged."""
        value = whole("concurrency", value, minimum=1)
        self._check_step(step)
        self._control(lambda engine: engine.set_concurrency(value, step))

    def set_model(self, model: str, *, step: str | None = None) -> None:
        """The model for rows not started yet (rows with their own model keep it); in a
        pipeline, of the model step named `step`."""
        self._check_step(step)
        self._control(lambda engine: engine.set_model(model, step))

    def pause(self) -> None:
        """Start nothing new; requests in flight finish."""
        self._control(lambda engine: engine.pause())

    def resume(self) -> None:
        self._control(lambda engine: engine.resume())

    def set_budget(self, usd: float) -> None:
        """A new spending cap in USD (what was billed so far counts); a job paused at the
        old cap goes on. Needs max_tokens and a known price, as `budget_usd=` does."""
        self._check_budget(float(usd))
        usd = float(usd)
        self._control(lambda engine: engine.set_budget(usd))

    def cancel(self) -> None:
        """Stop: cancel requests in flight; the final frame keeps every finished row."""
        self._control(lambda engine: engine.stop())

    def replaced(self) -> str:
        """The cell that started this job runs again: stop it (it would go on spending with
        no panel left to see); says what became of it."""
        self.cancel()
        return "stopped"

    def _control(self, change: Callable[[Scheduler], None]) -> None:
        with self._starting:
            loop = self._loop
            if loop is None:
                self._pending.append(change)
                return
        if not loop.is_closed():
            loop.call_soon_threadsafe(self._apply, change)

    def _apply(self, change: Callable[[Scheduler], None]) -> None:
        if self.engine is not None and self.result is None:
            change(self.engine)

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> pd.DataFrame:
        started = time.time()
        try:
            engine = self._scheduler()
        except BaseException:  # e.g. a batch job's database cannot be opened: it never ran
            self._failed = True
            raise
        self.report.attach(engine.events)
        with self._starting:
            for handler, kinds in self._subscribers:
                _subscribe(engine.events, handler, kinds)
            self._loop = asyncio.get_running_loop()
            self.engine = engine
            while self._pending:
                self._pending.popleft()(engine)
        async with self.display or contextlib.nullcontext():
            try:
                await self._execute(engine)
            except BaseException as exc:  # interrupted, a run error, or a bug: keep what is done
                result = self._finish(engine, started)
                if not isinstance(exc, asyncio.CancelledError):
                    self._failed = True
                if isinstance(exc, RunError):
                    exc.partial = result
                raise
            return self._finish(engine, started)

    def _finish(self, engine: Scheduler, started: float) -> pd.DataFrame:
        result = self._frame(engine, reason=engine.stop_reason)
        result.attrs[frames.META_KEY] = {
            **self._settings(),
            **self._metadata(engine, result, started),
        }
        self.result = result
        self._remember(result)
        return result

    # -- what a kind of job says -----------------------------------------------------------

    def _scheduler(self) -> Scheduler:
        raise NotImplementedError

    async def _execute(self, scheduler: Any) -> None:
        raise NotImplementedError

    def _frame(
        self,
        scheduler: Any,
        *,
        unfinished: RowStatus = RowStatus.CANCELLED,
        reason: str | None = None,
    ) -> pd.DataFrame:
        """The frame from what `scheduler` finished (None: nothing yet)."""
        raise NotImplementedError

    def _queued(self) -> Snapshot:
        raise NotImplementedError

    def _settings(self) -> dict[str, Any]:
        """The run's settings for the result's attrs (read again by `retry_failed`)."""
        raise NotImplementedError

    def _remember(self, result: pd.DataFrame) -> None:
        raise NotImplementedError

    def _check_budget(self, usd: float) -> None:
        raise NotImplementedError

    def _check_step(self, step: str | None) -> None:
        if step is not None:
            raise ConfigError("step= names a pipeline's step; this run has no steps")

    def _metadata(self, engine: Scheduler, result: pd.DataFrame, started: float) -> dict[str, Any]:
        """Small, JSON-safe facts about the run (pandas copies attrs on every operation)."""
        snap = engine.snapshot()
        return {
            "version": _version("notebook_kit"),
            "run_id": self.report.run_id,
            "counts": {str(k): int(v) for k, v in result["status"].value_counts().items()},
            "requests": snap.requests,
            "input_tokens": snap.input_tokens,
            "output_tokens": snap.output_tokens,
            "cost_usd": None if snap.unpriced else round(snap.cost_usd, 6),  # NA, never 0
            "unpriced_replies": snap.unpriced,
            "cached_rows": snap.cached,
            "cache": str(self.cache.path) if self.cache else None,
            "prices_as_of": prices_as_of(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "wall_s": round(time.time() - started, 3),
            "stopped": engine.stop_reason,
            "libraries": {name: _version(name) for name in ("openai", "anthropic", "pandas")},
        }


def _subscribe(
    events: EventBus, handler: Callable[[Event], None], kinds: tuple[type[Any], ...]
) -> None:
    if not kinds:
        events.subscribe(handler)
    for kind in kinds:
        events.on(kind, handler)


@functools.cache
def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None
