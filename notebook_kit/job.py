"""One run over a frame: wires the plan, the engine and the progress bar; builds the frames."""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import pandas as pd

from . import frame as frames
from . import history
from .config import RunConfig
from .engine import Engine
from .errors import RunError
from .progress import ProgressBar
from .providers.base import Provider
from .reporting import RunReport
from .types import RowStatus


class Job:
    """A run of `plan` on `provider`. `await job.run()` gives the result frame."""

    def __init__(
        self, plan: frames.Plan, provider: Provider, config: RunConfig, *, progress: bool
    ) -> None:
        self.plan = plan
        self.provider = provider
        self.config = config
        self.progress = progress
        self.report = RunReport(run_id=uuid.uuid4().hex[:12])
        self.engine: Engine | None = None
        self.result: pd.DataFrame | None = None

    @property
    def df(self) -> pd.DataFrame:
        """The frame so far: finished rows filled in, the others `pending`."""
        if self.result is not None:
            return self.result
        results = self.engine.results if self.engine else {}
        return frames.build(self.plan, results, unfinished=RowStatus.PENDING)

    async def run(self) -> pd.DataFrame:
        started = time.time()
        engine = Engine(self.provider, self.config, total=len(self.plan.frame), report=self.report)
        self.engine = engine
        try:
            async with ProgressBar(engine.stats, enabled=self.progress):
                await engine.run(self.plan.requests(self.config.params))
        except (asyncio.CancelledError, RunError) as exc:
            result = self._finish(engine, started)
            if isinstance(exc, RunError):
                exc.partial = result
            raise
        return self._finish(engine, started)

    def _finish(self, engine: Engine, started: float) -> pd.DataFrame:
        result = frames.build(self.plan, engine.results, reason=engine.stop_reason)
        result.attrs[frames.META_KEY] = self._metadata(engine, result, started)
        self.result = result
        history.remember(history.RunRecord(self.report, self.provider, self.config), result)
        return result

    def _metadata(self, engine: Engine, result: pd.DataFrame, started: float) -> dict[str, Any]:
        """Small, JSON-safe facts about the run (pandas copies attrs on every operation)."""
        limits, stats = self.config.limits, engine.stats
        return {
            "version": _version("notebook_kit"),
            "run_id": self.report.run_id,
            "provider": self.provider.name,
            "provider_settings": self.provider.describe(),
            "model": self.config.model,
            "params": _json_safe(self.config.params),
            **self.plan.describe(),
            "columns": self.plan.added_columns,
            "concurrency": limits.concurrency,
            "rpm": limits.rpm,
            "tpm": limits.tpm,
            "max_attempts": self.config.retry.max_attempts,
            "timeout": self.config.timeout,
            "counts": {str(k): int(v) for k, v in result["status"].value_counts().items()},
            "requests": stats.requests,
            "input_tokens": stats.input_tokens,
            "output_tokens": stats.output_tokens,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "wall_s": round(time.time() - started, 3),
            "stopped": engine.stop_reason,
            "libraries": {name: _version(name) for name in ("openai", "anthropic", "pandas")},
        }


def _json_safe(params: dict[str, Any]) -> dict[str, Any]:
    safe: dict[str, Any] = {}
    for key, value in params.items():
        try:
            json.dumps(value)
        except TypeError:
            value = repr(value)
        safe[key] = value
    return safe


@functools.cache
def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None
