"""Batch jobs whatever the API: the store, each job's clock, and the guard on batch routes.

A job's answers are computed when it is created; what a client sees of them follows the
server's monotonic clock, read lazily on each call: no background task runs.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from aiohttp import web

from .api import Answer, Api, ApiError, api_key
from .core import Core
from .state import Stats

End = Literal["completed", "cancelled", "expired", "failed"]
DAY = 24 * 3600.0  # the completion window, and when batches expire unless told otherwise

Body = dict[str, Any] | bytes  # a JSON answer, or a file's bytes
Handler = Callable[[web.Request, str | None], Awaitable[Body]]
T = TypeVar("T")


class Refusal(Exception):
    """Raised by a batch route handler: the call is answered with this error."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class Entry:
    """One request of a job: its id, its answer and when the answer is ready."""

    custom_id: str
    answer: Answer
    done: float  # seconds after the job's creation


@dataclass(frozen=True)
class Progress:
    """Where a job stands at one moment (times in seconds after its creation)."""

    elapsed: float
    done: int  # the first `done` entries (in finish order) have their answers
    end: End | None = None  # how it ended; None while it runs
    ended_at: float | None = None


@dataclass
class Job:
    """A batch job. `entries` are in the order they finish (a seeded shuffle of the input):
    evenly over [begin, last] after creation; then, unless cancelled or expired first, the
    job ends at `close`."""

    id: str
    api: str  # "openai" or "anthropic"
    key: str | None
    entries: list[Entry]
    begin: float
    last: float
    close: float
    expire: float | None  # when unfinished requests expire (None: after a day)
    cancel_seconds: float
    fields: dict[str, Any] = field(default_factory=dict)  # the API's own (metadata, files...)
    fail_at: float | None = None  # when it fails validation (OpenAI), if it does
    errors: list[dict[str, Any]] = field(default_factory=list)  # why
    cancelled: float | None = None  # when a cancel arrived
    created: float = field(default_factory=lambda: time.monotonic())
    wall: float = field(default_factory=lambda: time.time())  # created, in Unix time

    def progress(self, *, fresh: bool = False) -> Progress:
        """Where the job stands now; `fresh`: as it is created, before anything happens
        (its elapsed time is -inf), whatever the settings."""
        if fresh:
            return Progress(-math.inf, 0)
        now = time.monotonic() - self.created
        if self.fail_at is not None:
            failed = now >= self.fail_at
            return Progress(now, 0, "failed" if failed else None, self.fail_at if failed else None)
        ends: list[tuple[float, End, float]] = [(self.close, "completed", self.close)]
        if self.cancelled is not None:
            ends.append((self.cancelled + self.cancel_seconds, "cancelled", self.cancelled))
        if self.expire is not None:
            ends.append((self.expire, "expired", self.expire))
        ended_at, how, cutoff = min(ends)  # on a tie: cancelled, completed, expired
        if now < ended_at:
            cutoff = now if self.cancelled is None else min(now, self.cancelled)
        done = bisect.bisect_right([entry.done for entry in self.entries], cutoff)
        if now < ended_at:
            return Progress(now, done)
        return Progress(now, done, how, ended_at)

    def reached(self, progress: Progress, offset: float) -> bool:
        """Whether the job got `offset` seconds along its normal course: not failing, and
        not cancelled nor expired before then."""
        stops = [stop for stop in (self.cancelled, self.expire) if stop is not None]
        in_course = self.fail_at is None and all(offset <= stop for stop in stops)
        return in_course and progress.elapsed >= offset

    def at(self, offset: float) -> float:
        """Unix time `offset` seconds after creation."""
        return self.wall + offset

    @property
    def expires(self) -> float:
        """When it expires, in seconds after creation."""
        return DAY if self.expire is None else self.expire

    def unfinished(self) -> bool:
        """Whether it still runs (validating, in progress, finalizing or cancelling)."""
        return self.progress().end is None


@dataclass
class File:
    """An uploaded file (`data`), or a job's output or error file (rendered on demand)."""

    id: str
    filename: str
    purpose: str
    created: float  # Unix time
    data: bytes = b""
    job: str | None = None  # an output or error file: its job's id
    kind: str = ""  # "output" or "error"


class BatchStore:
    """Every job and file of one server, both APIs; kept until the server stops."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.files: dict[str, File] = {}
        self.lock = threading.Lock()
        self._serial = itertools.count(1)

    def serial(self) -> int:
        """The next job's number (it seeds the job's shuffle)."""
        return next(self._serial)

    def add(self, job: Job) -> None:
        with self.lock:
            self.jobs[job.id] = job

    def job(self, api: str, job_id: str, missing: ApiError) -> Job:
        """The job, or the `missing` error."""
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None or job.api != api:
            raise Refusal(missing)
        return job

    def listed(self, api: str) -> list[Job]:
        """The API's jobs, newest first."""
        with self.lock:
            jobs = [job for job in self.jobs.values() if job.api == api]
        return jobs[::-1]

    def cancel(self, job: Job) -> bool:
        """Record a cancel if the job still runs; False if it has ended."""
        with self.lock:
            if job.progress().end is not None:
                return False
            if job.cancelled is None:
                job.cancelled = time.monotonic() - job.created
            return True


def bump(core: Core, name: str) -> None:
    """Add one to the stat `name`."""
    core.tally(lambda stats: setattr(stats, name, getattr(stats, name) + 1))


def count_batch(core: Core, api: str, job_id: str, size: int) -> None:
    """Count a created batch of `size` requests in the stats."""

    def count(stats: Stats) -> None:
        stats.batches_created += 1
        stats.batches_by_api[api] = stats.batches_by_api.get(api, 0) + 1
        stats.batch_ids.append(job_id)
        stats.batch_sizes.append(size)
        stats.batch_requests += size

    core.tally(count)


def new_id(prefix: str) -> str:
    """An id no other server process gives out: "<prefix><24 hex digits>"."""
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def scheduled(answers: Sequence[tuple[str, Answer]], begin: float, last: float) -> list[Entry]:
    """Entries for (custom_id, answer) pairs in finish order, evenly over (begin, last]."""
    count = len(answers)
    return [
        Entry(custom_id, answer, begin + (last - begin) * (index + 1) / count)
        for index, (custom_id, answer) in enumerate(answers)
    ]


def page(
    items: Sequence[T], ident: Callable[[T], str], after: str | None, before: str | None, limit: int
) -> tuple[list[T], bool]:
    """The page of `items` after (or before) the one with that id; and whether more follow."""
    ids = [ident(item) for item in items]
    start, stop = 0, len(items)
    if after in ids:
        start = ids.index(after) + 1
    if before in ids:
        stop = ids.index(before)
        start = max(start, stop - limit)
    chosen = list(items[start:stop][:limit])
    return chosen, start + len(chosen) < stop


def jsonl(records: Sequence[dict[str, Any]]) -> bytes:
    """JSON Lines: one record per line, each line ended."""
    return b"".join(json.dumps(record).encode() + b"\n" for record in records)


def limit_of(request: web.Request, default: int = 20) -> int:
    """The `limit` query parameter (1 when smaller; the default when absent or not a number)."""
    text = request.query.get("limit", "")
    return max(1, int(text)) if text.isdigit() else default


def guarded(core: Core, api: Api, handler: Handler) -> Callable[[web.Request], Awaitable[Any]]:
    """A batch route: 404 while the setting `batches` is off, 401 to a wrong API key, a
    `Refusal` as the API's error body; each answer carries a request id."""

    async def handle(request: web.Request) -> web.Response:
        rid = core.next_id()
        headers = {api.request_id_header: f"req_{rid}"}
        settings = core.settings
        key = api_key(request)
        try:
            if not settings.batches:
                raise Refusal(ApiError(404, f"Invalid URL ({request.method} {request.path})"))
            if settings.api_key is not None and key != settings.api_key:
                message = f"Incorrect API key provided: {key}"
                raise Refusal(ApiError(401, message, "invalid_api_key"))
            body = await handler(request, key)
        except Refusal as refusal:
            error = refusal.error
            payload = settings.error_body or api.error_body(error)
            return web.json_response(payload, status=error.status, headers=headers)
        if isinstance(body, bytes):
            return web.Response(body=body, content_type="application/octet-stream", headers=headers)
        return web.json_response(body, headers=headers)

    return handle


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400."""
    try:
        body = await request.json()
    except ValueError as exc:
        raise Refusal(ApiError(400, f"Invalid request: the body is not JSON ({exc})")) from None
    if not isinstance(body, dict):
        raise Refusal(ApiError(400, "Invalid request: the body must be a JSON object"))
    return body
