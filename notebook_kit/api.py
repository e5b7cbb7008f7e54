"""The public functions: run a frame, re-run its failures, find what the last run left.

Every entry point takes the same run options (`options.RunOptions`), checked before
anything is sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack

import pandas as pd

from . import batch_jobs, frame as frames, history
from .batch_panel import BatchPanel
from .cache import Cache
from .config import RunConfig, whole
from .errors import ConfigError, RunError
from .frame_job import FrameJob
from .job import Job
from .kernel import cell_id, controls_live_while_awaiting, display_in_cell, in_notebook
from .loops import run_blocking
from .options import (
    RunOptions,
    checked,
    chosen_cache,
    chosen_provider,
    inputs,
    run_config,
    shows_run_options,
)
from .pipeline_frame import merge as merge_steps
from .pipeline_job import PipelineJob, new_job, resume_job
from .preflight import estimate_pipeline, estimate_run
from .progress import ProgressBar
from .providers import DEMO_NOTICE, resolve
from .registry import remember, stop_the_cells_earlier_job, told_in_one_line
from .reporting import RunReport
from .rerun import failed_rows, merged, rerun_job, with_both_runs
from .row_stream import RowStream
from .session import defaults
from .steps import Step
from .ui import DefaultsPanel, Panel, PipelinePanel

AWAIT_HINT = (
    "This kernel (ipykernel < 7) applies control changes only after this cell ends; "
    "use kit.start(...) for live control."
)
BLOCKING_HINT = (
    "This cell blocks the kernel, so control changes may apply only after it ends; "
    "use kit.start(...) or await kit.run_df(...) for live control."
)
log = logging.getLogger("notebook_kit")


@shows_run_options
async def run_df(
    data: pd.DataFrame | pd.Series, prompt: str | None = None, **options: Unpack[RunOptions]
) -> pd.DataFrame:
    """Send one request per row, concurrently; return a copy of the frame with the replies.

    `prompt` names the column to send (or pass a Series); or build prompts with
    `template="... {column} ..."`, or send ready chat message lists with `messages_col=`.
    Other keyword arguments (temperature, max_tokens, seed, ...) go to the model as is.
    Failed rows become data (`status`, `error`, `error_type`); re-run them with
    `await retry_failed(result)`. Use `run_df_sync` where you cannot `await`.
    Options left as None take the session defaults (`kit.defaults`, `kit.controls()`).
    In a notebook the run shows its panel (`kit.start` explains the controls).
    """
    job = _job(data, prompt, options, entry="run_df")
    hint = None if controls_live_while_awaiting() else AWAIT_HINT
    _attach_display(job, hint=hint)
    with told_in_one_line(job):
        return await job.run()


@shows_run_options
async def run_pipeline(
    data: pd.DataFrame, steps: Sequence[Step], **options: Unpack[RunOptions]
) -> pd.DataFrame:
    """Run every row through `steps` (a list of `kit.Step`): each step has its own
    concurrency, model and limits, and a row moves to its next step the moment its
    previous one ends. Options here apply to the whole pipeline (cache, budget_usd,
    progress, limit) and are every step's defaults (provider, model, max_tokens, ...).
    Returns one row per input row: each step's output and status columns, and the row's
    `status`, `error`, `error_type`, `failed_step` and total `cost_usd`. Re-run failed
    rows from the step that failed with `await retry_failed(result)`.
    """
    job = new_job(data, steps, options, entry="run_pipeline")
    hint = None if controls_live_while_awaiting() else AWAIT_HINT
    _attach_display(job, hint=hint)
    with told_in_one_line(job):
        return await job.run()


@shows_run_options
def run_pipeline_sync(
    data: pd.DataFrame,
    steps: Sequence[Step],
    *,
    use_nest_asyncio: bool = False,
    **options: Unpack[RunOptions],
) -> pd.DataFrame:
    """`run_pipeline` for scripts and for notebooks without `await` (see `run_df_sync`)."""
    job = new_job(data, steps, options, entry="run_pipeline_sync")
    _attach_display(job, hint=BLOCKING_HINT)
    with told_in_one_line(job):
        return run_blocking(job.run(), use_nest_asyncio=use_nest_asyncio)


@shows_run_options
def start(
    data: pd.DataFrame | pd.Series,
    prompt: str | None = None,
    *,
    steps: Sequence[Step] | None = None,
    panel: bool | None = None,
    models: Sequence[str] = (),
    **options: Unpack[RunOptions],
) -> Job:
    """Start a run in the background and return its `Job` at once (in a notebook cell).

    The cell ends, so the panel's controls act on the running job on every kernel:
    `job.panel.concurrency` (slider), `.model` (menu, for rows not started yet), `.pause`,
    `.stop`. `job.df` is the frame so far; `await job` (in a later cell) gives the final
    frame; `job.cancel()` stops it like the Stop button. `panel=None` shows the panel only
    in a notebook; `models` adds choices to the model menu. Options as for `run_df`.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigError(
            "kit.start needs a running event loop, as in a Jupyter cell; "
            "in a script use kit.run_df_sync(...) or await kit.run_df(...)"
        ) from None
    job: Job
    if steps is not None:
        if prompt is not None or not isinstance(data, pd.DataFrame):
            raise ConfigError("with steps=..., pass only the DataFrame: the steps say what to send")
        if models:
            raise ConfigError(
                "models= fills a run's model menu; a pipeline's panel has none: give each "
                "step its model=..., or job.set_model(model, step=...) while it runs"
            )
        job = new_job(data, steps, options, entry="start", pause_at_budget=True)
    else:
        job = _job(data, prompt, options, entry="start", pause_at_budget=True)
    job.cell = cell_id()
    _attach_display(job, panel=panel, models=models, hint=stop_the_cells_earlier_job(job))
    job.task = loop.create_task(job.run(), name=f"notebook_kit-{job.report.run_id}")
    job.task.add_done_callback(_report_failure)
    return job


@shows_run_options
def iter_rows(
    data: pd.DataFrame | pd.Series,
    prompt: str | None = None,
    *,
    buffer: int | None = None,
    **options: Unpack[RunOptions],
) -> RowStream:
    """The rows as they finish, while the rest still run (in a notebook cell or a script):

        async for row in kit.iter_rows(df, "prompt", concurrency=8):
            print(row.index, row.status, row.response)

    Each row is a `FinishedRow`: the result columns, `position`, `index`, and
    `row["column"]` for the frame's own cells. At most `buffer` finished rows (default
    twice the concurrency) wait to be read: a slower reader holds the run back. Breaking
    out of the loop, leaving `async with kit.iter_rows(...) as rows:` or
    `await rows.aclose()` stops the run; `kit.last_result()` then holds the partial frame,
    and the final frame once every row was read. Options as for `run_df`.
    """
    job = _job(data, prompt, options, entry="iter_rows")
    assert isinstance(job, FrameJob)
    room = (
        2 * job.config.limits.concurrency if buffer is None else whole("buffer", buffer, minimum=0)
    )

    def start(job: FrameJob) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigError(
                "kit.iter_rows runs in `async for` (a notebook cell or a coroutine)"
            ) from None
        _attach_display(job)
        job.task = loop.create_task(job.run(), name=f"notebook_kit-{job.report.run_id}")
        job.task.add_done_callback(_report_failure)

    return RowStream(job, start, room)


@shows_run_options
def run_df_sync(
    data: pd.DataFrame | pd.Series,
    prompt: str | None = None,
    *,
    use_nest_asyncio: bool = False,
    **options: Unpack[RunOptions],
) -> pd.DataFrame:
    """`run_df` for scripts and for notebooks without `await` (runs on a private loop there).

    Ctrl-C / kernel interrupt cancels in-flight calls; `last_result()` keeps the rows done.
    `use_nest_asyncio=True` is an opt-in to run on the notebook's own loop instead; see
    the README for why it is not the default.
    """
    job = _job(data, prompt, options, entry="run_df_sync")
    _attach_display(job, hint=BLOCKING_HINT)
    with told_in_one_line(job):
        return run_blocking(job.run(), use_nest_asyncio=use_nest_asyncio)


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
    _attach_display(job)
    try:
        with told_in_one_line(job):
            rerun = await job.run()
    except (asyncio.CancelledError, RunError) as exc:
        partial = merged(result, positions, job, meta)
        if isinstance(exc, RunError):
            exc.partial = partial
        raise
    return merged(result, positions, job, meta, rerun)


@shows_run_options
def estimate(
    data: pd.DataFrame | pd.Series,
    prompt: str | Sequence[Step] | None = None,
    *,
    latency: float = 1.0,
    output_tokens: int | None = None,
    **options: Unpack[RunOptions],
) -> pd.DataFrame:
    """Tokens, a cost range and the expected wall time of a run, without calling anyone.

    `latency` is the assumed seconds per request; `output_tokens` the expected reply length
    (default: half of max_tokens, or 150). Rows the cache already holds cost nothing.
    With a list of steps, one line per step and the total (`estimate(df, steps)`).
    """
    if not isinstance(prompt, str | None):
        job = new_job(data, prompt, options, entry="estimate")  # type: ignore[arg-type]
        return estimate_pipeline(
            job.plan.frame,
            job.plan.stages,
            latency=latency,
            output_tokens=output_tokens,
            cache=job.cache,
        )
    settled = checked(options, entry="estimate")
    provider, _ = chosen_provider(settled)
    config = run_config(settled, provider)
    plan = frames.plan(data, prompt, **inputs(settled), schema_fields=_fields(config))
    return estimate_run(
        plan,
        provider,
        model=config.model,
        params=config.params,
        limits=config.limits,
        latency=latency,
        output_tokens=output_tokens,
        cache=chosen_cache(settled.get("cache")),
        schema=config.schema,
    )


def controls() -> DefaultsPanel:
    """A panel bound to `kit.defaults`: the concurrency and model of the next runs."""
    chosen, _ = resolve(defaults.provider)
    panel = DefaultsPanel(defaults, models=chosen.models)
    if in_notebook():
        display_in_cell(panel)
    return panel


def batches(cache: str | Path | Cache | None = None) -> pd.DataFrame:
    """The provider batch jobs the kit created (mode="batch"), newest first, as last seen:
    state, rows, done, failed, whether their rows were read, and when they expire."""
    return batch_jobs.listing(None if cache is None else _database(cache))


def attach(
    batch_id: str,
    *,
    api_key: str | None = None,
    cache: str | Path | Cache | None = None,
    panel: bool | None = None,
) -> Job:
    """Wait for one batch job the kit created (`kit.batches()` lists them) and read its
    rows, in a notebook cell or a coroutine: `result = await kit.attach(batch_id)`. One row
    per request: `position` is the row's place in the frame that made the batch. Running
    the cell that made it again does the same and gives back that frame."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigError("kit.attach runs in a notebook cell or a coroutine (await)") from None
    job = batch_jobs.attach_job(
        batch_id, api_key=api_key, cache=_database(cache), progress=panel is not False
    )
    _attach_display(job, panel=panel)
    job.task = loop.create_task(job.run(), name=f"notebook_kit-{job.report.run_id}")
    job.task.add_done_callback(_report_failure)
    return job


def _database(cache: str | Path | Cache | None) -> Cache | None:
    """The cache file whose database holds the batch jobs (the default file if None)."""
    return chosen_cache(True if cache is None else cache)


def cache_info(cache: bool | str | Path | Cache | None = None) -> dict[str, Any]:
    """Where the cache file is, how many replies it holds, its size."""
    chosen = chosen_cache(True if cache is None else cache)
    if chosen is None:
        raise ConfigError("the cache is off (cache=False)")
    return chosen.info()


def clear_cache(
    *, model: str | None = None, provider: str | None = None, cache: str | Path | None = None
) -> int:
    """Forget cached replies: all, or one model's or provider's. Returns how many."""
    chosen = chosen_cache(True if cache is None else cache)
    assert chosen is not None
    return chosen.clear(model=model, provider=provider)


def last_result() -> pd.DataFrame | None:
    """The frame of the last run in this process, also when it was interrupted or failed."""
    return history.last_frame()


def last_report() -> RunReport | None:
    """Per-attempt records of the last run (for timelines); see `RunReport.attempts()`."""
    record = history.last_record()
    return record.report if record else None


def report(result: pd.DataFrame) -> RunReport:
    """The run report of a result frame (kept in memory for the last 32 runs)."""
    return history.report_of(result)


def _job(
    data: pd.DataFrame | pd.Series,
    prompt: str | None,
    kwargs: Mapping[str, Any],
    *,
    entry: str,
    pause_at_budget: bool = False,
) -> Job:
    """A job from a call's options, the session defaults filling the gaps (a snapshot)."""
    options = checked(kwargs, entry=entry)
    provider, is_fallback = chosen_provider(options)
    config = run_config(options, provider, pause_at_budget=pause_at_budget)
    plan = frames.plan(data, prompt, **inputs(options), schema_fields=_fields(config))
    if is_fallback:
        print(DEMO_NOTICE)
    return FrameJob(
        plan,
        provider,
        config,
        cache=chosen_cache(options.get("cache")),
        progress=options.get("progress") is not False,
    )


def _fields(config: RunConfig) -> list[str]:
    return config.schema.fields if config.schema is not None else []


def _attach_display(
    job: Job, *, hint: str | None = None, panel: bool | None = None, models: Sequence[str] = ()
) -> None:
    """The job's panel (in a notebook, shown in the calling cell now) or its text bar."""
    if panel or (panel is None and job.progress and in_notebook()):
        if isinstance(job, FrameJob) and job.config.mode == "batch":
            job.panel = job.display = BatchPanel(job, hint=hint)
        elif isinstance(job, FrameJob):
            job.panel = job.display = Panel(job, models=models, hint=hint)
        else:
            assert isinstance(job, PipelineJob)
            job.panel = job.display = PipelinePanel(job, hint=hint)
        display_in_cell(job.panel)
    elif job.progress:
        job.display = ProgressBar(job.snapshot)
    remember(job)


async def _retry_steps(
    result: pd.DataFrame,
    positions: Any,
    meta: dict[str, Any],
    steps: Sequence[Step] | None,
    options: Mapping[str, Any],
) -> pd.DataFrame:
    """A pipeline's failed rows again, each from the step it failed at."""
    job, starts = resume_job(result, positions, meta, steps, options)
    _attach_display(job)

    def merged(rerun: pd.DataFrame) -> pd.DataFrame:
        frame = merge_steps(result, positions, starts, rerun, job.plan.stages)
        return with_both_runs(frame, meta, rerun, len(positions))

    try:
        with told_in_one_line(job):
            rerun = await job.run()
    except (asyncio.CancelledError, RunError) as exc:
        if job.result is not None:
            partial = merged(job.result)
            if isinstance(exc, RunError):
                exc.partial = partial
        raise
    return merged(rerun)


def _report_failure(task: asyncio.Task[pd.DataFrame]) -> None:
    """A background job's error is kept for `await job` and logged, never lost."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("background job %s failed: %s", task.get_name(), error)
