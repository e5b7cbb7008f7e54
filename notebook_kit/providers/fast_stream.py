"""The lean path's streamed replies: a 200 event stream read straight off the SDK client's
aiohttp session, its server-sent events decoded and turned into records (decoded JSON) by
the rules of each SDK's own `_streaming.py`, with the SDK's exceptions for what goes wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from .fast_http import FastPost

Event = tuple[str | None, str]  # an event's name (None: none given) and its data
SKIP, DONE = object(), object()  # a rule's answers besides a record: skip it, the end
Rule = Callable[[str | None, str, FastPost, aiohttp.ClientResponse], Any]
DRAIN_SECONDS = 0.1  # openai's: after [DONE], the rest of the body, for the connection's reuse


class EventDecoder:
    """Server-sent events from byte chunks, as both SDKs' `SSEDecoder` read them: a line
    ends at CR, LF or CRLF (a CRLF split across chunks too), each line is UTF-8 (else
    `UnicodeDecodeError`), an empty line ends an event if it has a name, data, an id or a
    retry (the last id is kept from event to event), any other field is ignored, and no
    line or event has a size limit. A line that is not UTF-8 ends the reading: the events
    before it are returned, then `failed` holds its error."""

    __slots__ = ("_data", "_event", "_id", "_pending", "_retry", "_skip_lf", "failed")

    def __init__(self) -> None:
        self.failed: UnicodeDecodeError | None = None
        self._pending = b""  # the start of a line whose end has not come yet
        self._skip_lf = False  # the last chunk ended in CR: a LF that follows ends nothing
        self._event = ""
        self._data: list[str] = []
        self._id = ""
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        """The events that `chunk` completes."""
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buffer = self._pending + chunk if self._pending else chunk
        if b"\r" in buffer:
            lines = buffer.splitlines(keepends=True)  # at CR, LF and CRLF only, for bytes
            last = lines[-1]
            self._pending = b"" if last.endswith((b"\n", b"\r")) else lines.pop()
            self._skip_lf = last.endswith(b"\r")
            lines = [line.rstrip(b"\r\n") for line in lines]
        else:
            lines = buffer.split(b"\n")
            self._pending = lines.pop()
        return self._read(lines)

    def finish(self) -> list[Event]:
        """At the end of the body: its last, unended line is read but ends no event."""
        pending, self._pending = self._pending, b""
        return self._read([pending]) if pending else []

    def _read(self, lines: list[bytes]) -> list[Event]:
        events: list[Event] = []
        for raw in lines:
            try:
                line = raw.decode()
            except UnicodeDecodeError as exc:
                self.failed = exc
                break
            if line:
                name, _, value = line.partition(":")  # a comment (":...") has no name
                if value[:1] == " ":
                    value = value[1:]
                if name == "data":
                    self._data.append(value)
                elif name == "event":
                    self._event = value
                elif name == "id":
                    if "\0" not in value:
                        self._id = value
                elif name == "retry":
                    with contextlib.suppress(ValueError):
                        self._retry = int(value)
            elif self._event or self._data or self._id or self._retry is not None:
                events.append((self._event or None, "\n".join(self._data)))
                self._event, self._data, self._retry = "", [], None
        return events


async def records(fast: FastPost, reply: aiohttp.ClientResponse, rule: Rule) -> AsyncIterator[Any]:
    """The records of an opened stream by `rule`, until it ends; a read that fails (a
    cut, a timeout) is the SDK's connection or timeout error. Releases the reply."""
    decoder = EventDecoder()
    content = reply.content
    try:
        while True:
            try:
                chunk = await content.readany()  # whatever has come: no line-length limit
            except Exception as exc:
                raise fast.failure(exc) from exc
            for event, data in decoder.feed(chunk) if chunk else decoder.finish():
                record = rule(event, data, fast, reply)
                if record is DONE:
                    await _drain(content)
                    return
                if record is not SKIP:
                    yield record
            if decoder.failed is not None:
                raise decoder.failed
            if not chunk:
                return
    finally:
        reply.release()


async def _drain(content: aiohttp.StreamReader) -> None:
    """Read the rest of the body, briefly, so that the connection can be used again."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while await content.readany():
                pass
    except (TimeoutError, aiohttp.ClientError):
        pass  # the reply is complete: the connection is closed instead


def openai_record(
    event: str | None, data: str, fast: FastPost, reply: aiohttp.ClientResponse
) -> Any:
    """As openai's `AsyncStream`: `[DONE]` ends the stream, an Assistants `thread.` event
    is wrapped, a record with a truthy `error` raises `APIError`, any other is yielded."""
    if data.startswith("[DONE]"):
        return DONE
    record = json.loads(data)
    if event is not None and event.startswith("thread."):
        return {"data": record, "event": event}
    if isinstance(record, dict) and record.get("error"):
        error = record["error"]
        message = error.get("message") if isinstance(error, dict) else None
        if not message or not isinstance(message, str):
            message = "An error occurred during streaming"
        raise fast.api_error(message, error)
    return record


def anthropic_record(
    event: str | None, data: str, fast: FastPost, reply: aiohttp.ClientResponse
) -> Any:
    """As anthropic's `AsyncStream`: events without a name, `ping`s and events without
    data are skipped, an `error` event raises the SDK's status error, any other is
    yielded (what it is comes from its data's `type`)."""
    if event is None or event == "ping":
        return SKIP
    if event == "error":
        body: object = data
        try:
            body = json.loads(data)
            message = f"{body}"
        except Exception:
            message = data or f"Error code: {reply.status}"
        raise fast.event_error(message, body, reply)
    if not data:
        return SKIP
    return json.loads(data)
