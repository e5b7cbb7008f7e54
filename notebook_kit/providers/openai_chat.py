"""OpenAI Chat Completions, and any OpenAI-compatible server (vLLM, Ollama, LM Studio)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ..clock import Clock
from ..errors import CallError, MissingKeyError
from ..secrets import MASK, Redactor, check_base_url, safe_url
from ..types import Completion, ErrorType, Request
from .base import SDK_TIMEOUT_SLACK, Provider, SDKSession, rate_info

ENV_KEY = "OPENAI_API_KEY"
LOCAL_KEY = "not-needed"  # OpenAI-compatible local servers take any key


class OpenAIProvider(Provider):
    """Chat Completions over the official SDK (aiohttp transport, SDK retries off)."""

    name = "openai"
    models = ("gpt-4.1-mini", "gpt-4.1-nano", "gpt-4.1", "gpt-4o-mini", "o4-mini")
    key_source = f"{ENV_KEY} or api_key=..."

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        default_model: str = "gpt-4.1-mini",
    ) -> None:
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        check_base_url(base_url)
        key = api_key or os.environ.get(ENV_KEY) or None
        if key is None and base_url is None:
            raise MissingKeyError(
                f"provider='openai' needs an API key: set {ENV_KEY}, pass api_key=..., "
                "give base_url=... for a local OpenAI-compatible server, or use provider='demo'."
            )
        self._api_key = key or LOCAL_KEY
        self._base_url = base_url
        self.default_model = default_model
        self.redact = Redactor(key)

    def __repr__(self) -> str:
        return f"OpenAIProvider(base_url={safe_url(self._base_url)!r}, api_key={MASK!r})"

    def describe(self) -> dict[str, Any]:
        return {"base_url": safe_url(self._base_url)}

    @asynccontextmanager
    async def session(self, *, timeout: float, clock: Clock) -> AsyncIterator[_OpenAISession]:
        import openai

        client = openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self._base_url,
            max_retries=0,
            timeout=timeout + SDK_TIMEOUT_SLACK,
            http_client=openai.DefaultAioHttpClient(),
        )
        try:
            yield _OpenAISession(client, openai, self.redact)
        finally:
            await client.close()


class _OpenAISession(SDKSession):
    async def _call(self, request: Request) -> Completion:
        raw = await self._client.chat.completions.with_raw_response.create(
            model=request.model, messages=request.messages, **request.params
        )
        completion = _completion(raw.parse(), raw.headers.get("x-request-id"), request.model)
        return dataclasses.replace(completion, rate=rate_info(raw.headers))


def _completion(reply: Any, request_id: str | None, model: str | None) -> Completion:
    if not reply.choices:
        raise CallError(
            ErrorType.INVALID_RESPONSE, "the reply has no choices", request_id=request_id
        )
    choice = reply.choices[0]
    message = choice.message
    finish = choice.finish_reason
    if finish == "content_filter":
        raise CallError(
            ErrorType.CONTENT_FILTER,
            "the provider's content filter stopped the reply",
            request_id=request_id,
        )
    text = message.content
    if text is None and getattr(message, "refusal", None):
        text, finish = message.refusal, "refusal"
    usage = reply.usage
    return Completion(
        text=text or "",
        model=reply.model or model,
        input_tokens=usage.prompt_tokens if usage else None,
        output_tokens=usage.completion_tokens if usage else None,
        finish_reason=finish,
        request_id=request_id,
    )
