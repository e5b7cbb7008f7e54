"""End to end in a real browser: JupyterLab on 127.0.0.1, Debian's Chromium driven by Playwright.

The concurrency slider is moved with the keyboard several times, during a `kit.start` job and
during an awaited `run_df`, and every move must show in the fake server's in-flight count.
Only a real frontend shows the ipykernel 7.4 freeze (one message in flight per widget, released
by an idle that never comes): the second test turns the kit's fix off and sees the freeze.
A screenshot is saved under test-artifacts/.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import KEY
from fake_server import FakeLLMServer

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "nbkit-test-token"
ROWS = 3000  # enough that no run ends by itself during a test
LATENCY = 0.4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def notebook(path: Path) -> None:
    """The server's URL and key reach the kernel as OPENAI_BASE_URL / OPENAI_API_KEY."""
    cells = [
        "import pandas as pd, notebook_kit as kit\n"
        f"df = pd.DataFrame({{'prompt': [f'question {{i}}' for i in range({ROWS})]}})\n"
        "print('READY')",
        "job = kit.start(df, 'prompt', concurrency=2)",
        "r = await job\nprint('STOPPED', r.status.value_counts().to_dict())",
        "r2 = await kit.run_df(df, 'prompt', concurrency=2)\n"
        "print('AWAITED', r2.status.value_counts().to_dict())",
        "kit.estimate(df.head(3), 'prompt', provider='demo', max_tokens=10)",
    ]
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {},
                "source": c,
                "outputs": [],
                "execution_count": None,
            }
            for c in cells
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))


@pytest.fixture(scope="module")
def chromium() -> str:
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            "BROWSER TEST SKIPPED: Chromium is not installed and could not be installed "
            "(.ci/run installs it with apt-get install -y chromium)"
        )
    return CHROMIUM


class Lab:
    """A JupyterLab server on 127.0.0.1 with a token, in fresh config and workspace folders."""

    def __init__(self, notebook_dir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        home = Path(tempfile.mkdtemp(prefix="nbkit-lab-"))
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        environment = {
            **os.environ,
            "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "PYTHONPATH": path,
            **env,
        }
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={notebook_dir}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")
        self.log = open(home / "lab.log", "w")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(command, env=environment, stdout=self.log, stderr=self.log)
        self._wait_ready()

    def _wait_ready(self) -> None:
        url = f"http://127.0.0.1:{self.port}/api/status?token={TOKEN}"
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("JupyterLab did not start")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/lab/tree/{name}?reset&token={TOKEN}"

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def until(condition: Callable[[], bool], seconds: float = 8.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


class Page:
    """The notebook in the browser: run cells, read outputs, move a cell's slider."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.cells = page.locator(".jp-Notebook .jp-Cell")

    def run(self, index: int, *, expect: str | None = None, selector: str | None = None) -> None:
        for attempt in range(2):  # known flake: the first Shift+Enter after load may be lost
            self.cells.nth(index).locator(".jp-InputPrompt").click()
            self.page.keyboard.press("Shift+Enter")
            target = self.cells.nth(index).locator(selector or ".jp-OutputArea-output")
            if expect is not None:
                target = target.filter(has_text=expect)
            try:
                target.first.wait_for(timeout=30_000 if attempt else 15_000)
                return
            except Exception:
                if attempt:
                    raise

    def output(self, index: int, text: str, timeout: float = 60_000) -> str:
        area = self.cells.nth(index).locator(".jp-OutputArea-output", has_text=text).first
        area.wait_for(timeout=timeout)
        return str(area.inner_text())

    def move_slider(self, index: int, steps: int) -> None:
        handle = self.cells.nth(index).locator(".noUi-handle").first
        handle.focus()
        key = "ArrowRight" if steps > 0 else "ArrowLeft"
        for _ in range(abs(steps)):
            self.page.keyboard.press(key)
            self.page.wait_for_timeout(60)

    def click_stop(self, index: int) -> None:
        self.cells.nth(index).locator("button", has_text="Stop").click()

    def save(self) -> None:
        self.page.keyboard.press("Control+s")


def moves(page: Page, cell: int, server: FakeLLMServer) -> list[tuple[int, int]]:
    """Move the slider 2 -> 5 -> 3 -> 7 -> 4; return (wanted, seen by the server) per move."""

    def level() -> int:
        return int(server.stats()["in_flight"])

    assert until(lambda: level() == 2, 20), "the job did not start"
    seen = []
    value = 2
    for target in (5, 3, 7, 4):
        page.move_slider(cell, target - value)
        value = target

        def reached(t: int = target) -> bool:
            return level() == t

        until(reached)
        seen.append((target, level()))
    return seen


@pytest.fixture
def browser_page(chromium: str) -> Iterator[Callable[[Lab, str], Page]]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )

        def open_notebook(lab: Lab, name: str) -> Page:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(lab.url(name))
            page.wait_for_selector(
                ".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000
            )
            return Page(page)

        try:
            yield open_notebook
        finally:
            browser.close()


@dataclass
class Scenario:
    background: list[tuple[int, int]]  # (slider value, requests in flight) during kit.start
    awaited: list[tuple[int, int]]  # the same during an awaited run_df
    stopped: str  # what the cell awaiting the stopped job printed
    finished: str  # what the awaited cell printed after Stop
    folder: Path  # where the notebook was saved


def saved_outputs(path: Path) -> list[str]:
    """The text the saved notebook holds in each cell's outputs."""
    cells = json.loads(path.read_text())["cells"]
    return [json.dumps(cell.get("outputs", [])) for cell in cells]


def run_scenario(
    open_notebook: Callable[[Lab, str], Page], env: dict[str, str], screenshot: str
) -> Scenario:
    with FakeLLMServer(api_key=KEY, latency=LATENCY) as server:
        folder = Path(tempfile.mkdtemp(prefix="nbkit-nb-"))
        notebook(folder / "steer.ipynb")
        keys = {"OPENAI_BASE_URL": server.openai_base_url, "OPENAI_API_KEY": KEY}
        lab = Lab(folder, {**env, **keys})
        try:
            page = open_notebook(lab, "steer.ipynb")
            page.run(0, expect="READY")
            page.run(1, selector=".noUi-handle")
            background = moves(page, 1, server)
            page.click_stop(1)
            page.run(2, expect="STOPPED")
            stopped = page.output(2, "STOPPED")
            page.run(3, selector=".noUi-handle")
            awaited = moves(page, 3, server)
            ARTIFACTS.mkdir(exist_ok=True)
            page.page.screenshot(path=str(ARTIFACTS / f"live-{screenshot}"), full_page=True)
            page.click_stop(3)
            finished = page.output(3, "AWAITED")
            page.run(4, expect="USD per 1M tokens")  # item 1: the price as text, not math
            typeset = page.cells.nth(4).locator("mjx-container, .MathJax")
            assert typeset.count() == 0, "the estimate's price was typeset as LaTeX"
            ARTIFACTS.mkdir(exist_ok=True)
            page.page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
            page.save()

            def saved() -> bool:
                outputs = saved_outputs(folder / "steer.ipynb")
                return all("notebook-kit-summary" in outputs[cell] for cell in (1, 3))

            assert until(saved, 30), "the notebook was not saved with the panels' summaries"
        finally:
            lab.close()
    return Scenario(background, awaited, stopped, finished, folder)


def test_every_slider_move_reaches_the_job(
    browser_page: Callable[[Lab, str], Page],
) -> None:
    run = run_scenario(browser_page, {}, "jupyterlab-panel.png")
    assert all(want == seen for want, seen in run.background), run.background
    assert all(want == seen for want, seen in run.awaited), run.awaited
    for text in (run.stopped, run.finished):  # Stop kept the finished rows, the rest cancelled
        counts = eval(text.split(" ", 1)[1].splitlines()[0])
        assert counts["ok"] > 0 and counts["cancelled"] > 0 and sum(counts.values()) == ROWS
    # closed and reopened with a new server and kernel: the panels' summaries are there
    lab = Lab(run.folder, {})
    try:
        page = browser_page(lab, "steer.ipynb")
        for cell in (1, 3):
            shown = page.output(cell, "notebook_kit ·", timeout=30_000)
            assert "stopped" in shown and "rows" in shown, shown
        page.page.screenshot(path=str(ARTIFACTS / "jupyterlab-reopened.png"), full_page=True)
        assert page.page.get_by_text("Error displaying widget").count() == 0
    finally:
        lab.close()


def test_without_the_fix_the_slider_freezes_during_an_awaited_run(
    browser_page: Callable[[Lab, str], Page],
) -> None:
    run = run_scenario(
        browser_page, {"NOTEBOOK_KIT_NO_IDLE_FIX": "1"}, "jupyterlab-panel-no-fix.png"
    )
    assert all(want == seen for want, seen in run.background), run.background  # kit.start: fine
    # one key press gets through, then the slider is frozen for the rest of the run
    assert run.awaited[0][1] == 3, run.awaited
    assert all(seen == 3 for _, seen in run.awaited), run.awaited
