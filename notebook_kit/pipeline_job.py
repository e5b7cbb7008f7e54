"""A pipeline over a frame: the job that runs it, built from a call's options, and the
job that re-runs a result's failed rows from the step each one failed at (`retry_failed`).
The frame it ends with is `pipeline_frame.py`'s."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import frame as frames, history
from .cache import Cache
from .clock import Clock
from .config import check_budget
from .errors import ConfigError
from .job import Job
from .options import RunOptions, checked, chosen_cache
from .pipeline import Pipeline
from .pipeline_frame import build
from .pipeline_rows import RowValues
from .providers import DEMO_NOTICE
from .reporting import Snapshot
from .steps import ROW_COLUMNS, Stage, Step, describe, settle
from .types import RowResult, RowStatus


@dataclass(frozen=True, kw_only=True)
class PipelinePlan:
    """The rows to run and the settled steps; a re-run says where each row starts."""

    frame: pd.DataFrame  # the user's rows, without the kit's columns
    stages: list[Stage]
    budget_usd: float | None = None
    options: dict[str, Any] = field(default_factory=dict, repr=False)  # may hold a key
    start: dict[int, int] = field(default_factory=dict)  # row position -> its first step
    carried: dict[int, dict[str, Any]] = field(default_factory=dict)  # earlier outputs

    @property
    def added_columns(self) -> list[str]:
        return [*(c for s in self.stages for c in s.columns), *ROW_COLUMNS]

    @property
    def model_stages(self) -> list[Stage]:
        return [s for s in self.stages if s.config is not None]


class PipelineJob(Job):
    """Rows of `plan.frame` through `plan.stages`, steerable per step."""

    def __init__(
        self,
        plan: PipelinePlan,
        *,
        cache: Cache | None = None,
        progress: bool = True,
        clock: Clock | None = None,
        pause_at_budget: bool = False,
    ) -> None:
        super().__init__(plan.frame, cache=cache, progress=progress, clock=clock)
        self.plan = plan
        self._pause_at_budget = pause_at_budget

    @property
    def steps(self) -> list[str]:
        return [s.name for s in self.plan.stages]

    def _finished_rows(self) -> list[RowResult]:
        return list(self.engine.rows.values()) if isinstance(self.engine, Pipeline) else []

    def _scheduler(self) -> Pipeline:
        frame, stages = self.plan.frame, self.plan.stages
        whole_rows = any(s.step.fn is not None or s.step.when is not None for s in stages)
        needed = frame.columns if whole_rows else _template_columns(stages, frame.columns)
        columns = {str(c): frame[c].tolist() for c in needed}
        return Pipeline(
            stages,
            RowValues(columns),
            range(len(frame)),
            cache=self.cache,
            clock=self._clock,
            budget_usd=self.plan.budget_usd,
            pause_at_budget=self._pause_at_budget,
            start=self.plan.start,
            carried=self.plan.carried,
        )

    async def _execute(self, scheduler: Pipeline) -> None:
        await scheduler.run()

    def _frame(
        self,
        scheduler: Pipeline | None,
        *,
        unfinished: RowStatus = RowStatus.CANCELLED,
        reason: str | None = None,
    ) -> pd.DataFrame:
        return build(self.plan, scheduler, unfinished=unfinished, reason=reason)

    def _queued(self) -> Snapshot:
        limit = sum(s.config.limits.concurrency for s in self.plan.model_stages if s.config)
        total = len(self.plan.frame)
        return Snapshot(state="queued", total=total, limit=limit, target=limit)

    def _settings(self) -> dict[str, Any]:
        return {
            "pipeline": describe(self.plan.stages),
            "budget_usd": self.plan.budget_usd,
            "columns": self.plan.added_columns,
        }

    def _remember(self, result: pd.DataFrame) -> None:
        record = history.PipelineRecord(self.report, self.plan.stages, self.plan.options)
        history.remember(record, result)

    def _check_budget(self, usd: float) -> None:
        for stage in self.plan.model_stages:
            assert stage.config is not None
            try:
                check_budget(dataclasses.replace(stage.config, budget_usd=usd))
            except ConfigError as exc:
                raise ConfigError(f"step {stage.name!r}: {exc}") from None

    def _check_step(self, step: str | None) -> None:
        names = [s.name for s in self.plan.model_stages]
        if (step is None and len(names) != 1) or (step is not None and step not in names):
            raise ConfigError(f"name the model step: step= one of {names}")


def _template_columns(stages: list[Stage], columns: pd.Index) -> list[Any]:
    from .cells import template_fields

    named = {f for s in stages if s.step.template for f in template_fields(s.step.template)}
    return [c for c in columns if c in named]


def new_job(
    data: pd.DataFrame,
    steps: Sequence[Step],
    kwargs: Mapping[str, Any],
    *,
    entry: str,
    pause_at_budget: bool = False,
) -> PipelineJob:
    """A pipeline job from a call's options (the pipeline's, and every step's defaults)."""
    if not isinstance(data, pd.DataFrame):
        raise ConfigError(f"{entry} takes a pandas DataFrame, got {type(data).__name__}")
    options = checked(kwargs, entry=entry)
    frame = frames.without_kit_columns(data, "")
    repeated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if repeated:
        raise ConfigError(f"the frame has columns named twice {repeated}: rename them first")
    limit = options.get("limit")
    if limit is not None:
        frame = frame.iloc[:limit]
    stages = settle(steps, [str(c) for c in frame.columns], kwargs, pause_at_budget=pause_at_budget)
    if any(stage.fallback for stage in stages):
        print(DEMO_NOTICE)
    return _job(frame, stages, dict(kwargs), options, pause_at_budget=pause_at_budget)


def resume_job(
    result: pd.DataFrame,
    positions: np.ndarray[Any, Any],
    meta: Mapping[str, Any],
    steps: Sequence[Step] | None,
    kwargs: Mapping[str, Any],
) -> tuple[PipelineJob, np.ndarray[Any, Any]]:
    """A job over the rows at `positions`, each starting at the step it failed at, with the
    outputs of the steps before it carried over; and those start steps."""
    record = history.lookup(meta.get("run_id"))
    made = [str(s.get("name")) for s in meta.get("pipeline") or []]
    base: dict[str, Any] = {}
    if isinstance(record, history.PipelineRecord):
        base = dict(record.options)
        steps = steps if steps is not None else [s.step for s in record.stages]
    if steps is None:
        raise ConfigError(
            "this frame's steps (their functions and schemas) live in the process that ran "
            "them: pass them again, retry_failed(result, steps=steps)"
        )
    if [getattr(s, "name", None) for s in steps] != made:
        raise ConfigError(f"this frame was made by the steps {made}: pass those steps")
    fixed = [k for k in ("limit",) if k in kwargs]
    if fixed:
        raise ConfigError(f"retry_failed re-runs rows of the same frame: it takes no {fixed}")
    merged_options = {**base, **kwargs}
    options = checked(merged_options, entry="retry_failed")
    rows = result.iloc[positions]
    frame = rows.drop(columns=[c for c in meta.get("columns", ()) if c in rows.columns])
    stages = settle(steps, [str(c) for c in frame.columns], merged_options)
    names = [s.name for s in stages]
    failed = rows["failed_step"].tolist()
    starts = np.array(
        [names.index(f) if isinstance(f, str) and f in names else 0 for f in failed], dtype=int
    )
    carried: dict[int, dict[str, Any]] = {}
    for position, start in enumerate(starts):
        carried[position] = {
            column: rows[column].iloc[position]
            for stage in stages[:start]
            for column in stage.outputs
        }
    job = _job(
        frame,
        stages,
        merged_options,
        options,
        start=dict(enumerate(int(s) for s in starts)),
        carried=carried,
        cache_default=meta.get("cache") or False,
    )
    return job, starts


def _job(
    frame: pd.DataFrame,
    stages: list[Stage],
    raw: dict[str, Any],
    options: RunOptions,
    *,
    pause_at_budget: bool = False,
    start: dict[int, int] | None = None,
    carried: dict[int, dict[str, Any]] | None = None,
    cache_default: bool | str | None = None,
) -> PipelineJob:
    models = [s.config for s in stages if s.config is not None]
    plan = PipelinePlan(
        frame=frame,
        stages=stages,
        budget_usd=models[0].budget_usd if models else None,
        options=raw,
        start=start or {},
        carried=carried or {},
    )
    cache = options.get("cache", cache_default)
    return PipelineJob(
        plan,
        cache=chosen_cache(cache),
        progress=options.get("progress") is not False,
        pause_at_budget=pause_at_budget,
    )
