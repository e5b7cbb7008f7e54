"""A run of one frame through one `Engine` (or, in batch mode, one `BatchRun`): the `Job`
that `run_df`, `start`, `iter_rows` and `retry_failed` drive."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import frame as frames, history
from .cache import Cache
from .clock import Clock
from .config import RunConfig, check_budget
from .engine import Engine
from .job import Job, Pace, Scheduler
from .providers.base import Provider
from .reporting import Snapshot
from .types import RowResult, RowStatus

if TYPE_CHECKING:
    from .batch import BatchRun
    from .batch.store import StoredBatch


class FrameJob(Job):
    """A run of `plan` on `provider`: one request per row, through one `Engine`."""

    def __init__(
        self,
        plan: frames.Plan,
        provider: Provider,
        config: RunConfig,
        *,
        cache: Cache | None = None,
        progress: bool = True,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(plan.frame, cache=cache, progress=progress, clock=clock)
        self.plan = plan
        self.provider = provider
        self.config = config
        self.pace: Pace | None = None  # holds rows back while a reader of rows lags
        self.attach: StoredBatch | None = None  # kit.attach: read this batch, send nothing

    def concurrency_limit(self) -> int:
        """Requests allowed in flight now."""
        return self.snapshot().limit

    def _finished_rows(self) -> list[RowResult]:
        results: dict[int, RowResult] = getattr(self.engine, "results", {})
        return list(results.values())

    def _scheduler(self) -> Engine | BatchRun:
        total = len(self.plan.frame)
        if self.config.mode == "batch":
            from .batch import BatchRun, store_for

            return BatchRun(
                self.provider,
                self.config,
                total=total,
                run_id=self.report.run_id,
                store=store_for(self.cache),
                cache=self.cache,
                clock=self._clock,
                attach=self.attach,
            )
        return Engine(self.provider, self.config, total=total, cache=self.cache, clock=self._clock)

    async def _execute(self, scheduler: Engine | BatchRun) -> None:
        items = self.plan.requests(self.config.params, self.config.schema)
        await scheduler.run(self.pace(items) if self.pace is not None else items)

    def _frame(
        self,
        scheduler: Engine | BatchRun | None,
        *,
        unfinished: RowStatus = RowStatus.CANCELLED,
        reason: str | None = None,
    ) -> pd.DataFrame:
        results = dict(scheduler.results) if scheduler is not None else {}
        schema = self.config.schema
        return frames.build(self.plan, results, unfinished=unfinished, reason=reason, schema=schema)

    def _queued(self) -> Snapshot:
        limit = self.config.limits.concurrency
        return Snapshot(state="queued", total=len(self.plan.frame), limit=limit, target=limit)

    def _settings(self) -> dict[str, Any]:
        return {
            "provider": self.provider.name,
            "provider_settings": self.provider.describe(),
            **self.config.describe(),
            **self.plan.describe(),
            "columns": self.plan.added_columns,
        }

    def _metadata(self, engine: Scheduler, result: pd.DataFrame, started: float) -> dict[str, Any]:
        meta = super()._metadata(engine, result, started)
        batches = getattr(engine, "batches", None)
        if batches is not None:  # batch mode: the provider's jobs, to find them again
            meta["batches"] = {b.batch_id: b.state for b in batches.values()}
        return meta

    def replaced(self) -> str:
        """A batch job stops waiting, as on an interrupt: its batches run on, and the cell's
        new run finds them again instead of paying twice."""
        if self.config.mode != "batch" or self.task is None:
            return super().replaced()
        self.task.cancel()
        return "stopped waiting for"

    def _remember(self, result: pd.DataFrame) -> None:
        history.remember(history.RunRecord(self.report, self.provider, self.config), result)

    def _check_budget(self, usd: float) -> None:
        check_budget(dataclasses.replace(self.config, budget_usd=usd))
