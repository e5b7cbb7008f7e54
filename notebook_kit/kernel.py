"""What the Jupyter kernel we run in can do, and a workaround for one of its bugs.

Measured (research/jupyter-risks.md): widget changes reach a job that runs as a task after
its cell ended on every ipykernel; during an awaiting cell only on ipykernel >= 7 (7.0-7.3
only when JupyterLab sends comms over subshells); never into a cell that blocks.

ipykernel 7.4 handles comm messages while an async cell awaits ("concurrent" dispatch) but
publishes no `idle` status for them. The ipywidgets frontend keeps one message in flight per
widget and waits for that idle, so after one change the control freezes for good. For the
widgets the kit owns, `publish_missing_idle` sends that idle: exactly one per comm message
dispatched concurrently, only on the affected versions, and a no-op if internals change.
Setting NOTEBOOK_KIT_NO_IDLE_FIX=1 turns it off (to see the bug, or if it ever misbehaves).

The kernel status a frontend shows follows every status message, whatever its parent. So the
fix publishes `busy` again right after its `idle` (a cell is still running, or the dispatch
would not have been concurrent; the cell's own idle comes later). In JupyterLab >= 4.4 the
indicator still reads "Idle" during an awaited cell after a widget change: JupyterLab sends
widget messages over a kernel subshell, and ipykernel publishes that subshell's own
busy/idle for each of them, which the frontend applies to the whole kernel (measured with
JupyterLab 4.6, ipykernel 7.4: the websocket shows `busy, idle` for each subshell message).
Nothing the kit sends can come after that idle, so the indicator is left as it is.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("notebook_kit")

AFFECTED = ((7, 4), (8, 0))  # ipykernel versions without idle for concurrent comm messages


def ipykernel_version() -> tuple[int, ...] | None:
    """The running kernel's ipykernel version, or None outside a kernel."""
    if "ipykernel" not in sys.modules or _kernel() is None:
        return None
    from importlib.metadata import version

    major, minor = version("ipykernel").split(".")[:2]
    return int(major), int(minor)


def in_notebook() -> bool:
    """Whether we run inside a Jupyter kernel that can show widgets."""
    if _kernel() is None:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


class Shown:
    """A widget shown in a cell with a text summary beside it, for the saved notebook: a
    reopened notebook has no live widget, so the summary is what it shows."""

    def __init__(self, widget: Any, summary: tuple[str, str]) -> None:
        from IPython.display import display

        self._widget = widget
        self._handle = display(self._bundle(summary), raw=True, display_id=True)  # type: ignore[no-untyped-call]

    def _bundle(self, summary: tuple[str, str], *, live: bool = True) -> dict[str, Any]:
        text, markup = summary
        bundle: dict[str, Any] = self._widget._repr_mimebundle_() if live else {}
        return {**bundle, "text/plain": text, "text/html": markup}

    def update(self, summary: tuple[str, str], *, live: bool = True) -> None:
        """New summary text; `live=False` leaves only the summary (the run is over)."""
        if self._handle is not None:
            self._handle.update(self._bundle(summary, live=live), raw=True)


def display_in_cell(obj: object) -> None:
    """Display `obj` in the current cell's output."""
    from IPython.display import display

    display(obj)  # type: ignore[no-untyped-call]


def cell_number() -> int | None:
    """The number of the cell running now (IPython's execution count), or None."""
    shell_module = sys.modules.get("IPython")
    shell = shell_module.get_ipython() if shell_module is not None else None
    count = getattr(shell, "execution_count", None)
    return count if isinstance(count, int) else None


def cell_id() -> str | None:
    """The id of the notebook cell running now, as the frontend sent it (JupyterLab and
    Notebook 7 do), or None."""
    kernel = _kernel()
    try:
        metadata = kernel.get_parent().get("metadata") or {}
    except Exception:
        return None
    value = metadata.get("cellId")
    return value if isinstance(value, str) else None


def controls_live_while_awaiting() -> bool:
    """Whether widget changes can reach a job while its cell awaits it."""
    version = ipykernel_version()
    return version is not None and version >= (7, 0)


def publish_missing_idle(widget: Any) -> None:
    """Make `widget` send the idle status ipykernel 7.4 forgets (see the module docstring)."""
    version = ipykernel_version()
    if version is None or not AFFECTED[0] <= version < AFFECTED[1]:
        return
    if os.environ.get("NOTEBOOK_KIT_NO_IDLE_FIX"):
        return
    comm: Any = getattr(widget, "comm", None)
    callback = getattr(comm, "_msg_callback", None)
    if callback is None or getattr(callback, "_publishes_idle", False):
        return
    comm.on_msg(_acknowledging(callback))


def _acknowledging(callback: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    def handle(msg: dict[str, Any]) -> Any:
        concurrent = _dispatched_concurrently()
        try:
            return callback(msg)
        finally:
            if concurrent:
                _publish_idle(msg)

    handle._publishes_idle = True  # type: ignore[attr-defined]
    return handle


def _dispatched_concurrently() -> bool:
    """Whether the comm message being handled came through ipykernel's concurrent path."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "dispatch_shell" and "concurrent" in frame.f_locals:
            return bool(frame.f_locals["concurrent"])
        frame = frame.f_back
    return False


def _publish_idle(msg: dict[str, Any]) -> None:
    """The idle the widget frontend waits for, then busy again: the frontend's kernel status
    follows every status message, and a cell is still running (the dispatch was concurrent),
    so without the busy JupyterLab would show "Idle" until that cell ends."""
    kernel = _kernel()
    try:
        kernel._publish_status("idle", "shell", parent=msg)
        kernel._publish_status("busy", "shell", parent=msg)
    except Exception:
        log.debug("could not publish idle for a widget message", exc_info=True)


def _kernel() -> Any:
    shell_module = sys.modules.get("IPython")
    if shell_module is None:
        return None
    shell = shell_module.get_ipython()
    return getattr(shell, "kernel", None)
