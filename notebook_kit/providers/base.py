"""What every provider offers the engine, and what the SDK-backed ones share: the check of
model parameters, rate-limit headers, and SDK errors turned into `CallError`s."""

from __future__ import annotations

import importlib.metadata
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Protocol

from ..clock import Clock
from ..errors import CallError, ConfigError
from ..secrets import Redactor
from ..streaming import Chunks
from ..types import Completion, ErrorType, OutputSchema, Request
from .fast_http import Exotic, FastPost
from .fast_stream import Rule, records
from .replies import ReplyHeaders
from .signatures import keyword_params
from .status import (
    ErrorBody,
    rate_info as rate_info,  # where the providers found it first
    status_error,
)

SDK_TIMEOUT_SLACK = 30.0  # the SDK's own timeout is only a backstop behind the kit's deadline


class Session(Protocol):
    """A provider's client for one run (its connections are reused across rows)."""

    async def complete(self, request: Request) -> Completion:
        """Send one request; raise `CallError` on failure."""
        ...

    async def stream(self, request: Request, chunks: Chunks) -> Completion:
        """Send one request and read its reply as it is written, each piece to `chunks`;
        raise `CallError` on failure (with the tokens billed so far, when known)."""
        ...


class Provider(ABC):
    """One LLM service: its settings and credentials. Opens a `Session` per run."""

    name: ClassVar[str]
    key_source: ClassVar[str] = "api_key=..."  # where the key comes from, for error advice
    models: ClassVar[tuple[str, ...]] = ()  # suggestions for the panel's model menu
    default_model: str
    redact: Redactor = Redactor()

    @abstractmethod
    def session(self, *, timeout: float, clock: Clock) -> AbstractAsyncContextManager[Session]:
        """Open a client bound to the running loop; close it when the run ends."""

    def describe(self) -> dict[str, Any]:
        """The provider's settings for the result's attrs (never a key)."""
        return {}

    def endpoint(self, model: str) -> tuple[str, ...]:
        """Where requests for `model` go, and on whose key (a digest, never the key): a
        pipeline's steps on one endpoint share its rpm and tpm."""
        settings = json.dumps(self.describe(), sort_keys=True, default=repr)
        return (self.name, settings, model, self.key_digest())

    def key_digest(self) -> str:
        """Tells keys apart without revealing them (this default: a provider without keys)."""
        return ""

    def advice(self, kind: ErrorType) -> str:
        """What to do after a reply that stops the run (bad key, no credit, unknown model)."""
        return {
            ErrorType.AUTH: f"check the API key ({self.key_source}) and that it may use this model",
            ErrorType.QUOTA: "add credit or raise the spending limit, then retry_failed(result)",
            ErrorType.NOT_FOUND: "check model=... (and base_url=... for a compatible server)",
        }.get(kind, "see the error above")

    def defaults(self) -> dict[str, Any]:
        """Model parameters the provider needs when the user gives none."""
        return {}

    def check_schema(self, schema: OutputSchema) -> None:
        """Raise `ConfigError` for a schema this provider cannot send (checked before
        anything is sent). This default takes any schema."""
        return None

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raise `ConfigError` for a model parameter this provider cannot send (checked
        before anything is sent). This default takes any parameter."""
        return None


# Parameters of an SDK's create() that the kit sets itself, and where the user sets them.
KIT_PARAMS = {
    "model": "use model=... (or model_col=...)",
    "messages": "the messages come from the frame (template=..., messages_col=...)",
    "system": "use system=... (or system_col=...)",
    "stream": "use stream=True on the run (run_df(..., stream=True))",
    "timeout": "use timeout=... (seconds per attempt)",
}


def check_sdk_params(
    params: Mapping[str, Any],
    create: Callable[..., Any],
    sdk: str,
    renamed: Mapping[str, str] | None = None,
) -> None:
    """`ConfigError` for a parameter the kit sets itself or the installed `sdk`'s `create`
    does not take (it would fail every row with a TypeError); `renamed`: the SDK's name
    for a parameter it calls differently."""
    accepted = keyword_params(create)
    for name in params:
        if name in KIT_PARAMS:
            raise ConfigError(f"{name}=... is set by notebook_kit: {KIT_PARAMS[name]}")
        if accepted is None or name in accepted:
            continue
        unknown = f"{name}=... is not a parameter of the installed {sdk} SDK"
        if renamed and name in renamed:
            raise ConfigError(f"{unknown}: it is called {renamed[name]}=...")
        raise ConfigError(
            f"{unknown} ({importlib.metadata.version(sdk)}); for a server that still accepts "
            f"it, pass extra_body={{{name!r}: ...}}"
        )


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and the errors under it, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def transport_error(exc: BaseException, redact: Redactor) -> CallError:
    """A request that got no HTTP reply: a timeout only if a real one is under the SDK's
    error. Both SDKs' APITimeoutError subclasses APIConnectionError, and openai's aiohttp
    transport reports a refused connection, a failed DNS lookup or a closed socket as a
    connect *timeout*: the type of the SDK's error cannot tell them apart."""
    chain = _causes(exc)
    if any(isinstance(error, TimeoutError) for error in chain):
        return CallError(ErrorType.TIMEOUT, "the server did not answer in time")
    wrappers = ("openai", "anthropic", "httpx", "httpcore")
    cause = next((e for e in chain[1:] if not type(e).__module__.startswith(wrappers)), None)
    cause = cause or chain[-1]
    detail = f"{type(cause).__name__}: {cause}" if cause is not exc else str(exc)
    detail = " ".join(detail.split())  # masked before it is cut: no piece of a key is left
    return CallError(ErrorType.CONNECTION, f"connection failed ({redact(detail)[:200]})")


TRANSPORTS = ("httpx", "httpx2", "httpcore", "h11", "aiohttp", "httpx_aiohttp")


def is_transport(exc: Exception) -> bool:
    """An HTTP library's error reaching us unwrapped: a stream cut while being read."""
    return type(exc).__module__.split(".")[0] in TRANSPORTS


def stream_error(body: object, redact: Redactor) -> CallError:
    """An error event inside a 200 stream: the server gave up mid-reply (overloaded, a
    server error), so the request is worth sending again; a rate limit is a 429."""
    error = ErrorBody.read(body)
    tags = {tag.lower() for tag in (error.type, error.code) if tag}
    kind = ErrorType.RATE_LIMIT if any("rate_limit" in t for t in tags) else ErrorType.SERVER
    summary = redact(error.summary(200, "no message"))
    return CallError(kind, f"the stream stopped with an error: {summary}"[:300])


SCHEMA_INSTRUCTION = "Answer with one JSON object that fits this JSON schema: "


def with_schema_instruction(
    messages: list[dict[str, Any]], schema: OutputSchema
) -> list[dict[str, Any]]:
    """`messages` with a system line giving the schema, for a server that takes no schema
    itself (the reply is validated all the same)."""
    line = {"role": "system", "content": SCHEMA_INSTRUCTION + json.dumps(schema.json_schema)}
    return [line, *messages]


def refuses(exc: Exception, sdk: Any, words: tuple[str, ...]) -> bool:
    """Whether `exc` is a 400 whose text names one of `words` (a server refusing a
    parameter it does not know)."""
    if not isinstance(exc, sdk.BadRequestError):
        return False
    text = f"{exc.message} {exc.body}".lower()
    return any(word in text for word in words)


class SDKSession(ABC):
    """A run's client of an official SDK (openai, anthropic: same error classes).

    Subclasses send one request and read the reply; SDK errors become `CallError`s here.
    With `fast`, whole and streamed replies take the lean path (`fast_http`, `fast_stream`)
    where it applies.
    """

    def __init__(
        self, client: Any, sdk: Any, redact: Redactor, fast: FastPost | None = None
    ) -> None:
        self._client = client
        self._sdk = sdk  # the SDK module, imported once per run rather than per call
        self._redact = redact
        self._fast = fast

    async def _lean(
        self, model: str | None, messages: Any, params: Mapping[str, Any]
    ) -> tuple[bytes, Mapping[str, str]] | None:
        """The reply's bytes and headers by the lean path; None: send it with the SDK."""
        fast = self._fast
        if fast is None or not fast.takes(params):
            return None
        try:
            return await fast.post({"model": model, "messages": messages, **params})
        except Exotic:
            return None

    async def _lean_stream(
        self, model: str | None, messages: Any, params: Mapping[str, Any], rule: Rule
    ) -> tuple[Mapping[str, str], AsyncIterator[Any]] | None:
        """A streamed reply's headers and records (by the SDK's `rule`) by the lean path;
        None: send it with the SDK."""
        fast = self._fast
        if fast is None or not fast.takes(params):
            return None
        try:
            body = {"model": model, "messages": messages, **params, "stream": True}
            reply = await fast.open(body)
        except Exotic:
            return None
        return ReplyHeaders(reply.headers), records(fast, reply, rule)

    @abstractmethod
    async def _call(self, request: Request) -> Completion:
        """Send `request` with the SDK and build the completion from its reply."""

    @abstractmethod
    async def _stream(self, request: Request, chunks: Chunks) -> Completion:
        """Send `request` streamed, each piece of content to `chunks`."""

    async def complete(self, request: Request) -> Completion:
        try:
            return await self._call(request)
        except Exception as exc:
            error = self._error(exc)
            if error is None:
                raise
        raise error  # outside `except`: no chained SDK exception (it holds the request headers)

    async def stream(self, request: Request, chunks: Chunks) -> Completion:
        try:
            return await self._stream(request, chunks)
        except Exception as exc:
            error = self._error(exc)
            if error is None:
                raise
        raise error

    def _error(self, exc: Exception) -> CallError | None:
        return sdk_error(exc, self._sdk, self._redact)


def sdk_error(exc: Exception, sdk: Any, redact: Redactor) -> CallError | None:
    """The `CallError` an exception of an official SDK (openai, anthropic: same error
    classes) or of its HTTP library means; None for any other exception."""
    if isinstance(exc, CallError):
        return exc
    if isinstance(exc, sdk.APIStatusError) and exc.status_code < 400:  # an error event
        return stream_error(exc.body, redact)
    if isinstance(exc, sdk.APIStatusError):
        return status_error(
            exc.status_code,
            exc.body,
            headers=exc.response.headers,
            request_id=exc.request_id,
            redact=redact,
        )
    if isinstance(exc, sdk.APIConnectionError) or is_transport(exc):  # timeouts too
        return transport_error(exc, redact)
    if isinstance(exc, sdk.APIError):  # openai: an error record inside a stream
        return stream_error(exc.body, redact)
    if isinstance(exc, UnicodeEncodeError):
        return CallError(ErrorType.INVALID_INPUT, "the prompt holds text that is not UTF-8")
    return None
