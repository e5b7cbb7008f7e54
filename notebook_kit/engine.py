"""Plain asyncio: runs requests through cache -> retry -> limits -> provider, records outcomes.

The engine knows nothing of pandas, tqdm, widgets or SDKs. Pending rows are not tasks:
a row becomes a task only once a concurrency slot is free for it, so a million rows
never make a million coroutines. Rows the cache can answer, and rows identical to one
already running, take no slot and send nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tenacity import RetryCallState

from .cache import Cache, fingerprint
from .config import RunConfig
from .deadline import Deadline
from .errors import RUN_ERRORS, CallError, RunError
from .limits import (
    AdaptiveConcurrency,
    Budget,
    Clock,
    ConcurrencyLimit,
    RateMeter,
    Sleep,
    StartGate,
)
from .pricing import cost_of, price_of
from .providers.base import Provider, Session
from .reporting import RunReport, RunStats
from .retry import retrying
from .types import Completion, ErrorType, Request, RowResult, RowStatus

BUDGET_INPUT_MARGIN = 1.25  # budget reservations assume 25 % more input tokens than estimated

log = logging.getLogger("notebook_kit")


class _Stopped(Exception):
    """Raised inside a row when the run stops before its next attempt could start."""


@dataclass(slots=True)
class _RowState:
    attempts: int = 0
    holds_slot: bool = True  # the dispatcher acquired the first attempt's slot
    in_flight: bool = False
    latency: float | None = None  # seconds the last request took
    rate_limited: int = 0  # attempts answered with a 429 (they do not use up max_attempts)
    rate_limit_wait: float = 0.0  # seconds this row was told to wait by 429s
    sent_as: int = 0  # the run's request count when this row's last request was sent


class Engine:
    """One run. Its limits can be changed while it runs, from the run's own loop."""

    def __init__(
        self,
        provider: Provider,
        config: RunConfig,
        *,
        total: int,
        report: RunReport,
        cache: Cache | None = None,
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
        self.user_paused = False
        self.run_error: RunError | None = None
        self._clock = clock or asyncio.get_running_loop().time
        self._t0 = self._clock()
        self.limit = ConcurrencyLimit(config.limits.concurrency)
        self.adaptive = AdaptiveConcurrency(
            self.limit,
            enabled=config.limits.adaptive,
            clock=self._clock,
            on_change=self._limit_changed,
        )
        self.gate = StartGate(clock=self._clock, sleep=sleep)
        self.budget = Budget(config.budget_usd) if config.budget_usd is not None else None
        self.cache = cache
        self._leaders: dict[str, list[int]] = {}  # fingerprint -> rows waiting for its reply
        self._base_url = provider.describe().get("base_url")
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
        """The user's limit; the adaptive limit works below it."""
        self.adaptive.set_target(value)

    def set_budget(self, usd: float) -> None:
        """A new spending cap (what was billed so far counts); a job paused at the old cap
        goes on, unless the user paused it."""
        if self.budget is None:
            self.budget = Budget(usd)
            self.budget.spent = self.stats.cost_usd
        self.budget.raise_to(usd)
        if self.stats.budget_reached:
            self.stats.budget_reached = False
            if not self.user_paused:
                self.gate.resume()

    def pause(self) -> None:
        """Start nothing new; requests in flight finish."""
        self.user_paused = True
        self.gate.pause()

    def resume(self) -> None:
        self.user_paused = False
        if not self.stats.budget_reached:
            self.gate.resume()

    def _limit_changed(self, value: int) -> None:
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
            except BaseException as exc:  # no row may keep running (and paying) after we fail
                self.stop(f"not run: the run failed ({type(exc).__name__})")
                await self._drain()
                raise
            finally:
                self.report.wall_s = self._clock() - self._t0
                if self.cache is not None:
                    self.cache.release()
                    await asyncio.to_thread(self.cache.flush)  # durable before we return
        if self.run_error is not None:
            raise self.run_error

    async def _dispatch(self, items: Iterable[Request | RowResult]) -> None:
        for item in items:
            if isinstance(item, RowResult):
                self._finish(item)
                continue
            if self._stopping.is_set():
                break
            if item.model is None:  # the model menu applies to rows not dispatched yet
                item = dataclasses.replace(item, model=self.model)
            print_ = self._fingerprint(item)
            if self._served_without_a_call(item, print_):
                continue
            await self.limit.acquire()
            if self._stopping.is_set():
                self.limit.release()
                self._leaders.pop(print_, None)
                break
            task = asyncio.create_task(self._row(item, print_))
            self._rows[task] = _RowState()
            task.add_done_callback(self._row_done)
        for item in items:  # after a stop: record the remaining skips, leave the rest unrun
            if isinstance(item, RowResult):
                self._finish(item)

    def _fingerprint(self, request: Request) -> str:
        return fingerprint(
            self.provider.name, self._base_url, request.model, request.messages, request.params
        )

    def _served_without_a_call(self, request: Request, print_: str) -> bool:
        """Answer from the cache, or wait for an identical row already sent; else lead."""
        followers = self._leaders.get(print_)
        if followers is not None:
            followers.append(request.key)
            return True
        hit = self._cached(print_)
        if hit is not None:
            self._finish(self._reuse(request.key, hit))
            return True
        self._leaders[print_] = []
        return False

    def _cached(self, print_: str) -> Completion | None:
        """The cache's reply, or None; a cache that cannot be read is not worth a failed run."""
        if self.cache is None:
            return None
        try:
            return self.cache.get(print_)
        except Exception as exc:
            log.warning("cache lookup failed, calling the model instead: %s", exc)
            return None

    def _reuse(self, key: int, completion: Completion) -> RowResult:
        return RowResult(
            key=key,
            status=RowStatus.OK,
            text=completion.text,
            attempts=0,
            input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
            cost_usd=0.0,
            finish_reason=completion.finish_reason,
            request_id=completion.request_id,
            model=completion.model,
            cached=True,
        )

    async def _drain(self) -> None:
        while self._rows:
            await asyncio.wait(list(self._rows))

    async def _row(self, request: Request, print_: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        state = self._rows[task]
        completion: Completion | None = None
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
                cost_usd=cost_of(
                    completion.model or request.model,
                    completion.input_tokens,
                    completion.output_tokens,
                ),
                finish_reason=completion.finish_reason,
                request_id=completion.request_id,
                model=completion.model,
            )
            if self.cache is not None:
                self.cache.put(print_, self.provider.name, request.model or "", completion)
        self._finish(result)
        for key in self._leaders.pop(print_, []):
            self._finish(self._follow(key, request.key, result, completion))

    def _follow(
        self, key: int, leader: int, result: RowResult, completion: Completion | None
    ) -> RowResult:
        """The outcome of a row that waited for an identical row's call."""
        if completion is not None:
            return self._reuse(key, completion)
        if result.status is RowStatus.CANCELLED:
            return dataclasses.replace(result, key=key, attempts=0)
        error = f"same request as row {leader}, which failed: {result.error}"
        return dataclasses.replace(result, key=key, attempts=0, error=error, latency_s=None)

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

        completion: Completion = await self._retry.copy(stop=self._stop_rule(state))(attempt)
        return completion

    def _stop_rule(self, state: _RowState) -> Callable[[RetryCallState], bool]:
        """429s wait within `rate_limit_patience` and use up no attempts; others count."""
        policy = self.config.retry

        def stop(retry_state: RetryCallState) -> bool:
            outcome = retry_state.outcome
            exc = outcome.exception() if outcome is not None else None
            if isinstance(exc, CallError) and exc.error_type is ErrorType.RATE_LIMIT:
                return state.rate_limit_wait >= policy.rate_limit_patience
            return retry_state.attempt_number - state.rate_limited >= policy.max_attempts

        return stop

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
            reserved = await self._reserve(request)
            if self._stopping.is_set():
                self._settle(reserved, 0.0)
                raise _Stopped
            completion = await self._send(request, state, reserved)
            if self._tpm is not None:
                used = (completion.input_tokens or 0) + (completion.output_tokens or 0)
                self._tpm.settle(used - estimate if used else 0)
            self._pace(completion, state.sent_as, estimate)
            return completion
        finally:
            self.limit.release()

    async def _reserve(self, request: Request) -> float | None:
        """Hold the request's worst-case cost against the budget; wait or stop at the cap.

        None when there is no budget (nothing to settle afterwards)."""
        if self.budget is None:
            return None
        price = price_of(request.model)
        if price is None:  # e.g. a model picked mid-run: its cost could not be capped
            self._begin_stop(
                f"not run: no price is known for model {request.model!r}, so "
                "budget_usd cannot be enforced (kit.set_price adds one)"
            )
            raise _Stopped
        max_tokens = int(request.params.get("max_tokens") or 0)
        amount = price.cost(request.estimated_tokens() * BUDGET_INPUT_MARGIN, max_tokens)
        while not await self.budget.reserve(amount):
            self.stats.budget_reached = True
            spent = f"${self.budget.spent:.4f} of budget_usd={self.budget.usd:g} spent"
            if not self.config.pause_at_budget:
                self._begin_stop(f"not run: the budget is reached ({spent})")
                raise _Stopped
            self.gate.pause()  # job.set_budget(...) raises the cap and resumes
            await self.gate.wait()
            if self._stopping.is_set():
                raise _Stopped
        return amount

    def _settle(self, reserved: float | None, billed: float | None) -> None:
        if self.budget is None:
            return
        if reserved is None:  # sent before the budget was set: it still counts
            self.budget.spent += billed or 0.0
            return
        self.budget.settle(reserved, reserved if billed is None else billed)

    def _pace(self, completion: Completion, sent_as: int, estimate: int) -> None:
        """Start nothing more until the reset when the server's quota is used up.

        The quota a reply reports was counted when it was answered; requests started after
        this one may not have reached the server yet, so they are counted against it too.
        """
        rate, cap = completion.rate, self.config.retry.retry_after_cap
        if rate is None:
            return
        if self.config.limits.rpm is not None:
            return  # the user's rpm paces this run; the header would only add caution
        started_since = self.stats.requests - sent_as
        requests_left = rate.remaining_requests
        if requests_left is not None and requests_left - started_since <= 0:
            self.gate.cool_down(min(rate.requests_reset_s or 1.0, cap))
        tokens_left = rate.remaining_tokens
        if tokens_left is not None and tokens_left - started_since * estimate <= 0:
            self.gate.cool_down(min(rate.tokens_reset_s or 1.0, cap))

    async def _send(self, request: Request, state: _RowState, reserved: float | None) -> Completion:
        state.attempts += 1
        state.sent_as = self.stats.requests + 1  # this request's place in the run's sequence
        state.in_flight = True
        self.stats.in_flight += 1
        self.stats.requests += 1
        start = self._clock()
        outcome = "ok"
        billed: float | None = None  # unknown: a request without a reply may still be billed
        try:
            completion = await self._complete(request)
            self.adaptive.succeeded()
            if self.budget is not None:
                billed = cost_of(request.model, completion.input_tokens, completion.output_tokens)
            return completion
        except CallError as exc:
            outcome = exc.error_type.value
            if exc.status is not None:
                billed = 0.0  # an error reply is not billed
            if exc.error_type is ErrorType.RATE_LIMIT:
                policy = self.config.retry
                pause = min(exc.retry_after or policy.backoff_base, policy.retry_after_cap)
                self.gate.cool_down(pause)
                self.adaptive.rate_limited(exc.retry_after)
                state.rate_limited += 1
                state.rate_limit_wait += pause
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
            self._settle(reserved, billed)
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
