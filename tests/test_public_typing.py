"""A user's typed code: CI type-checks this file with `mypy --strict` (pyproject's files).

Importing names from the package and annotating with `kit.Job` must pass strict mypy, and
the run options must be checked statically as well as at run time.
"""

from __future__ import annotations

import pandas as pd
import pytest

import notebook_kit as kit
from notebook_kit import ConfigError, Job, Limits, RetryPolicy, RowStatus, RunConfig, RunOptions


def build_config(model: str) -> RunConfig:
    return RunConfig(model=model, limits=Limits(concurrency=4), retry=RetryPolicy(max_attempts=2))


def options_for_class() -> RunOptions:
    return {
        "concurrency": 4,
        "max_tokens": 50,
        "provider": kit.DemoProvider(latency=0),
        "progress": False,
    }


async def background(df: pd.DataFrame) -> kit.Job:
    job: kit.Job = kit.start(df, "prompt", **options_for_class())
    return job


def ok_rows(result: pd.DataFrame) -> int:
    return int((result["status"] == RowStatus.OK.value).sum())


async def test_typed_user_code_runs() -> None:
    df = pd.DataFrame({"prompt": ["a", "b", "c"]})
    job = await background(df)
    assert isinstance(job, Job)
    result = await job
    assert ok_rows(result) == 3
    assert build_config("demo").limits.concurrency == 4


def test_options_are_checked_at_run_time_too() -> None:
    df = pd.DataFrame({"prompt": ["a"]})
    bad: dict[str, object] = {"concurrency": "4"}  # what mypy cannot see, the run refuses
    with pytest.raises(ConfigError, match="concurrency must be a whole number >= 1"):
        kit.run_df_sync(df, "prompt", **bad)  # type: ignore[arg-type]
