"""Rows that need no call: answered by the cache, or by an identical row already sent.

The engine asks `lead(request)` before a row takes a slot. Rows served here go back to the
engine through the one `finish` callback, with their source ("cache" or "dedupe"); they
report attempts 0, `cached` True and cost 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from .cache import Cache, fingerprint
from .events import Source
from .types import Completion, Request, RowResult, RowStatus

log = logging.getLogger("notebook_kit")

Finish = Callable[[RowResult, Source], None]


class Reuse:
    """In-run dedupe and the persistent cache of one run."""

    def __init__(
        self, cache: Cache | None, *, provider: str, base_url: str | None, finish: Finish
    ) -> None:
        self._cache = cache
        self._provider = provider
        self._base_url = base_url
        self._finish = finish
        self._followers: dict[str, list[int]] = {}  # fingerprint -> rows waiting for its reply

    def lead(self, request: Request) -> str | None:
        """The request's key if it must be sent; None if it was served or follows."""
        print_ = self._key(request)
        followers = self._followers.get(print_)
        if followers is not None:
            followers.append(request.key)
            return None
        hit = self._cached(print_)
        if hit is not None:
            self._finish(reused(request.key, hit), "cache")
            return None
        self._followers[print_] = []
        return print_

    def settle(
        self, print_: str, request: Request, result: RowResult, completion: Completion | None
    ) -> None:
        """A leader finished: store its reply, and give its followers their results."""
        if completion is not None and self._cache is not None:
            self._cache.put(print_, self._provider, request.model or "", completion)
        for key in self._followers.pop(print_, []):
            self._finish(_follow(key, request.key, result, completion), "dedupe")

    def abandon(self, print_: str) -> None:
        """A leader that will never be sent (the run stopped): its followers stay unrun."""
        self._followers.pop(print_, None)

    async def close(self) -> None:
        """Make every stored reply durable before the run returns."""
        if self._cache is not None:
            self._cache.release()
            await asyncio.to_thread(self._cache.flush)

    def _key(self, request: Request) -> str:
        """The cache's fingerprint; without a cache, a key good within this run only (the
        rows of one plan build equal requests alike), 4x cheaper than hashing JSON."""
        if self._cache is None:
            return repr((request.model, request.messages, request.params))
        return fingerprint(
            self._provider, self._base_url, request.model, request.messages, request.params
        )

    def _cached(self, print_: str) -> Completion | None:
        """The cache's reply, or None; a cache that cannot be read is not worth a failed run."""
        if self._cache is None:
            return None
        try:
            return self._cache.get(print_)
        except Exception as exc:
            log.warning("cache lookup failed, calling the model instead: %s", exc)
            return None


def reused(key: int, completion: Completion) -> RowResult:
    """A row answered by a reply that was paid for elsewhere."""
    return RowResult(
        key=key,
        status=RowStatus.OK,
        text=completion.text,
        attempts=0,
        input_tokens=completion.input_tokens,
        output_tokens=completion.output_tokens,
        cost_usd=0.0,
        finish_reason=completion.finish_reason,
        request_id=completion.request_id,
        model=completion.model,
        cached=True,
    )


def _follow(key: int, leader: int, result: RowResult, completion: Completion | None) -> RowResult:
    """The outcome of a row that waited for an identical row's call."""
    if completion is not None:
        return reused(key, completion)
    if result.status is RowStatus.CANCELLED:
        return dataclasses.replace(result, key=key, attempts=0)
    error = f"same request as row {leader}, which failed: {result.error}"
    return dataclasses.replace(result, key=key, attempts=0, error=error, latency_s=None)
