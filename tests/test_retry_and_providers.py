"""Retry waits, error mapping, provider choice and the demo model."""

from __future__ import annotations

import io
import re
import time
from contextlib import redirect_stderr
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pandas as pd
import pytest
from clocks import FakeTime
from conftest import KEY
from fake_server import FakeLLMServer

import notebook_kit as kit
from notebook_kit.config import RetryPolicy
from notebook_kit.errors import CallError
from notebook_kit.providers import DEMO_NOTICE, resolve
from notebook_kit.providers.signatures import keyword_params
from notebook_kit.providers.status import retry_after, status_error
from notebook_kit.retry import Retrier, RowTries
from notebook_kit.secrets import Redactor
from notebook_kit.types import ErrorType

pytestmark = pytest.mark.usefixtures("request_path")  # the lean path and the SDK's


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


def body(message: str, code: object = None, kind: str | None = None) -> dict[str, Any]:
    """An error body as OpenAI-compatible servers send it."""
    return {"error": {"message": message, "code": code, "type": kind}}


CREDIT = "Your credit balance is too low to access the Anthropic API."
PER_MINUTE = "Quota exceeded for requests per minute per project. Please try again later."


@pytest.mark.parametrize(
    ("status", "error_body", "kind"),
    [
        (429, body("slow down", "rate_limit_exceeded", "requests"), ErrorType.RATE_LIMIT),
        (429, body("You exceeded your current quota", "insufficient_quota"), ErrorType.QUOTA),
        (429, body("Hard limit", "billing_hard_limit_reached"), ErrorType.QUOTA),
        (429, body("Pay up", kind="billing_error"), ErrorType.QUOTA),
        (429, body(PER_MINUTE, 429, "RESOURCE_EXHAUSTED"), ErrorType.RATE_LIMIT),  # Vertex
        (429, body("quota exceeded"), ErrorType.RATE_LIMIT),  # words alone: wait, not abort
        (429, body(CREDIT), ErrorType.RATE_LIMIT),
        (402, body("Payment required"), ErrorType.QUOTA),
        (
            400,
            {"type": "error", "error": {"type": "invalid_request_error", "message": CREDIT}},
            ErrorType.QUOTA,
        ),
        (400, body("Your prompt mentions a credit balance"), ErrorType.BAD_REQUEST),
        (401, body("bad key"), ErrorType.AUTH),
        (403, body("no access"), ErrorType.AUTH),
        (404, body("no such model", "model_not_found"), ErrorType.NOT_FOUND),
        (408, body("timeout"), ErrorType.TIMEOUT),
        (409, body("conflict"), ErrorType.SERVER),
        (529, {"type": "error", "error": {"type": "overloaded_error"}}, ErrorType.SERVER),
        (400, body("refused", "content_policy_violation"), ErrorType.CONTENT_FILTER),
        (400, body("refused", kind="content_filter"), ErrorType.CONTENT_FILTER),
        (422, body("bad field"), ErrorType.BAD_REQUEST),
        (502, "<html><title>502 Bad Gateway</title></html>", ErrorType.SERVER),
        (500, None, ErrorType.SERVER),
    ],
)
def test_status_mapping(status: int, error_body: object, kind: ErrorType) -> None:
    error = status_error(status, error_body)
    assert error.error_type is kind
    assert str(error).startswith(f"HTTP {status}: ")


def test_error_text_of_bodies_that_are_not_json_objects() -> None:
    html = "<html>\n<title>502 Bad Gateway</title>\n</html>"
    assert str(status_error(502, html)) == "HTTP 502: <html> <title>502 Bad Gateway</title> </html>"
    assert str(status_error(503, None)) == "HTTP 503: Service Unavailable"
    assert str(status_error(599, "")) == "HTTP 599: no message"
    assert str(status_error(400, [{"error": {"message": "first"}}])) == "HTTP 400: first"
    secret = status_error(
        401, body("Incorrect API key provided: sk-abc-123456"), redact=Redactor("sk-abc-123456")
    )
    assert str(secret) == "HTTP 401: Incorrect API key provided: ***"


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


# -- model parameters the installed SDKs take ---------------------------------


def test_anthropic_refuses_parameters_its_sdk_no_longer_takes() -> None:
    provider = kit.AnthropicProvider(api_key="sk-ant-test-key")
    for name in ("temperature", "top_p", "top_k", "seed"):
        with pytest.raises(kit.ConfigError, match=rf"{name}=\.\.\..*extra_body=\{{'{name}': "):
            provider.check_params({"max_tokens": 10, name: 0.5})
    with pytest.raises(kit.ConfigError, match=r"stop=\.\.\..*called stop_sequences=\.\.\."):
        provider.check_params({"stop": ["\n"]})
    provider.check_params(
        {"max_tokens": 10, "stop_sequences": ["\n"], "metadata": {}, "extra_body": {"top_k": 5}}
    )


def test_openai_takes_the_kits_parameters_and_refuses_unknown_ones() -> None:
    provider = kit.OpenAIProvider(api_key="sk-test-key")
    provider.check_params({"max_tokens": 5, "temperature": 0, "top_p": 1, "seed": 1, "stop": "x"})
    with pytest.raises(kit.ConfigError, match=r"top_k=\.\.\..*extra_body="):
        provider.check_params({"top_k": 5})


@pytest.mark.parametrize("name", ["model", "messages", "stream"])
def test_parameters_the_kit_sets_itself_are_refused(name: str) -> None:
    for provider in (kit.OpenAIProvider(api_key="sk-x"), kit.AnthropicProvider(api_key="sk-x")):
        with pytest.raises(kit.ConfigError, match=rf"^{name}=\.\.\."):
            provider.check_params({name: True})


def test_a_stream_parameter_points_to_the_runs_stream_option() -> None:
    with pytest.raises(kit.ConfigError, match=re.escape("run_df(..., stream=True)")):
        kit.OpenAIProvider(api_key="sk-x").check_params({"stream": True})


def test_the_demo_model_takes_any_parameter() -> None:
    kit.DemoProvider().check_params({"top_k": 5, "anything": object()})


def test_the_sdk_signature_is_read_once_per_process() -> None:
    provider = kit.AnthropicProvider(api_key="sk-ant-test-key")
    provider.check_params({"max_tokens": 1})
    before = keyword_params.cache_info()
    provider.check_params({"max_tokens": 2})
    kit.AnthropicProvider(api_key="sk-ant-other-key").check_params({"max_tokens": 3})
    after = keyword_params.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (2, 0)


async def test_extra_body_reaches_a_server_that_takes_the_parameter(
    server: FakeLLMServer,
) -> None:
    provider = kit.AnthropicProvider(api_key=KEY, base_url=server.anthropic_base_url)
    provider.check_params({"extra_body": {"top_k": 5}})
    df = pd.DataFrame({"prompt": ["q"]})
    result = await kit.run_df(
        df, "prompt", provider=provider, params={"extra_body": {"top_k": 5}}, progress=False
    )
    assert result.loc[0, "status"] == "ok"
