"""The fake server's per-model latency (`model_latency`) and per-model counts
(`requests_by_model`, `in_flight_by_model`, `peak_in_flight_by_model`), with the real
openai client."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import openai
import pytest
from conftest import eventually
from fake_server import FakeLLMServer, Settings
from fake_server.__main__ import _parse_args
from openai.types.chat import ChatCompletion


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(latency=0.01, seed=3) as server:
        yield server


@pytest.fixture
async def oai(server: FakeLLMServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
    yield client
    await client.close()


async def ask(client: openai.AsyncOpenAI, model: str, prompt: str) -> ChatCompletion:
    completion: ChatCompletion = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}]
    )
    return completion


# -- latency -----------------------------------------------------------------


async def test_each_model_gets_its_own_latency(
    server: FakeLLMServer, oai: openai.AsyncOpenAI
) -> None:
    server.configure(
        model_latency={"slow": {"latency": 0.05}, "drawn": {"median": 0.02, "sigma": 0.0}}
    )

    await ask(oai, "slow", "one")
    await ask(oai, "other", "two")  # not in the map: the global latency
    await ask(oai, "slow", "[[latency=0.03]] three")  # the directive wins
    await ask(oai, "drawn", "four")  # lognormal with sigma 0: its median
    await ask(oai, "slow", "five")

    stats = server.stats()
    assert stats["latencies"][:3] == [0.05, 0.01, 0.03]
    assert stats["latencies"][3] == pytest.approx(0.02)
    assert stats["latencies"][4] == 0.05
    assert stats["requests_by_model"] == {"slow": 3, "other": 1, "drawn": 1}
    assert stats["peak_in_flight_by_model"] == {"slow": 1, "other": 1, "drawn": 1}
    # a request leaves the count just after its reply is written
    await eventually(lambda: server.stats()["in_flight_by_model"] == {})


async def test_lognormal_model_latency_is_drawn(
    server: FakeLLMServer, oai: openai.AsyncOpenAI
) -> None:
    server.configure(model_latency={"drawn": {"median": 0.002, "sigma": 0.5}})

    for i in range(6):
        await ask(oai, "drawn", f"p{i}")

    latencies = server.stats()["latencies"]
    assert len(set(latencies)) == 6
    assert all(latency > 0 and latency != 0.01 for latency in latencies)


async def test_model_latency_over_http_control(
    server: FakeLLMServer, oai: openai.AsyncOpenAI
) -> None:
    table = {"facts": {"median": 0.3, "sigma": 0.5}, "fast": {"latency": 0.02}}
    async with aiohttp.ClientSession(server.url) as http:
        async with http.post("/_config", json={"model_latency": table}) as response:
            assert response.status == 200
            assert (await response.json())["model_latency"] == table
        bad = {"model_latency": {"fast": {"latency": -1}}}
        async with http.post("/_config", json=bad) as response:
            assert response.status == 400
            error = (await response.json())["error"]
            assert "model_latency['fast']['latency'] must be >= 0" in error
        async with http.get("/_config") as response:
            assert (await response.json())["model_latency"] == table  # the bad one left none

    await ask(oai, "fast", "hi")

    assert server.stats()["latencies"] == [0.02]


def test_model_latency_on_the_command_line() -> None:
    argv = ["--latency", "0.1", "--model-latency", '{"draft": {"median": 0.9, "sigma": 0.5}}']

    _, settings = _parse_args(argv)

    assert settings == {"latency": 0.1, "model_latency": {"draft": {"median": 0.9, "sigma": 0.5}}}
    assert Settings(**settings).model_latency == {"draft": {"median": 0.9, "sigma": 0.5}}
    with pytest.raises(SystemExit):
        _parse_args(["--model-latency", "[1, 2]"])


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"m": {"median": 0, "sigma": 0.5}}, "model_latency['m']['median'] must be > 0"),
        ({"m": {"median": -1.0, "sigma": 0.5}}, "must be > 0"),
        ({"m": {"median": 1.0, "sigma": -0.1}}, "model_latency['m']['sigma'] must be >= 0"),
        ({"m": {"latency": -0.5}}, "model_latency['m']['latency'] must be >= 0"),
        ({"m": {"latency": math.nan}}, "must be a finite number"),
        ({"m": {"latency": math.inf}}, "must be a finite number"),
        ({"m": {"latency": "1"}}, "must be a finite number"),
        ({"m": {"latency": True}}, "must be a finite number"),
        ({"m": {"median": 1.0}}, "model_latency['m'] must be"),  # sigma missing
        ({"m": {"median": 1.0, "sigma": 0.1, "latency": 1}}, "model_latency['m'] must be"),
        ({"m": {"mean": 1.0}}, "model_latency['m'] must be"),
        ({"m": 0.5}, "model_latency['m'] must be"),
        ({1: {"latency": 1.0}}, "keys must be model names"),
        ([("m", {"latency": 1.0})], "model_latency must map model names"),
    ],
)
def test_bad_model_latency_is_refused(table: Any, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        Settings(model_latency=table)
    assert message in str(refused.value)

    with FakeLLMServer(model_latency={"m": {"latency": 0.1}}) as server:
        with pytest.raises(ValueError):
            server.configure(model_latency=table)
        assert server.settings.model_latency == {"m": {"latency": 0.1}}


def test_model_latency_is_copied() -> None:
    table: dict[str, Any] = {"m": {"latency": 1}}
    settings = Settings(model_latency=table)
    table["m"]["latency"] = -1

    assert settings.model_latency == {"m": {"latency": 1.0}}


# -- per-model counts --------------------------------------------------------


async def test_peak_in_flight_by_model(server: FakeLLMServer, oai: openai.AsyncOpenAI) -> None:
    # long enough that all eight are in flight together; they are cancelled once seen
    server.configure(model_latency={"a": {"latency": 60.0}, "b": {"latency": 60.0}})
    prompts = [("a", f"a{i}") for i in range(3)] + [("b", f"b{i}") for i in range(5)]
    tasks = [asyncio.create_task(ask(oai, model, prompt)) for model, prompt in prompts]
    try:
        await eventually(lambda: server.stats()["in_flight_by_model"] == {"a": 3, "b": 5})
        stats = server.stats()
        assert stats["peak_in_flight_by_model"] == {"a": 3, "b": 5}
        assert stats["requests_by_model"] == {"a": 3, "b": 5}
        assert stats["peak_in_flight"] == 8  # every model together, as before

        server.reset_stats()  # the peaks start again from what is in flight
        after_reset = server.stats()
        assert after_reset["requests_by_model"] == {}
        assert after_reset["in_flight_by_model"] == {"a": 3, "b": 5}
        assert after_reset["peak_in_flight_by_model"] == {"a": 3, "b": 5}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    await eventually(lambda: server.stats()["in_flight"] == 0)
    stats = server.stats()
    assert stats["in_flight_by_model"] == {}  # the disconnected ones left their model's count
    assert stats["peak_in_flight_by_model"] == {"a": 3, "b": 5}
    assert stats["disconnects"] == 8


async def test_rejected_requests_count_by_model(server: FakeLLMServer) -> None:
    server.configure(models=["known"])
    client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
    await ask(client, "known", "hi")
    with pytest.raises(openai.NotFoundError):
        await ask(client, "unknown", "hi")
    await client.close()
    async with (
        aiohttp.ClientSession(server.url) as http,
        http.post("/v1/chat/completions", data=b"not json") as response,
    ):
        assert response.status == 400

    stats = server.stats()
    assert stats["requests_total"] == 3
    assert stats["requests_by_model"] == {"known": 1, "unknown": 1}  # not JSON: no model's
    assert stats["peak_in_flight_by_model"] == {"known": 1, "unknown": 1}
    await eventually(lambda: server.stats()["in_flight_by_model"] == {})
