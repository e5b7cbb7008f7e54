"""Reading an ended batch: each row's outcome as its result (and the cache), then the batch
marked read in the jobs table, only once the cache holds its replies."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace

from ..cache import Cache
from ..clock import Clock
from ..errors import CallError
from ..types import BatchStatus, Completion, Request
from .parts import Part
from .results import row_result
from .rows import BatchRows
from .service import LOST, BatchService, unanswered
from .store import BatchStore

log = logging.getLogger("notebook_kit")
COLLECT_TRIES = 5  # downloads of a batch's results tried before its rows fail


class Reader:
    """Reads a run's ended batches into its rows."""

    def __init__(
        self,
        rows: BatchRows,
        store: BatchStore,
        cache: Cache | None,
        *,
        provider: str,
        clock: Clock,
        abort: Callable[[CallError], None],
    ) -> None:
        self._rows = rows
        self._store = store
        self._cache = cache
        self._provider = provider
        self._clock = clock
        self._abort = abort  # a failure no row can do better than: stop the run

    async def collect(self, service: BatchService, part: Part, status: BatchStatus) -> bool:
        """Every row of the ended batch answered; False: its results could not be read,
        try again at the next poll (a fatal error is raised)."""
        if status.state == "failed" and (failure := unanswered(status)).fatal:
            self._abort(failure)
        lost: CallError | None = None
        try:  # a batch that failed as a whole answered no row
            failed = status.state == "failed"
            outcomes = {} if failed else await service.results(status.batch_id, part.model)
        except CallError as exc:
            part.collect_failures += 1
            if exc.fatal:
                raise
            if status.state != "failed" and part.collect_failures < COLLECT_TRIES:
                log.warning("could not read batch %s (%s): trying again", status.batch_id, exc)
                return False
            outcomes = {}
            if status.state != "failed":
                note = f"could not read batch {status.batch_id}: {exc}; run the cell again"
                lost = CallError(exc.error_type, note)
        for custom_id, (key, request) in part.rows.items():
            self.answer(
                part, custom_id, key, request, outcomes.get(custom_id) or lost or unanswered(status)
            )
        await self.read(part, outcomes, status if lost is None and not failed else None)
        if failed and status.error_code != LOST:  # a lost one is marked so already
            self.update(status, collected=True)
        return True

    async def salvage(
        self, service: BatchService, part: Part, status: BatchStatus
    ) -> list[tuple[str, Request]]:
        """An earlier run's batch that ended without answering every row (cancelled,
        expired, failed, refused for the token queue): the rows it answered, read; the
        others, (reuse key, request), to be sent again."""
        outcomes = await service.results(status.batch_id, part.model)
        self._rows.sent(part)
        again = Part(rows={}, prints={}, sent_at=part.sent_at)
        for custom_id, (key, request) in part.rows.items():
            outcome = outcomes.get(custom_id)
            if isinstance(outcome, Completion):
                self.answer(part, custom_id, key, request, outcome)
            elif key is not None:
                again.rows[custom_id] = (key, request)
        self._rows.left(again, "cancelled")  # their attempt in this batch ends unanswered
        await self.read(part, outcomes, status)
        return [(key, request) for key, request in again.rows.values() if key is not None]

    def answer(
        self,
        part: Part,
        custom_id: str,
        key: str | None,
        request: Request,
        outcome: Completion | CallError,
    ) -> None:
        seconds = round(self._clock.now() - part.sent_at, 3)
        result, completion = row_result(request, outcome, latency=seconds)
        self._rows.answered(part, result)
        self._rows.settle(key, request, result, completion, part.prints.get(custom_id))

    async def read(
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
                    cache.put(print_, self._provider, outcome.model or "", outcome)
            await asyncio.to_thread(cache.flush)
        if status is not None:
            self.update(status, collected=True)

    def lost(self, status: BatchStatus) -> None:
        """A batch the provider no longer has: marked so, never polled again."""
        log.warning("batch %s is gone at the provider: its rows are sent again", status.batch_id)
        self.update(replace(status, state="lost"), collected=True)

    def update(self, status: BatchStatus, *, collected: bool = False) -> None:
        """The batch's state in the jobs table (a failed write only delays it)."""
        try:
            self._store.update(
                status.batch_id,
                state=status.state,
                done=status.done,
                failed=status.failed,
                expires_at=status.expires_at,
                collected=collected,
            )
        except Exception as exc:
            log.warning("could not update batch %s in %s: %s", status.batch_id, self._store, exc)
