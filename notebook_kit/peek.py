"""The panel's peek: the last words of up to five replies streaming now. It keeps a view of
each one's text (`StreamOpened`) and reads it only when the panel refreshes, a few times a
second: nothing is done per token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .events import AttemptFinished, Event, StreamOpened

TAIL = 80  # characters of each reply shown
ROWS = 5  # replies shown at once
MAX_ROWS = 10_000  # a run over this many rows has no peek unless asked: tokens are many

Tails = list[tuple[str, str]]  # (which row, the end of its reply so far)


class Peek:
    """The replies streaming now; `refresh()` hands their tails to `show` when they
    changed."""

    kinds = (StreamOpened, AttemptFinished)  # the events it reads

    def __init__(self, show: Callable[[Tails], None]) -> None:
        self._show = show
        self._streams: dict[tuple[str | None, int], Any] = {}  # -> its live Chunks
        self._shown: Tails = []

    def handle(self, event: Event) -> None:
        if isinstance(event, StreamOpened):
            if len(self._streams) < ROWS:
                self._streams[(event.step, event.key)] = event.chunks
        elif isinstance(event, AttemptFinished):
            self._streams.pop((event.step, event.key), None)

    def view(self) -> Tails:
        return [
            (_label(step, key), _tail(chunks.parts))
            for (step, key), chunks in self._streams.items()
        ]

    def refresh(self) -> None:
        """Show the tails now, if they changed since the last time (on the run's loop)."""
        tails = self.view()
        if tails != self._shown:
            self._shown = tails
            self._show(tails)


def _tail(parts: list[str]) -> str:
    """The last TAIL characters of the text in `parts`, joining only the pieces needed."""
    pieces, size = [], 0
    for piece in reversed(parts):
        pieces.append(piece)
        size += len(piece)
        if size >= TAIL:
            break
    return "".join(reversed(pieces))[-TAIL:]


def _label(step: str | None, key: int) -> str:
    return f"row {key}" if step is None else f"{step} · row {key}"
