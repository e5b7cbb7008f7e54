"""The rows of a batch run and what they publish: results, the same row and attempt events
as an online run, the cache and the rows that wait for an identical one."""

from __future__ import annotations

from ..cache import Cache
from ..clock import Clock
from ..dedupe import Reuse
from ..events import AttemptFinished, AttemptStarted, EventBus, RowFinished, Source
from ..types import Completion, Request, RowResult, RowStatus
from .parts import Part


class BatchRows:
    """A batch run's results, by row position. An attempt is a row's time in a batch: it
    starts when the batch is submitted (or reattached) and ends when it is read."""

    def __init__(
        self,
        events: EventBus,
        reuse: Reuse,
        cache: Cache | None,
        *,
        provider: str,
        clock: Clock,
        since: float,
    ) -> None:
        self.results: dict[int, RowResult] = {}
        self._events = events
        self._reuse = reuse
        self._cache = cache
        self._provider = provider
        self._clock = clock
        self._since = since  # the run's start on the clock

    def finish(self, result: RowResult, source: Source) -> None:
        self.results[result.key] = result
        self._events.emit(RowFinished(self._now(), result.key, result, None, source))

    def settle(
        self,
        key: str | None,
        request: Request,
        result: RowResult,
        completion: Completion | None,
        print_: str | None = None,
    ) -> None:
        """A row's end, its followers' (rows with the same request), and its valid reply
        cached; `key` None: a row of `kit.attach`, cached by its fingerprint."""
        self.finish(result, "call")
        if key is not None:
            self._reuse.settle(key, request, result, completion)
        elif completion is not None and self._cache is not None and print_ is not None:
            self._cache.put(print_, self._provider, request.model or "", completion)

    def sent(self, part: Part) -> None:
        part.sent_at = self._clock.now()
        if self._events.wants(AttemptStarted):
            t = self._now()
            for _, request in part.rows.values():
                self._events.emit(AttemptStarted(t, request.key, 1))

    def answered(self, part: Part, result: RowResult) -> None:
        """The row's attempt ends with the batch's answer."""
        outcome = "ok" if result.status is RowStatus.OK else str(result.error_type or "cancelled")
        self._events.emit(
            AttemptFinished(
                t=self._now(),
                key=result.key,
                attempt=1,
                started=part.sent_at - self._since,
                outcome=outcome,
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                cost_usd=result.cost_usd,
            )
        )

    def left(self, part: Part, outcome: str) -> None:
        """Every row's attempt ends unanswered: sent again later, or left running."""
        t, started = self._now(), part.sent_at - self._since
        for _, request in part.rows.values():
            self._events.emit(AttemptFinished(t, request.key, 1, started, outcome))

    def _now(self) -> float:
        return self._clock.now() - self._since
