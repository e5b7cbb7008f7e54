"""One option path: every entry point takes the same options, checked before any request."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from tenacity import wait_fixed

import notebook_kit as kit
from notebook_kit import history
from notebook_kit.config import RunConfig
from notebook_kit.options import RunOptions, session_config


class Counting(kit.DemoProvider):
    """The demo model, counting the sessions opened (a run that opens none sent nothing)."""

    sessions = 0

    def session(self, *, timeout: float, clock: Any) -> Any:
        Counting.sessions += 1
        return super().session(timeout=timeout, clock=clock)


DF = pd.DataFrame({"prompt": ["a", "b"]})


async def via_run_df(**options: Any) -> object:
    return await kit.run_df(DF, "prompt", **options)


async def via_run_df_sync(**options: Any) -> object:
    return kit.run_df_sync(DF, "prompt", **options)


async def via_start(**options: Any) -> object:
    return await kit.start(DF, "prompt", **options)


async def via_estimate(**options: Any) -> object:
    return kit.estimate(DF, "prompt", **options)


async def via_retry_failed(**options: Any) -> object:
    failed = await kit.run_df(DF, "prompt", provider=Counting(latency=0), max_attempts=1)
    failed["status"] = "error"  # pretend both rows failed
    return await kit.retry_failed(failed, **options)


ENTRIES: list[Callable[..., Any]] = [
    via_run_df,
    via_run_df_sync,
    via_start,
    via_estimate,
    via_retry_failed,
]
BAD: list[tuple[str, object, str]] = [
    ("concurrency", 0, "concurrency must be a whole number >= 1, got 0"),
    ("concurrency", 2.5, "concurrency must be a whole number >= 1, got 2.5"),
    ("concurrency", True, "concurrency must be a whole number >= 1, got True"),
    ("rpm", 0, "rpm must be a finite number > 0, got 0"),
    ("tpm", 0, "tpm must be a finite number > 0, got 0"),
    ("rpm", math.inf, "rpm must be a finite number > 0, got inf"),
    ("max_attempts", 0, "max_attempts must be a whole number >= 1, got 0"),
    ("timeout", 0, "timeout must be a finite number > 0, got 0"),
    ("timeout", math.nan, "timeout must be a finite number > 0, got nan"),
    ("budget_usd", -1, "budget_usd must be a finite number >= 0, got -1"),
    ("adaptive", "yes", "adaptive must be True or False, got 'yes'"),
    ("retry", {"max_attempts": 2}, "retry must be RetryPolicy, got dict"),
    ("max_tokens", 0, "max_tokens must be a whole number >= 1, got 0"),
    ("concurency", 4, "unknown option concurency=...; did you mean concurrency=...?"),
]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("name", "value", "message"), BAD, ids=lambda v: str(v)[:20])
async def test_a_wrong_value_is_refused_before_any_request(
    entry: Callable[..., Any], name: str, value: object, message: str
) -> None:
    Counting.sessions = 0
    provider = Counting(latency=0)
    with pytest.raises(kit.ConfigError) as caught:
        await entry(provider=provider, progress=False, **{name: value})
    assert message in str(caught.value)
    expected_sessions = 1 if entry is via_retry_failed else 0  # its first run, not the retry
    assert Counting.sessions == expected_sessions


@pytest.mark.parametrize("entry", [via_run_df, via_run_df_sync, via_start, via_estimate])
@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("limit", True, "limit must be a whole number >= 0, got True"),
        ("limit", "2", "limit must be a whole number >= 0, got '2'"),
        ("output_col", None, "output_col must be non-empty text, got None"),
    ],
)
async def test_input_options_are_checked_by_every_entry(
    entry: Callable[..., Any], name: str, value: object, message: str
) -> None:
    with pytest.raises(kit.ConfigError, match=re.escape(message)):
        await entry(provider=Counting(latency=0), progress=False, **{name: value})


async def test_none_takes_the_default_and_zero_does_not() -> None:
    result = await kit.run_df(
        DF, "prompt", provider=Counting(latency=0), concurrency=None, timeout=None
    )
    meta = result.attrs["notebook_kit"]
    assert meta["concurrency"] == kit.defaults.concurrency and meta["timeout"] == 120.0


async def test_an_option_of_another_entry_point_is_not_sent_to_the_model() -> None:
    with pytest.raises(kit.ConfigError, match=re.escape("run_df takes no panel=... option")):
        await kit.run_df(DF, "prompt", provider=Counting(latency=0), panel=True)  # type: ignore[call-arg]


async def test_limits_and_retry_objects_are_run_options() -> None:
    limits = kit.Limits(concurrency=3, rpm=6000, adaptive=False)
    retry = kit.RetryPolicy(max_attempts=2, backoff_base=0.5, rate_limit_patience=30)
    result = await kit.run_df(
        DF, "prompt", provider=Counting(latency=0), limits=limits, retry=retry
    )
    meta = result.attrs["notebook_kit"]
    assert (meta["concurrency"], meta["rpm"], meta["adaptive"]) == (3, 6000, False)
    assert meta["retry"]["rate_limit_patience"] == 30 and meta["max_attempts"] == 2
    with pytest.raises(
        kit.ConfigError, match=re.escape("either inside limits=... or as concurrency=")
    ):
        await kit.run_df(DF, "prompt", limits=limits, concurrency=4)
    with pytest.raises(
        kit.ConfigError, match=re.escape("either inside retry=... or as max_attempts=")
    ):
        await kit.run_df(DF, "prompt", retry=retry, max_attempts=4)


def test_session_defaults_are_checked_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kit.defaults, "concurrency", 0)
    with pytest.raises(kit.ConfigError, match=re.escape("kit.defaults: concurrency must be")):
        session_config(kit.DemoProvider())


@pytest.mark.looptime  # the demo model's second of latency is virtual
async def test_retry_failed_reuses_the_original_options_from_the_attrs_alone() -> None:
    options: RunOptions = {
        "provider": "demo",
        "concurrency": 3,
        "rpm": 6000.0,
        "timeout": 7.0,
        "retry": kit.RetryPolicy(max_attempts=1, backoff_base=0.25, rate_limit_patience=50),
        "temperature": 0.3,
        "progress": False,
        "cache": False,
    }
    first = await kit.run_df(DF, "prompt", **options)
    first["status"] = "error"
    original = history.lookup(first.attrs["notebook_kit"]["run_id"])
    assert isinstance(original, history.RunRecord)
    history._runs.clear()  # a frame from another process: only its attrs are left
    second = await kit.retry_failed(first)
    meta = second.attrs["notebook_kit"]
    rebuilt = RunConfig.from_meta(meta, default_model="demo")
    assert rebuilt == original.config
    assert (second["status"] == "ok").all()


def test_a_config_survives_its_description() -> None:
    config = RunConfig(
        model="m",
        limits=kit.Limits(concurrency=5, rpm=60, tpm=1000, adaptive=False),
        retry=kit.RetryPolicy(max_attempts=3, backoff_max=9, retry_after_cap=30),
        timeout=12.5,
        params={"temperature": 0.1, "max_tokens": 20},
        budget_usd=1.5,
    )
    assert RunConfig.from_meta(config.describe(), default_model="x") == config


async def test_a_tenacity_wait_replaces_the_backoff() -> None:
    failing = kit.DemoProvider(latency=0, error_rate=1.0)
    retry = kit.RetryPolicy(max_attempts=3, wait=wait_fixed(0.01))
    result = await kit.run_df(
        DF.head(1), "prompt", provider=failing, retry=retry, progress=False, cache=False
    )
    attempts = kit.report(result).attempts()
    gaps = attempts["start_s"].iloc[1:].to_numpy() - attempts["end_s"].iloc[:-1].to_numpy()
    assert len(attempts) == 3 and (gaps >= 0.01).all() and (gaps < 0.5).all()


async def test_a_key_given_as_bytes_is_refused_without_quoting_it() -> None:
    secret = b"sk-test-SENTINEL-in-bytes"
    with pytest.raises(kit.ConfigError) as caught:
        await via_run_df(api_key=secret, provider="openai", progress=False)
    assert "api_key must be non-empty text, got bytes" in str(caught.value)
    assert "SENTINEL" not in str(caught.value)


async def test_a_parameter_the_installed_sdk_refuses_is_refused_before_the_run() -> None:
    with pytest.raises(kit.ConfigError, match=re.escape("extra_body={'temperature': ...}")):
        kit.estimate(DF, "prompt", provider="anthropic", api_key="sk-ant-test", temperature=0.2)
