"""A real Jupyter kernel driven over jupyter_client, playing the part of the frontend."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager
from jupyter_core.utils import ensure_event_loop

REPO = Path(__file__).resolve().parents[1]
OLD_KERNEL = "6.29.5"  # the last ipykernel before subshells and concurrent comm dispatch


def old_kernel_python() -> str:
    """A Python with ipykernel 6.29 and the kit's dependencies, made once and kept.

    The kit itself is not installed there: kernels get the repository on PYTHONPATH.
    """
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    requirements = [f"ipykernel=={OLD_KERNEL}", *pyproject["project"]["dependencies"]]
    venv = REPO / ".venv-kernels" / f"ipykernel-{OLD_KERNEL}"
    python = venv / "bin" / "python"
    marker = venv / "requirements.txt"
    wanted = "\n".join(requirements)
    if not (python.exists() and marker.exists() and marker.read_text() == wanted):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *requirements],
            check=True,
        )
        marker.write_text(wanted)
    return str(python)


def kernelspec(python: str, name: str) -> str:
    """A kernelspec for `python` in a fresh directory that is put first on JUPYTER_PATH."""
    root = Path(tempfile.mkdtemp(prefix="nbkit-kernels-"))
    spec = root / "kernels" / name
    spec.mkdir(parents=True)
    argv = [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": name, "language": "python"})
    )
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(root), os.environ.get("JUPYTER_PATH", "")])
    return name


class Kernel:
    """Runs cells, records iopub traffic, sends comm messages like ipywidgets' frontend."""

    def __init__(self, python: str, *, env: dict[str, str] | None = None) -> None:
        name = kernelspec(python, f"nbkit-{abs(hash(python))}")
        self.km = KernelManager(kernel_name=name)
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        self.km.start_kernel(env={**os.environ, "PYTHONPATH": path, **(env or {})})
        self.kc = self.km.blocking_client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.iopub: list[dict[str, Any]] = []
        self.idle: dict[str, float] = {}
        self.replies: dict[str, dict[str, Any]] = {}
        self._stop = False
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        while not self._stop:
            try:
                msg = self.kc.get_iopub_msg(timeout=0.05)
            except queue.Empty:
                continue
            self.iopub.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                self.idle[msg["parent_header"].get("msg_id")] = time.monotonic()
        ensure_event_loop().close()  # jupyter_client made a loop for this thread; free it

    def _read_shell(self) -> None:
        """Shell replies are read on the caller's thread: a zmq socket is not thread-safe."""
        try:
            reply = self.kc.get_shell_msg(timeout=0.01)
        except queue.Empty:
            return
        self.replies[reply["parent_header"].get("msg_id")] = reply

    def execute(
        self,
        code: str,
        *,
        wait: bool = True,
        timeout: float = 60,
        subshell: str | None = None,
        cell_id: str | None = None,
    ) -> str:
        msg = self.kc.session.msg(
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        )
        if subshell is not None:
            msg["header"]["subshell_id"] = subshell
        if cell_id is not None:  # as JupyterLab sends it
            msg["metadata"]["cellId"] = cell_id
        self.kc.shell_channel.send(msg)
        msg_id: str = msg["header"]["msg_id"]
        if wait:
            self.wait(msg_id, timeout)
        return msg_id

    def create_subshell(self) -> str:
        """A JEP 91 subshell (ipykernel >= 7): its own thread in the kernel."""
        msg = self.kc.session.msg("create_subshell_request", {})
        self.kc.control_channel.send(msg)
        reply = self.kc.control_channel.get_msg(timeout=10)
        return str(reply["content"]["subshell_id"])

    def wait(self, msg_id: str, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while msg_id not in self.idle or msg_id not in self.replies:
            if time.monotonic() > end:
                raise AssertionError(f"cell did not finish in {timeout} s:\n{self.output(msg_id)}")
            self._read_shell()

    def reply(self, msg_id: str) -> dict[str, Any]:
        content: dict[str, Any] = self.replies[msg_id]["content"]
        return content

    def output(self, msg_id: str) -> str:
        """Everything the cell printed or displayed as text, errors included."""
        parts = []
        for m in list(self.iopub):
            if m["parent_header"].get("msg_id") != msg_id:
                continue
            content = m["content"]
            if m["msg_type"] == "stream":
                parts.append(content["text"])
            elif m["msg_type"] in ("execute_result", "display_data"):
                parts.append(content["data"].get("text/plain", ""))
            elif m["msg_type"] == "error":
                parts.append(f"{content['ename']}: {content['evalue']}")
        return "".join(parts)

    def run(self, code: str, timeout: float = 60) -> str:
        """Execute a cell, fail on an error, return its text output."""
        msg_id = self.execute(code, timeout=timeout)
        content = self.reply(msg_id)
        assert content["status"] == "ok", (
            f"{content.get('ename')}: {content.get('evalue')}\n{self.output(msg_id)}"
        )
        return self.output(msg_id)

    def send_comm(self, comm_id: str, state: dict[str, Any], subshell: str | None = None) -> str:
        """Exactly what ipywidgets' frontend sends when the user changes a widget."""
        msg = self.kc.session.msg(
            "comm_msg",
            {"comm_id": comm_id, "data": {"method": "update", "state": state, "buffer_paths": []}},
        )
        if subshell is not None:
            msg["header"]["subshell_id"] = subshell
        self.kc.shell_channel.send(msg)
        msg_id: str = msg["header"]["msg_id"]
        return msg_id

    def statuses(self, msg_id: str) -> list[str]:
        """The busy/idle states the kernel published for one message."""
        return [
            m["content"]["execution_state"]
            for m in list(self.iopub)
            if m["msg_type"] == "status" and m["parent_header"].get("msg_id") == msg_id
        ]

    def widgets(self, msg_id: str, model: str) -> list[dict[str, Any]]:
        """Widgets of one model name (e.g. IntSliderModel) that a cell created: id and state."""
        found = []
        for m in list(self.iopub):
            if m["msg_type"] != "comm_open" or m["parent_header"].get("msg_id") != msg_id:
                continue
            state = m["content"]["data"].get("state", {})
            if state.get("_model_name") == model:
                found.append({"id": m["content"]["comm_id"], **state})
        return found

    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def close(self) -> None:
        self._stop = True
        self._pump_thread.join(timeout=2)
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
        ensure_event_loop().close()
