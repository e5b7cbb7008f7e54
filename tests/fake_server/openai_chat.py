"""OpenAI Chat Completions: ``POST /v1/chat/completions``."""

from __future__ import annotations

import time
from typing import Any

from .api import Api, ApiError, ChatRequest, Events, Reply, milliseconds, pieces, seconds, sse


class OpenAIChat(Api):
    """Bodies, errors and ``x-ratelimit-*`` headers as OpenAI sends them."""

    path = "/v1/chat/completions"
    format_refusal = "response_format of type json_schema is not supported by this model"
    request_id_header = "x-request-id"
    stream_failure = ApiError(
        500, "The server had an error while processing your request. Sorry about that!"
    )

    def success_body(
        self, rid: int, chat: ChatRequest, reply: Reply, *, usage: bool
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text}
        finish = reply.finish
        if finish == "refusal":  # OpenAI's refusal: no content, the reason apart, a plain stop
            message = {"role": "assistant", "content": None, "refusal": reply.text}
            finish = "stop"
        body: dict[str, Any] = {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": chat.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        }
        if usage:
            body["usage"] = {
                "prompt_tokens": chat.input_tokens,
                "completion_tokens": reply.output_tokens,
                "total_tokens": chat.input_tokens + reply.output_tokens,
            }
        return body

    def error_body(self, error: ApiError) -> dict[str, Any]:
        default = "server_error" if error.status >= 500 else "invalid_request_error"
        return {
            "error": {
                "message": error.message,
                "type": error.openai_type or default,
                "param": error.param,
                "code": error.code,
            }
        }

    def stream_body(self, rid: int, chat: ChatRequest, reply: Reply, *, usage: bool) -> Events:
        """``chat.completion.chunk`` records: the role, one per piece of the content (or of
        the refusal), the finish reason, the usage (only if asked for with
        ``stream_options.include_usage``, and then every chunk has ``"usage": null``), and
        ``[DONE]``."""
        with_usage = usage and chat.include_usage
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            body: dict[str, Any] = {
                "id": f"chatcmpl-{rid}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": chat.model,
                "choices": choices,
            }
            if with_usage:
                body["usage"] = None
            return sse(body | extra)

        def delta(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return chunk([{"index": 0, "delta": delta, "finish_reason": finish}])

        field = "content"
        first: dict[str, Any] = {"role": "assistant", "content": ""}
        finish = reply.finish
        if finish == "refusal":  # as in success_body: no content, the reason apart
            field, first = "refusal", {"role": "assistant", "content": None, "refusal": ""}
            finish = "stop"
        closing = [delta({}, finish)]
        if with_usage:
            totals = {
                "prompt_tokens": chat.input_tokens,
                "completion_tokens": reply.output_tokens,
                "total_tokens": chat.input_tokens + reply.output_tokens,
            }
            closing.append(chunk([], usage=totals))
        content = [delta({field: piece}) for piece in pieces(reply.text)]
        return Events([delta(first)], content, [*closing, sse("[DONE]")])

    def stream_error(self, error: ApiError) -> bytes:
        """A ``data:`` record whose JSON has an ``error`` key: what the SDK raises on."""
        return sse(self.error_body(error))

    def refused_option(self, chat: ChatRequest) -> ApiError | None:
        if chat.stream_options is None:
            return None
        message = "Unrecognized request argument supplied: stream_options"
        return ApiError(400, message, param="stream_options")

    def quota_error(self) -> ApiError:
        message = "You exceeded your current quota, please check your plan and billing details."
        return ApiError(429, message, "insufficient_quota", "insufficient_quota")

    def rate_limit_headers(
        self, kind: str, limit: int, remaining: int, reset: float
    ) -> dict[str, str]:
        return {
            f"x-ratelimit-limit-{kind}": str(limit),
            f"x-ratelimit-remaining-{kind}": str(remaining),
            f"x-ratelimit-reset-{kind}": _go_duration(reset),
        }


def _go_duration(value: float) -> str:
    """A duration as OpenAI's reset headers write it: "20ms", "1.5s", "6m0s"."""
    ms = milliseconds(value)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    minutes, ms = divmod(ms, 60_000)
    rest = f"{seconds(ms / 1000)}s"
    return f"{minutes}m{rest}" if minutes else rest
