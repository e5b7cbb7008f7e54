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
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import replace

from ..cache import Cache
from ..clock import Clock, LoopClock
from ..config import RunConfig
from ..dedupe import Reuse, cache_key
from ..errors import RUN_ERRORS, CallError, RunError
from ..events import BatchChanged, EventBus, RunFinished, StopRequested
from ..providers.base import Provider
from ..reporting import RunStats, Snapshot
from ..types import BatchStatus, Completion, ErrorType, Request, RowResult, RowStatus
from .budget import over_budget
from .parts import Part, account, attached, last_known, new_parts, reattached
from .results import row_result
from .rows import BatchRows
from .service import BATCH_LIMITS, BatchService, open_service, unanswered
from .store import BatchStore, StoredBatch
from .submission import Submitter

log = logging.getLogger("notebook_kit")
Item = Request | RowResult
POLL_GROWTH = 1.5
POLL_CAP = 6.0  # the longest wait between polls, in first waits (10 s -> 60 s)
COLLECT_TRIES = 5  # downloads of a batch's results tried before its rows fail
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
        prints = await asyncio.to_thread(self._fingerprints, leaders)
        owner = account(self.provider)
        earlier = await asyncio.to_thread(reattached, self._store, owner, leaders, prints)
        parts: list[Part] = []
        for part in earlier:
            parts += await self._found_again(service, part, leaders)
        return parts + await self._new_parts(service, leaders, prints)

    def _fingerprints(self, leaders: Mapping[str, Request]) -> dict[str, str]:
        name, base_url = self.provider.name, self._base_url
        return {key: cache_key(name, base_url, request) for key, request in leaders.items()}

    async def _found_again(
        self, service: BatchService, part: Part, leaders: dict[str, Request]
    ) -> list[Part]:
        """An earlier run's batch (or claim) for some of these rows: waited for, or read
        now when it ended without answering them all (the rest go back to `leaders`)."""
        assert part.status is not None
        status: BatchStatus | None = part.status
        if status is not None and status.state == "submitting":
            status = await self._claimed(service, status)
        if status is None:  # never created: the rows are sent now
            _back(part, leaders)
            return []
        try:
            status = await service.poll(status.batch_id)
        except CallError as exc:
            if exc.error_type is not ErrorType.NOT_FOUND:
                raise
            log.warning(
                "batch %s is gone at the provider: its rows are sent again", status.batch_id
            )
            self._store_update(replace(status, state="lost"), collected=True)
            _back(part, leaders)
            return []
        part.status = status
        self._changed(status)
        if not status.ended or not (status.state in UNREAD or status.resubmit):
            return [part]
        outcomes = await service.results(status.batch_id, part.model)
        self._rows.sent(part)
        again = Part(rows={}, prints={}, sent_at=part.sent_at)
        for custom_id, (key, request) in part.rows.items():
            outcome = outcomes.get(custom_id)
            if isinstance(outcome, Completion):
                self._answer(part, custom_id, key, request, outcome)
            elif key is not None:
                leaders[key] = request
                again.rows[custom_id] = (key, request)
        self._rows.left(again, "cancelled")  # their attempt in this batch ends unanswered
        await self._read(part, outcomes, status)
        return []

    async def _claimed(self, service: BatchService, claim: BatchStatus) -> BatchStatus | None:
        """A batch another run is creating: its status once created, None if it never was
        (that run failed to, or died before; a batch the provider has is found by claim)."""
        self._changed(claim)
        try:
            while True:
                stored = await asyncio.to_thread(self._store.get, claim.batch_id)
                if stored is None:
                    return None
                if not stored.claimed:
                    return last_known(stored)
                if not stored.claim_alive(time.time()):
                    return await self._adopt(service, stored)
                if self._stop.is_set():  # its rows go back, to be cancelled unsent
                    return None
                await self._pause(self.config.batch_poll_s or service.poll_s)
        finally:
            self.batches.pop(claim.batch_id, None)

    async def _adopt(self, service: BatchService, claim: StoredBatch) -> BatchStatus | None:
        """A dead run's claim: its batch, if the provider has one under it, else dropped."""
        found = await service.find(claim.batch_id)
        if found is None:
            await asyncio.to_thread(self._store.drop, claim.batch_id)
            return None
        created = replace(
            claim, batch_id=found.batch_id, state=found.state, expires_at=found.expires_at
        )
        await asyncio.to_thread(self._store.settle_claim, claim.batch_id, created)
        return found

    async def _new_parts(
        self, service: BatchService, leaders: dict[str, Request], prints: Mapping[str, str]
    ) -> list[Part]:
        """The remaining rows within the budget, encoded and split within the limits."""
        budget = self.config.budget_usd
        sent, over = over_budget(list(leaders.items()), budget)
        for key, request in over:
            note = f"not submitted: the batch would pass budget_usd={budget:g}"
            self._rows.settle(key, request, _cancelled(request, note), None)
        encoded = await asyncio.to_thread(self._encoded, service, sent)
        rows: list[tuple[str, str, Request, bytes]] = []
        for custom_id, key, request, item in encoded:
            if isinstance(item, CallError):
                self._rows.settle(key, request, row_result(request, item)[0], None)
            else:
                rows.append((custom_id, key, request, item))
        return new_parts(rows, BATCH_LIMITS[self.provider.name], prints)

    def _encoded(
        self, service: BatchService, rows: list[tuple[str, Request]]
    ) -> list[tuple[str, str, Request, bytes | CallError]]:
        out: list[tuple[str, str, Request, bytes | CallError]] = []
        for key, request in rows:
            custom_id = f"{self.run_id}-{request.key}"
            try:
                out.append((custom_id, key, request, service.encode(custom_id, request)))
            except CallError as exc:
                out.append((custom_id, key, request, exc))
        return out

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
        """A batch refused for the enqueued-token limit: its rows, to be sent again once
        another of the run's batches ends; or, with none left (`alone`), in two halves.
        A single row refused alone fails (`rate_limit`)."""
        self._store_update(status, collected=True)
        self.batches.pop(status.batch_id, None)
        self._rows.left(part, "rate_limit")
        if alone and len(part.rows) == 1:
            error = CallError(ErrorType.RATE_LIMIT, f"the batch queue is full: {status.error}")
            for key, request in part.rows.values():
                self._rows.settle(key, request, row_result(request, error)[0], None)
            return []
        ids = list(part.rows)
        if not part.items:  # dropped once it ran, or an earlier run's batch: encode again
            requests = [part.rows[i][1] for i in ids]
            part.items = await asyncio.to_thread(
                lambda: [service.encode(i, r) for i, r in zip(ids, requests, strict=True)]
            )
        cut = len(ids) // 2 if alone else len(ids)
        halves = [range(cut), range(cut, len(ids))] if alone else [range(len(ids))]
        log.info("batch %s waits for the provider's token queue: sent again", status.batch_id)
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
        if status.state in ("running", "finishing") and not status.resubmit:
            part.items = []  # accepted: what was sent is no longer needed
        self._changed(status)
        self._store_update(status)
        return status

    async def _collect(self, service: BatchService, part: Part, status: BatchStatus) -> bool:
        """Read an ended batch's results into rows (and the cache); False: try again later."""
        lost: CallError | None = None
        if status.state == "failed":
            failure = unanswered(status)
            if failure.fatal:
                self._abort(failure)
        try:
            outcomes = await service.results(status.batch_id, part.model)
        except CallError as exc:
            part.collect_failures += 1
            if exc.fatal:
                self._abort(exc)
                raise self.run_error from None  # type: ignore[misc]
            if status.state != "failed" and part.collect_failures < COLLECT_TRIES:
                log.warning("could not read batch %s (%s): trying again", status.batch_id, exc)
                return False
            outcomes = {}
            if status.state != "failed":
                note = f"could not read the results of batch {status.batch_id}: {exc}"
                lost = CallError(
                    exc.error_type, f"{note}; kit.attach({status.batch_id!r}) reads them"
                )
        for custom_id, (key, request) in part.rows.items():
            outcome = outcomes.get(custom_id) or lost or unanswered(status)
            self._answer(part, custom_id, key, request, outcome)
        await self._read(part, outcomes, status if lost is None else None)
        return True

    def _answer(
        self,
        part: Part,
        custom_id: str,
        key: str | None,
        request: Request,
        outcome: Completion | CallError,
    ) -> None:
        seconds = round(self.clock.now() - part.sent_at, 3)
        result, completion = row_result(request, outcome, latency=seconds)
        self._rows.answered(part, result)
        self._rows.settle(key, request, result, completion, part.prints.get(custom_id))

    async def _read(
        self, part: Part, outcomes: Mapping[str, object], status: BatchStatus | None
    ) -> None:
        """After a batch's rows are answered: its other replies cached too (a batch found
        again may hold rows this run has not), the cache on disk, then the batch marked read
        (`status` None: not read, a later run tries again)."""
        cache = self._cache
        if cache is not None:
            for custom_id, print_ in part.prints.items():
                outcome = outcomes.get(custom_id)
                if custom_id not in part.rows and isinstance(outcome, Completion):
                    cache.put(print_, self.provider.name, outcome.model or "", outcome)
            await asyncio.to_thread(cache.flush)
        if status is not None:
            self._store_update(status, collected=True)

    def _not_submitted(self, waiting: deque[Part]) -> None:
        for part in waiting:
            for key, request in part.rows.values():
                note = f"not submitted: {self.stop_reason}"
                self._rows.settle(key, request, _cancelled(request, note), None)
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


def _back(part: Part, leaders: dict[str, Request]) -> None:
    """A batch found again that will not answer: its rows are to be sent."""
    for key, request in part.rows.values():
        if key is not None:
            leaders[key] = request


def _cancelled(request: Request, note: str) -> RowResult:
    return RowResult(
        key=request.key, status=RowStatus.CANCELLED, error=note, error_type=ErrorType.CANCELLED
    )
