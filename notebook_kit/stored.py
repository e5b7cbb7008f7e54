"""What the kit keeps in its cache file: the cached replies (`cache_info`, `clear_cache`)
and the provider batch jobs it created (`batches`, and `attach` to wait for one)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pandas as pd

from . import batch_jobs
from .cache import Cache
from .errors import ConfigError
from .job import Job
from .launch import attach_display, report_failure
from .options import chosen_cache


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
    attach_display(job, panel=panel)
    job.task = loop.create_task(job.run(), name=f"notebook_kit-{job.report.run_id}")
    job.task.add_done_callback(report_failure)
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
