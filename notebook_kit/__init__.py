"""notebook_kit: many LLM calls over a pandas DataFrame, concurrently, safely and visibly.

    import notebook_kit as kit
    result = await kit.run_df(df, "prompt")

Names are imported on first use, so `import notebook_kit` stays light and the engine can
be imported without pandas, tqdm, widgets or SDKs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import (
        cache_info,
        clear_cache,
        controls,
        estimate,
        last_job,
        last_report,
        last_result,
        report,
        retry_failed,
        run_df,
        run_df_sync,
        start,
    )
    from .cache import Cache
    from .config import Limits, RetryPolicy, RunConfig
    from .errors import (
        AuthError,
        CallError,
        ConfigError,
        MissingKeyError,
        ModelNotFoundError,
        NotebookKitError,
        QuotaError,
        RunError,
    )
    from .job import Job
    from .pricing import set_price
    from .providers import AnthropicProvider, DemoProvider, OpenAIProvider, Provider
    from .reporting import RunReport
    from .session import SessionDefaults, defaults
    from .timeline import plot_timeline
    from .types import ErrorType, RowStatus

__version__ = "0.1.0"

_HOMES = {
    "AnthropicProvider": "providers",
    "AuthError": "errors",
    "CallError": "errors",
    "ConfigError": "errors",
    "DemoProvider": "providers",
    "ErrorType": "types",
    "Limits": "config",
    "MissingKeyError": "errors",
    "ModelNotFoundError": "errors",
    "NotebookKitError": "errors",
    "OpenAIProvider": "providers",
    "Provider": "providers",
    "QuotaError": "errors",
    "RetryPolicy": "config",
    "RowStatus": "types",
    "RunConfig": "config",
    "RunError": "errors",
    "RunReport": "reporting",
    "SessionDefaults": "session",
    "Cache": "cache",
    "cache_info": "api",
    "clear_cache": "api",
    "controls": "api",
    "estimate": "api",
    "set_price": "pricing",
    "defaults": "session",
    "Job": "job",
    "last_job": "api",
    "last_report": "api",
    "last_result": "api",
    "plot_timeline": "timeline",
    "report": "api",
    "retry_failed": "api",
    "run_df": "api",
    "run_df_sync": "api",
    "start": "api",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'notebook_kit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]
