"""What the OpenAI and Anthropic batch services share: a control client of the official SDK
(its own retries for these few calls, none for creating a batch) whose errors become
`CallError`s with the same types and masked keys as a row's, and the JSONL item."""

from __future__ import annotations

import importlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Self

from ..errors import CallError
from ..providers.base import sdk_error
from ..secrets import Redactor
from ..types import ErrorType

CONTROL_TIMEOUT_S = 600.0  # an upload of 200 MB may take minutes
CONTROL_RETRIES = 2  # the SDK's own retries of a poll, a download, a cancel


class SDKBatches:
    """A batch service over one SDK client, opened for a run."""

    poll_s = 10.0
    sdk: ClassVar[str]  # the SDK module: "openai", "anthropic"
    client_class: ClassVar[str]  # its async client

    def __init__(self, client: Any, sdk: Any, redact: Redactor, base_url: str | None) -> None:
        self._client = client
        self._sdk = sdk
        self._redact = redact
        self._base_url = base_url

    @classmethod
    @asynccontextmanager
    async def opened(cls, provider: Any) -> AsyncIterator[Self]:
        """A client on the provider's key and server, closed when the run ends."""
        sdk = importlib.import_module(cls.sdk)
        client = getattr(sdk, cls.client_class)(
            api_key=provider._api_key.reveal(),
            base_url=provider._base_url,
            max_retries=CONTROL_RETRIES,
            timeout=CONTROL_TIMEOUT_S,
        )
        try:
            yield cls(client, sdk, provider.redact, provider._base_url)
        finally:
            await client.close()

    async def _call(self, call: Any) -> Any:
        """The value of an SDK call, or the `CallError` its failure means (raised outside
        the `except`: the SDK's exception holds the request's headers)."""
        try:
            return await call
        except Exception as exc:
            error = sdk_error(exc, self._sdk, self._redact)
            if error is None:
                raise
        raise error


def json_line(record: dict[str, Any]) -> bytes:
    """One JSONL line, or `CallError` for a row JSON cannot carry."""
    try:
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        kind = type(exc).__name__
        raise CallError(
            ErrorType.INVALID_INPUT, f"the row cannot be written into a batch ({kind})"
        ) from None
