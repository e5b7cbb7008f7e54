"""Which failures are retried and how long to wait between attempts (tenacity strategies)."""

from __future__ import annotations

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from .config import RetryPolicy
from .errors import CallError
from .limits import Sleep


def is_retryable(exc: BaseException) -> bool:
    """Only rate limits, timeouts, 5xx/overloaded, resets and malformed replies."""
    return isinstance(exc, CallError) and exc.retryable


class wait_for_server(wait_base):
    """The server's Retry-After when it sent one (capped), else exponential backoff with jitter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._cap = policy.retry_after_cap
        self._backoff = wait_random_exponential(
            multiplier=policy.backoff_base, max=policy.backoff_max
        )

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, CallError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), self._cap)
        return float(self._backoff(retry_state))


def retrying(policy: RetryPolicy, *, sleep: Sleep) -> AsyncRetrying:
    """A template retry object; take a `.copy()` per row that needs a retry."""
    return AsyncRetrying(
        sleep=sleep,
        stop=stop_after_attempt(policy.max_attempts),
        wait=wait_for_server(policy),
        retry=retry_if_exception(is_retryable),
        reraise=True,
    )
