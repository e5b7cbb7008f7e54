"""Frozen, keyword-only settings of a run. Change them with `dataclasses.replace`.

Every value is checked when the object is made: a wrong one raises `ConfigError` naming the
setting and the range it accepts, before any request is sent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tenacity import RetryCallState

from .errors import ConfigError
from .pricing import price_of
from .secrets import MASK

if TYPE_CHECKING:
    from .structured import Schema

Wait = Callable[[RetryCallState], float]  # a tenacity wait strategy, e.g. wait_exponential()


def whole(name: str, value: object, *, minimum: int) -> int:
    """`value` if it is an int >= minimum (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


def number(name: str, value: object, *, above: float | None = None, least: float = 0.0) -> float:
    """`value` as a finite float, > above (if given) else >= least."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and above is not None:
        ok = float(value) > above  # type: ignore[arg-type]
    elif ok:
        ok = float(value) >= least  # type: ignore[arg-type]
    if not ok:
        bound = f"> {above:g}" if above is not None else f">= {least:g}"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


MODES = ("online", "batch")


def mode(value: object) -> str:
    """`value` if it names a mode: online (a request per row now) or batch (a provider's
    batch job)."""
    if value not in MODES:
        raise ConfigError(f'mode must be "online" or "batch", got {value!r}')
    return str(value)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How failed requests are retried (only rate limits, timeouts, 5xx, resets, bad bodies).

    429s use no attempts: a row waits them out for at most `rate_limit_patience` seconds.
    `wait` replaces the exponential backoff with any tenacity wait strategy; a server's
    Retry-After still wins. There is no `stop`: the two rules above are the stop rule.
    """

    max_attempts: int = 5  # requests sent per row at most (429s not counted)
    backoff_base: float = 1.0  # first backoff window in seconds; doubles per attempt
    backoff_max: float = 30.0  # longest backoff between two attempts
    retry_after_cap: float = 120.0  # a server's Retry-After longer than this is cut to it
    rate_limit_patience: float = 600.0  # seconds a row may spend waiting out 429s
    wait: Wait | None = None

    def __post_init__(self) -> None:
        whole("max_attempts", self.max_attempts, minimum=1)
        for name in ("backoff_base", "backoff_max", "retry_after_cap", "rate_limit_patience"):
            number(name, getattr(self, name))
        if self.wait is not None and not callable(self.wait):
            raise ConfigError("wait must be a tenacity wait strategy, e.g. wait_exponential()")

    def describe(self) -> dict[str, Any]:
        """The numbers, for the result's attrs (a custom `wait` is not stored)."""
        keys = ("max_attempts", "backoff_base", "backoff_max", "retry_after_cap")
        return {k: getattr(self, k) for k in (*keys, "rate_limit_patience")}


@dataclass(frozen=True, kw_only=True)
class Limits:
    """How fast a run may go: requests in flight, and optional per-minute rates."""

    concurrency: int = 8  # requests in flight at most
    rpm: float | None = None  # requests started per minute at most
    tpm: float | None = None  # estimated tokens per minute at most (input + max_tokens)
    headroom: float = 0.97  # pace rpm/tpm at this fraction of the limit, for clock jitter
    adaptive: bool = True  # lower concurrency on 429s, raise it back as calls succeed
    learn_rate: bool = True  # no rpm, no rate headers: learn a request rate from 429s

    def __post_init__(self) -> None:
        whole("concurrency", self.concurrency, minimum=1)
        for name in ("rpm", "tpm"):
            if getattr(self, name) is not None:
                number(name, getattr(self, name), above=0)
        if number("headroom", self.headroom, above=0) > 1:
            raise ConfigError(f"headroom must be in (0, 1], got {self.headroom}")
        for name in ("adaptive", "learn_rate"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything that shapes a run except the data and the provider's credentials."""

    model: str
    limits: Limits = field(default_factory=Limits)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 120.0  # seconds per attempt; streaming: the longest wait between chunks
    stream: bool = False  # read replies as they are written (time to first token, no cut)
    total_timeout: float | None = None  # streaming: a whole request at most (None: 10 x timeout)
    params: dict[str, Any] = field(default_factory=dict)  # passed to the model as is
    budget_usd: float | None = None  # spend at most this much (needs max_tokens and a price)
    pause_at_budget: bool = False  # a background job pauses at the budget; a run stops
    schema: Schema | None = None  # replies must be JSON that fits it (schema=)
    mode: str = "online"  # or "batch": the provider's batch job (half the price, <= 24 h)
    batch_poll_s: float | None = None  # batch: first wait between polls (None: the provider's)

    def __post_init__(self) -> None:
        number("timeout", self.timeout, above=0)
        mode(self.mode)
        if self.batch_poll_s is not None:
            number("batch_poll_s", self.batch_poll_s, above=0)
        if self.mode == "batch" and self.stream:
            raise ConfigError(
                "a batch job's replies are read when it ends: stream=True is for online runs"
            )
        if self.total_timeout is not None:
            number("total_timeout", self.total_timeout, above=0)
        if self.budget_usd is not None:
            number("budget_usd", self.budget_usd)

    def describe(self) -> dict[str, Any]:
        """The settings as JSON-safe facts for the result's attrs (read by `from_meta`)."""
        limits = self.limits
        return {
            "model": self.model,
            "params": json_safe(self.params),
            "concurrency": limits.concurrency,
            "rpm": limits.rpm,
            "tpm": limits.tpm,
            "adaptive": limits.adaptive,
            "learn_rate": limits.learn_rate,
            "max_attempts": self.retry.max_attempts,
            "retry": self.retry.describe(),
            "timeout": self.timeout,
            "stream": self.stream,
            "total_timeout": self.total_timeout,
            "budget_usd": self.budget_usd,
            "schema": None if self.schema is None else self.schema.name,
            "mode": self.mode,  # not read back: retry_failed re-runs online unless told
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any], *, default_model: str) -> RunConfig:
        """The config a result's attrs describe (the inverse of `describe`)."""
        retry = dict(meta.get("retry") or {})
        retry.setdefault("max_attempts", meta.get("max_attempts", RetryPolicy.max_attempts))
        return cls(
            model=meta.get("model") or default_model,
            limits=Limits(
                concurrency=meta.get("concurrency", Limits.concurrency),
                rpm=meta.get("rpm"),
                tpm=meta.get("tpm"),
                adaptive=meta.get("adaptive", True),
                learn_rate=meta.get("learn_rate", True),
            ),
            retry=RetryPolicy(**retry),
            timeout=meta.get("timeout", RunConfig.timeout),
            stream=bool(meta.get("stream", False)),
            total_timeout=meta.get("total_timeout"),
            params=dict(meta.get("params") or {}),
            budget_usd=meta.get("budget_usd"),
        )


def whole_request_timeout(config: RunConfig) -> float:
    """The longest one request may take: `timeout`, or when streaming `total_timeout`
    (default ten idle timeouts, so a trickling server cannot hold a row forever)."""
    if not config.stream:
        return config.timeout
    return config.total_timeout if config.total_timeout is not None else 10 * config.timeout


def check_budget(config: RunConfig) -> None:
    """A budget can only hold if every request's cost has a known ceiling."""
    if config.budget_usd is None:
        return
    max_tokens = config.params.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise ConfigError(
            "budget_usd needs max_tokens=... so that each request's cost has a ceiling"
        )
    if price_of(config.model) is None:
        raise ConfigError(
            f"no price is known for model {config.model!r}, so budget_usd cannot be enforced; "
            "add one with kit.set_price(model, input=..., output=...) (USD per 1M tokens)"
        )


SECRET_HEADER_WORDS = ("auth", "key", "token", "secret", "cookie", "password")


def json_safe(params: dict[str, Any]) -> dict[str, Any]:
    """Model parameters as JSON can hold them (other objects by their repr), with the values
    of headers whose names suggest a secret (`Authorization`, `X-Api-Key`) masked."""
    import json

    safe: dict[str, Any] = {}
    for key, value in params.items():
        if key in ("extra_headers", "default_headers") and isinstance(value, dict):
            value = {
                name: MASK if any(w in str(name).lower() for w in SECRET_HEADER_WORDS) else v
                for name, v in value.items()
            }
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
        safe[key] = value
    return safe
