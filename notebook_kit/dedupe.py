"""Rows that need no call: answered by the cache, or by an identical row already sent.

The engine asks `lead(request)` before a row takes a slot. Rows served here go back to the
engine through the one `finish` callback, with their source ("cache" or "dedupe"); they
report attempts 0, `cached` True and cost 0.

A cache that cannot be written never fails or hangs a run: after a failed write the run
stores no more replies (each could wait out the busy timeout again; the next run tries
afresh), the wait for the last writes is bounded, and one warning a run says what happened.
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
        self._writing = cache is not None  # until a write to the cache fails in this run
        self._failures = cache.write_failures if cache is not None else 0  # before this run
        self._read_warned = False

    def lead(self, request: Request) -> str | None:
        """The request's key if it must be sent; None if it was served or follows."""
        print_ = self._key(request)
        followers = self._followers.get(print_)
        if followers is not None:
            followers.append(request.key)
            return None
        hit = self._cached(print_)
        if hit is not None and request.schema is not None:  # only valid replies are stored
            parsed, problem = request.schema.parse(hit.text)
            hit = None if problem else dataclasses.replace(hit, parsed=parsed)
        if hit is not None:
            self._finish(reused(request.key, hit), "cache")
            return None
        self._followers[print_] = []
        return print_

    def settle(
        self, print_: str, request: Request, result: RowResult, completion: Completion | None
    ) -> None:
        """A leader finished: store its reply, and give its followers their results."""
        cache = self._writable()
        if completion is not None and cache is not None:
            cache.put(print_, self._provider, request.model or "", completion)
        for key in self._followers.pop(print_, []):
            self._finish(_follow(key, request.key, result, completion), "dedupe")

    def abandon(self, print_: str) -> None:
        """A leader that will never be sent (the run stopped): its followers stay unrun."""
        self._followers.pop(print_, None)

    async def close(self) -> None:
        """Make every stored reply durable before the run returns; never wait forever."""
        cache = self._cache
        if cache is None:
            return
        cache.release()
        flushed = await asyncio.to_thread(cache.flush)
        if self._writable() is not None and not flushed:  # else a failure was reported
            log.warning(
                "gave up waiting for the writes to the cache %s: none finished in time (another "
                "process may hold its lock, or its disk does not answer). The results are in "
                "the frame; the last replies of this run may not be cached",
                cache.path,
            )

    def _writable(self) -> Cache | None:
        """The cache while this run still writes to it; after a failed write, None (and
        the run's one warning, with the file and sqlite's error)."""
        cache = self._cache
        if self._writing and cache is not None and cache.write_failures != self._failures:
            self._writing = False
            log.warning(
                "could not write the cache %s: %s. The results are in the frame, but this run "
                'stores no more replies (free space, choose another file: cache="path.sqlite", '
                "or run without a cache: cache=False)",
                cache.path,
                cache.write_error,
            )
        return cache if self._writing else None

    def _key(self, request: Request) -> str:
        """The cache's fingerprint; without a cache, a key good within this run only (the
        rows of one plan build equal requests alike), 4x cheaper than hashing JSON."""
        if self._cache is None:
            schema = request.schema.fingerprint if request.schema is not None else None
            return repr((request.model, request.messages, request.params, schema))
        return cache_key(self._provider, self._base_url, request)

    def _cached(self, print_: str) -> Completion | None:
        """The cache's reply, or None; a cache that cannot be read is not worth a failed run."""
        if self._cache is None:
            return None
        try:
            return self._cache.get(print_)
        except Exception as exc:
            if not self._read_warned:  # one warning a run, not one a row
                self._read_warned = True
                log.warning("cache lookup failed, calling the model instead: %s", exc)
            return None


def cache_key(provider: str, base_url: str | None, request: Request) -> str:
    """A request's key in the cache: everything that shapes the reply, nothing secret."""
    params = request.params
    if request.schema is not None:  # the same prompt under another schema is another request
        params = {**params, "schema": request.schema.fingerprint}
    return fingerprint(provider, base_url, request.model, request.messages, params)


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
        parsed=completion.parsed,
    )


def _follow(key: int, leader: int, result: RowResult, completion: Completion | None) -> RowResult:
    """The outcome of a row that waited for an identical row's call."""
    if completion is not None:
        return reused(key, completion)
    if result.status is RowStatus.CANCELLED:
        return dataclasses.replace(result, key=key, attempts=0)
    error = f"same request as row {leader}, which failed: {result.error}"
    return dataclasses.replace(result, key=key, attempts=0, error=error, latency_s=None)
