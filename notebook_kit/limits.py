"""Limits a run can change while it runs: slots in flight, a start gate, per-minute meters.

All of them belong to one event loop and must be changed from it (callbacks on other
threads go through `loop.call_soon_threadsafe`): set from another thread, a waiter can
wake seconds late.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class ConcurrencyLimit:
    """A counting limit whose size can be raised or lowered at any time.

    Raising it admits waiters at once; lowering it lets holders finish and admits no one
    until fewer than the new total are held. Waiters are served first come, first served.
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


class StartGate:
    """Holds back new requests while the run is paused or cooling down after a 429."""

    def __init__(self, *, clock: Clock, sleep: Sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._open_until_paused = asyncio.Event()
        self._open_until_paused.set()
        self._closed_until = 0.0

    @property
    def paused(self) -> bool:
        return not self._open_until_paused.is_set()

    def pause(self) -> None:
        self._open_until_paused.clear()

    def resume(self) -> None:
        self._open_until_paused.set()

    def cool_down(self, seconds: float) -> None:
        """Start nothing new for `seconds` (extends, never shortens, a running cooldown)."""
        self._closed_until = max(self._closed_until, self._clock() + seconds)

    def cooling_for(self) -> float:
        return max(0.0, self._closed_until - self._clock())

    async def wait(self) -> None:
        while True:
            await self._open_until_paused.wait()
            remaining = self.cooling_for()
            if remaining <= 0:
                return
            await self._sleep(remaining)


class RateMeter:
    """Spaces starts so that at most `per_minute` units begin per minute, with no bursts.

    Each start costs `cost` units and pushes the next start `cost / rate` seconds later.
    `settle` corrects an estimate once the real cost is known (e.g. tokens from usage).
    """

    def __init__(self, per_minute: float, *, clock: Clock, sleep: Sleep) -> None:
        self._rate = per_minute / 60.0
        self._clock = clock
        self._sleep = sleep
        self._next_start = clock()
        self._lock = asyncio.Lock()  # FIFO: starts are granted in arrival order

    async def acquire(self, cost: float = 1.0) -> None:
        async with self._lock:
            delay = self._next_start - self._clock()
            if delay > 0:
                await self._sleep(delay)
            self._next_start = max(self._next_start, self._clock()) + cost / self._rate

    def settle(self, extra_cost: float) -> None:
        """Charge (or refund, if negative) the difference between real and estimated cost."""
        self._next_start += extra_cost / self._rate


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
        self.target = value
        self._set(value)

    def rate_limited(self, retry_after: float | None) -> None:
        if not self._enabled:
            return
        now = self._clock()
        if now >= self._calm_until:  # a new overload
            self._calm_until = now + max(self._calm, retry_after or 0.0)
            self._floor = max(1, self._limit.total // 2)
        self._grown_at = now
        self._successes = 0
        self._set(max(self._floor, self._limit.total - 1))

    def succeeded(self) -> None:
        if not self._enabled or self._limit.total >= self.target:
            return
        now = self._clock()
        self._successes += 1
        if self._successes >= self._limit.total and now - self._grown_at >= self.GROW_EVERY:
            self._successes = 0
            self._grown_at = now
            self._set(self._limit.total + 1)

    def _set(self, value: int) -> None:
        if value != self._limit.total:
            self._limit.total = value
            self._on_change(value)


class Budget:
    """Spending cap: reserves each request's worst-case cost while it is in flight.

    A request starts only if what was billed, plus the reservations of the requests in
    flight, plus its own reservation fit in `usd`. So the billed total cannot pass `usd`,
    as long as each reservation covers its request's real cost.
    """

    def __init__(self, usd: float) -> None:
        self.usd = usd
        self.spent = 0.0
        self.reserved = 0.0
        self._holders = 0  # reservations outstanding (counted: float sums never reach 0.0)
        self._changed = asyncio.Event()

    async def reserve(self, amount: float) -> bool:
        """Wait until `amount` fits; False when it cannot (nothing in flight to free room)."""
        while self.spent + self.reserved + amount > self.usd:
            if self._holders == 0:
                return False
            self._changed.clear()
            await self._changed.wait()
        self.reserved += amount
        self._holders += 1
        return True

    def settle(self, reserved: float, billed: float) -> None:
        """Replace a reservation by what the request really cost."""
        self._holders -= 1
        self.reserved = max(0.0, self.reserved - reserved) if self._holders else 0.0
        self.spent += billed
        self._changed.set()

    def raise_to(self, usd: float) -> None:
        self.usd = usd
        self._changed.set()
