"""The job panel without a browser: widget changes steer a running job (plain pytest).

The fake server's own in-flight count is the witness, not the kit's counters.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pandas as pd
import pytest
from conftest import KEY, eventually
from fake_server import FakeLLMServer

import notebook_kit as kit


def prompts(n: int) -> pd.DataFrame:
    return pd.DataFrame({"prompt": [f"question {i}" for i in range(n)]})


def start(server: FakeLLMServer, df: pd.DataFrame, **kwargs: Any) -> kit.Job:
    kwargs.setdefault("panel", True)
    return kit.start(
        df, "prompt", provider="openai", base_url=server.openai_base_url, api_key=KEY, **kwargs
    )


def in_flight(server: FakeLLMServer) -> int:
    return int(server.stats()["in_flight"])


async def test_slider_raises_and_lowers_the_servers_in_flight_level(
    server: FakeLLMServer,
) -> None:
    server.configure(latency=0.2)
    job = start(server, prompts(120), concurrency=2)
    assert job.panel is not None
    await eventually(lambda: in_flight(server) == 2)
    job.panel.concurrency.value = 8
    await eventually(lambda: in_flight(server) == 8)
    job.panel.concurrency.value = 3
    lowered, sent = time.monotonic(), server.stats()["requests_total"]
    await eventually(lambda: server.stats()["requests_total"] >= sent + 9)  # 3 more rounds
    # the requests in flight at the change drain; once below 3, the level never passes 3
    samples = [(t, n) for t, n in server.stats()["in_flight_samples"] if t > lowered]
    drained = next(i for i, (_, n) in enumerate(samples) if n <= 3)
    assert max(n for _, n in samples[drained:]) <= 3
    job.cancel()
    result = await job
    assert set(result["status"]) == {"ok", "cancelled"}
    assert server.stats()["peak_in_flight"] == 8
    assert [v for _, v in kit.report(result).limit_changes] == [2, 8, 3]


async def test_model_menu_applies_to_rows_not_started(server: FakeLLMServer) -> None:
    server.configure(latency=0.02)
    job = start(server, prompts(30), concurrency=2, model="gpt-a", models=["gpt-b"])
    assert job.panel is not None
    assert list(job.panel.model.options)[:2] == ["gpt-a", "gpt-b"]
    await eventually(lambda: (job.snapshot().done) >= 6)
    job.panel.model.value = "gpt-b"
    result = await job
    used = result["model"].tolist()
    switch = used.index("gpt-b")
    assert 6 <= switch < 30
    assert used == ["gpt-a"] * switch + ["gpt-b"] * (30 - switch)


async def test_pause_lets_in_flight_finish_and_starts_nothing(server: FakeLLMServer) -> None:
    server.configure(latency=0.05)
    job = start(server, prompts(40), concurrency=4)
    assert job.panel is not None
    await eventually(lambda: in_flight(server) == 4)
    job.panel.pause.value = True
    assert job.panel.pause.description == "Resume"
    await eventually(lambda: in_flight(server) == 0)
    assert job.state == "paused"  # that nothing starts while paused: test_virtual_time.py
    job.panel.pause.value = False
    result = await job
    assert (result["status"] == "ok").all()


async def test_stop_button_keeps_finished_rows(server: FakeLLMServer) -> None:
    server.configure(latency=0.2)
    job = start(server, prompts(60), concurrency=4)
    assert job.panel is not None
    await eventually(lambda: job.snapshot().ok >= 8)
    live = job.df
    assert set(live["status"]) <= {"ok", "pending"} and (live["status"] == "pending").any()
    job.panel.stop.click()
    result = await job
    assert set(result["status"]) == {"ok", "cancelled"}
    assert (result["status"] == "ok").sum() >= 8
    cancelled = result.loc[result["status"] == "cancelled", "error"]
    assert cancelled.eq("stopped by the user").all()
    await eventually(lambda: in_flight(server) == 0)
    assert job.state == "stopped"
    assert job.panel.concurrency.disabled and job.panel.stop.disabled
    status = job.panel.status.value
    done = int((result["status"] == "ok").sum())
    assert (
        "stopped" in status and f"{done}/60 rows" in status and f"cancelled {60 - done}" in status
    )


async def test_cancel_method_and_final_status(server: FakeLLMServer) -> None:
    server.configure(latency=0.05)
    job = start(server, prompts(10), concurrency=5)
    result = await job
    assert job.state == "done"
    assert job.panel is not None and job.panel.bar.value == 10
    assert "10/10 rows" in job.panel.status.value and "ok 10" in job.panel.status.value
    job.cancel()  # after the end: nothing happens
    assert job.df is result


async def test_a_failing_control_is_shown_in_the_panel(server: FakeLLMServer) -> None:
    server.configure(latency=0.05)
    job = start(server, prompts(10))
    assert job.panel is not None

    def broken(value: int, *, step: str | None = None) -> None:
        raise RuntimeError("no such limit")

    job.set_concurrency = broken  # type: ignore[method-assign]
    job.panel.concurrency.value = 5
    assert "RuntimeError: no such limit" in job.panel.log.value
    await job


async def test_controls_from_another_thread_reach_the_job_at_once(server: FakeLLMServer) -> None:
    server.configure(latency=0.3)
    job = start(server, prompts(200), concurrency=1, panel=False)
    await eventually(lambda: in_flight(server) == 1)
    thread = threading.Thread(target=job.set_concurrency, args=(6,))  # like a subshell
    thread.start()
    thread.join()
    await eventually(lambda: in_flight(server) == 6)
    job.cancel()
    await job


async def test_waiting_for_a_job_can_be_interrupted_without_stopping_it(
    server: FakeLLMServer,
) -> None:
    server.configure(latency=0.03)
    job = start(server, prompts(20), concurrency=2)
    waiter = asyncio.create_task(_wait(job))
    await eventually(lambda: job.snapshot().ok >= 2)
    waiter.cancel()  # what a kernel interrupt does to the cell awaiting the job
    with pytest.raises(asyncio.CancelledError):
        await waiter
    result = await job
    assert (result["status"] == "ok").all()


async def _wait(job: kit.Job) -> pd.DataFrame:
    return await job


async def test_two_jobs_run_side_by_side(server: FakeLLMServer) -> None:
    server.configure(latency=0.05)
    first = start(server, prompts(20), concurrency=2)
    second = start(server, prompts(20), concurrency=3)
    assert first.panel is not second.panel
    await eventually(lambda: in_flight(server) == 5)
    first.panel.concurrency.value = 1
    one, two = await first, await second
    assert (one["status"] == "ok").all() and (two["status"] == "ok").all()
    assert kit.last_job() is second


async def test_a_run_error_reaches_await_and_the_panel(server: FakeLLMServer) -> None:
    job = kit.start(
        prompts(5), "prompt", base_url=server.openai_base_url, api_key="wrong-key", panel=True
    )
    with pytest.raises(kit.AuthError):
        await job
    assert job.state == "failed"
    assert job.panel is not None and "AuthError" not in job.panel.status.value
    assert "HTTP 401" in job.panel.status.value


def test_start_needs_a_running_loop() -> None:
    with pytest.raises(kit.ConfigError, match="run_df_sync"):
        kit.start(prompts(1), "prompt", provider=kit.DemoProvider(latency=0))


async def test_session_defaults_shape_the_next_runs_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kit.defaults, "concurrency", 8)
    monkeypatch.setattr(kit.defaults, "model", None)
    monkeypatch.setattr(kit.defaults, "provider", kit.DemoProvider(latency=0.05))
    panel = kit.controls()
    panel.concurrency.value = 3
    panel.model.value = "demo-large"
    assert (kit.defaults.concurrency, kit.defaults.model) == (3, "demo-large")
    job = kit.start(prompts(12), "prompt", panel=True)
    panel.concurrency.value = 7  # a running job keeps the defaults it started with
    result = await job
    assert [limit for _, limit in kit.report(result).limit_changes] == [3]
    assert result["model"].eq("demo-large").all()
    assert result.attrs["notebook_kit"]["concurrency"] == 3
