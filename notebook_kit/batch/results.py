"""What a batch said of one row, as the row's result: the same statuses, error types and
columns as online, at the batch price. Under schema= a reply is validated once (a batch
has no re-asks): one that does not fit is `invalid_output`, for `retry_failed`."""

from __future__ import annotations

import dataclasses

from ..errors import CallError
from ..pricing import cost_of
from ..types import Completion, ErrorType, Request, RowResult, RowStatus


def row_result(
    request: Request, outcome: Completion | CallError, *, latency: float | None = None
) -> tuple[RowResult, Completion | None]:
    """The row's result, and the completion to cache (a valid reply) or None."""
    if isinstance(outcome, CallError):
        return _failed(request, outcome, latency, None, outcome.input_tokens, None), None
    cost = cost_of(
        (outcome.model, request.model), outcome.input_tokens, outcome.output_tokens, batch=True
    )
    problem = _problem(request, outcome)
    if isinstance(problem, CallError):
        return _failed(request, problem, latency, outcome, outcome.input_tokens, cost), None
    completion = dataclasses.replace(outcome, parsed=problem) if request.schema else outcome
    result = RowResult(
        key=request.key,
        status=RowStatus.OK,
        text=completion.text,
        attempts=1,
        latency_s=latency,
        input_tokens=completion.input_tokens,
        output_tokens=completion.output_tokens,
        cost_usd=cost,
        finish_reason=completion.finish_reason,
        request_id=completion.request_id,
        model=completion.model,
        parsed=completion.parsed,
    )
    return result, completion


def _problem(request: Request, completion: Completion) -> object:
    """Under schema=: the validated value, or the `CallError` of a reply that does not fit."""
    schema = request.schema
    if schema is None:
        return None
    text = completion.text
    if completion.finish_reason == "refusal":
        return CallError(ErrorType.REFUSAL, f"the model refused: {' '.join(text.split())[:200]}")
    parsed, problem = schema.parse(text)
    if problem is None:
        return parsed
    cut = completion.finish_reason == "length"
    note = " (the reply was cut at max_tokens: raise it)" if cut else ""
    return CallError(
        ErrorType.INVALID_OUTPUT, f"the reply does not fit the schema: {problem}{note}"
    )


def _failed(
    request: Request,
    error: CallError,
    latency: float | None,
    reply: Completion | None,
    input_tokens: int | None,
    cost: float | None,
) -> RowResult:
    cancelled = error.error_type is ErrorType.CANCELLED
    return RowResult(
        key=request.key,
        status=RowStatus.CANCELLED if cancelled else RowStatus.ERROR,
        text=reply.text if reply is not None else None,
        error=str(error),
        error_type=error.error_type,
        attempts=0 if cancelled else 1,
        latency_s=latency,
        input_tokens=input_tokens,
        output_tokens=reply.output_tokens if reply is not None else None,
        cost_usd=cost,
        finish_reason=reply.finish_reason if reply is not None else None,
        request_id=error.request_id or (reply.request_id if reply is not None else None),
        model=reply.model if reply is not None else None,
    )


def cancelled(request: Request, note: str) -> RowResult:
    """A row that was never sent in a batch (Stop, the budget), with why."""
    return RowResult(
        key=request.key, status=RowStatus.CANCELLED, error=note, error_type=ErrorType.CANCELLED
    )
