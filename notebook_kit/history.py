"""What recent runs left behind in this process: the last frame, reports, run settings.

Kept in memory only (the provider objects hold keys, which are never written anywhere).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from .config import RunConfig
    from .providers.base import Provider
    from .reporting import RunReport
    from .steps import Stage

KEEP = 32  # runs remembered for `report()` and `retry_failed()`


@dataclass(frozen=True)
class RunRecord:
    report: RunReport
    provider: Provider
    config: RunConfig


@dataclass(frozen=True)
class PipelineRecord:
    report: RunReport
    stages: list[Stage]  # settled: providers (with their keys) and configs
    options: dict[str, Any] = field(repr=False)  # the pipeline's options (may hold a key)


_runs: OrderedDict[str, RunRecord | PipelineRecord] = OrderedDict()
_last_frame: list[pd.DataFrame] = []


def remember(record: RunRecord | PipelineRecord, frame: pd.DataFrame) -> None:
    _runs[record.report.run_id] = record
    while len(_runs) > KEEP:
        _runs.popitem(last=False)
    set_last(frame)


def set_last(frame: pd.DataFrame) -> None:
    _last_frame[:] = [frame]


def lookup(run_id: str | None) -> RunRecord | PipelineRecord | None:
    return _runs.get(run_id) if run_id else None


def last_frame() -> pd.DataFrame | None:
    return _last_frame[0] if _last_frame else None


def last_record() -> RunRecord | PipelineRecord | None:
    return next(reversed(_runs.values()), None)


def report_of(result: pd.DataFrame) -> RunReport:
    """The run report of a result frame, while this process remembers its run."""
    meta = result.attrs.get("notebook_kit") or {}
    record = lookup(meta.get("run_id"))
    if record is None:
        raise ConfigError("no report for this frame in this process (reports live in memory)")
    return record.report
