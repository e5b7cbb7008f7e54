"""The start gate (pause, 429 cool-down) and the pacing the rate-limit headers ask for."""

from __future__ import annotations

import asyncio
import math
from typing import Literal

from ..clock import Clock
from ..config import RetryPolicy
from ..retry import rate_limit_pause
from ..types import ErrorType, Request
from .base import AttemptOutcome

PauseReason = Literal["user", "budget"]
# A cool-down this close to its end is over: a clock may not advance for a shorter sleep (a
# virtual one rounds its time), and then the gate would wait for it forever.
GRAIN = 1e-3


class StartGate:
    """Holds back new requests while paused (by the user, at the budget) or after a 429.

    A 429 closes the gate for every row (its Retry-After, capped), not just the one that
    got it. Pauses have reasons, so raising the budget does not undo a user's Pause.
    """

    def __init__(self, *, clock: Clock, policy: RetryPolicy) -> None:
        self._clock = clock
        self._policy = policy
        self._open = asyncio.Event()
        self._open.set()
        self._reasons: set[PauseReason] = set()
        self._closed_until = -math.inf

    def paused_by(self, reason: PauseReason) -> bool:
        return reason in self._reasons

    @property
    def paused(self) -> bool:
        return bool(self._reasons)

    def pause(self, reason: PauseReason = "user") -> None:
        self._reasons.add(reason)
        self._open.clear()

    def resume(self, reason: PauseReason = "user") -> None:
        self._reasons.discard(reason)
        if not self._reasons:
            self._open.set()

    def cool_down(self, seconds: float) -> None:
        """Start nothing new for `seconds` (extends, never shortens, a running cool-down)."""
        self._closed_until = max(self._closed_until, self._clock.now() + seconds)

    def closed(self) -> bool:
        """Paused, or cooling down after a 429: a request now would start too early."""
        return bool(self._reasons) or self.cooling_for() > GRAIN

    def state(self, *, stopping: bool) -> str:
        """What a run behind this gate is doing, for displays."""
        if stopping:
            return "stopping"
        if self.paused_by("budget"):
            return "paused at the budget"
        return "paused" if self.paused_by("user") else "running"

    def cooling_for(self) -> float:
        return max(0.0, self._closed_until - self._clock.now())

    async def acquire(self, request: Request | None = None) -> None:
        while True:
            if not self._open.is_set():
                await self._open.wait()
            remaining = self._closed_until - self._clock.now()
            if remaining <= GRAIN:
                return
            await self._clock.sleep(remaining)

    def release(self, held: object, outcome: AttemptOutcome) -> None:
        error = outcome.error
        if error is not None and error.error_type is ErrorType.RATE_LIMIT:
            self.cool_down(rate_limit_pause(error, self._policy))


class Gates:
    """A pipeline's start gates, one per endpoint: a 429 cools down the steps on its own
    endpoint only, while Pause, Resume and the budget hold every gate."""

    def __init__(self, *, clock: Clock, policy: RetryPolicy) -> None:
        self._clock = clock
        self._policy = policy
        self._gates: dict[object, StartGate] = {}

    def of(self, endpoint: object) -> StartGate:
        """The gate of `endpoint` (made on first use, paused as the others are)."""
        gate = self._gates.get(endpoint)
        if gate is None:
            gate = self._gates[endpoint] = StartGate(clock=self._clock, policy=self._policy)
            for reason in self._reasons():
                gate.pause(reason)
        return gate

    def _reasons(self) -> set[PauseReason]:
        first = next(iter(self._gates.values()), None)
        return set(first._reasons) if first is not None else set()

    def paused_by(self, reason: PauseReason) -> bool:
        return any(gate.paused_by(reason) for gate in self._gates.values())

    def pause(self, reason: PauseReason = "user") -> None:
        for gate in self._gates.values():
            gate.pause(reason)

    def resume(self, reason: PauseReason = "user") -> None:
        for gate in self._gates.values():
            gate.resume(reason)

    def state(self, *, stopping: bool) -> str:
        gate = next(iter(self._gates.values()), None)
        if gate is None:
            return "stopping" if stopping else "running"
        return gate.state(stopping=stopping)

    async def acquire(self, request: Request | None = None) -> None:
        """Wait until no gate is paused (the budget waits here to be raised)."""
        for gate in list(self._gates.values()):
            await gate.acquire(request)


class HeaderPacing:
    """Closes the gate until the reset when a reply's rate-limit headers say the quota is used.

    The quota a reply reports was counted when the server answered; requests started after
    this one may not have reached it yet, so they are counted against it too.
    """

    def __init__(self, gate: StartGate, *, cap: float) -> None:
        self._gate = gate
        self._cap = cap
        self._started = 0  # requests started through this meter

    async def acquire(self, request: Request) -> int:
        self._started += 1
        return self._started

    def release(self, held: object, outcome: AttemptOutcome) -> None:
        completion = outcome.completion
        rate = completion.rate if completion is not None else None
        if rate is None:
            return
        started_since = self._started - int(held)  # type: ignore[call-overload]
        left = rate.remaining_requests
        if left is not None and left - started_since <= 0:
            self._gate.cool_down(min(rate.requests_reset_s or 1.0, self._cap))
        left = rate.remaining_tokens
        if left is not None and left - started_since * outcome.request.planned_tokens() <= 0:
            self._gate.cool_down(min(rate.tokens_reset_s or 1.0, self._cap))
