"""The engine end to end: real openai/anthropic SDK clients against the fake server."""

from __future__ import annotations

import asyncio
from typing import Any

import pandas as pd
import pytest
from conftest import KEY, eventually, quick_retries
from fake_server import FakeLLMServer

import notebook_kit as kit

pytestmark = pytest.mark.usefixtures("request_path")  # the lean path and the SDK's


def prompts(n: int, prefix: str = "question") -> pd.DataFrame:
    return pd.DataFrame({"prompt": [f"{prefix} {i}" for i in range(n)]})


async def run_openai(server: FakeLLMServer, df: pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
    kwargs.setdefault("progress", False)
    quick_retries(kwargs)
    return await kit.run_df(
        df, "prompt", provider="openai", base_url=server.openai_base_url, api_key=KEY, **kwargs
    )


async def run_anthropic(server: FakeLLMServer, df: pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
    kwargs.setdefault("progress", False)
    quick_retries(kwargs)
    return await kit.run_df(
        df,
        "prompt",
        provider="anthropic",
        base_url=server.anthropic_base_url,
        api_key=KEY,
        **kwargs,
    )


async def test_openai_rows_come_back_in_order_with_usage(server: FakeLLMServer) -> None:
    server.configure(latency=0.05)
    result = await run_openai(server, prompts(30), concurrency=5, model="gpt-test")
    stats = server.stats()
    assert (result["status"] == "ok").all()
    assert result["response"].tolist() == [f"Reply to: question {i}" for i in range(30)]
    assert result["model"].eq("gpt-test").all()
    assert result["request_id"].str.startswith("req_").all()
    assert int(result["input_tokens"].sum()) == stats["tokens_billed_input"]
    assert int(result["output_tokens"].sum()) == stats["tokens_billed_output"]
    assert stats["peak_in_flight"] == 5  # reached, and never more


async def test_anthropic_rows_with_system_prompt_and_default_max_tokens(
    server: FakeLLMServer,
) -> None:
    server.configure(latency=0.02)
    result = await run_anthropic(server, prompts(12), concurrency=4, system="Be brief.")
    assert (result["status"] == "ok").all()
    assert result["finish_reason"].eq("stop").all()
    assert result["response"].iloc[3] == "Reply to: question 3"
    assert set(server.stats()["max_tokens_seen"]) == {1024}
    assert result.attrs["notebook_kit"]["params"] == {"max_tokens": 1024}


@pytest.mark.parametrize("runner", [run_openai, run_anthropic])
async def test_peak_in_flight_stays_within_concurrency_under_faults(
    server: FakeLLMServer, runner: Any
) -> None:
    server.configure(latency=0.03, rate_500=0.05, rate_reset=0.02, rate_hang=0.01)
    result = await runner(server, prompts(200), concurrency=8, timeout=0.5)
    stats = server.stats()
    assert stats["peak_in_flight"] <= 8
    assert result["status"].isin(["ok", "error"]).all()  # every row has a final status
    assert (result["status"] == "ok").all()  # five attempts beat an 8 % fault rate
    assert stats["responses"].get("500", 0) + stats["resets"] + stats["hangs"] > 0
    # SDK retries are off: the server saw exactly the attempts the frame reports
    assert int(result["attempts"].sum()) == stats["requests_total"]


async def test_sdk_retries_are_off_and_kit_retries_count(server: FakeLLMServer) -> None:
    df = prompts(6, "[[status=503 times=2]] q")
    result = await run_openai(server, df, concurrency=6)
    assert result["attempts"].tolist() == [3] * 6
    assert server.stats()["requests_total"] == 18


async def test_retry_after_is_waited_and_pauses_every_start(server: FakeLLMServer) -> None:
    server.configure(latency=0.1)
    df = pd.DataFrame(
        {"prompt": ["[[429 retry_after=0.5 times=1]] first", *prompts(7)["prompt"].tolist()]}
    )
    result = await run_openai(server, df, concurrency=4)
    assert (result["status"] == "ok").all()
    assert result["attempts"].tolist() == [2] + [1] * 7
    arrivals = sorted(server.stats()["arrivals"])
    first = arrivals[0]
    assert all(t - first < 0.08 for t in arrivals[:4])  # the first wave
    assert all(t - first >= 0.48 for t in arrivals[4:])  # nobody started during the pause


async def test_rpm_against_a_server_enforcing_it_gets_no_429(server: FakeLLMServer) -> None:
    server.configure(rpm_limit=1200, latency=0.01)  # 20 arrivals per second, sliding window
    result = await run_openai(server, prompts(24), concurrency=20, rpm=1200)
    assert (result["status"] == "ok").all()
    assert server.stats()["count_429"] == 0
    assert result["attempts"].eq(1).all()


async def test_tpm_paces_by_estimated_tokens(server: FakeLLMServer) -> None:
    server.configure(tpm_limit=3000, latency=0.01)  # 50 tokens per second
    df = pd.DataFrame({"prompt": ["x" * 80] * 8})  # ~20-24 estimated tokens each
    result = await run_openai(server, df, concurrency=8, tpm=3000, max_tokens=5)
    assert (result["status"] == "ok").all()
    assert server.stats()["count_429"] == 0


async def test_no_request_starts_after_the_first_401(server: FakeLLMServer) -> None:
    server.configure(latency=0.05)
    with pytest.raises(kit.AuthError, match=r"check the API key \(OPENAI_API_KEY") as caught:
        await kit.run_df(
            prompts(50),
            "prompt",
            provider="openai",
            base_url=server.openai_base_url,
            api_key="sk-wrong-key-0000",
            concurrency=5,
            progress=False,
        )
    partial = caught.value.partial
    assert partial is not None
    assert server.stats()["requests_total"] <= 5  # only the first wave, already in flight
    assert (partial["status"] == "cancelled").sum() >= 45
    assert partial["error"].str.contains("not run: the run stopped after HTTP 401").any()
    assert kit.last_result() is partial


async def test_auth_failure_in_the_middle_stops_new_starts(server: FakeLLMServer) -> None:
    server.configure(latency=0.1)
    df = prompts(40)
    df.loc[6, "prompt"] = "[[status=403]] forbidden"
    with pytest.raises(kit.AuthError) as caught:
        await run_openai(server, df, concurrency=3)
    partial = caught.value.partial
    assert partial is not None
    arrivals = sorted(server.stats()["arrivals"])
    assert len(arrivals) < 12
    assert partial.loc[6, "error_type"] == "auth"
    assert set(partial["status"]) == {"ok", "error", "cancelled"}


async def test_400_fails_only_its_row(server: FakeLLMServer) -> None:
    df = prompts(10)
    df.loc[4, "prompt"] = "[[status=400]] bad"
    result = await run_openai(server, df)
    assert result["status"].tolist() == ["ok"] * 4 + ["error"] + ["ok"] * 5
    assert result.loc[4, "error_type"] == "bad_request"
    assert result.loc[4, "attempts"] == 1


async def test_content_filter_is_not_retried(server: FakeLLMServer) -> None:
    df = pd.DataFrame({"prompt": ["[[content_filter]] x", "[[finish=content_filter]] y"]})
    result = await run_openai(server, df)
    assert result["error_type"].tolist() == ["content_filter", "content_filter"]
    assert result["attempts"].tolist() == [1, 1]


async def test_truncation_is_visible(server: FakeLLMServer) -> None:
    df = pd.DataFrame({"prompt": ["[[finish=length]] long answer"]})
    result = await run_openai(server, df)
    assert result.loc[0, "status"] == "ok"
    assert result.loc[0, "finish_reason"] == "length"


@pytest.mark.parametrize("runner", [run_openai, run_anthropic])
async def test_quota_stops_the_run(server: FakeLLMServer, runner: Any) -> None:
    server.configure(quota_exhausted=True)
    with pytest.raises(kit.QuotaError, match="credit"):
        await runner(server, prompts(20), concurrency=2)
    assert server.stats()["requests_total"] <= 2


async def test_unknown_model_stops_the_run(server: FakeLLMServer) -> None:
    server.configure(models={"gpt-real"})
    with pytest.raises(kit.ModelNotFoundError, match="model=") as caught:
        await run_openai(server, prompts(20), model="gpt-typo", concurrency=2)
    assert caught.value.partial is not None
    assert server.stats()["requests_total"] <= 2


@pytest.mark.parametrize("runner", [run_openai, run_anthropic])
@pytest.mark.parametrize("fault", ["hang", "malformed", "reset", "status=529", "status=500"])
async def test_transient_faults_are_retried(server: FakeLLMServer, runner: Any, fault: str) -> None:
    df = pd.DataFrame({"prompt": [f"[[{fault} times=1]] q", "plain"]})
    result = await runner(server, df, timeout=0.5)
    assert result["status"].tolist() == ["ok", "ok"]
    assert result["attempts"].tolist() == [2, 1]
    await eventually(lambda: server.stats()["in_flight"] == 0)


async def test_a_row_that_never_succeeds_becomes_data(server: FakeLLMServer) -> None:
    df = pd.DataFrame({"prompt": ["[[status=500]] always", "fine"]})
    result = await run_openai(server, df, max_attempts=2)
    assert result["status"].tolist() == ["error", "ok"]
    assert result.loc[0, "error_type"] == "server"
    assert result.loc[0, "attempts"] == 2
    assert str(result.loc[0, "error"]).startswith("HTTP 500")


async def test_cancelling_keeps_finished_rows_and_stops_in_flight_calls(
    server: FakeLLMServer,
) -> None:
    server.configure(latency=0.3)
    task = asyncio.create_task(run_openai(server, prompts(40), concurrency=4))
    await eventually(lambda: server.stats()["responses"].get("200", 0) >= 6)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    partial = kit.last_result()
    assert partial is not None and len(partial) == 40
    done = int((partial["status"] == "ok").sum())
    assert 4 <= done < 40
    assert set(partial["status"]) == {"ok", "cancelled"}
    assert partial.loc[partial["status"] == "cancelled", "error"].eq("interrupted").all()
    # in-flight calls were cancelled, not orphaned
    await eventually(lambda: server.stats()["in_flight"] == 0)
    assert server.stats()["requests_total"] < 40


async def test_an_interrupt_still_records_the_rows_that_needed_no_call(
    server: FakeLLMServer,
) -> None:
    server.configure(latency=0.3)
    df = pd.DataFrame({"prompt": [*prompts(20)["prompt"], "", " "]})
    task = asyncio.create_task(run_openai(server, df, concurrency=2))
    await eventually(lambda: server.stats()["requests_total"] >= 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    partial = kit.last_result()
    assert partial is not None
    assert partial["status"].tolist()[-2:] == ["skipped", "skipped"]
    assert partial["error"].tolist()[-1] == "the prompt is empty"
