"""Never overspend: cost columns, the budget, adaptive limits, rate-limit waits, estimates."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from conftest import KEY, eventually
from fake_server import FakeLLMServer

import notebook_kit as kit
from notebook_kit.pricing import _custom, price_of

PRICE = {"input": 1000.0, "output": 2000.0}  # USD per 1M tokens: big, so a few rows matter


@pytest.fixture(autouse=True)
def test_prices() -> Any:
    kit.set_price("test-model", **PRICE)
    yield
    _custom.clear()
    price_of.cache_clear()


def prompts(n: int, prefix: str = "question") -> pd.DataFrame:
    return pd.DataFrame({"prompt": [f"{prefix} {i}" for i in range(n)]})


def start(server: FakeLLMServer, df: pd.DataFrame, **kwargs: Any) -> kit.Job:
    """A background job on the priced test model, cache off."""
    return kit.start(
        df,
        "prompt",
        base_url=server.openai_base_url,
        api_key=KEY,
        model="test-model",
        cache=False,
        **kwargs,
    )


async def run(server: FakeLLMServer, df: pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
    kwargs.setdefault("progress", False)
    kwargs.setdefault("model", "test-model")
    kwargs.setdefault("cache", False)
    return await kit.run_df(df, "prompt", base_url=server.openai_base_url, api_key=KEY, **kwargs)


def billed(server: FakeLLMServer) -> float:
    stats = server.stats()
    return (
        float(
            stats["tokens_billed_input"] * PRICE["input"]
            + stats["tokens_billed_output"] * PRICE["output"]
        )
        / 1e6
    )


async def test_cost_columns_are_the_price_table_times_the_servers_usage(
    server: FakeLLMServer,
) -> None:
    result = await run(server, prompts(25))
    expected = (
        result["input_tokens"] * PRICE["input"] + result["output_tokens"] * PRICE["output"]
    ) / 1e6
    assert result["cost_usd"].round(9).tolist() == expected.round(9).tolist()
    assert result["cost_usd"].sum() == pytest.approx(billed(server))
    assert result.attrs["notebook_kit"]["cost_usd"] == pytest.approx(billed(server), abs=1e-6)


async def test_an_unknown_model_has_no_cost_rather_than_a_wrong_one(
    server: FakeLLMServer,
) -> None:
    result = await run(server, prompts(3), model="model-nobody-priced")
    assert result["cost_usd"].isna().all()
    assert (result["status"] == "ok").all()


def test_dated_model_names_use_their_base_price() -> None:
    assert price_of("gpt-4.1-mini-2025-04-14") == price_of("gpt-4.1-mini")
    assert price_of("gpt-4.1-2025-04-14") == price_of("gpt-4.1")
    assert price_of("gpt-4.1-mini") != price_of("gpt-4.1")


async def test_budget_stops_before_overspending_at_concurrency_50(server: FakeLLMServer) -> None:
    server.configure(latency=0.2)
    df = prompts(400, "[[tokens=40]] q")  # replies close to max_tokens: reservations are tight
    budget = 2.0
    result = await run(server, df, concurrency=50, max_tokens=50, budget_usd=budget)
    assert billed(server) <= budget  # the server's own token count is the witness
    assert billed(server) > 0.5 * budget
    ok, cancelled = (result["status"] == "ok").sum(), (result["status"] == "cancelled").sum()
    assert ok > 0 and cancelled > 0 and ok + cancelled == 400
    reasons = set(result.loc[result["status"] == "cancelled", "error"])
    assert all("budget is reached" in r for r in reasons)
    assert result["cost_usd"].sum() == pytest.approx(billed(server))


async def test_a_background_job_pauses_at_the_budget_and_goes_on_when_raised(
    server: FakeLLMServer,
) -> None:
    server.configure(latency=0.05)
    job = start(server, prompts(40), max_tokens=20, budget_usd=0.3, panel=True)
    await eventually(lambda: job.state == "paused at the budget")
    panel = job.panel
    assert panel is not None
    await eventually(lambda: "budget reached" in panel.status.value)
    done = job.snapshot().done
    assert 0 < done < 40
    spent_before = billed(server)
    assert spent_before <= 0.3
    job.set_budget(10.0)
    result = await job
    assert (result["status"] == "ok").all()


async def test_retry_failed_takes_a_budget_and_refuses_what_cannot_change(
    server: FakeLLMServer,
) -> None:
    df = pd.DataFrame({"prompt": ["[[status=500 times=1]] q", "fine"]})
    first = await run(server, df, max_attempts=1, max_tokens=20)
    fixed = await kit.retry_failed(first, budget_usd=5.0, adaptive=False, progress=False)
    meta = fixed.attrs["notebook_kit"]
    assert meta["budget_usd"] == 5.0 and meta["adaptive"] is False
    assert "budget_usd" not in meta["params"] and "adaptive" not in meta["params"]
    assert (fixed["status"] == "ok").all()
    with pytest.raises(kit.ConfigError, match="output_col"):
        await kit.retry_failed(first, output_col="answer")


async def test_a_budget_set_mid_run_counts_what_was_already_spent(
    server: FakeLLMServer,
) -> None:
    server.configure(latency=0.05)
    job = start(server, prompts(60), max_tokens=20, concurrency=2)
    await eventually(lambda: job.snapshot().done >= 10)
    spent = billed(server)
    job.set_budget(spent + 0.05)  # only five cents more
    await eventually(lambda: job.state == "paused at the budget")
    await eventually(lambda: job.snapshot().in_flight == 0)  # everything sent has come back
    assert billed(server) <= spent + 0.05 + 1e-9
    job.cancel()
    result = await job
    assert (result["status"] == "cancelled").any()


async def test_set_budget_needs_a_ceiling(server: FakeLLMServer) -> None:
    job = start(server, prompts(3))
    with pytest.raises(kit.ConfigError, match="max_tokens"):
        job.set_budget(1.0)
    await job


async def test_budget_needs_a_ceiling_and_a_price(server: FakeLLMServer) -> None:
    with pytest.raises(kit.ConfigError, match="max_tokens"):
        await run(server, prompts(2), budget_usd=1.0)
    with pytest.raises(kit.ConfigError, match="set_price"):
        await run(server, prompts(2), budget_usd=1.0, max_tokens=10, model="unpriced")


async def test_rate_limit_waits_use_up_no_attempts(server: FakeLLMServer) -> None:
    df = pd.DataFrame({"prompt": ["[[429 retry_after=0.05 times=6]] patient", "other"]})
    result = await run(server, df, max_attempts=2)
    assert result["status"].tolist() == ["ok", "ok"]
    assert result["attempts"].tolist() == [7, 1]  # every request sent is counted


async def test_rate_headers_pause_starts_when_the_quota_is_used_up(
    server: FakeLLMServer,
) -> None:
    server.configure(latency=0.05, rpm_limit=600, rate_window=1.0)  # 10 per second, disclosed
    result = await run(server, prompts(16), concurrency=3, adaptive=False)
    assert (result["status"] == "ok").all()
    with_headers = server.stats()["count_429"]
    server.reset_stats()  # also empties the server's rate windows
    server.configure(rate_headers=False)
    await run(server, prompts(16, "again"), concurrency=3, adaptive=False)
    without = server.stats()["count_429"]
    print("429s with rate headers / without:", with_headers, without)
    assert with_headers < without


def test_estimate_before_a_run(server: FakeLLMServer) -> None:
    df = pd.DataFrame({"prompt": ["x" * 400, "x" * 400, "", "y" * 40]})
    table = kit.estimate(
        df,
        "prompt",
        base_url=server.openai_base_url,
        api_key=KEY,
        model="test-model",
        max_tokens=100,
        concurrency=2,
        rpm=60,
        cache=False,
    )
    value = table["value"]
    assert value["rows"] == 4 and value["requests to send"] == 2
    assert value["skipped or invalid rows"] == 1 and value["duplicates in this run"] == 1
    assert value["input tokens"] == (100 + 4) + (10 + 4)
    assert value["cost USD (at most)"] == pytest.approx((118 * 1000 + 200 * 2000) / 1e6)
    assert value["cost USD (expected)"] == pytest.approx((118 * 1000 + 100 * 2000) / 1e6)
    assert "rpm=60" in str(table.loc["wall time s (expected)", "how"])
    assert server.stats()["requests_total"] == 0  # nothing was called


def test_estimate_knows_what_the_cache_already_holds(tmp_path: Any) -> None:
    df = prompts(10)
    path = tmp_path / "est.sqlite"
    demo = kit.DemoProvider(latency=0)
    kit.run_df_sync(df.head(4), "prompt", provider=demo, cache=path, progress=False)
    table = kit.estimate(df, "prompt", provider=demo, cache=path)
    assert table["value"]["served from the cache"] == 4
    assert table["value"]["requests to send"] == 6
