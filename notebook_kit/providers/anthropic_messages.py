"""Anthropic Messages API."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from ..clock import Clock
from ..errors import MissingKeyError
from ..secrets import MASK, Redactor, Secret, check_base_url, read_key
from ..streaming import Chunks
from ..types import Completion, OutputSchema, RateInfo, Request
from .base import SDK_TIMEOUT_SLACK, Provider, SDKSession, check_sdk_params, rate_info, refuses
from .fast_http import FastPost
from .fast_stream import anthropic_record
from .replies import invalid, label, reply_json, text_of, usage_of
from .stream_readers import FINISH_REASONS, EventReader

ENV_KEY = "ANTHROPIC_API_KEY"
log = logging.getLogger("notebook_kit")
DEFAULT_MAX_TOKENS = 1024  # Anthropic requires max_tokens; this is used when none is given


class AnthropicProvider(Provider):
    """Messages over the official SDK (aiohttp transport, SDK retries off); `fast` as for
    `OpenAIProvider` (whole and streamed replies)."""

    name = "anthropic"
    models = ("claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1")
    key_source = f"{ENV_KEY} or api_key=..."
    fast_default: ClassVar[bool] = True  # fast=False: the SDK sends every request

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        default_model: str = "claude-haiku-4-5",
        fast: bool | None = None,
    ) -> None:
        key = read_key(api_key, ENV_KEY)
        if key is None:
            raise MissingKeyError(
                f"provider='anthropic' needs an API key: set {ENV_KEY}, pass api_key=..., "
                "or use provider='demo'."
            )
        self._api_key = Secret(key)
        self._base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
        check_base_url(self._base_url)
        self.default_model = default_model
        self.redact = Redactor(key)
        self.fast = self.fast_default if fast is None else fast

    def __repr__(self) -> str:
        return f"AnthropicProvider(base_url={self._base_url!r}, api_key={MASK!r})"

    def describe(self) -> dict[str, Any]:
        return {"base_url": self._base_url}

    def key_digest(self) -> str:
        return self._api_key.digest()

    def check_params(self, params: Mapping[str, Any]) -> None:
        from anthropic.resources.messages import AsyncMessages

        check_sdk_params(params, AsyncMessages.create, "anthropic", {"stop": "stop_sequences"})

    def defaults(self) -> dict[str, Any]:
        return {"max_tokens": DEFAULT_MAX_TOKENS}

    @asynccontextmanager
    async def session(self, *, timeout: float, clock: Clock) -> AsyncIterator[_AnthropicSession]:
        import anthropic
        from anthropic.resources.messages import AsyncMessages

        client = anthropic.AsyncAnthropic(
            api_key=self._api_key.reveal(),
            base_url=self._base_url,
            max_retries=0,
            timeout=timeout + SDK_TIMEOUT_SLACK,
            http_client=anthropic.DefaultAioHttpClient(),
        )
        try:
            fast = None
            if self.fast:
                fast = await FastPost.build(client, anthropic, "/v1/messages", AsyncMessages.create)
            yield _AnthropicSession(client, anthropic, self.redact, fast)
        finally:
            await client.close()


class _AnthropicSession(SDKSession):
    """Under schema=: output_config, until the model or server answers 400 to it; then, for
    the rest of the run, a forced call of a tool whose input is the schema."""

    forced_tool = False

    async def _call(self, request: Request) -> Completion:
        return await self._shaped(request, self._send)

    async def _stream(self, request: Request, chunks: Chunks) -> Completion:
        return await self._shaped(request, functools.partial(self._send_streamed, chunks=chunks))

    async def _shaped(
        self, request: Request, send: Callable[[Request, dict[str, Any]], Awaitable[Completion]]
    ) -> Completion:
        schema = request.schema
        if schema is not None and not self.forced_tool:
            try:
                return await send(request, {"output_config": {"format": output_format(schema)}})
            except Exception as exc:
                if not refuses(exc, self._sdk, ("output_config", "output_format", "json_schema")):
                    raise
                self.forced_tool = True  # once per run; this row is sent again below
                log.warning("the model refused output_config: asking for a forced tool call")
        if schema is not None:
            tool = {"name": tool_name(schema), "input_schema": schema.json_schema}
            forced = {"type": "tool", "name": tool["name"]}
            return await send(request, {"tools": [tool], "tool_choice": forced})
        return await send(request, {})

    def _params(self, request: Request, extra: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        system, messages = split_system(request.messages)
        params = {**request.params, **extra}
        if system:
            params["system"] = system
        return messages, params

    async def _send(self, request: Request, extra: dict[str, Any]) -> Completion:
        messages, params = self._params(request, extra)
        reply = None
        if not sdk_warns(request.model, params):  # a warning is the SDK's to give
            reply = await self._lean(request.model, messages, params)
        if reply is None:
            raw = await self._client.messages.with_raw_response.create(
                model=request.model, messages=messages, **params
            )
            reply = await raw.read(), raw.headers
        content, headers = reply
        request_id = label(headers.get("request-id"))
        body = reply_json(content, request_id, self._redact)
        return _completion(body, request, request_id, rate_info(headers))

    async def _send_streamed(
        self, request: Request, extra: dict[str, Any], *, chunks: Chunks
    ) -> Completion:
        messages, params = self._params(request, extra)
        headers, events = await self._open(request.model, messages, params)
        request_id = label(headers.get("request-id"))
        reader = EventReader(request.model)
        try:
            async for event in events:
                reader.read(event, chunks)
        except ValueError:  # a record that is not JSON (or not UTF-8)
            raise invalid("malformed stream: an event is not JSON", request_id) from None
        except Exception as exc:  # cut: with the tokens billed so far, when the stream said
            error = self._error(exc)
            if error is None:
                raise
            error.input_tokens, error.output_tokens = reader.input_tokens, reader.output_tokens
            raise error from None
        return reader.completion(chunks, request_id, rate_info(headers))

    async def _open(
        self, model: str | None, messages: Any, params: dict[str, Any]
    ) -> tuple[Mapping[str, str], AsyncIterator[Any]]:
        """A streamed reply's headers and events, by the lean path or the SDK."""
        if not sdk_warns(model, params):  # a warning is the SDK's to give
            lean = await self._lean_stream(model, messages, params, anthropic_record)
            if lean is not None:
                return lean
        raw = await self._client.messages.with_raw_response.create(
            model=model, messages=messages, stream=True, **params
        )
        return raw.headers, await raw.parse()


def sdk_warns(model: str | None, params: Mapping[str, Any]) -> bool:
    """Whether the SDK warns about this request: a deprecated model, or thinking on a
    model that takes another kind of it."""
    deprecated, old_thinking = _warned_models()
    return model in deprecated or ("thinking" in params and model in old_thinking)


@functools.cache
def _warned_models() -> tuple[frozenset[str], frozenset[str]]:
    from anthropic.resources.messages import messages

    names = ("DEPRECATED_MODELS", "MODELS_TO_WARN_WITH_THINKING_ENABLED")
    deprecated, old_thinking = (frozenset(getattr(messages, name, ())) for name in names)
    return deprecated, old_thinking


@functools.cache
def output_format(schema: OutputSchema) -> dict[str, Any]:
    """A json_schema output format, adapted by the SDK's own `transform_schema`."""
    import anthropic

    return {"type": "json_schema", "schema": anthropic.transform_schema(schema.json_schema)}


def tool_name(schema: OutputSchema) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", schema.name)[:64] or "answer"


def _completion(
    body: dict[str, Any], request: Request, request_id: str | None, rate: RateInfo | None
) -> Completion:
    """The completion in a Messages body (see `replies` for odd field values)."""
    content = body.get("content")
    if not isinstance(content, list | str):  # a string: some compatible servers
        raise invalid("malformed reply: no content list", request_id)
    stop = label(body.get("stop_reason"))
    input_tokens, output_tokens = usage_of(body, ("input_tokens", "output_tokens"))
    tool_input = next(
        (b.get("input") for b in content if isinstance(b, dict) and b.get("type") == "tool_use"),
        None,
    )
    if tool_input is not None and request.schema is not None:  # the forced tool's answer
        text, stop = json.dumps(tool_input), "end_turn"
    else:
        text = text_of(content)
    return Completion(
        text=text,
        model=label(body.get("model")) or request.model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        finish_reason=FINISH_REASONS.get(stop, stop) if stop else None,
        request_id=request_id,
        rate=rate,
    )


def split_system(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Anthropic takes the system prompt apart from the chat turns."""
    system = "\n\n".join(str(m["content"]) for m in messages if m.get("role") == "system")
    return system, [m for m in messages if m.get("role") != "system"]
