"""A per-attempt timeout that does not punish a request for the event loop's own stalls.

In a notebook a blocking cell can freeze the kernel's loop for seconds. When it resumes,
a plain `asyncio.timeout` fires before the reply that arrived meanwhile is read, so a paid
answer would be thrown away and bought again. This deadline notices that its timer ran
late and gives the request a short grace period to deliver what is already there.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from .clock import Cancellable, Clock

STALL = 0.25  # a timer this late means the loop itself was stalled
GRACE = 1.0  # seconds a stalled request gets to deliver a reply that arrived meanwhile


class Deadline:
    """`async with Deadline(seconds, clock):` raises TimeoutError if the body takes too long.

    `idle=True`: too long since the last `touch()` (a streamed chunk) instead; a touch only
    records the time, the timer is moved when it fires.
    """

    def __init__(self, seconds: float, clock: Clock, *, idle: bool = False) -> None:
        self._seconds = seconds
        self._clock = clock
        self._idle = idle
        self._task: asyncio.Task[object] | None = None
        self._handle: Cancellable | None = None
        self._due = 0.0
        self._last = 0.0  # the last touch
        self.expired = False

    async def __aenter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadline must be used inside a task")
        self._task = task
        self._last = self._clock.now()
        self._arm(self._last + self._seconds)
        return self

    def touch(self) -> None:
        """Something arrived: an idle deadline counts from now."""
        self._last = self._clock.now()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        expired = self.expired and exc_type is asyncio.CancelledError
        if expired and self._task is not None and self._task.uncancel() == 0:
            raise TimeoutError(f"no reply within {self._seconds:g} s") from None

    def _arm(self, due: float) -> None:
        self._due = due
        self._handle = self._clock.call_at(due, self._on_due)

    def _on_due(self) -> None:
        now = self._clock.now()
        if now - self._due > STALL:
            self._arm(now + GRACE)  # we were not running: let pending I/O be read first
            return
        if self._idle and self._last + self._seconds > now:  # a chunk came since
            self._arm(self._last + self._seconds)
            return
        self.expired = True
        assert self._task is not None
        self._task.cancel()
