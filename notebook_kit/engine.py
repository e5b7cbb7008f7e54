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
import dataclasses
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .cache import Cache
from .clock import Clock, LoopClock
from .config import RunConfig
from .deadline import Deadline
from .dedupe import Reuse
from .errors import RUN_ERRORS, CallError, RunError
from .events import (
    AttemptFinished,
    AttemptStarted,
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
from .meters import (
    AttemptOutcome,
    BudgetMeter,
    ConcurrencyMeter,
    HeaderPacing,
    Meter,
    RateMeter,
    Refused,
    StartGate,
)
from .pricing import cost_of
from .providers.base import Provider, Session
from .reporting import RunStats, Snapshot
from .retry import Retrier, RowTries
from .types import Completion, ErrorType, Request, RowResult, RowStatus

log = logging.getLogger("notebook_kit")


class _Stopped(Exception):
    """Raised inside a row when the run stops before its next attempt could start."""


@dataclass(slots=True)
class _Row:
    request: Request
    held: list[tuple[Meter, object]]  # meters acquired for the coming or current attempt
    tries: RowTries = dataclasses.field(default_factory=RowTries)
    in_flight: bool = False
    latency: float | None = None  # seconds the last request took
    wait: float | None = None  # the retrier's wait after the last failure (None: final)
    cost: float | None = None  # what the last reply was billed


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
    ) -> None:
        self.provider = provider
        self.config = config
        self.model = config.model  # rows without their own model use the current value
        self.clock = clock or LoopClock()
        self.events = EventBus()
        self._emit = self.events.emit
        self.stats = RunStats(total=total)
        self.stats.attach(self.events)
        self.results: dict[int, RowResult] = {}
        self.stop_reason: str | None = None
        self.run_error: RunError | None = None
        self._t0 = self.clock.now()
        limits, policy = config.limits, config.retry
        self.concurrency = ConcurrencyMeter(
            limits.concurrency, adaptive=limits.adaptive, clock=self.clock, on_change=self._limit
        )
        self.gate = StartGate(clock=self.clock, policy=policy)
        self.budget: BudgetMeter | None = None
        meters: list[Meter] = [self.concurrency, self.gate]
        if limits.rpm:
            meters.append(RateMeter(limits.rpm * limits.headroom, clock=self.clock))
        if limits.tpm:
            meters.append(RateMeter.tokens(limits.tpm * limits.headroom, clock=self.clock))
        if config.budget_usd is not None:
            self.budget = self._budget_meter(config.budget_usd)
            meters.append(self.budget)
        if not limits.rpm:  # the user's rpm paces this run; the headers would only add caution
            meters.append(HeaderPacing(self.gate, cap=policy.retry_after_cap))
        self._meters = tuple(meters)  # replaced, never mutated: rows may be iterating it
        self._retrier = Retrier(policy, self.clock)
        self._reuse = Reuse(
            cache,
            provider=provider.name,
            base_url=provider.describe().get("base_url"),
            finish=self._finish,
        )
        self._stopping = asyncio.Event()
        self._rows: dict[asyncio.Task[None], _Row] = {}
        self._session: Session | None = None

    # -- what displays read --------------------------------------------------------------

    @property
    def state(self) -> str:
        if self.stop_reason is not None:
            return "stopping"
        if self.gate.paused_by("budget"):
            return "paused at the budget"
        return "paused" if self.gate.paused_by("user") else "running"

    def snapshot(self) -> Snapshot:
        budget = self.budget.budget if self.budget is not None else None
        return Snapshot(
            state=self.state,
            **self.stats.counts(),
            limit=self.concurrency.limit.total,
            target=self.concurrency.adaptive.target,
            budget_usd=budget.usd if budget else None,
            spent_usd=budget.spent if budget else 0.0,
            reserved_usd=budget.reserved if budget else 0.0,
            elapsed_s=self.clock.now() - self._t0,
            stop_reason=self.stop_reason,
        )

    # -- control (call from the run's loop) ----------------------------------------------

    def set_concurrency(self, value: int) -> None:
        """The user's limit; the adaptive limit works below it."""
        self.concurrency.set_target(value)

    def set_model(self, model: str) -> None:
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
            self.budget = self._budget_meter(usd, spent=self.stats.cost_usd)
            pacing = [m for m in self._meters if isinstance(m, HeaderPacing)]
            others = [m for m in self._meters if not isinstance(m, HeaderPacing)]
            self._meters = (*others, self.budget, *pacing)
        elif self.budget.raise_to(usd):
            self._emit(Resumed(t=self._now(), reason="budget"))

    def stop(self, reason: str = "stopped by the user") -> None:
        """Cancel every row, in flight or not; finished rows are kept."""
        self._begin_stop(reason)
        for task in self._rows:
            task.cancel()

    # -- the run -------------------------------------------------------------------------

    async def run(self, items: Iterable[Request | RowResult]) -> None:
        """Run every request; items that are already results (skips) are recorded as is."""
        limit = self.concurrency.limit.total
        self._emit(LimitChanged(t=0.0, limit=limit, target=limit))
        async with self.provider.session(timeout=self.config.timeout, clock=self.clock) as s:
            self._session = s
            try:
                await self._dispatch(iter(items))
                await self._drain()
            except asyncio.CancelledError:
                self.stop("interrupted")
                await self._drain()
                raise
            except BaseException as exc:  # no row may keep running (and paying) after we fail
                self.stop(f"not run: the run failed ({type(exc).__name__})")
                await self._drain()
                raise
            finally:
                await self._reuse.close()  # durable before we return
                self._emit(RunFinished(t=self._now(), stop_reason=self.stop_reason))
        if self.run_error is not None:
            raise self.run_error

    async def _dispatch(self, items: Iterator[Request | RowResult]) -> None:
        for item in items:
            if isinstance(item, RowResult):
                self._finish(item, "input")
                continue
            if self._stopping.is_set():
                break
            if item.model is None:  # the model menu applies to rows not dispatched yet
                item = Request(
                    key=item.key, messages=item.messages, model=self.model, params=item.params
                )
            print_ = self._reuse.lead(item)
            if print_ is None:
                continue
            held = await self.concurrency.acquire(item)
            if self._stopping.is_set():
                self.concurrency.release(held, AttemptOutcome(item, sent=False))
                self._reuse.abandon(print_)
                break
            row = _Row(item, [(self.concurrency, held)])
            task = asyncio.create_task(self._run_row(row, print_))
            self._rows[task] = row
            task.add_done_callback(self._row_done)
        for item in items:  # after a stop: record the remaining skips, leave the rest unrun
            if isinstance(item, RowResult):
                self._finish(item, "input")

    async def _drain(self) -> None:
        while self._rows:
            await asyncio.wait(list(self._rows))

    def _row_done(self, task: asyncio.Task[None]) -> None:
        row = self._rows.pop(task)
        if row.held:  # stopped while it waited in a meter, or before its task ever ran
            self._release(row, AttemptOutcome(row.request, sent=False))

    async def _run_row(self, row: _Row, print_: str) -> None:
        request = row.request
        if self.events.wants(RowStarted):
            self._emit(RowStarted(t=self._now(), key=request.key))
        completion: Completion | None = None
        try:
            completion = await self._attempts(row)
        except CallError as exc:
            if exc.fatal:
                self._abort(exc)
            result = self._failed(row, exc)
        except Refused as exc:
            self._begin_stop(exc.reason)
            result = self._cancelled(row)
        except (_Stopped, asyncio.CancelledError):
            result = self._cancelled(row)
        except Exception as exc:
            detail = self.provider.redact(" ".join(f"{type(exc).__name__}: {exc}".split()))
            log.warning("row %d failed unexpectedly: %s", request.key, detail)
            unexpected = CallError(ErrorType.UNEXPECTED, f"unexpected error: {detail}")
            result = self._failed(row, unexpected)
        else:
            result = RowResult(
                key=request.key,
                status=RowStatus.OK,
                text=completion.text,
                attempts=row.tries.sent,
                latency_s=row.latency,
                input_tokens=completion.input_tokens,
                output_tokens=completion.output_tokens,
                cost_usd=row.cost,
                finish_reason=completion.finish_reason,
                request_id=completion.request_id,
                model=completion.model,
            )
        self._finish(result, "call")
        self._reuse.settle(print_, request, result, completion)

    async def _attempts(self, row: _Row) -> Completion:
        """Attempts until one succeeds or the retrier gives up (then its error is raised)."""
        while True:
            if self._stopping.is_set():
                raise _Stopped
            # the first attempt holds the concurrency slot the dispatcher took for it
            for meter in self._meters[1:] if row.held else self._meters:
                row.held.append((meter, await meter.acquire(row.request)))
            try:
                return await self._send(row)
            except CallError:
                if row.wait is None:
                    raise
            if self._stopping.is_set():
                raise _Stopped
            await self.clock.sleep(row.wait)

    async def _send(self, row: _Row) -> Completion:
        """One request with its deadline; releases the meters and publishes the outcome."""
        request, tries, key = row.request, row.tries, row.request.key
        tries.sent += 1
        attempt = tries.sent
        row.in_flight = True
        start = self._now()
        self._emit(AttemptStarted(t=start, key=key, attempt=attempt))
        completion: Completion | None = None
        error: CallError | None = None
        outcome, row.wait, row.cost = "ok", None, None
        try:
            completion = await self._call(request)
            row.cost = self._cost(request, completion)
            return completion
        except CallError as exc:
            error, outcome = exc, exc.error_type.value
            row.wait = self._retrier.wait_before_retry(exc, tries)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("row %d attempt %d: %s", key, attempt, exc)
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception:
            outcome = ErrorType.UNEXPECTED.value
            raise
        finally:
            end = self._now()
            row.in_flight = False
            row.latency = round(end - start, 4)
            self._release(row, AttemptOutcome(request, True, completion, error, row.cost))
            self._emit(
                AttemptFinished(
                    t=end,
                    key=key,
                    attempt=attempt,
                    started=start,
                    outcome=outcome,
                    input_tokens=completion.input_tokens if completion else None,
                    output_tokens=completion.output_tokens if completion else None,
                    cost_usd=row.cost,
                    wait_s=row.wait,
                )
            )

    async def _call(self, request: Request) -> Completion:
        assert self._session is not None
        try:
            async with Deadline(self.config.timeout, self.clock):
                return await self._session.complete(request)
        except TimeoutError:
            raise CallError(
                ErrorType.TIMEOUT, f"no reply within timeout={self.config.timeout:g} s"
            ) from None

    # -- helpers -------------------------------------------------------------------------

    def _release(self, row: _Row, outcome: AttemptOutcome) -> None:
        held, row.held = row.held, []
        for meter, token in reversed(held):
            meter.release(token, outcome)

    def _budget_meter(self, usd: float, *, spent: float = 0.0) -> BudgetMeter:
        def reached() -> None:
            self._emit(Paused(t=self._now(), reason="budget"))

        return BudgetMeter(
            usd,
            gate=self.gate,
            pause_at_budget=self.config.pause_at_budget,
            on_reached=reached,
            spent=spent,
        )

    def _cost(self, request: Request, completion: Completion) -> float | None:
        return cost_of(
            completion.model or request.model, completion.input_tokens, completion.output_tokens
        )

    def _failed(self, row: _Row, exc: CallError) -> RowResult:
        return RowResult(
            key=row.request.key,
            status=RowStatus.ERROR,
            error=str(exc) + self._retrier.give_up_note(exc),
            error_type=exc.error_type,
            attempts=row.tries.sent,
            latency_s=row.latency,
            request_id=exc.request_id,
        )

    def _cancelled(self, row: _Row) -> RowResult:
        return RowResult(
            key=row.request.key,
            status=RowStatus.CANCELLED,
            error=self.stop_reason or "cancelled",
            error_type=ErrorType.CANCELLED,
            attempts=row.tries.sent,
        )

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
        self._emit(LimitChanged(t=self._now(), limit=limit, target=target))

    def _finish(self, result: RowResult, source: Source) -> None:
        self.results[result.key] = result
        self._emit(RowFinished(t=self._now(), key=result.key, source=source, result=result))

    def _now(self) -> float:
        return self.clock.now() - self._t0
