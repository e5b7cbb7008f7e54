"""Requests in flight: a limit that can be resized mid-run, and its adaptive controller."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from ..clock import Clock
from ..retry import server_wait
from ..types import ErrorType, Request
from .base import AttemptOutcome


class ConcurrencyLimit:
    """A counting limit whose size can be raised or lowered at any time.

    Raising it admits waiters at once; lowering it lets holders finish and admits no one
    until fewer than the new total are held. Waiters are served first come, first served.
    It belongs to one event loop: change it from that loop only.
    """

    def __init__(self, total: int) -> None:
        self._total = total
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"the concurrency limit must be at least 1, got {value}")
        self._total = value
        self._wake()

    @property
    def in_use(self) -> int:
        return self._in_use

    async def acquire(self) -> None:
        if self._in_use < self._total and not self._waiters:
            self._in_use += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was granted just as we were cancelled
            elif waiter in self._waiters:  # a release may already have dropped it
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self._in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._in_use < self._total:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_use += 1
                waiter.set_result(None)


class AdaptiveConcurrency:
    """Lowers a limit on 429s and raises it back as calls succeed, never above its target.

    Decrease: each 429 takes one slot away, but one overload (the 429s within `calm`
    seconds of the first) takes at most half: a burst of k rejections says about k requests
    too many were in flight. Increase: +1 after a limit's worth of successes, at most every
    `GROW_EVERY` seconds (probing faster only buys the next burst of 429s). The user's
    setting (`target`, e.g. the panel's slider) is the ceiling.
    """

    GROW_EVERY = 2.0  # seconds between two increases

    def __init__(
        self,
        limit: ConcurrencyLimit,
        *,
        enabled: bool,
        clock: Clock,
        on_change: Callable[[int], None],
        calm: float = 1.0,
    ) -> None:
        self._limit = limit
        self.target = limit.total
        self._enabled = enabled
        self._clock = clock
        self._on_change = on_change
        self._calm = calm
        self._calm_until = 0.0
        self._floor = 1  # how low the current overload may push the limit
        self._grown_at = 0.0
        self._successes = 0

    def set_target(self, value: int) -> None:
        """A new ceiling from the user; the limit goes straight to it."""
        changed = value != self.target
        moved = self._set(value)  # first: a value the limiter refuses leaves the target as is
        self.target = value
        if not moved and changed:
            self._on_change(value)

    def rate_limited(self, retry_after: float | None) -> None:
        if not self._enabled:
            return
        now = self._clock.now()
        if now >= self._calm_until:  # a new overload
            self._calm_until = now + max(self._calm, retry_after or 0.0)
            self._floor = max(1, self._limit.total // 2)
        self._grown_at = now
        self._successes = 0
        self._set(max(self._floor, self._limit.total - 1))

    def succeeded(self) -> None:
        if not self._enabled or self._limit.total >= self.target:
            return
        now = self._clock.now()
        self._successes += 1
        if self._successes >= self._limit.total and now - self._grown_at >= self.GROW_EVERY:
            self._successes = 0
            self._grown_at = now
            self._set(self._limit.total + 1)

    def _set(self, value: int) -> bool:
        if value == self._limit.total:
            return False
        self._limit.total = value
        self._on_change(value)
        return True


class ConcurrencyMeter:
    """The requests-in-flight meter: a slot per attempt, adapted to 429s when enabled."""

    def __init__(
        self,
        total: int,
        *,
        adaptive: bool,
        clock: Clock,
        on_change: Callable[[int, int], None],
    ) -> None:
        self.limit = ConcurrencyLimit(total)
        self.adaptive = AdaptiveConcurrency(
            self.limit,
            enabled=adaptive,
            clock=clock,
            on_change=lambda value: on_change(value, self.adaptive.target),
        )

    async def acquire(self, request: Request) -> object:
        await self.limit.acquire()
        return None

    def release(self, held: object, outcome: AttemptOutcome) -> None:
        self.limit.release()
        error = outcome.error
        if outcome.completion is not None:
            self.adaptive.succeeded()
        elif error is not None and error.error_type is ErrorType.RATE_LIMIT:
            self.adaptive.rate_limited(server_wait(error))

    def set_target(self, value: int) -> None:
        self.adaptive.set_target(value)
