"""The panel in a real kernel, driven over jupyter_client like a browser would.

Every test runs on ipykernel 7.4 (this venv) and 6.29 (a second venv the harness builds once),
so the 6.x hint and the 7.4 version gate are both exercised. The fake server runs in this
process; the kernel calls it over HTTP, and its in-flight count is the witness.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator

import pytest
from conftest import KEY
from fake_server import FakeLLMServer
from kernel_harness import OLD_KERNEL, Kernel, old_kernel_python

pytestmark = pytest.mark.kernel

NEW = "7.4"


@pytest.fixture(params=[NEW, OLD_KERNEL], scope="module")
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def kernel(version: str, server: FakeLLMServer) -> Iterator[Kernel]:
    python = sys.executable if version == NEW else old_kernel_python()
    k = Kernel(python)
    try:
        k.run(
            "import asyncio, time, ipykernel, pandas as pd, notebook_kit as kit\n"
            "df = pd.DataFrame({'prompt': [f'question {i}' for i in range(400)]})\n"
            f"opts = dict(base_url={server.openai_base_url!r}, api_key={KEY!r})\n"
            "print(ipykernel.__version__)"
        )
        yield k
    finally:
        k.close()


def level(server: FakeLLMServer) -> int:
    return int(server.stats()["in_flight"])


def answered(server: FakeLLMServer) -> int:
    return int(server.stats()["responses"].get("200", 0))


def wait_for(condition: object, seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_slider_steers_a_background_job(kernel: Kernel, server: FakeLLMServer) -> None:
    server.configure(latency=0.3)
    cell = kernel.execute("job = kit.start(df, 'prompt', concurrency=2, **opts)")
    assert kernel.reply(cell)["status"] == "ok"  # the cell ended; the job runs on
    (slider,) = kernel.widgets(cell, "IntSliderModel")
    wait_for(lambda: level(server) == 2)
    update = kernel.send_comm(slider["id"], {"value": 7})
    wait_for(lambda: level(server) == 7)
    assert kernel.statuses(update).count("idle") == 1
    kernel.send_comm(slider["id"], {"value": 3})
    wait_for(lambda: level(server) <= 3, seconds=2)
    kernel.run("job.cancel()")
    out = kernel.run("r = await job\nprint(sorted(set(r.status)))")
    assert "['cancelled', 'ok']" in out


def test_awaited_run_df_takes_live_changes_on_ipykernel_7_only(
    kernel: Kernel, server: FakeLLMServer, version: str
) -> None:
    server.configure(latency=0.3)
    cell = kernel.execute(
        "r = await kit.run_df(df.head(60), 'prompt', concurrency=2, **opts)", wait=False
    )
    wait_for(lambda: kernel.widgets(cell, "IntSliderModel"))
    (slider,) = kernel.widgets(cell, "IntSliderModel")
    wait_for(lambda: level(server) == 2)
    updates = []
    for value in (6, 4, 8):  # several moves: the 7.4 freeze shows from the second one
        sent, before = time.monotonic(), answered(server)
        updates.append(kernel.send_comm(slider["id"], {"value": value}))
        if version == NEW:
            wait_for(lambda v=value: level(server) == v)
            wait_for(lambda: kernel.statuses(updates[-1]) == ["idle", "busy"])  # from the fix
        else:  # 6.x: changes wait for the cell to end; two more rounds go by at 2
            wait_for(lambda b=before: answered(server) >= b + 4)
            samples = [n for t, n in server.stats()["in_flight_samples"] if t > sent]
            assert max(samples) <= 2
    hints = [w["value"] for w in kernel.widgets(cell, "HTMLModel") if "ipykernel" in w["value"]]
    assert bool(hints) == (version != NEW)
    kernel.wait(cell, timeout=60)
    if version != NEW:  # handled after the cell, with the kernel's own busy/idle
        wait_for(lambda: all(kernel.statuses(u) == ["busy", "idle"] for u in updates))


def test_without_the_fix_ipykernel_7_4_sends_no_idle(server: FakeLLMServer) -> None:
    """The upstream bug the fix works around: no status at all for the comm message."""
    server.configure(latency=0.3)
    k = Kernel(sys.executable, env={"NOTEBOOK_KIT_NO_IDLE_FIX": "1"})
    try:
        k.run(
            "import notebook_kit as kit, pandas as pd\n"
            f"opts = dict(base_url={server.openai_base_url!r}, api_key={KEY!r})"
        )
        cell = k.execute(
            "frame = pd.DataFrame({'p': [f'x{i}' for i in range(30)]})\n"
            "r = await kit.run_df(frame, 'p', concurrency=2, **opts)",
            wait=False,
        )
        wait_for(lambda: k.widgets(cell, "IntSliderModel"))
        (slider,) = k.widgets(cell, "IntSliderModel")
        update = k.send_comm(slider["id"], {"value": 5})
        wait_for(lambda: level(server) == 5)  # the change arrives...
        before = answered(server)
        wait_for(lambda: answered(server) >= before + 5)  # ...a round of replies later,
        assert k.statuses(update) == []  # no status: a browser would freeze this slider
        k.wait(cell, timeout=60)
    finally:
        k.close()


def test_a_callback_on_a_subshell_thread_reaches_a_blocking_run(
    kernel: Kernel, server: FakeLLMServer, version: str
) -> None:
    """JupyterLab >= 4.4 sends comms over subshells: the observer runs on another thread."""
    if version != NEW:
        pytest.skip("ipykernel 6 has no subshells")
    server.configure(latency=0.3)
    subshell = kernel.create_subshell()
    cell = kernel.execute(
        "r = kit.run_df_sync(df.head(80), 'prompt', concurrency=2, **opts)", wait=False
    )
    wait_for(lambda: kernel.widgets(cell, "IntSliderModel"))
    (slider,) = kernel.widgets(cell, "IntSliderModel")
    wait_for(lambda: level(server) == 2)
    # ipykernel 7.4 routes a comm to the subshell that last published on it: touch it there
    kernel.execute(
        "import threading\n"
        "s = kit.last_job().panel.concurrency\n"
        "s.observe(lambda c: print('observer on', threading.current_thread().name), 'value')\n"
        "s.send_state('max')",
        subshell=subshell,
    )
    update = kernel.send_comm(slider["id"], {"value": 6}, subshell=subshell)
    wait_for(lambda: level(server) == 6)
    wait_for(lambda: "observer on subshell" in kernel.output(update))
    kernel.interrupt()  # ends the blocking cell; its rows so far are kept
    kernel.wait(cell, timeout=20)


def test_interrupting_await_job_stops_the_waiting_not_the_job(
    kernel: Kernel, server: FakeLLMServer
) -> None:
    server.configure(latency=0.2)
    kernel.run("job = kit.start(df.head(40), 'prompt', concurrency=4, **opts)")
    cell = kernel.execute("r = await job", wait=False)
    wait_for(lambda: "busy" in kernel.statuses(cell))
    before = answered(server)
    wait_for(lambda: answered(server) >= before + 4)  # the cell is awaiting the job
    kernel.interrupt()
    kernel.wait(cell, timeout=20)
    assert kernel.reply(cell)["ename"] == "CancelledError"
    wait_for(lambda: level(server) == 4)  # the job still runs
    out = kernel.run("r = await job\nprint(r.status.value_counts().to_dict())")
    assert "{'ok': 40}" in out


def test_interrupting_an_awaited_run_df_stops_it_and_keeps_rows(
    kernel: Kernel, server: FakeLLMServer
) -> None:
    server.configure(latency=0.3)
    cell = kernel.execute("r = await kit.run_df(df.head(80), 'prompt', **opts)", wait=False)
    wait_for(lambda: answered(server) >= 10, seconds=30)
    kernel.interrupt()
    kernel.wait(cell, timeout=20)
    reply = kernel.reply(cell)
    assert reply["ename"] == "CancelledError"  # the cell ends in error: queued cells stop
    (line,) = reply["traceback"]  # one line, not a traceback through the kit
    assert re.fullmatch(
        r"interrupted: \d+ rows done, \d+ cancelled; the frame is in kit.last_result\(\)", line
    ), line
    wait_for(lambda: level(server) == 0, seconds=2)  # in-flight calls were cancelled
    out = kernel.run("print(kit.last_result().status.value_counts().to_dict())")
    counts = eval(out)
    assert counts["ok"] >= 8 and counts["ok"] + counts["cancelled"] == 80


def test_a_blocking_cell_does_not_make_a_paid_reply_a_timeout(
    kernel: Kernel, server: FakeLLMServer
) -> None:
    server.configure(latency=0.5)
    kernel.run("job = kit.start(df.head(8), 'prompt', concurrency=8, timeout=1.0, **opts)")
    kernel.run("time.sleep(3)")  # the loop is starved while every reply arrives
    out = kernel.run("r = await job\nprint(r.status.tolist(), r.attempts.tolist())")
    assert out.strip() == f"{['ok'] * 8} {[1] * 8}"
    assert server.stats()["requests_total"] == 8  # nothing was paid for twice


def test_two_background_jobs_with_their_own_panels(kernel: Kernel, server: FakeLLMServer) -> None:
    server.configure(latency=0.2)
    first = kernel.execute("a = kit.start(df.head(30), 'prompt', concurrency=2, **opts)")
    second = kernel.execute("b = kit.start(df.head(30), 'prompt', concurrency=3, **opts)")
    (slider_a,) = kernel.widgets(first, "IntSliderModel")
    (slider_b,) = kernel.widgets(second, "IntSliderModel")
    assert slider_a["id"] != slider_b["id"]
    wait_for(lambda: level(server) == 5)
    kernel.send_comm(slider_b["id"], {"value": 1})
    wait_for(lambda: level(server) <= 3, seconds=2)
    out = kernel.run("ra, rb = await a, await b\nprint(len(ra[ra.status == 'ok']), len(rb))")
    assert out.split() == ["30", "30"]


def test_re_running_a_start_cell_stops_the_job_it_had_started(
    kernel: Kernel, server: FakeLLMServer
) -> None:
    server.configure(latency=0.3)
    first = kernel.execute("job = kit.start(df, 'prompt', concurrency=2, **opts)", cell_id="c-7")
    wait_for(lambda: level(server) == 2)
    again = kernel.execute("job = kit.start(df, 'prompt', concurrency=3, **opts)", cell_id="c-7")
    hints = [w["value"] for w in kernel.widgets(again, "HTMLModel") if "Re-running" in w["value"]]
    assert len(hints) == 1 and "kit.jobs(finished=True)" in hints[0]
    wait_for(lambda: level(server) == 3)  # the earlier job's calls are gone, the new one's run
    out = kernel.run(
        "print([j.state for j in kit.jobs()], [j.state for j in kit.jobs(finished=True)])"
    )
    assert out.strip() == "['running'] ['stopped', 'running']"
    kernel.run("job.cancel()")
    assert first != again


def test_the_saved_output_of_a_finished_panel_is_its_summary(
    kernel: Kernel, server: FakeLLMServer
) -> None:
    """A reopened notebook has no live widgets: what it shows is the display's last update."""
    server.configure(latency=0.05)
    cell = kernel.execute("r = await kit.run_df(df.head(12), 'prompt', concurrency=4, **opts)")
    assert kernel.reply(cell)["status"] == "ok"
    shown = [m for m in list(kernel.iopub) if m["parent_header"].get("msg_id") == cell]
    first = next(m for m in shown if m["msg_type"] == "display_data")
    assert "application/vnd.jupyter.widget-view+json" in first["content"]["data"]  # live
    display_id = first["content"]["transient"]["display_id"]
    last = [
        m
        for m in list(kernel.iopub)
        if m["msg_type"] == "update_display_data"
        and m["content"]["transient"]["display_id"] == display_id
    ][-1]["content"]["data"]
    assert set(last) == {"text/plain", "text/html"}  # no widget left to fail to render
    assert last["text/plain"].startswith("notebook_kit · done · 12/12 rows · ok 12")
    assert "notebook-kit-summary" in last["text/html"] and "$" not in last["text/html"]
