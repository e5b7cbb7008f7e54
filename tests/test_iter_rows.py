"""Rows as they finish (`kit.iter_rows`, `job.rows()`), and the panel's peek at replies
streaming now. Timing runs on looptime's virtual clock; wire behaviour on the fake server."""

from __future__ import annotations

import asyncio
from typing import Any

import pandas as pd
import pytest
from conftest import KEY, eventually
from fake_server import FakeLLMServer

import notebook_kit as kit
from notebook_kit.events import AttemptStarted, Event, RowFinished
from notebook_kit.peek import Peek, Tails


def demo_options(**more: Any) -> dict[str, Any]:
    return {"provider": kit.DemoProvider(latency=1.0, jitter=0.5), "cache": False,
            "progress": False, **more}  # fmt: skip


def prompts(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"prompt": [f"question {i}" for i in range(n)]}, index=[f"r{i}" for i in range(n)]
    )


@pytest.mark.looptime
async def test_rows_come_in_completion_order_with_their_position_and_label() -> None:
    df = prompts(12)
    seen = [row async for row in kit.iter_rows(df, "prompt", concurrency=12, **demo_options())]
    assert sorted(r.position for r in seen) == list(range(12))
    assert [r.index for r in seen] == [f"r{r.position}" for r in seen]
    assert [r.position for r in seen] != list(range(12))  # finished out of order
    latencies = [r.latency_s or 0.0 for r in seen]
    assert latencies == sorted(latencies)  # all started at once: fastest first
    assert seen[0]["prompt"] == f"question {seen[0].position}"
    final = kit.last_result()
    assert final is not None and (final["status"] == "ok").all() and len(final) == 12


@pytest.mark.looptime
async def test_a_slow_reader_holds_the_run_back() -> None:
    df = prompts(60)
    job_events: list[Event] = []
    started = 0
    checks = 0
    async with kit.iter_rows(df, "prompt", concurrency=4, buffer=3, **demo_options()) as rows:
        rows.job.subscribe(job_events.append, (AttemptStarted, RowFinished))
        read = 0
        async for _ in rows:
            read += 1
            started = sum(isinstance(e, AttemptStarted) for e in job_events)
            assert started <= read + 3 + 4
            checks += 1
            await asyncio.sleep(5.0)  # a reader much slower than the rows
    assert checks == 60 and started == 60


@pytest.mark.looptime
async def test_cache_hits_count_as_started_rows(tmp_path: Any) -> None:
    df = prompts(30)
    cache = tmp_path / "c.sqlite"
    await kit.run_df(df.head(20), "prompt", **demo_options(cache=cache))
    finished: list[Event] = []
    async with kit.iter_rows(
        df, "prompt", concurrency=2, buffer=1, **demo_options(cache=cache)
    ) as rows:
        rows.job.subscribe(finished.append, (RowFinished,))
        read = 0
        async for _ in rows:
            read += 1
            assert len(finished) <= read + 1 + 2  # cached rows wait for the reader too
            await asyncio.sleep(1.0)
    assert read == 30


async def test_breaking_out_stops_the_run_and_nothing_stays_in_flight(
    server: FakeLLMServer,
) -> None:
    server.configure(model_latency={"slow": {"latency": 30.0}})
    df = prompts(20).assign(model_of=["fast"] * 2 + ["slow"] * 18)
    async for row in kit.iter_rows(df, "prompt", **wire(server, concurrency=5)):
        assert row.status == "ok"
        break
    await eventually(lambda: server.stats()["in_flight"] == 0)
    await eventually(lambda: kit.last_job() is not None and kit.last_job().state == "stopped")  # type: ignore[union-attr]
    partial = kit.last_result()
    assert partial is not None
    assert (partial["status"] == "cancelled").sum() >= 18  # the slow ones, maybe the other fast
    assert server.stats()["requests_total"] <= 2 + 5  # the slow rows in flight, no more


def wire(server: FakeLLMServer, **more: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "base_url": server.openai_base_url,
        "api_key": KEY,
        "cache": False,
        "progress": False,
        "model_col": "model_of",
        **more,
    }


@pytest.mark.parametrize("how", ["async with", "aclose"])
async def test_leaving_the_block_or_aclose_stops_the_run(server: FakeLLMServer, how: str) -> None:
    server.configure(model_latency={"slow": {"latency": 30.0}})
    df = prompts(10).assign(model_of=["fast"] + ["slow"] * 9)
    rows = kit.iter_rows(df, "prompt", **wire(server, concurrency=4))
    if how == "async with":
        async with rows:
            async for row in rows:
                assert row.position == 0
                break
    else:
        async for row in rows:
            assert row.position == 0
            break
        await rows.aclose()
    job = rows.job
    assert job.state == "stopped"  # the run ended before the block was left
    assert job.result is not None and (job.result["status"] == "cancelled").sum() == 9
    await eventually(lambda: server.stats()["in_flight"] == 0)


async def test_job_rows_gives_finished_rows_first_then_the_rest() -> None:
    df = prompts(8)
    job = kit.start(df, "prompt", **demo_options(provider=kit.DemoProvider(latency=0.05)))
    await eventually(lambda: job.snapshot().done >= 3)
    positions = [row.position async for row in job.rows()]
    assert sorted(positions) == list(range(8))
    again = [row.position async for row in job.rows()]  # after the end: all of them at once
    assert sorted(again) == list(range(8))


@pytest.mark.looptime
async def test_the_peek_shows_five_rows_read_when_it_refreshes() -> None:
    shown: list[Tails] = []
    peek = Peek(shown.append)
    demo = kit.DemoProvider(latency=0.5, stream_rate=20.0, reply_words=60)
    job = kit.start(
        prompts(100), "prompt", provider=demo, stream=True, concurrency=100, cache=False,
        progress=False,
    )  # fmt: skip
    job.subscribe(peek.handle, Peek.kinds)
    refreshes = 0
    while not job.task.done():  # type: ignore[union-attr]  # a panel's ticker: 4 a second
        await asyncio.sleep(0.25)
        peek.refresh()
        refreshes += 1
    result = await job
    assert (result["status"] == "ok").all()
    assert refreshes > 8  # 60 words at 20 a second: the stream is long
    assert 5 <= len(shown) <= refreshes  # only changes are shown
    assert all(len(tails) <= 5 for tails in shown) and any(len(t) == 5 for t in shown)
    assert all(len(text) <= 80 for tails in shown for _, text in tails)
    texts = [text for tails in shown for _, text in tails]
    assert any(len(text) == 80 for text in texts)  # a long reply shows its last 80 characters
    assert shown[-1] == []  # every stream ended


async def test_a_streaming_runs_panel_peeks_at_the_replies_and_a_long_run_has_no_peek() -> None:
    demo = kit.DemoProvider(latency=0.05, stream_rate=200.0, reply_words=40)
    job = kit.start(prompts(6), "prompt", provider=demo, stream=True, panel=True, cache=False)
    assert job.panel is not None and job.panel.peek is not None
    peeked: list[str] = []
    job.panel.peek_box.observe(lambda change: peeked.append(change["new"]), names="value")
    await job
    assert any("row " in html and "…" in html for html in peeked)
    assert job.panel.peek_box.value == ""  # nothing streams once the run is over
    quiet = kit.start(prompts(6), "prompt", provider=demo, panel=True, cache=False)
    assert quiet.panel is not None and quiet.panel.peek is None  # not streamed: no peek
    await quiet


async def test_a_pipeline_step_can_stream() -> None:
    demo = kit.DemoProvider(latency=0.01, stream_rate=500.0)
    steps = [
        kit.Step("facts", template="{prompt}", stream=True),
        kit.Step("draft", template="{facts}"),
    ]
    result = await kit.run_pipeline(prompts(4), steps, provider=demo, cache=False, progress=False)
    assert (result["status"] == "ok").all()
    assert result["facts_ttft_s"].notna().all() and result["draft_ttft_s"].isna().all()


def test_a_run_over_ten_thousand_rows_has_no_peek() -> None:
    from notebook_kit.frame_job import FrameJob
    from notebook_kit.launch import new_frame_job
    from notebook_kit.ui import Panel

    options = {"stream": True, "provider": "demo"}
    big = new_frame_job(prompts(10_001), "prompt", options, entry="start")
    small = new_frame_job(prompts(10_000), "prompt", options, entry="start")
    assert isinstance(big, FrameJob) and isinstance(small, FrameJob)
    assert Panel(big).peek is None
    assert Panel(small).peek is not None
