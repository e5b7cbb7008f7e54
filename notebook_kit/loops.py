"""Running a coroutine to completion from synchronous code, with or without a running loop.

No running loop in this thread (a script): `asyncio.run`. A running loop (a notebook cell):
a private loop in a daemon thread while this thread blocks on the result; Ctrl-C / kernel
interrupt cancels the work there (stopping the spending) and is then re-raised here.
nest-asyncio is never applied: on ipykernel >= 7.3 it loses kernel messages.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

DRAIN_SECONDS = 10.0  # how long an interrupt waits for in-flight calls to be cancelled


def in_running_loop() -> bool:
    """Whether this thread is inside a running event loop (e.g. a Jupyter cell)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_blocking(coro: Coroutine[Any, Any, T], *, use_nest_asyncio: bool = False) -> T:
    """Run `coro` to completion and return its result, from any synchronous caller.

    `use_nest_asyncio=True` (opt-in) runs it on the caller's own running loop instead, for
    objects bound to that loop. It patches asyncio for the whole process (slower tasks), and
    on ipykernel >= 7.3 kernel messages that arrive meanwhile (widget changes, queued
    cells) are lost; an interrupt can leave calls running.
    """
    if not in_running_loop():
        return asyncio.run(coro)
    if use_nest_asyncio:
        import nest_asyncio

        loop = asyncio.get_running_loop()
        nest_asyncio.apply(loop)
        return loop.run_until_complete(coro)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="notebook_kit-loop", daemon=True)
    thread.start()
    finished = threading.Event()

    async def main() -> T:
        try:
            return await coro
        finally:
            finished.set()

    future = asyncio.run_coroutine_threadsafe(main(), loop)
    try:
        return future.result()
    except KeyboardInterrupt:
        future.cancel()  # cancels the task on the private loop: in-flight calls are cancelled
        finished.wait(DRAIN_SECONDS)
        raise
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=DRAIN_SECONDS)
        if not thread.is_alive():
            loop.close()
