"""The one protocol for everything that can hold a request back, and what it is told after.

The engine acquires each meter of a step, in order, before an attempt, and releases what it
holds when the attempt ends (or never started). A new kind of limit is a new class here;
the engine does not change.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from ..errors import CallError
from ..types import Completion, Request


class AttemptOutcome(NamedTuple):
    """How one attempt ended, as the meters see it."""

    request: Request
    sent: bool  # False: the request never went out (stopped while it waited)
    completion: Completion | None = None
    error: CallError | None = None  # neither: cancelled, or an error the kit does not know
    cost_usd: float | None = None  # what the reply was billed, when usage and price are known


class Refused(Exception):
    """A meter cannot let the request start, ever (e.g. the budget is spent): the run stops."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Meter(Protocol):
    """Acquire before an attempt; release with its outcome after."""

    async def acquire(self, request: Request) -> object:
        """Wait until `request` may start; return what `release` gets back."""
        ...

    def release(self, held: object, outcome: AttemptOutcome) -> None:
        """Give back what `acquire` took, and learn from the outcome."""
        ...
