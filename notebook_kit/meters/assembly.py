"""The meters of one run, in the order an attempt acquires them."""

from __future__ import annotations

from dataclasses import dataclass

from ..clock import Clock
from ..config import RunConfig
from .base import Meter
from .budget import BudgetMeter
from .concurrency import ConcurrencyMeter
from .gate import HeaderPacing, StartGate
from .learned import LearnedRate
from .rate import RateMeter


def run_meters(
    config: RunConfig,
    *,
    clock: Clock,
    concurrency: ConcurrencyMeter,
    gate: StartGate,
    budget: BudgetMeter | None,
    rates: tuple[RateMeter | LearnedRate, ...] | None = None,
) -> tuple[Meter, ...]:
    """Concurrency first (the dispatcher takes the first attempt's slot), then the gate,
    rpm, tpm (`rates`, when an endpoint's meters are shared) and the budget; header
    pacing last, as it counts the starts."""
    limits = config.limits
    meters: list[Meter] = [concurrency, gate]
    meters += rate_meters(config, clock) if rates is None else rates
    if budget is not None:
        meters.append(budget)
    if not limits.rpm:  # the user's rpm paces this run; the headers would only add caution
        meters.append(HeaderPacing(gate, cap=config.retry.retry_after_cap))
    return tuple(meters)


def with_budget(meters: tuple[Meter, ...], budget: BudgetMeter) -> tuple[Meter, ...]:
    """`meters` with a budget added mid-run, before the header pacing (a new tuple: rows
    may be iterating the old one)."""
    pacing = [m for m in meters if isinstance(m, HeaderPacing)]
    others = [m for m in meters if not isinstance(m, HeaderPacing)]
    return (*others, budget, *pacing)


def rate_meters(config: RunConfig, clock: Clock) -> tuple[RateMeter | LearnedRate, ...]:
    """The rpm and tpm meters `config` asks for; without an rpm, the rate learned from
    429s (unless `learn_rate=False`)."""
    limits = config.limits
    meters: list[RateMeter | LearnedRate] = []
    if limits.rpm:
        meters.append(RateMeter(limits.rpm * limits.headroom, clock=clock))
    elif limits.learn_rate:
        meters.append(LearnedRate(clock))
    if limits.tpm:
        meters.append(RateMeter.tokens(limits.tpm * limits.headroom, clock=clock))
    return tuple(meters)


@dataclass(frozen=True)
class Shared:
    """The meters a pipeline's step shares with the other steps: the start gate (pause,
    429 cool-downs), its endpoint's rpm/tpm meters and the pipeline's budget."""

    gate: StartGate
    rates: tuple[RateMeter | LearnedRate, ...] = ()
    budget: BudgetMeter | None = None
