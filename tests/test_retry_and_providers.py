"""Retry waits, error mapping, provider choice and the demo model."""

from __future__ import annotations

import io
import time
from contextlib import redirect_stderr
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pandas as pd
import pytest
from clocks import FakeTime

import notebook_kit as kit
from notebook_kit.config import RetryPolicy
from notebook_kit.errors import CallError
from notebook_kit.providers import DEMO_NOTICE, resolve
from notebook_kit.providers.base import retry_after, status_error
from notebook_kit.retry import Retrier, RowTries
from notebook_kit.types import ErrorType


def waited(policy: RetryPolicy, exc: CallError, attempt: int = 1) -> float | None:
    return Retrier(policy, FakeTime()).wait_before_retry(exc, RowTries(sent=attempt))


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(retry_after_cap=120)
    limited = CallError(ErrorType.RATE_LIMIT, "429", retry_after=1.5)
    assert waited(policy, limited) == 1.5
    absurd = CallError(ErrorType.RATE_LIMIT, "429", retry_after=86_400)
    assert waited(policy, absurd) == 120


def test_backoff_without_retry_after_is_exponential_with_jitter() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=30)
    error = CallError(ErrorType.SERVER, "500")
    retrier = Retrier(policy, FakeTime())
    for attempt in (1, 3, 9):
        waits = [retrier.backoff(error, attempt) for _ in range(200)]
        assert min(waits) >= 0 and max(waits) <= min(30, 2 ** (attempt - 1))
        assert len(set(waits)) > 100  # jittered, not a fixed step


def test_retry_after_headers() -> None:
    for garbage in ("-5", "nan", "inf", "-Infinity"):  # absent, not a tight loop or a hang
        assert retry_after({"retry-after": garbage}) is None
        assert retry_after({"retry-after-ms": garbage}) is None
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "3"}) == 3.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < (retry_after({"retry-after": later}) or 0) <= 30
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None


@pytest.mark.parametrize(
    ("status", "code", "message", "kind"),
    [
        (429, "rate_limit_exceeded", "slow down", ErrorType.RATE_LIMIT),
        (429, "insufficient_quota", "You exceeded your current quota", ErrorType.QUOTA),
        (400, "invalid_request_error", "Your credit balance is too low", ErrorType.QUOTA),
        (401, None, "bad key", ErrorType.AUTH),
        (403, None, "no access", ErrorType.AUTH),
        (404, "model_not_found", "no such model", ErrorType.NOT_FOUND),
        (408, None, "timeout", ErrorType.TIMEOUT),
        (409, None, "conflict", ErrorType.SERVER),
        (529, "overloaded_error", "Overloaded", ErrorType.SERVER),
        (400, "content_policy_violation", "refused", ErrorType.CONTENT_FILTER),
        (422, None, "bad field", ErrorType.BAD_REQUEST),
    ],
)
def test_status_mapping(status: int, code: str | None, message: str, kind: ErrorType) -> None:
    error = status_error(status, message, code=code)
    assert error.error_type is kind
    assert str(error).startswith(f"HTTP {status}: ")


def test_explicit_provider_without_key_names_the_env_var() -> None:
    with pytest.raises(kit.MissingKeyError, match="OPENAI_API_KEY"):
        resolve("openai")
    with pytest.raises(kit.MissingKeyError, match="ANTHROPIC_API_KEY"):
        resolve("anthropic")
    with pytest.raises(kit.ConfigError, match="unknown provider 'gemini'"):
        resolve("gemini")


def test_provider_choice_follows_the_documented_order(monkeypatch: pytest.MonkeyPatch) -> None:
    local, fallback = resolve(None, base_url="http://127.0.0.1:11434/v1")
    assert isinstance(local, kit.OpenAIProvider) and not fallback  # no key needed
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-x")
    assert isinstance(resolve(None)[0], kit.AnthropicProvider)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    assert isinstance(resolve(None)[0], kit.OpenAIProvider)  # OpenAI first
    assert isinstance(resolve("demo")[0], kit.DemoProvider)
    assert isinstance(resolve(None, api_key="sk-ant-123")[0], kit.AnthropicProvider)


@pytest.mark.looptime  # the default demo model's second of latency is virtual
async def test_demo_fallback_is_announced_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    df = pd.DataFrame({"prompt": ["hello"]})
    await kit.run_df(df, "prompt", progress=False)
    assert capsys.readouterr().out == DEMO_NOTICE + "\n"
    await kit.run_df(df, "prompt", provider=kit.DemoProvider(latency=0), progress=False)
    assert capsys.readouterr().out == ""  # a deliberate demo run needs no notice


def test_demo_model_is_deterministic_and_can_fail_on_purpose() -> None:
    df = pd.DataFrame({"prompt": [f"Classify sentiment: item {i} broke" for i in range(300)]})
    options: dict[str, Any] = {"progress": False, "cache": False}
    calm = kit.run_df_sync(df, "prompt", provider=kit.DemoProvider(latency=0), **options)
    again = kit.run_df_sync(df, "prompt", provider=kit.DemoProvider(latency=0), **options)
    assert calm["response"].eq("negative").all()
    pd.testing.assert_series_equal(calm["response"], again["response"])
    stormy = kit.DemoProvider(latency=0, error_rate=0.2, rate_limit_rate=0.1, retry_after=0.01)
    result = kit.run_df_sync(df, "prompt", provider=stormy, max_attempts=1, **options)
    assert 30 < (result["error_type"] == "server").sum() < 90  # one attempt: 5xx are final
    # 429s use up no attempts: they are waited out, so no row ends as a rate_limit error
    assert "rate_limit" not in set(result["error_type"].dropna())
    assert 10 < (result["attempts"] > 1).sum() < 70


def test_progress_bar_redraws_are_throttled_not_per_row() -> None:
    df = pd.DataFrame({"prompt": [f"q{i}" for i in range(3000)]})
    err = io.StringIO()
    with redirect_stderr(err):
        start = time.perf_counter()
        kit.run_df_sync(df, "prompt", provider=kit.DemoProvider(latency=0.002), concurrency=50)
        seconds = time.perf_counter() - start
    redraws = err.getvalue().count("\r")
    assert "3000/3000" in err.getvalue() and "ok=3000" in err.getvalue()
    assert redraws <= 12 * seconds + 5  # tqdm's 0.1 s minimum interval, not 3000 redraws
