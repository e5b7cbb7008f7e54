"""What tokens cost: a price table shipped with the package, plus the user's own prices.

Unknown models have no price: their cost is missing, never guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

PER = 1_000_000  # prices are per million tokens


@dataclass(frozen=True)
class Price:
    """USD per million input and output tokens."""

    input: float
    output: float

    def cost(self, input_tokens: float, output_tokens: float) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / PER


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


def set_price(model: str, *, input: float, output: float) -> None:
    """Add or override a model's price (USD per million tokens) for this session."""
    if input < 0 or output < 0:
        raise ValueError("prices must be >= 0")
    _custom[model] = Price(input=input, output=output)
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
    models: tuple[str | None, ...], input_tokens: int | None, output_tokens: int | None
) -> float | None:
    """The cost in USD of one reply at the first of `models` with a known price (the reply's
    model, then the requested one: an alias or a new dated name falls back), or None if no
    price or the usage is unknown."""
    price = next((p for p in map(price_of, models) if p is not None), None)
    if price is None or input_tokens is None or output_tokens is None:
        return None
    return round(price.cost(input_tokens, output_tokens), 10)
