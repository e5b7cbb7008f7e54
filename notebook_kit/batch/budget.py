"""A batch job's budget applies to what is submitted: rows are taken in order while their
worst case (every input token, max_tokens out, at the batch price) still fits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from ..pricing import price_of
from ..types import Request

K = TypeVar("K")


def over_budget(
    rows: Sequence[tuple[K, Request]], budget: float | None
) -> tuple[list[tuple[K, Request]], list[tuple[K, Request]]]:
    """The rows to submit, and those the budget leaves out (a row whose model has no
    price, or no max_tokens, has no worst case: it is left out too)."""
    if budget is None:
        return list(rows), []
    sent: list[tuple[K, Request]] = []
    over: list[tuple[K, Request]] = []
    spent = 0.0
    for key, request in rows:
        price = price_of(request.model)
        max_tokens = request.params.get("max_tokens")
        if price is None or isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            over.append((key, request))
            continue
        worst = price.in_batch().cost(request.max_input_tokens(), max_tokens)
        if over or spent + worst > budget:
            over.append((key, request))
        else:
            spent += worst
            sent.append((key, request))
    return sent, over
