"""Fake OpenAI- and Anthropic-compatible HTTP server for tests and benchmarks.

It injects faults (at random, or per prompt through directives), enforces rate
limits and counts what really happened on the wire.

In-process::

    with FakeLLMServer(latency=0.2, rate_500=0.1, seed=1) as server:
        client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k")
        ...
        server.stats()["peak_in_flight"]

As a subprocess, ``python tests/fake_llm_server.py --port 0 --latency 0.2``
prints ``READY http://127.0.0.1:PORT`` once listening and serves until killed.
Other processes use ``GET /_stats``, ``POST /_reset`` and ``GET``/``POST /_config``.

Endpoints: ``POST /v1/chat/completions`` (OpenAI) and ``POST /v1/messages``
(Anthropic). The order of checks per request: API key (401), model (404),
quota, rate limits (429), then one fault: a directive's, else a random one.
4xx answers are immediate; successes, 5xx, malformed bodies and resets come
after the latency; hangs never answer. A request is in flight from arrival
until its response is written or its connection is gone.

Directives: ``[[...]]`` blocks in the last user message override random faults
for that prompt, e.g. ``[[status=500 times=2]]`` (fail the first two attempts
of this prompt), ``[[429 retry_after=1.5]]``, ``[[quota]]``, ``[[reset]]``,
``[[hang times=1]]``, ``[[malformed]]``, ``[[content_filter]]``,
``[[latency=0.5]]``, ``[[finish=length]]``, ``[[finish=content_filter]]``,
``[[tokens=500]]``. An unknown directive gets a 400.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import random
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType, TracebackType
from typing import Any, Literal, get_args

from aiohttp import web

__all__ = ["FakeLLMServer", "Settings"]

Api = Literal["openai", "anthropic"]
Finish = Literal["stop", "length", "content_filter"]
NamedFault = Literal["quota", "content_filter", "reset", "hang", "malformed"]
Fault = int | NamedFault  # an HTTP status to answer with, or a named fault
NAMED_FAULTS: tuple[NamedFault, ...] = get_args(NamedFault)

HOST = "127.0.0.1"
SHUTDOWN_TIMEOUT = 0.2
RANDOM_FAULTS: tuple[tuple[str, Fault], ...] = (
    ("rate_429", 429),
    ("rate_500", 500),
    ("rate_503", 503),
    ("rate_529", 529),
    ("rate_reset", "reset"),
    ("rate_hang", "hang"),
    ("rate_malformed", "malformed"),
)
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}
ANTHROPIC_STOP_REASONS: dict[Finish, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "content_filter": "refusal",
}
DIRECTIVE = re.compile(r"\[\[(.*?)\]\]")


@dataclass(frozen=True)
class Settings:
    """Server behaviour; every field can be changed at runtime."""

    latency: float = 0.0
    latency_median: float | None = None  # lognormal latency when set
    latency_sigma: float = 0.0
    seed: int | None = None
    rate_429: float = 0.0
    retry_after: float = 1.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_529: float = 0.0
    rate_reset: float = 0.0
    rate_hang: float = 0.0
    rate_malformed: float = 0.0
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    rate_window: float = 1.0
    api_key: str | None = None
    models: frozenset[str] | None = None
    quota_exhausted: bool = False
    usage: bool = True
    rate_headers: bool = True  # False: enforce rpm/tpm limits without disclosing them

    def __post_init__(self) -> None:
        if self.models is not None:
            object.__setattr__(self, "models", frozenset(self.models))
        rates = [getattr(self, name) for name, _ in RANDOM_FAULTS]
        if not all(0 <= rate <= 1 for rate in rates) or sum(rates) > 1:
            raise ValueError("fault rates must be probabilities that sum to at most 1")
        if min(self.latency, self.latency_sigma, self.retry_after) < 0 or self.rate_window <= 0:
            raise ValueError("latency, latency_sigma and retry_after must be >= 0, rate_window > 0")
        if self.latency_median is not None and self.latency_median <= 0:
            raise ValueError("latency_median must be > 0")

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-compatible dict."""
        data = dataclasses.asdict(self)
        data["models"] = None if self.models is None else sorted(self.models)
        return data


@dataclass(frozen=True)
class Directive:
    """What the ``[[...]]`` blocks of one prompt ask for."""

    fault: Fault | None = None
    times: int | None = None  # the fault hits only the first `times` attempts
    retry_after: float | None = None
    latency: float | None = None
    finish: Finish | None = None
    tokens: int | None = None

    @classmethod
    def parse(cls, prompt: str) -> Directive | None:
        """The prompt's directive, None without one; ValueError if unknown."""
        blocks = DIRECTIVE.findall(prompt)
        if not blocks:
            return None
        fields: dict[str, Any] = {}
        for token in " ".join(blocks).split():
            key, _, value = token.partition("=")
            if not value and key == "429":
                fields["fault"] = 429
            elif not value and key in NAMED_FAULTS:
                fields["fault"] = key
            elif key == "status":
                fields["fault"] = int(value)
            elif key in ("times", "tokens"):
                fields[key] = int(value)
            elif key in ("retry_after", "latency"):
                fields[key] = float(value)
            elif key == "finish" and value in ANTHROPIC_STOP_REASONS:
                fields[key] = value
            else:
                raise ValueError(f"unknown directive {token!r}")
        return cls(**fields)

    def fault_for(self, attempt: int) -> Fault | None:
        """The fault for the prompt's `attempt`-th request (counting from 1)."""
        return self.fault if self.times is None or attempt <= self.times else None


@dataclass(frozen=True)
class ChatRequest:
    """The parts of a chat request the server uses."""

    model: str
    prompt: str  # text of the last user message
    input_tokens: int
    max_tokens: int | None
    api_key: str | None

    @classmethod
    def parse(cls, body: dict[str, Any], api_key: str | None) -> ChatRequest:
        """Read a request body."""
        messages = [m for m in body["messages"] if isinstance(m, dict)]
        texts = [_text(m.get("content")) for m in messages] + [_text(body.get("system"))]
        prompts = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        return cls(
            model=str(body.get("model", "")),
            prompt=prompts[-1] if prompts else "",
            input_tokens=max(1, sum(map(len, texts)) // 4),
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            api_key=api_key,
        )


@dataclass(frozen=True)
class ApiError:
    """An error answer, rendered in either API's shape."""

    status: int
    message: str
    code: str | None = None
    openai_type: str | None = None
    retry_after: float | None = None

    def body(self, api: Api) -> dict[str, Any]:
        """The JSON error body as `api` sends it."""
        if api == "anthropic":
            default = "api_error" if self.status >= 500 else "invalid_request_error"
            error_type = ANTHROPIC_ERROR_TYPES.get(self.status, default)
            return {"type": "error", "error": {"type": error_type, "message": self.message}}
        default = "server_error" if self.status >= 500 else "invalid_request_error"
        return {
            "error": {
                "message": self.message,
                "type": self.openai_type or default,
                "param": None,
                "code": self.code,
            }
        }


@dataclass
class Window:
    """Admitted (arrival time, cost) pairs of a sliding rate-limit window."""

    entries: deque[tuple[float, int]] = field(default_factory=deque)

    def used(self, now: float, width: float) -> int:
        """Total cost admitted in (now - width, now]."""
        while self.entries and self.entries[0][0] <= now - width:
            self.entries.popleft()
        return sum(cost for _, cost in self.entries)

    def wait(self, cost: int, capacity: float, now: float, width: float) -> float:
        """Seconds until `cost` more fits (a full window if it never does)."""
        excess = self.used(now, width) + cost - capacity
        for arrival, admitted in self.entries:
            excess -= admitted
            if excess <= 0:
                return arrival + width - now
        return width

    def reset_in(self, now: float, width: float) -> float:
        """Seconds until the window is empty again."""
        return self.entries[-1][0] + width - now if self.entries else 0.0


@dataclass
class Stats:
    """What happened on the wire since the last reset."""

    requests_total: int = 0
    responses: dict[str, int] = field(default_factory=dict)  # by status code
    count_429: int = 0
    resets: int = 0
    hangs: int = 0
    malformed: int = 0
    disconnects: int = 0  # handlers cancelled: the client went away (or the server stopped)
    in_flight: int = 0
    peak_in_flight: int = 0
    in_flight_samples: list[list[float]] = field(default_factory=list)  # [t, level]
    attempts_by_prompt: dict[str, int] = field(default_factory=dict)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic()
    keys_seen: set[str] = field(default_factory=set)
    tokens_billed_input: int = 0
    tokens_billed_output: int = 0
    latencies: list[float] = field(default_factory=list)
    max_tokens_seen: list[int | None] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible deep copy."""
        data = dataclasses.asdict(self)
        data["keys_seen"] = sorted(self.keys_seen)
        return data


class FakeLLMServer:
    """The fake server; see the module docstring."""

    def __init__(self, *, port: int = 0, **settings: Any) -> None:
        self._port = port
        self._settings = Settings(**settings)
        self._rng = random.Random(self._settings.seed)
        self._stats = Stats()
        self._requests = Window()
        self._tokens = Window()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
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
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
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
        return self._settings

    def configure(self, **settings: Any) -> Settings:
        """Change settings (unknown names: TypeError; bad values: ValueError)."""
        with self._lock:
            self._settings = dataclasses.replace(self._settings, **settings)
            if "seed" in settings:
                self._rng = random.Random(self._settings.seed)
            return self._settings

    def stats(self) -> dict[str, Any]:
        """A snapshot of the stats, the same as ``GET /_stats``."""
        with self._lock:
            return self._stats.to_json()

    def reset_stats(self) -> None:
        """Clear the stats, the per-prompt attempt counts and the rate-limit windows."""
        with self._lock:
            in_flight = self._stats.in_flight
            self._stats = Stats(in_flight=in_flight, peak_in_flight=in_flight)
            self._requests = Window()
            self._tokens = Window()

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

    # -- chat endpoints --------------------------------------------------------

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "openai")

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "anthropic")

    async def _handle(self, request: web.Request, api: Api) -> web.StreamResponse:
        """Answer a chat request; it is in flight until written or cancelled."""
        raw = await request.read()
        arrival = self._enter()
        try:
            response = await self._respond(request, api, raw, arrival)
            with contextlib.suppress(ConnectionError):  # client gone or connection reset
                await response.prepare(request)
                await response.write_eof()
            return response
        except asyncio.CancelledError:
            with self._lock:
                self._stats.disconnects += 1
            raise
        finally:
            self._leave()

    async def _respond(
        self, request: web.Request, api: Api, raw: bytes, arrival: float
    ) -> web.Response:
        rid = next(self._ids)
        try:
            body = json.loads(raw)
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise ValueError("the body must be a JSON object with a 'messages' list")
            chat = ChatRequest.parse(body, _api_key(request))
            directive = Directive.parse(chat.prompt)
        except ValueError as exc:
            return self._error(api, rid, ApiError(400, f"Invalid request: {exc}"))

        with self._lock:
            settings = self._settings
            stats = self._stats
            if chat.api_key is not None:
                stats.keys_seen.add(chat.api_key)
            attempt = stats.attempts_by_prompt.get(chat.prompt, 0) + 1
            stats.attempts_by_prompt[chat.prompt] = attempt
            stats.max_tokens_seen.append(chat.max_tokens)
            rejection = self._rejection(api, settings, chat, arrival)
            fault = self._pick_fault(settings, directive, attempt) if rejection is None else None
        if rejection is not None:
            return self._error(api, rid, rejection)

        retry_after = settings.retry_after
        if directive is not None and directive.retry_after is not None:
            retry_after = directive.retry_after
        error = _fault_error(api, fault, retry_after)
        if error is not None and error.status < 500:
            return self._error(api, rid, error)
        if fault == "hang":
            with self._lock:
                self._stats.hangs += 1
            await asyncio.Event().wait()  # until aiohttp cancels us on disconnect
        await self._sleep(settings, directive)
        if fault == "reset":
            with self._lock:
                self._stats.resets += 1
            if request.transport is not None:
                request.transport.abort()
            return web.Response()  # never sent: the connection is gone
        if error is not None:
            return self._error(api, rid, error)
        return self._success(api, rid, settings, chat, directive, malformed=fault == "malformed")

    def _rejection(
        self, api: Api, settings: Settings, chat: ChatRequest, now: float
    ) -> ApiError | None:
        """The auth, model, quota or rate-limit error, if any; called with the lock held."""
        if settings.api_key is not None and chat.api_key != settings.api_key:
            return ApiError(401, f"Incorrect API key provided: {chat.api_key}", "invalid_api_key")
        if settings.models is not None and chat.model not in settings.models:
            message = f"The model `{chat.model}` does not exist or you do not have access to it."
            return ApiError(404, message, "model_not_found")
        if settings.quota_exhausted:
            return _fault_error(api, "quota", settings.retry_after)
        limits = self._limits(settings, chat.input_tokens)
        for kind, window, per_minute, capacity, cost in limits:
            if window.used(now, settings.rate_window) + cost > capacity:
                wait = window.wait(cost, capacity, now, settings.rate_window)
                message = (
                    f"Rate limit reached on {kind} per min (limit {per_minute}). "
                    f"Please try again in {_seconds(wait)}s."
                )
                return ApiError(429, message, "rate_limit_exceeded", kind, retry_after=wait)
        for _, window, _, _, cost in limits:
            window.entries.append((now, cost))
        return None

    def _limits(self, settings: Settings, tokens: int) -> list[tuple[str, Window, int, float, int]]:
        """(kind, window, limit per minute, window capacity, cost) of each configured limit."""
        per_window = settings.rate_window / 60
        limits = [
            ("requests", self._requests, settings.rpm_limit, 1),
            ("tokens", self._tokens, settings.tpm_limit, tokens),
        ]
        return [
            (kind, window, limit, limit * per_window, cost)
            for kind, window, limit, cost in limits
            if limit is not None
        ]

    def _pick_fault(
        self, settings: Settings, directive: Directive | None, attempt: int
    ) -> Fault | None:
        """The directive's fault, else a random one; called with the lock held."""
        if directive is not None:
            return directive.fault_for(attempt)
        draw = self._rng.random()
        for name, fault in RANDOM_FAULTS:
            draw -= getattr(settings, name)
            if draw < 0:
                return fault
        return None

    async def _sleep(self, settings: Settings, directive: Directive | None) -> None:
        """Wait out the request's latency, recording it."""
        with self._lock:
            if directive is not None and directive.latency is not None:
                latency = directive.latency
            elif settings.latency_median is not None:
                mu = math.log(settings.latency_median)
                latency = self._rng.lognormvariate(mu, settings.latency_sigma)
            else:
                latency = settings.latency
            self._stats.latencies.append(latency)
        await asyncio.sleep(latency)

    # -- responses -------------------------------------------------------------

    def _success(
        self,
        api: Api,
        rid: int,
        settings: Settings,
        chat: ChatRequest,
        directive: Directive | None,
        *,
        malformed: bool,
    ) -> web.Response:
        text, output_tokens, finish = _reply(chat, directive)
        body = _completion(api, rid, chat.model, text, finish)
        if settings.usage:
            body["usage"] = (
                {"input_tokens": chat.input_tokens, "output_tokens": output_tokens}
                if api == "anthropic"
                else {
                    "prompt_tokens": chat.input_tokens,
                    "completion_tokens": output_tokens,
                    "total_tokens": chat.input_tokens + output_tokens,
                }
            )
        payload = json.dumps(body).encode()
        with self._lock:
            self._stats.tokens_billed_input += chat.input_tokens
            self._stats.tokens_billed_output += output_tokens
            if malformed:
                self._stats.malformed += 1
                payload = payload[: len(payload) // 2]
        return self._response(api, rid, 200, payload)

    def _error(self, api: Api, rid: int, error: ApiError) -> web.Response:
        payload = json.dumps(error.body(api)).encode()
        return self._response(api, rid, error.status, payload, error.retry_after)

    def _response(
        self, api: Api, rid: int, status: int, payload: bytes, retry_after: float | None = None
    ) -> web.Response:
        headers = {"x-request-id" if api == "openai" else "request-id": f"req_{rid}"}
        if retry_after is not None:
            retry_ms = math.ceil(round(retry_after * 1000, 6))
            headers["retry-after"] = _seconds(retry_ms / 1000)
            headers["retry-after-ms"] = str(retry_ms)
        with self._lock:
            headers.update(self._rate_limit_headers(api))
            responses = self._stats.responses
            responses[str(status)] = responses.get(str(status), 0) + 1
            if status == 429:
                self._stats.count_429 += 1
        return web.Response(
            status=status, body=payload, content_type="application/json", headers=headers
        )

    def _rate_limit_headers(self, api: Api) -> dict[str, str]:
        """Headers for each configured rate limit; called with the lock held."""
        settings = self._settings
        now = time.monotonic()
        headers: dict[str, str] = {}
        if not settings.rate_headers:
            return headers
        for kind, window, per_minute, capacity, _ in self._limits(settings, 0):
            remaining = str(max(0, math.floor(capacity - window.used(now, settings.rate_window))))
            reset = window.reset_in(now, settings.rate_window)
            if api == "openai":
                headers[f"x-ratelimit-limit-{kind}"] = str(per_minute)
                headers[f"x-ratelimit-remaining-{kind}"] = remaining
                headers[f"x-ratelimit-reset-{kind}"] = _go_duration(reset)
            else:
                headers[f"anthropic-ratelimit-{kind}-limit"] = str(per_minute)
                headers[f"anthropic-ratelimit-{kind}-remaining"] = remaining
                headers[f"anthropic-ratelimit-{kind}-reset"] = _rfc3339(time.time() + reset)
        return headers

    # -- in-flight accounting --------------------------------------------------

    def _enter(self) -> float:
        """Count an arriving request; returns its arrival time."""
        now = time.monotonic()
        with self._lock:
            stats = self._stats
            stats.requests_total += 1
            stats.arrivals.append(now)
            stats.in_flight += 1
            stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
            stats.in_flight_samples.append([now, stats.in_flight])
        return now

    def _leave(self) -> None:
        with self._lock:
            self._stats.in_flight -= 1
            self._stats.in_flight_samples.append([time.monotonic(), self._stats.in_flight])


def _api_key(request: web.Request) -> str | None:
    """The x-api-key header, else the Authorization bearer token (either SDK may send it)."""
    if "x-api-key" in request.headers:
        return request.headers["x-api-key"]
    auth = request.headers.get("Authorization")
    return None if auth is None else auth.removeprefix("Bearer ")


def _text(content: object) -> str:
    """The text of message content: a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text") for part in content if isinstance(part, dict)]
        return "\n".join(part for part in parts if isinstance(part, str))
    return ""


def _reply(chat: ChatRequest, directive: Directive | None) -> tuple[str, int, Finish]:
    """Reply text, output tokens (one per word) and finish reason."""
    words = f"Reply to: {DIRECTIVE.sub('', chat.prompt).strip()[:60]}".split()
    tokens = len(words)
    finish: Finish = "stop"
    if directive is not None:
        tokens = directive.tokens if directive.tokens is not None else tokens
        finish = directive.finish or finish
    if chat.max_tokens is not None and chat.max_tokens < tokens:
        tokens, finish = chat.max_tokens, "length"
    words = (words + ["more"] * tokens)[:tokens]
    return " ".join(words), tokens, finish


def _completion(api: Api, rid: int, model: str, text: str, finish: Finish) -> dict[str, Any]:
    """A success body without usage."""
    if api == "anthropic":
        return {
            "id": f"msg_{rid}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": ANTHROPIC_STOP_REASONS[finish],
            "stop_sequence": None,
        }
    return {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        ],
    }


def _fault_error(api: Api, fault: Fault | None, retry_after: float) -> ApiError | None:
    """The error answer a fault stands for; None for success, reset, hang and malformed."""
    if fault == "quota":
        if api == "anthropic":
            return ApiError(400, "Your credit balance is too low to access the Anthropic API.")
        message = "You exceeded your current quota, please check your plan and billing details."
        return ApiError(429, message, "insufficient_quota", "insufficient_quota")
    if fault == "content_filter":
        message = "Your request was rejected as a result of our safety system."
        return ApiError(400, message, "content_policy_violation")
    if fault == 429:
        message = "Rate limit reached for requests (injected)."
        return ApiError(429, message, "rate_limit_exceeded", "requests", retry_after)
    if isinstance(fault, int):
        return ApiError(fault, f"Injected HTTP {fault} error.")
    return None


def _seconds(seconds: float) -> str:
    """Seconds with at most millisecond precision: "1.5", "2", "0.125"."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def _go_duration(seconds: float) -> str:
    """A duration as OpenAI's reset headers write it: "20ms", "1.5s", "6m0s"."""
    ms = math.ceil(round(seconds * 1000, 6))
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    minutes, ms = divmod(ms, 60_000)
    rest = f"{_seconds(ms / 1000)}s"
    return f"{minutes}m{rest}" if minutes else rest


def _rfc3339(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_args(argv: Sequence[str] | None) -> tuple[int, dict[str, Any]]:
    """The port and the settings given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    floats = ["latency", "latency_median", "latency_sigma", "retry_after", "rate_window"]
    for name in floats + [name for name, _ in RANDOM_FAULTS]:
        parser.add_argument(f"--{name.replace('_', '-')}", type=float)
    for name in ("seed", "rpm_limit", "tpm_limit"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int)
    parser.add_argument("--api-key")
    parser.add_argument("--models", type=lambda names: names.split(","), help="comma-separated")
    parser.add_argument("--quota-exhausted", action="store_true", default=None)
    parser.add_argument("--no-usage", dest="usage", action="store_false", default=None)
    parser.add_argument(
        "--no-rate-headers", dest="rate_headers", action="store_false", default=None
    )
    args = vars(parser.parse_args(argv))
    port = args.pop("port")
    return port, {name: value for name, value in args.items() if value is not None}


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, after printing ``READY <url>``."""
    port, settings = _parse_args(argv)

    def exit_on_term(signum: int, frame: FrameType | None) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, exit_on_term)
    with FakeLLMServer(port=port, **settings) as server:
        print(f"READY {server.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
