"""A tqdm.auto progress bar fed from the run's snapshots by one slow ticker, never per row."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from .reporting import Snapshot

TICK = 0.2  # seconds between counter reads
REDRAW_EVERY = 5  # ticks between forced redraws while no row finishes (about 1 s)


class Ticker:
    """`async with` a display: `tick(n)` runs every `interval` seconds on the run's loop,
    `closed(error)` once at the end. The one place a display is pushed from: never per row."""

    interval = TICK

    async def __aenter__(self) -> Self:
        self._ticker = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._ticker
        self.closed(exc)

    async def _run(self) -> None:
        ticks = 0
        while True:
            self.tick(ticks)
            await asyncio.sleep(self.interval)
            ticks += 1

    def tick(self, n: int) -> None:
        """Push the counters (the n-th time)."""

    def closed(self, error: BaseException | None) -> None:
        """The run is over (`error`: why it ended early, if it did)."""


class ProgressBar(Ticker):
    """`async with ProgressBar(snapshot):` shows done/total with ok, error and retrying."""

    def __init__(self, snapshot: Callable[[], Snapshot], *, desc: str = "notebook_kit") -> None:
        from tqdm.auto import tqdm

        self._snapshot = snapshot
        self._bar: Any = tqdm(total=snapshot().total, desc=desc, unit="row")

    def tick(self, n: int) -> None:
        if n:
            self._show(redraw=n % REDRAW_EVERY == 0)

    def closed(self, error: BaseException | None) -> None:
        self._show(redraw=True)
        self._bar.close()

    def _show(self, *, redraw: bool) -> None:
        stats, bar = self._snapshot(), self._bar
        bar.set_postfix(self.postfix(stats), refresh=False)  # drawn with the next refresh
        step = stats.done - bar.n
        if step > 0:
            bar.update(step)  # tqdm redraws at most every `mininterval`
        elif redraw:
            bar.refresh()  # nothing finished lately: still show retrying counts

    @staticmethod
    def postfix(stats: Snapshot) -> dict[str, int | str]:
        counts: dict[str, int | str] = {
            "ok": stats.ok,
            "error": stats.error,
            "retrying": stats.retrying,
        }
        if stats.cached:
            counts["cached"] = stats.cached
        if stats.cost_usd or stats.unpriced:
            counts["cost"] = stats.cost_text
        if stats.cancelled:
            counts["cancelled"] = stats.cancelled
        if stats.skipped:
            counts["skipped"] = stats.skipped
        return counts
