"""The public functions: run a frame, re-run its failures, find what the last run left."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Sequence
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import frame as frames
from . import history
from .cache import Cache, shared_cache
from .config import Limits, RetryPolicy, RunConfig, check_budget
from .errors import ConfigError, RunError
from .job import Job
from .kernel import controls_live_while_awaiting, display_in_cell, in_notebook
from .loops import run_blocking
from .preflight import estimate_run
from .providers import DEMO_NOTICE, Provider, resolve
from .reporting import RunReport
from .session import defaults
from .types import ErrorType
from .ui import DefaultsPanel, Panel

_OPTIONS = (
    "template system messages_col system_col model_col provider model base_url api_key "
    "concurrency rpm tpm max_attempts timeout output_col progress limit panel models cache "
    "budget_usd adaptive"
).split()
_INPUT_OPTIONS = ("prompt", "template", "messages_col", "system", "system_col", "model_col")
AWAIT_HINT = (
    "This kernel (ipykernel < 7) applies control changes only after this cell ends; "
    "use kit.start(...) for live control."
)
BLOCKING_HINT = (
    "This cell blocks the kernel, so control changes may apply only after it ends; "
    "use kit.start(...) or await kit.run_df(...) for live control."
)
log = logging.getLogger("notebook_kit")


async def run_df(
    data: pd.DataFrame | pd.Series,
    prompt: str | None = None,
    *,
    template: str | None = None,
    system: str | None = None,
    messages_col: str | None = None,
    system_col: str | None = None,
    model_col: str | None = None,
    provider: str | Provider | None = None,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    concurrency: int | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
    output_col: str = "response",
    progress: bool = True,
    limit: int | None = None,
    cache: bool | str | Path | Cache | None = None,
    budget_usd: float | None = None,
    adaptive: bool | None = None,
    **params: Any,
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
    job = _job(**locals())
    if progress and in_notebook():
        hint = None if controls_live_while_awaiting() else AWAIT_HINT
        _show_panel(job, hint=hint)
    history.set_last_job(job)
    return await job.run()


def start(
    data: pd.DataFrame | pd.Series,
    prompt: str | None = None,
    *,
    template: str | None = None,
    system: str | None = None,
    messages_col: str | None = None,
    system_col: str | None = None,
    model_col: str | None = None,
    provider: str | Provider | None = None,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    concurrency: int | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
    output_col: str = "response",
    progress: bool = True,
    limit: int | None = None,
    cache: bool | str | Path | Cache | None = None,
    budget_usd: float | None = None,
    adaptive: bool | None = None,
    panel: bool | None = None,
    models: Sequence[str] = (),
    **params: Any,
) -> Job:
    """Start a run in the background and return its `Job` at once (in a notebook cell).

    The cell ends, so the panel's controls act on the running job on every kernel:
    `job.panel.concurrency` (slider), `.model` (menu, for rows not started yet), `.pause`,
    `.stop`. `job.df` is the frame so far; `await job` (in a later cell) gives the final
    frame; `job.cancel()` stops it like the Stop button. `panel=None` shows the panel only
    in a notebook; `models` adds choices to the model menu. Options as for `run_df`.
    """
    options = locals()
    show, choices = options.pop("panel"), options.pop("models")
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigError(
            "kit.start needs a running event loop, as in a Jupyter cell; "
            "in a script use kit.run_df_sync(...) or await kit.run_df(...)"
        ) from None
    job = _job(**options, pause_at_budget=True)
    if show or (show is None and progress and in_notebook()):
        _show_panel(job, models=choices)
    job.task = loop.create_task(job.run(), name=f"notebook_kit-{job.report.run_id}")
    job.task.add_done_callback(_report_failure)
    history.set_last_job(job)
    return job


def controls() -> DefaultsPanel:
    """A panel bound to `kit.defaults`: the concurrency and model of the next runs."""
    chosen, _ = resolve(defaults.provider)
    panel = DefaultsPanel(defaults, models=chosen.models)
    if in_notebook():
        display_in_cell(panel)
    return panel


def last_job() -> Job | None:
    """The job started last in this process (by start, run_df or run_df_sync)."""
    return history.last_job()


def run_df_sync(
    data: pd.DataFrame | pd.Series,
    prompt: str | None = None,
    *,
    template: str | None = None,
    system: str | None = None,
    messages_col: str | None = None,
    system_col: str | None = None,
    model_col: str | None = None,
    provider: str | Provider | None = None,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    concurrency: int | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
    output_col: str = "response",
    progress: bool = True,
    limit: int | None = None,
    cache: bool | str | Path | Cache | None = None,
    budget_usd: float | None = None,
    adaptive: bool | None = None,
    use_nest_asyncio: bool = False,
    **params: Any,
) -> pd.DataFrame:
    """`run_df` for scripts and for notebooks without `await` (runs on a private loop there).

    Ctrl-C / kernel interrupt cancels in-flight calls; `last_result()` keeps the rows done.
    `use_nest_asyncio=True` is an opt-in to run on the notebook's own loop instead; see
    the README for why it is not the default.
    """
    options = locals()
    nested = options.pop("use_nest_asyncio")
    job = _job(**options)
    if progress and in_notebook():
        _show_panel(job, hint=BLOCKING_HINT)
    history.set_last_job(job)
    return run_blocking(job.run(), use_nest_asyncio=nested)


async def retry_failed(
    result: pd.DataFrame,
    *,
    only: Iterable[str] | None = None,
    progress: bool = True,
    **overrides: Any,
) -> pd.DataFrame:
    """Re-run the rows whose status is not `ok` (or only those with the given error types).

    Same settings as the run that made `result`, unless overridden (e.g. `concurrency=2`).
    Returns the whole frame with those rows replaced; `attempts` adds up.
    """
    meta = result.attrs.get(frames.META_KEY)
    if not isinstance(meta, dict):
        raise ConfigError(
            "this frame carries no notebook_kit settings (result.attrs['notebook_kit'] is gone, "
            "e.g. after pd.concat); run it again with run_df(...)"
        )
    mask = result["status"].ne("ok").fillna(True)
    if only is not None:
        kinds = _error_types(only)
        mask &= result["error_type"].isin(kinds).fillna(False)
    positions = np.flatnonzero(mask.to_numpy(dtype=bool))
    if len(positions) == 0:
        return result.copy()
    job = _retry_job(result.iloc[positions], meta, progress=progress, overrides=overrides)
    if progress and in_notebook():
        _show_panel(job)
    history.set_last_job(job)
    try:
        rerun = await job.run()
    except (asyncio.CancelledError, RunError) as exc:
        merged = _merged(result, positions, job, meta)
        if isinstance(exc, RunError):
            exc.partial = merged
        raise
    return _merged(result, positions, job, meta, rerun)


def estimate(
    data: pd.DataFrame | pd.Series,
    prompt: str | None = None,
    *,
    template: str | None = None,
    system: str | None = None,
    messages_col: str | None = None,
    system_col: str | None = None,
    model_col: str | None = None,
    provider: str | Provider | None = None,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    concurrency: int | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    limit: int | None = None,
    cache: bool | str | Path | Cache | None = None,
    latency: float = 1.0,
    output_tokens: int | None = None,
    **params: Any,
) -> pd.DataFrame:
    """Tokens, a cost range and the expected wall time of a run, without calling anyone.

    `latency` is the assumed seconds per request; `output_tokens` the expected reply length
    (default: half of max_tokens, or 150). Rows the cache already holds cost nothing.
    """
    _check_params(params)
    plan = frames.plan(
        data,
        prompt,
        template=template,
        messages_col=messages_col,
        system=system,
        system_col=system_col,
        model_col=model_col,
        limit=limit,
    )
    if provider is None and base_url is None and api_key is None:
        provider = defaults.provider
    chosen, _ = resolve(provider, base_url=base_url, api_key=api_key)
    limits = Limits(
        concurrency=concurrency or defaults.concurrency,
        rpm=rpm or defaults.rpm,
        tpm=tpm or defaults.tpm,
    )
    return estimate_run(
        plan,
        chosen,
        model=model or defaults.model or chosen.default_model,
        params={**chosen.defaults(), **params},
        limits=limits,
        latency=latency,
        output_tokens=output_tokens,
        cache=_cache(cache),
    )


def cache_info(cache: bool | str | Path | Cache | None = None) -> dict[str, Any]:
    """Where the cache file is, how many replies it holds, its size."""
    chosen = _cache(True if cache is None else cache)
    if chosen is None:
        raise ConfigError("the cache is off (cache=False)")
    return chosen.info()


def clear_cache(
    *, model: str | None = None, provider: str | None = None, cache: str | Path | None = None
) -> int:
    """Forget cached replies: all, or one model's or provider's. Returns how many."""
    chosen = _cache(True if cache is None else cache)
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
    meta = result.attrs.get(frames.META_KEY) or {}
    record = history.lookup(meta.get("run_id"))
    if record is None:
        raise ConfigError("no report for this frame in this process (reports live in memory)")
    return record.report


def _job(
    *,
    data: pd.DataFrame | pd.Series,
    provider: str | Provider | None,
    base_url: str | None,
    api_key: str | None,
    model: str | None,
    concurrency: int | None,
    rpm: float | None,
    tpm: float | None,
    max_attempts: int | None,
    timeout: float | None,
    progress: bool,
    cache: bool | str | Path | Cache | None,
    budget_usd: float | None,
    adaptive: bool | None,
    params: dict[str, Any],
    pause_at_budget: bool = False,
    **inputs: Any,
) -> Job:
    """A job from the call's options, the session defaults filling the gaps (a snapshot)."""
    _check_params(params)
    plan = frames.plan(data, **inputs)
    if provider is None and base_url is None and api_key is None:
        provider = defaults.provider
    chosen, is_fallback = resolve(provider, base_url=base_url, api_key=api_key)
    if is_fallback:
        print(DEMO_NOTICE)
    config = RunConfig(
        model=model or defaults.model or chosen.default_model,
        limits=Limits(
            concurrency=concurrency or defaults.concurrency,
            rpm=rpm or defaults.rpm,
            tpm=tpm or defaults.tpm,
            adaptive=defaults.adaptive if adaptive is None else adaptive,
        ),
        retry=RetryPolicy(max_attempts=max_attempts or defaults.max_attempts),
        timeout=timeout or defaults.timeout,
        params={**chosen.defaults(), **params},
        budget_usd=budget_usd if budget_usd is not None else defaults.budget_usd,
        pause_at_budget=pause_at_budget,
    )
    check_budget(config)
    return Job(plan, chosen, config, progress=progress, cache=_cache(cache))


def _cache(choice: bool | str | Path | Cache | None) -> Cache | None:
    """cache=None: the session default; True: the default file; a path or a Cache; False."""
    choice = defaults.cache if choice is None else choice
    if choice is False:
        return None
    if isinstance(choice, Cache):
        return choice
    return shared_cache(None if choice is True else Path(choice))


def _show_panel(job: Job, *, hint: str | None = None, models: Sequence[str] = ()) -> None:
    """Display the job's panel in the calling cell, before the job starts."""
    job.panel = Panel(job, models=models, hint=hint)
    display_in_cell(job.panel)


def _report_failure(task: asyncio.Task[pd.DataFrame]) -> None:
    """A background job's error is kept for `await job` and logged, never lost."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("background job %s failed: %s", task.get_name(), error)


def _retry_job(
    rows: pd.DataFrame, meta: dict[str, Any], *, progress: bool, overrides: dict[str, Any]
) -> Job:
    fixed = [k for k in ("output_col", "limit", "panel", "models") if k in overrides]
    if fixed:
        raise ConfigError(f"retry_failed re-runs rows of the same frame: it takes no {fixed}")
    _check_params({k: v for k, v in overrides.items() if k not in _OPTIONS})
    cache = overrides.pop("cache", None)
    inputs = {k: meta[k] for k in _INPUT_OPTIONS if k in meta}
    inputs |= {k: overrides.pop(k) for k in _INPUT_OPTIONS if k in overrides}
    plan = frames.plan(rows, output_col=meta.get("output_col", "response"), **inputs)
    record = history.lookup(meta.get("run_id"))
    if record is not None and not {"provider", "base_url", "api_key"} & overrides.keys():
        chosen, base = record.provider, record.config
    else:
        chosen, _ = resolve(
            overrides.pop("provider", None) or meta.get("provider"),
            base_url=overrides.pop("base_url", None)
            or meta.get("provider_settings", {}).get("base_url"),
            api_key=overrides.pop("api_key", None),
        )
        base = RunConfig(
            model=meta.get("model") or chosen.default_model,
            limits=Limits(
                concurrency=meta.get("concurrency", 8), rpm=meta.get("rpm"), tpm=meta.get("tpm")
            ),
            retry=RetryPolicy(max_attempts=meta.get("max_attempts", 5)),
            timeout=meta.get("timeout", 120.0),
            params=dict(meta.get("params", {})),
        )
    limits = dataclasses.replace(
        base.limits,
        **{
            k: overrides.pop(k) for k in ("concurrency", "rpm", "tpm", "adaptive") if k in overrides
        },
    )
    retry = base.retry
    if "max_attempts" in overrides:
        retry = dataclasses.replace(retry, max_attempts=overrides.pop("max_attempts"))
    config = dataclasses.replace(
        base,
        model=overrides.pop("model", base.model),
        timeout=overrides.pop("timeout", base.timeout),
        limits=limits,
        retry=retry,
        budget_usd=overrides.pop("budget_usd", base.budget_usd),
        pause_at_budget=False,
        params={**base.params, **overrides},
    )
    check_budget(config)
    return Job(plan, chosen, config, progress=progress, cache=_cache(cache))


def _merged(
    result: pd.DataFrame,
    positions: np.ndarray[Any, Any],
    job: Job,
    meta: dict[str, Any],
    rerun: pd.DataFrame | None = None,
) -> pd.DataFrame:
    rerun = rerun if rerun is not None else job.result
    assert rerun is not None
    merged = frames.merge(result, positions, rerun, job.plan.added_columns)
    counts = merged["status"].value_counts()
    merged.attrs[frames.META_KEY] = {
        **meta,
        **rerun.attrs[frames.META_KEY],
        "counts": {str(k): int(v) for k, v in counts.items()},
        "retried_rows": len(positions),
        "retried_from": meta.get("run_id"),
    }
    history.set_last(merged)
    return merged


def _error_types(only: Iterable[str]) -> list[str]:
    kinds = [str(k) for k in ([only] if isinstance(only, str) else only)]
    known = {e.value for e in ErrorType}
    unknown = [k for k in kinds if k not in known]
    if unknown:
        raise ConfigError(f"unknown error type(s) {unknown}; known: {sorted(known)}")
    return kinds


def _check_params(params: dict[str, Any]) -> None:
    """Model parameters pass through as is; one that looks like a typo of ours is an error."""
    for name in params:
        close = get_close_matches(name, _OPTIONS, n=1, cutoff=0.8)
        if close:
            raise ConfigError(f"unknown option {name}=...; did you mean {close[0]}=...?")
