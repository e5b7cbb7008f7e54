"""One row on its way through a run: its state, and the result it ends with."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import CallError
from .meters import AttemptOutcome, Meter
from .retry import RowTries
from .types import Completion, ErrorType, Request, RowResult, RowStatus


@dataclass(slots=True)
class Spent:
    """Tokens and cost summed over every reply a row was billed for: retries that got a
    reply and re-asks under schema= cost money too, whether the row ends ok or not."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cost: float | None = None
    unpriced: bool = False  # a reply had no known price: the row's cost is unknown

    def add(self, completion: Completion, cost: float | None) -> None:
        self.input_tokens = _plus(self.input_tokens, completion.input_tokens)
        self.output_tokens = _plus(self.output_tokens, completion.output_tokens)
        self.cost = _plus(self.cost, cost)
        self.unpriced |= cost is None

    @property
    def cost_usd(self) -> float | None:
        return None if self.unpriced or self.cost is None else round(self.cost, 10)


N = TypeVar("N", int, float)


def _plus(total: N | None, more: N | None) -> N | None:
    return more if total is None else total if more is None else total + more


@dataclass(slots=True)
class Row:
    """A row that took its concurrency slot: what it holds and how its attempts went."""

    request: Request
    held: list[tuple[Meter, object]]  # meters acquired for the coming or current attempt
    tries: RowTries = dataclasses.field(default_factory=RowTries)
    in_flight: bool = False
    latency: float | None = None  # seconds the last request took
    ttft: float | None = None  # streaming: seconds to the last request's first token
    wait: float | None = None  # the retrier's wait after the last failure (None: final)
    cost: float | None = None  # what the last reply was billed
    spent: Spent = dataclasses.field(default_factory=lambda: Spent())  # by all its replies
    last_text: str | None = None  # under schema=: the last reply that did not fit
    finish: str | None = None  # and how it ended

    async def hold(
        self, meters: Callable[[], tuple[Meter, ...]], gate_closed: Callable[[], bool]
    ) -> None:
        """Every meter for the next attempt, in order (the first attempt holds the slot the
        dispatcher took). A row that waited in a rate or budget meter while the gate closed
        (a pause, a 429's cool-down) gives back all but its slot and waits at the gate
        again; a meter added mid-run (a budget) is taken by a row already on its way."""
        while True:
            for meter in meters():
                if all(meter is not held for held, _ in self.held):
                    self.held.append((meter, await meter.acquire(self.request)))
            if gate_closed():
                self.release(AttemptOutcome(self.request, sent=False), keep=1)
            elif len(self.held) == len(meters()):
                return

    def release(self, outcome: AttemptOutcome, *, keep: int = 0) -> None:
        """Give back every meter held but the first `keep`, last acquired first."""
        held, self.held = self.held[keep:], self.held[:keep]
        for meter, token in reversed(held):
            meter.release(token, outcome)

    def succeeded(self, completion: Completion) -> RowResult:
        return RowResult(
            key=self.request.key,
            status=RowStatus.OK,
            text=completion.text,
            attempts=self.tries.sent,
            latency_s=self.latency,
            ttft_s=self.ttft,
            input_tokens=self.spent.input_tokens,
            output_tokens=self.spent.output_tokens,
            cost_usd=self.spent.cost_usd,
            finish_reason=completion.finish_reason,
            request_id=completion.request_id,
            model=completion.model,
            parsed=completion.parsed,
        )

    def checked(self, completion: Completion) -> Completion | None:
        """Under schema=: the completion with its validated value; None when the reply did
        not fit and the row's request became a re-ask (the errors put back to the model).
        Raises `CallError` for a refusal, a reply cut at max_tokens, or no re-ask left."""
        schema = self.request.schema
        if schema is None:
            return completion
        text = completion.text
        if completion.finish_reason == "refusal":
            self.last_text, self.finish = text, "refusal"
            raise CallError(ErrorType.REFUSAL, f"the model refused: {' '.join(text.split())[:200]}")
        parsed, problem = schema.parse(text)
        if problem is None:
            return dataclasses.replace(completion, parsed=parsed)
        self.last_text, self.finish = text, completion.finish_reason
        cut = completion.finish_reason == "length"
        if cut or self.tries.reasks >= schema.retries:
            note = " (the reply was cut at max_tokens: raise it)" if cut else ""
            raise CallError(
                ErrorType.INVALID_OUTPUT, f"the reply does not fit the schema: {problem}{note}"
            )
        self.tries.reasks += 1
        self.request = schema.reask(self.request, text, problem)
        return None

    def failed(self, error: CallError, note: str = "") -> RowResult:
        return RowResult(
            key=self.request.key,
            status=RowStatus.ERROR,
            text=self.last_text,
            error=str(error) + note,
            error_type=error.error_type,
            attempts=self.tries.sent,
            latency_s=self.latency,
            ttft_s=self.ttft,
            input_tokens=self.spent.input_tokens,
            output_tokens=self.spent.output_tokens,
            cost_usd=self.spent.cost_usd,
            finish_reason=self.finish,
            request_id=error.request_id,
        )

    def cancelled(self, reason: str | None) -> RowResult:
        return RowResult(
            key=self.request.key,
            status=RowStatus.CANCELLED,
            error=reason or "cancelled",
            error_type=ErrorType.CANCELLED,
            attempts=self.tries.sent,
        )
