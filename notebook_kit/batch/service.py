"""What a provider's batch service offers a run, the limits of one batch, and the service
of each provider that has one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import CallError, ConfigError
from ..providers import AnthropicProvider, DemoProvider, OpenAIProvider, Provider
from ..types import BatchStatus, Completion, ErrorType, Request

Outcome = Completion | CallError  # what a batch says of one row
MB = 1_000_000


@dataclass(frozen=True)
class BatchLimit:
    """What one batch may hold: requests, and bytes of input (`envelope`: bytes around
    the items, such as Anthropic's `{"requests": [...]}`)."""

    requests: int
    bytes: int
    envelope: int = 0


# Per provider (OpenAI: 50,000 requests in an input file of at most 200 MB; Anthropic:
# 100,000 requests in a create call of at most 256 MB). A larger job is split.
BATCH_LIMITS: dict[str, BatchLimit] = {
    "openai": BatchLimit(requests=50_000, bytes=200 * MB),
    "anthropic": BatchLimit(requests=100_000, bytes=256 * MB, envelope=16),
    "demo": BatchLimit(requests=100_000, bytes=256 * MB),
}
# SDK options that are no part of a request's body: a batch cannot carry them
NOT_IN_A_BATCH = ("extra_headers", "extra_query", "timeout")


class BatchService(Protocol):
    """One provider's batch API, for one run."""

    poll_s: float  # the first wait between two polls

    async def check(self) -> None:
        """Raise `ConfigError` when the server has no batch API (before anything is sent)."""
        ...

    def encode(self, custom_id: str, request: Request) -> bytes:
        """The request as one item of a batch (a JSONL line); `CallError` if it cannot be."""
        ...

    async def submit(self, items: Sequence[bytes], *, run_id: str, claim: str) -> BatchStatus:
        """Create one batch of `items` (never retried: a lost reply would make two), tagged
        with the run and the claim it was written down under."""
        ...

    async def find(self, claim: str) -> BatchStatus | None:
        """The batch created under `claim`, if the provider can tell (OpenAI's metadata)."""
        ...

    async def poll(self, batch_id: str) -> BatchStatus: ...

    async def results(self, batch_id: str, model: str | None) -> dict[str, Outcome]:
        """The outcome of each request the ended batch answered, by custom id."""
        ...

    async def cancel(self, batch_id: str) -> None: ...


def split(sizes: Sequence[int], limit: BatchLimit) -> list[range]:
    """Consecutive parts of items of these sizes (bytes), each within `limit`."""
    parts: list[range] = []
    room = limit.bytes - limit.envelope
    start, used = 0, 0
    for index, size in enumerate(sizes):
        if index > start and (index - start >= limit.requests or used + size > room):
            parts.append(range(start, index))
            start, used = index, 0
        used += size
    if start < len(sizes):
        parts.append(range(start, len(sizes)))
    return parts


def check_batch_params(params: Mapping[str, Any]) -> None:
    """`ConfigError` for an SDK option a batch's items cannot carry."""
    for name in NOT_IN_A_BATCH:
        if name in params:
            raise ConfigError(
                f"{name}=... is an option of an HTTP request, and a batch job sends none per "
                'row: leave it out for mode="batch"'
            )


def open_service(provider: Provider, *, home: Path) -> AbstractAsyncContextManager[BatchService]:
    """The batch service of `provider`; `home`: the kit's folder (the demo keeps its batches
    there, as a provider would on its side). `ConfigError` for a provider with none."""
    if isinstance(provider, OpenAIProvider):
        from .openai_batches import OpenAIBatches

        return OpenAIBatches.opened(provider)
    if isinstance(provider, AnthropicProvider):
        from .anthropic_batches import AnthropicBatches

        return AnthropicBatches.opened(provider)
    if isinstance(provider, DemoProvider):
        from .demo_batches import DemoBatches

        return DemoBatches.opened(provider, home / "demo_batches")
    raise ConfigError(
        f'provider {provider.name!r} has no batch mode: mode="batch" works with "openai", '
        '"anthropic" and "demo"'
    )


LOST = "batch_lost"  # the error code of a batch the provider no longer has (stored "lost")
# A failed batch's error code (OpenAI's `errors.data[].code`), as the error type its rows get.
FAILED_BATCH = {
    "model_not_found": ErrorType.NOT_FOUND,
    "invalid_api_key": ErrorType.AUTH,
    "insufficient_quota": ErrorType.QUOTA,
    "billing_hard_limit_reached": ErrorType.QUOTA,
    LOST: ErrorType.SERVER,  # deleted at the provider mid-run: worth sending again
}


def unanswered(status: BatchStatus) -> CallError:
    """The error of a row an ended batch did not answer."""
    state = status.state
    if state == "failed":
        kind = FAILED_BATCH.get(status.error_code or "", ErrorType.BAD_REQUEST)
        return CallError(kind, f"the batch failed: {status.error or 'no reason given'}")
    if state == "expired":
        return CallError(ErrorType.EXPIRED, "the batch expired (24 h) before this row was answered")
    if state == "cancelled":
        return CallError(ErrorType.CANCELLED, "the batch was cancelled before this row ran")
    return CallError(ErrorType.INVALID_RESPONSE, "the batch ended without a result for this row")
