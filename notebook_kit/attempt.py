"""One attempt: the provider's call under a deadline, its meters released, its outcome
published. Streaming will change the call here, not the scheduler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .clock import Clock
from .deadline import Deadline
from .errors import CallError
from .events import AttemptFinished, AttemptStarted, Event
from .meters import AttemptOutcome
from .pricing import cost_of
from .providers.base import Session
from .retry import Retrier
from .rows import Row
from .types import Completion, ErrorType, Request

log = logging.getLogger("notebook_kit")


class Attempts:
    """Sends the attempts of one run through its provider session."""

    def __init__(
        self,
        session: Session,
        *,
        timeout: float,
        clock: Clock,
        retrier: Retrier,
        emit: Callable[[Event], None],
        since: float,
        step: str | None = None,
    ) -> None:
        self._session = session
        self._timeout = timeout
        self._clock = clock
        self._retrier = retrier
        self._emit = emit
        self._since = since  # the run's start on the clock
        self._step = step

    async def send(self, row: Row) -> Completion:
        """One request; on a failure `row.wait` says whether and when to try again."""
        request, tries, key = row.request, row.tries, row.request.key
        tries.sent += 1
        attempt = tries.sent
        row.in_flight = True
        start = self._clock.now() - self._since
        self._emit(AttemptStarted(start, key, attempt, self._step))
        completion: Completion | None = None
        error: CallError | None = None
        outcome, row.wait, row.cost = "ok", None, None
        try:
            completion = await self._call(request)
            row.cost = cost_of(
                (completion.model, request.model),
                completion.input_tokens,
                completion.output_tokens,
            )
            row.spent.add(completion, row.cost)
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
                    input_tokens=completion.input_tokens if completion else None,
                    output_tokens=completion.output_tokens if completion else None,
                    cost_usd=row.cost,
                    wait_s=row.wait,
                    step=self._step,
                )
            )

    async def _call(self, request: Request) -> Completion:
        try:
            async with Deadline(self._timeout, self._clock):
                return await self._session.complete(request)
        except TimeoutError:
            raise CallError(
                ErrorType.TIMEOUT, f"no reply within timeout={self._timeout:g} s"
            ) from None
