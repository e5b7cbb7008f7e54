"""A spending cap that holds: every request in flight reserves its worst-case cost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..pricing import price_of
from ..types import Request
from .base import AttemptOutcome, Refused
from .gate import Gates, StartGate


class Budget:
    """Reserves each request's worst-case cost while it is in flight.

    A request starts only if what was billed, plus the reservations of the requests in
    flight, plus its own reservation fit in `usd`. So the billed total cannot pass `usd`,
    as long as each reservation covers its request's real cost.
    """

    def __init__(self, usd: float, *, spent: float = 0.0) -> None:
        self.usd = usd
        self.spent = spent
        self.reserved = 0.0
        self._holders = 0  # reservations outstanding (counted: float sums never reach 0.0)
        self._changed = asyncio.Event()

    async def reserve(self, amount: float) -> bool:
        """Wait until `amount` fits; False when it cannot (nothing in flight to free room)."""
        while self.spent + self.reserved + amount > self.usd:
            if self._holders == 0:
                return False
            self._changed.clear()
            await self._changed.wait()
        self.take(amount)
        return True

    def take(self, amount: float) -> None:
        """Reserve `amount` now, whether it fits or not (a request already sent)."""
        self.reserved += amount
        self._holders += 1

    def settle(self, reserved: float, billed: float) -> None:
        """Replace a reservation by what the request really cost."""
        self._holders -= 1
        self.reserved = max(0.0, self.reserved - reserved) if self._holders else 0.0
        self.spent += billed
        self._changed.set()

    def raise_to(self, usd: float) -> None:
        self.usd = usd
        self._changed.set()


class BudgetMeter:
    """`budget_usd`: a run stops at the cap; a background job pauses there until raised.

    A request reserves its ceiling: its UTF-8 bytes as input tokens (no tokenizer makes
    more), plus `max_tokens` of output, at the requested model's price. A reply without
    usage is charged its reservation; an HTTP error reply is charged 0.
    """

    def __init__(
        self,
        usd: float,
        *,
        gate: StartGate | Gates,
        pause_at_budget: bool,
        on_reached: Callable[[], None],
        spent: float = 0.0,
    ) -> None:
        self.budget = Budget(usd, spent=spent)
        self.reached = False
        self._gate = gate
        self._pause = pause_at_budget
        self._on_reached = on_reached

    async def acquire(self, request: Request) -> float:
        amount = self._ceiling(request)
        if amount is None:  # e.g. a model picked mid-run: its cost could not be capped
            raise Refused(
                f"not run: no price is known for model {request.model!r}, so "
                "budget_usd cannot be enforced (kit.set_price adds one)"
            )
        budget = self.budget
        while not await budget.reserve(amount):
            if not self._pause and amount > budget.usd:
                raise Refused(
                    f"not run: one request may cost up to ${amount:.4f} (its text as input "
                    f"tokens{', the schema' if request.schema else ''}, max_tokens of output), "
                    f"more than budget_usd={budget.usd:g}: raise it or lower max_tokens"
                )
            if not self._pause:
                spent = f"${budget.spent:.4f} of budget_usd={budget.usd:g} spent"
                raise Refused(f"not run: the budget is reached ({spent})")
            if not self.reached:
                self.reached = True
                self._gate.pause("budget")
                self._on_reached()
            await self._gate.acquire(request)  # job.set_budget(...) raises the cap and resumes
        return amount

    def hold(self, request: Request) -> float:
        """Reserve for a request already in flight when the budget was set: it is billed
        whether it fits or not, so its reservation is taken without waiting."""
        amount = self._ceiling(request) or 0.0
        self.budget.take(amount)
        return amount

    def _ceiling(self, request: Request) -> float | None:
        """The most `request` can cost (its bytes as input tokens, plus max_tokens); None
        when its model has no known price."""
        price = price_of(request.model)
        if price is None:
            return None
        max_tokens = request.params.get("max_tokens")
        ceiling = max_tokens if isinstance(max_tokens, int) else 0
        return price.cost(request.max_input_tokens(), ceiling)

    def release(self, held: object, outcome: AttemptOutcome) -> None:
        reserved = float(held)  # type: ignore[arg-type]
        error = outcome.error
        if not outcome.sent:
            billed = 0.0
        elif outcome.completion is not None:
            billed = reserved if outcome.cost_usd is None else outcome.cost_usd
        elif error is not None and error.status is not None:
            billed = 0.0  # an HTTP error reply is not billed
        else:
            billed = reserved  # no reply: it may still have been billed
        self.budget.settle(reserved, billed)

    def raise_to(self, usd: float) -> bool:
        """A new cap; True if a job paused at the old one may go on."""
        self.budget.raise_to(usd)
        if not self.reached:
            return False
        self.reached = False
        self._gate.resume("budget")
        return True
