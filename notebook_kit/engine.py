"""Plain asyncio: runs requests through retry -> limits -> provider and records every outcome.

The engine knows nothing of pandas, tqdm, widgets or SDKs. Pending rows are not tasks:
a row becomes a task only once a concurrency slot is free for it, so a million rows
never make a million coroutines.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from .config import RunConfig
from .deadline import Deadline
from .errors import RUN_ERRORS, CallError, RunError
from .limits import Clock, ConcurrencyLimit, RateMeter, Sleep, StartGate
from .providers.base import Provider, Session
from .reporting import RunReport, RunStats
from .retry import retrying
from .types import Completion, ErrorType, Request, RowResult, RowStatus

log = logging.getLogger("notebook_kit")


class _Stopped(Exception):
    """Raised inside a row when the run stops before its next attempt could start."""


@dataclass(slots=True)
class _RowState:
    attempts: int = 0
    holds_slot: bool = True  # the dispatcher acquired the first attempt's slot
    in_flight: bool = False
    latency: float | None = None  # seconds the last request took


class Engine:
    """One run. Its limits can be changed while it runs, from the run's own loop."""

    def __init__(
        self,
        provider: Provider,
        config: RunConfig,
        *,
        total: int,
        report: RunReport,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.provider = provider
        self.config = config
        self.model = config.model  # rows without their own model use the current value
        self.stats = RunStats(total=total)
        self.report = report
        self.results: dict[int, RowResult] = {}
        self.stop_reason: str | None = None
        self.run_error: RunError | None = None
        self._clock = clock or asyncio.get_running_loop().time
        self._t0 = self._clock()
        self.limit = ConcurrencyLimit(config.limits.concurrency)
        self.gate = StartGate(clock=self._clock, sleep=sleep)
        limits = config.limits
        self._rpm = (
            RateMeter(limits.rpm * limits.headroom, clock=self._clock, sleep=sleep)
            if limits.rpm
            else None
        )
        self._tpm = (
            RateMeter(limits.tpm * limits.headroom, clock=self._clock, sleep=sleep)
            if limits.tpm
            else None
        )
        self._retry = retrying(config.retry, sleep=self._retry_sleep)
        self._stopping = asyncio.Event()
        self._rows: dict[asyncio.Task[None], _RowState] = {}
        self._session: Session | None = None

    # -- control (call from the run's loop) ---------------------------------------------

    def set_concurrency(self, value: int) -> None:
        self.limit.total = value
        self.report.limit_changes.append((self._clock() - self._t0, value))

    def stop(self, reason: str = "stopped by the user") -> None:
        """Cancel in-flight calls; finished rows are kept, the rest become `cancelled`."""
        self._begin_stop(reason)
        for task in self._rows:
            task.cancel()

    # -- the run -----------------------------------------------------------------------

    async def run(self, items: Iterable[Request | RowResult]) -> None:
        """Run every request; items that are already results (skips) are recorded as is."""
        self.report.limit_changes.append((0.0, self.limit.total))
        async with self.provider.session(timeout=self.config.timeout) as session:
            self._session = session
            try:
                await self._dispatch(iter(items))
                while self._rows:
                    await asyncio.wait(list(self._rows))
            except asyncio.CancelledError:
                self.stop("interrupted")
                await self._drain()
                raise
            finally:
                self.report.wall_s = self._clock() - self._t0
        if self.run_error is not None:
            raise self.run_error

    async def _dispatch(self, items: Iterable[Request | RowResult]) -> None:
        for item in items:
            if isinstance(item, RowResult):
                self._finish(item)
                continue
            await self.limit.acquire()
            if self._stopping.is_set():
                self.limit.release()
                break
            task = asyncio.create_task(self._row(item))
            self._rows[task] = _RowState()
            task.add_done_callback(self._row_done)
        for item in items:  # after a stop: record the remaining skips, leave the rest unrun
            if isinstance(item, RowResult):
                self._finish(item)

    async def _drain(self) -> None:
        while self._rows:
            await asyncio.wait(list(self._rows))

    async def _row(self, request: Request) -> None:
        task = asyncio.current_task()
        assert task is not None
        state = self._rows[task]
        try:
            completion = await self._with_retries(request, state)
        except CallError as exc:
            if exc.fatal:
                self._abort(exc)
            result = self._failed(request, state, exc)
        except (_Stopped, asyncio.CancelledError):
            result = RowResult(
                key=request.key,
                status=RowStatus.CANCELLED,
                error=self.stop_reason or "cancelled",
                error_type=ErrorType.CANCELLED,
                attempts=state.attempts,
            )
        except Exception as exc:
            detail = self.provider.redact(" ".join(f"{type(exc).__name__}: {exc}".split()))
            log.warning("row %d failed unexpectedly: %s", request.key, detail)
            error = CallError(ErrorType.UNEXPECTED, f"unexpected error: {detail}")
            result = self._failed(request, state, error)
        else:
            result = RowResult(
                key=request.key,
                status=RowStatus.OK,
                text=completion.text,
                attempts=state.attempts,
                latency_s=state.latency,
                input_tokens=completion.input_tokens,
                output_tokens=completion.output_tokens,
                finish_reason=completion.finish_reason,
                request_id=completion.request_id,
                model=completion.model,
            )
        self._finish(result)

    def _row_done(self, task: asyncio.Task[None]) -> None:
        state = self._rows.pop(task)
        if state.holds_slot:  # ended (or was cancelled) before its first attempt took the slot
            self.limit.release()

    async def _with_retries(self, request: Request, state: _RowState) -> Completion:
        """The first attempt runs outside tenacity, whose per-call setup costs more than the
        engine's own work per row (measured: ~40 µs). If it fails and may be retried,
        tenacity takes over from that failure, so its waits and stop rule see every attempt.
        """
        try:
            return await self._attempt(request, state)
        except CallError as exc:
            if not exc.retryable:
                raise
            first = exc
        replayed = False

        async def attempt() -> Completion:
            nonlocal replayed
            if not replayed:
                replayed = True
                raise first
            return await self._attempt(request, state)

        completion: Completion = await self._retry.copy()(attempt)
        return completion

    async def _attempt(self, request: Request, state: _RowState) -> Completion:
        if state.holds_slot:
            state.holds_slot = False
        else:
            await self.limit.acquire()
        try:
            await self.gate.wait()
            estimate = self._estimate(request)
            if self._rpm is not None:
                await self._rpm.acquire()
            if self._tpm is not None:
                await self._tpm.acquire(estimate)
            if self._stopping.is_set():
                raise _Stopped
            if request.model is None:
                request = dataclasses.replace(request, model=self.model)
            completion = await self._send(request, state)
            if self._tpm is not None:
                used = (completion.input_tokens or 0) + (completion.output_tokens or 0)
                self._tpm.settle(used - estimate if used else 0)
            return completion
        finally:
            self.limit.release()

    async def _send(self, request: Request, state: _RowState) -> Completion:
        state.attempts += 1
        state.in_flight = True
        self.stats.in_flight += 1
        self.stats.requests += 1
        start = self._clock()
        outcome = "ok"
        try:
            return await self._complete(request)
        except CallError as exc:
            outcome = exc.error_type.value
            if exc.error_type is ErrorType.RATE_LIMIT:
                policy = self.config.retry
                pause = min(exc.retry_after or policy.backoff_base, policy.retry_after_cap)
                self.gate.cool_down(pause)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("row %d attempt %d: %s", request.key, state.attempts, exc)
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            end = self._clock()
            state.in_flight = False
            state.latency = round(end - start, 4)
            self.stats.in_flight -= 1
            self.report.record(
                request.key, state.attempts, start - self._t0, end - self._t0, outcome
            )

    async def _complete(self, request: Request) -> Completion:
        assert self._session is not None
        try:
            async with Deadline(self.config.timeout):
                return await self._session.complete(request)
        except TimeoutError:
            raise CallError(
                ErrorType.TIMEOUT, f"no reply within timeout={self.config.timeout:g} s"
            ) from None

    async def _retry_sleep(self, seconds: float) -> None:
        """Wait before the next attempt; a stop ends the wait at once."""
        self.stats.retrying += 1
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return
        finally:
            self.stats.retrying -= 1
        raise _Stopped

    def _estimate(self, request: Request) -> int:
        max_tokens = request.params.get("max_tokens") or request.params.get("max_completion_tokens")
        return request.estimated_tokens() + (max_tokens if isinstance(max_tokens, int) else 0)

    def _failed(self, request: Request, state: _RowState, exc: CallError) -> RowResult:
        return RowResult(
            key=request.key,
            status=RowStatus.ERROR,
            error=str(exc),
            error_type=exc.error_type,
            attempts=state.attempts,
            latency_s=state.latency,
            request_id=exc.request_id,
        )

    def _abort(self, exc: CallError) -> None:
        """A reply no other row can do better than (bad key, no quota, unknown model)."""
        if self.run_error is not None:
            return
        error_class = RUN_ERRORS[exc.error_type]
        hint = self.provider.advice(exc.error_type)
        self.run_error = error_class(f"the run stopped after {exc}. What to do: {hint}.")
        self._begin_stop(f"not run: the run stopped after {exc}")
        for task, state in self._rows.items():
            if not state.in_flight:
                task.cancel()

    def _begin_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopping.set()
        self.gate.resume()

    def _finish(self, result: RowResult) -> None:
        self.results[result.key] = result
        self.stats.count(result)
