"""Where the sync and async forms run: plain scripts and a real Jupyter kernel.

Kernel tests start a real ipykernel through jupyter_client (about a second each).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from kernel_harness import Kernel

pytestmark = pytest.mark.kernel

SETUP = """
import asyncio, sys
import pandas as pd
import notebook_kit as kit
df = pd.DataFrame({"prompt": [f"question {i}" for i in range(40)]})
slow = kit.DemoProvider(latency=0.5, jitter=0.0)
"""


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    k = Kernel(sys.executable)
    try:
        k.run(SETUP)
        yield k
    finally:
        k.close()


def test_await_run_df_in_a_kernel_cell(kernel: Kernel) -> None:
    out = kernel.run(
        "r = await kit.run_df(df, 'prompt', provider=kit.DemoProvider(latency=0.01))\n"
        "print(r.status.value_counts().to_dict(), type(asyncio.get_running_loop()).__name__)"
    )
    assert "{'ok': 40}" in out


def test_run_df_sync_in_a_kernel_uses_a_private_loop_not_nest_asyncio(kernel: Kernel) -> None:
    out = kernel.run(
        "r = kit.run_df_sync(df, 'prompt', provider=kit.DemoProvider(latency=0.01))\n"
        "print(r.status.value_counts().to_dict())\n"
        "loop = asyncio.get_running_loop()\n"
        "patched = getattr(loop, '_nest_patched', False)\n"
        "print('patched', patched, asyncio.Task is asyncio.tasks._CTask)"
    )
    assert "{'ok': 40}" in out
    assert "patched False True" in out


def test_nest_asyncio_is_an_explicit_opt_in(kernel: Kernel) -> None:
    out = kernel.run(
        "r = kit.run_df_sync(df, 'prompt', provider=kit.DemoProvider(latency=0.01),\n"
        "                    use_nest_asyncio=True, progress=False)\n"
        "patched = getattr(asyncio.get_running_loop(), '_nest_patched', False)\n"
        "print(r.status.value_counts().to_dict(), patched)"
    )
    assert "{'ok': 40} True" in out


def test_interrupting_an_awaited_run_keeps_the_partial_frame(kernel: Kernel) -> None:
    cell = kernel.execute(
        "r = await kit.run_df(df, 'prompt', provider=slow, concurrency=4, progress=False)",
        wait=False,
    )
    time.sleep(2.0)
    kernel.interrupt()
    kernel.wait(cell, timeout=20)
    reply = kernel.reply(cell)
    assert reply["status"] == "error"
    assert reply["ename"] == "CancelledError"
    out = kernel.run(
        "p = kit.last_result()\n"
        "print(p.status.value_counts().to_dict())\n"
        "print(sorted(set(p.loc[p.status == 'cancelled', 'error'])))"
    )
    counts = eval(out.splitlines()[0])
    assert counts["ok"] >= 4 and counts["cancelled"] >= 8
    assert counts["ok"] + counts["cancelled"] == 40
    assert "['interrupted']" in out


def test_interrupting_run_df_sync_in_a_kernel_keeps_the_partial_frame(kernel: Kernel) -> None:
    cell = kernel.execute(
        "r = kit.run_df_sync(df, 'prompt', provider=slow, concurrency=4, progress=False)",
        wait=False,
    )
    time.sleep(2.0)
    kernel.interrupt()
    kernel.wait(cell, timeout=20)
    assert kernel.reply(cell)["ename"] == "KeyboardInterrupt"
    out = kernel.run("print(kit.last_result().status.value_counts().to_dict())")
    counts = eval(out)
    assert counts["ok"] >= 4 and counts["ok"] + counts["cancelled"] == 40


SCRIPT = textwrap.dedent(
    """
    import pandas as pd
    import notebook_kit as kit
    df = pd.DataFrame({"prompt": [f"q{i}" for i in range(40)]})
    try:
        r = kit.run_df_sync(df, "prompt", provider=kit.DemoProvider(latency=LATENCY), concurrency=4)
        print("DONE", r.status.value_counts().to_dict(), flush=True)
    except KeyboardInterrupt:
        print("PARTIAL", kit.last_result().status.value_counts().to_dict(), flush=True)
    """
)


def test_run_df_sync_in_a_plain_script() -> None:
    code = SCRIPT.replace("LATENCY", "0.01")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "DONE {'ok': 40}" in out.stdout, out.stderr


def test_ctrl_c_in_a_script_keeps_the_partial_frame() -> None:
    code = SCRIPT.replace("LATENCY", "0.5")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    time.sleep(3.0)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert out.startswith("PARTIAL"), out
    counts = eval(out.split(" ", 1)[1])
    assert counts["ok"] >= 4 and counts["ok"] + counts["cancelled"] == 40
