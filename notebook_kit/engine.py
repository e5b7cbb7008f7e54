"""The scheduler: rows through reuse -> meters -> attempt, retried, published as events.

Plain asyncio; it knows nothing of pandas, tqdm, widgets or SDKs. Pending rows are not
tasks: a row becomes a task only once a concurrency slot is free for it, so a million
rows never make a million coroutines. Each attempt acquires the run's meters in order
(concurrency, start gate, rpm, tpm, budget, header pacing) and releases them with its
outcome; the `Retrier` decides what follows a failure. Displays read events and
`snapshot()`; control comes in through a few named methods, called on the run's loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Iterator

from .attempt import Attempts
from .cache import Cache
from .clock import Clock, LoopClock
from .config import RunConfig, whole_request_timeout
from .dedupe import Reuse
from .errors import RUN_ERRORS, CallError, RunError
from .events import (
    EventBus,
    LimitChanged,
    Paused,
    Resumed,
    RowFinished,
    RowStarted,
    RunFinished,
    Source,
    StopRequested,
)
from .meters import AttemptOutcome, BudgetMeter, ConcurrencyMeter, Refused, StartGate
from .meters.assembly import Shared, run_meters, with_budget
from .providers.base import Provider
from .reporting import RunStats, Snapshot
from .retry import Retrier
from .rows import Row
from .types import Completion, ErrorType, Request, RowResult

log = logging.getLogger("notebook_kit")
Item = Request | RowResult  # what a run is fed: a request, or a row's result already known


class _Stopped(Exception):
    """Raised inside a row when the run stops before its next attempt could start."""


class Engine:
    """One run of requests on one provider, steerable while it runs."""

    def __init__(
        self,
        provider: Provider,
        config: RunConfig,
        *,
        total: int,
        cache: Cache | None = None,
        clock: Clock | None = None,
        step: str | None = None,
        shared: Shared | None = None,
    ) -> None:
        """`step` names a pipeline's step (stamped on row events); `shared` holds the
        meters this run shares with a pipeline's other steps (gate, rates, budget)."""
        self.provider = provider
        self.step = step
        self.config = config
        self.model = config.model  # rows without their own model use the current value
        self.clock = clock or LoopClock()
        self.events = EventBus()
        self._emit = self.events.emit
        self.stats = RunStats(total=total, step=step)
        self.stats.attach(self.events)
        self.results: dict[int, RowResult] = {}
        self.stop_reason: str | None = None
        self.run_error: RunError | None = None
        self._t0 = self.clock.now()
        self._ended_at: float | None = None  # seconds into the run when it ended
        limits, policy = config.limits, config.retry
        self.concurrency = ConcurrencyMeter(
            limits.concurrency, adaptive=limits.adaptive, clock=self.clock, on_change=self._limit
        )
        if shared is not None:
            self.gate, self.budget = shared.gate, shared.budget
        else:
            self.gate = StartGate(clock=self.clock, policy=policy)
            budget = config.budget_usd
            self.budget = None if budget is None else self._budget_meter(budget)
        self._meters = run_meters(  # replaced, never mutated: rows may be iterating it
            config,
            clock=self.clock,
            concurrency=self.concurrency,
            gate=self.gate,
            budget=self.budget,
            rates=shared.rates if shared is not None else None,
        )
        self._retrier = Retrier(policy, self.clock)
        self._reuse = Reuse(
            cache,
            provider=provider.name,
            base_url=provider.describe().get("base_url"),
            finish=self._finish,
        )
        self._stopping = asyncio.Event()
        self._rows: dict[asyncio.Task[None], Row] = {}
        self._attempts: Attempts

    # -- what displays read --------------------------------------------------------------

    @property
    def state(self) -> str:
        return self.gate.state(stopping=self.stop_reason is not None)

    def snapshot(self) -> Snapshot:
        budget = self.budget.budget if self.budget is not None else None
        elapsed = self._ended_at if self._ended_at is not None else self._now()
        return Snapshot(
            state=self.state,
            **self.stats.counts(elapsed),
            limit=self.concurrency.limit.total,
            target=self.concurrency.adaptive.target,
            budget_usd=budget.usd if budget else None,
            spent_usd=budget.spent if budget else 0.0,
            reserved_usd=budget.reserved if budget else 0.0,
            elapsed_s=elapsed,
            stop_reason=self.stop_reason,
            step=self.step,
        )

    # -- control (call from the run's loop) ----------------------------------------------

    def set_concurrency(self, value: int, step: str | None = None) -> None:
        """The user's limit; the adaptive limit works below it (`step`: this run's)."""
        self.concurrency.set_target(value)

    def set_model(self, model: str, step: str | None = None) -> None:
        """The model of rows not dispatched yet (rows with their own model keep it)."""
        self.model = model

    def pause(self) -> None:
        """Start nothing new; requests in flight finish."""
        self.gate.pause("user")
        self._emit(Paused(t=self._now(), reason="user"))

    def resume(self) -> None:
        self.gate.resume("user")
        self._emit(Resumed(t=self._now(), reason="user"))

    def set_budget(self, usd: float) -> None:
        """A new spending cap (what was billed so far counts); a job paused at the old cap
        goes on, unless the user paused it."""
        if self.budget is None:
            self.use_budget(self._budget_meter(usd, spent=self.stats.cost_usd))
        elif self.budget.raise_to(usd):
            self._emit(Resumed(t=self._now(), reason="budget"))

    def use_budget(self, budget: BudgetMeter) -> None:
        """A budget meter from now on; requests in flight reserve their share of it."""
        self.budget = budget
        self._meters = with_budget(self._meters, budget)
        for row in self._rows.values():  # requests sent already count against it
            if row.in_flight:
                row.held.append((budget, budget.hold(row.request)))

    def halt(self, reason: str) -> None:
        """Start nothing new; requests in flight finish (a pipeline's other step failed)."""
        self._begin_stop(reason)

    def stop(self, reason: str = "stopped by the user") -> None:
        """Cancel every row, in flight or not; finished rows are kept."""
        self._begin_stop(reason)
        for task in self._rows:
            task.cancel()

    # -- the run -------------------------------------------------------------------------

    async def run(self, items: Iterable[Item] | AsyncIterator[Item]) -> None:
        """Run every request; items that are already results (skips) are recorded as is.
        Items may arrive asynchronously (a pipeline's step is fed as earlier steps finish)."""
        limit = self.concurrency.limit.total
        self._emit(LimitChanged(t=0.0, limit=limit, target=limit, step=self.step))
        config = self.config
        longest = whole_request_timeout(config)
        async with self.provider.session(timeout=longest, clock=self.clock) as s:
            self._attempts = Attempts(
                s,
                timeout=config.timeout,
                clock=self.clock,
                retrier=self._retrier,
                events=self.events,
                since=self._t0,
                step=self.step,
                whole=longest if config.stream else None,
            )
            remaining = items if isinstance(items, AsyncIterator) else iter(items)
            try:
                await self._dispatch(remaining)
                await self._drain()
            except BaseException as exc:  # no row may keep running (and paying) after we fail
                failed = f"not run: the run failed ({type(exc).__name__})"
                self.stop("interrupted" if isinstance(exc, asyncio.CancelledError) else failed)
                self._record_skips(remaining)
                await self._drain()
                raise
            finally:
                await self._reuse.close()  # durable before we return
                self._ended_at = self._now()
                self._emit(RunFinished(t=self._ended_at, stop_reason=self.stop_reason))
        if self.run_error is not None:
            raise self.run_error

    async def _dispatch(self, items: Iterator[Item] | AsyncIterator[Item]) -> None:
        if isinstance(items, AsyncIterator):
            async for item in items:
                if not await self._admit(item):
                    break
            return
        for item in items:
            if not await self._admit(item):
                break
        self._record_skips(items)

    async def _admit(self, item: Item) -> bool:
        """Record a result, or start a row once it has a slot; False once the run stops."""
        if isinstance(item, RowResult):
            self._finish(item, "input")
            return True
        if self._stopping.is_set():
            return False
        if item.model is None:  # the model menu applies to rows not dispatched yet
            item = Request(
                key=item.key,
                messages=item.messages,
                model=self.model,
                params=item.params,
                schema=item.schema,
            )
        print_ = self._reuse.lead(item)
        if print_ is None:
            return True
        held = await self.concurrency.acquire(item)
        if self._stopping.is_set():
            self.concurrency.release(held, AttemptOutcome(item, sent=False))
            self._reuse.abandon(print_)
            return False
        row = Row(item, [(self.concurrency, held)])
        task = asyncio.create_task(self._run_row(row, print_))
        self._rows[task] = row
        task.add_done_callback(self._row_done)
        return True

    def _record_skips(self, items: Iterator[Item] | AsyncIterator[Item]) -> None:
        """After a stop: record the remaining skips, leave the rest unrun (items still to
        arrive from a pipeline's earlier step are not waited for)."""
        if isinstance(items, AsyncIterator):
            return
        for item in items:
            if isinstance(item, RowResult):
                self._finish(item, "input")

    async def _drain(self) -> None:
        while self._rows:
            await asyncio.wait(list(self._rows))

    def _row_done(self, task: asyncio.Task[None]) -> None:
        row = self._rows.pop(task)
        if row.held:  # stopped while it waited in a meter, or before its task ever ran
            row.release(AttemptOutcome(row.request, sent=False))

    async def _run_row(self, row: Row, print_: str) -> None:
        request = row.request
        if self.events.wants(RowStarted):
            self._emit(RowStarted(t=self._now(), key=request.key, step=self.step))
        completion: Completion | None = None
        try:
            completion = await self._until_done(row)
        except CallError as exc:
            if exc.fatal:
                self._abort(exc)
            result = row.failed(exc, self._retrier.give_up_note(exc))
        except Refused as exc:
            self._begin_stop(exc.reason)
            result = row.cancelled(self.stop_reason)
        except (_Stopped, asyncio.CancelledError):
            result = row.cancelled(self.stop_reason)
        except Exception as exc:
            detail = self.provider.redact(" ".join(f"{type(exc).__name__}: {exc}".split()))
            log.warning("row %d failed unexpectedly: %s", request.key, detail)
            result = row.failed(CallError(ErrorType.UNEXPECTED, f"unexpected error: {detail}"))
        else:
            result = row.succeeded(completion)
        self._finish(result, "call")
        self._reuse.settle(print_, request, result, completion)

    async def _until_done(self, row: Row) -> Completion:
        """Attempts until one succeeds or the retrier gives up (then its error is raised)."""
        while True:
            if self._stopping.is_set():
                raise _Stopped
            await row.hold(lambda: self._meters, self.gate.closed)
            try:
                completion = await self._attempts.send(row)
            except CallError:
                if row.wait is None:
                    raise
            else:
                valid = row.checked(completion)  # under schema=: valid, or a re-ask
                if valid is not None:
                    return valid
                continue
            if self._stopping.is_set():
                raise _Stopped
            await self.clock.sleep(row.wait)

    # -- helpers -------------------------------------------------------------------------

    def _budget_meter(self, usd: float, *, spent: float = 0.0) -> BudgetMeter:
        pause = self.config.pause_at_budget
        reached = self._budget_reached
        return BudgetMeter(
            usd, gate=self.gate, pause_at_budget=pause, on_reached=reached, spent=spent
        )

    def _budget_reached(self) -> None:
        self._emit(Paused(t=self._now(), reason="budget"))

    def _abort(self, exc: CallError) -> None:
        """A reply no other row can do better than (bad key, no quota, unknown model)."""
        if self.run_error is not None:
            return
        error_class = RUN_ERRORS[exc.error_type]
        hint = self.provider.advice(exc.error_type)
        self.run_error = error_class(f"the run stopped after {exc}. What to do: {hint}.")
        self._begin_stop(f"not run: the run stopped after {exc}")

    def _begin_stop(self, reason: str) -> None:
        """Nothing new starts; rows not in flight (waiting in a meter or a backoff) end now."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.stop_reason = reason
        self._emit(StopRequested(t=self._now(), reason=reason))
        for task, row in self._rows.items():
            if not row.in_flight:
                task.cancel()

    def _limit(self, limit: int, target: int) -> None:
        self._emit(LimitChanged(t=self._now(), limit=limit, target=target, step=self.step))

    def _finish(self, result: RowResult, source: Source) -> None:
        self.results[result.key] = result
        event = RowFinished(self._now(), result.key, result, self.step, source)
        self._emit(event)

    def _now(self) -> float:
        return self.clock.now() - self._t0
