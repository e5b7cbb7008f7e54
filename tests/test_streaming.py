"""Streaming over HTTP: the real openai and anthropic SDKs read SSE from the fake server
(chunk delays, cut streams, error events mid-stream, stalls, usage in the last chunk)."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import pytest
from conftest import KEY, eventually, quick_retries
from fake_server import FakeLLMServer
from pydantic import BaseModel

import notebook_kit as kit

pytestmark = pytest.mark.usefixtures("request_path")  # the lean path and the SDK's

APIS = ("openai", "anthropic")


def wire(server: FakeLLMServer, api: str, **options: Any) -> dict[str, Any]:
    url = server.openai_base_url if api == "openai" else server.anthropic_base_url
    return quick_retries(
        {
            "provider": api,
            "base_url": url,
            "api_key": KEY,
            "cache": False,
            "progress": False,
            "stream": True,
            **options,
        }
    )


def prompts(*texts: str) -> pd.DataFrame:
    return pd.DataFrame({"prompt": list(texts)})


@pytest.mark.parametrize("api", APIS)
async def test_a_streamed_reply_is_the_whole_reply_with_exact_usage_and_a_first_token_time(
    server: FakeLLMServer, api: str
) -> None:
    server.configure(latency=0.05, chunk_delay=0.02)
    df = prompts("tell me about owls", "and about tea please")
    streamed = await kit.run_df(df, "prompt", **wire(server, api))
    whole = await kit.run_df(df, "prompt", **wire(server, api, stream=False))
    assert (streamed["status"] == "ok").all()
    assert streamed["response"].tolist() == whole["response"].tolist()
    assert streamed["input_tokens"].tolist() == whole["input_tokens"].tolist()
    assert streamed["output_tokens"].tolist() == whole["output_tokens"].tolist()
    assert (streamed["ttft_s"] < streamed["latency_s"]).all()
    assert (streamed["ttft_s"] >= 0.05).all()  # the server's latency comes first
    assert whole["ttft_s"].isna().all()
    assert server.stats()["streams_completed"] == 2


@pytest.mark.parametrize("api", APIS)
async def test_the_idle_timeout_lets_a_long_trickle_finish_where_a_whole_request_timeout_cuts_it(
    server: FakeLLMServer, api: str
) -> None:
    server.configure(chunk_delay=0.05)  # about 8 words: 0.35 s to write it all
    df = prompts("a reply that trickles in word by word")
    streamed = await kit.run_df(df, "prompt", **wire(server, api, timeout=0.2))
    assert streamed["status"].tolist() == ["ok"]
    whole = await kit.run_df(df, "prompt", **wire(server, api, stream=False, timeout=0.2))
    assert whole["status"].tolist() == ["ok"]  # not streamed, the server sends it at once
    capped = await kit.run_df(
        df, "prompt", **wire(server, api, timeout=0.2, total_timeout=0.2, max_attempts=1)
    )
    assert capped["error_type"].tolist() == ["timeout"]
    assert "took longer than total_timeout=0.2 s" in capped["error"].iloc[0]
    assert "the stream was cut after" in capped["error"].iloc[0]
    assert capped["response"].isna().all()  # a partial reply is never the response


@pytest.mark.parametrize("api", APIS)
async def test_a_stalled_stream_ends_at_the_idle_timeout_and_keeps_what_it_said(
    server: FakeLLMServer, api: str
) -> None:
    df = prompts("stall here [[stall_after=2]]")
    result = await kit.run_df(df, "prompt", **wire(server, api, timeout=0.2, max_attempts=1))
    assert result["error_type"].tolist() == ["timeout"]
    error = result["error"].iloc[0]
    assert "no chunk within timeout=0.2 s" in error and "Reply to:" in error
    assert result["response"].isna().all()
    assert result["ttft_s"].notna().all()
    await eventually(lambda: server.stats()["in_flight"] == 0)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("directive", ["cut_after=2", "stream_error_after=2"])
async def test_a_stream_cut_or_failed_midway_is_retried_from_the_start(
    server: FakeLLMServer, api: str, directive: str
) -> None:
    df = prompts(f"one two three four five [[{directive} times=1]]")
    result = await kit.run_df(df, "prompt", **wire(server, api))
    assert result["status"].tolist() == ["ok"]
    assert result["attempts"].tolist() == [2]
    assert result["response"].iloc[0].startswith("Reply to: one two three four five")
    failed = await kit.run_df(
        prompts(f"again six seven eight [[{directive}]]"), "prompt", **wire(server, api)
    )
    assert failed["error_type"].tolist() == ["connection" if "cut" in directive else "server"]
    assert "the stream was cut after" in failed["error"].iloc[0]
    assert failed["response"].isna().all()


async def test_a_cut_anthropic_stream_counts_the_input_tokens_it_reported(
    server: FakeLLMServer,
) -> None:
    df = prompts("count me in [[cut_after=2]]")
    result = await kit.run_df(df, "prompt", **wire(server, "anthropic", max_attempts=1))
    assert result["error_type"].tolist() == ["connection"]
    assert result["input_tokens"].iloc[0] == server.stats()["tokens_billed_input"]
    assert result["input_tokens"].iloc[0] > 0


async def test_a_server_refusing_stream_options_is_streamed_without_usage(
    server: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.configure(stream_options_refused=True)
    df = prompts("first", "second", "third")
    with caplog.at_level(logging.WARNING, logger="notebook_kit"):
        result = await kit.run_df(df, "prompt", **wire(server, "openai", concurrency=1))
    assert (result["status"] == "ok").all()
    assert result["input_tokens"].isna().all() and result["cost_usd"].isna().all()
    assert sum("stream_options" in r.message for r in caplog.records) == 1  # once a run
    assert server.stats()["requests_total"] == 4  # the first row asked twice, then no more


async def test_a_stream_without_usage_has_unknown_tokens_and_the_budget_holds(
    server: FakeLLMServer, priced: None
) -> None:
    server.configure(stream_usage=False)
    df = prompts("one", "two", "three", "four")
    options = wire(server, "openai", model="priced-model", max_tokens=5, budget_usd=10.0)
    result = await kit.run_df(df, "prompt", **options)
    assert (result["status"] == "ok").all()
    assert result["output_tokens"].isna().all()
    spent = result.attrs["notebook_kit"]
    assert spent["unpriced_replies"] == 4  # unknown, never 0


class Grade(BaseModel):
    grade: int
    reason: str


@pytest.mark.parametrize("api", APIS)
async def test_streamed_structured_output_is_validated_at_the_end(
    server: FakeLLMServer, api: str
) -> None:
    df = prompts("grade owls", "grade tea")
    result = await kit.run_df(df, "prompt", schema=Grade, **wire(server, api))
    assert (result["status"] == "ok").all()
    assert str(result["grade"].dtype) == "Int64"
    spoiled = await kit.run_df(
        prompts("grade this [[invalid_json times=1]]"), "prompt", schema=Grade, **wire(server, api)
    )
    assert spoiled["status"].tolist() == ["ok"] and spoiled["attempts"].tolist() == [2]


async def test_stream_is_not_part_of_the_cache_key(server: FakeLLMServer, tmp_path: Any) -> None:
    df = prompts("cached one", "cached two")
    path = tmp_path / "c.sqlite"
    await kit.run_df(df, "prompt", **wire(server, "openai", cache=path))
    again = await kit.run_df(df, "prompt", **wire(server, "openai", cache=path, stream=False))
    assert again["cached"].all()
    assert server.stats()["requests_total"] == 2


def test_bad_streaming_options_are_refused() -> None:
    with pytest.raises(kit.ConfigError, match="stream must be True or False"):
        kit.run_df_sync(prompts("x"), "prompt", stream="yes")  # type: ignore[arg-type]
    with pytest.raises(kit.ConfigError, match="total_timeout must be a finite number > 0"):
        kit.run_df_sync(prompts("x"), "prompt", stream=True, total_timeout=0)
