"""Anthropic's Message Batches: requests with custom ids in one `messages.batches.create`,
polled by `processing_status`, read from the results file the SDK finds at `results_url`
(in no particular order: matched by custom id)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import CallError
from ..providers.anthropic_messages import _completion, output_format, split_system
from ..providers.replies import invalid, label, token_count
from ..providers.status import ErrorBody, status_error
from ..types import BatchStatus, ErrorType, Request
from .sdk_batches import SDKBatches, json_line
from .service import Outcome

# An errored row's error type, as the HTTP status the same error has online.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class AnthropicBatches(SDKBatches):
    """The Message Batches API of one Anthropic account."""

    sdk = "anthropic"
    client_class = "AsyncAnthropic"

    async def check(self) -> None:
        return None  # Anthropic's API always has batches; a 404 at create says otherwise

    def encode(self, custom_id: str, request: Request) -> bytes:
        params = dict(request.params)
        extra = params.pop("extra_body", None)
        system, messages = split_system(request.messages)
        body: dict[str, Any] = {"model": request.model, "messages": messages, **params}
        if system:
            body["system"] = system
        if isinstance(extra, dict):
            body.update(extra)
        if request.schema is not None:
            body["output_config"] = {"format": output_format(request.schema)}
        return json_line({"custom_id": custom_id, "params": body})

    async def submit(self, items: Sequence[bytes], *, run_id: str, claim: str) -> BatchStatus:
        requests = [json.loads(item) for item in items]
        once = self._client.with_options(max_retries=0)  # a lost reply must not make two
        batch = await self._call(once.messages.batches.create(requests=requests))
        return self._status(batch, total=len(items))

    async def find(self, claim: str) -> BatchStatus | None:
        return None  # Message Batches carry no metadata to find one by

    async def poll(self, batch_id: str) -> BatchStatus:
        return self._status(await self._call(self._client.messages.batches.retrieve(batch_id)))

    async def results(self, batch_id: str, model: str | None) -> dict[str, Outcome]:
        decoder = await self._call(self._client.messages.batches.results(batch_id))
        data = await self._call(decoder.http_response.aread())  # read as is, odd lines too
        stand_in = Request(key=-1, messages=[], model=model)
        outcomes: dict[str, Outcome] = {}
        for line in data.splitlines():
            read = self._read(line, stand_in)
            if read is not None and read[0] not in outcomes:
                outcomes[read[0]] = read[1]
        return outcomes

    async def cancel(self, batch_id: str) -> None:
        await self._call(self._client.messages.batches.cancel(batch_id))

    def _status(self, batch: Any, total: int | None = None) -> BatchStatus:
        counts = getattr(batch, "request_counts", None)
        number = {
            name: token_count(getattr(counts, name, None)) or 0
            for name in ("processing", "succeeded", "errored", "canceled", "expired")
        }
        status = label(getattr(batch, "processing_status", None))
        if status == "ended":
            cancelled = getattr(batch, "cancel_initiated_at", None) is not None
            state = "cancelled" if cancelled else "expired" if number["expired"] else "done"
        else:
            state = "cancelling" if status == "canceling" else "running"
        batch_id = label(getattr(batch, "id", None))
        if batch_id is None:
            raise invalid("malformed batch: no id", None)
        return BatchStatus(
            batch_id=batch_id,
            state=state,
            total=sum(number.values()) or total or 0,
            done=number["succeeded"],
            failed=number["errored"] + number["canceled"] + number["expired"],
            created=_timestamp(getattr(batch, "created_at", None)),
            expires_at=_timestamp(getattr(batch, "expires_at", None)),
        )

    def _read(self, line: bytes, stand_in: Request) -> tuple[str, Outcome] | None:
        """One line of the results: its custom id and outcome (None: no id)."""
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            return None
        custom_id = label(record.get("custom_id")) if isinstance(record, dict) else None
        if custom_id is None:
            return None
        result = record.get("result")
        kind = label(result.get("type")) if isinstance(result, dict) else None
        if kind == "succeeded" and isinstance(result, dict):
            message = result.get("message")
            if not isinstance(message, dict):
                return custom_id, invalid("malformed batch result: no message", None)
            try:
                return custom_id, _completion(message, stand_in, label(message.get("id")), None)
            except CallError as exc:
                return custom_id, exc
        if kind == "errored" and isinstance(result, dict):
            error = result.get("error")
            info = ErrorBody.read(error)
            status = ERROR_STATUS.get(info.type or "", 500)
            return custom_id, status_error(status, error, redact=self._redact)
        if kind == "expired":
            return custom_id, CallError(
                ErrorType.EXPIRED, "the batch expired (24 h) before this row was answered"
            )
        if kind == "canceled":
            return custom_id, CallError(
                ErrorType.CANCELLED, "the batch was cancelled before this row ran"
            )
        return custom_id, invalid(f"malformed batch result: type {kind!r}", None)


def _timestamp(value: object) -> float | None:
    """A time the SDK gives as a datetime (or an RFC 3339 string from an odd server)."""
    stamp = getattr(value, "timestamp", None)
    if callable(stamp):
        try:
            return float(stamp())
        except (TypeError, ValueError, OverflowError):
            return None
    return None
