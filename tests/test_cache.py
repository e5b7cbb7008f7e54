"""Never pay twice: the persistent cache, resume after a crash, in-run dedupe, shared files."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import KEY
from fake_server import FakeLLMServer

import notebook_kit as kit
from notebook_kit import cache as cache_module
from notebook_kit.cache import Cache
from notebook_kit.types import Completion

REPO = Path(__file__).resolve().parents[1]


def prompts(n: int, prefix: str = "question") -> pd.DataFrame:
    return pd.DataFrame({"prompt": [f"{prefix} {i}" for i in range(n)]})


async def run(server: FakeLLMServer, df: pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
    kwargs.setdefault("progress", False)
    return await kit.run_df(df, "prompt", base_url=server.openai_base_url, api_key=KEY, **kwargs)


def ask(path: Path, sql: str) -> Any:
    """One value about the file, from a connection of the test's own (not the cache's)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


INTEGRITY, ENTRIES = "PRAGMA integrity_check", "SELECT COUNT(*) FROM completions"


async def test_a_second_run_makes_no_calls(server: FakeLLMServer) -> None:
    first = await run(server, prompts(20), concurrency=5)
    assert server.stats()["requests_total"] == 20
    assert not first["cached"].any()
    again = await run(server, prompts(20), concurrency=5)
    assert server.stats()["requests_total"] == 20  # nothing new on the wire
    assert again["cached"].all() and again["attempts"].eq(0).all()
    assert again["response"].tolist() == first["response"].tolist()
    assert again["cost_usd"].eq(0).all()
    assert again.attrs["notebook_kit"]["requests"] == 0


async def test_the_cache_key_includes_model_and_parameters(server: FakeLLMServer) -> None:
    await run(server, prompts(3), model="m1")
    await run(server, prompts(3), model="m2")
    await run(server, prompts(3), model="m1", temperature=0.5)
    assert server.stats()["requests_total"] == 9
    await run(server, prompts(3), model="m1", temperature=0.5)
    assert server.stats()["requests_total"] == 9


async def test_identical_prompts_in_one_run_are_called_once(server: FakeLLMServer) -> None:
    server.configure(latency=0.1)
    df = pd.DataFrame({"prompt": ["same"] * 5 + ["other"] + ["same"] * 4})
    result = await run(server, df, concurrency=4, cache=False)
    assert server.stats()["requests_total"] == 2
    assert result["attempts"].tolist() == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert result["cached"].tolist() == [False] + [True] * 4 + [False] + [True] * 4
    assert result["response"].nunique() == 2 and (result["status"] == "ok").all()


async def test_errors_are_never_cached(server: FakeLLMServer) -> None:
    df = pd.DataFrame({"prompt": ["[[status=500 times=1]] flaky", "fine"]})
    first = await run(server, df, max_attempts=1)
    assert first["status"].tolist() == ["error", "ok"]
    second = await run(server, df, max_attempts=1)
    assert second["status"].tolist() == ["ok", "ok"]  # the failed row was called again
    assert second["cached"].tolist() == [False, True]
    assert server.stats()["requests_total"] == 3


async def test_followers_of_a_failed_row_fail_with_it_and_can_be_retried(
    server: FakeLLMServer,
) -> None:
    df = pd.DataFrame({"prompt": ["[[status=500 times=1]] twice"] * 2})
    first = await run(server, df, max_attempts=1)
    assert first["status"].tolist() == ["error", "error"]
    assert first["error"].iloc[1].startswith("same request as row 0")
    fixed = await kit.retry_failed(first, progress=False)
    assert (fixed["status"] == "ok").all()


def test_the_api_key_never_reaches_the_cache_file(server: FakeLLMServer, tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite"
    kit.run_df_sync(
        prompts(10),
        "prompt",
        base_url=server.openai_base_url,
        api_key=KEY,
        cache=path,
        progress=False,
    )
    files = list(tmp_path.glob("keys.sqlite*"))
    assert files
    for file in files:
        assert KEY.encode() not in file.read_bytes()
    assert kit.cache_info(path)["entries"] == 10


def test_cache_info_and_clear(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    df = prompts(6)
    kit.run_df_sync(df, "prompt", provider=kit.DemoProvider(latency=0), cache=path, progress=False)
    kit.run_df_sync(
        df,
        "prompt",
        provider=kit.DemoProvider(latency=0),
        model="demo-large",
        cache=path,
        progress=False,
    )
    info = kit.cache_info(path)
    assert info["entries"] == 12 and info["models"] == 2 and info["bytes"] > 0
    assert kit.clear_cache(model="demo-large", cache=path) == 6
    assert kit.cache_info(path)["entries"] == 6
    assert kit.clear_cache(cache=path) == 6


def test_writes_never_block_the_caller(tmp_path: Path) -> None:
    """While another process holds the write lock, put() returns at once (the writer waits)."""
    path = tmp_path / "locked.sqlite"
    cache = Cache(path)
    blocker = sqlite3.connect(path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    reply = Completion(text="x", model="m", input_tokens=1, output_tokens=1)
    done = threading.Event()

    def put_many() -> None:
        for i in range(500):
            cache.put(f"k{i}", "demo", "m", reply)
        done.set()

    threading.Thread(target=put_many, daemon=True).start()
    assert done.wait(5), "put() waited for the database"
    blocker.rollback()
    blocker.close()
    cache.flush()
    assert cache.info()["entries"] == 500


WRITER = textwrap.dedent(
    """
    import sys
    from notebook_kit.cache import Cache
    from notebook_kit.types import Completion
    cache = Cache(sys.argv[1])
    reply = Completion(text="x" * 200, model="m", input_tokens=10, output_tokens=20)
    for i in range(5000):
        cache.put(f"{sys.argv[2]}-{i}", "demo", "m", reply)
    cache.flush()
    print("done")
    """
)


def test_two_processes_share_one_cache_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    Cache(path)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), name], stdout=subprocess.PIPE, text=True
        )
        for name in ("a", "b")
    ]
    outputs = [w.communicate(timeout=120)[0] for w in writers]
    assert [o.strip() for o in outputs] == ["done", "done"]
    assert ask(path, INTEGRITY) == "ok"
    assert Cache(path).info()["entries"] == 10_000


CHILD = textwrap.dedent(
    """
    import sys
    import pandas as pd
    import notebook_kit as kit
    df = pd.DataFrame({"prompt": [f"question {i}" for i in range(60)]})
    kit.run_df_sync(df, "prompt", base_url=sys.argv[1], api_key=sys.argv[2],
                    cache=sys.argv[3], concurrency=4, progress=False)
    """
)


async def test_resume_after_a_killed_process_calls_only_unfinished_rows(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    server.configure(latency=0.1)
    path = tmp_path / "resume.sqlite"
    child = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
        [sys.executable, "-c", CHILD, server.openai_base_url, KEY, str(path)],
        cwd=REPO,
    )
    try:
        for _ in range(300):  # the child imports pandas and the SDK first: up to 30 s
            if server.stats()["requests_total"] >= 24:
                break
            await asyncio.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    assert ask(path, INTEGRITY) == "ok"
    saved = Cache(path).info()["entries"]
    sent_before = server.stats()["requests_total"]
    assert 10 <= saved < 60
    assert saved >= sent_before - 4 - 4  # at most the calls in flight and one batch are lost
    result = await run(server, prompts(60), concurrency=4, cache=path)
    assert (result["status"] == "ok").all()
    assert int(result["cached"].sum()) == saved
    assert server.stats()["requests_total"] - sent_before == 60 - saved


@pytest.mark.parametrize(
    ("wal", "network", "expected"),
    [(True, False, "wal"), (False, False, "delete"), (None, True, "delete"), (None, False, "wal")],
)
def test_journal_modes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    wal: bool | None,
    network: bool,
    expected: str,
) -> None:
    """The mode asked for (or chosen for a network file system) is the one sqlite uses."""
    monkeypatch.setattr(cache_module, "on_network_filesystem", lambda path: network)
    path = tmp_path / "j.sqlite"
    cache = Cache(path, wal=wal)
    cache.put("k", "demo", "m", Completion(text="hi", model="m"))
    cache.flush()
    assert cache.get("k") == Completion(text="hi", model="m")
    cache.release()
    assert ask(path, "PRAGMA journal_mode") == expected  # what sqlite says, not the argument
    assert cache.info()["journal"] == expected


def test_interrupted_writes_leave_a_sound_file(tmp_path: Path) -> None:
    """SIGKILL in the middle of a stream of writes: the file still passes integrity_check."""
    path = tmp_path / "killed.sqlite"
    Cache(path)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER.replace("5000", "200000"), str(path), "x"]
    )
    end = time.monotonic() + 60  # the child imports first; then commits come every ~0.1 s
    while ask(path, ENTRIES) < 2000:  # kill it in the middle of its stream
        assert time.monotonic() < end and writer.poll() is None, "the writer did not write"
        time.sleep(0.01)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=10)
    assert ask(path, INTEGRITY) == "ok"
    assert ask(path, ENTRIES) >= 2000


def test_a_put_as_the_writer_retires_is_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Cache, "IDLE_S", 0.01)
    cache = Cache(tmp_path / "idle.sqlite")
    reply = Completion(text="x", model="m")
    for i in range(200):  # many puts land while a writer is deciding to retire
        cache.put(f"k{i}", "demo", "m", reply)
        time.sleep(0.0005 * (i % 30))
    done = threading.Event()

    def flush() -> None:
        cache.flush()
        done.set()

    threading.Thread(target=flush, daemon=True).start()
    assert done.wait(10), "flush() hung: a record was queued with no writer left"
    assert cache.info()["entries"] == 200


async def test_a_model_switched_mid_run_is_cached_under_the_model_used(tmp_path: Path) -> None:
    path = tmp_path / "switch.sqlite"
    demo = kit.DemoProvider(latency=0.02)
    df = prompts(40)
    job = kit.start(df, "prompt", provider=demo, concurrency=2, cache=path, progress=False)
    for _ in range(200):
        await asyncio.sleep(0.01)
        if job.snapshot().done >= 10:
            break
    job.set_model("demo-large")
    first = await job
    assert {"demo", "demo-large"} <= set(first["model"])
    again = await kit.run_df(df, "prompt", provider=demo, model="demo", cache=path, progress=False)
    used_demo = first["model"] == "demo"
    assert again.loc[used_demo, "cached"].all()
    assert not again.loc[~used_demo, "cached"].any()  # demo-large replies are not demo's
    assert again["model"].eq("demo").all()
