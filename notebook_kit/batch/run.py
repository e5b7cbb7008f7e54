"""A run through a provider's batch service (mode="batch"): the scheduler a job drives in
place of the `Engine`, publishing the same row events.

Rows the cache or an identical row answers are served as online. The rest are matched
first against the batches (and claims) earlier runs left unread, by request fingerprint:
the same cell run again, even in a new kernel, waits for those instead of paying twice;
what an ended one did not answer is sent again. The other rows go into new batches within
the provider's limits and the budget, each claimed and written down around its creation
(`submission`). Polls back off from `poll_s` to six times it. A batch refused for the
provider's enqueued-token limit is sent again once another of the run's batches ends.
Stop cancels the batches (retried until the provider accepts) and reads what they finished;
interrupting the wait leaves them running, their rows `pending`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace

from ..cache import Cache
from ..clock import Clock, LoopClock
from ..config import RunConfig
from ..dedupe import Reuse, cache_key
from ..errors import RUN_ERRORS, CallError, RunError
from ..events import BatchChanged, EventBus, RunFinished, StopRequested
from ..providers.base import Provider
from ..reporting import RunStats, Snapshot
from ..types import BatchStatus, ErrorType, Request, RowResult, RowStatus
from .claims import claimed
from .parts import Part, account, again, attached, planned, reattached
from .reading import Reader
from .results import cancelled, row_result
from .rows import BatchRows
from .service import BATCH_LIMITS, LOST, BatchService, open_service
from .store import BatchStore, StoredBatch
from .submission import Submitter

log = logging.getLogger("notebook_kit")
Item = Request | RowResult
POLL_GROWTH = 1.5
POLL_CAP = 6.0  # the longest wait between polls, in first waits (10 s -> 60 s)
GONE = "the provider no longer has this batch; retry_failed(result) sends its rows again"
UNREAD = frozenset({"cancelled", "expired", "failed"})  # ended without answering every row


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
        self.stats = RunStats(total=total)
        self.stats.attach(self.events)
        self.batches: dict[str, BatchStatus] = {}  # by batch (or claim) id, for displays
        self.stop_reason: str | None = None
        self.run_error: RunError | None = None
        self._store = store
        self._cache = cache
        self._attach = attach
        base_url = provider.describe().get("base_url")
        self._base_url = base_url if isinstance(base_url, str) else None
        self._t0 = self.clock.now()
        reuse = Reuse(
            cache,
            provider=provider.name,
            base_url=base_url,
            finish=lambda result, source: self._rows.finish(result, source),
        )
        self._reuse = reuse
        self._rows = BatchRows(
            self.events, reuse, cache, provider=provider.name, clock=self.clock, since=self._t0
        )
        self.results = self._rows.results
        self._reader = Reader(
            self._rows,
            store,
            cache,
            provider=provider.name,
            clock=self.clock,
            abort=self._abort,
        )
        self._stop = asyncio.Event()
        self._ended_at: float | None = None
        self._live: list[Part] = []
        self._submitted = False

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
        if self._submitted:
            log.warning("a batch's model is fixed when it is submitted: this one is sent")
        else:
            self.model = model

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
            self.events.emit(StopRequested(t=self._now(), reason=reason))
        self._stop.set()

    # -- the run -------------------------------------------------------------------------

    async def run(self, items: Iterable[Item] | AsyncIterator[Item]) -> None:
        try:
            leaders = await self._leaders(items) if self._attach is None else {}
            if leaders or self._attach is not None:
                home = self._store.path.parent
                async with open_service(self.provider, home=home) as service:
                    await service.check()
                    parts = await self._parts(service, leaders)
                    await self._wait(service, parts)
        except CallError as exc:  # a call to the batch service itself failed outright
            if exc.fatal:
                self._abort(exc)
            elif self.run_error is None:
                self.run_error = RunError(
                    f"the batch service failed: {exc}. Run the cell again: batches already "
                    "created are found again, not paid twice"
                )
        except asyncio.CancelledError:
            self._left_running()
            raise
        finally:
            await self._reuse.close()
            self._ended_at = self._now()
            self.events.emit(RunFinished(t=self._ended_at, stop_reason=self.stop_reason))
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
            self._rows.finish(item, "input")
            return
        if item.model is None:
            item = replace(item, model=self.model)
        print_ = self._reuse.lead(item)
        if print_ is not None:
            leaders[print_] = item

    async def _parts(self, service: BatchService, leaders: dict[str, Request]) -> list[Part]:
        """The batches to wait for: earlier ones that answer some rows, then new ones."""
        if self._attach is not None:
            return [attached(self._store, self._attach)]
        name, base_url = self.provider.name, self._base_url
        prints = await asyncio.to_thread(
            lambda: {key: cache_key(name, base_url, r) for key, r in leaders.items()}
        )
        owner = account(self.provider)
        earlier = await asyncio.to_thread(reattached, self._store, owner, leaders, prints)
        parts = [p for part in earlier for p in await self._found_again(service, part, leaders)]
        new, refused = await asyncio.to_thread(
            planned,
            service,
            leaders,
            prints,
            run_id=self.run_id,
            limit=BATCH_LIMITS[name],
            budget=self.config.budget_usd,
        )
        for key, request, result in refused:
            self._rows.settle(key, request, result, None)
        return parts + new

    async def _found_again(
        self, service: BatchService, part: Part, leaders: dict[str, Request]
    ) -> list[Part]:
        """An earlier run's batch (or claim) for some of these rows: waited for; or read
        now when it ended without answering them all (the rest go back to `leaders`)."""
        assert part.status is not None
        status: BatchStatus | None = part.status
        if part.status.state == "submitting":
            self._changed(part.status)
            status = await claimed(
                self._store,
                service,
                part.status.batch_id,
                pause=lambda: self._pause(self.config.batch_poll_s or service.poll_s),
                stopped=self._stop.is_set,
            )
            self.batches.pop(part.status.batch_id, None)
        if status is None:  # never created: the rows are sent now
            leaders.update((k, r) for k, r in part.rows.values() if k is not None)
            return []
        try:
            status = await service.poll(status.batch_id)
        except CallError as exc:
            if exc.error_type is not ErrorType.NOT_FOUND:
                raise
            self._reader.lost(status)
            leaders.update((k, r) for k, r in part.rows.values() if k is not None)
            return []
        part.status = status
        self._changed(status)
        if not status.ended or not (status.state in UNREAD or status.resubmit):
            return [part]
        leaders.update(await self._reader.salvage(service, part, status))
        return []

    async def _wait(self, service: BatchService, parts: list[Part]) -> None:
        """Submit the new parts and poll every batch until all are read."""
        submitter = Submitter(
            service,
            self._store,
            provider=self.provider.name,
            account=account(self.provider),
            run_id=self.run_id,
            base_url=self._base_url,
        )
        waiting = deque(part for part in parts if part.status is None)
        live = self._live
        for part in parts:
            if part.status is not None:
                self._rows.sent(part)
                self._changed(part.status)
                live.append(part)
        first = self.config.batch_poll_s or service.poll_s
        wait, held = first, False
        while waiting or live:
            if self._stop.is_set():
                self._not_submitted(waiting)
                await self._cancel(service, live)
            while waiting and not held and not self._stop.is_set():
                part = waiting.popleft()
                if await self._submit(submitter, part):
                    live.append(part)
            if not live and not waiting:
                break
            await self._pause(wait)
            wait, held = min(wait * POLL_GROWTH, first * POLL_CAP), held and bool(live)
            for part in list(live):
                status = await self._poll(service, part)
                if status is None or not status.ended:
                    continue
                if status.resubmit and not self._stop.is_set():
                    live.remove(part)
                    again = await self._bounced(service, part, status, alone=not live)
                    waiting.extendleft(reversed(again))
                    held = bool(live)
                elif await self._reader.collect(service, part, status):
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

    async def _submit(self, submitter: Submitter, part: Part) -> bool:
        """Create the part's batch; False: its rows failed instead. An interrupt waits
        until a batch the provider made is written down: it is never left unwritten."""
        total = len(part.rows)
        placeholder = BatchStatus(batch_id=f"({total} rows)", state="submitting", total=total)
        self._changed(placeholder)
        self._submitted = True
        submitting = asyncio.ensure_future(submitter.submit(part))
        try:
            status = await asyncio.shield(submitting)
        except asyncio.CancelledError:
            await asyncio.wait([submitting])
            if not submitting.cancelled() and submitting.exception() is None:
                self._rows.sent(part)
                part.status = submitting.result()
                self._live.append(part)
                self._changed(part.status)  # the interrupt's line names it
            raise
        except RunError as exc:
            self.run_error = self.run_error or exc
            self.stop(f"not run: {exc}")
            raise
        except CallError as exc:
            if exc.fatal:
                self._abort(exc)
            for key, request in part.rows.values():
                self._rows.settle(key, request, row_result(request, exc)[0], None)
            return False
        finally:
            self.batches.pop(placeholder.batch_id, None)
        part.status = status
        self._rows.sent(part)
        self._changed(status)
        return True

    async def _bounced(
        self, service: BatchService, part: Part, status: BatchStatus, *, alone: bool
    ) -> list[Part]:
        """A batch refused for the enqueued-token limit: its rows, to be sent again (see
        `parts.again`); a single row refused alone fails (`rate_limit`)."""
        self._reader.update(status, collected=True)
        self.batches.pop(status.batch_id, None)
        self._rows.left(part, "rate_limit")
        if alone and len(part.rows) == 1:
            error = CallError(ErrorType.RATE_LIMIT, f"the batch queue is full: {status.error}")
            for key, request in part.rows.values():
                self._rows.settle(key, request, row_result(request, error)[0], None)
            return []
        if not part.items:  # dropped once it ran, or an earlier run's batch: encode again
            rows = list(part.rows.items())
            part.items = await asyncio.to_thread(
                lambda: [service.encode(custom_id, request) for custom_id, (_, request) in rows]
            )
        log.info("batch %s waits for the provider's token queue: sent again", status.batch_id)
        return again(part, alone=alone)

    async def _poll(self, service: BatchService, part: Part) -> BatchStatus | None:
        """The batch now (None: the provider did not say; the next poll asks again)."""
        assert part.status is not None
        try:
            status = await service.poll(part.status.batch_id)
        except CallError as exc:
            if exc.error_type is ErrorType.NOT_FOUND:  # gone (deleted, a damaged demo file)
                self._reader.lost(part.status)
                return replace(part.status, state="failed", error_code=LOST, error=GONE)
            if exc.fatal:
                self._abort(exc)
                raise self.run_error from None  # type: ignore[misc]
            log.warning("could not poll batch %s (%s): trying again", part.status.batch_id, exc)
            return None
        part.status = status
        if status.state in ("running", "finishing") and not status.resubmit:
            part.items = []  # accepted: what was sent is no longer needed
        self._changed(status)
        self._reader.update(status)
        return status

    def _not_submitted(self, waiting: deque[Part]) -> None:
        for part in waiting:
            for key, request in part.rows.values():
                note = f"not submitted: {self.stop_reason}"
                self._rows.settle(key, request, cancelled(request, note), None)
        waiting.clear()

    async def _cancel(self, service: BatchService, live: list[Part]) -> None:
        """Stop: cancel every live batch; a cancel that failed is tried again next poll."""
        for part in live:
            status = part.status
            if status is None or part.cancel_sent or status.ended:
                continue
            try:
                await service.cancel(status.batch_id)
            except CallError as exc:
                log.warning("could not cancel batch %s (%s): trying again", status.batch_id, exc)
                self._changed(replace(status, error=f"cancel failed: {exc}"[:300]))
            else:
                part.cancel_sent = True

    def _left_running(self) -> None:
        """An interrupted wait: the batches run on; their rows are pending and say how to
        collect them."""
        for part in self._live:
            if part.status is None:
                continue
            note = (
                f"still running in batch {part.status.batch_id}: run the same cell again to "
                "collect it (nothing is paid twice)"
            )
            self._rows.left(part, "pending")
            for key, request in part.rows.values():
                if request.key not in self.results:
                    pending = RowResult(key=request.key, status=RowStatus.PENDING, error=note)
                    self._rows.settle(key, request, pending, None)
        if self._live and self.stop_reason is None:
            self.stop_reason = "the wait was interrupted; the batches run on"
        self._live = []

    def _abort(self, exc: CallError) -> None:
        """A reply no batch can do better than (bad key, no quota, unknown model)."""
        if self.run_error is None:
            error_class = RUN_ERRORS[exc.error_type]
            hint = self.provider.advice(exc.error_type)
            self.run_error = error_class(f"the run stopped after {exc}. What to do: {hint}.")
        self.stop(f"not run: the run stopped after {exc}")

    # -- helpers -------------------------------------------------------------------------

    def _changed(self, status: BatchStatus) -> None:
        self.batches[status.batch_id] = status
        self.events.emit(BatchChanged(self._now(), status))

    def _now(self) -> float:
        return self.clock.now() - self._t0
