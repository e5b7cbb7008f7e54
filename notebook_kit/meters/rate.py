"""Per-minute rates: requests (rpm) or tokens (tpm), spaced evenly, never in bursts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..clock import Clock
from ..types import Request
from .base import AttemptOutcome


class RateMeter:
    """Spaces starts so that at most `per_minute` units begin per minute, with no bursts.

    Each start costs `cost(request)` units (1 for requests) and pushes the next start
    `cost / rate` seconds later. A token meter settles its estimate with the real usage.
    """

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Clock,
        cost: Callable[[Request], float] | None = None,
    ) -> None:
        self._rate = per_minute / 60.0
        self._clock = clock
        self._cost = cost
        self._next_start = clock.now()
        self._lock = asyncio.Lock()  # FIFO: starts are granted in arrival order

    @classmethod
    def tokens(cls, per_minute: float, *, clock: Clock) -> RateMeter:
        """A tpm meter: input estimate plus max_tokens per start, settled with usage."""
        return cls(per_minute, clock=clock, cost=Request.planned_tokens)

    async def acquire(self, request: Request) -> float:
        cost = 1.0 if self._cost is None else float(self._cost(request))
        await self.take(cost)
        return cost

    def release(self, held: object, outcome: AttemptOutcome) -> None:
        if self._cost is None:
            return
        estimate = float(held)  # type: ignore[arg-type]
        if not outcome.sent:
            self.settle(-estimate)  # never went out: it used nothing
            return
        completion = outcome.completion
        if completion is not None:
            used = (completion.input_tokens or 0) + (completion.output_tokens or 0)
            if used:
                self.settle(used - estimate)

    async def take(self, cost: float) -> None:
        """Wait for the next start time, then book `cost` units."""
        async with self._lock:
            delay = self._next_start - self._clock.now()
            if delay > 0:
                await self._clock.sleep(delay)
            self._next_start = max(self._next_start, self._clock.now()) + cost / self._rate

    def settle(self, extra_cost: float) -> None:
        """Charge (or refund, if negative) the difference between real and estimated cost."""
        self._next_start += extra_cost / self._rate
