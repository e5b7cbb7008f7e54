"""One attempt: the provider's call under a deadline (streamed or whole), its meters
released, its outcome published."""

from __future__ import annotations

import asyncio
import logging

from .clock import Clock
from .deadline import Deadline
from .errors import CallError
from .events import AttemptFinished, AttemptStarted, EventBus, StreamOpened
from .meters import AttemptOutcome
from .pricing import cost_of
from .providers.base import Session
from .retry import Retrier
from .rows import Row
from .streaming import Chunks
from .types import Completion, ErrorType, Request

log = logging.getLogger("notebook_kit")


class Attempts:
    """Sends the attempts of one run through its provider session.

    Streaming (`whole` set): `timeout` is the longest wait between two chunks and `whole`
    caps the request; a stream cut mid-way fails the attempt with what it had said in the
    error, and the retrier decides as for any failure.
    """

    def __init__(
        self,
        session: Session,
        *,
        timeout: float,
        clock: Clock,
        retrier: Retrier,
        events: EventBus,
        since: float,
        step: str | None = None,
        whole: float | None = None,
    ) -> None:
        self._session = session
        self._timeout = timeout
        self._whole = whole  # None: whole replies
        self._clock = clock
        self._retrier = retrier
        self._events = events
        self._emit = events.emit
        self._since = since  # the run's start on the clock
        self._step = step

    async def send(self, row: Row) -> Completion:
        """One request; on a failure `row.wait` says whether and when to try again."""
        request, tries, key = row.request, row.tries, row.request.key
        tries.sent += 1
        attempt = tries.sent
        row.in_flight = True
        started = self._clock.now()
        start = started - self._since
        self._emit(AttemptStarted(start, key, attempt, self._step))
        completion: Completion | None = None
        error: CallError | None = None
        outcome, row.wait, row.cost = "ok", None, None
        try:
            if self._whole is None:
                completion = await self._call(request)
            else:
                completion = await self._stream(row, started)
            row.cost = self._bill(row, completion, request)
            return completion
        except CallError as exc:
            error, outcome = exc, exc.error_type.value
            if exc.input_tokens is not None or exc.output_tokens is not None:  # a cut stream
                row.cost = self._bill(row, _billed(exc, request), request)
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
            end = self._clock.now() - self._since
            row.in_flight = False
            row.latency = round(end - start, 4)
            row.release(AttemptOutcome(request, True, completion, error, row.cost))
            self._emit(
                AttemptFinished(
                    t=end,
                    key=key,
                    attempt=attempt,
                    started=start,
                    outcome=outcome,
                    input_tokens=(completion or _billed(error, request)).input_tokens,
                    output_tokens=(completion or _billed(error, request)).output_tokens,
                    cost_usd=row.cost,
                    wait_s=row.wait,
                    step=self._step,
                )
            )

    def _bill(self, row: Row, completion: Completion, request: Request) -> float | None:
        cost = cost_of(
            (completion.model, request.model), completion.input_tokens, completion.output_tokens
        )
        row.spent.add(completion, cost)
        return cost

    async def _call(self, request: Request) -> Completion:
        try:
            async with Deadline(self._timeout, self._clock):
                return await self._session.complete(request)
        except TimeoutError:
            raise CallError(
                ErrorType.TIMEOUT, f"no reply within timeout={self._timeout:g} s"
            ) from None

    async def _stream(self, row: Row, started: float) -> Completion:
        """The reply read chunk by chunk: idle and whole-request deadlines, time to first
        token, and the text so far for whoever listens (the panel's peek)."""
        assert self._whole is not None
        clock, key = self._clock, row.request.key
        whole = Deadline(self._whole, clock)
        idle = Deadline(self._timeout, clock, idle=True)
        chunks = Chunks(clock, idle)
        if self._events.wants(StreamOpened):  # the peek reads its text when it refreshes
            self._emit(StreamOpened(started - self._since, key, chunks, self._step))
        try:
            async with whole, idle:
                completion = await self._session.stream(row.request, chunks)
        except TimeoutError:
            if idle.expired:
                message = f"no chunk within timeout={self._timeout:g} s"
            else:
                message = f"the reply took longer than total_timeout={self._whole:g} s"
            raise CallError(ErrorType.TIMEOUT, message + chunks.partial_note()) from None
        except CallError as exc:
            raise exc.with_note(chunks.partial_note()) from None
        finally:
            if chunks.first_at is not None:
                row.ttft = round(chunks.first_at - started, 4)
        return completion


def _billed(error: CallError | None, request: Request) -> Completion:
    """What a failed request was billed, as far as the provider said (a cut stream)."""
    return Completion(
        text="",
        model=request.model,
        input_tokens=error.input_tokens if error is not None else None,
        output_tokens=error.output_tokens if error is not None else None,
    )
