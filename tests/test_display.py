"""What a student sees: the estimate's text, the recent rate, the panel's words and
buttons, a job shown in a cell, the timeline's colours and pauses (issue 10).

Headless: ipywidgets objects work without a kernel; time is virtual (looptime)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
import pytest

import notebook_kit as kit
from notebook_kit.events import RowFinished
from notebook_kit.reporting import RunStats
from notebook_kit.types import RowResult, RowStatus

matplotlib.use("Agg")
pytestmark = pytest.mark.looptime
REPO = Path(__file__).resolve().parents[1]


def prompts(n: int, prefix: str = "q") -> pd.DataFrame:
    return pd.DataFrame({"prompt": [f"{prefix} {i}" for i in range(n)]})


async def until(condition: Any) -> None:
    for _ in range(60_000):  # ten virtual minutes, looking every 10 ms
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def test_item1_the_estimate_has_no_dollar_sign_and_fits_pandas_columns() -> None:
    table = kit.estimate(prompts(3), "prompt", provider="demo", max_tokens=10)
    cells = [str(v) for column in ("value", "batch", "how") for v in table[column]]
    assert not [c for c in cells if "$" in c]  # JupyterLab typesets $...$ as math
    assert max(len(str(h)) for h in table["how"]) <= pd.get_option("display.max_colwidth")
    assert table.loc["prices as of", "value"] == "2025-10-15"
    assert "0.5/1.5 in/out, batch 0.25/0.75" in str(table.loc["cost USD (expected)", "how"])


async def test_item2_the_rate_follows_the_slider_and_leaves_cached_rows_out() -> None:
    demo = kit.DemoProvider(latency=1.0, jitter=0.0)
    job = kit.start(prompts(400), "prompt", provider=demo, concurrency=2, cache=True)
    await asyncio.sleep(10.05)
    assert job.snapshot().rate == pytest.approx(2.0, abs=0.25)  # 2 in flight, 1 s each
    job.set_concurrency(20)
    await asyncio.sleep(6.05)  # a window later the rate is the new one, not a lifetime mean
    assert job.snapshot().rate == pytest.approx(20.0, abs=2.5)
    job.pause()
    await asyncio.sleep(7.05)
    assert job.snapshot().rate == 0.0  # paused: nothing answered lately
    job.resume()
    first = await job
    again = kit.start(first[["prompt"]], "prompt", provider=demo, cache=True)
    await again
    snap = again.snapshot()
    assert snap.cached == 400 and snap.rate == 0.0  # cached rows are counted apart


async def test_item7_the_status_line_and_a_run_that_ends_paused() -> None:
    demo = kit.DemoProvider(latency=0.5, jitter=0.0)
    job = kit.start(prompts(6), "prompt", provider=demo, concurrency=1, panel=True, cache=False)
    await until(lambda: job.snapshot().ok >= 2)
    job.panel.pause.value = True
    await until(lambda: job.snapshot().in_flight == 0)
    job.cancel()  # stopped while paused
    await job
    assert job.panel.pause.value is False and job.panel.pause.description == "Pause"
    status = job.panel.status.value
    assert "<b>stopped</b>" in status and " rows" in status and "done ·" not in status


async def test_item7_a_job_shown_in_its_own_cell_adds_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shown: list[object] = []

    class Shown:  # records what the panel puts in a cell, and its summary when the run ends
        def __init__(self, widget: object, summary: tuple[str, str]) -> None:
            shown.append(widget)
            self.final: tuple[str, str] | None = None
            finals.append(self)

        def update(self, summary: tuple[str, str], *, live: bool = True) -> None:
            if not live:
                self.final = summary

    finals: list[Shown] = []
    monkeypatch.setattr("notebook_kit.ui.Shown", Shown)
    monkeypatch.setattr("notebook_kit.ui.cell_number", lambda: 7)
    demo = kit.DemoProvider(latency=0.1)
    job = kit.start(prompts(3), "prompt", provider=demo, panel=True, cache=False)
    job.panel._ipython_display_()  # what kit.start does in a notebook (cell 7)
    job._ipython_display_()  # the same cell ends with `job`: no frozen repr, no second view
    assert shown == [job.panel.widget]
    monkeypatch.setattr("notebook_kit.ui.cell_number", lambda: 8)
    job._ipython_display_()  # a later cell: the live panel again
    assert shown == [job.panel.widget, job.panel.widget]
    await job
    for display in finals:  # item 5: each view ends as a static summary the saved notebook keeps
        assert display.final is not None
        text, markup = display.final
        assert text.startswith("notebook_kit · done · 3/3 rows") and "$" not in markup


async def test_item7_after_retry_failed_the_attrs_add_both_runs_up() -> None:
    flaky = kit.DemoProvider(latency=0.1, error_rate=0.5, seed=3)
    first = await kit.run_df(prompts(20), "prompt", provider=flaky, max_attempts=1, cache=False)
    flaky.error_rate = 0.0
    fixed = await kit.retry_failed(first, progress=False)
    before, after = first.attrs["notebook_kit"], fixed.attrs["notebook_kit"]
    retried = after["retried_rows"]
    assert after["requests"] == before["requests"] + retried == int(fixed["attempts"].sum())
    assert after["counts"] == {"ok": 20}
    assert after["input_tokens"] == int(fixed["input_tokens"].sum())
    assert after["started_at"] == before["started_at"]


async def test_item8_cancelled_requests_and_pauses_show_on_the_timeline() -> None:
    demo = kit.DemoProvider(latency=1.0, jitter=0.0)
    job = kit.start(prompts(20), "prompt", provider=demo, concurrency=2, cache=False)
    await asyncio.sleep(2.5)
    job.pause()
    await asyncio.sleep(3.0)
    job.resume()
    await asyncio.sleep(1.5)
    job.cancel()
    result = await job
    report = kit.report(result)
    ((paused, resumed),) = report.pauses
    assert paused == pytest.approx(2.5) and resumed == pytest.approx(5.5)
    assert "cancelled" in set(report.attempts()["outcome"])
    figure = kit.plot_timeline(report)
    top, bottom = figure.axes
    top_legend, bottom_legend = top.get_legend(), bottom.get_legend()
    assert top_legend is not None and bottom_legend is not None
    assert "cancelled (stop, interrupt)" in [t.get_text() for t in top_legend.get_texts()]
    assert "paused" in [t.get_text() for t in bottom_legend.get_texts()]


def test_item9_jupyter_checkpoints_are_ignored() -> None:
    checked = subprocess.run(
        ["git", "check-ignore", "-q", "notebooks/.ipynb_checkpoints/01_quickstart.ipynb"],
        cwd=REPO,
    )
    assert checked.returncode == 0


async def test_item4_re_running_a_cell_stops_its_earlier_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("notebook_kit.api.cell_id", lambda: "cell-3")
    demo = kit.DemoProvider(latency=1.0, jitter=0.0)
    first = kit.start(prompts(50), "prompt", provider=demo, panel=True, cache=False)
    await until(lambda: first.snapshot().ok >= 8)
    second = kit.start(prompts(50), "prompt", provider=demo, panel=True, cache=False)
    assert "Re-running this cell stopped" in second.panel.hint.value
    stopped = await first
    assert (stopped["status"] == "cancelled").any()
    assert kit.jobs() == [second]
    assert kit.jobs(finished=True)[-2:] == [first, second]
    monkeypatch.setattr("notebook_kit.api.cell_id", lambda: "another-cell")
    third = kit.start(prompts(5), "prompt", provider=demo, panel=True, cache=False)
    assert third.panel.hint.value == "" and kit.jobs() == [second, third]  # left running
    second.cancel()
    await second
    await third


def test_a_snapshot_reads_the_rate_window_without_changing_it() -> None:
    """A panel's thread asks for snapshots while the loop's thread ends rows: only the
    loop's thread trims the window, so two threads never pop the same deque."""
    stats = RunStats(total=3)
    for key, t in enumerate((1.0, 2.0, 9.0)):
        result = RowResult(key=key, status=RowStatus.OK)
        stats._row_finished(RowFinished(t=t, key=key, result=result))
    assert list(stats.answered_at) == [9.0]  # older than RECENT_S before 9.0: trimmed
    assert stats.counts(10.0)["rate"] == pytest.approx(1 / 5)
    assert stats.counts(20.0)["rate"] == 0.0
    assert list(stats.answered_at) == [9.0]
