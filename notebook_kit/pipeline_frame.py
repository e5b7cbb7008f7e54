"""A pipeline's frame: per step its output and status columns, per row its status, error,
failed step and total cost; and the merge of a re-run that resumed at the failed step.

A step a row never reached is NA. A row's status is ok when every step is ok or skipped,
skipped when every step was; a row stopped in a step is cancelled there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import frame as frames
from .pipeline import Pipeline
from .pipeline_rows import row_result
from .steps import STEP_COLUMNS, Stage
from .types import ErrorType, RowResult, RowStatus

if TYPE_CHECKING:
    from .pipeline_job import PipelinePlan


def build(
    plan: PipelinePlan,
    pipeline: Pipeline | None,
    *,
    unfinished: RowStatus = RowStatus.CANCELLED,
    reason: str | None = None,
) -> pd.DataFrame:
    """The input frame plus every step's columns and the row columns, in input order."""
    n, stages = len(plan.frame), plan.stages
    where = dict(pipeline.stage_of) if pipeline else {k: plan.start.get(k, 0) for k in range(n)}
    failed_at = dict(pipeline.failed_at) if pipeline else {}
    ended = dict(pipeline.rows) if pipeline else {}
    waiting = unfinished_result(unfinished, reason)
    waiting_at: dict[int, list[int]] = {}  # rows not ended: the step each one is in
    for key in range(n):
        if key not in ended and where[key] < len(stages):
            waiting_at.setdefault(where[key], []).append(key)
    added: dict[str, Any] = {}
    per_step: list[dict[int, RowResult]] = []
    for stage in stages:
        results = dict(pipeline.results_at(stage.index)) if pipeline else {}
        for key in waiting_at.get(stage.index, ()):
            results[key] = dataclasses.replace(waiting, key=key)
        per_step.append(results)
        added.update(_step_columns(stage, results, pipeline, n))
    row_results = dict(ended)
    for index, keys in waiting_at.items():  # stopped (or still running) in that step
        for key in keys:
            steps = [per_step[i].get(key) for i in range(len(stages))]
            row_results[key] = row_result(key, steps, index)
    failed_step: list[str | None] = [None] * n
    for key, index in failed_at.items():
        failed_step[key] = stages[index].name
    if unfinished is not RowStatus.PENDING:
        for index, keys in waiting_at.items():
            for key in keys:
                failed_step[key] = stages[index].name
    names = ("status", "error", "error_type", "cost_usd")
    rows = frames.result_columns(n, row_results, unfinished=None, names=names)
    added |= rows | {"failed_step": pd.array(failed_step, dtype="string")}
    ordered = {name: added[name] for name in plan.added_columns}
    return plan.frame.assign(**ordered)


def unfinished_result(status: RowStatus, reason: str | None) -> RowResult:
    """What a step shows for a row waiting in it: pending, or cancelled by the stop."""
    if status is RowStatus.CANCELLED:
        error = reason or "not run"
        return RowResult(key=-1, status=status, error=error, error_type=ErrorType.CANCELLED)
    return RowResult(key=-1, status=status)


def _step_columns(
    stage: Stage, results: Mapping[int, RowResult], pipeline: Pipeline | None, n: int
) -> dict[str, Any]:
    names = ("text", *STEP_COLUMNS)
    columns = frames.result_columns(n, results, unfinished=None, names=names)
    out: dict[str, Any] = {f"{stage.name}_{c}": columns[c] for c in STEP_COLUMNS}
    if stage.step.fn is not None:
        values = np.empty(n, dtype=object)  # filled one by one: no value is converted
        if pipeline is not None:
            for key, result in results.items():
                if result.status is RowStatus.OK:
                    values[key] = pipeline.values[key].get(stage.name)
        out[stage.name] = pd.arrays.NumpyExtensionArray(values)
        return out
    out[stage.name] = columns["text"]
    schema = stage.config.schema if stage.config is not None else None
    if schema is not None:
        parsed = [None] * n
        for key, result in results.items():
            parsed[key] = result.parsed
        out.update(schema.columns(parsed, prefix=f"{stage.name}_"))
    return out


def merge(
    result: pd.DataFrame,
    positions: np.ndarray[Any, Any],
    starts: np.ndarray[Any, Any],
    rerun: pd.DataFrame,
    stages: list[Stage],
) -> pd.DataFrame:
    """`result` with each re-run row's steps from its start step on, and its row columns,
    taken from `rerun`; what the failed step took and cost adds up, as does the row's cost."""
    merged = result.copy()
    for stage in stages:
        chosen = starts <= stage.index
        rows, taken = positions[chosen], np.flatnonzero(chosen)
        added_up = {f"{stage.name}_{c}" for c in frames.ADDED_UP}
        for column in stage.columns:
            values = merged[column].array.copy()
            later = rerun[column].array[taken]
            if column in added_up:
                earlier = pd.Series(values[rows])
                new = pd.Series(later)
                later = earlier.add(new, fill_value=0).where(earlier.notna() | new.notna()).array
            values[rows] = later
            merged[column] = values
    for column in ("status", "error", "error_type", "failed_step"):
        values = merged[column].array.copy()
        values[positions] = rerun[column].array
        merged[column] = values
    # a re-run that skipped every step it ran: ok if an earlier step was (as in one run)
    done = np.logical_or.reduce([_is(merged[f"{s.name}_status"], "ok", positions) for s in stages])
    values = merged["status"].array.copy()
    redo = positions[_is(merged["status"], "skipped", positions) & done]
    values[redo] = "ok"
    merged["status"] = values
    earlier = pd.Series(merged["cost_usd"].array[positions])
    new = pd.Series(rerun["cost_usd"].array)
    values = merged["cost_usd"].array.copy()
    values[positions] = earlier.add(new, fill_value=0).where(earlier.notna() | new.notna()).array
    merged["cost_usd"] = values
    return merged


def _is(column: pd.Series, value: str, positions: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Whether each cell at `positions` equals `value` (NA: no)."""
    picked = pd.Series(column.array[positions])
    return (picked == value).fillna(False).to_numpy(dtype=bool)
