"""The panel's peek: the last words of up to five replies streaming now, refreshed at most
ten times a second (on the run's own clock: the events' `t`), never once per token."""

from __future__ import annotations

from collections.abc import Callable

from .events import AttemptFinished, ChunkReceived, Event

TAIL = 80  # characters of each reply shown
ROWS = 5  # replies shown at once
INTERVAL = 0.1  # seconds between two refreshes at least
MAX_ROWS = 10_000  # a run over this many rows has no peek unless asked: tokens are many

Tails = list[tuple[str, str]]  # (which row, the end of its reply so far)


class Peek:
    """Keeps the tails of the replies streaming now and hands them to `show`, throttled."""

    def __init__(self, show: Callable[[Tails], None], *, interval: float = INTERVAL) -> None:
        self._show = show
        self._interval = interval
        self._tails: dict[tuple[str | None, int], str] = {}
        self._shown_at = float("-inf")
        self._dirty = False

    kinds = (ChunkReceived, AttemptFinished)  # the events it reads

    def handle(self, event: Event) -> None:
        if isinstance(event, ChunkReceived):
            self._chunk(event)
        elif isinstance(event, AttemptFinished):
            self._attempt_finished(event)

    def view(self) -> Tails:
        return [(_label(step, key), tail) for (step, key), tail in self._tails.items()]

    def flush(self) -> None:
        """Show what changed since the last refresh (at the end of the run)."""
        if self._dirty:
            self._dirty = False
            self._show(self.view())

    def _chunk(self, event: ChunkReceived) -> None:
        where = (event.step, event.key)
        tail = self._tails.get(where)
        if tail is None and len(self._tails) >= ROWS:
            return
        self._tails[where] = ((tail or "") + event.text)[-TAIL:]
        self._changed(event.t)

    def _attempt_finished(self, event: AttemptFinished) -> None:
        if self._tails.pop((event.step, event.key), None) is not None:
            self._changed(event.t)

    def _changed(self, t: float) -> None:
        self._dirty = True
        if t - self._shown_at >= self._interval:
            self._shown_at = t
            self.flush()


def _label(step: str | None, key: int) -> str:
    return f"row {key}" if step is None else f"{step} · row {key}"
