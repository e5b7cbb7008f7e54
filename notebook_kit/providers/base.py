"""What every provider offers the engine, and the HTTP-status-to-error table they share."""

from __future__ import annotations

import email.utils
import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, ClassVar, Protocol

from ..clock import Clock
from ..errors import CallError
from ..retry import sane_seconds
from ..secrets import Redactor
from ..types import Completion, ErrorType, RateInfo, Request

SDK_TIMEOUT_SLACK = 30.0  # the SDK's own timeout is only a backstop behind the kit's deadline


class Session(Protocol):
    """A provider's client for one run (its connections are reused across rows)."""

    async def complete(self, request: Request) -> Completion:
        """Send one request; raise `CallError` on failure."""
        ...


class Provider(ABC):
    """One LLM service: its settings and credentials. Opens a `Session` per run."""

    name: ClassVar[str]
    key_source: ClassVar[str] = "api_key=..."  # where the key comes from, for error advice
    models: ClassVar[tuple[str, ...]] = ()  # suggestions for the panel's model menu
    default_model: str
    redact: Redactor = Redactor()

    @abstractmethod
    def session(self, *, timeout: float, clock: Clock) -> AbstractAsyncContextManager[Session]:
        """Open a client bound to the running loop; close it when the run ends."""

    def describe(self) -> dict[str, Any]:
        """The provider's settings for the result's attrs (never a key)."""
        return {}

    def advice(self, kind: ErrorType) -> str:
        """What to do after a reply that stops the run (bad key, no credit, unknown model)."""
        return {
            ErrorType.AUTH: f"check the API key ({self.key_source}) and that it may use this model",
            ErrorType.QUOTA: "add credit or raise the spending limit, then retry_failed(result)",
            ErrorType.NOT_FOUND: "check model=... (and base_url=... for a compatible server)",
        }.get(kind, "see the error above")

    def defaults(self) -> dict[str, Any]:
        """Model parameters the provider needs when the user gives none."""
        return {}


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return sane_seconds(float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return sane_seconds(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(value: str | None) -> float | None:
    """OpenAI's reset durations ("1s", "6m0s", "120ms") or Anthropic's RFC 3339 times."""
    if not value:
        return None
    parts = _DURATION.findall(value)
    if parts and "".join(n + u for n, u in parts) == value.strip():
        return sum(float(n) * _SECONDS[u] for n, u in parts)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, when.timestamp() - time.time())


def _int(value: str | None) -> int | None:
    """A count from a header; a negative or garbled one counts as absent."""
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return None
    return number if number is None or number >= 0 else None


def rate_info(headers: Mapping[str, str] | None) -> RateInfo | None:
    """The quota left, from OpenAI's x-ratelimit-* or Anthropic's anthropic-ratelimit-*."""
    if not headers:
        return None
    for requests, tokens in (
        ("x-ratelimit-{}-requests", "x-ratelimit-{}-tokens"),
        ("anthropic-ratelimit-requests-{}", "anthropic-ratelimit-tokens-{}"),
    ):
        info = RateInfo(
            remaining_requests=_int(headers.get(requests.format("remaining"))),
            requests_reset_s=_duration(headers.get(requests.format("reset"))),
            remaining_tokens=_int(headers.get(tokens.format("remaining"))),
            tokens_reset_s=_duration(headers.get(tokens.format("reset"))),
        )
        if info.remaining_requests is not None or info.remaining_tokens is not None:
            return info
    return None


QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
FILTER_CODES = frozenset({"content_filter", "content_policy_violation"})


def status_error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
    request_id: str | None = None,
) -> CallError:
    """Map an HTTP error reply to a `CallError` with a one-line, actionable message."""
    lowered = message.lower()
    out_of_credit = status == 429 and (code in QUOTA_CODES or "quota" in lowered)
    if out_of_credit or status == 402 or "credit balance" in lowered:
        kind = ErrorType.QUOTA
    elif status == 429:
        kind = ErrorType.RATE_LIMIT
    elif status in (401, 403):
        kind = ErrorType.AUTH
    elif status == 404:
        kind = ErrorType.NOT_FOUND
    elif status == 408:
        kind = ErrorType.TIMEOUT
    elif status == 409 or status >= 500:
        kind = ErrorType.SERVER
    elif code in FILTER_CODES:
        kind = ErrorType.CONTENT_FILTER
    else:
        kind = ErrorType.BAD_REQUEST
    wait = retry_after(headers) if kind is ErrorType.RATE_LIMIT else None
    text = " ".join(message.split())[:300]
    return CallError(
        kind, f"HTTP {status}: {text}", status=status, retry_after=wait, request_id=request_id
    )


def body_message(body: object, fallback: str) -> tuple[str, str | None]:
    """The `message` and `code` of an SDK error body (already unwrapped from `error`)."""
    if isinstance(body, Mapping):
        message = body.get("message")
        code = body.get("code") or body.get("type")
        return (str(message) if message else fallback), (str(code) if code else None)
    return fallback, None


def connection_text(exc: BaseException, redact: Redactor) -> str:
    """One line on why a connection failed, from the transport error under the SDK's."""
    cause = exc.__cause__ or exc.__context__
    detail = f"{type(cause).__name__}: {cause}" if cause else str(exc)
    return redact(f"connection failed ({' '.join(detail.split())[:200]})")


class SDKSession(ABC):
    """A run's client of an official SDK (openai, anthropic: same error classes).

    Subclasses send one request and read the reply; SDK errors become `CallError`s here.
    """

    def __init__(self, client: Any, sdk: Any, redact: Redactor) -> None:
        self._client = client
        self._sdk = sdk  # the SDK module, imported once per run rather than per call
        self._redact = redact

    @abstractmethod
    async def _call(self, request: Request) -> Completion:
        """Send `request` with the SDK and build the completion from its reply."""

    async def complete(self, request: Request) -> Completion:
        try:
            return await self._call(request)
        except Exception as exc:
            error = self._error(exc)
            if error is None:
                raise
        raise error  # outside `except`: no chained SDK exception (it holds the request headers)

    def _error(self, exc: Exception) -> CallError | None:
        sdk = self._sdk
        if isinstance(exc, CallError):
            return exc
        if isinstance(exc, sdk.APIStatusError):
            message, code = body_message(exc.body, exc.message)
            return status_error(
                exc.status_code,
                self._redact(message),
                code=code,
                headers=exc.response.headers,
                request_id=exc.request_id,
            )
        if isinstance(exc, sdk.APITimeoutError):
            return CallError(ErrorType.TIMEOUT, "the server did not answer in time")
        if isinstance(exc, sdk.APIConnectionError):
            return CallError(ErrorType.CONNECTION, connection_text(exc, self._redact))
        if isinstance(exc, json.JSONDecodeError | sdk.APIResponseValidationError):
            # the SDKs raise a bare JSONDecodeError for a broken 200 body
            return CallError(ErrorType.INVALID_RESPONSE, f"malformed reply: {type(exc).__name__}")
        if isinstance(exc, UnicodeEncodeError):
            return CallError(ErrorType.INVALID_INPUT, "the prompt holds text that is not UTF-8")
        return None
