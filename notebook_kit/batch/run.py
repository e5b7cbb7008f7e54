"""A run through a provider's batch service (mode="batch"): the scheduler a job drives in
place of the `Engine`, publishing the same row events.

Rows the cache or an identical row answers are served as online. The rest are matched
first against the batches an earlier run left in flight (by request fingerprint: the same
cell run again in a new kernel reattaches instead of paying twice), then written into new
batches within the provider's limits and the budget, each written down before it is
polled. Polls back off from `poll_s` to six times it. A batch that bounced off the
provider's enqueued-token limit is sent again once another of the run's batches ends.
Stop cancels the batches and reads what they finished; interrupting the wait leaves them
running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping

from ..cache import Cache
from ..clock import Clock, LoopClock
from ..config import RunConfig
from ..dedupe import Reuse, cache_key
from ..errors import RUN_ERRORS, CallError, RunError
from ..events import (
    AttemptFinished,
    AttemptStarted,
    BatchChanged,
    EventBus,
    RowFinished,
    RunFinished,
    Source,
    StopRequested,
)
from ..providers.base import Provider
from ..reporting import RunStats, Snapshot
from ..types import BatchStatus, Completion, ErrorType, Request, RowResult, RowStatus
from .budget import over_budget
from .parts import Part, account, attached, new_parts, reattached
from .results import row_result
from .service import BATCH_LIMITS, BatchService, open_service, unanswered
from .store import BatchStore, StoredBatch

log = logging.getLogger("notebook_kit")
Item = Request | RowResult
POLL_GROWTH = 1.5
POLL_CAP = 6.0  # the longest wait between polls, in first waits (10 s -> 60 s)
COLLECT_TRIES = 5  # downloads of a batch's results tried before its rows fail


class BatchRun:
    """One run of requests as provider batch jobs, steerable only by Stop."""

    def __init__(
        self,
        provider: Provider,
        config: RunConfig,
        *,
        total: int,
        run_id: str,
        store: BatchStore,
        cache: Cache | None = None,
        clock: Clock | None = None,
        attach: StoredBatch | None = None,
    ) -> None:
        """`attach`: read this one batch (`kit.attach`) instead of sending the items."""
        self.provider = provider
        self.config = config
        self.model = config.model
        self.run_id = run_id
        self.clock = clock or LoopClock()
        self.events = EventBus()
        self._emit = self.events.emit
        self.stats = RunStats(total=total)
        self.stats.attach(self.events)
        self.results: dict[int, RowResult] = {}
        self.batches: dict[str, BatchStatus] = {}  # by batch id, for displays
        self.stop_reason: str | None = None
        self.run_error: RunError | None = None
        self._store = store
        self._cache = cache
        base_url = provider.describe().get("base_url")
        self._base_url = base_url if isinstance(base_url, str) else None
        self._reuse = Reuse(cache, provider=provider.name, base_url=base_url, finish=self._finish)
        self._stop = asyncio.Event()
        self._t0 = self.clock.now()
        self._ended_at: float | None = None
        self._live: list[Part] = []
        self._attach = attach

    # -- what displays read, and the controls a batch has ----------------------------------

    @property
    def state(self) -> str:
        return "stopping" if self.stop_reason is not None else "running"

    def snapshot(self) -> Snapshot:
        elapsed = self._ended_at if self._ended_at is not None else self._now()
        return Snapshot(
            state=self.state,
            **self.stats.counts(elapsed),
            limit=0,
            target=0,
            elapsed_s=elapsed,
            stop_reason=self.stop_reason,
            batches=tuple(self.batches.values()),
        )

    def set_concurrency(self, value: int, step: str | None = None) -> None:
        """Nothing to limit: the provider runs the batch at its own pace."""

    def set_model(self, model: str, step: str | None = None) -> None:
        self.model = model  # rows not submitted yet

    def pause(self) -> None:
        log.warning("a batch job cannot be paused: Stop (job.cancel()) cancels it")

    def resume(self) -> None:
        return None

    def set_budget(self, usd: float) -> None:
        log.warning("a batch job's budget applies when it is submitted; this one is sent")

    def stop(self, reason: str = "stopped by the user") -> None:
        """Cancel the batches (what they finished is still read) and submit no more."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self._emit(StopRequested(t=self._now(), reason=reason))
        self._stop.set()

    # -- the run -------------------------------------------------------------------------

    async def run(self, items: Iterable[Item] | AsyncIterator[Item]) -> None:
        try:
            leaders = await self._leaders(items) if self._attach is None else {}
            if leaders or self._attach is not None:
                home = self._store.path.parent
                async with open_service(self.provider, home=home) as service:
                    await service.check()
                    if self._attach is not None:
                        parts = [attached(self._store, self._attach)]
                    else:
                        owner = account(self.provider)
                        parts = reattached(self._store, owner, leaders, self._fingerprint)
                        parts += self._new_parts(service, leaders)
                    await self._run_parts(service, parts)
        except CallError as exc:  # a call to the batch service itself failed outright
            if exc.fatal:
                self._abort(exc)
            elif self.run_error is None:
                self.run_error = RunError(
                    f"the batch service failed: {exc}. Run the cell again: batches already "
                    "created are reattached, not paid twice"
                )
        except asyncio.CancelledError:
            self._left_running()
            raise
        finally:
            await self._reuse.close()
            self._ended_at = self._now()
            self._emit(RunFinished(t=self._ended_at, stop_reason=self.stop_reason))
        if self.run_error is not None:
            raise self.run_error

    async def _leaders(self, items: Iterable[Item] | AsyncIterator[Item]) -> dict[str, Request]:
        """The requests to send, by reuse key; rows answered without a call are finished."""
        leaders: dict[str, Request] = {}
        if isinstance(items, AsyncIterator):
            async for item in items:
                self._take(item, leaders)
        else:
            for item in items:
                self._take(item, leaders)
        return leaders

    def _take(self, item: Item, leaders: dict[str, Request]) -> None:
        if isinstance(item, RowResult):
            self._finish(item, "input")
            return
        if item.model is None:
            item = Request(
                key=item.key,
                messages=item.messages,
                model=self.model,
                params=item.params,
                schema=item.schema,
            )
        print_ = self._reuse.lead(item)
        if print_ is not None:
            leaders[print_] = item

    def _fingerprint(self, request: Request) -> str:
        return cache_key(self.provider.name, self._base_url, request)

    def _new_parts(self, service: BatchService, leaders: dict[str, Request]) -> list[Part]:
        """The remaining rows within the budget, encoded and split within the limits."""
        budget = self.config.budget_usd
        sent, over = over_budget(list(leaders.items()), budget)
        for key, request in over:
            note = f"not submitted: the batch would pass budget_usd={budget:g}"
            self._settle(key, request, _cancelled(request, note), None)
        rows: list[tuple[str, str, Request, bytes]] = []
        for key, request in sent:
            custom_id = f"{self.run_id}-{request.key}"
            try:
                rows.append((custom_id, key, request, service.encode(custom_id, request)))
            except CallError as exc:
                self._settle(key, request, row_result(request, exc)[0], None)
        return new_parts(rows, BATCH_LIMITS[self.provider.name], self._fingerprint)

    async def _run_parts(self, service: BatchService, parts: list[Part]) -> None:
        waiting = deque(part for part in parts if part.status is None)
        live = self._live
        for part in parts:
            if part.status is not None:
                self._sent(part, part.status)
                live.append(part)
        first = self.config.batch_poll_s or service.poll_s
        wait, held, cancelled = first, False, False
        while waiting or live:
            if self._stop.is_set() and not cancelled:
                cancelled = True
                await self._cancel(service, waiting, live)
            while waiting and not held and not self._stop.is_set():
                part = waiting.popleft()
                if await self._submit(service, part):
                    live.append(part)
            if not live and not waiting:
                break
            await self._pause(wait)
            wait, held = min(wait * POLL_GROWTH, first * POLL_CAP), held and bool(live)
            for part in list(live):
                status = await self._poll(service, part)
                if status is None or not status.ended:
                    continue
                if status.resubmit and not self._stop.is_set() and part.items:
                    live.remove(part)
                    waiting.extendleft(reversed(self._bounced(part, status, alone=not live)))
                    held = bool(live)
                elif await self._collect(service, part, status):
                    live.remove(part)
                    held = False

    async def _pause(self, seconds: float) -> None:
        """Wait between polls; Stop cuts the wait short."""
        stopped = asyncio.ensure_future(self._stop.wait())
        sleep = asyncio.ensure_future(self.clock.sleep(seconds))
        try:
            await asyncio.wait((stopped, sleep), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stopped, sleep):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _submit(self, service: BatchService, part: Part) -> bool:
        """Create the part's batch and write it down; False: its rows failed instead. An
        interrupt waits for both: a batch the provider made is never left unwritten."""
        submitting = asyncio.ensure_future(self._submit_now(service, part))
        try:
            return await asyncio.shield(submitting)
        except asyncio.CancelledError:
            await asyncio.wait([submitting])
            done = not submitting.cancelled() and submitting.exception() is None
            if done and submitting.result():
                self._live.append(part)
            raise

    async def _submit_now(self, service: BatchService, part: Part) -> bool:
        total = len(part.rows)
        self._changed(BatchStatus(batch_id=f"(part of {total})", state="submitting", total=total))
        try:
            status = await service.submit(part.items, run_id=self.run_id)
        except CallError as exc:
            self.batches.pop(f"(part of {total})", None)
            if exc.fatal:
                self._abort(exc)
            for key, request in part.rows.values():
                self._settle(key, request, row_result(request, exc)[0], None)
            return False
        self.batches.pop(f"(part of {total})", None)
        stored = StoredBatch(
            batch_id=status.batch_id,
            provider=self.provider.name,
            account=account(self.provider),
            run_id=self.run_id,
            model=self.model,
            rows=total,
            state=status.state,
            created=status.created or time.time(),
            expires_at=status.expires_at,
            settings=json.dumps({"base_url": self._base_url}),
        )
        try:
            await asyncio.to_thread(self._store.record, stored, list(part.prints.items()))
        except Exception as exc:
            with contextlib.suppress(CallError):
                await service.cancel(status.batch_id)
            self.run_error = RunError(
                f"could not write down batch {status.batch_id} in {self._store.path} "
                f"({type(exc).__name__}: {exc}); it was cancelled, so that no later run pays "
                'for it twice. Free some space or choose another file (cache="path.sqlite")'
            )
            self.stop(f"not run: {self.run_error}")
            raise self.run_error from None
        self._sent(part, status)
        return True

    def _sent(self, part: Part, status: BatchStatus) -> None:
        part.status, part.sent_at = status, self.clock.now()
        self._changed(status)
        if self.events.wants(AttemptStarted):
            t = self._now()
            for _, request in part.rows.values():
                self._emit(AttemptStarted(t, request.key, 1))

    def _bounced(self, part: Part, status: BatchStatus, *, alone: bool) -> list[Part]:
        """A batch refused for the enqueued-token limit: its rows, to be sent again once
        another of the run's batches ends; or, with none left (`alone`), in two halves.
        A single row refused alone fails (`rate_limit`)."""
        self._store_update(status, collected=True)
        self.batches.pop(status.batch_id, None)
        self._finished_attempts(part, "rate_limit")
        if alone and len(part.rows) == 1:
            error = CallError(
                ErrorType.RATE_LIMIT, f"the provider's batch queue is full: {status.error}"
            )
            for key, request in part.rows.values():
                self._settle(key, request, row_result(request, error)[0], None)
            return []
        log.info("batch %s waits for the provider's token queue: sent again later", status.batch_id)
        ids = list(part.rows)
        halves = (
            [range(len(ids))]
            if not alone
            else [range(len(ids) // 2), range(len(ids) // 2, len(ids))]
        )
        return [
            Part(
                rows={ids[i]: part.rows[ids[i]] for i in half},
                prints={ids[i]: part.prints[ids[i]] for i in half},
                items=[part.items[i] for i in half],
            )
            for half in halves
        ]

    async def _poll(self, service: BatchService, part: Part) -> BatchStatus | None:
        """The batch now (None: the provider did not say; the next poll asks again)."""
        assert part.status is not None
        try:
            status = await service.poll(part.status.batch_id)
        except CallError as exc:
            if exc.fatal:
                self._abort(exc)
                raise self.run_error from None  # type: ignore[misc]
            log.warning("could not poll batch %s (%s): trying again", part.status.batch_id, exc)
            return None
        part.status = status
        self._changed(status)
        self._store_update(status)
        return status

    async def _collect(self, service: BatchService, part: Part, status: BatchStatus) -> bool:
        """Read an ended batch's results into rows (and the cache); False: try again later."""
        lost: CallError | None = None
        try:
            outcomes = await service.results(status.batch_id, self.model)
        except CallError as exc:
            part.collect_failures += 1
            if exc.fatal:
                self._abort(exc)
                raise self.run_error from None  # type: ignore[misc]
            if part.collect_failures < COLLECT_TRIES:
                log.warning("could not read batch %s (%s): trying again", status.batch_id, exc)
                return False
            outcomes = {}
            note = f"could not read the results of batch {status.batch_id}: {exc}"
            lost = CallError(exc.error_type, f"{note}; kit.attach({status.batch_id!r}) reads them")
        seconds = round(self.clock.now() - part.sent_at, 3)
        for custom_id, (key, request) in part.rows.items():
            outcome = outcomes.get(custom_id) or lost or unanswered(status.state)
            result, completion = row_result(request, outcome, latency=seconds)
            self._finished_attempt(part, request, result)
            if key is not None:
                self._settle(key, request, result, completion)
                continue
            self._finish(result, "call")  # a row of kit.attach: cached by its fingerprint
            if completion is not None and self._cache is not None:
                self._cache.put(part.prints[custom_id], self.provider.name, self.model, completion)
        self._cache_others(part, outcomes)
        if lost is None:
            self._store_update(status, collected=True)
        return True

    def _cache_others(self, part: Part, outcomes: Mapping[str, object]) -> None:
        """Replies of a reattached batch's rows this run does not have: into the cache."""
        if self._cache is None:
            return
        for custom_id, print_ in part.prints.items():
            outcome = outcomes.get(custom_id)
            if custom_id not in part.rows and isinstance(outcome, Completion):
                self._cache.put(print_, self.provider.name, outcome.model or "", outcome)

    async def _cancel(self, service: BatchService, waiting: deque[Part], live: list[Part]) -> None:
        """Stop: no more submissions, and every live batch cancelled (then read as usual)."""
        for part in waiting:
            for key, request in part.rows.values():
                note = f"not submitted: {self.stop_reason}"
                self._settle(key, request, _cancelled(request, note), None)
        waiting.clear()
        for part in live:
            assert part.status is not None
            try:
                await service.cancel(part.status.batch_id)
            except CallError as exc:
                log.warning("could not cancel batch %s: %s", part.status.batch_id, exc)

    def _left_running(self) -> None:
        """An interrupted wait: the batches run on; their rows say how to collect them."""
        for part in self._live:
            if part.status is None:
                continue
            note = (
                f"still running in batch {part.status.batch_id}: run the same cell again to "
                "collect it (nothing is paid twice)"
            )
            for key, request in part.rows.values():
                if request.key not in self.results:
                    pending = RowResult(key=request.key, status=RowStatus.PENDING, error=note)
                    self._settle(key, request, pending, None)
        self._live = []

    def _abort(self, exc: CallError) -> None:
        """A reply no batch can do better than (bad key, no quota, unknown model)."""
        if self.run_error is None:
            error_class = RUN_ERRORS[exc.error_type]
            hint = self.provider.advice(exc.error_type)
            self.run_error = error_class(f"the run stopped after {exc}. What to do: {hint}.")
        self.stop(f"not run: the run stopped after {exc}")

    # -- helpers -------------------------------------------------------------------------

    def _settle(
        self, key: str | None, request: Request, result: RowResult, completion: Completion | None
    ) -> None:
        """A row's end, and its followers' (rows with the same request), cached if valid."""
        self._finish(result, "call")
        if key is not None:
            self._reuse.settle(key, request, result, completion)

    def _finish(self, result: RowResult, source: Source) -> None:
        self.results[result.key] = result
        self._emit(RowFinished(self._now(), result.key, result, None, source))

    def _finished_attempt(self, part: Part, request: Request, result: RowResult) -> None:
        outcome = "ok" if result.status is RowStatus.OK else str(result.error_type or "cancelled")
        self._emit(
            AttemptFinished(
                t=self._now(),
                key=request.key,
                attempt=1,
                started=part.sent_at - self._t0,
                outcome=outcome,
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                cost_usd=result.cost_usd,
            )
        )

    def _finished_attempts(self, part: Part, outcome: str) -> None:
        t = self._now()
        for _, request in part.rows.values():
            self._emit(AttemptFinished(t, request.key, 1, t, outcome))

    def _changed(self, status: BatchStatus) -> None:
        self.batches[status.batch_id] = status
        self._emit(BatchChanged(self._now(), status))

    def _store_update(self, status: BatchStatus, *, collected: bool = False) -> None:
        try:
            self._store.update(
                status.batch_id,
                state=status.state,
                done=status.done,
                failed=status.failed,
                expires_at=status.expires_at,
                collected=collected,
            )
        except Exception as exc:  # the batch is written down already: only its state is late
            log.warning("could not update batch %s in %s: %s", status.batch_id, self._store, exc)

    def _now(self) -> float:
        return self.clock.now() - self._t0


def _cancelled(request: Request, note: str) -> RowResult:
    return RowResult(
        key=request.key, status=RowStatus.CANCELLED, error=note, error_type=ErrorType.CANCELLED
    )
