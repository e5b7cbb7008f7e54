"""The values that flow through a run: requests in, completions and row results out."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

MESSAGE_OVERHEAD = 8  # tokens a message's role and separators may take, at most
REQUEST_OVERHEAD = 16  # tokens a request's framing may take, at most
# tokens a schema's framing may take: Anthropic adds a system prompt of ~350 tokens for tool
# use, and the fallbacks add a system line with the schema or a tool's name and description
SCHEMA_OVERHEAD = 400


class RowStatus(StrEnum):
    """What finally happened to one row (the `status` column)."""

    OK = "ok"  # the model answered; the reply is in the output column
    ERROR = "error"  # every allowed attempt failed, or the failure was not worth retrying
    CANCELLED = "cancelled"  # never finished: Stop, interrupt, or the run was aborted
    SKIPPED = "skipped"  # nothing to send: the prompt was empty or missing
    PENDING = "pending"  # not finished yet; only seen in a live partial frame


class ErrorType(StrEnum):
    """Why a row failed (the `error_type` column)."""

    RATE_LIMIT = "rate_limit"  # 429 from the server or the demo model
    TIMEOUT = "timeout"  # no complete reply within the per-attempt timeout
    SERVER = "server"  # 5xx, 529 overloaded, 409 conflict
    CONNECTION = "connection"  # reset, refused, DNS: nothing usable came back
    INVALID_RESPONSE = "invalid_response"  # a reply that is not valid JSON / not the expected shape
    AUTH = "auth"  # 401/403: the key is wrong or lacks access
    QUOTA = "quota"  # out of credit: a 429 that no wait will fix
    NOT_FOUND = "not_found"  # 404: unknown model or wrong base_url
    BAD_REQUEST = "bad_request"  # 400/422: the server refused this row's request
    CONTENT_FILTER = "content_filter"  # the provider's safety system refused the prompt
    INVALID_OUTPUT = "invalid_output"  # the reply never fit the schema (re-asks included)
    REFUSAL = "refusal"  # under schema=, the model refused to answer
    INVALID_INPUT = "invalid_input"  # the row cannot be sent (e.g. text that is not valid UTF-8)
    FUNCTION_ERROR = "function_error"  # a pipeline step's function (fn=, when=) raised
    CANCELLED = "cancelled"  # the row was cancelled before it finished
    EXPIRED = "expired"  # a provider's batch job ended (24 h) before it answered the row
    UNEXPECTED = "unexpected"  # an error the kit does not know; the message says which


class OutputSchema(Protocol):
    """What the engine and the providers need of `structured.Schema` (schema=)."""

    name: str
    fingerprint: str  # part of the cache key
    retries: int  # re-asks after a reply that does not fit
    json_schema: dict[str, Any]
    json_bytes: int  # the size of the JSON schema sent with every request, in UTF-8 bytes
    adapter: Any  # the pydantic TypeAdapter of the user's type

    def __hash__(self) -> int: ...  # providers cache what they build from it

    def parse(self, text: str) -> tuple[Any, str | None]: ...

    def reask(self, request: Request, text: str, problem: str) -> Request: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One row's call: its position in the input frame and what to send.

    `model` is None when the row has no model of its own: the run's current model is used
    when the request starts (so a model chosen mid-run applies to rows not yet started).
    """

    key: int
    messages: list[dict[str, Any]]
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    schema: OutputSchema | None = None  # the reply must be JSON that fits it

    def estimated_tokens(self) -> int:
        """Rough input-token estimate (about 4 characters per token) for rate limiting."""
        chars = sum(len(str(m.get("content", ""))) for m in self.messages)
        chars += self.schema.json_bytes if self.schema is not None else 0
        return max(1, chars // 4 + 4 * len(self.messages))

    def max_input_tokens(self) -> int:
        """A ceiling on the input tokens for every script: a byte-level tokenizer never makes
        more tokens than UTF-8 bytes (CJK, emoji and code included), plus a generous
        allowance per message for roles and formatting. Under schema= the JSON schema is sent
        too (as a response format, a tool or a system line), with its own allowance."""
        text = sum(len(str(m.get("content", "")).encode("utf-8", "replace")) for m in self.messages)
        if self.schema is not None:
            text += self.schema.json_bytes + SCHEMA_OVERHEAD
        return text + MESSAGE_OVERHEAD * len(self.messages) + REQUEST_OVERHEAD

    def planned_tokens(self) -> int:
        """Input estimate plus `max_tokens`: what a token-rate limit charges up front."""
        max_tokens = self.params.get("max_tokens") or self.params.get("max_completion_tokens")
        return self.estimated_tokens() + (max_tokens if isinstance(max_tokens, int) else 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class RateInfo:
    """What a reply's rate-limit headers said about the quota left (None: not sent)."""

    remaining_requests: int | None = None
    requests_reset_s: float | None = None  # seconds until the request quota refills
    remaining_tokens: int | None = None
    tokens_reset_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """What a provider returned for one successful request."""

    text: str
    model: str | None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    request_id: str | None = None
    rate: RateInfo | None = None
    parsed: Any = None  # the validated value, under schema=


@dataclass(slots=True, kw_only=True)
class RowResult:
    """The outcome of one row, tagged with the row's position (`key`)."""

    key: int
    status: RowStatus
    text: str | None = None
    error: str | None = None
    error_type: ErrorType | None = None
    attempts: int = 0
    latency_s: float | None = None
    ttft_s: float | None = None  # streaming: seconds to the first content token
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None  # what this run paid for all the row's replies (0: cache)
    finish_reason: str | None = None
    request_id: str | None = None
    model: str | None = None
    cached: bool = False  # served by the cache or by another row's identical call
    parsed: Any = None  # the validated value, under schema=


BATCH_ENDED = frozenset({"done", "cancelled", "expired", "failed"})


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchStatus:
    """A provider batch job at one moment, in the kit's words whatever the provider calls
    it: submitting, queued, running, finishing, done, cancelling, cancelled, expired or
    failed."""

    batch_id: str
    state: str
    total: int  # requests in it
    done: int = 0  # answered
    failed: int = 0  # errored, expired or cancelled
    created: float | None = None  # Unix time
    expires_at: float | None = None  # Unix time: the provider gives up on it then
    error: str | None = None  # why a failed batch failed
    error_code: str | None = None  # and the provider's code for it (model_not_found, ...)
    resubmit: bool = False  # failed for the provider's enqueued-token limit: send it again later

    @property
    def ended(self) -> bool:
        return self.state in BATCH_ENDED
