"""OpenAI Chat Completions: ``POST /v1/chat/completions``."""

from __future__ import annotations

import time
from typing import Any

from .api import Api, ApiError, ChatRequest, Reply, milliseconds, seconds


class OpenAIChat(Api):
    """Bodies, errors and ``x-ratelimit-*`` headers as OpenAI sends them."""

    path = "/v1/chat/completions"
    format_refusal = "response_format of type json_schema is not supported by this model"
    request_id_header = "x-request-id"

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
                "param": None,
                "code": error.code,
            }
        }

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
