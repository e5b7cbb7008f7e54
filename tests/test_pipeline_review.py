"""Pipeline edges a review found: values that break numpy, steps whose client fails, Stop
after a run error, re-runs of skipped rows, counters, models of queued rows, keys in reprs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pandas as pd
import pytest
from conftest import KEY, eventually
from fake_server import FakeLLMServer

import notebook_kit as kit
from notebook_kit.clock import Clock
from notebook_kit.events import AttemptStarted
from notebook_kit.pipeline import Pipeline


def topics(n: int, **more: list[Any]) -> pd.DataFrame:
    return pd.DataFrame({"topic": [f"topic {i}" for i in range(n)], **more})


def demo(**options: Any) -> dict[str, Any]:
    return {"provider": kit.DemoProvider(latency=0.01), "cache": False, "progress": False,
            **options}  # fmt: skip


def wire(server: FakeLLMServer, **options: Any) -> dict[str, Any]:
    return {"provider": "openai", "base_url": server.openai_base_url, "api_key": KEY,
            "cache": False, "progress": False, **options}  # fmt: skip


class NoArray:
    """Like a GPU tensor: numpy cannot turn it into an array."""

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("can't convert cuda:0 device type tensor to numpy")

    def __len__(self) -> int:
        raise RuntimeError("no len either")


async def test_a_value_numpy_cannot_read_fails_its_row_and_the_frame_is_built() -> None:
    steps = [
        kit.Step("made", fn=lambda row: NoArray()),
        kit.Step("asked", template="about {made}"),
    ]
    result = await asyncio.wait_for(kit.run_pipeline(topics(3), steps, **demo()), 10)
    assert (result["failed_step"] == "asked").all()
    assert (result["asked_error_type"] == "unexpected").all()
    assert isinstance(result["made"].iloc[0], NoArray)  # stored as is


class BrokenClient(kit.DemoProvider):
    @asynccontextmanager
    async def session(self, *, timeout: float, clock: Clock) -> AsyncIterator[Any]:
        if self.latency >= 0:
            raise RuntimeError("the client would not open")
        yield None


@pytest.mark.parametrize("broken_first", [True, False])
async def test_a_step_whose_client_fails_stops_the_pipeline(broken_first: bool) -> None:
    broken, fine = BrokenClient(latency=0.01), kit.DemoProvider(latency=0.01)
    steps = [
        kit.Step("a", template="{topic}", provider=broken if broken_first else fine),
        kit.Step("b", template="{a}", provider=fine if broken_first else broken),
        kit.Step("c", template="{b}", provider=fine),
    ]
    with pytest.raises(RuntimeError, match="would not open"):
        await asyncio.wait_for(kit.run_pipeline(topics(5), steps, cache=False), 10)
    partial = kit.last_result()
    assert partial is not None and (partial["status"] != "ok").all()


async def test_stop_after_a_run_error_cancels_the_requests_still_in_flight(
    server: FakeLLMServer,
) -> None:
    server.configure(models=["m-a"])  # step b's model does not exist
    df = topics(4, hint=["", "", " [[latency=30]]", " [[latency=30]]"])
    steps = [
        kit.Step("a", template="{topic}{hint}", model="m-a"),
        kit.Step("b", template="{a}", model="m-b"),
    ]
    job = kit.start(df, steps=steps, **wire(server))
    await eventually(lambda: job.state == "stopping")  # the 404 halted every step
    await eventually(lambda: server.stats()["in_flight"] == 2)  # step a's slow rows, still on
    job.cancel()
    with pytest.raises(kit.ModelNotFoundError):
        await asyncio.wait_for(job, 5)
    await eventually(lambda: server.stats()["in_flight"] == 0)


def no_hint(row: dict[str, Any]) -> bool:
    return bool(row["hint"] == "")


async def test_retry_failed_takes_rows_that_every_step_skipped_and_keeps_ok_rows_ok() -> None:
    df = pd.DataFrame({"topic": ["owls", None, "tea"], "hint": ["", "", "[x]"]})
    flaky = kit.DemoProvider(latency=0.01, error_rate=1.0)
    steps = [
        kit.Step("a", template="{topic}"),
        kit.Step(
            "b", template="{a}", provider=flaky, max_attempts=1, when=lambda row: row["hint"] == ""
        ),
        kit.Step("c", template="{b}"),
    ]
    first = await kit.run_pipeline(df, steps, **demo())
    assert first["status"].tolist() == ["error", "skipped", "ok"]
    steps[1] = kit.Step("b", template="{a}", when=lambda row: False)  # now skipped
    again = await kit.retry_failed(first, steps=steps)
    assert again["status"].tolist() == ["ok", "skipped", "ok"]  # a ok, b and c skipped: ok
    assert again["a_attempts"].tolist() == [1, 0, 1]  # a was not asked again


async def test_function_steps_do_not_count_requests_twice(server: FakeLLMServer) -> None:
    steps = [
        kit.Step("a", template="{topic}"),
        kit.Step("n", fn=lambda row: 1),
        kit.Step("m", fn=lambda row: 2),
        kit.Step("b", template="{a}"),
    ]
    result = await kit.run_pipeline(topics(5), steps, **wire(server))
    assert result.attrs["notebook_kit"]["requests"] == server.stats()["requests_total"] == 10


async def test_a_model_chosen_mid_run_applies_to_rows_already_queued_for_the_step() -> None:
    provider = kit.DemoProvider(latency=0.05, jitter=0.0)
    steps = [
        kit.Step("a", template="{topic}", concurrency=20),
        kit.Step("b", template="{a}", concurrency=1),
    ]
    job = kit.start(topics(20), steps=steps, provider=provider, cache=False, progress=False)
    await eventually(lambda: len(job.snapshot().steps) == 2 and job.snapshot().steps[1].done >= 2)
    job.set_model("demo-large", step="b")
    await job
    assert isinstance(job.engine, Pipeline)
    models = [r.model for r in job.engine.engines[1].results.values()]
    assert models.count("demo-large") >= 15  # every row not sent yet, queued ones included


def test_the_plan_of_a_pipeline_shows_no_key() -> None:
    from notebook_kit.pipeline_job import new_job

    job = new_job(topics(1), [kit.Step("a", template="{topic}")], {"api_key": KEY,
                  "base_url": "http://127.0.0.1:9", "cache": False}, entry="start")  # fmt: skip
    assert KEY not in repr(job.plan) and KEY not in repr(job.plan.stages)


async def test_async_when_is_refused_per_row_and_nothing_is_sent() -> None:
    async def maybe(row: dict[str, Any]) -> bool:
        return False

    steps = [kit.Step("a", template="{topic}", when=maybe)]
    result = await kit.run_pipeline(topics(2), steps, **demo())
    assert (result["a_error_type"] == "function_error").all()
    assert result["a_error"].str.contains("async function cannot").all()
    assert (result["a_attempts"] == 0).all()


def test_duplicate_column_names_are_refused_before_anything_runs() -> None:
    df = pd.DataFrame([[1, 2]], columns=["x", "x"])
    with pytest.raises(kit.ConfigError, match="named twice"):
        kit.run_pipeline_sync(df, [kit.Step("a", fn=lambda row: 1)], progress=False)


async def test_limits_and_cached_rows_in_a_pipeline(tmp_path: Any) -> None:
    options = demo(cache=tmp_path / "c.sqlite", limits=kit.Limits(concurrency=3))
    steps = [kit.Step("a", template="{topic}", limits=kit.Limits(concurrency=2)),
             kit.Step("b", template="{a}")]  # fmt: skip
    await kit.run_pipeline(topics(4), steps, **options)
    again = await kit.run_pipeline(topics(4), steps, **options)
    assert again["a_cached"].all() and again["b_cached"].all()
    assert again.attrs["notebook_kit"]["cached_rows"] == 8  # step results from the cache


async def test_an_async_function_step_awaits_at_most_its_concurrency() -> None:
    running, peak = 0, 0

    async def lookup(row: dict[str, Any]) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return "found"

    steps = [kit.Step("found", fn=lookup, concurrency=3)]
    result = await kit.run_pipeline(topics(30), steps, **demo())
    assert (result["found"] == "found").all()
    assert peak == 3


async def test_retry_failed_when_rows_fail_again_and_later_steps_stay_empty() -> None:
    flaky = kit.DemoProvider(latency=0.01, error_rate=1.0)
    steps = [
        kit.Step("a", template="{topic}"),
        kit.Step("b", template="{a}", provider=flaky, max_attempts=1),
        kit.Step("c", template="{b}"),
    ]
    first = await kit.run_pipeline(topics(3), steps, **demo())
    again = await kit.retry_failed(first)  # b fails again: c stays NA for every row
    assert (again["failed_step"] == "b").all()
    assert again["c_status"].isna().all() and (again["status"] == "error").all()
    assert again["b_attempts"].tolist() == [2, 2, 2]


async def test_a_model_menu_is_refused_for_a_pipeline() -> None:
    with pytest.raises(kit.ConfigError, match="give each step its model"):
        kit.start(topics(1), steps=[kit.Step("a", template="{topic}")], models=["x"])


async def test_a_429_cools_down_its_own_endpoint_only(server: FakeLLMServer) -> None:
    server.configure(latency=0.02)
    df = topics(6, hint=[" [[429 retry_after=3 times=1]]"] + [""] * 5)
    steps = [
        kit.Step("a", template="{topic}{hint}", model="m-a"),
        kit.Step("b", template="{a}", model="m-b"),  # another endpoint
    ]
    result = await kit.run_pipeline(df, steps, **wire(server))
    assert (result["status"] == "ok").all()
    attempts = kit.report(result).attempts()
    rejected_at = attempts.query("outcome == 'rate_limit'")["end_s"].min()
    b_starts = attempts.query("step == 'b' and row > 0")["start_s"]
    assert (b_starts < rejected_at + 3.0).all()  # step b did not wait out step a's 429
    a_retry = attempts.query("step == 'a' and row == 0 and attempt == 2")["start_s"].min()
    assert a_retry >= rejected_at + 2.9  # step a's own endpoint did


@pytest.mark.looptime
async def test_pause_holds_every_endpoint() -> None:
    steps = [
        kit.Step("a", template="{topic}", provider=kit.DemoProvider(latency=1.0, jitter=0)),
        kit.Step("b", template="{a}", provider=kit.DemoProvider(latency=2.0, jitter=0)),
    ]
    starts: list[float] = []
    job = kit.start(topics(20), steps=steps, cache=False, progress=False, concurrency=2)
    job.subscribe(lambda event: starts.append(event.t), (AttemptStarted,))
    await asyncio.sleep(3.5)  # virtual seconds: both steps are busy
    job.pause()
    paused_at = len(starts)
    await asyncio.sleep(60.0)  # paused for a virtual minute: nothing starts anywhere
    assert len(starts) == paused_at and job.state == "paused"
    job.resume()
    result = await job
    assert (result["status"] == "ok").all() and len(starts) == 40
