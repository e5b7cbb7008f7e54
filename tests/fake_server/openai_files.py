"""OpenAI's Files API (``/v1/files``), and what batches read from files and write to them."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from .api import ApiError, ChatRequest
from .batches import BatchStore, Entry, File, Refusal, bump, jsonl, limit_of, new_id, page
from .core import Core
from .settings import Settings

ENDPOINT = "/v1/chat/completions"  # the one endpoint this server batches
MAX_REQUESTS = 50_000
MAX_BYTES = 200_000_000  # an input file's
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
UNRUN = {
    "cancelled": ("batch_cancelled", "This request was cancelled before it could be executed."),
    "expired": (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
}


def batch_error(
    code: str, message: str, line: int | None = None, param: str | None = None
) -> dict[str, Any]:
    """One of a failed batch's `errors.data`."""
    return {"code": code, "message": message, "param": param, "line": line}


class OpenAIFiles:
    """The handlers: each gets the request and its API key, returns a JSON body or bytes."""

    def __init__(self, core: Core, store: BatchStore) -> None:
        self.core = core
        self.store = store

    async def upload(self, request: web.Request, key: str | None) -> Any:
        form = await request.post()
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, web.FileField):
            raise Refusal(ApiError(400, "Missing required parameter: 'file'.", param="file"))
        if purpose not in PURPOSES:
            message = f"Invalid value for 'purpose': {purpose!r}."
            raise Refusal(ApiError(400, message, param="purpose"))
        data = upload.file.read()
        if purpose == "batch" and len(data) > (self.core.settings.batch_max_bytes or MAX_BYTES):
            raise Refusal(ApiError(400, "File is too large."))
        file = File(new_id("file-"), upload.filename, str(purpose), time.time(), data)
        with self.store.lock:
            self.store.files[file.id] = file
        bump(self.core, "files_uploaded")
        return self.file_object(file)

    async def list_files(self, request: web.Request, key: str | None) -> Any:
        with self.store.lock:
            files = list(self.store.files.values())[::-1]
        after = request.query.get("after")
        chosen, more = page(files, lambda file: file.id, after, None, limit_of(request, 10_000))
        return listing([self.file_object(file) for file in chosen], more)

    async def get_file(self, request: web.Request, key: str | None) -> Any:
        return self.file_object(self._file(request))

    async def delete_file(self, request: web.Request, key: str | None) -> Any:
        file = self._file(request)
        with self.store.lock:
            self.store.files.pop(file.id, None)
        return {"id": file.id, "object": "file", "deleted": True}

    async def content(self, request: web.Request, key: str | None) -> Any:
        file = self._file(request)
        if file.job is not None:
            bump(self.core, "result_downloads")
        return self._data(file)

    def _file(self, request: web.Request) -> File:
        file_id = request.match_info["id"]
        with self.store.lock:
            file = self.store.files.get(file_id)
        if file is None:
            raise Refusal(ApiError(404, f"No such File object: {file_id}", param="id"))
        return file

    def file_object(self, file: File) -> dict[str, Any]:
        """The File object."""
        return {
            "id": file.id,
            "object": "file",
            "bytes": len(self._data(file)),
            "created_at": int(file.created),
            "filename": file.filename,
            "purpose": file.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }

    def _data(self, file: File) -> bytes:
        """An upload's bytes; an output file's successes or an error file's errors, and then
        the requests a cancel or expiry left unrun (made once: the job has ended)."""
        if file.job is None or file.data:
            return file.data
        with self.store.lock:
            job = self.store.jobs[file.job]
        progress = job.progress()
        done, end = progress.done, progress.end
        records = [_line(entry) for entry in job.entries[:done]]
        if file.kind == "output":
            file.data = jsonl([r for r in records if r["response"]["status_code"] == 200])
            return file.data
        errors = [r for r in records if r["response"]["status_code"] != 200]
        code, message = UNRUN.get(str(end), ("", ""))
        for entry in job.entries[done:]:
            failure = {"code": code, "message": message}
            errors.append(_line(entry) | {"response": None, "error": failure})
        file.data = jsonl(errors)
        return file.data


def validated(
    data: bytes, settings: Settings
) -> tuple[list[tuple[str, dict[str, Any]]], list[Any], str | None, int]:
    """An input file's requests (custom_id, body), the errors that fail its batch (each with
    its line number), the model of its requests and an estimate of their input tokens."""
    lines = [
        (number, text)
        for number, text in enumerate(data.decode(errors="replace").splitlines(), 1)
        if text.strip()
    ]
    limit = settings.batch_max_requests or MAX_REQUESTS
    if not lines:
        return [], [batch_error("empty_file", "The batch input file is empty.")], None, 0
    if len(lines) > limit:
        message = f"The batch input file has {len(lines)} requests; the limit is {limit}."
        return [], [batch_error("too_many_tasks", message)], None, 0
    requests: list[tuple[str, dict[str, Any]]] = []
    errors: list[Any] = []
    seen: set[str] = set()
    model: str | None = None
    tokens = 0
    for number, text in lines:
        try:
            line = json.loads(text)
        except ValueError:
            line = None
        if not isinstance(line, dict):
            message = "This line is not parseable as valid JSON."
            errors.append(batch_error("invalid_json_line", message, number))
            continue
        custom_id, body = line.get("custom_id"), line.get("body")
        missing = [k for k, v in (("custom_id", custom_id), ("body", body)) if not v]
        if missing or not isinstance(body, dict) or line.get("method") != "POST":
            problem = "Each line must be a POST with a JSON object body."
            if missing:
                problem = f"Missing required parameter: '{missing[0]}'."
            errors.append(batch_error("invalid_request", problem, number, (missing or [""])[0]))
            continue
        line_model = str(body.get("model"))
        if custom_id in seen:
            message = "The custom_id for this request is a duplicate of another request."
            errors.append(batch_error("duplicate_custom_id", message, number, "custom_id"))
        elif line.get("url") != ENDPOINT:
            message = "The provided URL for this request does not match the batch's endpoint."
            errors.append(batch_error("url_mismatch", message, number, "url"))
        elif settings.models is not None and line_model not in settings.models:
            message = f"The model `{line_model}` does not exist or you do not have access to it."
            errors.append(batch_error("model_not_found", message, number, "body.model"))
        elif model is not None and line_model != model:
            message = f"The model `{line_model}` differs from the batch's model `{model}`."
            errors.append(batch_error("model_mismatch", message, number, "body.model"))
        elif model is None:
            model = line_model
        seen.add(str(custom_id))
        requests.append((str(custom_id), body))
        tokens += _input_tokens(body)
    return requests, errors, model, tokens


def _input_tokens(body: dict[str, Any]) -> int:
    """The server's estimate of a request's input tokens (0 for a body it cannot read)."""
    try:
        return ChatRequest.parse(body, None).input_tokens
    except (KeyError, TypeError, ValueError, AttributeError):
        return 0


def _line(entry: Entry) -> dict[str, Any]:
    """An output (or error) file's line for a request that was answered."""
    answer = entry.answer
    response = {"status_code": answer.status, "request_id": f"req_{answer.rid}"}
    response["body"] = answer.body
    line = {"id": f"batch_req_{answer.rid}", "custom_id": entry.custom_id}
    return line | {"response": response, "error": None}


def listing(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more}
