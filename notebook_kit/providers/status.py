"""What an HTTP error reply means: its kind (from the status and the body's codes), how long
it asks to wait, and one line of text: the server's message, the field it names, its type;
and what any reply's rate-limit headers say is left of the quota."""

from __future__ import annotations

import email.utils
import http
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from ..errors import CallError
from ..retry import sane_seconds
from ..secrets import Redactor
from ..types import ErrorType, RateInfo

TEXT_CHARS = 200  # of the server's message (and of the field and type) in the error column
QUOTA_CODES = frozenset({"insufficient_quota"})  # and every code or type that names billing
FILTER_CODES = frozenset({"content_filter", "content_policy_violation"})
# Anthropic's out-of-credit reply is a 400 invalid_request_error: no code says it, only this.
CREDIT_TOO_LOW = "credit balance is too low"


@dataclass(frozen=True)
class ErrorBody:
    """What an error body says, whatever its shape: OpenAI's and Anthropic's envelopes,
    RFC 7807 problems (Prism's `detail` and `validation`), FastAPI's `detail` list, Vertex's
    `status`, Ollama's `{"error": "..."}`, or text that is not JSON."""

    message: str | None = None
    field: str | None = None
    type: str | None = None
    code: str | None = None

    @classmethod
    def read(cls, body: object) -> ErrorBody:
        if isinstance(body, list) and body:
            body = body[0]
        if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
            body = body["error"]
        if isinstance(body, str):
            return cls(message=_clean(body))
        if not isinstance(body, Mapping):
            return cls()
        problem = _first_problem(body)
        message = _text(body, "message", "detail", "title", "msg", "error")
        field = _text(body, "param") or _location(problem)
        detail = _text(problem, "message", "msg")
        if message is None:
            message = detail
        elif detail is not None:
            field = f"{field}: {detail}" if field else detail
        details = body.get("details")
        code = _label(body.get("code")) or _label(
            details.get("error_code") if isinstance(details, Mapping) else None
        )
        kind = _text(body, "type", "status") or _text(problem, "type")
        return cls(message, field, kind and kind.rsplit("#", 1)[-1].rsplit("/", 1)[-1], code)

    def summary(self, status: int, fallback: str) -> str:
        """The message (or `fallback`), then the field, type and code the body names."""
        details = [f"field: {self.field}"] if self.field else []
        details += [f"type: {self.type}"] if self.type else []
        if self.code and self.code not in (self.type, str(status)):
            details.append(f"code: {self.code}")
        return (self.message or fallback) + (f" ({'; '.join(details)})" if details else "")

    def kind(self, status: int) -> ErrorType:
        """The error type of an HTTP `status` with this body: codes decide, not words."""
        tags = {tag.lower() for tag in (self.type, self.code) if tag}
        if status == 402 or any(tag in QUOTA_CODES or "billing" in tag for tag in tags):
            return ErrorType.QUOTA
        if status == 400 and CREDIT_TOO_LOW in (self.message or "").lower():
            return ErrorType.QUOTA
        if status == 429:
            return ErrorType.RATE_LIMIT
        if status in (401, 403):
            return ErrorType.AUTH
        if status == 404:
            return ErrorType.NOT_FOUND
        if status == 408:
            return ErrorType.TIMEOUT
        if status == 409 or status >= 500:
            return ErrorType.SERVER
        if tags & FILTER_CODES:
            return ErrorType.CONTENT_FILTER
        return ErrorType.BAD_REQUEST


def status_error(
    status: int,
    body: object,
    *,
    headers: Mapping[str, str] | None = None,
    request_id: str | None = None,
    redact: Redactor | None = None,
) -> CallError:
    """The `CallError` for an HTTP error reply with `body` (decoded JSON, or text). Keys are
    masked in the whole body before any text is cut, so no cut leaves a piece of a key."""
    info = ErrorBody.read(_redacted(body, redact) if redact else body)
    kind = info.kind(status)
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "no message"
    text = f"HTTP {status}: {info.summary(status, reason)}"
    return CallError(
        kind,
        redact(text) if redact else text,
        status=status,
        retry_after=retry_after(headers) if kind is ErrorType.RATE_LIMIT else None,
        request_id=request_id,
    )


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


def _redacted(body: object, redact: Redactor) -> object:
    """`body` with every text in it (keys of mappings too) passed through `redact`."""
    if isinstance(body, str):
        return redact(body)
    if isinstance(body, Mapping):
        return {_redacted(k, redact): _redacted(v, redact) for k, v in body.items()}
    if isinstance(body, list):
        return [_redacted(item, redact) for item in body]
    return body


def _clean(text: str) -> str | None:
    """`text` on one line, cut to `TEXT_CHARS`; None when nothing is left."""
    return " ".join(text.split())[:TEXT_CHARS] or None


def _text(body: Mapping[str, object], *names: str) -> str | None:
    """The first of `names` that holds text."""
    for name in names:
        value = body.get(name)
        if isinstance(value, str) and (text := _clean(value)):
            return text
    return None


def _label(value: object) -> str | None:
    """A code: text, or a number as some servers send it (Vertex, vLLM)."""
    if isinstance(value, int | str) and not isinstance(value, bool):
        return _clean(str(value))
    return None


def _first_problem(body: Mapping[str, object]) -> Mapping[str, object]:
    """The first field-level problem: Prism's `validation`, FastAPI's `detail`, `errors`."""
    for name in ("validation", "detail", "errors"):
        problems = body.get(name)
        if isinstance(problems, list) and problems and isinstance(problems[0], Mapping):
            return problems[0]
    return {}


def _location(problem: Mapping[str, object]) -> str | None:
    """Where the problem is: `body.temperature` from ["body", "temperature"]."""
    where = problem.get("location", problem.get("loc"))
    if isinstance(where, list):
        where = ".".join(map(str, where))
    return _clean(where) if isinstance(where, str) else None


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


# The names of the quota left and of its reset: OpenAI's, then Anthropic's.
RATE_HEADERS = tuple(
    tuple(name.format(word) for name in (requests, tokens) for word in ("remaining", "reset"))
    for requests, tokens in (
        ("x-ratelimit-{}-requests", "x-ratelimit-{}-tokens"),
        ("anthropic-ratelimit-requests-{}", "anthropic-ratelimit-tokens-{}"),
    )
)


def rate_info(headers: Mapping[str, str] | None) -> RateInfo | None:
    """The quota left, from OpenAI's x-ratelimit-* or Anthropic's anthropic-ratelimit-*."""
    if not headers:
        return None
    for requests_left, requests_reset, tokens_left, tokens_reset in RATE_HEADERS:
        info = RateInfo(
            remaining_requests=_int(headers.get(requests_left)),
            requests_reset_s=_duration(headers.get(requests_reset)),
            remaining_tokens=_int(headers.get(tokens_left)),
            tokens_reset_s=_duration(headers.get(tokens_reset)),
        )
        if info.remaining_requests is not None or info.remaining_tokens is not None:
            return info
    return None
