"""Provider batch jobs (mode="batch"): a run's rows sent as OpenAI batches or Anthropic
message batches at half the price, written down so that no kernel restart pays twice."""

from __future__ import annotations

from ..cache import Cache, default_path
from .run import BatchRun
from .store import BatchStore

__all__ = ["BatchRun", "BatchStore", "store_for"]


def store_for(cache: Cache | None) -> BatchStore:
    """The batch tables of the run's cache file, or of the default file without a cache."""
    return BatchStore(cache.path if cache is not None else default_path())
