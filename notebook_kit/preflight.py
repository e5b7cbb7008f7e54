"""Before a run: how many tokens, what it may cost, and how long it should take. No calls.

Input tokens are counted with tiktoken when it is installed and its encoding loads, else
approximated as 4 characters per token (plus 4 per message), the same estimate the rate
limits use. Output tokens cannot be known: the expected cost uses `output_tokens` per row
(default: half of max_tokens, or 150), the upper bound uses max_tokens. The `batch` column
gives the same run as a provider batch job (mode="batch"): batch prices, within 24 h.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from .cache import Cache
from .config import Limits
from .dedupe import cache_key
from .errors import ConfigError
from .frame import Plan, plan as frame_plan
from .pricing import price_of, prices_as_of
from .providers.base import Provider
from .steps import Stage
from .types import OutputSchema, Request

DEFAULT_OUTPUT_TOKENS = 150


def token_counter(model: str) -> tuple[Callable[[str], int], str]:
    """A function counting a text's tokens, and how it counts."""
    try:
        import tiktoken

        try:
            encoding = tiktoken.encoding_for_model(model)
        except KeyError:
            encoding = tiktoken.get_encoding("o200k_base")
        return (lambda text: len(encoding.encode(text))), f"tiktoken {encoding.name}"
    except Exception:
        return (lambda text: max(1, len(text) // 4)), "about 4 characters per token"


def estimate_run(
    plan: Plan,
    provider: Provider,
    *,
    model: str,
    params: dict[str, Any],
    limits: Limits,
    latency: float,
    output_tokens: int | None,
    cache: Cache | None,
    schema: OutputSchema | None = None,
) -> pd.DataFrame:
    count, method = token_counter(model)
    schema_tokens = count(json.dumps(schema.json_schema)) if schema is not None else 0
    base_url = provider.describe().get("base_url")
    sends: set[str] = set()
    rows = skipped = cached = duplicates = 0
    input_tokens = 0
    for item in plan.requests(params, schema):
        rows += 1
        if not isinstance(item, Request):
            skipped += 1
            continue
        if item.model is None:
            item = dataclasses.replace(item, model=model)
        key = cache_key(provider.name, base_url, item)
        if key in sends:
            duplicates += 1
            continue
        if cache is not None and cache.get(key) is not None:
            cached += 1
            continue
        sends.add(key)
        input_tokens += sum(count(str(m.get("content", ""))) + 4 for m in item.messages)
        input_tokens += schema_tokens  # the schema is sent with every request
    requests = len(sends)
    max_tokens = params.get("max_tokens")
    expected_out = output_tokens or (max_tokens // 2 if isinstance(max_tokens, int) else None)
    expected_out = expected_out or DEFAULT_OUTPUT_TOKENS
    price = price_of(model)

    def cost(out_per_row: int | None, *, batch: bool = False) -> float | None:
        if price is None or out_per_row is None:
            return None
        paid = price.in_batch() if batch else price
        return round(paid.cost(input_tokens, out_per_row * requests), 6)

    seconds, bound = _wall_time(
        requests, input_tokens + expected_out * requests, limits=limits, latency=latency
    )
    facts: list[tuple[str, Any, str]] = [
        ("rows", rows, ""),
        ("requests to send", requests, "rows minus skipped, cached and duplicate ones"),
        ("skipped or invalid rows", skipped, "empty prompts and rows that cannot be sent"),
        ("served from the cache", cached, "already paid for in an earlier run"),
        ("duplicates in this run", duplicates, "identical requests are sent once"),
        ("input tokens", input_tokens, method),
        ("output tokens (expected)", expected_out * requests, f"{expected_out} per request"),
        (
            "output tokens (at most)",
            max_tokens * requests if isinstance(max_tokens, int) else None,
            "max_tokens per request" if isinstance(max_tokens, int) else "no max_tokens given",
        ),
        ("cost USD (expected)", cost(expected_out), _price_note(model)),
        (
            "cost USD (at most)",
            cost(max_tokens if isinstance(max_tokens, int) else None),
            "with max_tokens output per request",
        ),
        ("wall time s (expected)", round(seconds, 1), bound),
        ("prices as of", prices_as_of(), "kit.set_price(...) adds or overrides one"),
    ]
    in_batch = {  # mode="batch": the same rows at the batch price, within 24 h
        "cost USD (expected)": cost(expected_out, batch=True),
        "cost USD (at most)": cost(max_tokens if isinstance(max_tokens, int) else None, batch=True),
        "wall time s (expected)": "up to 24 h",
    }
    frame = pd.DataFrame(
        {
            "value": pd.array([v for _, v, _ in facts], dtype=object),
            "batch": pd.array([in_batch.get(q, v) for q, v, _ in facts], dtype=object),
            "how": [h for *_, h in facts],
        },
        index=pd.Index([q for q, _, _ in facts], name="quantity"),
    )
    frame.attrs["notebook_kit_estimate"] = {"model": model, "provider": provider.name}
    return frame


def _price_note(model: str) -> str:
    """The price in words a notebook shows as is: no dollar signs (JupyterLab would typeset
    the text between two of them as math) and short enough for pandas' column width."""
    price = price_of(model)
    if price is None:
        return "no price known: kit.set_price(model, ...)"
    batch = price.in_batch()
    return (
        f"USD per 1M tokens: {price.input:g}/{price.output:g} in/out, "
        f"batch {batch.input:g}/{batch.output:g}"
    )


def _wall_time(requests: int, tokens: int, *, limits: Limits, latency: float) -> tuple[float, str]:
    """The slowest of: concurrency x latency, the request rate, the token rate."""
    if requests == 0:
        return 0.0, "nothing to send"
    waves = math.ceil(requests / limits.concurrency) * latency
    candidates = [(waves, f"concurrency {limits.concurrency} at ~{latency:g} s per request")]
    if limits.rpm:
        per_minute = limits.rpm * limits.headroom
        candidates.append((requests / per_minute * 60 + latency, f"rpm={limits.rpm:g}"))
    if limits.tpm:
        per_minute = limits.tpm * limits.headroom
        candidates.append((tokens / per_minute * 60 + latency, f"tpm={limits.tpm:g}"))
    seconds, bound = max(candidates)
    return seconds, f"bound by {bound}"


ESTIMATED = {
    "requests to send": "requests",
    "input tokens": "input_tokens",
    "output tokens (expected)": "output_tokens",
    "cost USD (expected)": "cost_usd",
    "cost USD (at most)": "cost_usd_at_most",
    "wall time s (expected)": "wall_s",
}


def estimate_pipeline(
    frame: pd.DataFrame,
    stages: Sequence[Stage],
    *,
    latency: float,
    output_tokens: int | None,
    cache: Cache | None,
) -> pd.DataFrame:
    """One line per model step and the total. A later step's prompt holds earlier outputs
    that do not exist yet: each is stood in for by text of the expected reply length, so
    its tokens are an estimate and its cache hits unknown. Every row is assumed to run
    every step (when= may skip some). The total wall time: the slowest step, plus one
    request of each other step for the last rows."""
    rows: dict[str, dict[str, Any]] = {}
    stand_in = frame.copy()
    for stage in stages:
        config = stage.config
        if config is None or stage.provider is None or stage.step.template is None:
            stand_in[stage.name] = _stand_in(len(frame), 40)  # a function's value: unknown
            continue
        plan = frame_plan(
            stand_in,
            template=stage.step.template,
            system=stage.system,
            output_col="\0estimate",
        )
        facts = estimate_run(
            plan,
            stage.provider,
            model=config.model,
            params=config.params,
            limits=config.limits,
            latency=latency,
            output_tokens=output_tokens,
            cache=cache if stage.index == 0 else None,
            schema=config.schema,
        )["value"]
        rows[stage.name] = {name: facts[quantity] for quantity, name in ESTIMATED.items()}
        expected = rows[stage.name]["output_tokens"] // max(rows[stage.name]["requests"], 1)
        stand_in[stage.name] = _stand_in(len(frame), 4 * max(expected, 1))
        for field in config.schema.fields if config.schema else ():
            stand_in[f"{stage.name}_{field}"] = _stand_in(len(frame), 20)
    table = pd.DataFrame.from_dict(rows, orient="index")
    if table.empty:
        raise ConfigError("these steps call no model: there is nothing to estimate")
    total: dict[str, Any] = {}
    for name in ("requests", "input_tokens", "output_tokens", "cost_usd", "cost_usd_at_most"):
        known = table[name].dropna()
        total[name] = known.sum() if len(known) == len(table) else None
    walls = table["wall_s"].astype(float)
    total["wall_s"] = round(walls.max() + latency * (len(table) - 1), 1)
    table.loc["total"] = total
    table.index.name = "step"
    table.attrs["notebook_kit_estimate"] = {"steps": [s.name for s in stages]}
    return table.astype(object)


def _stand_in(rows: int, chars: int) -> list[str]:
    """Text of `chars` characters per row, different in each row (identical prompts would
    count as duplicates, sent once)."""
    return [f"{i:08d}".ljust(chars, "x") for i in range(rows)]
