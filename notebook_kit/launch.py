"""How a call becomes a job: a frame's job from the call's options, the job's display (its
panel in the calling cell, or a text bar), and a background job's error kept and logged.

Every entry point (`api.py`, `rerun.py`, `stored.py`) starts its job through these.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from . import frame as frames
from .batch_panel import BatchPanel
from .config import RunConfig
from .frame_job import FrameJob
from .job import Job
from .kernel import display_in_cell, in_notebook
from .options import checked, chosen_cache, chosen_provider, inputs, run_config
from .pipeline_job import PipelineJob
from .pipeline_panel import PipelinePanel
from .progress import ProgressBar
from .providers import DEMO_NOTICE
from .registry import remember
from .ui import Panel

log = logging.getLogger("notebook_kit")


def new_frame_job(
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
    plan = frames.plan(data, prompt, **inputs(options), schema_fields=schema_fields(config))
    if is_fallback:
        print(DEMO_NOTICE)
    return FrameJob(
        plan,
        provider,
        config,
        cache=chosen_cache(options.get("cache")),
        progress=options.get("progress") is not False,
    )


def schema_fields(config: RunConfig) -> list[str]:
    return config.schema.fields if config.schema is not None else []


def attach_display(
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


def report_failure(task: asyncio.Task[pd.DataFrame]) -> None:
    """A background job's error is kept for `await job` and logged, never lost."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("background job %s failed: %s", task.get_name(), error)
