"""Creating one batch without ever losing it: claimed in the jobs table first, created once
(a lost reply is looked up, never sent again), then written down under its id."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from dataclasses import replace

from ..errors import CallError, RunError
from ..types import BatchStatus, ErrorType
from .parts import Part
from .service import BatchService
from .store import CLAIMED, BatchStore, StoredBatch

# a create that failed this way may have reached the provider: look it up before giving up
UNSURE = frozenset(
    {ErrorType.CONNECTION, ErrorType.TIMEOUT, ErrorType.SERVER, ErrorType.INVALID_RESPONSE}
)


class Submitter:
    """Creates a run's batches on one service, each written down in `store`."""

    def __init__(
        self,
        service: BatchService,
        store: BatchStore,
        *,
        provider: str,
        account: str,
        run_id: str,
        base_url: str | None,
    ) -> None:
        self._service = service
        self._store = store
        self._provider = provider
        self._account = account
        self._run_id = run_id
        self._base_url = base_url
        self._claims = 0

    async def submit(self, part: Part) -> BatchStatus:
        """The part's batch, created and written down. `CallError`: the provider refused it
        (nothing was created); `RunError`: the jobs table cannot be written."""
        self._claims += 1
        claim = StoredBatch(
            batch_id=f"claim-{self._run_id}-{self._claims}",
            provider=self._provider,
            account=self._account,
            run_id=self._run_id,
            model=part.model,
            rows=len(part.rows),
            state=CLAIMED,
            created=time.time(),
            settings=json.dumps(
                {"base_url": self._base_url, "pid": os.getpid(), "host": socket.gethostname()}
            ),
        )
        try:
            await asyncio.to_thread(self._store.record, claim, list(part.prints.items()))
        except Exception as exc:
            raise RunError(
                f"could not write down a batch before creating it in {self._store.path} "
                f"({type(exc).__name__}: {exc}); nothing was sent. Free some space or choose "
                'another file (cache="path.sqlite")'
            ) from None
        status = await self._create(part, claim.batch_id)
        created = replace(
            claim,
            batch_id=status.batch_id,
            state=status.state,
            created=status.created or claim.created,
            expires_at=status.expires_at,
        )
        try:
            await asyncio.to_thread(self._store.settle_claim, claim.batch_id, created)
        except Exception as exc:
            raise RunError(await self._unwritten(status.batch_id, exc)) from None
        return status

    async def _create(self, part: Part, claim: str) -> BatchStatus:
        try:
            return await self._service.submit(part.items, run_id=self._run_id, claim=claim)
        except CallError as exc:
            found = None
            if exc.error_type in UNSURE:  # the batch may exist all the same
                with contextlib.suppress(CallError):
                    found = await self._service.find(claim)
            if found is not None:
                return found
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._store.drop, claim)
            raise

    async def _unwritten(self, batch_id: str, exc: Exception) -> str:
        """The batch exists but is not written down: cancel it (it would be paid for and
        never read), and say what became of it."""
        why = f"could not write down batch {batch_id} in {self._store.path} ({exc})"
        try:
            await self._service.cancel(batch_id)
        except CallError as failed:
            return f"{why}, and cancelling it failed too ({failed}): cancel it at the provider"
        return f"{why}; it was cancelled, so that no later run pays for it twice"
