"""What the panel sends to the browser while a fast run goes: a few ticks a second whatever
the row rate, and in each tick one message per widget that changed, none for the others.

Headless: ipywidgets' messages are caught where they would go to the comm. Time is virtual
(looptime), so "per second" is the run's own seconds. What the messages cost in CPU is
measured in a real kernel by benchmarks/panel_cost.py, not here."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from typing import Any

import ipywidgets
import pandas as pd
import pytest

import notebook_kit as kit
from notebook_kit.ui import Panel

pytestmark = pytest.mark.looptime

Sent = list[tuple[float, Any, dict[str, Any]]]  # (virtual time, widget, state sent)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    messages: Sent = []

    def record(widget: Any, msg: dict[str, Any], buffers: Any = None) -> None:
        if msg.get("method") == "update":
            messages.append((asyncio.get_running_loop().time(), widget, dict(msg["state"])))

    monkeypatch.setattr(ipywidgets.Widget, "_send", record)
    return messages


def prompts(n: int) -> pd.DataFrame:
    return pd.DataFrame({"prompt": [f"q {i}" for i in range(n)]})


async def test_a_fast_run_sends_a_few_messages_a_second_each_with_what_changed(
    sent: Sent,
) -> None:
    demo = kit.DemoProvider(latency=0.01, jitter=0.0)  # 20 in flight: 2,000 rows a second
    rows = 6000
    job = kit.start(prompts(rows), "prompt", provider=demo, concurrency=20, panel=True)
    panel = job.panel
    assert isinstance(panel, Panel)
    start = asyncio.get_running_loop().time()
    await asyncio.sleep(1.3)
    live = panel.status.value  # the panel is live: counts, rate and state move
    assert "<b>running</b>" in live and "rows/s" in live
    assert 0 < panel.bar.value < rows and panel.bar.description == f"{panel.bar.value}/{rows}"
    result = await job
    assert (result["status"] == "ok").all()
    seconds = asyncio.get_running_loop().time() - start
    assert seconds > 2.5  # about 3 s of the run's time: 12 ticks

    ticks = seconds / panel.interval + 1
    during = [(widget, state) for t, widget, state in sent if t < start + seconds - 1e-9]
    bar = [state for widget, state in during if widget is panel.bar]
    assert bar and all(set(state) == {"value", "description"} for state in bar)  # one message
    assert len(bar) <= ticks
    assert len(during) <= 2 * ticks  # the bar and the status line, whatever the row rate
    by_widget: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for _, widget, state in sent:
        by_widget[id(widget)].append(state)
    for states in by_widget.values():  # nothing is sent twice: each message is a change
        assert all(a != b for a, b in itertools.pairwise(states))
    assert panel.bar.value == rows and panel.bar.description == f"{rows}/{rows}"
    assert "<b>done</b>" in panel.status.value and f"{rows}/{rows} rows" in panel.status.value
