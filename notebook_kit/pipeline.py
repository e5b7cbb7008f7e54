"""A pipeline's scheduler: rows through steps, with no barrier between them.

Each model step is an `Engine` of its own (its own concurrency, model, retries), fed by a
queue (both made in `pipeline_engines.py`): a row enters the next step's queue the moment
its previous step ends, so a fast row reaches step 3 while slow rows are still in step 1.
Steps on one endpoint share its start gate (429 cool-downs) and rpm/tpm meters; Pause and
the budget hold every gate.
Function steps
(`fn=`) run here, between the engines; `when=` skips a step for a row. A row that fails
a step runs no later step. Plain asyncio: no widgets or SDKs.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from .cache import Cache
from .clock import Clock, LoopClock
from .engine import Engine
from .errors import RunError
from .events import (
    EventBus,
    Paused,
    Resumed,
    RowFinished,
    RunFinished,
    StopRequested,
)
from .meters import BudgetMeter
from .meters.gate import Gates
from .pipeline_engines import Feed, step_engines
from .pipeline_rows import RowValues, RowWork, row_result
from .reporting import RunStats, Snapshot
from .steps import Stage
from .types import ErrorType, RowResult, RowStatus

# a pipeline's request counters: the sums of its steps'
FUNCTION_GRACE = 5.0  # seconds a cancelled function step gets to end before the run ends
SUMMED = (
    "in_flight",
    "retrying",
    "requests",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "unpriced",
    "cached",
)


class Pipeline:
    """Runs `keys` (row positions) through `stages`; steerable while it runs.

    `start` says at which step a row begins (`retry_failed` resumes at the failed step)
    and `carried` the outputs of the steps before it, reused, not re-paid.
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        inputs: RowValues,
        keys: Sequence[int],
        *,
        cache: Cache | None = None,
        clock: Clock | None = None,
        budget_usd: float | None = None,
        pause_at_budget: bool = False,
        start: Mapping[int, int] | None = None,
        carried: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> None:
        self.stages = list(stages)
        self.clock = clock or LoopClock()
        self.events = EventBus()
        self._emit = self.events.emit
        self.stats = RunStats(total=len(keys))  # whole rows; requests are the steps' sums
        self.stats.attach(self.events, attempts=False)
        self.stop_reason: str | None = None
        self._keys = keys
        self._t0 = self.clock.now()
        self._ended_at: float | None = None
        self._pause_at_budget = pause_at_budget
        models = [s for s in self.stages if s.config is not None]
        policy = models[0].config.retry if models and models[0].config else None
        from .config import RetryPolicy

        self.gate = Gates(clock=self.clock, policy=policy or RetryPolicy())  # one per endpoint
        self.budget = None if budget_usd is None else self._budget_meter(budget_usd)
        self.engines = step_engines(
            models,
            total=len(keys),
            cache=cache,
            clock=self.clock,
            gate=self.gate,
            budget=self.budget,
            events=self.events,
        )
        for index, engine in self.engines.items():
            engine.events.on(RowFinished, functools.partial(self._stepped, index))
            engine.events.on(StopRequested, self._engine_stopped)
        self.function_stats = {
            s.index: RunStats(total=len(keys), step=s.name) for s in self.stages if s.step.fn
        }
        for counter in self.function_stats.values():
            counter.attach(self.events, attempts=False)
        self.function_results: dict[int, dict[int, RowResult]] = {
            i: {} for i in self.function_stats
        }
        start = start or {}
        self.work = RowWork(self.stages, inputs, keys, carried or {})
        self.values = self.work.values  # each row's outputs so far, by column
        self.stage_of: dict[int, int] = {k: start.get(k, 0) for k in keys}  # where it is
        self.failed_at: dict[int, int] = {}  # rows that ended at a failed step
        self.rows: dict[int, RowResult] = {}  # the whole rows that ended
        self._count = [0] * len(self.stages)  # rows in each step now (queued, sent, awaited)
        self._feeds = {i: Feed() for i in self.engines}
        self._first = min(self.engines, default=None)
        self._source_done = False
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()  # async functions being awaited
        self._calls = {s.index: asyncio.Semaphore(s.calls) for s in self.stages if s.step.fn}

    # -- what displays read --------------------------------------------------------------

    @property
    def state(self) -> str:
        return self.gate.state(stopping=self.stop_reason is not None)

    def snapshot(self) -> Snapshot:
        """The whole rows' counts, and one snapshot per step."""
        budget = self.budget.budget if self.budget is not None else None
        elapsed = self._ended_at if self._ended_at is not None else self._now()
        steps = []
        for stage in self.stages:
            if stage.index in self.engines:
                steps.append(self.engines[stage.index].snapshot())
            else:
                counts = self.function_stats[stage.index].counts(elapsed)
                snap = Snapshot(state=self.state, **counts, limit=0, target=0, step=stage.name)
                steps.append(snap)
        limits = [s.limit for s in steps if s.target]
        targets = [s.target for s in steps if s.target]
        counts = self.stats.counts(elapsed)
        for name in SUMMED:
            counts[name] = sum(getattr(s, name) for s in steps)
        return Snapshot(
            state=self.state,
            **counts,
            limit=sum(limits),
            target=sum(targets),
            budget_usd=budget.usd if budget else None,
            spent_usd=budget.spent if budget else 0.0,
            reserved_usd=budget.reserved if budget else 0.0,
            elapsed_s=elapsed,
            stop_reason=self.stop_reason,
            steps=tuple(steps),
        )

    def result_of(self, index: int, key: int) -> RowResult | None:
        """The row's result at step `index`, if it has one."""
        return self.results_at(index).get(key)

    def results_at(self, index: int) -> Mapping[int, RowResult]:
        """The results of step `index` so far, by row position."""
        if index in self.engines:
            return self.engines[index].results
        return self.function_results[index]

    # -- control (call from the run's loop) ----------------------------------------------

    def engine_of(self, step: str | None) -> Engine:
        """The engine of the model step named `step` (None: the only one)."""
        from .errors import ConfigError

        names = {self.stages[i].name: e for i, e in self.engines.items()}
        if step is None and len(names) == 1:
            return next(iter(names.values()))
        if step not in names:
            raise ConfigError(f"name one of the pipeline's model steps: step= one of {list(names)}")
        return names[step]

    def set_concurrency(self, value: int, step: str | None = None) -> None:
        self.engine_of(step).set_concurrency(value)

    def set_model(self, model: str, step: str | None = None) -> None:
        self.engine_of(step).set_model(model)

    def pause(self) -> None:
        self.gate.pause("user")
        self._emit(Paused(t=self._now(), reason="user"))

    def resume(self) -> None:
        self.gate.resume("user")
        self._emit(Resumed(t=self._now(), reason="user"))

    def set_budget(self, usd: float) -> None:
        """A cap for the whole pipeline (what was billed so far counts)."""
        if self.budget is None:
            spent = sum(engine.stats.cost_usd for engine in self.engines.values())
            self.budget = self._budget_meter(usd, spent=spent)
            for engine in self.engines.values():
                engine.use_budget(self.budget)
        elif self.budget.raise_to(usd):
            self._emit(Resumed(t=self._now(), reason="budget"))

    def stop(self, reason: str = "stopped by the user") -> None:
        """Cancel every row in every step, in flight or not (also after a step halted the
        pipeline); finished steps are kept."""
        self._begin_stop(reason)
        for engine in self.engines.values():
            engine.stop(reason)

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> None:
        runs = [self._run_step(i, engine) for i, engine in self.engines.items()]
        outcomes: list[Any] = []
        try:
            outcomes = await asyncio.gather(self._source(), *runs, return_exceptions=True)
            while self._tasks:  # function steps after the last model step
                await asyncio.wait(list(self._tasks))
        except BaseException:
            self.stop_reason = self.stop_reason or "interrupted"
            raise
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:  # a function that ignores cancellation is not waited for long
                await asyncio.wait(list(self._tasks), timeout=FUNCTION_GRACE)
            self._ended_at = self._now()
            self._emit(RunFinished(t=self._ended_at, stop_reason=self.stop_reason))
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            raise next((e for e in errors if isinstance(e, RunError)), errors[0])

    async def _run_step(self, index: int, engine: Engine) -> None:
        """One step's engine; if it fails in a way it could not handle itself (its client
        would not open), every other step stops too instead of waiting for it."""
        try:
            await engine.run(self._feeds[index])
        except BaseException as exc:
            name = self.stages[index].name
            why = f"not run: step {name!r} failed ({type(exc).__name__})"
            self._engine_stopped(StopRequested(self._now(), why))
            raise

    async def _source(self) -> None:
        """Rows enter at their first step in order; the first model step's feed is kept
        short, so a million rows never wait there as a million requests."""
        first = self._feeds.get(self._first) if self._first is not None else None
        limit = self.engines[self._first].concurrency.limit if self._first is not None else None
        try:
            for key in self._keys:
                if self._stopping:
                    break
                self._go(key, self.stage_of[key])
                while first and limit and not self._stopping and len(first) > 2 * limit.total + 16:
                    first.taken.clear()
                    await first.taken.wait()
        finally:
            self._source_done = True
            self._close_ready()

    def _go(self, key: int, index: int) -> None:
        """Move a row through steps from `index` on until it waits in a model step or an
        async function, fails, or has been through every step."""
        stages = self.stages
        while index < len(stages):
            self.stage_of[key] = index
            if self._stopping:
                return  # it stays where it is: cancelled there
            stage = stages[index]
            if stage.index in self.engines:
                item = self.work.item(stage, key)
                self._count[index] += 1
                self._feeds[index].put(item)
                return
            outcome = self.work.call(stage, key)
            if inspect.isawaitable(outcome):
                self._count[index] += 1
                task = asyncio.ensure_future(self._awaited(stage, key, outcome))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return
            if not self._function_done(stage, key, outcome):
                return
            index += 1
        self._end(key)

    async def _awaited(self, stage: Stage, key: int, pending: Awaitable[Any]) -> None:
        try:
            async with self._calls[stage.index]:  # its concurrency: calls awaited at once
                value = await pending
        except asyncio.CancelledError:
            close = getattr(pending, "close", None)
            if close is not None:
                close()  # stopped before its turn: never awaited, no warning
            result = RowResult(
                key=key,
                status=RowStatus.CANCELLED,
                error=self.stop_reason or "cancelled",
                error_type=ErrorType.CANCELLED,
            )
        except Exception as exc:
            result = self.work.function_error(key, "fn", exc)
        else:
            result = self.work.function_value(key, stage, value)
        try:
            if self._function_done(stage, key, result):
                self._go(key, stage.index + 1)
        finally:
            self._left(stage.index)

    def _function_done(self, stage: Stage, key: int, result: RowResult) -> bool:
        """Record a function step's result; True if the row goes on."""
        self.function_results[stage.index][key] = result
        self._emit(RowFinished(self._now(), key, result, stage.name, "function"))
        if result.status in (RowStatus.OK, RowStatus.SKIPPED):
            return True
        self._end(key, failed=stage.index)
        return False

    def _stepped(self, index: int, event: RowFinished) -> None:
        """A model step ended for a row: on to its next step, or the end of the row."""
        key, result = event.key, event.result
        try:
            if result.status is RowStatus.OK:
                self.work.keep(self.stages[index], result)
                self._go(key, index + 1)
            elif result.status is RowStatus.SKIPPED:
                self._go(key, index + 1)
            else:
                self._end(key, failed=index)
        finally:  # the step is left whatever happened: later steps can still be closed
            self._left(index)

    def _left(self, index: int) -> None:
        """A row left step `index`; once the step is empty, later steps may be closed."""
        self._count[index] -= 1
        if not self._count[index]:
            self._close_ready()

    def _end(self, key: int, failed: int | None = None) -> None:
        """The row has its final result: every step done, or one failed."""
        if failed is not None:
            self.failed_at[key] = failed
        else:
            self.stage_of[key] = len(self.stages)
        results = [self.result_of(i, key) for i in range(len(self.stages))]
        row = self.rows[key] = row_result(key, results, failed)
        self._emit(RowFinished(self._now(), key, row, None, "call"))

    def _close_ready(self) -> None:
        """Close each step's queue once no row can reach it any more."""
        if not self._source_done:
            return
        upstream = 0
        for index, count in enumerate(self._count):
            feed = self._feeds.get(index)
            if feed is not None and not feed.closed and upstream == 0:
                feed.close()
            upstream += count

    # -- helpers -------------------------------------------------------------------------

    def _engine_stopped(self, event: StopRequested) -> None:
        """One step stopped (a run error, the budget): the whole pipeline stops starting."""
        if self._begin_stop(event.reason):
            for engine in self.engines.values():
                engine.halt(event.reason)

    def _begin_stop(self, reason: str) -> bool:
        if self._stopping:
            return False
        self._stopping = True
        self.stop_reason = reason
        self._emit(StopRequested(t=self._now(), reason=reason))
        for task in list(self._tasks):
            task.cancel()
        for feed in self._feeds.values():
            feed.close()
            feed.taken.set()  # the source stops waiting for room
        return True

    def _budget_meter(self, usd: float, *, spent: float = 0.0) -> BudgetMeter:
        return BudgetMeter(
            usd,
            gate=self.gate,
            pause_at_budget=self._pause_at_budget,
            on_reached=lambda: self._emit(Paused(t=self._now(), reason="budget")),
            spent=spent,
        )

    def _now(self) -> float:
        return self.clock.now() - self._t0
