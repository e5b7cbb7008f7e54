"""A pipeline's model steps as engines: one `Engine` per step, on the start gate and
rpm/tpm meters its endpoint shares with the other steps there and on the pipeline's
budget, each taking its rows from a `Feed` the pipeline fills as earlier steps end.
Plain asyncio: no widgets or SDKs.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from .cache import Cache
from .clock import Clock
from .engine import Engine, Item
from .events import (
    AttemptFinished,
    AttemptStarted,
    EventBus,
    LimitChanged,
    RowFinished,
    RowStarted,
    StreamOpened,
)
from .meters import BudgetMeter
from .meters.assembly import Shared, rate_meters
from .meters.gate import Gates
from .meters.learned import LearnedRate
from .meters.rate import RateMeter
from .steps import Stage

FORWARDED = (
    RowStarted,
    AttemptStarted,
    AttemptFinished,
    RowFinished,
    LimitChanged,
    StreamOpened,
)


class Feed:
    """A model step's incoming rows: put by the pipeline as earlier steps end, taken in
    order by the step's engine (an async iterator that ends once closed and empty)."""

    def __init__(self) -> None:
        self._items: deque[Item] = deque()
        self._wake: asyncio.Future[None] | None = None
        self.closed = False
        self.taken = asyncio.Event()  # set when a row is taken: room in a short feed

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Item) -> None:
        self._items.append(item)
        self._wakeup()

    def close(self) -> None:
        """No row can reach this step any more."""
        self.closed = True
        self._wakeup()

    def _wakeup(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def __aiter__(self) -> Feed:
        return self

    async def __anext__(self) -> Item:
        while not self._items:
            if self.closed:
                raise StopAsyncIteration
            self._wake = asyncio.get_running_loop().create_future()
            await self._wake
        self.taken.set()
        return self._items.popleft()


def step_engines(
    models: Sequence[Stage],
    *,
    total: int,
    cache: Cache | None,
    clock: Clock,
    gate: Gates,
    budget: BudgetMeter | None,
    events: EventBus,
) -> dict[int, Engine]:
    """An engine per model step, by step index, its row events forwarded to `events`."""
    rates: dict[tuple[str, ...], tuple[RateMeter | LearnedRate, ...]] = {}
    engines: dict[int, Engine] = {}
    for stage in models:
        assert stage.config is not None and stage.provider is not None
        endpoint = stage.endpoint or (stage.name,)
        if endpoint not in rates:
            rates[endpoint] = rate_meters(stage.config, clock)
        shared = Shared(gate.of(endpoint), rates[endpoint], budget)
        engine = Engine(
            stage.provider,
            stage.config,
            total=total,
            cache=cache,
            clock=clock,
            step=stage.name,
            shared=shared,
        )
        engine.events.forward(FORWARDED, events)
        engines[stage.index] = engine
    return engines
