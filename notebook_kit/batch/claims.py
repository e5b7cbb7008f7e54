"""A batch another run claimed (is creating, or died creating): waited for until it exists,
adopted from the provider when its run died after creating it, or dropped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from ..types import BatchStatus
from .parts import last_known
from .service import BatchService
from .store import BatchStore, StoredBatch


async def claimed(
    store: BatchStore,
    service: BatchService,
    claim: str,
    *,
    pause: Callable[[], Awaitable[None]],
    stopped: Callable[[], bool],
) -> BatchStatus | None:
    """The claimed batch once it exists; None if it never will (its run gave up, or died
    before the provider made it; or this run stops while waiting)."""
    while True:
        stored = await asyncio.to_thread(store.get, claim)
        if stored is None:
            return None
        if not stored.claimed:
            return last_known(stored)
        if not stored.claim_alive(time.time()):
            return await _adopt(store, service, stored)
        if stopped():
            return None
        await pause()


async def _adopt(
    store: BatchStore, service: BatchService, claim: StoredBatch
) -> BatchStatus | None:
    """A dead run's claim: its batch, if the provider has one under it; else dropped."""
    found = await service.find(claim.batch_id)
    if found is None:
        await asyncio.to_thread(store.drop, claim.batch_id)
        return None
    created = replace(
        claim, batch_id=found.batch_id, state=found.state, expires_at=found.expires_at
    )
    await asyncio.to_thread(store.settle_claim, claim.batch_id, created)
    return found
