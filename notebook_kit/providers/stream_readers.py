"""Readers of streamed replies: what a stream said besides its content (finish reason,
refusal, usage, model), for Chat Completions chunks and Messages events, whether they come
as decoded JSON (the lean path) or as the SDK's objects."""

from __future__ import annotations

from typing import Any

from ..errors import CallError
from ..streaming import Chunks
from ..types import Completion, ErrorType, RateInfo
from .replies import label, text_of, token_count

# Anthropic's stop reasons, in the vocabulary of OpenAI's finish_reason.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "refusal",
}


def field(record: Any, name: str) -> Any:
    """A field of a record, of any type: a dict's key, an SDK object's attribute; None for
    a missing one or a record without fields (a number, a list, None)."""
    if isinstance(record, dict):
        return record.get(name)
    return getattr(record, name, None)


class ChunkReader:
    """What a Chat Completions stream said besides its content: finish reason, refusal,
    usage (in a last chunk with no choices), model. Reads fields of any type."""

    __slots__ = ("finish", "input_tokens", "model", "output_tokens", "refusal")

    def __init__(self, model: str | None) -> None:
        self.model = model
        self.finish: str | None = None
        self.refusal: list[str] = []
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None

    def read(self, chunk: Any, chunks: Chunks) -> None:
        choices = field(chunk, "choices")
        if isinstance(choices, list) and choices:
            choice = choices[0]
            delta = field(choice, "delta")
            content = field(delta, "content")
            chunks.text(content if isinstance(content, str) else text_of(content))
            refusal = field(delta, "refusal")
            if isinstance(refusal, str):
                self.refusal.append(refusal)
            self.finish = label(field(choice, "finish_reason")) or self.finish
        else:
            chunks.alive()
        usage = field(chunk, "usage")
        if usage is not None:
            self.input_tokens = token_count(field(usage, "prompt_tokens"))
            self.output_tokens = token_count(field(usage, "completion_tokens"))
        self.model = label(field(chunk, "model")) or self.model

    def completion(
        self, chunks: Chunks, request_id: str | None, rate: RateInfo | None
    ) -> Completion:
        if self.finish == "content_filter":
            raise CallError(
                ErrorType.CONTENT_FILTER,
                "the provider's content filter stopped the reply",
                request_id=request_id,
            )
        text, finish = chunks.so_far, self.finish
        if not text and self.refusal:
            text, finish = "".join(self.refusal), "refusal"
        return Completion(
            text=text,
            model=self.model,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            finish_reason=finish,
            request_id=request_id,
            rate=rate,
        )


class EventReader:
    """What a Messages event stream said besides its text: usage (input in message_start,
    output in message_delta), stop reason, model. Reads fields of any type."""

    __slots__ = ("input_tokens", "model", "output_tokens", "stop")

    def __init__(self, model: str | None) -> None:
        self.model = model
        self.stop: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None

    def read(self, event: Any, chunks: Chunks) -> None:
        kind = field(event, "type")
        if kind == "content_block_delta":
            delta = field(event, "delta")
            piece = field(delta, "text")
            if piece is None:
                piece = field(delta, "partial_json")  # a forced tool's input
            chunks.text(piece if isinstance(piece, str) else "")
            return
        chunks.alive()
        if kind == "message_start":
            message = field(event, "message")
            usage = field(message, "usage")
            self.input_tokens = token_count(field(usage, "input_tokens"))
            self.output_tokens = token_count(field(usage, "output_tokens"))
            self.model = label(field(message, "model")) or self.model
        elif kind == "message_delta":
            self.stop = label(field(field(event, "delta"), "stop_reason"))
            usage = field(event, "usage")
            output = token_count(field(usage, "output_tokens"))
            self.output_tokens = output if output is not None else self.output_tokens
            given = token_count(field(usage, "input_tokens"))
            self.input_tokens = given if given else self.input_tokens

    def completion(
        self, chunks: Chunks, request_id: str | None, rate: RateInfo | None
    ) -> Completion:
        stop = "end_turn" if self.stop == "tool_use" else self.stop  # a forced tool's answer
        return Completion(
            text=chunks.so_far,
            model=self.model,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            finish_reason=FINISH_REASONS.get(stop, stop) if stop else None,
            request_id=request_id,
            rate=rate,
        )
