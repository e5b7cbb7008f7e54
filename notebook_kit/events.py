"""What a run publishes as it goes: small frozen events, and the bus that hands them out.

Counters, the run report, progress displays and the history are subscribers; none of them
reads the engine's internals. `t` is seconds since the run started, on the run's clock.
Row events carry the row's position (`key`), its pipeline `step` (None outside pipelines)
and where its answer came from (`source`). A feature adds its own event classes; a
subscriber that does not ask for them never sees them.

    RowStarted        a row took its concurrency slot and will be sent
    AttemptStarted    one request goes out
    AttemptFinished   it came back: outcome, tokens, cost, and the wait before a retry
    RowFinished       the row's final result (also for cache, dedupe and input rows)
    StreamOpened      a streamed reply began: its live text, for the peek to read (on demand)
    LimitChanged      the concurrency limit moved (slider or 429s)
    BatchChanged      a provider batch job was submitted, moved on, or ended (batch mode)
    Paused, Resumed   by the user or at the budget
    StopRequested     Stop, an interrupt, a run error or the budget: nothing new starts
    RunFinished       the run is over
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

from .types import BatchStatus, RowResult

# where a row's answer came from ("function": a pipeline step's fn=)
Source = Literal["call", "cache", "dedupe", "input", "function"]
log = logging.getLogger("notebook_kit")


class Event(Protocol):
    """Every event has `t`: seconds since the run started."""

    @property
    def t(self) -> float: ...


# Events are NamedTuples: immutable, and about 3x cheaper to make than frozen dataclasses
# (a run makes four per row).


class RowStarted(NamedTuple):
    t: float
    key: int  # the row's position in the input frame
    step: str | None = None
    source: Source = "call"


class AttemptStarted(NamedTuple):
    t: float
    key: int
    attempt: int  # 1 for the row's first request
    step: str | None = None
    source: Source = "call"


class AttemptFinished(NamedTuple):
    t: float
    key: int
    attempt: int
    started: float  # `t` of the matching AttemptStarted
    outcome: str  # "ok", "cancelled" or an error type
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    wait_s: float | None = None  # seconds until the next attempt; None: no retry
    step: str | None = None
    source: Source = "call"


class RowFinished(NamedTuple):
    t: float
    key: int
    result: RowResult
    step: str | None = None
    source: Source = "call"


class StreamOpened(NamedTuple):
    """A streamed reply began (made only when someone listens: the panel's peek). `chunks`
    is its live `streaming.Chunks`: read it on the run's loop; it grows until the attempt's
    AttemptFinished. Nothing is published per chunk."""

    t: float
    key: int
    chunks: Any
    step: str | None = None


class LimitChanged(NamedTuple):
    t: float
    limit: int  # requests in flight allowed now
    target: int  # the user's setting (the adaptive limit stays at or below it)
    step: str | None = None


class BatchChanged(NamedTuple):
    t: float
    status: BatchStatus


class Paused(NamedTuple):
    t: float
    reason: Literal["user", "budget"]


class Resumed(NamedTuple):
    t: float
    reason: Literal["user", "budget"]


class StopRequested(NamedTuple):
    t: float
    reason: str


class RunFinished(NamedTuple):
    t: float
    stop_reason: str | None


E = TypeVar("E", bound=Event)


class EventBus:
    """Hands each event to the handlers of its class, then to those of every event.

    A handler that raises is logged and the run goes on: a display must not break a run.
    """

    def __init__(self) -> None:
        self._kinds: dict[type[Any], list[Callable[[Any], None]]] = {}
        self._every: list[Callable[[Any], None]] = []
        self._routes: dict[type[Any], list[Callable[[Any], None]]] = {}  # kind's, then every
        self._forwards: dict[type[Any], EventBus] = {}

    def on(self, kind: type[E], handler: Callable[[E], None]) -> None:
        """Call `handler` with each event of class `kind`."""
        self._kinds.setdefault(kind, []).append(handler)
        self._routes = {k: [*hs, *self._every] for k, hs in self._kinds.items()}

    def subscribe(self, handler: Callable[[Event], None]) -> None:
        """Call `handler` with every event."""
        self._every.append(handler)
        self._routes = {k: [*hs, *self._every] for k, hs in self._kinds.items()}

    def forward(self, kinds: tuple[type[Any], ...], to: EventBus) -> None:
        """Pass the events of `kinds` on to another bus (a step's engine to its pipeline)."""
        for kind in kinds:
            self.on(kind, to.emit)
            self._forwards[kind] = to

    def wants(self, kind: type[Any]) -> bool:
        """Whether anyone listens to `kind` (an event nobody reads need not be made)."""
        if self._every:
            return True
        to = self._forwards.get(kind)
        if to is None:
            return kind in self._routes
        return len(self._kinds[kind]) > 1 or to.wants(kind)

    def emit(self, event: Event) -> None:
        for handler in self._routes.get(type(event)) or self._every:
            try:
                handler(event)
            except Exception:
                log.warning("an event handler failed on %s", type(event).__name__, exc_info=True)
