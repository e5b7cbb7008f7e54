"""The public functions that run a frame or a pipeline, estimate a run, and find what the
last run left. Re-runs are `rerun.py`'s; the cache file and its batch jobs `stored.py`'s.

Every entry point takes the same run options (`options.RunOptions`), checked before
anything is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Unpack

import pandas as pd

from . import frame as frames, history
from .config import whole
from .errors import ConfigError
from .frame_job import FrameJob
from .job import Job
from .kernel import cell_id, controls_live_while_awaiting, display_in_cell, in_notebook
from .launch import attach_display, new_frame_job, report_failure, schema_fields
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
from .pipeline_job import new_job
from .preflight import estimate_pipeline, estimate_run
from .providers import resolve
from .registry import stop_the_cells_earlier_job, told_in_one_line
from .reporting import RunReport
from .row_stream import RowStream
from .session import defaults
from .steps import Step
from .ui import DefaultsPanel

AWAIT_HINT = (
    "This kernel (ipykernel < 7) applies control changes only after this cell ends; "
    "use kit.start(...) for live control."
)
BLOCKING_HINT = (
    "This cell blocks the kernel, so control changes may apply only after it ends; "
    "use kit.start(...) or await kit.run_df(...) for live control."
)


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
    job = new_frame_job(data, prompt, options, entry="run_df")
    hint = None if controls_live_while_awaiting() else AWAIT_HINT
    attach_display(job, hint=hint)
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
    attach_display(job, hint=hint)
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
    attach_display(job, hint=BLOCKING_HINT)
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
        job = new_frame_job(data, prompt, options, entry="start", pause_at_budget=True)
    job.cell = cell_id()
    attach_display(job, panel=panel, models=models, hint=stop_the_cells_earlier_job(job))
    job.task = loop.create_task(job.run(), name=f"notebook_kit-{job.report.run_id}")
    job.task.add_done_callback(report_failure)
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
    job = new_frame_job(data, prompt, options, entry="iter_rows")
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
        attach_display(job)
        job.task = loop.create_task(job.run(), name=f"notebook_kit-{job.report.run_id}")
        job.task.add_done_callback(report_failure)

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
    job = new_frame_job(data, prompt, options, entry="run_df_sync")
    attach_display(job, hint=BLOCKING_HINT)
    with told_in_one_line(job):
        return run_blocking(job.run(), use_nest_asyncio=use_nest_asyncio)


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
    plan = frames.plan(data, prompt, **inputs(settled), schema_fields=schema_fields(config))
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
