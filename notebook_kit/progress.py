"""A tqdm.auto progress bar fed from the run's counters by one slow ticker, never per row."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any, Self

from .reporting import RunStats

TICK = 0.2  # seconds between counter reads
REDRAW_EVERY = 5  # ticks between forced redraws while no row finishes (about 1 s)


class Ticker:
    """`async with` a display: `tick(n)` runs every `interval` seconds on the run's loop,
    `closed()` once at the end. The one place a display is pushed from: never per row."""

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
        self.closed()

    async def _run(self) -> None:
        ticks = 0
        while True:
            self.tick(ticks)
            await asyncio.sleep(self.interval)
            ticks += 1

    def tick(self, n: int) -> None:
        """Push the counters (the n-th time)."""

    def closed(self) -> None:
        """The run is over."""


class ProgressBar(Ticker):
    """`async with ProgressBar(stats):` shows done/total with ok, error and retrying counts."""

    def __init__(
        self, stats: RunStats, *, enabled: bool = True, desc: str = "notebook_kit"
    ) -> None:
        self._stats = stats
        self._bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=stats.total, desc=desc, unit="row")

    def tick(self, n: int) -> None:
        if self._bar is not None and n:
            self._show(redraw=n % REDRAW_EVERY == 0)

    def closed(self) -> None:
        if self._bar is not None:
            self._show(redraw=True)
            self._bar.close()

    def _show(self, *, redraw: bool) -> None:
        stats, bar = self._stats, self._bar
        bar.set_postfix(self.postfix(stats), refresh=False)  # drawn with the next refresh
        step = stats.done - bar.n
        if step > 0:
            bar.update(step)  # tqdm redraws at most every `mininterval`
        elif redraw:
            bar.refresh()  # nothing finished lately: still show retrying counts

    @staticmethod
    def postfix(stats: RunStats) -> dict[str, int | str]:
        counts: dict[str, int | str] = {
            "ok": stats.ok,
            "error": stats.error,
            "retrying": stats.retrying,
        }
        if stats.cached:
            counts["cached"] = stats.cached
        if stats.cost_usd:
            counts["cost"] = f"${stats.cost_usd:.4f}"
        if stats.cancelled:
            counts["cancelled"] = stats.cancelled
        if stats.skipped:
            counts["skipped"] = stats.skipped
        return counts
