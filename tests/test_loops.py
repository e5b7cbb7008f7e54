"""Where the sync and async forms run: plain scripts and a real Jupyter kernel.

Kernel tests start a real ipykernel through jupyter_client (about a second each).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import KEY
from fake_server import FakeLLMServer
from kernel_harness import Kernel

pytestmark = pytest.mark.kernel

SETUP = """
import asyncio, sys
import pandas as pd
import notebook_kit as kit
df = pd.DataFrame({"prompt": [f"question {i}" for i in range(40)]})
"""


@pytest.fixture
def kernel(server: FakeLLMServer) -> Iterator[Kernel]:
    """A kernel with `slow`: the fake server answering after 0.5 s (it is the witness of
    what was sent, so tests interrupt once it has answered, not after a fixed sleep)."""
    server.configure(latency=0.5)
    k = Kernel(sys.executable)
    try:
        k.run(SETUP)
        k.run(f"slow = kit.OpenAIProvider(base_url={server.openai_base_url!r}, api_key={KEY!r})")
        yield k
    finally:
        k.close()


def answered(server: FakeLLMServer) -> int:
    return int(server.stats()["responses"].get("200", 0))


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"condition not reached within {seconds} s")
        time.sleep(0.02)


def test_await_run_df_in_a_kernel_cell(kernel: Kernel) -> None:
    out = kernel.run(
        "r = await kit.run_df(df, 'prompt', provider=kit.DemoProvider(latency=0.01))\n"
        "print(r.status.value_counts().to_dict(), type(asyncio.get_running_loop()).__name__)"
    )
    printed = re.search(r"\{'ok': 40\} (\w+)", out)  # (after the panel's summary text)
    assert printed is not None and printed[1] == "_UnixSelectorEventLoop"  # the kernel's loop


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


def test_interrupting_an_awaited_run_keeps_the_partial_frame(
    kernel: Kernel, server: FakeLLMServer
) -> None:
    cell = kernel.execute(
        "r = await kit.run_df(df, 'prompt', provider=slow, concurrency=4, progress=False)",
        wait=False,
    )
    wait_for(lambda: answered(server) >= 6)
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


def test_interrupting_run_df_sync_in_a_kernel_keeps_the_partial_frame(
    kernel: Kernel, server: FakeLLMServer
) -> None:
    cell = kernel.execute(
        "r = kit.run_df_sync(df, 'prompt', provider=slow, concurrency=4, progress=False)",
        wait=False,
    )
    wait_for(lambda: answered(server) >= 6)
    kernel.interrupt()
    kernel.wait(cell, timeout=20)
    reply = kernel.reply(cell)
    assert reply["ename"] == "KeyboardInterrupt"
    assert len(reply["traceback"]) == 1 and reply["traceback"][0].startswith("interrupted: ")
    out = kernel.run("print(kit.last_result().status.value_counts().to_dict())")
    counts = eval(out)
    assert counts["ok"] >= 4 and counts["ok"] + counts["cancelled"] == 40


SCRIPT = textwrap.dedent(
    """
    import sys
    import pandas as pd
    import notebook_kit as kit
    df = pd.DataFrame({"prompt": [f"q{i}" for i in range(40)]})
    provider = kit.DemoProvider(latency=0.01)
    if len(sys.argv) > 1:
        provider = kit.OpenAIProvider(base_url=sys.argv[1], api_key=sys.argv[2])
    try:
        r = kit.run_df_sync(df, "prompt", provider=provider, concurrency=4)
        print("DONE", r.status.value_counts().to_dict(), flush=True)
    except KeyboardInterrupt:
        print("PARTIAL", kit.last_result().status.value_counts().to_dict(), flush=True)
    """
)


def test_run_df_sync_in_a_plain_script() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert "DONE {'ok': 40}" in out.stdout, out.stderr


def test_ctrl_c_in_a_script_keeps_the_partial_frame(server: FakeLLMServer) -> None:
    server.configure(latency=0.5)
    command = [sys.executable, "-c", SCRIPT, server.openai_base_url, KEY]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    wait_for(lambda: answered(server) >= 6)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert out.startswith("PARTIAL"), out
    counts = eval(out.split(" ", 1)[1])
    assert counts["ok"] >= 4 and counts["ok"] + counts["cancelled"] == 40
