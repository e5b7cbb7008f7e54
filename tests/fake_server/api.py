"""The seam between the server and one API's wire format.

Each API the server speaks is an `Api` subclass in its own module, listed in
``server.APIS``: its route, its request-id header, and how it renders success
bodies, error bodies, streams (server-sent events) and rate-limit headers. The
server does everything else (directives, limits, faults, latency, pacing, stats)
the same way for every API.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web

from .settings import DIRECTIVE, Directive, Finish


@dataclass(frozen=True)
class ChatRequest:
    """The parts of a chat request the server uses (either API's body shape)."""

    model: str
    prompt: str  # text of the last user message
    system: str  # the system prompt: OpenAI's system messages, Anthropic's `system` field
    input_tokens: int
    max_tokens: int | None
    api_key: str | None
    schema: dict[str, Any] | None = None  # the JSON schema the reply must fit
    form: str | None = None  # how it was asked: json_schema, json_object (schema in a
    # system line) or tool (Anthropic's forced tool call)
    tool: str | None = None  # the forced tool's name
    last: str = ""  # the last user message (under a schema, `prompt` is the first: the row's)
    stream: bool = False  # the body's "stream" is true: the reply goes out as server-sent events
    stream_options: dict[str, Any] | None = None  # OpenAI's, when the body has them

    @property
    def include_usage(self) -> bool:
        """OpenAI: the client asked for a last chunk with the usage."""
        return bool((self.stream_options or {}).get("include_usage"))

    @classmethod
    def parse(cls, body: dict[str, Any], api_key: str | None) -> ChatRequest:
        """Read a request body."""
        messages = [m for m in body["messages"] if isinstance(m, dict)]
        texts = [_text(m.get("content")) for m in messages] + [_text(body.get("system"))]
        prompts = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
        systems = [_text(m.get("content")) for m in messages if m.get("role") == "system"]
        if "system" in body:
            systems.append(_text(body["system"]))
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        form, schema, tool = _schema_of(body, "\n".join(systems))
        stream_options = body.get("stream_options")
        return cls(
            model=str(body.get("model", "")),
            prompt=(prompts[0] if schema is not None else prompts[-1]) if prompts else "",
            schema=schema,
            form=form,
            tool=tool,
            last=prompts[-1] if prompts else "",
            system="\n\n".join(systems),
            input_tokens=max(1, sum(map(len, texts)) // 4),
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            api_key=api_key,
            stream=body.get("stream") is True,
            stream_options=stream_options if isinstance(stream_options, dict) else None,
        )


@dataclass(frozen=True)
class Reply:
    """What the fake model answers, before an API renders it."""

    text: str
    output_tokens: int  # one per word
    finish: Finish

    @classmethod
    def to(cls, chat: ChatRequest, directive: Directive | None, attempt: int = 1) -> Reply:
        """The reply to `chat`, as far as its directive and max_tokens allow."""
        if chat.schema is not None:
            output = directive.output_for(attempt) if directive is not None else None
            if output == "refusal":
                return cls("I can't help with that request.", 7, "refusal")
            value = {} if output == "invalid_json" else fitting(chat.schema, chat.schema)
            text = json.dumps(value)
            if directive is not None and directive.finish == "length":  # cut mid-object
                return cls(text[: len(text) // 2], max(1, len(text) // 8), "length")
            return cls(text, max(1, len(text) // 4), "stop")
        words = f"Reply to: {DIRECTIVE.sub('', chat.prompt).strip()[:60]}".split()
        tokens = len(words)
        finish: Finish = "stop"
        if directive is not None:
            tokens = directive.tokens if directive.tokens is not None else tokens
            finish = directive.finish or finish
        if chat.max_tokens is not None and chat.max_tokens < tokens:
            tokens, finish = chat.max_tokens, "length"
        words = (words + ["more"] * tokens)[:tokens]
        return cls(" ".join(words), tokens, finish)


SCHEMA_LINE = "JSON schema: "  # how a client puts a schema in a system line (json_object)


def _schema_of(body: dict[str, Any], system: str) -> tuple[str | None, Any, str | None]:
    """How a request asks the reply to fit a JSON schema, the schema, and a forced tool's
    name: OpenAI's response_format (json_schema, or json_object with the schema in a system
    line), Anthropic's output_config format, or a forced tool call."""
    formats = [body.get("response_format"), (body.get("output_config") or {}).get("format")]
    for spec in formats:
        if isinstance(spec, dict) and spec.get("type") == "json_schema":
            schema = (spec.get("json_schema") or {}).get("schema", spec.get("schema"))
            return "json_schema", schema, None
        if isinstance(spec, dict) and spec.get("type") == "json_object" and SCHEMA_LINE in system:
            return "json_object", json.loads(system.split(SCHEMA_LINE, 1)[1]), None
    choice, tools = body.get("tool_choice"), body.get("tools")
    if isinstance(choice, dict) and choice.get("type") == "tool" and isinstance(tools, list):
        tool = next((t for t in tools if t.get("name") == choice.get("name")), None)
        if tool is not None:
            return "tool", tool.get("input_schema"), str(tool["name"])
    return None, None, None


def fitting(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """The plainest value that fits `schema`: first enum choice, lowest number, "text"."""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return fitting(root.get("$defs", {}).get(name, {}), root)
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return fitting(options[0], root) if options else None
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {k: fitting(s, root) for k, s in schema.get("properties", {}).items()}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return False
    formats = {"date-time": "2026-01-01T00:00:00Z", "date": "2026-01-01"}
    return formats.get(str(schema.get("format")), "text")


@dataclass(frozen=True)
class ApiError:
    """An error answer, before an API renders it."""

    status: int
    message: str
    code: str | None = None
    openai_type: str | None = None  # OpenAI's free-form error type; other APIs derive theirs
    retry_after: float | None = None
    retry_headers: dict[str, str] | None = None  # sent verbatim instead of retry_after's
    param: str | None = None  # OpenAI's "param": the request field at fault


@dataclass(frozen=True)
class Answer:
    """A batched request's answer: its number (for ids), HTTP status and JSON body."""

    rid: int
    status: int
    body: dict[str, Any]


class Api(ABC):
    """One API the server speaks."""

    path: ClassVar[str]  # the POST route
    format_refusal: ClassVar[str] = "json_schema is not supported"  # an old server's 400
    request_id_header: ClassVar[str]  # carries "req_<n>" on every answer
    stream_failure: ClassVar[ApiError]  # the error a [[stream_error_after=N]] sends in-stream

    @abstractmethod
    def success_body(
        self, rid: int, chat: ChatRequest, reply: Reply, *, usage: bool
    ) -> dict[str, Any]:
        """The JSON body of a successful answer (with token usage if `usage`)."""

    @abstractmethod
    def error_body(self, error: ApiError) -> dict[str, Any]:
        """The JSON body of an error answer."""

    @abstractmethod
    def stream_body(self, rid: int, chat: ChatRequest, reply: Reply, *, usage: bool) -> Events:
        """The server-sent events of a streamed success (with token usage if `usage`)."""

    @abstractmethod
    def stream_error(self, error: ApiError) -> bytes:
        """The server-sent event that reports an error in the middle of a stream."""

    def refused_option(self, chat: ChatRequest) -> ApiError | None:
        """The 400 of a server that does not know OpenAI's stream_options (the setting
        stream_options_refused), if `chat` carries an option this API has."""
        return None

    @abstractmethod
    def quota_error(self) -> ApiError:
        """The answer when the account is out of credit."""

    @abstractmethod
    def rate_limit_headers(
        self, kind: str, limit: int, remaining: int, reset: float
    ) -> dict[str, str]:
        """Headers for one rate limit: `kind` is "requests" or "tokens", `limit` per
        minute, `remaining` in the current window, `reset` seconds until it is empty."""


@dataclass(frozen=True)
class Events:
    """A streamed reply as server-sent event records: `content` holds one record per
    piece of the reply (see `pieces`); the rest go before and after them."""

    opening: list[bytes]
    content: list[bytes]
    closing: list[bytes]


def sse(data: object, event: str | None = None) -> bytes:
    """One server-sent event record: an optional ``event:`` line, a ``data:`` line (JSON,
    or a str sent as is) and the blank line that ends the record."""
    text = data if isinstance(data, str) else json.dumps(data)
    head = "" if event is None else f"event: {event}\n"
    return f"{head}data: {text}\n\n".encode()


PIECE = re.compile(r"(?<=\S)(?=\s)")  # before each run of whitespace that follows a word


def pieces(text: str) -> list[str]:
    """`text` in streamed pieces, one per word with the whitespace before it kept:
    "Reply to: hi" gives ["Reply", " to:", " hi"]; joined they give `text` back."""
    return [piece for piece in PIECE.split(text) if piece]


def api_key(request: web.Request) -> str | None:
    """The x-api-key header, else the Authorization bearer token (either SDK may send it)."""
    if "x-api-key" in request.headers:
        return request.headers["x-api-key"]
    auth = request.headers.get("Authorization")
    return None if auth is None else auth.removeprefix("Bearer ")


def seconds(value: float) -> str:
    """Seconds with at most millisecond precision: "1.5", "2", "0.125"."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def milliseconds(value: float) -> int:
    """Seconds as whole milliseconds, rounded up (float noise ignored)."""
    return math.ceil(round(value * 1000, 6))


def merge_patch(target: object, patch: object) -> Any:
    """`target` with a JSON merge patch (RFC 7396) applied: objects merge, null removes."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _text(content: object) -> str:
    """The text of message content: a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text") for part in content if isinstance(part, dict)]
        return "\n".join(part for part in parts if isinstance(part, str))
    return ""
