"""The server's state, and what it does with each chat request whatever the API."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .api import (
    Answer,
    Api,
    ApiError,
    ChatRequest,
    Reply,
    api_key,
    merge_patch,
    milliseconds,
    seconds,
)
from .settings import RANDOM_FAULTS, Directive, Fault, Settings
from .state import Stats, Window


class Core:
    """Settings, stats and rate-limit windows (guarded by one lock), and the request pipeline:
    the order of checks, fault picking, latency and in-flight accounting."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._rng = random.Random(settings.seed)
        self._stats = Stats()
        self._requests = Window()
        self._tokens = Window()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

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
        """A snapshot of the stats."""
        with self._lock:
            return self._stats.to_json()

    def reset_stats(self) -> None:
        """Clear the stats, the per-prompt attempt counts and the rate-limit windows."""
        with self._lock:
            in_flight = self._stats.in_flight
            by_model = dict(self._stats.in_flight_by_model)
            self._stats = Stats(
                in_flight=in_flight,
                peak_in_flight=in_flight,
                in_flight_by_model=by_model,
                peak_in_flight_by_model=dict(by_model),
            )
            self._requests = Window()
            self._tokens = Window()

    # -- the pipeline ----------------------------------------------------------

    async def handle(self, api: Api, request: web.Request) -> web.StreamResponse:
        """Answer a chat request; it is in flight until written or cancelled."""
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError as exc:  # answered with a 400 by _respond
            body = exc
        model = str(body.get("model", "")) if isinstance(body, dict) else None
        arrival = self._enter(model)
        try:
            response = await self._respond(request, api, body, arrival)
            if not response.prepared:  # a stream is written (and ended) by _stream
                with contextlib.suppress(ConnectionError):  # client gone or connection reset
                    await response.prepare(request)
                    await response.write_eof()
            return response
        except asyncio.CancelledError:
            with self._lock:
                self._stats.disconnects += 1
            raise
        finally:
            self._leave(model)

    async def _respond(
        self, request: web.Request, api: Api, body: Any, arrival: float
    ) -> web.StreamResponse:
        rid = next(self._ids)
        try:
            if isinstance(body, ValueError):  # the body is not JSON
                raise body
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise ValueError("the body must be a JSON object with a 'messages' list")
            chat = ChatRequest.parse(body, api_key(request))
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
            stats.systems_seen.append(chat.system)
            stats.last_messages.append(chat.last)
            rejection = self._rejection(api, settings, chat, arrival)
            if rejection is None and settings.json_schema_refused and chat.form == "json_schema":
                rejection = ApiError(400, api.format_refusal)
            if rejection is None and settings.stream_options_refused:
                rejection = api.refused_option(chat)
            fault = self._pick_fault(settings, directive, attempt) if rejection is None else None
        if rejection is not None:
            return self._error(api, rid, rejection)

        retry_after = settings.retry_after
        if directive is not None and directive.retry_after is not None:
            retry_after = directive.retry_after
        error = _fault_error(api, fault, retry_after)
        if error is not None and directive is not None and directive.retry_headers:
            error = dataclasses.replace(error, retry_headers=directive.retry_headers)
        if error is not None and error.status < 500:
            return self._error(api, rid, error)
        if fault == "hang":
            with self._lock:
                self._stats.hangs += 1
            await asyncio.Event().wait()  # until aiohttp cancels us on disconnect
        await self._sleep(settings, directive, chat.model)
        if fault == "reset":
            with self._lock:
                self._stats.resets += 1
            if request.transport is not None:
                request.transport.abort()
            return web.Response()  # never sent: the connection is gone
        if error is not None:
            return self._error(api, rid, error)
        if chat.stream:
            return await self._stream(
                request, api, rid, settings, chat, directive, fault, attempt, arrival
            )
        return self._success(api, rid, settings, chat, directive, fault, attempt)

    def _rejection(
        self, api: Api, settings: Settings, chat: ChatRequest, now: float
    ) -> ApiError | None:
        """The auth, model, quota or rate-limit error, if any; called with the lock held."""
        if settings.api_key is not None and chat.api_key != settings.api_key:
            return ApiError(401, f"Incorrect API key provided: {chat.api_key}", "invalid_api_key")
        if settings.models is not None and chat.model not in settings.models:
            return unknown_model(chat.model)
        if settings.quota_exhausted:
            return api.quota_error()
        limits = self._limits(settings, chat.input_tokens)
        for kind, window, per_minute, capacity, cost in limits:
            if window.used(now, settings.rate_window) + cost > capacity:
                wait = window.wait(cost, capacity, now, settings.rate_window)
                message = (
                    f"Rate limit reached on {kind} per min (limit {per_minute}). "
                    f"Please try again in {seconds(wait)}s."
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

    async def _sleep(self, settings: Settings, directive: Directive | None, model: str) -> None:
        """Wait out the request's latency, recording it: the directive's, else the model's
        in `model_latency`, else the global one."""
        per_model = (settings.model_latency or {}).get(model)
        with self._lock:
            if directive is not None and directive.latency is not None:
                latency = directive.latency
            elif per_model is not None and "latency" in per_model:
                latency = per_model["latency"]
            elif per_model is not None:
                mu = math.log(per_model["median"])
                latency = self._rng.lognormvariate(mu, per_model["sigma"])
            elif settings.latency_median is not None:
                mu = math.log(settings.latency_median)
                latency = self._rng.lognormvariate(mu, settings.latency_sigma)
            else:
                latency = settings.latency
            self._stats.latencies.append(latency)
        await asyncio.sleep(latency)

    # -- batches ---------------------------------------------------------------

    def next_id(self) -> int:
        """A fresh request number: answers are "req_<n>" and their bodies' ids use it."""
        return next(self._ids)

    def tally(self, change: Callable[[Stats], None]) -> None:
        """Apply `change` to the stats, under the lock."""
        with self._lock:
            change(self._stats)

    def answer(self, api: Api, body: Any, key: str | None) -> Answer:
        """A batched request's answer, as `handle` gives it online but with no latency, rate
        limits, quota or random faults: a directive's error status (or content_filter,
        quota) is an error answer; reset, hang, malformed, not_utf8, error_200 succeed."""
        rid = next(self._ids)
        try:
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise ValueError("the body must be a JSON object with a 'messages' list")
            chat = ChatRequest.parse(body, key)
            directive = Directive.parse(chat.prompt)
        except ValueError as exc:
            return self._answer_error(api, rid, ApiError(400, f"Invalid request: {exc}"))
        with self._lock:
            settings = self._settings
            if key is not None:
                self._stats.keys_seen.add(key)
            attempt = self._stats.attempts_by_prompt.get(chat.prompt, 0) + 1
            self._stats.attempts_by_prompt[chat.prompt] = attempt
        error: ApiError | None = None
        if settings.models is not None and chat.model not in settings.models:
            error = unknown_model(chat.model)
        elif settings.json_schema_refused and chat.form == "json_schema":
            error = ApiError(400, api.format_refusal)
        elif settings.stream_options_refused:
            error = api.refused_option(chat)
        if error is None and directive is not None:
            error = _fault_error(api, directive.fault_for(attempt), settings.retry_after)
        if error is not None:
            return self._answer_error(api, rid, error)
        reply = Reply.to(chat, directive, attempt)
        success = api.success_body(rid, chat, reply, usage=settings.usage)
        if settings.reply_patch is not None:
            success = merge_patch(success, settings.reply_patch)
        return Answer(rid, 200, success)

    def _answer_error(self, api: Api, rid: int, error: ApiError) -> Answer:
        body = self._settings.error_body
        return Answer(rid, error.status, api.error_body(error) if body is None else body)

    # -- responses -------------------------------------------------------------

    def _success(
        self,
        api: Api,
        rid: int,
        settings: Settings,
        chat: ChatRequest,
        directive: Directive | None,
        fault: Fault | None,
        attempt: int,
    ) -> web.Response:
        """A 200; `fault` may still spoil it: malformed, not_utf8 or error_200."""
        reply = Reply.to(chat, directive, attempt)
        body = api.success_body(rid, chat, reply, usage=settings.usage)
        if settings.reply_patch is not None:
            body = merge_patch(body, settings.reply_patch)
        if fault == "error_200":
            body = api.error_body(ApiError(529, "Overloaded (an error in a 200 reply)."))
        payload = json.dumps(body).encode()
        if fault == "not_utf8":
            payload = payload.replace(b'"', b'"\xff', 1)  # the first key is not UTF-8
        with self._lock:
            if fault != "error_200":
                self._stats.tokens_billed_input += chat.input_tokens
                self._stats.tokens_billed_output += reply.output_tokens
            if fault == "malformed":
                self._stats.malformed += 1
                payload = payload[: len(payload) // 2]
        return self._response(api, rid, 200, payload)

    async def _stream(
        self,
        request: web.Request,
        api: Api,
        rid: int,
        settings: Settings,
        chat: ChatRequest,
        directive: Directive | None,
        fault: Fault | None,
        attempt: int,
        arrival: float,
    ) -> web.StreamResponse:
        """A 200 event stream, written here: the opening events with the first content
        chunk, one content chunk per `chunk_delay`, then the closing events. A directive may
        cut it, end it with an error event or stall it after some content chunks; `fault`
        may spoil it (malformed, not_utf8: its first event; error_200: an error event
        alone). With the setting `stream_script`, its pieces are the content chunks and
        there are no opening or closing events."""
        reply = Reply.to(chat, directive, attempt)
        events = api.stream_body(rid, chat, reply, usage=settings.usage and settings.stream_usage)
        delay = settings.chunk_delay
        if directive is not None and directive.chunk_delay is not None:
            delay = directive.chunk_delay
        mishap = directive.mishap_for(attempt) if directive is not None else None
        opening, content, closing = list(events.opening), events.content, events.closing
        failure = api.stream_failure
        if fault == "error_200":  # the error event alone
            failure = ApiError(529, "Overloaded (an error in a 200 reply).")
            opening, content, mishap = [], [], ("error", 0)
        elif fault == "malformed":
            opening[0] = opening[0][: len(opening[0]) // 2] + b"\n\n"  # its JSON cut in half
        elif fault == "not_utf8":
            opening[0] = opening[0].replace(b'"', b'"\xff', 1)  # the first key is not UTF-8
        if settings.stream_script is not None:  # the wire as the test wrote it
            opening, content, closing = [], settings.script_bytes(), []
        if mishap is not None:
            content = content[: mishap[1]]

        headers = self._headers(api, rid, 200)
        headers["cache-control"] = "no-cache"
        response = web.StreamResponse(status=200, headers=headers)
        response.content_type = "text/event-stream"
        response.charset = "utf-8"
        with self._lock:
            stats = self._stats
            stats.streams_started += 1
            if fault != "error_200":  # billed in full, as if the stream ran to its end
                stats.tokens_billed_input += chat.input_tokens
                stats.tokens_billed_output += reply.output_tokens
            if fault == "malformed":
                stats.malformed += 1
        sent: list[float] = []  # when each content chunk was written (time.monotonic())
        completed = False
        try:
            await response.prepare(request)
            pending = b"".join(opening)  # goes out with the first content chunk
            for index, chunk in enumerate(content):
                if index > 0 and delay > 0:
                    await asyncio.sleep(delay)
                await response.write(pending + chunk)
                pending = b""
                sent.append(time.monotonic())
                with self._lock:
                    self._stats.chunks_sent += 1
            if mishap is None:
                await response.write(pending + b"".join(closing))
                await response.write_eof()
                completed = True
            elif mishap[0] == "error":
                await response.write(pending + api.stream_error(failure))
                await response.write_eof()
            else:
                if pending:
                    await response.write(pending)
                if mishap[0] == "stall":  # until aiohttp cancels us on disconnect
                    await asyncio.Event().wait()
                if request.transport is not None:  # cut
                    request.transport.abort()
        except ConnectionError:  # the client went away mid-stream
            pass
        finally:  # also when cancelled: the client went away
            with self._lock:
                stats = self._stats
                if completed:
                    stats.streams_completed += 1
                else:
                    stats.streams_cut += 1
                if sent:
                    stats.stream_spans.append([sent[0] - arrival, sent[-1] - sent[0]])
        return response

    def _error(self, api: Api, rid: int, error: ApiError) -> web.Response:
        body = self._settings.error_body
        body = api.error_body(error) if body is None else body
        return self._response(api, rid, error.status, json.dumps(body).encode(), error)

    def _response(
        self, api: Api, rid: int, status: int, payload: bytes, error: ApiError | None = None
    ) -> web.Response:
        headers = self._headers(api, rid, status, error)
        return web.Response(
            status=status, body=payload, content_type="application/json", headers=headers
        )

    def _headers(
        self, api: Api, rid: int, status: int, error: ApiError | None = None
    ) -> dict[str, str]:
        """The headers of an answer (counted in the stats by its status)."""
        headers = {api.request_id_header: f"req_{rid}"}
        if error is not None and error.retry_headers is not None:
            headers.update(error.retry_headers)
        elif error is not None and error.retry_after is not None:
            retry_ms = milliseconds(error.retry_after)
            headers["retry-after"] = seconds(retry_ms / 1000)
            headers["retry-after-ms"] = str(retry_ms)
        with self._lock:
            headers.update(self._rate_limit_headers(api))
            responses = self._stats.responses
            responses[str(status)] = responses.get(str(status), 0) + 1
            if status == 429:
                self._stats.count_429 += 1
                self._stats.rejections.append(time.monotonic())
        return headers

    def _rate_limit_headers(self, api: Api) -> dict[str, str]:
        """Headers for each configured rate limit; called with the lock held."""
        settings = self._settings
        now = time.monotonic()
        headers: dict[str, str] = {}
        if not settings.rate_headers:
            return headers
        for kind, window, per_minute, capacity, _ in self._limits(settings, 0):
            remaining = max(0, math.floor(capacity - window.used(now, settings.rate_window)))
            reset = window.reset_in(now, settings.rate_window)
            headers.update(api.rate_limit_headers(kind, per_minute, remaining, reset))
        return headers

    # -- in-flight accounting --------------------------------------------------

    def _enter(self, model: str | None) -> float:
        """Count an arriving request (of `model`, None: its body names none); returns its
        arrival time."""
        now = time.monotonic()
        with self._lock:
            stats = self._stats
            stats.requests_total += 1
            stats.arrivals.append(now)
            stats.in_flight += 1
            stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
            stats.in_flight_samples.append([now, stats.in_flight])
            if model is not None:
                stats.requests_by_model[model] = stats.requests_by_model.get(model, 0) + 1
                level = stats.in_flight_by_model.get(model, 0) + 1
                stats.in_flight_by_model[model] = level
                peak = stats.peak_in_flight_by_model.get(model, 0)
                stats.peak_in_flight_by_model[model] = max(peak, level)
        return now

    def _leave(self, model: str | None) -> None:
        with self._lock:
            stats = self._stats
            stats.in_flight -= 1
            stats.in_flight_samples.append([time.monotonic(), stats.in_flight])
            if model is not None:
                level = stats.in_flight_by_model.get(model, 0) - 1
                if level > 0:
                    stats.in_flight_by_model[model] = level
                else:
                    stats.in_flight_by_model.pop(model, None)


def unknown_model(model: str) -> ApiError:
    """The 404 to a model the server does not serve."""
    message = f"The model `{model}` does not exist or you do not have access to it."
    return ApiError(404, message, "model_not_found")


def _fault_error(api: Api, fault: Fault | None, retry_after: float) -> ApiError | None:
    """The error answer a fault stands for; None for success, reset, hang and the faults
    that spoil a 200 (malformed, not_utf8, error_200)."""
    if fault == "quota":
        return api.quota_error()
    if fault == "content_filter":
        message = "Your request was rejected as a result of our safety system."
        return ApiError(400, message, "content_policy_violation")
    if fault == 429:
        message = "Rate limit reached for requests (injected)."
        return ApiError(429, message, "rate_limit_exceeded", "requests", retry_after)
    if isinstance(fault, int):
        return ApiError(fault, f"Injected HTTP {fault} error.")
    return None
