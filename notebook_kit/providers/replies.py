"""Reading a 200 reply whatever a server put in it.

Nothing after a successful reply may lose the row: usage that is not a clean count becomes
None, text and labels are read as far as they go. A body that is no reply (not UTF-8, not a
JSON object, an error inside a 200, the wrong shape) is `invalid_response`, and retried.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import CallError
from ..secrets import Redactor
from ..types import ErrorType
from .status import ErrorBody

MAX_TOKENS = 10**12  # a larger "count" is garbage (and would overflow the Int64 columns)


def invalid(message: str, request_id: str | None) -> CallError:
    """A reply that is no reply: worth another attempt."""
    return CallError(ErrorType.INVALID_RESPONSE, message, request_id=request_id)


def reply_json(content: bytes, request_id: str | None, redact: Redactor) -> dict[str, Any]:
    """The reply's JSON object, or `invalid` when there is none (or it is an error)."""
    try:
        body = json.loads(content.decode("utf-8"))
    except UnicodeDecodeError:
        raise invalid("malformed reply: the body is not UTF-8 text", request_id) from None
    except (ValueError, RecursionError):
        raise invalid("malformed reply: the body is not JSON", request_id) from None
    if not isinstance(body, dict):
        kind = type(body).__name__
        raise invalid(f"malformed reply: a JSON {kind}, not an object", request_id)
    if body.get("error") is not None or body.get("type") == "error":
        summary = ErrorBody.read(body).summary(200, "no message")
        raise invalid(redact(f"the server answered 200 with an error: {summary}"), request_id)
    return body


def token_count(value: object) -> int | None:
    """A token count: an int, or a clean number in other clothes (12.0, "12", " 7 ").
    None for anything else: a fraction, a negative, a bool, words, NaN, a list."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if 0 <= value <= MAX_TOKENS and value == int(value) else None


def text_of(value: object) -> str:
    """The text of reply content: a string; a list of parts (their text joined); a part
    ({"type": "text", "text": ...}; other parts such as thinking have none); a number or
    bool as JSON writes it; nothing: ""."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(map(text_of, value))
    if isinstance(value, dict):
        return text_of(value.get("text")) if value.get("type", "text") == "text" else ""
    return json.dumps(value)


def label(value: object) -> str | None:
    """A short text field (a finish reason, a model, a request id): a non-blank string."""
    return value if isinstance(value, str) and value.strip() else None


def usage_of(body: dict[str, Any], names: tuple[str, str]) -> tuple[int | None, int | None]:
    """The (input, output) token counts under `usage`, by the API's two `names`."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None, None
    return token_count(usage.get(names[0])), token_count(usage.get(names[1]))


class ReplyHeaders(Mapping[str, str]):
    """A reply's headers as the SDK shows them: any case, repeated ones joined by ", "."""

    __slots__ = ("_headers",)

    def __init__(self, headers: Any) -> None:
        self._headers = headers  # aiohttp's CIMultiDictProxy

    def get(self, name: str, default: Any = None) -> Any:
        values = self._headers.getall(name, None)
        return ", ".join(values) if values else default

    def __getitem__(self, name: str) -> str:
        value: str | None = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name.lower() for name in self._headers))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __bool__(self) -> bool:  # cheaper than counting the names
        return bool(self._headers)
