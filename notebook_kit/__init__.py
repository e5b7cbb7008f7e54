"""notebook_kit: many LLM calls over a pandas DataFrame, concurrently, safely and visibly.

    import notebook_kit as kit
    result = await kit.run_df(df, "prompt")

Names are imported on first use, so `import notebook_kit` stays light and the engine can
be imported without pandas, tqdm, widgets or SDKs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # explicit re-exports, for type checkers (mypy --strict)
    from .api import (
        controls as controls,
        estimate as estimate,
        iter_rows as iter_rows,
        last_report as last_report,
        last_result as last_result,
        report as report,
        run_df as run_df,
        run_df_sync as run_df_sync,
        run_pipeline as run_pipeline,
        run_pipeline_sync as run_pipeline_sync,
        start as start,
    )
    from .cache import (
        Cache as Cache,
    )
    from .config import (
        Limits as Limits,
        RetryPolicy as RetryPolicy,
        RunConfig as RunConfig,
    )
    from .errors import (
        AuthError as AuthError,
        CallError as CallError,
        ConfigError as ConfigError,
        MissingKeyError as MissingKeyError,
        ModelNotFoundError as ModelNotFoundError,
        NotebookKitError as NotebookKitError,
        QuotaError as QuotaError,
        RunError as RunError,
    )
    from .job import (
        Job as Job,
    )
    from .options import (
        RunOptions as RunOptions,
    )
    from .pipeline_job import (
        PipelineJob as PipelineJob,
    )
    from .pricing import (
        set_price as set_price,
    )
    from .providers import (
        AnthropicProvider as AnthropicProvider,
        DemoProvider as DemoProvider,
        OpenAIProvider as OpenAIProvider,
        Provider as Provider,
    )
    from .registry import (
        jobs as jobs,
        last_job as last_job,
    )
    from .reporting import (
        RunReport as RunReport,
        Snapshot as Snapshot,
    )
    from .rerun import (
        retry_failed as retry_failed,
    )
    from .row_stream import (
        FinishedRow as FinishedRow,
    )
    from .session import (
        SessionDefaults as SessionDefaults,
        defaults as defaults,
    )
    from .steps import (
        Step as Step,
    )
    from .stored import (
        attach as attach,
        batches as batches,
        cache_info as cache_info,
        clear_cache as clear_cache,
    )
    from .structured import (
        expand as expand,
    )
    from .timeline import (
        plot_timeline as plot_timeline,
    )
    from .types import (
        ErrorType as ErrorType,
        RowStatus as RowStatus,
    )

__version__ = "0.1.0"

_HOMES = {
    "AnthropicProvider": "providers",
    "AuthError": "errors",
    "Cache": "cache",
    "CallError": "errors",
    "ConfigError": "errors",
    "DemoProvider": "providers",
    "ErrorType": "types",
    "FinishedRow": "row_stream",
    "Job": "job",
    "Limits": "config",
    "MissingKeyError": "errors",
    "ModelNotFoundError": "errors",
    "NotebookKitError": "errors",
    "OpenAIProvider": "providers",
    "PipelineJob": "pipeline_job",
    "Provider": "providers",
    "QuotaError": "errors",
    "RetryPolicy": "config",
    "RowStatus": "types",
    "RunConfig": "config",
    "RunError": "errors",
    "RunOptions": "options",
    "RunReport": "reporting",
    "SessionDefaults": "session",
    "Snapshot": "reporting",
    "Step": "steps",
    "attach": "stored",
    "batches": "stored",
    "cache_info": "stored",
    "clear_cache": "stored",
    "controls": "api",
    "defaults": "session",
    "estimate": "api",
    "expand": "structured",
    "iter_rows": "api",
    "jobs": "registry",
    "last_job": "registry",
    "last_report": "api",
    "last_result": "api",
    "plot_timeline": "timeline",
    "report": "api",
    "retry_failed": "rerun",
    "run_df": "api",
    "run_df_sync": "api",
    "run_pipeline": "api",
    "run_pipeline_sync": "api",
    "set_price": "pricing",
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
