"""What the lessons rely on: the speedup of concurrency on the demo model, and the timeline."""

from __future__ import annotations

import asyncio

import matplotlib
import pandas as pd
import pytest

import notebook_kit as kit
from notebook_kit.reporting import RunReport
from notebook_kit.timeline import in_flight

matplotlib.use("Agg")


@pytest.mark.looptime
async def test_concurrency_5_is_5x_faster_than_sequential_on_the_demo_model() -> None:
    rows = pd.DataFrame({"prompt": [f"question {i}" for i in range(10)]})
    demo = kit.DemoProvider(latency=0.2, jitter=0.0)
    loop = asyncio.get_running_loop()
    seconds = {}
    for concurrency in (1, 5):
        start = loop.time()  # virtual: the demo's latency takes no real time
        await kit.run_df(
            rows, "prompt", provider=demo, concurrency=concurrency, cache=False, progress=False
        )
        seconds[concurrency] = loop.time() - start
    assert seconds == {1: pytest.approx(2.0), 5: pytest.approx(0.4)}


async def recorded_run() -> RunReport:
    """A run with failures, retries and a 429, recorded by the engine."""
    flaky = kit.DemoProvider(
        latency=0.05, error_rate=0.3, rate_limit_rate=0.1, retry_after=0.1, seed=2
    )
    rows = pd.DataFrame({"prompt": [f"question {i}" for i in range(30)]})
    result = await kit.run_df(
        rows, "prompt", provider=flaky, concurrency=4, cache=False, progress=False
    )
    return kit.report(result)


@pytest.mark.looptime
async def test_the_timeline_draws_one_bar_per_attempt() -> None:
    report = await recorded_run()
    attempts = report.attempts()
    assert attempts["row"].duplicated().any()  # some rows were retried
    assert {"ok", "server", "rate_limit"} <= set(attempts["outcome"])
    figure = kit.plot_timeline(report)
    top, bottom = figure.axes
    assert len(top.patches) == len(attempts)  # one bar per request sent
    retried_rows = attempts.groupby("row").size()
    waits = int((retried_rows - 1).sum())
    assert len(top.lines) == waits  # one grey line per wait between two attempts
    assert len(bottom.lines) == 2  # in flight, and the concurrency limit


def test_in_flight_counts_overlapping_requests() -> None:
    attempts = pd.DataFrame({"start_s": [0.0, 0.5, 1.0], "end_s": [2.0, 1.5, 3.0]})
    times, levels = in_flight(attempts)
    assert max(levels) == 3 and levels[-1] == 0
    assert times == [0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0]


def test_the_timeline_of_a_result_frame_and_of_nothing() -> None:
    rows = pd.DataFrame({"prompt": ["a", "b"]})
    result = kit.run_df_sync(rows, "prompt", provider=kit.DemoProvider(latency=0), progress=False)
    assert kit.plot_timeline(result).axes
    empty = kit.run_df_sync(rows.head(0), "prompt", provider=kit.DemoProvider(latency=0))
    with pytest.raises(kit.ConfigError, match="nothing to draw"):
        kit.plot_timeline(empty)
