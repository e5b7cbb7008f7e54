"""Anthropic Messages: ``POST /v1/messages``."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from .api import Api, ApiError, ChatRequest, Events, Reply, pieces, sse
from .settings import Finish

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
STOP_REASONS: dict[Finish, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "content_filter": "refusal",
    "refusal": "refusal",
}


class AnthropicMessages(Api):
    """Bodies, errors and ``anthropic-ratelimit-*`` headers as Anthropic sends them."""

    path = "/v1/messages"
    format_refusal = "output_config: Extra inputs are not permitted"
    request_id_header = "request-id"
    stream_failure = ApiError(529, "Overloaded")

    def success_body(
        self, rid: int, chat: ChatRequest, reply: Reply, *, usage: bool
    ) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}]
        stop = STOP_REASONS[reply.finish]
        if chat.form == "tool" and reply.finish != "refusal":  # the forced tool's call
            try:
                given = json.loads(reply.text)
            except ValueError:
                given = {}  # cut mid-object: the tool gets what could be read
            content = [
                {"type": "tool_use", "id": f"toolu_{rid}", "name": chat.tool, "input": given}
            ]
            stop = "tool_use"
        body: dict[str, Any] = {
            "id": f"msg_{rid}",
            "type": "message",
            "role": "assistant",
            "model": chat.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
        }
        if usage:
            body["usage"] = {
                "input_tokens": chat.input_tokens,
                "output_tokens": reply.output_tokens,
            }
        return body

    def stream_body(self, rid: int, chat: ChatRequest, reply: Reply, *, usage: bool) -> Events:
        """``message_start``, ``content_block_start``, ``ping``, one ``content_block_delta``
        per piece (``text_delta``, or ``input_json_delta`` for a forced tool's call),
        ``content_block_stop``, ``message_delta`` (stop reason, output tokens) and
        ``message_stop``. Without `usage`, message_start reports 0 tokens in and out; the
        message_delta keeps the output tokens (the SDK reads them from every one)."""
        final = self.success_body(rid, chat, reply, usage=False)
        message = final | {"content": [], "stop_reason": None, "stop_sequence": None}
        message["usage"] = {"input_tokens": chat.input_tokens, "output_tokens": 1}
        if not usage:
            message["usage"] = {"input_tokens": 0, "output_tokens": 0}
        block = dict(final["content"][0])
        if block["type"] == "tool_use":
            block["input"] = {}
            kind, key = "input_json_delta", "partial_json"
        else:
            block["text"] = ""
            kind, key = "text_delta", "text"

        def event(name: str, **data: Any) -> bytes:
            return sse({"type": name} | data, event=name)

        opening = [
            event("message_start", message=message),
            event("content_block_start", index=0, content_block=block),
            event("ping"),
        ]
        content = [
            event("content_block_delta", index=0, delta={"type": kind, key: piece})
            for piece in pieces(reply.text)
        ]
        closing = [
            event("content_block_stop", index=0),
            event(
                "message_delta",
                delta={"stop_reason": final["stop_reason"], "stop_sequence": None},
                usage={"output_tokens": reply.output_tokens},
            ),
            event("message_stop"),
        ]
        return Events(opening, content, closing)

    def stream_error(self, error: ApiError) -> bytes:
        """An ``error`` event, as Anthropic sends when it is overloaded mid-stream."""
        return sse(self.error_body(error), event="error")

    def error_body(self, error: ApiError) -> dict[str, Any]:
        default = "api_error" if error.status >= 500 else "invalid_request_error"
        error_type = ERROR_TYPES.get(error.status, default)
        return {"type": "error", "error": {"type": error_type, "message": error.message}}

    def quota_error(self) -> ApiError:
        return ApiError(400, "Your credit balance is too low to access the Anthropic API.")

    def rate_limit_headers(
        self, kind: str, limit: int, remaining: int, reset: float
    ) -> dict[str, str]:
        return {
            f"anthropic-ratelimit-{kind}-limit": str(limit),
            f"anthropic-ratelimit-{kind}-remaining": str(remaining),
            f"anthropic-ratelimit-{kind}-reset": rfc3339(time.time() + reset),
        }


def rfc3339(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
