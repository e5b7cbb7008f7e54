"""OpenAI Chat Completions, and any OpenAI-compatible server (vLLM, Ollama, LM Studio)."""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from ..clock import Clock
from ..errors import CallError, ConfigError, MissingKeyError
from ..secrets import MASK, Redactor, Secret, check_base_url, read_key
from ..streaming import Chunks
from ..types import Completion, ErrorType, OutputSchema, RateInfo, Request
from .base import (
    SDK_TIMEOUT_SLACK,
    Provider,
    SDKSession,
    check_sdk_params,
    rate_info,
    refuses,
    with_schema_instruction,
)
from .fast_http import FastPost
from .fast_stream import openai_record
from .replies import invalid, label, reply_json, text_of, usage_of
from .stream_readers import ChunkReader

ENV_KEY = "OPENAI_API_KEY"
log = logging.getLogger("notebook_kit")
LOCAL_KEY = "not-needed"  # OpenAI-compatible local servers take any key


class OpenAIProvider(Provider):
    """Chat Completions over the official SDK (aiohttp transport, SDK retries off).

    `fast=True` (the default, `fast_default`): whole replies take the lean path of
    `fast_http`, which sends the SDK's own request straight through its aiohttp session, at
    about a third of the CPU, and streamed replies too, their events read by `fast_stream`
    as the SDK reads them; `fast=False`: every request goes through the SDK's machinery.
    """

    name = "openai"
    models = ("gpt-4.1-mini", "gpt-4.1-nano", "gpt-4.1", "gpt-4o-mini", "o4-mini")
    key_source = f"{ENV_KEY} or api_key=..."
    fast_default: ClassVar[bool] = True  # fast=False: the SDK sends every request

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        default_model: str = "gpt-4.1-mini",
        fast: bool | None = None,
    ) -> None:
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        check_base_url(base_url)
        key = read_key(api_key, ENV_KEY)
        if key is None and base_url is None:
            raise MissingKeyError(
                f"provider='openai' needs an API key: set {ENV_KEY}, pass api_key=..., "
                "give base_url=... for a local OpenAI-compatible server, or use provider='demo'."
            )
        self._api_key = Secret(key or LOCAL_KEY)
        self._base_url = base_url
        self.default_model = default_model
        self.redact = Redactor(key)
        self.fast = self.fast_default if fast is None else fast

    def __repr__(self) -> str:
        return f"OpenAIProvider(base_url={self._base_url!r}, api_key={MASK!r})"

    def describe(self) -> dict[str, Any]:
        return {"base_url": self._base_url}

    def key_digest(self) -> str:
        return self._api_key.digest()

    def check_params(self, params: Mapping[str, Any]) -> None:
        from openai.resources.chat import AsyncCompletions

        check_sdk_params(params, AsyncCompletions.create, "openai")

    def check_schema(self, schema: OutputSchema) -> None:
        response_format(schema)  # raises ConfigError for what strict mode cannot take

    @asynccontextmanager
    async def session(self, *, timeout: float, clock: Clock) -> AsyncIterator[_OpenAISession]:
        import openai
        from openai.resources.chat import AsyncCompletions

        client = openai.AsyncOpenAI(
            api_key=self._api_key.reveal(),
            base_url=self._base_url,
            max_retries=0,
            timeout=timeout + SDK_TIMEOUT_SLACK,
            http_client=openai.DefaultAioHttpClient(),
        )
        try:
            fast = None
            if self.fast:
                path, create = "/chat/completions", AsyncCompletions.create
                fast = await FastPost.build(client, openai, path, create, {"bearer_auth": True})
            yield _OpenAISession(client, openai, self.redact, fast)
        finally:
            await client.close()


Send = Callable[[Request, list[dict[str, Any]], dict[str, Any]], Awaitable[Completion]]


class _OpenAISession(SDKSession):
    """Under schema=: json_schema, until a server answers 400 to it; then, for the rest of
    the run, json_object with the schema in a system line (the reply is still validated).
    Streamed: with `stream_options` asking for usage, until a server refuses it or sends
    none; then without, and tokens and cost are unknown."""

    json_object = False
    usage_option = True

    async def _call(self, request: Request) -> Completion:
        return await self._shaped(request, self._send)

    async def _stream(self, request: Request, chunks: Chunks) -> Completion:
        return await self._shaped(request, functools.partial(self._send_streamed, chunks=chunks))

    async def _shaped(self, request: Request, send: Send) -> Completion:
        schema = request.schema
        if schema is None:
            return await send(request, request.messages, request.params)
        if not self.json_object:
            strict = {**request.params, "response_format": response_format(schema)}
            try:
                return await send(request, request.messages, strict)
            except Exception as exc:
                if not refuses(exc, self._sdk, ("response_format", "json_schema")):
                    raise
                self.json_object = True  # once per run; this row is sent again below
                log.warning("the server refused json_schema: asking for json_object instead")
        loose = {**request.params, "response_format": {"type": "json_object"}}
        return await send(request, with_schema_instruction(request.messages, schema), loose)

    async def _send_streamed(
        self,
        request: Request,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        *,
        chunks: Chunks,
    ) -> Completion:
        while True:
            usage = {"stream_options": {"include_usage": True}} if self.usage_option else {}
            try:
                headers, records = await self._open(request.model, messages, {**usage, **params})
                break
            except Exception as exc:
                if not self.usage_option or not refuses(exc, self._sdk, ("stream_options",)):
                    raise
                self._no_usage("the server refused stream_options")
        request_id = label(headers.get("x-request-id"))
        reader = ChunkReader(request.model)
        try:
            async for chunk in records:
                reader.read(chunk, chunks)
        except ValueError:  # a record that is not JSON (or not UTF-8)
            raise invalid("malformed stream: a chunk is not JSON", request_id) from None
        if self.usage_option and reader.input_tokens is None:
            self._no_usage("the server sent no usage")
        return reader.completion(chunks, request_id, rate_info(headers))

    async def _open(
        self, model: str | None, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> tuple[Mapping[str, str], AsyncIterator[Any]]:
        """A streamed reply's headers and chunks, by the lean path or the SDK."""
        lean = await self._lean_stream(model, messages, params, openai_record)
        if lean is not None:
            return lean
        raw = await self._client.chat.completions.with_raw_response.create(
            model=model, messages=messages, stream=True, **params
        )
        return raw.headers, raw.parse()

    def _no_usage(self, why: str) -> None:
        """Stream without asking for usage from now on (once per run)."""
        self.usage_option = False
        log.warning("%s: streaming without it, so tokens and cost are unknown", why)

    async def _send(
        self, request: Request, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> Completion:
        reply = await self._lean(request.model, messages, params)
        if reply is None:
            raw = await self._client.chat.completions.with_raw_response.create(
                model=request.model, messages=messages, **params
            )
            reply = raw.content, raw.headers
        content, headers = reply
        request_id = label(headers.get("x-request-id"))
        body = reply_json(content, request_id, self._redact)
        return _completion(body, request, request_id, rate_info(headers))


@functools.cache
def response_format(schema: OutputSchema) -> dict[str, Any]:
    """`json_schema` in strict mode, as the SDK's own `parse()` builds it."""
    from openai.lib._pydantic import to_strict_json_schema

    try:
        strict = to_strict_json_schema(schema.adapter)
    except Exception as exc:
        raise ConfigError(f"schema={schema.name} cannot be sent to OpenAI: {exc}") from None
    free = _free_keys(strict, "")
    if free:
        raise ConfigError(
            f"schema={schema.name} cannot be sent to OpenAI: field {free!r} is a mapping with "
            "free keys, which strict mode does not take (give it a model with named fields)"
        )
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", schema.name)[:64] or "output"
    return {"type": "json_schema", "json_schema": {"name": name, "schema": strict, "strict": True}}


def _free_keys(schema: Any, path: str) -> str | None:
    """The first field whose object allows keys it does not name, or None."""
    if isinstance(schema, dict):
        extra = schema.get("additionalProperties")
        if schema.get("type") == "object" and extra not in (None, False):
            return path or "(the top level)"
        for key, value in schema.items():
            inner = path if key in ("properties", "$defs", "anyOf", "items") else key
            if key == "properties" and isinstance(value, dict):
                for name, sub in value.items():
                    found = _free_keys(sub, f"{path}.{name}".strip("."))
                    if found:
                        return found
            elif isinstance(value, dict | list):
                found = _free_keys(value, inner if key != "properties" else path)
                if found:
                    return found
    elif isinstance(schema, list):
        for item in schema:
            found = _free_keys(item, path)
            if found:
                return found
    return None


def _completion(
    body: dict[str, Any], request: Request, request_id: str | None, rate: RateInfo | None
) -> Completion:
    """The completion in a Chat Completions body (see `replies` for odd field values)."""
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or not isinstance(message, dict):
        raise invalid("malformed reply: no choices[0].message", request_id)
    finish = label(choice.get("finish_reason"))
    if finish == "content_filter":
        raise CallError(
            ErrorType.CONTENT_FILTER,
            "the provider's content filter stopped the reply",
            request_id=request_id,
        )
    text = text_of(message.get("content"))
    refusal = label(message.get("refusal"))
    if not text and refusal:
        text, finish = refusal, "refusal"
    input_tokens, output_tokens = usage_of(body, ("prompt_tokens", "completion_tokens"))
    return Completion(
        text=text,
        model=label(body.get("model")) or request.model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        finish_reason=finish,
        request_id=request_id,
        rate=rate,
    )
