"""The batch jobs the kit knows (written down in its database when they were created):
a list of them, and a job that reads one of them (`kit.attach`)."""

from __future__ import annotations

import pandas as pd

from . import frame as frames
from .batch import store_for
from .batch.parts import account, by_position, position_of
from .cache import Cache
from .config import RunConfig
from .errors import ConfigError
from .frame_job import FrameJob
from .providers import resolve


def listing(cache: Cache | None) -> pd.DataFrame:
    """Every batch job written down in the cache file (newest first), as last seen."""
    store = store_for(cache)
    batches = store.all()
    table = pd.DataFrame(
        {
            "batch_id": [b.batch_id for b in batches],
            "provider": [b.provider for b in batches],
            "model": [b.model for b in batches],
            "state": [b.state for b in batches],
            "rows": [b.rows for b in batches],
            "done": [b.done for b in batches],
            "failed": [b.failed for b in batches],
            "collected": [b.collected for b in batches],
            "created": pd.to_datetime([b.created for b in batches], unit="s", utc=True),
            "expires_at": pd.to_datetime(
                [b.expires_at if b.expires_at is not None else float("nan") for b in batches],
                unit="s",
                utc=True,
            ),
            "run_id": [b.run_id for b in batches],
        }
    )
    table.attrs["notebook_kit_batches"] = {"database": str(store.path)}
    return table


def attach_job(
    batch_id: str, *, api_key: str | None, cache: Cache | None, progress: bool
) -> FrameJob:
    """A job that waits for one batch and reads its rows: one row per request, in the
    order of their positions in the frame that made it (`position`)."""
    store = store_for(cache)
    stored = store.get(batch_id)
    if stored is None:
        raise ConfigError(
            f"no batch {batch_id!r} is written down in {store.path}: kit.batches() lists "
            "those the kit knows (pass cache=... for another database file)"
        )
    provider, _ = resolve(stored.provider, base_url=stored.base_url, api_key=api_key)
    if account(provider) != stored.account:
        raise ConfigError(
            f"batch {batch_id} was created with another API key or server: pass the "
            "api_key=... of the account that made it"
        )
    custom_ids = by_position(store.rows(batch_id))
    rows = pd.DataFrame(
        {
            "custom_id": custom_ids,
            "position": pd.array([position_of(c) for c in custom_ids], dtype="Int64"),
        }
    )
    plan = frames.plan(rows, "custom_id")
    model = stored.model or provider.default_model
    config = RunConfig(model=model, mode="batch")
    job = FrameJob(plan, provider, config, cache=cache, progress=progress)
    job.attach = stored
    return job
