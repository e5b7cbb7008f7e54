"""Pipelines at their edges: hostile functions and values, keys in their errors, a killed
process resumed from the cache, the panel's step lines, the timeline by step."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import KEY, eventually
from fake_server import FakeLLMServer

import notebook_kit as kit
from notebook_kit.cache import Cache

REPO = Path(__file__).resolve().parents[1]


def wire(server: FakeLLMServer, **options: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "base_url": server.openai_base_url,
        "api_key": KEY,
        "cache": False,
        "progress": False,
        **options,
    }


def topics(n: int) -> pd.DataFrame:
    return pd.DataFrame({"topic": [f"topic {i}" for i in range(n)]})


class BadFormat:
    def __format__(self, spec: str) -> str:
        raise RuntimeError("cannot format me")


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text either")


@pytest.mark.parametrize(
    ("value", "status", "error_type"),
    [
        ([1, 2], "ok", None),
        ({"a": 1}, "ok", None),
        (b"\xff\xfe", "ok", None),
        (np.nan, "skipped", None),  # an empty value: the next template skips the row
        (None, "skipped", None),
        (pd.NA, "skipped", None),
        (BadFormat(), "error", "invalid_input"),  # formatting it raises: that row fails
        ("\ud800 lone surrogate", "error", "invalid_input"),  # not valid UTF-8
    ],
)
async def test_whatever_a_function_returns_the_row_ends_with_a_clear_status(
    server: FakeLLMServer, value: Any, status: str, error_type: str | None
) -> None:
    steps = [
        kit.Step("made", fn=lambda row: value),
        kit.Step("asked", template="About {made}", model="m"),
    ]
    result = await kit.run_pipeline(topics(2), steps, **wire(server))
    assert (result["asked_status"] == status).all()
    assert result["made"].iloc[0] is value or pd.isna(value)
    if error_type is not None:
        assert (result["error_type"] == error_type).all()
        assert (result["failed_step"] == "asked").all()
    else:
        assert (result["status"] == "ok").all()  # a skipped step does not fail its row
    frame = result.copy()  # the object column survives pandas' own operations
    assert len(frame.to_string()) > 0


async def test_a_function_whose_exception_cannot_be_printed_still_fails_its_row(
    server: FakeLLMServer,
) -> None:
    def broken(row: dict[str, Any]) -> None:
        raise BadStr

    steps = [kit.Step("made", fn=broken), kit.Step("asked", template="{made}", model="m")]
    result = await kit.run_pipeline(topics(2), steps, **wire(server))
    assert (result["error"] == "fn= raised BadStr").all()
    assert server.stats()["requests_total"] == 0


async def test_a_key_in_a_functions_error_is_masked(server: FakeLLMServer) -> None:
    def leaky(row: dict[str, Any]) -> None:
        raise ValueError(f"bad key {KEY}")

    steps = [kit.Step("asked", template="{topic}", model="m"), kit.Step("made", fn=leaky)]
    result = await kit.run_pipeline(topics(2), steps, **wire(server))
    assert (result["made_error_type"] == "function_error").all()
    assert not result.astype(str).apply(lambda col: col.str.contains(KEY)).any().any()
    assert KEY not in repr(result.attrs) and KEY not in repr(kit.Step("s", template="{x}"))


async def test_stop_cancels_an_async_function_step_that_never_returns(
    server: FakeLLMServer,
) -> None:
    entered: list[str] = []

    async def forever(row: dict[str, Any]) -> str:
        entered.append(row["topic"])
        await asyncio.Event().wait()
        return "never"

    steps = [
        kit.Step("asked", template="{topic}", model="m"),
        kit.Step("slow", fn=forever),
        kit.Step("after", template="{slow}", model="m2"),
    ]
    job = kit.start(topics(3), steps=steps, **wire(server))
    await eventually(lambda: len(entered) == 3)
    job.cancel()
    result = await job
    assert (result["asked_status"] == "ok").all()
    assert (result["slow_status"] == "cancelled").all()
    assert (result["failed_step"] == "slow").all()
    assert result["after_status"].isna().all()


CHILD = textwrap.dedent(
    """
    import sys
    import pandas as pd
    import notebook_kit as kit
    df = pd.DataFrame({"topic": [f"topic {i}" for i in range(12)]})
    steps = [
        kit.Step("facts", template="facts on {topic}", model="m-facts", concurrency=12),
        kit.Step("draft", template="draft from {facts}", model="m-draft", concurrency=2),
    ]
    kit.run_pipeline_sync(df, steps, base_url=sys.argv[1], api_key=sys.argv[2],
                          cache=sys.argv[3], progress=False)
    """
)


async def test_a_killed_pipeline_resumes_from_the_cache_step_by_step(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    server.configure(model_latency={"m-draft": {"latency": 60.0}})  # step 2 never ends
    path = tmp_path / "resume.sqlite"
    child = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
        [sys.executable, "-c", CHILD, server.openai_base_url, KEY, str(path)], cwd=REPO
    )
    try:
        for _ in range(300):  # the child imports pandas and the SDK first: up to 30 s
            if path.exists() and Cache(path).info()["entries"] == 12:
                break
            await asyncio.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert Cache(path).info()["entries"] == 12  # every facts reply was on disk
    assert server.stats()["requests_by_model"]["m-draft"] == 2
    server.configure(model_latency=None)
    server.reset_stats()
    steps = [
        kit.Step("facts", template="facts on {topic}", model="m-facts"),
        kit.Step("draft", template="draft from {facts}", model="m-draft"),
    ]
    result = await kit.run_pipeline(topics(12), steps, **wire(server, cache=path))
    assert (result["status"] == "ok").all()
    assert result["facts_cached"].all()
    assert server.stats()["requests_by_model"] == {"m-draft": 12}


def test_the_panel_has_a_line_and_a_slider_per_step(server: FakeLLMServer) -> None:
    from notebook_kit.pipeline_job import new_job
    from notebook_kit.pipeline_panel import PipelinePanel

    steps = [
        kit.Step("facts", template="{topic}", model="m", concurrency=3),
        kit.Step("n", fn=len),
        kit.Step("draft", template="{facts}", model="m", concurrency=5),
    ]
    job = new_job(topics(4), steps, wire(server), entry="start")
    panel = PipelinePanel(job)
    assert list(panel.steps) == ["facts", "n", "draft"]
    assert panel.steps["facts"].concurrency is not None
    assert panel.steps["facts"].concurrency.value == 3
    assert panel.steps["n"].concurrency is None  # a function has no concurrency
    moved: list[tuple[int, str | None]] = []
    job.set_concurrency = lambda value, *, step=None: moved.append((value, step))  # type: ignore[method-assign]
    panel.steps["draft"].concurrency.value = 9  # type: ignore[union-attr]
    assert moved == [(9, "draft")]
    assert "<b>facts</b>" in panel.steps["facts"].widget.children[0].value


async def test_the_live_panel_counts_each_step(server: FakeLLMServer) -> None:
    server.configure(model_latency={"m-draft": {"latency": 30.0}})
    steps = [
        kit.Step("facts", template="{topic}", model="m-facts"),
        kit.Step("draft", template="{facts}", model="m-draft", concurrency=2),
    ]
    job = kit.start(topics(4), steps=steps, panel=True, **wire(server))
    await eventually(lambda: server.stats()["in_flight_by_model"].get("m-draft") == 2)
    job.panel.show()
    assert "done 4 · ok 4" in job.panel.steps["facts"].counts.value
    assert "in flight 2" in job.panel.steps["draft"].counts.value
    job.cancel()
    await job
    assert job.panel.steps["draft"].concurrency.disabled


async def test_the_timeline_colours_a_pipeline_by_step(server: FakeLLMServer) -> None:
    pytest.importorskip("matplotlib")
    steps = [
        kit.Step("facts", template="{topic}", model="m-facts"),
        kit.Step("draft", template="{facts}", model="m-draft"),
    ]
    result = await kit.run_pipeline(topics(3), steps, **wire(server))
    attempts = kit.report(result).attempts()
    assert sorted(set(attempts["step"])) == ["draft", "facts"]
    figure = kit.plot_timeline(result)
    legend = figure.axes[0].get_legend()
    assert legend is not None
    labels = [t.get_text() for t in legend.get_texts()]
    assert "ok: facts" in labels and "ok: draft" in labels


async def test_an_interrupted_pipeline_keeps_what_finished_and_sends_nothing_more(
    server: FakeLLMServer,
) -> None:
    server.configure(model_latency={"m-draft": {"latency": 30.0}})
    steps = [
        kit.Step("facts", template="{topic}", model="m-facts"),
        kit.Step("draft", template="{facts}", model="m-draft", concurrency=2),
    ]
    task = asyncio.create_task(kit.run_pipeline(topics(5), steps, **wire(server)))
    await eventually(lambda: server.stats()["in_flight_by_model"].get("m-draft") == 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    partial = kit.last_result()
    assert partial is not None
    assert (partial["facts_status"] == "ok").all()
    assert (partial["status"] == "cancelled").all()
    assert (partial["error"] == "interrupted").all()
    await eventually(lambda: server.stats()["in_flight"] == 0)
    assert server.stats()["requests_by_model"]["m-draft"] == 2


def test_a_pipeline_of_functions_only_and_the_demo_notice(
    capsys: pytest.CaptureFixture[str],
) -> None:
    steps = [
        kit.Step("n", fn=lambda row: len(row["topic"])),
        kit.Step("twice", fn=lambda r: 2 * r["n"]),
    ]
    result = kit.run_pipeline_sync(topics(3), steps, progress=False)
    assert result["twice"].tolist() == [14, 14, 14]
    assert (result["status"] == "ok").all()
    assert "no API key found" not in capsys.readouterr().out  # no model step: no model
    demo = [kit.Step("asked", template="{topic}")]
    kit.run_pipeline_sync(topics(1), demo, progress=False, cache=False)
    assert "no API key found" in capsys.readouterr().out
    with pytest.raises(kit.ConfigError, match="call no model"):
        kit.estimate(topics(3), steps)
