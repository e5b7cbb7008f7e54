"""SDK errors of a batch API's calls (create, retrieve, download, cancel) as `CallError`s,
with the same types, messages and masked keys as a row's request."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from ..errors import CallError
from ..providers.base import is_transport, transport_error
from ..providers.status import status_error
from ..secrets import Redactor

T = TypeVar("T")


async def guarded(call: Awaitable[T], sdk: Any, redact: Redactor) -> T:
    """The value of an SDK call, or the `CallError` its failure means (raised outside the
    `except`: the SDK's exception holds the request's headers)."""
    try:
        return await call
    except (sdk.APIStatusError, sdk.APIConnectionError) as exc:
        error = _mapped(exc, sdk, redact)
    except Exception as exc:  # a body read outside the SDK (a results file): cut mid-way
        if not is_transport(exc):
            raise
        error = transport_error(exc, redact)
    raise error


def _mapped(exc: Exception, sdk: Any, redact: Redactor) -> CallError:
    if isinstance(exc, sdk.APIStatusError):
        return status_error(
            exc.status_code,
            exc.body,
            headers=exc.response.headers,
            request_id=exc.request_id,
            redact=redact,
        )
    return transport_error(exc, redact)
