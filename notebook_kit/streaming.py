"""A streamed reply as it arrives: its text so far, when its first token came, and the idle
timeout's touch for each chunk.

Providers call `chunks.text(delta)` for each piece of content and `chunks.alive()` for any
other chunk. The panel's peek reads `parts` when it refreshes: nothing else is done per
chunk. Kept small: it runs once per chunk.
"""

from __future__ import annotations

from .clock import Clock
from .deadline import Deadline

PARTIAL_CHARS = 200  # of a cut stream's text, kept in the row's error


class Chunks:
    """The pieces of one streamed reply."""

    __slots__ = ("_clock", "_idle", "first_at", "parts")

    def __init__(self, clock: Clock, idle: Deadline) -> None:
        self._clock = clock
        self._idle = idle
        self.first_at: float | None = None  # when the first content arrived, on the clock
        self.parts: list[str] = []

    def text(self, delta: str) -> None:
        """A piece of the reply's content."""
        self._idle.touch()
        if not delta:
            return
        if self.first_at is None:
            self.first_at = self._clock.now()
        self.parts.append(delta)

    def alive(self) -> None:
        """A chunk without content (a role, usage, a ping): the server is still there."""
        self._idle.touch()

    @property
    def so_far(self) -> str:
        return "".join(self.parts)

    def partial_note(self) -> str:
        """What a cut stream had said, for the row's error (never its response)."""
        if not self.parts:
            return ""
        text = " ".join(self.so_far.split())
        shown = text[:PARTIAL_CHARS] + ("…" if len(text) > PARTIAL_CHARS else "")
        return f" (the stream was cut after {len(self.so_far)} characters: {shown!r})"
