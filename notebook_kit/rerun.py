"""Re-running the rows of a result that did not end `ok`, with the settings that made it:
`retry_failed`, which rows, the original settings, the merge."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Unpack

import numpy as np
import pandas as pd

from . import frame as frames, history
from .config import RunConfig
from .errors import ConfigError, RunError
from .frame_job import FrameJob
from .launch import attach_display
from .options import RunOptions, checked, chosen_cache, inputs, run_config, shows_run_options
from .pipeline_frame import merge as merge_steps
from .pipeline_job import resume_job
from .providers import resolve
from .registry import told_in_one_line
from .steps import Step
from .types import ErrorType

log = logging.getLogger("notebook_kit")


@shows_run_options
async def retry_failed(
    result: pd.DataFrame,
    *,
    only: Iterable[str] | None = None,
    prompt: str | None = None,
    steps: Sequence[Step] | None = None,
    **options: Unpack[RunOptions],
) -> pd.DataFrame:
    """Re-run the rows whose status is not `ok` (or only those with the given error types).

    Same settings as the run that made `result`, unless overridden (e.g. `concurrency=2`).
    Returns the whole frame with those rows replaced; `attempts` adds up. A pipeline's
    rows resume at the step that failed: earlier outputs are reused, not re-paid (in
    another process, pass `steps=` again).
    """
    meta = result.attrs.get(frames.META_KEY)
    if not isinstance(meta, dict):
        raise ConfigError(
            "this frame carries no notebook_kit settings (result.attrs['notebook_kit'] is gone, "
            "e.g. after pd.concat); run it again with run_df(...)"
        )
    positions = failed_rows(result, only)
    if len(positions) == 0:
        return result.copy()
    if meta.get("pipeline") is not None:
        return await _retry_steps(result, positions, meta, steps, options)
    if steps is not None:
        raise ConfigError("steps= is for a pipeline's frame; this frame was made by run_df")
    job = rerun_job(result.iloc[positions], meta, prompt, options)
    attach_display(job)
    try:
        with told_in_one_line(job):
            rerun = await job.run()
    except (asyncio.CancelledError, RunError) as exc:
        partial = merged(result, positions, job, meta)
        if isinstance(exc, RunError):
            exc.partial = partial
        raise
    return merged(result, positions, job, meta, rerun)


async def _retry_steps(
    result: pd.DataFrame,
    positions: Any,
    meta: dict[str, Any],
    steps: Sequence[Step] | None,
    options: Mapping[str, Any],
) -> pd.DataFrame:
    """A pipeline's failed rows again, each from the step it failed at."""
    job, starts = resume_job(result, positions, meta, steps, options)
    attach_display(job)

    def merged_steps(rerun: pd.DataFrame) -> pd.DataFrame:
        frame = merge_steps(result, positions, starts, rerun, job.plan.stages)
        return with_both_runs(frame, meta, rerun, len(positions))

    try:
        with told_in_one_line(job):
            rerun = await job.run()
    except (asyncio.CancelledError, RunError) as exc:
        if job.result is not None:
            partial = merged_steps(job.result)
            if isinstance(exc, RunError):
                exc.partial = partial
        raise
    return merged_steps(rerun)


def failed_rows(result: pd.DataFrame, only: Iterable[str] | None) -> np.ndarray[Any, Any]:
    """Positions of the rows to re-run: status not `ok`, of the given error types if any.

    The frame must still hold every column the kit added (checked before anything is sent:
    the merge needs them all)."""
    meta = result.attrs.get(frames.META_KEY) or {}
    missing = [c for c in meta.get("columns", frames.STATUS_COLUMNS) if c not in result.columns]
    if missing:
        raise ConfigError(
            f"retry_failed needs the columns the run added, and {missing} are gone; "
            "re-run the rows with run_df(...) instead, or keep those columns"
        )
    status = result["status"]
    mask = status.ne("ok").fillna(True)
    if only is not None:
        mask &= result["error_type"].isin(error_types(only)).fillna(False)
    pending = mask & status.eq("pending").fillna(False)
    if pending.any():  # still running (a live frame, or a batch job left running): not twice
        log.warning(
            "%d rows are still pending, not re-run: a batch job's rows are collected by "
            "running the same cell again; a running job's by awaiting it",
            int(pending.sum()),
        )
    return np.flatnonzero((mask & ~pending).to_numpy(dtype=bool))


def rerun_job(
    rows: pd.DataFrame, meta: dict[str, Any], prompt: str | None, kwargs: Mapping[str, Any]
) -> FrameJob:
    """A job over `rows` with the original run's settings (from memory, else from `meta`),
    the given options applied on top."""
    options = checked(kwargs, entry="retry_failed")
    fixed = [k for k in ("output_col", "limit") if k in options]
    if fixed:
        raise ConfigError(f"retry_failed re-runs rows of the same frame: it takes no {fixed}")
    given = inputs(options) | ({"prompt": prompt} if prompt is not None else {})
    kept = {k: meta[k] for k in ("prompt", *frames.INPUT_KEYS) if k in meta}
    if {"prompt", "template", "messages_col"} & given.keys():  # a new way to build prompts
        kept = {k: v for k, v in kept.items() if k not in ("prompt", "template", "messages_col")}
    record = history.lookup(meta.get("run_id"))
    if (
        isinstance(record, history.RunRecord)
        and not {"provider", "base_url", "api_key"} & options.keys()
    ):
        provider, base = record.provider, record.config
    else:
        provider, _ = resolve(
            options.get("provider") or meta.get("provider"),
            base_url=options.get("base_url") or meta.get("provider_settings", {}).get("base_url"),
            api_key=options.get("api_key"),
        )
        base = RunConfig.from_meta(meta, default_model=provider.default_model)
    base = dataclasses.replace(base, mode="online")  # a batch's failures re-run online unless
    config = run_config(options, provider, base=base)  # mode="batch" is given again
    made_with = meta.get("schema")
    if made_with and config.schema is None:
        raise ConfigError(
            f"this frame was made with schema={made_with}, which its attrs cannot carry "
            f"out of the process that made it: pass schema={made_with} again"
        )
    fields = config.schema.fields if config.schema is not None else []
    if config.schema is not None and (
        config.schema.name != made_with
        or not {kept.get("prefix", "") + f for f in fields} <= set(meta.get("columns", ()))
    ):
        was = f"schema={made_with}" if made_with else "no schema"
        raise ConfigError(
            f"this frame was made with {was}, so its rows cannot be re-run with "
            f"schema={config.schema.name} (the columns would not match): run_df(...) makes "
            "a new frame with it"
        )
    plan = frames.plan(rows, **(kept | given), schema_fields=fields)
    original_cache = meta.get("cache") or False  # the file the run used, or False: it had none
    return FrameJob(
        plan,
        provider,
        config,
        cache=chosen_cache(options.get("cache", original_cache)),
        progress=options.get("progress") is not False,
    )


def merged(
    result: pd.DataFrame,
    positions: np.ndarray[Any, Any],
    job: FrameJob,
    meta: dict[str, Any],
    rerun: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """`result` with the re-run rows replaced (the rows so far, if the re-run stopped)."""
    rerun = rerun if rerun is not None else job.result
    assert rerun is not None
    frame = frames.merge(result, positions, rerun, job.plan.added_columns)
    return with_both_runs(frame, meta, rerun, len(positions))


def with_both_runs(
    frame: pd.DataFrame, meta: dict[str, Any], rerun: pd.DataFrame, retried: int
) -> pd.DataFrame:
    """`frame` (a result with re-run rows merged in) with attrs that count both runs; it
    becomes the last result."""
    counts = frame["status"].value_counts()
    latest = rerun.attrs[frames.META_KEY]
    frame.attrs[frames.META_KEY] = {
        **meta,
        **latest,
        **run_totals(meta, latest),  # the whole frame's: both runs together
        "started_at": meta.get("started_at"),
        "counts": {str(k): int(v) for k, v in counts.items()},
        "retried_rows": retried,
        "retried_from": meta.get("run_id"),
    }
    history.set_last(frame)
    return frame


SUMMED = ("requests", "input_tokens", "output_tokens", "cached_rows", "unpriced_replies", "wall_s")


def run_totals(first: Mapping[str, Any], then: Mapping[str, Any]) -> dict[str, Any]:
    """What the frame cost and took across the first run and the re-run (a cost that is
    unknown in either is unknown in the total)."""
    totals: dict[str, Any] = {k: (first.get(k) or 0) + (then.get(k) or 0) for k in SUMMED}
    totals["wall_s"] = round(totals["wall_s"], 3)
    costs = (first.get("cost_usd"), then.get("cost_usd"))
    totals["cost_usd"] = None if None in costs else round(sum(c for c in costs if c), 6)
    return totals


def error_types(only: Iterable[str]) -> list[str]:
    """The error types named in `only=`, checked against the known ones."""
    kinds = [str(k) for k in ([only] if isinstance(only, str) else only)]
    known = {e.value for e in ErrorType}
    unknown = [k for k in kinds if k not in known]
    if unknown:
        raise ConfigError(f"unknown error type(s) {unknown}; known: {sorted(known)}")
    return kinds
