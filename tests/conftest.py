"""Shared fixtures: the fake LLM server, and a clean environment without real keys."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fake_server import FakeLLMServer

KEY = "sk-test-SENTINEL-0123456789abcdef"


async def eventually(condition: Callable[[], bool]) -> None:
    """Give the server (in another thread) up to 2 s to reach `condition`."""
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached within 2 s")


@pytest.fixture(autouse=True)
def no_real_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reaches a real provider (the machine's keys and base URLs are removed), and
    each test has its own empty cache file."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NOTEBOOK_KIT_CACHE", str(tmp_path / "cache.sqlite"))


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(api_key=KEY, seed=7) as fake:
        yield fake
