"""The server: its lifecycle in a thread of its own, its routes and its control endpoints."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from aiohttp import web

from . import anthropic_batches, openai_batches
from .anthropic_messages import AnthropicMessages
from .api import Api
from .batches import BatchStore
from .core import Core
from .openai_chat import OpenAIChat
from .settings import Settings

HOST = "127.0.0.1"
SHUTDOWN_TIMEOUT = 0.2
MAX_BODY = 600 * 1024**2  # bytes a request may send: above both APIs' batch limits
APIS: tuple[Api, ...] = (OpenAIChat(), AnthropicMessages())  # the APIs served, one route each

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeLLMServer:
    """The fake server; see the package docstring."""

    def __init__(self, *, port: int = 0, **settings: Any) -> None:
        self._port = port
        self._core = Core(Settings(**settings))
        self._batches = BatchStore()  # both APIs' batch jobs and files
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> FakeLLMServer:
        """Serve from a daemon thread; returns once listening."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        started: Future[None] = Future()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve(started)), name="fake-llm-server", daemon=True
        )
        self._thread.start()
        started.result(timeout=10)
        return self

    def stop(self) -> None:
        """Stop serving; requests still in flight get cut off."""
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _serve(self, started: Future[None]) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        for api in APIS:
            app.router.add_post(api.path, self._chat_handler(api))
        for batch_api in (openai_batches, anthropic_batches):
            app.router.add_routes(batch_api.routes(self._core, self._batches))
        app.router.add_get("/_stats", self._get_stats)
        app.router.add_post("/_reset", self._post_reset)
        app.router.add_get("/_config", self._get_config)
        app.router.add_post("/_config", self._post_config)
        # handler_cancellation: a handler is cancelled when its client disconnects.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        try:
            await runner.setup()
            await web.TCPSite(runner, HOST, self._port).start()
        except BaseException as exc:
            await runner.cleanup()
            started.set_exception(exc)
            return
        self._port = runner.addresses[0][1]
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        started.set_result(None)
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    def _chat_handler(self, api: Api) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._core.handle(api, request)

        return handle

    # -- public API ------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def settings(self) -> Settings:
        return self._core.settings

    def configure(self, **settings: Any) -> Settings:
        """Change settings (unknown names: TypeError; bad values: ValueError)."""
        return self._core.configure(**settings)

    def stats(self) -> dict[str, Any]:
        """A snapshot of the stats, the same as ``GET /_stats``."""
        return self._core.stats()

    def reset_stats(self) -> None:
        """Clear the stats, the per-prompt attempt counts and the rate-limit windows."""
        self._core.reset_stats()

    # -- control endpoints -----------------------------------------------------

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response(self.stats())

    async def _get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.settings.to_json())

    async def _post_config(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            settings = self.configure(**changes)
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(settings.to_json())
