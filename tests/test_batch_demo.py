"""mode="batch" on the demo model's batch service: a whole run, the budget, splitting, the
jobs table, reattaching from another process, Stop, an interrupted wait, kit.attach and
kit.batches. (The wire of OpenAI's and Anthropic's batch APIs: test_batch_http.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pytest
from conftest import eventually
from pydantic import BaseModel

import notebook_kit as kit
from notebook_kit.batch import service as batch_service
from notebook_kit.batch.store import BatchStore
from notebook_kit.errors import CallError, ConfigError, RunError
from notebook_kit.types import ErrorType

FAST: dict[str, Any] = {"mode": "batch", "batch_poll_s": 0.02, "progress": False}


def prompts(n: int, prefix: str = "Summarize: row", **replaced: str) -> pd.DataFrame:
    """`n` prompts; `replaced`: row number (as text) -> its prompt instead."""
    texts = [f"{prefix} {i}. It is good." for i in range(n)]
    for row, text in replaced.items():
        texts[int(row)] = text
    return pd.DataFrame({"prompt": texts})


def demo(seconds: float = 0.2, **kwargs: Any) -> kit.DemoProvider:
    return kit.DemoProvider(batch_seconds=seconds, **kwargs)


def cache_dir() -> Path:
    return Path(os.environ["NOTEBOOK_KIT_CACHE"]).parent


def demo_batches() -> list[dict[str, Any]]:
    folder = cache_dir() / "demo_batches"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


async def test_a_batch_run_answers_every_row_at_the_batch_price_and_caches_it() -> None:
    df = prompts(12, **{"3": "", "5": "Summarize: row 4. It is good."})  # skipped; duplicate
    result = await kit.run_df(df, "prompt", provider=demo(), **FAST)
    assert result["status"].tolist().count("ok") == 11
    assert result.loc[3, "status"] == "skipped"
    assert result["cached"][5] and result["response"][5] == result["response"][4]
    online = await kit.run_df(df, "prompt", provider=demo(latency=0), cache=False, progress=False)
    assert result["response"].tolist() == online["response"].tolist()  # the same answers
    paid, full = result["cost_usd"].drop([3, 5]), online["cost_usd"].drop([3, 5])
    assert paid.round(12).tolist() == (full / 2).round(12).tolist()  # half the online price
    (batch,) = demo_batches()
    assert len(batch["items"]) == 10  # 12 rows - 1 skipped - 1 duplicate
    meta = result.attrs["notebook_kit"]
    assert meta["mode"] == "batch" and list(meta["batches"].values()) == ["done"]
    again = await kit.run_df(df, "prompt", provider=demo(), **FAST)
    assert again["cached"].sum() == 11 and len(demo_batches()) == 1  # online and batch share


async def test_the_rows_past_the_budget_are_not_submitted() -> None:
    kit.set_price("demo", input=1000.0, output=1000.0)  # $0.001 per token, before halving
    try:
        df = prompts(10)
        result = await kit.run_df(
            df, "prompt", provider=demo(), max_tokens=20, budget_usd=0.06, **FAST
        )
    finally:
        from notebook_kit.pricing import _custom, price_of

        _custom.clear()
        price_of.cache_clear()
    sent = result["status"] == "ok"
    assert 0 < sent.sum() < 10 and sent[: sent.sum()].all()  # the first rows, in order
    assert result.loc[~sent, "error"].str.contains("budget_usd=0.06").all()
    assert (result.loc[~sent, "status"] == "cancelled").all()
    (batch,) = demo_batches()
    assert len(batch["items"]) == sent.sum()


async def test_a_job_past_the_limits_is_split_into_several_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(batch_service.BATCH_LIMITS, "demo", batch_service.BatchLimit(4, 10**9))
    result = await kit.run_df(prompts(10), "prompt", provider=demo(), **FAST)
    assert (result["status"] == "ok").all()
    assert sorted(len(b["items"]) for b in demo_batches()) == [2, 4, 4]
    monkeypatch.setitem(batch_service.BATCH_LIMITS, "demo", batch_service.BatchLimit(100, 700))
    result = await kit.run_df(
        prompts(10, "Classify the sentiment of"), "prompt", provider=demo(), **FAST
    )
    sizes = sorted(len(b["items"]) for b in demo_batches())
    assert (result["status"] == "ok").all() and len(sizes) > 4 and sum(sizes) == 20


async def test_every_batch_is_written_down_with_its_rows_fingerprints() -> None:
    result = await kit.run_df(prompts(5), "prompt", provider=demo(), **FAST)
    store = BatchStore(Path(os.environ["NOTEBOOK_KIT_CACHE"]))
    (stored,) = store.all()
    assert stored.batch_id in result.attrs["notebook_kit"]["batches"]
    assert (stored.provider, stored.rows, stored.state, stored.collected) == (
        "demo",
        5,
        "done",
        True,
    )
    rows = store.rows(stored.batch_id)
    assert len(rows) == 5 and len({fp for _, fp in rows}) == 5
    listed = kit.batches()
    assert listed.loc[0, "batch_id"] == stored.batch_id and listed.loc[0, "state"] == "done"


async def test_a_batch_is_claimed_in_the_table_before_it_is_created(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def full(*args: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(BatchStore, "record", full)
    with pytest.raises(RunError, match="nothing was sent") as caught:
        await kit.run_df(prompts(4), "prompt", provider=demo(seconds=5), **FAST)
    assert not demo_batches()  # never created
    assert caught.value.partial is not None
    assert (caught.value.partial["status"] == "cancelled").all()


async def test_a_batch_that_cannot_be_written_down_is_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def full(*args: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(BatchStore, "settle_claim", full)
    with pytest.raises(RunError, match="it was cancelled, so that no later run pays"):
        await kit.run_df(prompts(4), "prompt", provider=demo(seconds=5), **FAST)
    (batch,) = demo_batches()
    assert batch["cancelled_at"] is not None

    async def refused(*args: Any) -> None:
        raise CallError(ErrorType.SERVER, "HTTP 503: busy")

    monkeypatch.setattr("notebook_kit.batch.demo_batches.DemoBatches.cancel", refused)
    with pytest.raises(RunError, match=r"cancelling it failed too .*HTTP 503"):
        await kit.run_df(prompts(4, "Other"), "prompt", provider=demo(seconds=5), **FAST)


async def test_stop_cancels_the_batch_and_keeps_the_rows_it_finished() -> None:
    job = kit.start(prompts(40), "prompt", provider=demo(seconds=2), panel=False, **FAST)
    await eventually(lambda: any(b.done >= 10 for b in job.snapshot().batches))
    job.cancel()
    result = await job
    done = result["status"] == "ok"
    assert 10 <= done.sum() < 40
    assert (result.loc[~done, "status"] == "cancelled").all()
    assert result.loc[~done, "error_type"].eq("cancelled").all()
    (batch,) = demo_batches()
    assert batch["cancelled_at"] is not None
    assert list(result.attrs["notebook_kit"]["batches"].values()) == ["cancelled"]


async def test_an_interrupted_wait_leaves_the_batch_running_and_a_rerun_collects_it() -> None:
    df = prompts(8)
    task = asyncio.create_task(kit.run_df(df, "prompt", provider=demo(seconds=1.0), **FAST))
    await eventually(lambda: bool(demo_batches()))
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as caught:
        await task
    (line,) = caught.value._render_traceback_()  # type: ignore[attr-defined]  # what IPython shows
    assert "the batch jobs run on at the provider (demobatch_" in line
    assert "run this cell again to collect their rows" in line and "kit.attach('demobatch_" in line
    partial = kit.last_result()
    assert partial is not None and (partial["status"] == "pending").all()
    job = kit.last_job()
    assert job is not None and job.state == "stopped"
    snap = job.snapshot()
    assert (snap.pending, snap.cancelled, snap.in_flight) == (8, 0, 0)
    assert partial["error"].str.contains("run the same cell again").all()
    assert await kit.retry_failed(partial) is not None  # pending rows are not re-run online
    (batch,) = demo_batches()
    assert batch["cancelled_at"] is None  # still running
    result = await kit.run_df(df, "prompt", provider=demo(seconds=1.0), **FAST)
    assert (result["status"] == "ok").all() and len(demo_batches()) == 1  # reattached


async def test_an_interrupt_while_the_batch_is_created_names_it_once_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The interrupt lands between the provider's create and the run writing the batch
    down: the run waits for the write, and its one line names the batch (it used to say
    "0 rows done" as if nothing ran on at the provider)."""
    from notebook_kit.batch.demo_batches import DemoBatches

    created, go_on = asyncio.Event(), asyncio.Event()
    submit = DemoBatches.submit

    async def slow_submit(self: DemoBatches, *args: Any, **kwargs: Any) -> Any:
        status = await submit(self, *args, **kwargs)
        created.set()
        await go_on.wait()
        return status

    monkeypatch.setattr(DemoBatches, "submit", slow_submit)
    task = asyncio.create_task(kit.run_df(prompts(4), "prompt", provider=demo(), **FAST))
    await created.wait()
    task.cancel()  # its wait for the shielded submission is cancelled at once
    go_on.set()
    with pytest.raises(asyncio.CancelledError) as caught:
        await task
    (line,) = caught.value._render_traceback_()  # type: ignore[attr-defined]
    (path,) = (cache_dir() / "demo_batches").glob("*.json")
    assert f"the batch jobs run on at the provider ({path.stem})" in line


def test_a_killed_process_is_reattached_by_the_next_one(tmp_path: Path) -> None:
    """A kernel killed while its batch runs: the same cell in a new process creates no
    second batch and reads the first one's rows."""
    script = tmp_path / "cell.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, sys
            import pandas as pd
            import notebook_kit as kit
            df = pd.DataFrame({"prompt": [f"Summarize: row {i}. Fine." for i in range(6)]})
            async def main():
                result = await kit.run_df(
                    df, "prompt", provider=kit.DemoProvider(batch_seconds=1.5),
                    mode="batch", batch_poll_s=0.05, progress=False)
                print("RESULT", result["status"].tolist())
            asyncio.run(main())
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    first = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL)
    folder = cache_dir() / "demo_batches"
    for _ in range(400):  # the first process submitted (its batch file exists)
        if list(folder.glob("*.json")) and BatchStore(Path(os.environ["NOTEBOOK_KIT_CACHE"])).all():
            break
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    (created,) = demo_batches()
    second = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, check=True
    )
    assert "RESULT ['ok', 'ok', 'ok', 'ok', 'ok', 'ok']" in second.stdout
    assert len(demo_batches()) == 1 and demo_batches()[0]["created"] == created["created"]


async def test_attach_reads_a_batch_by_its_id() -> None:
    df = prompts(6)
    task = asyncio.create_task(kit.run_df(df, "prompt", provider=demo(seconds=0.5), **FAST))
    await eventually(lambda: not kit.batches().empty)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    batch_id = str(kit.batches()["batch_id"][0])
    result = await kit.attach(batch_id, panel=False)
    assert result["position"].tolist() == list(range(6))
    assert (result["status"] == "ok").all()
    online = await kit.run_df(df, "prompt", provider="demo", cache=False, progress=False)
    assert result["response"].tolist() == online["response"].tolist()
    again = await kit.run_df(df, "prompt", provider=demo(), **FAST)
    assert again["cached"].all()  # attach put the replies in the cache
    with pytest.raises(ConfigError, match=r"kit.batches\(\) lists"):
        kit.attach("no-such-batch")


async def test_retry_failed_reruns_a_batchs_failures_online_unless_told() -> None:
    df = prompts(30)
    result = await kit.run_df(df, "prompt", provider=demo(error_rate=0.3, seed=3), **FAST)
    failed = result["status"] == "error"
    assert failed.any() and result.loc[failed, "error_type"].eq("server").all()
    again = await kit.retry_failed(result, provider=demo(seconds=0.1, latency=0))
    assert (again["status"] == "ok").all()
    assert again.attrs["notebook_kit"]["mode"] == "online" and len(demo_batches()) == 1
    result = await kit.run_df(
        prompts(30, "Other"), "prompt", provider=demo(error_rate=0.3, seed=3), **FAST
    )
    again = await kit.retry_failed(
        result, provider=demo(seconds=0.1), mode="batch", batch_poll_s=0.02
    )
    assert again.attrs["notebook_kit"]["mode"] == "batch" and len(demo_batches()) == 3


def test_what_batch_mode_refuses_before_anything_is_sent() -> None:
    df = prompts(2)
    with pytest.raises(ConfigError, match="stream=True is for online runs"):
        kit.estimate(df, "prompt", provider="demo", mode="batch", stream=True)
    with pytest.raises(ConfigError, match='mode must be "online" or "batch"'):
        kit.estimate(df, "prompt", provider="demo", mode="offline")
    with pytest.raises(ConfigError, match="pipelines run online"):
        kit.estimate(df, [kit.Step("a", template="{prompt}", mode="batch")], provider="demo")
    with pytest.raises(ConfigError, match="has no batch mode"):
        asyncio.run(
            kit.run_df(df, "prompt", provider=_OtherProvider(), mode="batch", progress=False)
        )
    with pytest.raises(ConfigError, match=r"extra_headers=\.\.\. is an option of an HTTP request"):
        kit.estimate(df, "prompt", provider=demo(), params={"extra_headers": {}}, mode="batch")
    assert not (cache_dir() / "demo_batches").exists()


class _OtherProvider(kit.Provider):
    """A provider the kit has no batch service for."""

    name = "other"
    default_model = "other-model"

    def session(self, *, timeout: float, clock: Any) -> Any:
        raise AssertionError("nothing may be sent")


def test_the_estimate_shows_the_batch_price_beside_the_online_one() -> None:
    table = kit.estimate(prompts(10), "prompt", provider="demo", max_tokens=100)
    online, batch = table["value"].to_dict(), table["batch"].to_dict()
    assert batch["cost USD (at most)"] == pytest.approx(online["cost USD (at most)"] / 2, abs=1e-6)
    assert batch["wall time s (expected)"] == "up to 24 h"
    assert batch["input tokens"] == online["input tokens"]


async def test_iter_rows_gives_a_batchs_rows_when_it_ends() -> None:
    seen = [
        row.status
        async for row in kit.iter_rows(prompts(30), "prompt", provider=demo(), **FAST, buffer=1)
    ]
    assert seen == ["ok"] * 30 and len(demo_batches()) == 1


async def test_the_panel_shows_each_batch_and_its_stop_cancels_it() -> None:
    from notebook_kit.batch_panel import BatchPanel

    options = {**FAST, "progress": True}
    job = kit.start(prompts(40), "prompt", provider=demo(seconds=2), panel=True, **options)
    panel = job.panel
    assert isinstance(panel, BatchPanel) and panel.pause not in panel.widget.children[0].children
    await eventually(lambda: "running" in panel.batches.value)
    line = panel.batches.value
    assert line.startswith("demobatch_") and "/40 done" in line and "expires in 24 h" in line
    panel.stop.click()
    result = await job
    assert " cancelled" in panel.batches.value and "expires" not in panel.batches.value
    assert (result["status"] == "cancelled").any() and panel.stop.disabled
    assert "cancelled" in panel.summary()[0]


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float


async def test_a_reply_that_does_not_fit_is_invalid_output_and_not_asked_again() -> None:
    faulty = demo(invalid_output_rate=0.4, seed=2)
    result = await kit.run_df(
        prompts(20, "Classify the sentiment of"),
        "prompt",
        provider=faulty,
        schema=Sentiment,
        **FAST,
    )
    bad = result["status"] == "error"
    assert bad.any() and (~bad).any()
    assert result.loc[bad, "error_type"].eq("invalid_output").all()
    assert result["attempts"].eq(1).all()  # no re-asks inside a batch
    assert result.loc[bad, "cost_usd"].gt(0).all()  # a reply that does not fit is still billed
    assert result.loc[~bad, "label"].isin(["positive", "negative", "neutral"]).all()


async def test_the_jobs_table_exists_without_a_cache() -> None:
    result = await kit.run_df(prompts(3), "prompt", provider=demo(), **{**FAST, "cache": False})
    assert (result["status"] == "ok").all()
    assert kit.batches()["rows"].tolist() == [3]


async def test_running_the_start_cell_again_waits_for_its_batch_instead_of_cancelling_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("notebook_kit.api.cell_id", lambda: "cell-7")
    df = prompts(16)
    first = kit.start(df, "prompt", provider=demo(seconds=1.0), panel=True, **FAST)
    await eventually(lambda: any(b.state == "queued" or b.done for b in first.snapshot().batches))
    second = kit.start(df, "prompt", provider=demo(seconds=1.0), panel=True, **FAST)
    assert "stopped waiting for the job it had started" in second.panel.hint.value
    result = await second
    assert (result["status"] == "ok").all()
    (batch,) = demo_batches()
    assert batch["cancelled_at"] is None
    assert (first.df["status"] == "pending").all()


async def test_an_unread_batch_that_ended_early_gives_what_it_answered_and_the_rest_is_sent() -> (
    None
):
    df = prompts(10)
    task = asyncio.create_task(kit.run_df(df, "prompt", provider=demo(seconds=2.0), **FAST))
    await eventually(lambda: bool(demo_batches()))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    folder = cache_dir() / "demo_batches"
    (path,) = folder.glob("*.json")
    record = json.loads(path.read_text())
    record["created"] -= 1.0  # half of it answered, then cancelled elsewhere
    record["cancelled_at"] = record["created"] + 1.0
    path.write_text(json.dumps(record))
    result = await kit.run_df(df, "prompt", provider=demo(seconds=0.2), **FAST)
    assert (result["status"] == "ok").all()
    sizes = sorted(len(b["items"]) for b in demo_batches())
    assert sizes == [5, 10]  # the 5 it did not answer were sent again, the rest read


async def test_a_batch_the_provider_lost_is_sent_again() -> None:
    df = prompts(6)
    task = asyncio.create_task(kit.run_df(df, "prompt", provider=demo(seconds=2.0), **FAST))
    await eventually(lambda: bool(demo_batches()))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for path in (cache_dir() / "demo_batches").glob("*.json"):
        path.unlink()  # deleted at the provider (OpenAI keeps batches about 30 days)
    result = await kit.run_df(df, "prompt", provider=demo(seconds=0.2), **FAST)
    assert (result["status"] == "ok").all() and len(demo_batches()) == 1
    assert sorted(kit.batches()["state"]) == ["done", "lost"]


async def test_a_second_run_of_the_same_rows_waits_for_the_first_ones_claim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from notebook_kit.batch.demo_batches import DemoBatches

    slow_submit = DemoBatches.submit

    async def slowly(self: DemoBatches, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.5)  # an upload of a big file
        return await slow_submit(self, *args, **kwargs)

    monkeypatch.setattr(DemoBatches, "submit", slowly)
    df = prompts(8)
    first = asyncio.create_task(kit.run_df(df, "prompt", provider=demo(), **FAST))
    store = BatchStore(Path(os.environ["NOTEBOOK_KIT_CACHE"]))
    await eventually(lambda: bool(store.all()) and store.all()[0].claimed)
    second = await kit.run_df(df, "prompt", provider=demo(), **FAST)
    assert (second["status"] == "ok").all() and (await first)["status"].eq("ok").all()
    assert len(demo_batches()) == 1


async def test_stop_tries_a_refused_cancel_again_until_the_provider_takes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from notebook_kit.batch.demo_batches import DemoBatches

    real_cancel, calls = DemoBatches.cancel, []

    async def flaky(self: DemoBatches, batch_id: str) -> None:
        calls.append(batch_id)
        if len(calls) < 3:
            raise CallError(ErrorType.SERVER, "HTTP 503: busy")
        await real_cancel(self, batch_id)

    monkeypatch.setattr(DemoBatches, "cancel", flaky)
    job = kit.start(prompts(20), "prompt", provider=demo(seconds=3), panel=False, **FAST)
    await eventually(lambda: any(b.done for b in job.snapshot().batches))
    job.cancel()
    result = await job
    assert len(calls) == 3 and (result["status"] == "cancelled").any()
    (batch,) = demo_batches()
    assert batch["cancelled_at"] is not None


async def test_each_batch_is_written_down_with_its_own_model() -> None:
    df = prompts(6).assign(which=["demo", "demo-large"] * 3)
    result = await kit.run_df(df, "prompt", provider=demo(), model_col="which", **FAST)
    assert (result["status"] == "ok").all()
    assert sorted(kit.batches()["model"]) == ["demo", "demo-large"]


async def test_an_unwritable_database_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("NOTEBOOK_KIT_CACHE", str(blocker / "c.sqlite"))
    options = {**FAST, "cache": False}
    with pytest.raises(ConfigError, match="cannot be written"):
        await kit.run_df(prompts(2), "prompt", provider=demo(), **options)
    job = kit.last_job()
    assert job is not None and job.state == "failed" and job not in kit.jobs()
    with pytest.raises(ConfigError, match="cannot be written"):
        kit.batches()


async def test_a_batch_damaged_or_deleted_mid_run_fails_its_rows_and_the_run_goes_on() -> None:
    job = kit.start(prompts(6), "prompt", provider=demo(seconds=2), panel=False, **FAST)
    await eventually(lambda: bool(demo_batches()))
    (path,) = (cache_dir() / "demo_batches").glob("*.json")
    path.write_text("{ not json")  # damaged at the provider's side
    result = await job
    assert (result["status"] == "error").all() and result["error_type"].eq("server").all()
    assert result["error"].str.contains("no longer has this batch").all()
    assert kit.batches()["state"].tolist() == ["lost"]
    again = await kit.retry_failed(result, provider=demo(latency=0))
    assert (again["status"] == "ok").all()
