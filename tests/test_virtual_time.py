"""Scheduling on virtual time: events, retries, 429s, pauses and adaptive limits.

Every test here runs on looptime's time-compacting event loop: the kit's clock is the
loop's, so latencies, backoffs, Retry-After waits and cool-downs take no real time, and
"nothing happened for 30 s" is a deterministic statement, not a sleep and a hope.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import looptime
import pandas as pd
import pytest

import notebook_kit as kit
from notebook_kit.clock import Cancellable, LoopClock
from notebook_kit.config import RunConfig
from notebook_kit.engine import Engine
from notebook_kit.events import (
    AttemptFinished,
    AttemptStarted,
    Event,
    LimitChanged,
    RowFinished,
    RowStarted,
    RunFinished,
)
from notebook_kit.types import Request

pytestmark = pytest.mark.looptime


def prompts(n: int, prefix: str = "question") -> pd.DataFrame:
    return pd.DataFrame({"prompt": [f"{prefix} {i}" for i in range(n)]})


async def run(df: pd.DataFrame, provider: kit.DemoProvider, **options: Any) -> pd.DataFrame:
    now()  # on virtual time
    options.setdefault("progress", False)
    options.setdefault("cache", False)
    return await kit.run_df(df, "prompt", provider=provider, **options)


def now() -> float:
    """The loop's (virtual) time; fails if the test runs on real time by mistake."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, looptime.LoopTimeEventLoop) and loop.looptime_on, "not virtual"
    return loop.time()


async def until(condition: Callable[[], bool]) -> None:
    """Wait for `condition`, looking every 10 ms of virtual time (free) for 10 minutes."""
    now()
    for _ in range(60_000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in 10 virtual minutes")


async def test_each_row_publishes_started_attempts_and_finished_in_order() -> None:
    now()  # on virtual time
    flaky = kit.DemoProvider(latency=0.1, error_rate=0.5, seed=3)
    events: list[Event] = []
    job = kit.start(prompts(6), "prompt", provider=flaky, progress=False, cache=False)
    job.subscribe(events.append)
    result = await job
    assert isinstance(events[0], LimitChanged) and isinstance(events[-1], RunFinished)
    for key in range(6):
        mine = [e for e in events if getattr(e, "key", None) == key]
        kinds = [type(e) for e in mine]
        assert kinds[0] is RowStarted and kinds[-1] is RowFinished
        assert kinds[1:-1] == [AttemptStarted, AttemptFinished] * (len(kinds[1:-1]) // 2)
        finished = [e for e in mine if isinstance(e, AttemptFinished)]
        assert len(finished) == result.loc[key, "attempts"]
        assert finished[-1].wait_s is None  # the last attempt is never followed by a wait
        for ended, nxt in zip(mine[2::2], mine[3::2], strict=False):
            if isinstance(ended, AttemptFinished) and isinstance(nxt, AttemptStarted):
                assert ended.wait_s is not None  # the wait announced is the gap before it
                assert nxt.t - ended.t == pytest.approx(ended.wait_s, abs=1e-6)


async def test_cache_dedupe_and_input_rows_say_where_their_answer_came_from(
    tmp_path: Any,
) -> None:
    now()  # on virtual time
    demo = kit.DemoProvider(latency=0.1)
    path = tmp_path / "c.sqlite"
    await kit.run_df(prompts(2), "prompt", provider=demo, cache=path, progress=False)
    df = pd.DataFrame({"prompt": ["question 0", "new", "new", None]})
    events: list[Event] = []
    job = kit.start(df, "prompt", provider=demo, cache=path, progress=False)
    job.subscribe(events.append)
    await job
    sources = {e.key: e.source for e in events if isinstance(e, RowFinished)}
    assert sources == {0: "cache", 1: "call", 2: "dedupe", 3: "input"}
    assert [e.key for e in events if isinstance(e, RowStarted)] == [1]


async def test_retry_waits_and_the_demo_latency_go_through_the_injected_clock() -> None:
    class CountingClock(LoopClock):
        def __init__(self) -> None:
            super().__init__()
            self.slept: list[float] = []
            self.timers = 0

        async def sleep(self, seconds: float) -> None:
            self.slept.append(seconds)
            await super().sleep(seconds)

        def call_at(self, when: float, callback: Any) -> Cancellable:
            self.timers += 1
            return super().call_at(when, callback)

    clock = CountingClock()
    demo = kit.DemoProvider(latency=0.5, jitter=0.0, error_rate=0.5, seed=1)
    config = RunConfig(model="demo", timeout=5.0)
    engine = Engine(demo, config, total=4, clock=clock)
    waits: list[float] = []
    engine.events.on(AttemptFinished, lambda e: waits.append(e.wait_s) if e.wait_s else None)
    requests = [Request(key=i, messages=[{"role": "user", "content": f"q{i}"}]) for i in range(4)]
    started = now()
    await engine.run(requests)
    attempts = sum(r.attempts for r in engine.results.values())
    assert waits and attempts > 4  # some rows were retried
    assert clock.slept.count(0.5) == attempts  # every demo reply waited on this clock
    assert sorted(w for w in clock.slept if w != 0.5) == sorted(waits)  # and every backoff
    assert clock.timers == attempts  # one deadline per attempt
    assert now() - started >= 0.5 * max(r.attempts for r in engine.results.values())


async def test_pause_starts_nothing_until_resumed() -> None:
    demo = kit.DemoProvider(latency=0.2, jitter=0.0)
    job = kit.start(prompts(40), "prompt", provider=demo, concurrency=4, cache=False)
    await until(lambda: job.snapshot().done >= 8)
    job.pause()
    await until(lambda: job.snapshot().in_flight == 0)
    sent = job.snapshot().requests
    await asyncio.sleep(30)  # virtual: half a minute of pause
    assert job.snapshot().requests == sent and job.state == "paused"
    job.resume()
    result = await job
    assert (result["status"] == "ok").all()


async def test_a_429_without_retry_after_gives_up_after_the_patience_not_later() -> None:
    """Issue 9: each 429 used to add the backoff base, not the time waited, to the budget."""
    always_429 = kit.DemoProvider(latency=0.1, rate_limit_rate=1.0, retry_after=None)
    policy = kit.RetryPolicy(rate_limit_patience=60.0, backoff_max=8.0)
    started = now()
    result = await run(prompts(2), always_429, retry=policy)
    took = now() - started
    assert result["status"].tolist() == ["error", "error"]
    assert (result["error_type"] == "rate_limit").all()
    assert result["error"].str.contains("rate_limit_patience").all()
    assert 60.0 <= took <= 60.0 + 8.0 + 1.0  # the patience, plus at most one last backoff
    assert (result["attempts"] < 60).all()  # waits grew; it did not hammer the server


@pytest.mark.parametrize("garbage", [-5.0, math.nan, math.inf])
async def test_a_garbage_retry_after_counts_as_absent(garbage: float) -> None:
    """Issue 9: a negative Retry-After retried at once without end; NaN stopped timers."""
    bad = kit.DemoProvider(latency=0.1, rate_limit_rate=1.0, retry_after=garbage)
    other = kit.DemoProvider(latency=0.1)
    policy = kit.RetryPolicy(rate_limit_patience=20.0)
    started = now()
    hammered, calm = await asyncio.gather(
        run(prompts(1), bad, retry=policy),
        run(prompts(3, "calm"), other, timeout=1.0),
    )
    assert hammered.loc[0, "error_type"] == "rate_limit"
    assert hammered["attempts"].iloc[0] < 40  # backoff, not a tight loop
    assert (calm["status"] == "ok").all()  # the other run's timers still fire
    assert now() - started < 20.0 + 30.0 + 1.0


async def test_adaptive_concurrency_gets_fewer_429s_than_a_fixed_limit() -> None:
    """Against an undisclosed limit (the demo's 1,200/min, no headers), same conditions,
    nothing else learned from the 429s (no learned rate)."""
    count: dict[bool, int] = {}
    for adaptive in (False, True):
        limited = kit.DemoProvider(latency=0.25, jitter=0.0, rpm=1200)
        df = prompts(150, f"a{adaptive}")
        result = await run(df, limited, concurrency=40, adaptive=adaptive, learn_rate=False)
        assert (result["status"] == "ok").all()
        outcomes = kit.report(result).attempts()["outcome"]
        count[adaptive] = int((outcomes == "rate_limit").sum())
    assert count[True] < count[False] / 2, count


async def test_rpm_pacing_avoids_the_429s_a_burst_gets() -> None:
    df = prompts(30)
    burst = await run(df, kit.DemoProvider(latency=0, rpm=600), concurrency=30, max_attempts=1)
    # 30 start at once, 10 fit the window: the other 20 get 429s; waited out, all succeed
    assert (burst["status"] == "ok").all()
    assert burst["attempts"].sum() - 30 >= 20
    started = now()
    paced = await run(df, kit.DemoProvider(latency=0, rpm=600), concurrency=30, rpm=600)
    assert (paced["status"] == "ok").all() and paced["attempts"].eq(1).all()
    assert now() - started == pytest.approx(29 / (600 * 0.97 / 60), rel=0.01)  # evenly spaced


async def test_a_stop_during_a_backoff_ends_the_row_at_once() -> None:
    failing = kit.DemoProvider(latency=0.1, error_rate=1.0)
    policy = kit.RetryPolicy(backoff_base=100.0, backoff_max=100.0, max_attempts=5)
    job = kit.start(prompts(1), "prompt", provider=failing, retry=policy, cache=False)
    await until(lambda: job.snapshot().retrying > 0)
    started = now()
    job.cancel()
    result = await job
    assert now() - started < 1.0  # not the 100 s backoff
    assert result.loc[0, "status"] == "cancelled"
    assert result.loc[0, "error"] == "stopped by the user"


@pytest.mark.usefixtures("priced")
async def test_the_budget_stops_a_run_before_the_next_request_would_pass_it() -> None:
    demo = kit.DemoProvider(latency=0.1)
    df = prompts(50)
    result = await run(df, demo, model="priced-model", budget_usd=0.2, max_tokens=10)
    meta = result.attrs["notebook_kit"]
    assert 0.1 < meta["cost_usd"] <= 0.2
    assert (result["status"] == "cancelled").any()
    assert result.loc[result["status"] == "cancelled", "error"].str.contains("budget").all()


async def test_a_stop_reaches_rows_waiting_in_the_rpm_meter() -> None:
    """A stop ends rows waiting in any meter at once, not only those in flight."""
    demo = kit.DemoProvider(latency=5.0, jitter=0.0)
    job = kit.start(prompts(20), "prompt", provider=demo, concurrency=2, rpm=6, cache=False)
    await until(lambda: job.snapshot().in_flight >= 1)
    job.cancel()
    result = await job
    assert set(result["status"]) <= {"ok", "cancelled"}
    assert result["status"].eq("cancelled").sum() >= 18
