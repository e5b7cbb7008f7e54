"""Pipelines over HTTP: the real openai SDK against the fake server, one model per step
(so the server counts each step's requests and in-flight peak on its own)."""

from __future__ import annotations

import asyncio
from typing import Any

import pandas as pd
import pytest
from conftest import KEY, eventually, quick_retries
from fake_server import FakeLLMServer
from pydantic import BaseModel

import notebook_kit as kit


class Review(BaseModel):
    grade: int
    reason: str


def wire(server: FakeLLMServer, **options: Any) -> dict[str, Any]:
    return quick_retries(
        {
            "provider": "openai",
            "base_url": server.openai_base_url,
            "api_key": KEY,
            "cache": False,
            "progress": False,
            **options,
        }
    )


def three_steps(**draft: Any) -> list[kit.Step]:
    return [
        kit.Step("facts", template="List facts about {topic}.", model="m-facts", concurrency=4),
        kit.Step(
            "draft", template="Write on {topic}{hint} using: {facts}", model="m-draft", **draft
        ),
        kit.Step("review", template="Grade: {draft}", model="m-review", concurrency=3),
    ]


def topics(n: int, hints: dict[int, str] | None = None) -> pd.DataFrame:
    hints = hints or {}
    return pd.DataFrame(
        {"topic": [f"topic {i}" for i in range(n)], "hint": [hints.get(i, "") for i in range(n)]}
    )


def by_model(server: FakeLLMServer) -> dict[str, int]:
    return dict(server.stats()["requests_by_model"])


async def test_rows_keep_their_order_and_index_and_every_step_fills_its_columns(
    server: FakeLLMServer,
) -> None:
    df = topics(6)
    df.index = pd.Index(["b", "a", "a", 7, 7, None], dtype=object)  # repeated, mixed labels
    result = await kit.run_pipeline(df, three_steps(concurrency=2), **wire(server))
    assert list(result.index) == list(df.index)
    assert result["topic"].tolist() == df["topic"].tolist()
    assert (result["status"] == "ok").all()
    for step in ("facts", "draft", "review"):
        assert (result[f"{step}_status"] == "ok").all()
        assert result[f"{step}_attempts"].eq(1).all()
    # each row's draft was written from its own facts, its review from its own draft
    for i in range(6):
        assert f"topic {i}" in result["facts"].iloc[i]
        assert f"topic {i}" in result["draft"].iloc[i]
    assert result["failed_step"].isna().all()
    assert by_model(server) == {"m-facts": 6, "m-draft": 6, "m-review": 6}
    assert result["cost_usd"].isna().all()  # these models have no price: unknown, never 0


async def test_no_barrier_a_fast_row_finishes_every_step_while_slow_rows_are_in_step_one(
    server: FakeLLMServer,
) -> None:
    df = pd.DataFrame({"topic": ["quick"] + [f"slow {i} [[latency=1.0]]" for i in range(3)]})
    steps = [
        kit.Step("facts", template="{topic}", model="m-facts", concurrency=4),
        kit.Step("draft", template="on: {facts}", model="m-draft"),
        kit.Step("review", template="grade: {draft}", model="m-review"),
    ]
    result = await kit.run_pipeline(df, steps, **wire(server))
    assert (result["status"] == "ok").all()
    attempts = kit.report(result).attempts()
    quick_review_end = attempts.query("row == 0 and step == 'review'")["end_s"].max()
    slow_facts_end = attempts.query("row > 0 and step == 'facts'")["end_s"].min()
    assert quick_review_end < slow_facts_end


async def test_each_step_keeps_to_its_own_concurrency_on_the_wire(server: FakeLLMServer) -> None:
    server.configure(model_latency={m: {"latency": 0.05} for m in ("m-facts", "m-draft")})
    result = await kit.run_pipeline(topics(24), three_steps(concurrency=2), **wire(server))
    assert (result["status"] == "ok").all()
    peaks = server.stats()["peak_in_flight_by_model"]
    assert peaks["m-facts"] == 4  # reached its limit, never passed it
    assert peaks["m-draft"] == 2
    assert peaks["m-review"] <= 3


async def test_steps_on_one_endpoint_share_its_rpm_and_get_no_429(server: FakeLLMServer) -> None:
    server.configure(rpm_limit=1200, latency=0.01)  # 20 arrivals per sliding second
    steps = [
        kit.Step("facts", template="facts on {topic}", concurrency=10),
        kit.Step("draft", template="draft on {facts}", concurrency=10, rpm=1200),  # for both
    ]
    result = await kit.run_pipeline(topics(20), steps, model="shared", **wire(server))
    assert (result["status"] == "ok").all()
    assert server.stats()["count_429"] == 0
    assert server.stats()["requests_total"] == 40


async def test_conflicting_rpm_for_one_endpoint_is_refused_before_any_request(
    server: FakeLLMServer,
) -> None:
    steps = [
        kit.Step("facts", template="{topic}", rpm=100),
        kit.Step("draft", template="{facts}", rpm=200),
    ]
    with pytest.raises(kit.ConfigError, match="an endpoint has one rpm"):
        await kit.run_pipeline(topics(2), steps, model="shared", **wire(server))
    other_models = [
        kit.Step("facts", template="{topic}", model="a", rpm=100),
        kit.Step("draft", template="{facts}", model="b", rpm=200),  # another endpoint
    ]
    result = await kit.run_pipeline(topics(2), other_models, **wire(server))
    assert (result["status"] == "ok").all()
    assert server.stats()["requests_total"] == 4


async def test_a_failure_in_step_two_stops_that_row_only(server: FakeLLMServer) -> None:
    df = topics(5, hints={2: " [[status=400]]"})
    result = await kit.run_pipeline(df, three_steps(), **wire(server))
    assert result["status"].tolist() == ["ok", "ok", "error", "ok", "ok"]
    row = result.iloc[2]
    assert row["failed_step"] == "draft"
    assert row["error_type"] == "bad_request"
    assert row["error"] == row["draft_error"]
    assert row["facts_status"] == "ok"
    assert pd.isna(row["review_status"]) and pd.isna(row["review"])
    assert by_model(server) == {"m-facts": 5, "m-draft": 5, "m-review": 4}


async def test_function_and_when_steps(server: FakeLLMServer) -> None:
    async def shout(row: dict[str, Any]) -> str:
        await asyncio.sleep(0)
        return str(row["facts"]).upper()

    def words(row: dict[str, Any]) -> int:
        if row["topic"] == "topic 3":
            raise ValueError("no words\nfor this one")
        return len(row["facts"].split())

    steps = [
        kit.Step("facts", template="{topic}", model="m-facts"),
        kit.Step("n", fn=words),
        kit.Step("loud", fn=shout, when=lambda row: row["n"] > 0),
        kit.Step(
            "draft", template="{loud} ({n} words)", model="m-draft", when=lambda r: r["n"] < 99
        ),
        kit.Step("odd", fn=lambda row: {"not": "text"}, when=lambda row: row["topic"] != "topic 1"),
    ]
    result = await kit.run_pipeline(topics(4), steps, **wire(server))
    assert result["status"].tolist() == ["ok", "ok", "ok", "error"]
    assert result["n"].iloc[0] == len(result["facts"].iloc[0].split())
    assert result["loud"].iloc[0] == result["facts"].iloc[0].upper()
    assert result["odd"].iloc[0] == {"not": "text"}  # stored as is
    assert result["odd_status"].iloc[1] == "skipped" and result["odd"].iloc[1] is None
    failed = result.iloc[3]
    assert failed["failed_step"] == "n"
    assert failed["error_type"] == "function_error"
    assert failed["n_error"] == "fn= raised ValueError: no words for this one"
    assert pd.isna(failed["draft_status"])
    assert "(" in result["draft"].iloc[0]  # the template formatted the number with str()
    assert by_model(server) == {"m-facts": 4, "m-draft": 3}


async def test_a_when_that_raises_fails_the_row_at_that_step(server: FakeLLMServer) -> None:
    steps = [
        kit.Step("facts", template="{topic}", model="m-facts"),
        kit.Step("draft", template="{facts}", model="m-draft", when=lambda row: 1 / 0),
    ]
    result = await kit.run_pipeline(topics(2), steps, **wire(server))
    assert (result["failed_step"] == "draft").all()
    assert (result["draft_error_type"] == "function_error").all()
    assert result["draft_error"].str.contains("when= raised ZeroDivisionError").all()
    assert by_model(server) == {"m-facts": 2}


async def test_a_schema_step_fills_typed_columns_that_later_steps_can_use(
    server: FakeLLMServer,
) -> None:
    steps = [
        kit.Step("review", template="Grade {topic}", model="m-review", schema=Review),
        kit.Step("note", template="grade {review_grade}: {review_reason}", model="m-draft"),
    ]
    result = await kit.run_pipeline(topics(3), steps, **wire(server))
    assert (result["status"] == "ok").all()
    assert str(result["review_grade"].dtype) == "Int64"
    assert result["note"].str.contains("grade").all()


async def test_retry_failed_resumes_at_the_failed_step_without_paying_again(
    server: FakeLLMServer,
) -> None:
    df = topics(4, hints={1: " [[status=500 times=1]]", 3: " [[status=500 times=1]]"})
    steps = three_steps()
    first = await kit.run_pipeline(df, steps, **wire(server, max_attempts=1))
    assert first["failed_step"].fillna("").tolist() == ["", "draft", "", "draft"]
    assert by_model(server) == {"m-facts": 4, "m-draft": 4, "m-review": 2}
    again = await kit.retry_failed(first)
    assert (again["status"] == "ok").all()
    assert by_model(server) == {"m-facts": 4, "m-draft": 6, "m-review": 4}  # facts not re-run
    assert again["facts"].tolist() == first["facts"].tolist()
    assert again["draft_attempts"].tolist() == [1, 2, 1, 2]  # the failed attempt counts
    assert again["failed_step"].isna().all()
    assert (again["cost_usd"] >= first["cost_usd"]).all()


async def test_retry_failed_in_another_process_needs_the_steps_again(
    server: FakeLLMServer,
) -> None:
    from notebook_kit import history

    df = topics(2, hints={0: " [[status=500 times=1]]"})
    first = await kit.run_pipeline(df, three_steps(), **wire(server, max_attempts=1))
    history._runs.clear()  # as if loaded in a new kernel
    with pytest.raises(kit.ConfigError, match="pass them again"):
        await kit.retry_failed(first)
    with pytest.raises(kit.ConfigError, match="made by the steps"):
        await kit.retry_failed(first, steps=three_steps()[:2], **wire(server))
    again = await kit.retry_failed(first, steps=three_steps(), **wire(server))
    assert (again["status"] == "ok").all()
    assert by_model(server)["m-facts"] == 2


async def test_stop_keeps_every_step_that_finished(server: FakeLLMServer) -> None:
    server.configure(model_latency={"m-draft": {"latency": 30.0}})
    job = kit.start(topics(6), steps=three_steps(concurrency=2), **wire(server))
    await eventually(lambda: server.stats()["in_flight_by_model"].get("m-draft") == 2)
    job.cancel()
    result = await job
    assert (result["facts_status"] == "ok").all()
    assert (result["status"] == "cancelled").all()
    assert (result["failed_step"] == "draft").all()
    assert (result["draft_status"] == "cancelled").all()
    assert result["review_status"].isna().all()
    await eventually(lambda: server.stats()["in_flight"] == 0)


async def test_a_run_error_in_a_later_step_stops_the_pipeline_and_keeps_the_rest(
    server: FakeLLMServer,
) -> None:
    server.configure(models=["m-facts", "m-review"])  # the draft model does not exist
    with pytest.raises(kit.ModelNotFoundError) as caught:
        await kit.run_pipeline(topics(8), three_steps(), **wire(server))
    partial = caught.value.partial
    assert partial is not None and len(partial) == 8
    assert (partial["facts_status"] == "ok").sum() >= 1
    assert (partial["status"] != "ok").all()
    assert "m-review" not in by_model(server)


async def test_the_budget_covers_the_whole_pipeline(server: FakeLLMServer, priced: None) -> None:
    steps = [
        kit.Step("facts", template="{topic}", concurrency=1),
        kit.Step("draft", template="{facts}", concurrency=1),
    ]
    options = wire(server, model="priced-model", max_tokens=20, budget_usd=0.15)
    result = await kit.run_pipeline(topics(20), steps, **options)
    assert result["cost_usd"].sum() <= 0.15
    assert (result["status"] == "cancelled").any()
    assert "budget" in result.attrs["notebook_kit"]["stopped"]


async def test_set_concurrency_names_a_step(server: FakeLLMServer) -> None:
    server.configure(model_latency={"m-draft": {"latency": 0.2}})
    job = kit.start(topics(12), steps=three_steps(concurrency=1), **wire(server))
    with pytest.raises(kit.ConfigError, match="step= one of"):
        job.set_concurrency(3)
    with pytest.raises(kit.ConfigError, match="step= one of"):
        job.set_concurrency(3, step="nope")
    job.set_concurrency(step="draft", value=4)
    result = await job
    assert (result["status"] == "ok").all()
    assert server.stats()["peak_in_flight_by_model"]["m-draft"] > 1
    snap = job.snapshot()
    assert [s.step for s in snap.steps] == ["facts", "draft", "review"]
    assert snap.steps[1].target == 4


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([kit.Step("facts", template="{topic}"), kit.Step("facts", template="{topic}")], "facts"),
        ([kit.Step("facts", template="{draft}"), kit.Step("draft", template="{topic}")], "after"),
        ([kit.Step("facts", template="{topc}")], "Did you mean 'topic'"),
        ([kit.Step("topic", template="{hint}")], "the frame already has"),
        ([kit.Step("facts", template="{topic}"), kit.Step("facts_status", fn=len)], "facts_status"),
        ([kit.Step("failed_step", template="{topic}")], "kit's columns"),
        ([], "non-empty list"),
        (["{topic}"], "kit.Step"),
    ],
)
async def test_bad_steps_are_refused_before_any_request(
    server: FakeLLMServer, steps: list[Any], message: str
) -> None:
    with pytest.raises(kit.ConfigError, match=message):
        await kit.run_pipeline(topics(2), steps, **wire(server))
    assert server.stats()["requests_total"] == 0


def test_bad_step_definitions_say_what_is_wrong() -> None:
    with pytest.raises(kit.ConfigError, match="Python identifier"):
        kit.Step("two words", template="{x}")
    with pytest.raises(kit.ConfigError, match="either template"):
        kit.Step("s")
    with pytest.raises(kit.ConfigError, match="either template"):
        kit.Step("s", template="{x}", fn=len)
    with pytest.raises(kit.ConfigError, match="whole pipeline"):
        kit.Step("s", template="{x}", budget_usd=1)
    with pytest.raises(kit.ConfigError, match="template is not valid"):
        kit.Step("s", template="{x")
    with pytest.raises(kit.ConfigError, match="takes no"):
        kit.Step("s", fn=len, model="m")
    with pytest.raises(kit.ConfigError, match="belongs to a step"):
        kit.run_pipeline_sync(topics(1), [kit.Step("s", template="{topic}")], schema=Review)
    with pytest.raises(kit.ConfigError, match="concurrency must be"):
        kit.run_pipeline_sync(topics(1), [kit.Step("s", template="{topic}", concurrency=0)])


def test_run_pipeline_sync_on_the_demo_model_and_estimate_per_step() -> None:
    demo = kit.DemoProvider(latency=0.0)
    steps = [
        kit.Step("facts", template="Facts on {topic}", concurrency=3),
        kit.Step("draft", template="Draft from {facts}", max_tokens=50),
    ]
    result = kit.run_pipeline_sync(topics(5), steps, provider=demo, cache=False, progress=False)
    assert (result["status"] == "ok").all()
    table = kit.estimate(topics(5), steps, provider=demo, cache=False)
    assert list(table.index) == ["facts", "draft", "total"]
    assert table.loc["facts", "requests"] == 5 and table.loc["draft", "requests"] == 5
    assert table.loc["total", "requests"] == 10
    tokens = table["input_tokens"]
    assert int(tokens["draft"]) > int(tokens["facts"])  # the facts stand in for the reply
