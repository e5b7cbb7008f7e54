"""OpenAI's Batch API: a JSONL file of chat completion requests, uploaded with
`files.create(purpose="batch")`, run by `batches.create`, read back from its output and error
files (in no particular order: matched by custom id)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import CallError, ConfigError
from ..providers.openai_chat import _completion, response_format
from ..providers.replies import invalid, label, token_count
from ..providers.status import ErrorBody, status_error
from ..secrets import Redactor
from ..types import BatchStatus, ErrorType, Request
from .sdk_batches import SDKBatches, json_line
from .service import Outcome

ENDPOINT = "/v1/chat/completions"
STATES = {
    "validating": "queued",
    "in_progress": "running",
    "finalizing": "finishing",
    "completed": "done",
    "failed": "failed",
    "expired": "expired",
    "cancelling": "cancelling",
    "cancelled": "cancelled",
}
WAVE_CODE = "token_limit_exceeded"  # too many tokens enqueued: submit once others end


class OpenAIBatches(SDKBatches):
    """The Batch API of one OpenAI account (or a compatible server that has it)."""

    sdk = "openai"
    client_class = "AsyncOpenAI"

    async def check(self) -> None:
        try:
            await self._call(self._client.batches.list(limit=1))
        except CallError as exc:
            if exc.error_type is not ErrorType.NOT_FOUND:
                raise
            where = self._base_url or "api.openai.com"
            raise ConfigError(
                f"the server at {where} has no batch API (404 on /v1/batches): run it online "
                '(mode="online")'
            ) from None

    def encode(self, custom_id: str, request: Request) -> bytes:
        params = dict(request.params)
        extra = params.pop("extra_body", None)
        body: dict[str, Any] = {"model": request.model, "messages": request.messages, **params}
        if isinstance(extra, dict):
            body.update(extra)
        if request.schema is not None:
            body["response_format"] = response_format(request.schema)
        line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
        return json_line(line)

    async def submit(self, items: Sequence[bytes], *, run_id: str, claim: str) -> BatchStatus:
        data = b"\n".join(items) + b"\n"
        upload = await self._call(
            self._client.files.create(file=(f"notebook_kit-{run_id}.jsonl", data), purpose="batch")
        )
        once = self._client.with_options(max_retries=0)  # a lost reply must not make two
        batch = await self._call(
            once.batches.create(
                input_file_id=upload.id,
                endpoint=ENDPOINT,
                completion_window="24h",
                metadata={"notebook_kit_run": run_id, "notebook_kit_claim": claim},
            )
        )
        return self._status(batch, total=len(items))

    async def find(self, claim: str) -> BatchStatus | None:
        page = await self._call(self._client.batches.list(limit=100))  # the newest first
        for batch in getattr(page, "data", None) or []:
            metadata = getattr(batch, "metadata", None)
            if isinstance(metadata, dict) and metadata.get("notebook_kit_claim") == claim:
                return self._status(batch)
        return None

    async def poll(self, batch_id: str) -> BatchStatus:
        return self._status(await self._call(self._client.batches.retrieve(batch_id)))

    async def results(self, batch_id: str, model: str | None) -> dict[str, Outcome]:
        batch = await self._call(self._client.batches.retrieve(batch_id))
        stand_in = Request(key=-1, messages=[], model=model)
        outcomes: dict[str, Outcome] = {}
        for file_id in (
            getattr(batch, "error_file_id", None),
            getattr(batch, "output_file_id", None),
        ):
            if not isinstance(file_id, str) or not file_id:
                continue
            content = await self._call(self._client.files.content(file_id))
            for line in content.content.splitlines():
                read = self._read(line, stand_in)
                if read is not None and (
                    read[0] not in outcomes or isinstance(outcomes[read[0]], CallError)
                ):
                    outcomes[read[0]] = read[1]  # a reply beats an error line for the same id
        return outcomes

    async def cancel(self, batch_id: str) -> None:
        await self._call(self._client.batches.cancel(batch_id))

    def _status(self, batch: Any, total: int | None = None) -> BatchStatus:
        counts = getattr(batch, "request_counts", None)
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        codes = [label(getattr(e, "code", None)) for e in errors if e is not None]
        first = errors[0] if errors else None
        message = label(getattr(first, "message", None)) if first is not None else None
        line = getattr(first, "line", None) if first is not None else None
        error = None
        if first is not None:
            error = f"{codes[0] or 'error'}: {message or 'no message'}"
            error += f" (line {line})" if isinstance(line, int) else ""
        batch_id = label(getattr(batch, "id", None))
        if batch_id is None:
            raise invalid("malformed batch: no id", None)
        return BatchStatus(
            batch_id=batch_id,
            state=STATES.get(label(getattr(batch, "status", None)) or "", "running"),
            total=token_count(getattr(counts, "total", None)) or total or 0,
            done=token_count(getattr(counts, "completed", None)) or 0,
            failed=token_count(getattr(counts, "failed", None)) or 0,
            created=_seconds(getattr(batch, "created_at", None)),
            expires_at=_seconds(getattr(batch, "expires_at", None)),
            error=self._redact(error)[:300] if error else None,
            error_code=codes[0] if codes else None,
            resubmit=WAVE_CODE in codes,
        )

    def _read(self, line: bytes, stand_in: Request) -> tuple[str, Outcome] | None:
        """One line of an output or error file: its custom id and outcome (None: no id)."""
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            return None
        custom_id = label(record.get("custom_id")) if isinstance(record, dict) else None
        if custom_id is None:
            return None
        response, error = record.get("response"), record.get("error")
        if isinstance(response, dict):
            status, body = response.get("status_code"), response.get("body")
            request_id = label(response.get("request_id"))
            if status == 200 and isinstance(body, dict) and body.get("error") is None:
                try:
                    return custom_id, _completion(body, stand_in, request_id, None)
                except CallError as exc:
                    return custom_id, exc
            if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
                return custom_id, status_error(
                    status, body, request_id=request_id, redact=self._redact
                )
        if isinstance(error, dict):
            return custom_id, row_error(ErrorBody.read({"error": error}), self._redact)
        return custom_id, invalid("malformed batch result: no response and no error", None)


def row_error(info: ErrorBody, redact: Redactor) -> CallError:
    """A row the batch could not run (its `error` field): expired, cancelled, or another
    reason the batch service gives."""
    code = (info.code or info.type or "").lower()
    text = redact(info.summary(0, "no message"))[:300]
    if "expired" in code:
        return CallError(ErrorType.EXPIRED, f"the batch expired before this row ran: {text}")
    if "cancel" in code:
        return CallError(
            ErrorType.CANCELLED, f"the batch was cancelled before this row ran: {text}"
        )
    return CallError(ErrorType.SERVER, f"the batch could not run this row: {text}")


def _seconds(value: object) -> float | None:
    count = token_count(value)
    return float(count) if count is not None else None
