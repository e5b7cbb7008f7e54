"""Whether a failed request is tried again, and after how long: the one place that decides.

- Only rate limits, timeouts, 5xx/overloaded, connection errors and malformed replies are
  retried (`CallError.retryable`).
- A 429 uses no attempt: a row waits out 429s for at most `rate_limit_patience` seconds,
  counted on the run's clock from its first 429. Other failures count against
  `max_attempts`.
- The wait is the server's Retry-After (capped at `retry_after_cap`; a negative, NaN or
  infinite value counts as absent), else the policy's backoff: tenacity's
  `wait_random_exponential` (full jitter), or the policy's own tenacity `wait`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, wait_random_exponential

from .clock import Clock
from .config import RetryPolicy
from .errors import CallError
from .types import ErrorType


def sane_seconds(value: float | None) -> float | None:
    """`value` if it is a finite number of seconds >= 0, else None (garbage is absent)."""
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return value


def server_wait(error: CallError) -> float | None:
    """The seconds the server asked to wait (Retry-After), or None."""
    return sane_seconds(error.retry_after)


def rate_limit_pause(error: CallError, policy: RetryPolicy) -> float:
    """How long a 429 holds back every row's next start."""
    wait = server_wait(error)
    return min(policy.backoff_base if wait is None else wait, policy.retry_after_cap)


@dataclass(slots=True)
class RowTries:
    """One row's attempts so far."""

    sent: int = 0  # requests sent (the `attempts` column)
    failed: int = 0  # failures that count against max_attempts (429s do not)
    rate_limited_since: float | None = None  # clock time of the row's first 429
    reasks: int = 0  # replies that did not fit the schema, asked again (apart from failures)


class Retrier:
    """Decides each retry of a run from its `RetryPolicy`, on the run's clock."""

    def __init__(self, policy: RetryPolicy, clock: Clock) -> None:
        self.policy = policy
        self._clock = clock
        self._backoff = policy.wait or wait_random_exponential(
            multiplier=policy.backoff_base, max=policy.backoff_max
        )
        self._tenacity = AsyncRetrying(sleep=clock.sleep, wait=self._backoff)

    def wait_before_retry(self, error: CallError, tries: RowTries) -> float | None:
        """Seconds to wait before the row's next attempt, or None: the error is final."""
        if not error.retryable:
            return None
        policy = self.policy
        if error.error_type is ErrorType.RATE_LIMIT:
            now = self._clock.now()
            if tries.rate_limited_since is None:
                tries.rate_limited_since = now
            if now - tries.rate_limited_since >= policy.rate_limit_patience:
                return None
        else:
            tries.failed += 1
            if tries.failed >= policy.max_attempts:
                return None
        wait = server_wait(error)
        if wait is not None:
            return min(wait, policy.retry_after_cap)
        return self.backoff(error, tries.sent)

    def backoff(self, error: CallError, attempt_number: int) -> float:
        """The backoff strategy's wait after the `attempt_number`-th request failed."""
        state = RetryCallState(self._tenacity, fn=None, args=(), kwargs={})
        state.attempt_number = max(1, attempt_number)
        state.set_exception((type(error), error, None))
        wait = sane_seconds(float(self._backoff(state)))
        return self.policy.backoff_max if wait is None else wait

    def give_up_note(self, error: CallError) -> str:
        """Why retrying stopped, for the row's `error` text."""
        if error.error_type is ErrorType.RATE_LIMIT:
            patience = self.policy.rate_limit_patience
            return f" (still rate limited after {patience:g} s: rate_limit_patience)"
        return ""
