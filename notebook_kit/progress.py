"""A tqdm.auto progress bar fed from the run's counters by one slow ticker, never per row."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any

from .reporting import RunStats

TICK = 0.2  # seconds between counter reads
REDRAW_EVERY = 5  # ticks between forced redraws while no row finishes (about 1 s)


class ProgressBar:
    """`async with ProgressBar(stats):` shows done/total with ok, error and retrying counts."""

    def __init__(
        self, stats: RunStats, *, enabled: bool = True, desc: str = "notebook_kit"
    ) -> None:
        self._stats = stats
        self._enabled = enabled
        self._desc = desc
        self._bar: Any = None
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ProgressBar:
        if self._enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self._stats.total, desc=self._desc, unit="row")
            self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._bar is not None:
            self._show(redraw=True)
            self._bar.close()

    async def _tick(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(TICK)
            ticks += 1
            self._show(redraw=ticks % REDRAW_EVERY == 0)

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
