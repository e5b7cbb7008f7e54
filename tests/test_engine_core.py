"""Engine behaviour with an in-process spy provider: task counts, resizing, stop, surprises."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pandas as pd
import pytest
from conftest import eventually

import notebook_kit as kit
from notebook_kit.clock import Clock
from notebook_kit.config import Limits, RunConfig
from notebook_kit.engine import Engine
from notebook_kit.providers.base import Provider
from notebook_kit.reporting import RunReport
from notebook_kit.streaming import Chunks
from notebook_kit.types import Completion, Request, RowStatus


class SpyProvider(Provider):
    """Answers after `latency`; records how many asyncio tasks and calls exist meanwhile."""

    name = "spy"

    def __init__(
        self, latency: float = 0.0, fail_on: str | None = None, census_at: int | None = None
    ) -> None:
        self.default_model = "spy"
        self.census_at = census_at  # on this call, count every coroutine object alive
        self.calls = 0
        self.coroutines: int | None = None
        self.latency = latency
        self.fail_on = fail_on
        self.in_flight = 0
        self.peak_in_flight = 0
        self.peak_tasks = 0
        self.levels: list[int] = []

    @asynccontextmanager
    async def session(self, *, timeout: float, clock: Clock) -> AsyncIterator[SpyProvider]:
        yield self

    async def stream(self, request: Request, chunks: Chunks) -> Completion:
        completion = await self.complete(request)
        chunks.text(completion.text)
        return completion

    async def complete(self, request: Request) -> Completion:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.levels.append(self.in_flight)
        self.peak_tasks = max(self.peak_tasks, len(asyncio.all_tasks()))
        self.calls += 1
        if self.calls == self.census_at:
            self.coroutines = sum(asyncio.iscoroutine(o) for o in gc.get_objects())
        try:
            await asyncio.sleep(self.latency)
        finally:
            self.in_flight -= 1
        prompt = str(request.messages[-1]["content"])
        if self.fail_on and self.fail_on in prompt:
            raise RuntimeError(f"surprise in {prompt}")
        return Completion(text=prompt.upper(), model=request.model)


def engine_for(spy: SpyProvider, *, concurrency: int, rows: int) -> tuple[Engine, list[Request]]:
    """An engine over `rows` distinct requests (identical ones would be sent only once)."""
    config = RunConfig(model="spy", limits=Limits(concurrency=concurrency))
    engine = Engine(spy, config, total=rows)
    requests = [
        Request(key=i, messages=[{"role": "user", "content": f"x{i}"}]) for i in range(rows)
    ]
    return engine, requests


async def test_pending_rows_are_not_tasks() -> None:
    n = 100_000
    spy = SpyProvider(census_at=n // 2)  # mid-run: half the rows are still pending
    df = pd.DataFrame({"prompt": [f"p{i}" for i in range(n)]})
    result = await kit.run_df(
        df, "prompt", provider=spy, concurrency=16, progress=False, cache=False
    )
    assert (result["status"] == "ok").all()
    assert spy.peak_tasks <= 16 + 5  # the rows in flight, the caller, the test runner
    # each row in flight is a chain of a few coroutines; 50,000 pending ones would show
    assert spy.coroutines is not None and spy.coroutines < 16 * 20


async def test_an_unexpected_error_fails_its_row_and_the_run_goes_on() -> None:
    spy = SpyProvider(fail_on="boom")
    df = pd.DataFrame({"prompt": ["a", "boom", "c"]})
    result = await kit.run_df(df, "prompt", provider=spy, progress=False)
    assert result["status"].tolist() == ["ok", "error", "ok"]
    assert result.loc[1, "error_type"] == "unexpected"
    assert "RuntimeError: surprise in boom" in str(result.loc[1, "error"])
    assert result.loc[1, "attempts"] == 1  # not retried


@pytest.mark.looptime
async def test_concurrency_can_be_raised_and_lowered_mid_run() -> None:
    spy = SpyProvider(latency=0.02)
    engine, requests = engine_for(spy, concurrency=2, rows=300)
    report = RunReport(run_id="t")
    report.attach(engine.events)
    run = asyncio.create_task(engine.run(requests))
    # virtual time: replies land together, so look between two landings, never on one
    await asyncio.sleep(0.1013)
    assert spy.peak_in_flight == 2
    engine.set_concurrency(10)
    await asyncio.sleep(0.1007)
    assert spy.in_flight == 10
    engine.set_concurrency(3)
    await asyncio.sleep(0.1011)
    assert spy.in_flight <= 3
    await run
    assert spy.peak_in_flight == 10
    assert [v for _, v in report.limit_changes] == [2, 10, 3]


async def test_stop_right_after_a_row_task_was_created_frees_its_slot() -> None:
    """A task cancelled before its first step never runs its body: its slot must still free."""
    spy = SpyProvider(latency=0.05)
    engine, requests = engine_for(spy, concurrency=2, rows=50)
    run = asyncio.create_task(engine.run(requests))
    for _ in range(200):  # catch the moment the dispatcher has just made new row tasks
        await asyncio.sleep(0)
        if any(row.held and not row.in_flight for row in engine._rows.values()):
            engine.stop()
            break
    else:
        engine.stop()
    await asyncio.wait_for(run, 2)
    assert engine.concurrency.limit.in_use == 0


@pytest.mark.looptime
async def test_stop_cancels_in_flight_and_keeps_finished_rows() -> None:
    spy = SpyProvider(latency=0.05)
    engine, requests = engine_for(spy, concurrency=4, rows=100)
    run = asyncio.create_task(engine.run(requests))
    await asyncio.sleep(0.18)
    engine.stop()
    await asyncio.wait_for(run, 1)
    statuses = [r.status for r in engine.results.values()]
    assert statuses.count(RowStatus.OK) >= 8
    assert statuses.count(RowStatus.CANCELLED) == 4  # the ones in flight
    assert len(engine.results) < 100  # rows never started stay unrun
    assert spy.in_flight == 0


@pytest.mark.looptime
async def test_a_failure_mid_run_stops_every_row_and_keeps_finished_ones() -> None:
    spy = SpyProvider(latency=0.05)
    engine, _ = engine_for(spy, concurrency=3, rows=20)

    def requests() -> Iterator[Request]:
        for i in range(20):
            if i == 12:
                raise ValueError("the input broke at row 12")
            yield Request(key=i, messages=[{"role": "user", "content": f"x{i}"}])

    with pytest.raises(ValueError, match="row 12"):
        await engine.run(requests())
    assert spy.in_flight == 0  # nothing keeps running (and paying) after the failure
    assert not [t for t in asyncio.all_tasks() if "Engine._run_row" in repr(t.get_coro())]
    assert sum(r.status is RowStatus.OK for r in engine.results.values()) >= 6


async def test_raising_the_budget_does_not_undo_a_users_pause() -> None:
    config = RunConfig(model="gpt-4.1-mini", budget_usd=1.0, params={"max_tokens": 10})
    engine = Engine(SpyProvider(), config, total=1)
    assert engine.budget is not None
    engine.pause()
    engine.budget.reached = True  # as when a job paused at the budget
    engine.gate.pause("budget")
    engine.set_budget(5.0)
    assert engine.state == "paused"  # the user's pause holds
    engine.resume()
    assert engine.state == "running"


class Starts(SpyProvider):
    """The spy, noting when (on the loop's clock) each request started."""

    def __init__(self, latency: float) -> None:
        super().__init__(latency=latency)
        self.started: list[float] = []

    async def complete(self, request: Request) -> Completion:
        self.started.append(asyncio.get_running_loop().time())
        return await super().complete(request)


@pytest.mark.looptime
@pytest.mark.parametrize("closing", ["pause", "429 cool-down"])
async def test_rows_queued_in_the_rpm_meter_start_nothing_while_the_gate_is_closed(
    closing: str,
) -> None:
    spy = Starts(latency=0.1)
    config = RunConfig(model="spy", limits=Limits(concurrency=4, rpm=6, headroom=1.0))
    engine = Engine(spy, config, total=6)
    requests = [Request(key=i, messages=[{"role": "user", "content": f"x{i}"}]) for i in range(6)]
    run = asyncio.create_task(engine.run(requests))
    await eventually(lambda: spy.calls == 1)  # three more rows now wait in the rpm meter
    closed_at = asyncio.get_running_loop().time()
    if closing == "pause":
        engine.pause()
        await asyncio.sleep(60)
        engine.resume()
    else:
        engine.gate.cool_down(45)
    await run
    assert sum(closed_at < t < closed_at + 45 for t in spy.started) == 0
    assert [r.status for r in engine.results.values()] == [RowStatus.OK] * 6


@pytest.mark.looptime
@pytest.mark.usefixtures("priced")
async def test_a_budget_set_mid_run_counts_the_requests_in_flight() -> None:
    spy = Starts(latency=10.0)
    config = RunConfig(model="priced-model", limits=Limits(concurrency=4), params={"max_tokens": 1})
    engine = Engine(spy, config, total=12)
    msgs = [Request(key=i, messages=[{"role": "user", "content": f"x{i}"}]) for i in range(12)]
    run = asyncio.create_task(engine.run(msgs))
    await eventually(lambda: spy.in_flight == 4)
    engine.set_budget(0.1)  # the four in flight may cost $0.108: nothing more fits
    assert engine.budget is not None and engine.budget.budget.reserved > 0.1
    await run
    assert spy.calls == 4
    assert engine.stop_reason is not None and "budget is reached" in engine.stop_reason
