"""Readers of streamed replies: what a stream said besides its content (finish reason,
refusal, usage, model), for Chat Completions chunks and Messages events."""

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
        choices = getattr(chunk, "choices", None)
        if isinstance(choices, list) and choices:
            choice = choices[0]
            delta = getattr(choice, "delta", None)
            content = getattr(delta, "content", None)
            chunks.text(content if isinstance(content, str) else text_of(content))
            refusal = getattr(delta, "refusal", None)
            if isinstance(refusal, str):
                self.refusal.append(refusal)
            self.finish = label(getattr(choice, "finish_reason", None)) or self.finish
        else:
            chunks.alive()
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.input_tokens = token_count(getattr(usage, "prompt_tokens", None))
            self.output_tokens = token_count(getattr(usage, "completion_tokens", None))
        self.model = label(getattr(chunk, "model", None)) or self.model

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
        kind = getattr(event, "type", None)
        if kind == "content_block_delta":
            delta = getattr(event, "delta", None)
            piece = getattr(delta, "text", None)
            if piece is None:
                piece = getattr(delta, "partial_json", None)  # a forced tool's input
            chunks.text(piece if isinstance(piece, str) else "")
            return
        chunks.alive()
        if kind == "message_start":
            message = getattr(event, "message", None)
            usage = getattr(message, "usage", None)
            self.input_tokens = token_count(getattr(usage, "input_tokens", None))
            self.output_tokens = token_count(getattr(usage, "output_tokens", None))
            self.model = label(getattr(message, "model", None)) or self.model
        elif kind == "message_delta":
            self.stop = label(getattr(getattr(event, "delta", None), "stop_reason", None))
            usage = getattr(event, "usage", None)
            output = token_count(getattr(usage, "output_tokens", None))
            self.output_tokens = output if output is not None else self.output_tokens
            given = token_count(getattr(usage, "input_tokens", None))
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
