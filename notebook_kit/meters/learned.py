"""A request rate learned from 429s, for a server that enforces a limit it does not tell
(on by default; `learn_rate=False` turns it off).

Adaptive concurrency is the wrong control for a rate: at a fixed rate limit, fewer
requests in flight only help if each one is slow. So, when no `rpm` is given and no reply
carries rate-limit headers, this meter learns the rate itself (AIMD on the rate):

- until the first overload it lets every request through (a run that meets no limit pays
  nothing: no slow start);
- a 429 is taken for an overload only when it is one of several among the last replies
  (`CROWDED` of `SAMPLE`), or when the rate has grown back to what the server took at the
  last overload: a server that refuses a few requests at random, at any rate, is not
  slowed down for them (the start gate still waits out each one's Retry-After);
- an overload sets the rate to what the server accepted over the last few seconds, times
  `BACKOFF` (one cut per overload: the 429s of one burst cut once);
- then starts are spaced evenly at that rate, and each second without a 429 raises it by
  `GROWTH` of the rate it was cut to, so it creeps back towards the limit.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

from ..clock import Clock
from ..types import ErrorType, Request
from .base import AttemptOutcome

BACKOFF = 0.9  # the rate after a 429, as a share of what the server accepted
GROWTH = 0.01  # per second without a 429, as a share of the rate after the cut
WINDOW = 5.0  # seconds of accepted replies that measure what the server takes
CALM = 1.0  # seconds after a cut during which more 429s belong to the same overload
# the shortest span a rate is measured over: early in a run a cut errs high, since a rate set
# too high is cut again at the next 429 while one set too low creeps back at GROWTH
MIN_SPAN = 0.05
SAMPLE = 40  # the last replies (accepted or 429) that tell an overload from stray 429s
# 429s among them that make an overload: at a 429, 3% random 429s make it 1 in 7,000 times
CROWDED = 8


class LearnedRate:
    """Paces starts at a rate learned from 429s (see the module's docstring)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.rate: float | None = None  # starts per second; None: not limited
        self._cut_to = 0.0  # the rate right after the last cut
        self._cut_at = -math.inf
        self._cut_from = math.inf  # the rate the server accepted at the last overload
        self._replies: deque[bool] = deque(maxlen=SAMPLE)  # the last replies: True for a 429
        self._accepted: deque[float] = deque()  # clock times of replies that were not 429
        self._first_start: float | None = None
        self._next_start = -math.inf
        self._lock = asyncio.Lock()  # FIFO: starts are granted in arrival order
        self.told = False  # a reply carried rate-limit headers: they pace the run instead

    async def acquire(self, request: Request) -> float | None:
        """Wait for the request's start slot; returns the slot's length (None: no pacing)."""
        if self._first_start is None:
            self._first_start = self._clock.now()
        if self.rate is None:
            return None
        async with self._lock:
            rate = self._current()
            if rate is None:
                return None
            delay = self._next_start - self._clock.now()
            if delay > 0:
                await self._clock.sleep(delay)
            self._next_start = max(self._next_start, self._clock.now()) + 1.0 / rate
            return 1.0 / rate

    def release(self, held: object, outcome: AttemptOutcome) -> None:
        if not outcome.sent:  # a slot not used (the gate closed, a pause): given back
            if isinstance(held, float):
                self._next_start = max(self._clock.now(), self._next_start - held)
            return
        if self.told:
            return
        completion, error = outcome.completion, outcome.error
        if completion is not None and completion.rate is not None:
            self.told, self.rate = True, None  # the headers say it better
            return
        now = self._clock.now()
        if error is not None and error.error_type is ErrorType.RATE_LIMIT:
            self._replies.append(True)
            self._cut(now)
        elif completion is not None:
            self._replies.append(False)
            self._accepted.append(now)
            while self._accepted and self._accepted[0] < now - WINDOW:
                self._accepted.popleft()

    def _cut(self, now: float) -> None:
        """A 429: the first of an overload cuts the rate; the rest of its burst, and stray
        429s, do not. (Its Retry-After is the start gate's to wait out, capped.)"""
        if now < self._cut_at + CALM:
            return
        current = self._current()
        crowded = sum(self._replies) >= CROWDED
        if not crowded and (current is None or current < self._cut_from):
            return  # a stray 429: the server refused it at a rate it took before
        since = now - (self._first_start if self._first_start is not None else now)
        span = max(MIN_SPAN, min(WINDOW, since))
        recent = sum(1 for t in self._accepted if t >= now - span)
        if recent:
            accepted = recent / span
            base = accepted if current is None else min(accepted, current)
        elif current is not None:
            base = current
        else:
            return  # nothing accepted yet: no evidence of a rate (the cool-down waits)
        self.rate = self._cut_to = max(base * BACKOFF, 1.0 / 60)  # at least one a minute
        self._cut_from = base
        self._cut_at = now

    def _current(self) -> float | None:
        """The rate now: grown since the last cut."""
        if self.rate is None:
            return None
        grown = self._cut_to * (1.0 + GROWTH * max(0.0, self._clock.now() - self._cut_at))
        self.rate = grown
        return grown
