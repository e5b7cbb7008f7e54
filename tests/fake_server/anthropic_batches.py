"""Anthropic Message Batches: ``/v1/messages/batches``."""

from __future__ import annotations

import random
import re
from typing import Any

from aiohttp import web

from .anthropic_messages import AnthropicMessages, rfc3339
from .api import ApiError
from .batches import (
    BatchStore,
    Job,
    Refusal,
    bump,
    count_batch,
    guarded,
    json_body,
    jsonl,
    limit_of,
    new_id,
    page,
    scheduled,
)
from .core import Core

MAX_REQUESTS = 100_000
MAX_BYTES = 256_000_000  # a create request's body
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MESSAGES = AnthropicMessages()
PATH = "/v1/messages/batches"


def routes(core: Core, store: BatchStore) -> list[web.RouteDef]:
    """The routes, guarded (see `batches.guarded`)."""
    api = AnthropicBatches(core, store)
    table = [
        ("POST", PATH, api.create),
        ("GET", PATH, api.list),
        ("GET", PATH + "/{id}", api.retrieve),
        ("DELETE", PATH + "/{id}", api.delete),
        ("POST", PATH + "/{id}/cancel", api.cancel),
        ("GET", PATH + "/{id}/results", api.results),
    ]
    return [web.route(method, path, guarded(core, MESSAGES, fn)) for method, path, fn in table]


class AnthropicBatches:
    """The handlers: each gets the request and its API key, returns a JSON body or bytes."""

    def __init__(self, core: Core, store: BatchStore) -> None:
        self.core = core
        self.store = store

    async def create(self, request: web.Request, key: str | None) -> Any:
        settings = self.core.settings
        if settings.quota_exhausted:
            raise Refusal(MESSAGES.quota_error())
        size = len(await request.read())
        if size > (settings.batch_max_bytes or MAX_BYTES):
            message = f"Request exceeds the maximum size ({size} bytes)."
            raise Refusal(ApiError(413, message))
        requests = (await json_body(request)).get("requests")
        if not isinstance(requests, list) or not requests:
            raise Refusal(ApiError(400, "requests: a non-empty list of requests is required"))
        limit = settings.batch_max_requests or MAX_REQUESTS
        if len(requests) > limit:
            message = f"requests: at most {limit} requests per batch, not {len(requests)}"
            raise Refusal(ApiError(400, message))
        seen: set[str] = set()
        for index, item in enumerate(requests):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(item, dict) or not isinstance(item.get("params"), dict):
                raise Refusal(ApiError(400, f"requests.{index}: needs custom_id and params"))
            if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
                message = f"requests.{index}.custom_id: String should match pattern "
                raise Refusal(ApiError(400, message + f"'{CUSTOM_ID.pattern}'"))
            if custom_id in seen:
                message = f"Duplicate custom_id '{custom_id}': custom_ids must be unique."
                raise Refusal(ApiError(400, message))
            seen.add(custom_id)

        answers = [
            (str(item["custom_id"]), self.core.answer(MESSAGES, item["params"], key))
            for item in requests
        ]
        random.Random(f"{settings.seed}:{self.store.serial()}").shuffle(answers)
        seconds = settings.batch_seconds
        job = Job(
            id=new_id("msgbatch_"),
            api="anthropic",
            key=key,
            entries=scheduled(answers, 0.0, seconds),
            begin=0.0,
            last=seconds,
            close=seconds,
            expire=settings.batch_expire_after,
            cancel_seconds=settings.batch_cancel_seconds,
        )
        self.store.add(job)
        count_batch(self.core, "anthropic", job.id, len(requests))
        return self.render(job, request, fresh=True)

    async def list(self, request: web.Request, key: str | None) -> Any:
        bump(self.core, "batch_lists")
        after, before = request.query.get("after_id"), request.query.get("before_id")
        jobs = self.store.listed("anthropic")
        chosen, more = page(jobs, lambda job: job.id, after, before, limit_of(request))
        data = [self.render(job, request) for job in chosen]
        return {
            "data": data,
            "has_more": more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }

    async def retrieve(self, request: web.Request, key: str | None) -> Any:
        bump(self.core, "batch_retrieves")
        return self.render(self._job(request), request)

    async def cancel(self, request: web.Request, key: str | None) -> Any:
        bump(self.core, "batch_cancels")
        job = self._job(request)
        self.store.cancel(job)  # an ended batch stays as it is
        return self.render(job, request)

    async def delete(self, request: web.Request, key: str | None) -> Any:
        job = self._job(request)
        if job.progress().end is None:
            message = f"Message Batch {job.id} is still processing: cancel it first."
            raise Refusal(ApiError(400, message))
        with self.store.lock:
            self.store.jobs.pop(job.id, None)
        return {"id": job.id, "type": "message_batch_deleted"}

    async def results(self, request: web.Request, key: str | None) -> Any:
        job = self._job(request)
        progress = job.progress()
        if progress.end is None:
            raise Refusal(ApiError(400, f"Message Batch {job.id} has not ended yet."))
        bump(self.core, "result_downloads")
        records = []
        for index, entry in enumerate(job.entries):
            answer = entry.answer
            result: dict[str, Any] = {"type": progress.end.replace("cancelled", "canceled")}
            if index < progress.done and answer.status == 200:
                result = {"type": "succeeded", "message": answer.body}
            elif index < progress.done:
                result = {"type": "errored", "error": answer.body}
            records.append({"custom_id": entry.custom_id, "result": result})
        return jsonl(records)

    def _job(self, request: web.Request) -> Job:
        job_id = request.match_info["id"]
        missing = ApiError(404, f"No Message Batch found with id '{job_id}'.")
        return self.store.job("anthropic", job_id, missing)

    def render(self, job: Job, request: web.Request, *, fresh: bool = False) -> dict[str, Any]:
        """The MessageBatch object as it stands now (`fresh`: as created)."""
        progress = job.progress(fresh=fresh)
        done, total = job.entries[: progress.done], len(job.entries)
        ok = sum(1 for entry in done if entry.answer.status == 200)
        unrun = total - progress.done
        ended_at = progress.ended_at
        ended = progress.end is not None and ended_at is not None
        status = "ended" if ended else "canceling" if job.cancelled is not None else "in_progress"
        results_url = f"{request.scheme}://{request.host}{PATH}/{job.id}/results"
        return {
            "id": job.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": {
                "processing": 0 if ended else unrun,
                "succeeded": ok,
                "errored": progress.done - ok,
                "canceled": unrun if progress.end == "cancelled" else 0,
                "expired": unrun if progress.end == "expired" else 0,
            },
            "ended_at": rfc3339(job.at(ended_at)) if ended_at is not None else None,
            "created_at": rfc3339(job.wall),
            "expires_at": rfc3339(job.at(job.expires)),
            "archived_at": None,
            "cancel_initiated_at": (
                rfc3339(job.at(job.cancelled)) if job.cancelled is not None and not fresh else None
            ),
            "results_url": results_url if ended else None,
        }
