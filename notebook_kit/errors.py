"""The kit's errors. Row faults become data; run faults raise.

    NotebookKitError
    ├── ConfigError (ValueError)   bad arguments, found before any call is made
    │   └── MissingKeyError        no API key for the chosen provider
    ├── RunError                   the run stopped early; `.partial` is the frame so far
    │   ├── AuthError              401/403: the key is wrong or lacks access
    │   ├── QuotaError             out of credit (insufficient_quota)
    │   └── ModelNotFoundError     404: unknown model or wrong base_url
    └── CallError                  one failed request; the engine turns it into row data

Every message says what to do next, and never contains an API key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .types import ErrorType

if TYPE_CHECKING:
    import pandas as pd


class NotebookKitError(Exception):
    """Base class of every error the kit raises."""


class ConfigError(NotebookKitError, ValueError):
    """An argument is wrong; nothing was sent."""


class MissingKeyError(ConfigError):
    """The chosen provider needs an API key and none was given."""


class RunError(NotebookKitError):
    """The run stopped early. `partial` holds every finished row; the rest are `cancelled`."""

    def __init__(self, message: str, *, partial: pd.DataFrame | None = None) -> None:
        super().__init__(message)
        self.partial = partial


class AuthError(RunError):
    """The server refused the key (401/403)."""


class QuotaError(RunError):
    """The account is out of credit; waiting will not help."""


class ModelNotFoundError(RunError):
    """The server does not know the model (404)."""


RUN_ERRORS: dict[ErrorType, type[RunError]] = {
    ErrorType.AUTH: AuthError,
    ErrorType.QUOTA: QuotaError,
    ErrorType.NOT_FOUND: ModelNotFoundError,
}

RETRYABLE: frozenset[ErrorType] = frozenset(
    {
        ErrorType.RATE_LIMIT,
        ErrorType.TIMEOUT,
        ErrorType.SERVER,
        ErrorType.CONNECTION,
        ErrorType.INVALID_RESPONSE,
    }
)


class CallError(NotebookKitError):
    """One request failed. Providers raise it; the engine retries it or records it on the row."""

    def __init__(
        self,
        error_type: ErrorType,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.status = status
        self.retry_after = retry_after
        self.request_id = request_id
        self.input_tokens = input_tokens  # billed before the request failed (a cut stream)
        self.output_tokens = output_tokens

    def with_note(self, note: str) -> CallError:
        """The same error, its message followed by `note`."""
        return CallError(
            self.error_type,
            f"{self}{note}",
            status=self.status,
            retry_after=self.retry_after,
            request_id=self.request_id,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
        )

    @property
    def retryable(self) -> bool:
        """Whether another attempt may succeed."""
        return self.error_type in RETRYABLE

    @property
    def fatal(self) -> bool:
        """Whether the whole run must stop (no other row can succeed either)."""
        return self.error_type in RUN_ERRORS
