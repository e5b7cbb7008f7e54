"""The benchmarks' fake server: the tests' one (tests/fake_server), in its own process."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1] / "tests"  # holds the fake_server package


@contextlib.contextmanager
def serve(*settings: str) -> Iterator[str]:
    """`python -m fake_server --port 0 <settings>` until the block ends: its URL."""
    server = subprocess.Popen(
        [sys.executable, "-m", "fake_server", "--port", "0", *settings],
        cwd=TESTS,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        yield server.stdout.readline().split()[-1]
    finally:
        server.terminate()
        server.wait()


def call(url: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """GET (no body) or POST one of the server's control endpoints (/_stats, /_reset, ...)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method="POST" if data else "GET")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as reply:
        result: dict[str, Any] = json.loads(reply.read() or b"{}")
        return result
