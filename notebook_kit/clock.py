"""The run's time. One `Clock` passes from the run down to the meters, retry waits, deadlines
and the demo model, so a test can run them all on virtual time.

The default reads the running event loop's clock; under a time-compacting loop (the tests
use `looptime`) that clock is virtual and every wait of the run takes no real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic seconds, a sleep on the same scale, and a timer for deadlines."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable: ...


class LoopClock:
    """The clock of the event loop running when it is made."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()

    def now(self) -> float:
        return self._loop.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable:
        return self._loop.call_at(when, callback)
