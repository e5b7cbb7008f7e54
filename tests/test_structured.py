"""Structured output (schema=): typed columns, re-asks, invalid rows kept as data.

Over the wire against the fake server with both SDKs (it honours json_schema requests and
spoils replies on demand), and offline on the demo model on virtual time.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
from typing import Any, Literal

import pandas as pd
import pydantic
import pytest
from conftest import KEY, quick_retries
from fake_server import FakeLLMServer
from pydantic.alias_generators import to_camel
from typing_extensions import TypedDict

import notebook_kit as kit

pytestmark = pytest.mark.usefixtures("request_path")  # the lean path and the SDK's

APIS = ["openai", "anthropic"]


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Ticket(pydantic.BaseModel):
    team: Literal["billing", "shipping", "technical", "other"]
    priority: int = pydantic.Field(ge=1, le=5)
    summary: str
    urgent: bool
    score: float
    color: Color
    when: datetime.datetime | None = None
    tags: list[str]


class Other(pydantic.BaseModel):
    label: str


async def run(server: FakeLLMServer, api: str, prompts: list[str], **options: Any) -> pd.DataFrame:
    url = server.openai_base_url if api == "openai" else server.anthropic_base_url
    options.setdefault("progress", False)
    options.setdefault("cache", False)
    quick_retries(options)
    df = pd.DataFrame({"prompt": prompts})
    return await kit.run_df(df, "prompt", provider=api, base_url=url, api_key=KEY, **options)


@pytest.mark.parametrize("api", APIS)
async def test_valid_replies_fill_typed_columns(server: FakeLLMServer, api: str) -> None:
    result = await run(server, api, ["route a", "route b"], schema=Ticket)
    assert (result["status"] == "ok").all() and result["attempts"].eq(1).all()
    assert result["team"].tolist() == ["billing", "billing"]  # the server's plainest answer
    dtypes = {name: str(result[name].dtype) for name in ("team", "priority", "summary")}
    assert dtypes == {"team": "category", "priority": "Int64", "summary": "string"}
    assert list(result["team"].cat.categories) == ["billing", "shipping", "technical", "other"]
    assert str(result["urgent"].dtype) == "boolean" and str(result["score"].dtype) == "Float64"
    assert list(result["color"].cat.categories) == ["red", "blue"]
    assert str(result["when"].dtype).startswith("datetime64")
    assert result["tags"].dtype == object and result["tags"].tolist() == [[], []]
    assert all(isinstance(p, Ticket) for p in result["parsed"])
    assert result["response"].str.startswith("{").all()  # the raw reply is kept


class Camel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(alias_generator=to_camel, populate_by_name=True)
    team_name: Literal["billing", "shipping"]
    open_count: int


@pytest.mark.parametrize("api", APIS)
async def test_aliased_fields_fill_columns_named_as_in_the_model(
    server: FakeLLMServer, api: str
) -> None:
    result = await run(server, api, ["route a"], schema=Camel)
    row = result.iloc[0].to_dict()
    assert row["status"] == "ok" and "teamName" in row["response"]
    assert row["team_name"] == "billing" and not pd.isna(row["open_count"])
    dtypes = (str(result["team_name"].dtype), str(result["open_count"].dtype))
    assert dtypes == ("category", "Int64")


@pytest.mark.parametrize("api", APIS)
async def test_a_reply_that_does_not_fit_is_re_asked_with_the_error(
    server: FakeLLMServer, api: str
) -> None:
    result = await run(server, api, ["[[invalid_json times=1]] route me"], schema=Ticket)
    assert result.loc[0, "status"] == "ok" and result.loc[0, "attempts"] == 2
    first, second = server.stats()["last_messages"]
    assert first.startswith("[[invalid_json")  # the row's own prompt
    assert "did not match the required JSON schema: team: Field required" in second


@pytest.mark.parametrize("api", APIS)
async def test_a_row_that_never_fits_is_data(server: FakeLLMServer, api: str) -> None:
    result = await run(
        server, api, ["[[invalid_json]] never", "fine"], schema=Ticket, schema_retries=1
    )
    bad = result.iloc[0].to_dict()
    assert (bad["status"], bad["error_type"], bad["attempts"]) == ("error", "invalid_output", 2)
    assert str(bad["error"]).startswith("the reply does not fit the schema: team: Field required")
    assert bad["response"] == "{}" and pd.isna(bad["team"]) and pd.isna(bad["priority"])
    assert result.loc[1, "status"] == "ok"
    fixed = await kit.retry_failed(result, only=["invalid_output"], schema_retries=0)
    assert fixed.loc[0, "error_type"] == "invalid_output" and fixed.loc[0, "attempts"] == 3


async def test_retry_failed_with_another_schema_is_refused_before_any_call(
    server: FakeLLMServer,
) -> None:
    plain = await run(server, "openai", ["[[status=500 times=9]] a", "b"], max_attempts=1)
    typed = await run(server, "openai", ["[[invalid_json]] c", "d"], schema=Ticket)
    sent = server.stats()["requests_total"]
    for frame, schema, made in ((plain, Ticket, "no schema"), (typed, Other, "schema=Ticket")):
        assert (frame["status"] == "error").sum() == 1
        with pytest.raises(kit.ConfigError, match=f"made with {made}, so its rows cannot be"):
            await kit.retry_failed(frame, schema=schema)
    assert server.stats()["requests_total"] == sent


@pytest.mark.usefixtures("priced")
@pytest.mark.parametrize("api", APIS)
async def test_a_row_shows_every_reply_it_paid_for(server: FakeLLMServer, api: str) -> None:
    prompts = ["[[invalid_json times=1]] a", "[[invalid_json]] b", "c"]
    result = await run(server, api, prompts, schema=Ticket, schema_retries=1, model="priced-model")
    assert result["attempts"].tolist() == [2, 2, 1]
    assert result["status"].tolist() == ["ok", "error", "ok"]
    billed = server.stats()
    assert result["input_tokens"].sum() == billed["tokens_billed_input"]
    assert result["output_tokens"].sum() == billed["tokens_billed_output"]
    assert result["cost_usd"].gt(0).all()  # the row that never fit was paid for too
    meta = result.attrs["notebook_kit"]
    assert meta["cost_usd"] == pytest.approx(result["cost_usd"].sum())
    fixed = await kit.retry_failed(result, schema=Ticket, schema_retries=0)
    assert fixed["attempts"].tolist() == [2, 3, 1]
    assert fixed["input_tokens"].sum() == server.stats()["tokens_billed_input"]
    assert fixed.attrs["notebook_kit"]["cost_usd"] == pytest.approx(fixed["cost_usd"].sum())


@pytest.mark.parametrize("api", APIS)
async def test_refusals_and_cut_replies_are_not_re_asked(server: FakeLLMServer, api: str) -> None:
    result = await run(server, api, ["[[refusal]] no", "[[finish=length]] cut"], schema=Ticket)
    assert result["attempts"].tolist() == [1, 1]
    assert result["error_type"].tolist() == ["refusal", "invalid_output"]
    errors = result["error"].tolist()
    assert errors[0].startswith("the model refused: I can't help")
    assert "cut at max_tokens" in errors[1]
    assert result.loc[1, "finish_reason"] == "length"


async def test_without_a_schema_a_refusal_stays_ok(server: FakeLLMServer) -> None:
    result = await run(server, "openai", ["[[refusal]] no"])
    assert result.loc[0, "status"] == "ok"  # no schema: the server's plain reply


async def test_the_schema_is_part_of_the_cache_key(server: FakeLLMServer, tmp_path: Any) -> None:
    path = tmp_path / "c.sqlite"
    await run(server, "openai", ["a", "b"], schema=Ticket, cache=path)
    await run(server, "openai", ["a", "b"], schema=Other, cache=path)
    assert server.stats()["requests_total"] == 4
    again = await run(server, "openai", ["a", "b"], schema=Ticket, cache=path)
    assert server.stats()["requests_total"] == 4 and again["cached"].all()
    assert again["team"].tolist() == ["billing", "billing"]  # validated again when served


async def test_invalid_replies_are_never_cached(server: FakeLLMServer, tmp_path: Any) -> None:
    path = tmp_path / "c.sqlite"
    prompts = ["[[invalid_json times=2]] late"]
    first = await run(server, "openai", prompts, schema=Ticket, cache=path, schema_retries=0)
    assert first.loc[0, "error_type"] == "invalid_output"
    second = await run(server, "openai", prompts, schema=Ticket, cache=path, schema_retries=0)
    assert second.loc[0, "error_type"] == "invalid_output" and not second.loc[0, "cached"]


def test_clashes_and_unsendable_schemas_are_refused_before_any_call() -> None:
    df = pd.DataFrame({"prompt": ["a"], "team": ["x"]})
    with pytest.raises(kit.ConfigError, match="prefix="):
        kit.run_df_sync(df, "prompt", schema=Ticket, provider="demo")
    result = kit.run_df_sync(df, "prompt", schema=Ticket, prefix="ai_", provider="demo")
    assert {"team", "ai_team", "ai_priority"} <= set(result.columns)

    class Status(pydantic.BaseModel):
        status: str

    with pytest.raises(kit.ConfigError, match="prefix="):
        kit.run_df_sync(df, "prompt", schema=Status, provider="demo")

    class Free(pydantic.BaseModel):
        scores: dict[str, int]

    with pytest.raises(kit.ConfigError, match="'scores' is a mapping with free keys"):
        kit.estimate(df, "prompt", schema=Free, provider="openai", api_key="sk-test")
    with pytest.raises(kit.ConfigError, match="schema= must describe an object"):
        kit.estimate(df, "prompt", schema=int, provider="demo")


@pytest.mark.looptime
async def test_the_demo_model_answers_by_the_schema_and_can_be_re_asked() -> None:
    demo = kit.DemoProvider(latency=0.2, invalid_output_rate=0.3, seed=2)
    df = pd.DataFrame({"prompt": [f"A shipping problem number {i}" for i in range(40)]})
    result = await kit.run_df(df, "prompt", schema=Ticket, provider=demo, progress=False)
    ok = result["status"] == "ok"
    assert ok.sum() >= 36 and (result["attempts"] > 1).sum() > 5  # most re-asks succeeded
    assert result.loc[~ok, "attempts"].eq(3).all()  # the others had every re-ask
    assert result.loc[~ok, "error_type"].eq("invalid_output").all()
    result = result[ok]
    assert (result["team"] == "shipping").all()  # the demo picks the choice the row names
    assert result["priority"].between(1, 5).all()


class Address(pydantic.BaseModel):
    city: str
    zip: int


class Customer(pydantic.BaseModel):
    name: str
    address: Address


@pytest.mark.looptime
async def test_expand_spreads_a_nested_model_one_level() -> None:
    demo = kit.DemoProvider(latency=0.1)
    df = pd.DataFrame({"prompt": ["Customer Ada in Lyon", "Customer Bo in Oslo"]})
    result = await kit.run_df(df, "prompt", schema=Customer, provider=demo, progress=False)
    assert result["address"].dtype == object
    assert isinstance(result["address"].iloc[0], Address)
    flat = kit.expand(result, "address")
    assert {"address_city", "address_zip"} <= set(flat.columns)
    assert str(flat["address_zip"].dtype) == "Int64" and flat.attrs == result.attrs
    with pytest.raises(kit.ConfigError, match="would overwrite"):
        kit.expand(flat, "address")


def test_the_estimate_counts_the_schema_sent_with_every_request() -> None:
    df = pd.DataFrame({"prompt": ["one", "two", "three"]})
    plain = kit.estimate(df, "prompt", provider="demo", cache=False)
    typed = kit.estimate(df, "prompt", provider="demo", cache=False, schema=Ticket)
    extra = typed["value"]["input tokens"] - plain["value"]["input tokens"]
    assert extra == 3 * (len(json.dumps(Ticket.model_json_schema())) // 4)


@dataclasses.dataclass
class Point:
    x: int
    label: str


class Pair(TypedDict):
    left: str
    right: float


@pytest.mark.looptime
@pytest.mark.parametrize("target", [Point, Pair], ids=["dataclass", "typeddict"])
async def test_dataclasses_and_typeddicts_work_too(target: type) -> None:
    demo = kit.DemoProvider(latency=0.1)
    df = pd.DataFrame({"prompt": ["one", "two"]})
    result = await kit.run_df(df, "prompt", schema=target, provider=demo, progress=False)
    assert (result["status"] == "ok").all()
    first = next(name for name in result.columns if name in ("x", "left"))
    assert str(result[first].dtype) in ("Int64", "string")


def test_a_typing_typeddict_on_python_3_11_is_explained() -> None:
    import typing

    class Old(typing.TypedDict):
        a: int

    with pytest.raises(kit.ConfigError, match=r"typing_extensions\.TypedDict"):
        kit.estimate(pd.DataFrame({"prompt": ["a"]}), "prompt", schema=Old, provider="demo")


@pytest.mark.parametrize("api", APIS)
async def test_a_server_refusing_json_schema_is_asked_another_way_once_per_run(
    server: FakeLLMServer, api: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.configure(json_schema_refused=True)
    prompts = [f"route {i}" for i in range(6)]
    result = await run(server, api, prompts, schema=Ticket, concurrency=1)
    assert (result["status"] == "ok").all() and result["attempts"].eq(1).all()
    assert result["team"].tolist() == ["billing"] * 6
    assert server.stats()["requests_total"] == 7  # one refused request, re-sent at once
    switches = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(switches) == 1  # detected once per run, not per row
    if api == "openai":  # json_object: the schema went in a system line
        assert "JSON schema: " in server.stats()["systems_seen"][-1]
