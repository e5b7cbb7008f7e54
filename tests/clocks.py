"""A clock for unit tests of meters and retries: it moves only when the code sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class FakeTime:
    """Implements `notebook_kit.clock.Clock`; `t` is the time now, `sleeps` what was waited."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)

    def call_at(self, when: float, callback: Callable[[], None]) -> asyncio.Handle:
        raise NotImplementedError("FakeTime has no timers: test deadlines under looptime")
