"""A cache that cannot be written, a damaged file, a directory in its place: the run goes on.

Faults are real where sqlite allows it: another connection holding the write lock (with a
short busy timeout), a page limit that makes sqlite report a full disk, garbage bytes.
Every wait is bounded: a hang fails the test instead of hanging the suite.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pandas as pd
import pytest

import notebook_kit as kit
from notebook_kit import cache as cache_module
from notebook_kit.cache import Cache
from notebook_kit.errors import ConfigError
from notebook_kit.types import Completion

T = TypeVar("T")
FINGERPRINT = re.compile(r"[0-9a-f]{64}")  # a cache key; no message may show one


def within(seconds: float, work: Callable[[], T]) -> T:
    """`work()` in a daemon thread: a hang fails the test after `seconds` instead of hanging it."""
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(work())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    if errors:
        raise errors[0]
    return results[0]


def run(path: Path | str | bool, n: int = 20, latency: float = 0.0) -> pd.DataFrame:
    """A run of the demo model; with `latency`, replies trickle in over the run."""
    df = pd.DataFrame({"prompt": [f"question {i}" for i in range(n)]})
    provider = kit.DemoProvider(latency=latency)
    return kit.run_df_sync(
        df, "prompt", provider=provider, cache=path, concurrency=4, progress=False
    )


def cache_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The kit's warnings so far."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "notebook_kit" and r.levelno == logging.WARNING
    ]


def entries(path: Path) -> int:
    """How many replies the file holds, read by a connection of the test's own."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Path]:
    """A cache file whose write lock another connection holds (a kernel mid-transaction)."""
    path = tmp_path / "locked.sqlite"
    Cache(path)
    blocker = sqlite3.connect(path)
    blocker.execute("BEGIN EXCLUSIVE")
    yield path
    blocker.rollback()
    blocker.close()


def small_disk(monkeypatch: pytest.MonkeyPatch, pages: int) -> None:
    """Every cache connection may grow the file to `pages` pages: beyond, sqlite reports
    SQLITE_FULL ("database or disk is full"), as on a full disk or over a quota."""
    connect = Cache._connect

    def limited(self: Cache) -> sqlite3.Connection:
        conn = connect(self)
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    monkeypatch.setattr(Cache, "_connect", limited)


# -- a write that fails -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error"),
    [("locked", "database is locked"), ("full", "database or disk is full")],
    ids=["locked", "full"],
)
def test_a_failed_write_neither_hangs_nor_fails_the_run(
    fault: str,
    error: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(cache_module, "BUSY_TIMEOUT_S", 0.2)
    if fault == "locked":
        path: Path = request.getfixturevalue("locked")
    else:
        path = tmp_path / "full.sqlite"
        Cache(path)  # two pages: the schema and the empty table
        small_disk(monkeypatch, pages=2)
    caplog.set_level(logging.WARNING, logger="notebook_kit")
    result = within(20, lambda: run(path, n=60, latency=0.05))  # puts go on after the fault
    assert (result["status"] == "ok").all() and result["response"].notna().all()
    warnings = cache_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert str(path) in warnings[0] and error in warnings[0]
    assert not FINGERPRINT.search(warnings[0])


def test_the_next_run_writes_again_once_the_lock_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cache_module, "BUSY_TIMEOUT_S", 0.2)
    path = tmp_path / "later.sqlite"
    Cache(path)
    blocker = sqlite3.connect(path)
    blocker.execute("BEGIN EXCLUSIVE")
    caplog.set_level(logging.WARNING, logger="notebook_kit")
    within(20, lambda: run(path))
    blocker.rollback()
    blocker.close()
    assert entries(path) == 0 and len(cache_warnings(caplog)) == 1
    again = within(20, lambda: run(path))
    assert not again["cached"].any()  # nothing was stored by the first run
    assert entries(path) == 20 and len(cache_warnings(caplog)) == 1  # no new warning


def test_a_full_disk_drops_the_batch_and_a_later_put_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "full.sqlite"
    cache = Cache(path)
    small_disk(monkeypatch, pages=2)
    cache.put("big", "demo", "m", Completion(text="x" * 20_000, model="m"))
    assert within(10, cache.flush) is True  # the failed batch counts as done
    assert cache.write_failures == 1
    assert "database or disk is full" in cache.write_error
    cache.put("small", "demo", "m", Completion(text="hi", model="m"))
    assert within(10, cache.flush) is True
    assert cache.get("small") == Completion(text="hi", model="m")
    assert cache.get("big") is None
    assert cache.write_failures == 1
    cache.release()


def test_flush_gives_up_on_a_write_that_cannot_finish(
    locked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "BUSY_TIMEOUT_S", 5.0)
    cache = Cache(locked)
    cache.put("k", "demo", "m", Completion(text="x", model="m"))
    started = time.monotonic()
    assert within(10, lambda: cache.flush(patience=0.3)) is False
    assert time.monotonic() - started < 4  # it did not wait for the busy timeout


def test_a_run_does_not_wait_forever_for_a_stuck_write(
    locked: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer waits for a lock longer than the run will wait for it: the run returns."""
    monkeypatch.setattr(cache_module, "BUSY_TIMEOUT_S", 5.0)
    monkeypatch.setattr(cache_module, "FLUSH_PATIENCE_S", 0.3)
    caplog.set_level(logging.WARNING, logger="notebook_kit")
    result = within(4, lambda: run(locked))
    assert (result["status"] == "ok").all()
    warnings = cache_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert str(locked) in warnings[0] and "gave up" in warnings[0]
    assert not FINGERPRINT.search(warnings[0])


# -- a damaged file, a directory ------------------------------------------------------------


def test_a_damaged_cache_file_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cache.sqlite"
    garbage = bytes(range(256)) * 4096  # 1 MB
    path.write_bytes(garbage)
    caplog.set_level(logging.WARNING, logger="notebook_kit")
    result = within(20, lambda: run(path))
    assert (result["status"] == "ok").all()
    [aside] = tmp_path.glob("cache.sqlite.corrupt-*[0-9]")  # <name>.corrupt-<time>
    assert aside.read_bytes() == garbage  # kept, for whoever wants to look at it
    warnings = cache_warnings(caplog)
    assert len(warnings) == 1 and str(path) in warnings[0] and str(aside) in warnings[0]
    assert entries(path) == 20
    assert kit.cache_info(path)["bytes"] < len(garbage)  # the file moved aside is not counted


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_a_directory_at_the_cache_path_is_a_config_error(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cache.sqlite"
    folder.mkdir()
    if how == "environment":
        monkeypatch.setenv("NOTEBOOK_KIT_CACHE", str(folder))
    with pytest.raises(ConfigError) as caught:
        run(folder if how == "argument" else True)
    message = str(caught.value)
    assert str(folder) in message
    assert 'cache="' in message and "NOTEBOOK_KIT_CACHE" in message and "cache=False" in message


# -- the writer under a flood of puts -------------------------------------------------------


def test_the_first_records_are_on_disk_quickly_under_a_tight_put_loop(tmp_path: Path) -> None:
    path = tmp_path / "flood.sqlite"
    cache = Cache(path)
    reply = Completion(text="x" * 200, model="m", input_tokens=10, output_tokens=20)
    stop = threading.Event()

    def flood() -> None:
        i = 0
        while not stop.is_set():
            cache.put(f"k{i}", "demo", "m", reply)
            i += 1

    reader = sqlite3.connect(path)
    started = time.monotonic()
    threading.Thread(target=flood, daemon=True).start()
    try:
        seen = 0
        while not seen:
            assert time.monotonic() - started < 2, "no record on disk after 2 s"
            stop.wait(0.01)
            seen = reader.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
    finally:
        stop.set()
        reader.close()
    assert within(60, cache.flush)


async def test_a_cache_that_cannot_be_read_warns_once_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(tmp_path / "unreadable.sqlite")

    def broken(key: str) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(cache, "get", broken)
    df = pd.DataFrame({"prompt": [f"q{i}" for i in range(20)]})
    result = await kit.run_df(df, "prompt", provider=kit.DemoProvider(latency=0), cache=cache)
    assert (result["status"] == "ok").all()  # the model answered every row instead
    lookups = [r for r in caplog.records if "cache lookup failed" in r.getMessage()]
    assert len(lookups) == 1
