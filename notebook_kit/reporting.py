"""What a run did, built from its events: live counters, snapshots for displays, and
per-attempt records for plots."""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .events import (
    AttemptFinished,
    AttemptStarted,
    EventBus,
    LimitChanged,
    Paused,
    Resumed,
    RowFinished,
    RunFinished,
)
from .types import BatchStatus, RowStatus

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A run at one moment: what displays show. Immutable; take a new one to refresh."""

    state: str  # queued, running, paused, paused at the budget, stopping, done, stopped, failed
    total: int
    ok: int = 0
    error: int = 0
    cancelled: int = 0
    skipped: int = 0
    pending: int = 0  # rows still running where the run cannot see (a batch left running)
    cached: int = 0  # rows served by the cache or by another row's identical call
    in_flight: int = 0  # requests sent and not yet answered
    retrying: int = 0  # rows waiting out a backoff before their next attempt
    requests: int = 0  # requests sent, retries and 429s included
    input_tokens: int = 0  # billed in this run (cached rows not included)
    output_tokens: int = 0
    cost_usd: float = 0.0  # billed in this run, where the price is known
    unpriced: int = 0  # replies whose cost is unknown (no price): the total is then a floor
    limit: int  # requests in flight allowed now
    target: int  # the user's concurrency setting
    budget_usd: float | None = None
    spent_usd: float = 0.0  # billed against the budget
    reserved_usd: float = 0.0  # held by requests in flight
    elapsed_s: float = 0.0
    rate: float = 0.0  # rows per second answered by calls over the last RECENT_S seconds
    stop_reason: str | None = None
    step: str | None = None  # a pipeline's step: these counts are that step's rows
    steps: tuple[Snapshot, ...] = ()  # a pipeline's: one snapshot per step
    batches: tuple[BatchStatus, ...] = ()  # batch mode: the provider's batch jobs

    @property
    def done(self) -> int:
        """Rows with a final status (cancelled ones included)."""
        return self.ok + self.error + self.cancelled + self.skipped

    @property
    def cost_text(self) -> str:
        """The cost so far, saying when some replies had no known price."""
        text = f"${self.cost_usd:.4f}"
        return f"{text} + unknown ({self.unpriced} unpriced)" if self.unpriced else text


RECENT_S = 5.0  # the window of the recent rate: long enough to be steady, short enough to follow
# a slider move or a pause


@dataclass(slots=True)
class RunStats:
    """Counters kept from a run's events."""

    total: int
    step: str | None = None  # the rows counted: this step's (None: whole rows)
    ok: int = 0
    error: int = 0
    cancelled: int = 0
    skipped: int = 0
    pending: int = 0
    cached: int = 0
    in_flight: int = 0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0
    waiting: set[tuple[str | None, int]] = field(default_factory=set)  # rows in a backoff
    answered_at: deque[float] = field(default_factory=deque)  # `t` of rows a call finished

    def attach(self, events: EventBus, *, attempts: bool = True) -> None:
        """Count from `events` (a pipeline's whole rows: `attempts=False`, its steps'
        engines count the requests)."""
        if attempts:
            events.on(AttemptStarted, self._attempt_started)
            events.on(AttemptFinished, self._attempt_finished)
        events.on(RowFinished, self._row_finished)
        events.on(RunFinished, self._run_finished)

    @property
    def done(self) -> int:
        return self.ok + self.error + self.cancelled + self.skipped

    def counts(self, now: float) -> dict[str, Any]:
        """The counters as `Snapshot` fields, `now` seconds into the run."""
        window = min(RECENT_S, now)
        answered = self.answered_at
        try:  # bisect on the deque itself: copying 100,000 times a second of rows was half
            recent = len(answered) - bisect.bisect_right(answered, now - RECENT_S)  # a tick
        except IndexError:  # rows ended on another thread (a panel's) while it looked
            copy = list(answered)
            recent = len(copy) - bisect.bisect_right(copy, now - RECENT_S)
        return {
            "rate": recent / window if window > 0 else 0.0,
            "total": self.total,
            "ok": self.ok,
            "error": self.error,
            "cancelled": self.cancelled,
            "skipped": self.skipped,
            "pending": self.pending,
            "cached": self.cached,
            "in_flight": self.in_flight,
            "retrying": len(self.waiting),
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "unpriced": self.unpriced,
        }

    def _attempt_started(self, event: AttemptStarted) -> None:
        self.in_flight += 1
        self.requests += 1
        if self.waiting:
            self.waiting.discard((event.step, event.key))

    def _attempt_finished(self, event: AttemptFinished) -> None:
        self.in_flight -= 1
        self.input_tokens += event.input_tokens or 0
        self.output_tokens += event.output_tokens or 0
        if event.cost_usd is not None:
            self.cost_usd += event.cost_usd
        elif event.outcome == "ok":
            self.unpriced += 1
        if event.wait_s is not None:
            self.waiting.add((event.step, event.key))

    def _row_finished(self, event: RowFinished) -> None:
        if self.waiting:
            self.waiting.discard((event.step, event.key))
        if event.step != self.step:  # a pipeline's step finished; the row goes on
            return
        status = event.result.status
        if status is RowStatus.OK:
            self.ok += 1
        elif status is RowStatus.ERROR:
            self.error += 1
        elif status is RowStatus.CANCELLED:
            self.cancelled += 1
        elif status is RowStatus.SKIPPED:
            self.skipped += 1
        elif status is RowStatus.PENDING:
            self.pending += 1
        if event.result.cached:
            self.cached += 1
        elif event.source == "call" and status in (RowStatus.OK, RowStatus.ERROR):
            answered = self.answered_at  # trimmed here only, on the loop's thread
            answered.append(event.t)
            while answered[0] <= event.t - RECENT_S:
                answered.popleft()

    def _run_finished(self, event: RunFinished) -> None:
        self.cancelled += self.total - self.done - self.pending  # rows never started


@dataclass
class RunReport:
    """Every attempt's start and end (seconds from the run's start), kept off `DataFrame.attrs`.

    Stored as parallel lists so that 100,000 attempts stay small.
    """

    run_id: str
    keys: list[int] = field(default_factory=list)
    attempt_numbers: list[int] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)  # "ok" or an error type
    steps: list[str | None] = field(default_factory=list)  # a pipeline's step, else None
    limit_changes: list[tuple[float, int]] = field(default_factory=list)  # (time, concurrency)
    pauses: list[tuple[float, float]] = field(default_factory=list)  # (from, to), user or budget
    wall_s: float | None = None
    _paused_at: float | None = field(default=None, repr=False)

    def attach(self, events: EventBus) -> None:
        events.on(AttemptFinished, self._attempt)
        events.on(LimitChanged, self._limit)
        events.on(Paused, self._paused)
        events.on(Resumed, self._resumed)
        events.on(RunFinished, self._finished)

    def record(
        self,
        key: int,
        attempt: int,
        start: float,
        end: float,
        outcome: str,
        step: str | None = None,
    ) -> None:
        self.steps.append(step)
        self.keys.append(key)
        self.attempt_numbers.append(attempt)
        self.starts.append(start)
        self.ends.append(end)
        self.outcomes.append(outcome)

    def _attempt(self, event: AttemptFinished) -> None:
        self.record(event.key, event.attempt, event.started, event.t, event.outcome, event.step)

    def _limit(self, event: LimitChanged) -> None:
        if event.step is None:  # a pipeline's steps each have their own limit
            self.limit_changes.append((event.t, event.limit))

    def _paused(self, event: Paused) -> None:
        if self._paused_at is None:
            self._paused_at = event.t

    def _resumed(self, event: Resumed | RunFinished) -> None:
        if self._paused_at is not None:
            self.pauses.append((self._paused_at, event.t))
            self._paused_at = None

    def _finished(self, event: RunFinished) -> None:
        self._resumed(event)  # a run that ends paused: its pause ends with it
        self.wall_s = event.t

    def attempts(self) -> pd.DataFrame:
        """One row per request sent: row position, attempt number, start, end, outcome
        (and the step, in a pipeline)."""
        import pandas as pd

        steps = {"step": self.steps} if any(s is not None for s in self.steps) else {}
        return pd.DataFrame(
            {
                **steps,
                "row": self.keys,
                "attempt": self.attempt_numbers,
                "start_s": self.starts,
                "end_s": self.ends,
                "outcome": self.outcomes,
            }
        )

    def summary(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "requests": len(self.keys), "wall_s": self.wall_s}
