"""Shared fixtures: the fake LLM server, and a clean environment without real keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from fake_server import FakeLLMServer

import notebook_kit as kit
from notebook_kit.engine import Engine
from notebook_kit.pipeline import Pipeline

KEY = "sk-test-SENTINEL-0123456789abcdef"


async def eventually(condition: Callable[[], bool]) -> None:
    """Give the server (in another thread) up to 2 s to reach `condition`."""
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached within 2 s")


def quick_retries(options: dict[str, Any]) -> dict[str, Any]:
    """Backoffs of milliseconds: wire tests check what is retried; how long the waits are is
    tested on virtual time (test_virtual_time.py)."""
    if "retry" not in options:
        attempts = options.pop("max_attempts", 5)
        options["retry"] = kit.RetryPolicy(
            max_attempts=attempts, backoff_base=0.01, backoff_max=0.05
        )
    return options


@pytest.fixture(autouse=True)
def close_the_loop_looptime_makes(request: pytest.FixtureRequest) -> Iterator[None]:
    """looptime's plugin asks the policy for a loop around every test; for a sync test that
    creates one nobody closes (a ResourceWarning in a later test). Close it here."""
    yield
    if asyncio.iscoroutinefunction(request.function):
        return
    policy = asyncio.get_event_loop_policy()
    try:
        loop = policy.get_event_loop()
    except RuntimeError:  # none: set_event_loop(None) was called, so no more are made
        return
    if not loop.is_running():
        loop.close()
        policy.set_event_loop(None)


@pytest.fixture
def priced() -> Iterator[None]:
    """The model "priced-model" costs $0.001 per token, in and out, for this test."""
    from notebook_kit.pricing import _custom, price_of

    kit.set_price("priced-model", input=1000.0, output=1000.0)
    yield
    _custom.clear()
    price_of.cache_clear()


@pytest.fixture(autouse=True)
def nothing_held_after_a_run() -> Iterator[None]:
    """After every test, the last finished run holds no concurrency slot and no budget
    reservation, whatever its rows went through (errors, 429s, timeouts, stops)."""
    yield
    job = kit.last_job()
    scheduler = job.engine if job is not None else None
    if scheduler is None or job is None or job.result is None:
        return
    engines = scheduler.engines.values() if isinstance(scheduler, Pipeline) else [scheduler]
    for engine in engines:
        if not isinstance(engine, Engine):  # a batch job holds no slot
            continue
        assert engine.concurrency.limit.in_use == 0, "a concurrency slot was not released"
        if engine.budget is not None:
            assert engine.budget.budget.reserved == 0, "a budget reservation was not settled"


@pytest.fixture(autouse=True)
def no_real_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reaches a real provider (the machine's keys and base URLs are removed), and
    each test has its own empty cache file."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NOTEBOOK_KIT_CACHE", str(tmp_path / "cache.sqlite"))


@pytest.fixture
async def oai(server: FakeLLMServer) -> AsyncIterator[openai.AsyncOpenAI]:
    """The openai SDK's client on the (module's) fake server, without the SDK's retries."""
    client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key=KEY, max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def claude(server: FakeLLMServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """The anthropic SDK's client on the (module's) fake server, without its retries."""
    client = anthropic.AsyncAnthropic(
        base_url=server.anthropic_base_url, api_key=KEY, max_retries=0
    )
    yield client
    await client.close()


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(api_key=KEY, seed=7) as fake:
        yield fake


@pytest.fixture(params=["fast", "sdk"])
def request_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test runs twice: on the SDK providers' lean request path, and on the SDK's own."""
    fast = request.param == "fast"
    monkeypatch.setattr(kit.OpenAIProvider, "fast_default", fast)
    monkeypatch.setattr(kit.AnthropicProvider, "fast_default", fast)
    return str(request.param)
