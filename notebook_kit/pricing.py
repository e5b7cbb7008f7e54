"""What tokens cost: a price table shipped with the package, plus the user's own prices.

Unknown models have no price: their cost is missing, never guessed. Batch jobs pay the
table's `batch_input`/`batch_output` where it has them, else half the online price (what
OpenAI's Batch API and Anthropic's Message Batches charge).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

PER = 1_000_000  # prices are per million tokens
BATCH_SHARE = 0.5  # a batch job's price, as a share of the online one, where none is listed


@dataclass(frozen=True)
class Price:
    """USD per million input and output tokens (online, and in a batch job if listed)."""

    input: float
    output: float
    batch_input: float | None = None
    batch_output: float | None = None

    def cost(self, input_tokens: float, output_tokens: float) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / PER

    def in_batch(self) -> Price:
        """The price of the same tokens in a provider's batch job."""
        given = (self.batch_input, self.batch_output)
        return Price(
            input=self.input * BATCH_SHARE if given[0] is None else given[0],
            output=self.output * BATCH_SHARE if given[1] is None else given[1],
        )


_custom: dict[str, Price] = {}


@cache
def _table() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        files("notebook_kit").joinpath("data/prices.json").read_text()
    )
    return data


def prices_as_of() -> str:
    """The date the shipped prices were taken."""
    return str(_table()["as_of"])


def set_price(
    model: str,
    *,
    input: float,
    output: float,
    batch_input: float | None = None,
    batch_output: float | None = None,
) -> None:
    """Add or override a model's price (USD per million tokens) for this session; batch
    prices default to half the online ones."""
    given = (input, output, batch_input, batch_output)
    if any(price is not None and not price >= 0 for price in given):
        raise ValueError("prices must be >= 0")
    _custom[model] = Price(input, output, batch_input, batch_output)
    price_of.cache_clear()


@cache
def price_of(model: str | None) -> Price | None:
    """The model's price, also for dated names (gpt-4.1-mini-2025-04-14), or None."""
    if not model:
        return None
    known = {name: Price(**p) for name, p in _table()["models"].items()} | _custom
    if model in known:
        return known[model]
    prefixes = [name for name in known if model.startswith(name + "-")]
    return known[max(prefixes, key=len)] if prefixes else None


def cost_of(
    models: tuple[str | None, ...],
    input_tokens: int | None,
    output_tokens: int | None,
    *,
    batch: bool = False,
) -> float | None:
    """The cost in USD of one reply at the first of `models` with a known price (the reply's
    model, then the requested one: an alias or a new dated name falls back), or None if no
    price or the usage is unknown; `batch`: at the batch price."""
    price = next((p for p in map(price_of, models) if p is not None), None)
    if price is None or input_tokens is None or output_tokens is None:
        return None
    price = price.in_batch() if batch else price
    return round(price.cost(input_tokens, output_tokens), 10)
