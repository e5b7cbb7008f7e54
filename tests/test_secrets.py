"""An API key never appears in a frame, attrs, repr, log line, exception chain or error text."""

from __future__ import annotations

import logging
import traceback

import pandas as pd
import pytest
from fake_server import FakeLLMServer

import notebook_kit as kit

SENTINEL = "sk-SENTINEL-do-not-leak-4f7a9c"


def chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def assert_clean(*texts: object) -> None:
    for text in texts:
        assert SENTINEL not in str(text)
        assert SENTINEL not in repr(text)


async def test_a_rejected_key_echoed_by_the_server_is_masked_everywhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the SDKs' and the transport's included
    df = pd.DataFrame({"prompt": ["one", "two", "three"]})
    with FakeLLMServer(api_key="the-right-key", latency=0.01) as server:  # echoes wrong keys
        with pytest.raises(kit.AuthError) as caught:
            await kit.run_df(
                df,
                "prompt",
                provider="openai",
                base_url=server.openai_base_url,
                api_key=SENTINEL,
                progress=False,
            )
        assert SENTINEL in server.stats()["keys_seen"]  # the key really went on the wire
    partial = caught.value.partial
    assert partial is not None
    assert "Incorrect API key provided: ***" in partial["error"].dropna().iloc[0]
    assert_clean(partial.to_csv(), partial.attrs, caught.value)
    for exc in chain(caught.value):
        assert_clean(exc, "".join(traceback.format_exception(exc)))
    assert_clean(caplog.text)
    assert_clean(kit.last_result().to_csv(), kit.last_report())  # type: ignore[union-attr]


async def test_a_key_inside_base_url_is_refused_without_being_shown() -> None:
    df = pd.DataFrame({"prompt": ["x"]})
    for url in (
        f"http://user:{SENTINEL}@127.0.0.1:9/v1",
        f"http://127.0.0.1:9/v1?api-key={SENTINEL}",
    ):
        with pytest.raises(kit.ConfigError, match="api_key=") as caught:
            await kit.run_df(df, "prompt", base_url=url, progress=False)
        for exc in chain(caught.value):
            assert_clean(exc, "".join(traceback.format_exception(exc)))


async def test_reprs_and_metadata_hold_no_key() -> None:
    for provider in (
        kit.OpenAIProvider(api_key=SENTINEL),
        kit.AnthropicProvider(api_key=SENTINEL, base_url="http://127.0.0.1:9"),
    ):
        assert_clean(provider, provider.describe(), repr(vars(provider)))  # attributes' values


async def test_anthropic_key_is_masked_too(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    df = pd.DataFrame({"prompt": ["one"]})
    with FakeLLMServer(api_key="the-right-key") as server, pytest.raises(kit.AuthError) as caught:
        await kit.run_df(
            df,
            "prompt",
            provider="anthropic",
            base_url=server.anthropic_base_url,
            api_key=SENTINEL,
            progress=False,
        )
    assert caught.value.partial is not None
    assert_clean(caught.value.partial.to_csv(), caught.value, caplog.text)
    for exc in chain(caught.value):
        assert_clean(exc, "".join(traceback.format_exception(exc)))
