"""What a run did: live counters for progress displays, and per-attempt records for plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .types import RowResult, RowStatus

if TYPE_CHECKING:
    import pandas as pd


@dataclass(slots=True)
class RunStats:
    """Counters the engine updates as rows finish; displays read them on their own clock."""

    total: int
    ok: int = 0
    error: int = 0
    cancelled: int = 0
    skipped: int = 0
    in_flight: int = 0  # HTTP requests sent and not yet answered
    retrying: int = 0  # rows waiting out a backoff before their next attempt
    requests: int = 0  # requests sent, retries and 429s included
    input_tokens: int = 0  # billed in this run (rows served from the cache not included)
    output_tokens: int = 0
    cost_usd: float = 0.0  # billed in this run, where the price is known
    cached: int = 0  # rows served by the cache or by another row's identical call
    budget_reached: bool = False

    @property
    def done(self) -> int:
        return self.ok + self.error + self.cancelled + self.skipped

    def count(self, result: RowResult) -> None:
        if result.status is RowStatus.OK:
            self.ok += 1
        elif result.status is RowStatus.ERROR:
            self.error += 1
        elif result.status is RowStatus.CANCELLED:
            self.cancelled += 1
        elif result.status is RowStatus.SKIPPED:
            self.skipped += 1
        if result.cached:
            self.cached += 1
            return
        self.input_tokens += result.input_tokens or 0
        self.output_tokens += result.output_tokens or 0
        self.cost_usd += result.cost_usd or 0.0


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
    limit_changes: list[tuple[float, int]] = field(default_factory=list)  # (time, concurrency)
    wall_s: float | None = None

    def record(self, key: int, attempt: int, start: float, end: float, outcome: str) -> None:
        self.keys.append(key)
        self.attempt_numbers.append(attempt)
        self.starts.append(start)
        self.ends.append(end)
        self.outcomes.append(outcome)

    def attempts(self) -> pd.DataFrame:
        """One row per request sent: row position, attempt number, start, end, outcome."""
        import pandas as pd

        return pd.DataFrame(
            {
                "row": self.keys,
                "attempt": self.attempt_numbers,
                "start_s": self.starts,
                "end_s": self.ends,
                "outcome": self.outcomes,
            }
        )

    def summary(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "requests": len(self.keys), "wall_s": self.wall_s}
