"""Every lesson notebook runs top to bottom in a real kernel (nbclient), offline.

Lesson 6 runs twice: without keys (its cells skip their calls) and against the suite's fake
server through OPENAI_BASE_URL / OPENAI_API_KEY, so its real-provider path is exercised too.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import KEY
from fake_server import FakeLLMServer

if TYPE_CHECKING:
    import nbformat

pytestmark = pytest.mark.kernel

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
BUDGET_S = 120  # each lesson must fit in class time on the demo model


def execute(name: str) -> tuple[nbformat.NotebookNode, float]:
    import nbformat  # imported here: collecting the suite stays fast when kernels are skipped
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)  # type: ignore[no-untyped-call]
    client = NotebookClient(
        notebook,
        timeout=BUDGET_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    start = time.perf_counter()
    client.execute()
    return notebook, time.perf_counter() - start


def text(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def warnings(notebook: nbformat.NotebookNode) -> list[str]:
    """What the kernel wrote to stderr that a student would see as a warning or error."""
    return [
        output.get("text", "")
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.get("name") == "stderr"
        and any(word in output.get("text", "") for word in ("Warning", "Error", "Traceback"))
    ]


LESSONS = sorted(p.name for p in NOTEBOOKS.glob("0*.ipynb") if not p.name.startswith("06"))


def test_there_are_eight_offline_lessons() -> None:
    assert len(LESSONS) == 8  # lesson 6 needs keys: run twice below


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_runs_offline_top_to_bottom(name: str) -> None:
    notebook, seconds = execute(name)
    assert seconds < BUDGET_S  # (an error in a cell fails execute() itself)
    assert not warnings(notebook), warnings(notebook)
    shown = text(notebook)
    assert "np.int64" not in shown and "np.float64" not in shown  # numbers read as numbers
    if name.startswith("01"):
        assert "attempts: {1: " in shown
    if name.startswith("07"):  # routed, typed, some never fit, and retried
        assert "ai_team" in shown and "status: {'ok': 60}" in shown
    if name.startswith("09"):  # first rows early, the idle timeout saves the long answer
        assert "after " in shown and "all 20 rows after" in shown
        assert "not streamed: error - no reply within timeout=3 s" in shown
        assert "streamed: ok - 150 words" in shown
    if name.startswith("08"):  # chains faster five at a time; the retry pays no research again
        assert "speedup" in shown and "failed at: {'draft'" in shown
        assert "research calls per row: {1: 60}" in shown
    if name.startswith("04"):  # the table of four ways: whole counts, seconds with a point
        table = next(part for part in shown.split("\n\n") if "429s" in part)
        rows = [line.split() for line in table.splitlines()[1:]]
        assert all("." not in count for row in rows for count in row[-3:]), table


def test_real_provider_lesson_skips_cleanly_without_keys() -> None:
    notebook, _ = execute("06_real_providers.ipynb")
    out = text(notebook)
    assert "none found" in out and out.count("skipped: no provider") == 3


def test_real_provider_lesson_against_the_fake_server(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.configure(latency=0.05)
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    notebook, _ = execute("06_real_providers.ipynb")
    out = text(notebook)
    assert "provider: openai" in out and "skipped: no provider" not in out
    assert "{'ok': 48, 'skipped': 2}" in out or "{'ok': 50}" in out
    assert server.stats()["requests_total"] >= 50
    assert KEY not in out


def test_batch_lesson_reattaches_from_a_fresh_kernel(tmp_path: Path) -> None:
    """Lesson 10 as a student runs it: the first half starts a batch and the kernel goes
    away; the second half, in a fresh kernel, reattaches (no second batch) and reads it."""
    import os

    import nbformat
    from nbclient import NotebookClient

    from notebook_kit.batch.store import BatchStore

    lesson = nbformat.read(NOTEBOOKS / "10_batch_jobs.ipynb", as_version=4)  # type: ignore[no-untyped-call]
    fresh = [i for i, c in enumerate(lesson.cells) if "fresh-kernel" in c.metadata.get("tags", [])]
    assert fresh and fresh == list(range(fresh[0], len(lesson.cells)))
    store = BatchStore(Path(os.environ["NOTEBOOK_KIT_CACHE"]))
    first = nbformat.from_dict({**lesson, "cells": lesson.cells[: fresh[0]]})  # type: ignore[no-untyped-call]
    client = NotebookClient(
        first,
        timeout=BUDGET_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )

    async def first_half() -> None:  # the async API: nbclient's sync one leaves a loop open
        async with client.async_setup_kernel():
            for index, cell in enumerate(first.cells):
                await client.async_execute_cell(cell, index)
            deadline = time.monotonic() + 30
            while not store.all() and time.monotonic() < deadline:  # noqa: ASYNC110  (another process writes it)
                await asyncio.sleep(0.05)

    asyncio.run(first_half())
    (created,) = store.all()
    assert "cost USD (expected)" in text(first) and "up to 24 h" in text(first)
    second = nbformat.from_dict({**lesson, "cells": lesson.cells[fresh[0] :]})  # type: ignore[no-untyped-call]
    NotebookClient(
        second,
        timeout=BUDGET_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute()
    shown = text(second)
    assert "status: {'ok': 297, 'skipped': 3}" in shown, shown  # 3 reviews are empty
    assert "batch jobs created: 1" in shown and "online run served from the cache: 297" in shown
    assert not warnings(second), warnings(second)
    assert [b.batch_id for b in store.all()] == [created.batch_id]
