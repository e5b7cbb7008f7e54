"""Frozen, keyword-only settings of a run. Change them with `dataclasses.replace`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .pricing import price_of


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How failed requests are retried (only rate limits, timeouts, 5xx, resets, bad bodies)."""

    max_attempts: int = 5  # requests sent per row at most, the first one included
    backoff_base: float = 1.0  # first backoff window in seconds; doubles per attempt
    backoff_max: float = 30.0  # longest backoff between two attempts
    retry_after_cap: float = 120.0  # a server's Retry-After longer than this is cut to it
    rate_limit_patience: float = 600.0  # seconds a row may wait out 429s; they use no attempts

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.backoff_base < 0 or self.backoff_max < 0 or self.retry_after_cap < 0:
            raise ConfigError("backoff_base, backoff_max and retry_after_cap must be >= 0")


@dataclass(frozen=True, kw_only=True)
class Limits:
    """How fast a run may go: requests in flight, and optional per-minute rates."""

    concurrency: int = 8  # requests in flight at most
    rpm: float | None = None  # requests started per minute at most
    tpm: float | None = None  # estimated tokens per minute at most (input + max_tokens)
    headroom: float = 0.97  # pace rpm/tpm at this fraction of the limit, for clock jitter
    adaptive: bool = True  # halve concurrency on 429s, raise it back as calls succeed

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {self.concurrency}")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be positive or None, got {value}")
        if not 0 < self.headroom <= 1:
            raise ConfigError(f"headroom must be in (0, 1], got {self.headroom}")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything that shapes a run except the data and the provider's credentials."""

    model: str
    limits: Limits = field(default_factory=Limits)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 120.0  # seconds per attempt
    params: dict[str, Any] = field(default_factory=dict)  # passed to the model as is
    budget_usd: float | None = None  # spend at most this much (needs max_tokens and a price)
    pause_at_budget: bool = False  # a background job pauses at the budget; a run stops

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ConfigError(f"timeout must be positive, got {self.timeout}")
        if self.budget_usd is not None and self.budget_usd < 0:
            raise ConfigError(f"budget_usd must be >= 0, got {self.budget_usd}")


def check_budget(config: RunConfig) -> None:
    """A budget can only hold if every request's cost has a known ceiling."""
    if config.budget_usd is None:
        return
    if not isinstance(config.params.get("max_tokens"), int):
        raise ConfigError(
            "budget_usd needs max_tokens=... so that each request's cost has a ceiling"
        )
    if price_of(config.model) is None:
        raise ConfigError(
            f"no price is known for model {config.model!r}, so budget_usd cannot be enforced; "
            "add one with kit.set_price(model, input=..., output=...) (USD per 1M tokens)"
        )
