"""OpenAI's Batch API (``/v1/batches``, for chat completions) and its routes with the Files
API's (``openai_files``)."""

from __future__ import annotations

import random
from typing import Any

from aiohttp import web

from .api import ApiError
from .batches import (
    BatchStore,
    File,
    Job,
    Progress,
    Refusal,
    bump,
    count_batch,
    guarded,
    json_body,
    limit_of,
    new_id,
    page,
    scheduled,
)
from .core import Core
from .openai_chat import OpenAIChat
from .openai_files import ENDPOINT, OpenAIFiles, batch_error, listing, validated
from .settings import Settings

CHAT = OpenAIChat()


def routes(core: Core, store: BatchStore) -> list[web.RouteDef]:
    """The Files and Batch routes, guarded (see `batches.guarded`)."""
    files, api = OpenAIFiles(core, store), OpenAIBatches(core, store)
    table = [
        ("POST", "/v1/files", files.upload),
        ("GET", "/v1/files", files.list_files),
        ("GET", "/v1/files/{id}", files.get_file),
        ("DELETE", "/v1/files/{id}", files.delete_file),
        ("GET", "/v1/files/{id}/content", files.content),
        ("POST", "/v1/batches", api.create),
        ("GET", "/v1/batches", api.list),
        ("GET", "/v1/batches/{id}", api.retrieve),
        ("POST", "/v1/batches/{id}/cancel", api.cancel),
    ]
    return [web.route(method, path, guarded(core, CHAT, fn)) for method, path, fn in table]


class OpenAIBatches:
    """The handlers: each gets the request and its API key, returns a JSON body or bytes."""

    def __init__(self, core: Core, store: BatchStore) -> None:
        self.core = core
        self.store = store

    async def create(self, request: web.Request, key: str | None) -> Any:
        settings = self.core.settings
        if settings.quota_exhausted:
            raise Refusal(CHAT.quota_error())
        body = await json_body(request)
        endpoint, metadata = body.get("endpoint"), body.get("metadata")
        if endpoint != ENDPOINT:
            message = f"Invalid value for 'endpoint': this server batches only {ENDPOINT}."
            raise Refusal(ApiError(400, message, param="endpoint"))
        if body.get("completion_window") != "24h":
            message = "Invalid value for 'completion_window': only '24h' is supported."
            raise Refusal(ApiError(400, message, param="completion_window"))
        if metadata is not None and not (
            isinstance(metadata, dict)
            and len(metadata) <= 16
            and all(isinstance(v, str) for v in metadata.values())
        ):
            message = "Invalid 'metadata': at most 16 string values."
            raise Refusal(ApiError(400, message, param="metadata"))
        file_id = str(body.get("input_file_id"))
        with self.store.lock:
            file = self.store.files.get(file_id)
        if file is None:
            raise Refusal(ApiError(404, f"No such File object: {file_id}", param="input_file_id"))
        if file.purpose != "batch":
            message = f"The input file {file_id} must have the purpose 'batch'."
            raise Refusal(ApiError(400, message, param="input_file_id"))

        requests, errors, model, tokens = validated(file.data, settings)
        if not errors:
            errors = self._over_token_limit(settings, key, model, tokens)
        seconds = settings.batch_seconds
        job = Job(
            id=new_id("batch_"),
            api="openai",
            key=key,
            entries=[],
            begin=seconds * 0.1,
            last=seconds * 0.9,
            close=seconds,
            expire=settings.batch_expire_after,
            cancel_seconds=settings.batch_cancel_seconds,
            fields={"metadata": metadata, "input_file_id": file_id, "model": model},
        )
        job.fields |= {"tokens": tokens, "output": new_id("file-"), "error": new_id("file-")}
        job.fields["published"] = set()  # the kinds of files ("output", "error") made
        if errors:
            job.fail_at, job.errors = job.begin, errors
        else:
            answers = [(cid, self.core.answer(CHAT, line, key)) for cid, line in requests]
            random.Random(f"{settings.seed}:{self.store.serial()}").shuffle(answers)
            job.entries = scheduled(answers, job.begin, job.last)
        self.store.add(job)
        size = sum(1 for text in file.data.splitlines() if text.strip())
        count_batch(self.core, "openai", job.id, size)
        return self.render(job, fresh=True)

    def _over_token_limit(
        self, settings: Settings, key: str | None, model: str | None, tokens: int
    ) -> list[Any]:
        """OpenAI's token_limit_exceeded, if this key's unfinished batches of the model hold
        too many input tokens with this one."""
        limit = settings.batch_enqueued_token_limit
        if limit is None:
            return []
        queued = sum(
            job.fields["tokens"]
            for job in self.store.listed("openai")
            if job.key == key and job.fields["model"] == model and not job.errors
            if job.unfinished()
        )
        if queued + tokens <= limit:
            return []
        message = (
            f"Enqueued token limit reached for {model} in organization org-fake. Limit: "
            f"{limit:,} enqueued tokens. Please try again once some in_progress batches have "
            "been completed."
        )
        return [batch_error("token_limit_exceeded", message)]

    async def list(self, request: web.Request, key: str | None) -> Any:
        bump(self.core, "batch_lists")
        after = request.query.get("after")
        jobs = self.store.listed("openai")
        chosen, more = page(jobs, lambda job: job.id, after, None, limit_of(request))
        return listing([self.render(job) for job in chosen], more)

    async def retrieve(self, request: web.Request, key: str | None) -> Any:
        bump(self.core, "batch_retrieves")
        return self.render(self._job(request))

    async def cancel(self, request: web.Request, key: str | None) -> Any:
        bump(self.core, "batch_cancels")
        job = self._job(request)
        if not self.store.cancel(job) and job.progress().end != "cancelled":
            status = job.progress().end
            raise Refusal(ApiError(409, f"Cannot cancel a batch with status '{status}'."))
        return self.render(job)

    def _job(self, request: web.Request) -> Job:
        job_id = request.match_info["id"]
        return self.store.job(
            "openai", job_id, ApiError(404, f"No batch found with id '{job_id}'.")
        )

    def render(self, job: Job, *, fresh: bool = False) -> dict[str, Any]:
        """The Batch object as it stands now (`fresh`: as created)."""
        progress = job.progress(fresh=fresh)
        entries, done = job.entries, progress.done
        status = _status(job, progress)
        ok = [e for e in entries[:done] if e.answer.status == 200]
        failed = done - len(ok) + (len(entries) - done if progress.end else 0)
        counted = status not in ("validating", "failed")
        output_id, error_id = self._outputs(job, progress, bool(ok), failed > 0)

        def stamp(offset: float | None, when: bool = True) -> int | None:
            return int(job.at(offset)) if when and offset is not None else None

        usage = [e.answer.body.get("usage") or {} for e in ok]
        tokens_in = sum(_int(u.get("prompt_tokens")) for u in usage)
        tokens_out = sum(_int(u.get("completion_tokens")) for u in usage)
        return {
            "id": job.id,
            "object": "batch",
            "endpoint": ENDPOINT,
            "model": job.fields["model"],
            "errors": {"object": "list", "data": job.errors} if status == "failed" else None,
            "input_file_id": job.fields["input_file_id"],
            "completion_window": "24h",
            "status": status,
            "output_file_id": output_id,
            "error_file_id": error_id,
            "created_at": int(job.wall),
            "in_progress_at": stamp(job.begin, job.reached(progress, job.begin)),
            "expires_at": stamp(job.expires),
            "finalizing_at": stamp(job.last, job.reached(progress, job.last)),
            "completed_at": stamp(progress.ended_at, status == "completed"),
            "failed_at": stamp(progress.ended_at, status == "failed"),
            "expired_at": stamp(progress.ended_at, status == "expired"),
            "cancelling_at": stamp(job.cancelled, not fresh),
            "cancelled_at": stamp(progress.ended_at, status == "cancelled"),
            "request_counts": {
                "total": len(entries) if counted else 0,
                "completed": len(ok) if counted else 0,
                "failed": failed if counted else 0,
            },
            "usage": {
                "input_tokens": tokens_in,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": tokens_out,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": tokens_in + tokens_out,
            },
            "metadata": job.fields["metadata"],
        }

    def _outputs(
        self, job: Job, progress: Progress, ok: bool, failed: bool
    ) -> tuple[str | None, str | None]:
        """The ids of the output and error files, once the job has ended and if they have
        lines; the files exist from then on."""
        if progress.end is None or progress.end == "failed" or progress.ended_at is None:
            return None, None
        ids: list[str | None] = []
        for kind, present in (("output", ok), ("error", failed)):
            file_id = job.fields[kind]
            ids.append(file_id if present else None)
            with self.store.lock:
                if present and kind not in job.fields["published"]:  # once (it may be deleted)
                    job.fields["published"].add(kind)
                    name = f"{job.id}_{kind}.jsonl"
                    created = job.at(progress.ended_at)
                    self.store.files[file_id] = File(
                        file_id, name, "batch_output", created, job=job.id, kind=kind
                    )
        return ids[0], ids[1]


def _status(job: Job, progress: Progress) -> str:
    if progress.end is not None:
        return progress.end
    if job.cancelled is not None:
        return "cancelling"
    if job.fail_at is not None or progress.elapsed < job.begin:
        return "validating"
    return "finalizing" if progress.done == len(job.entries) else "in_progress"


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0
