"""Limits that change during a run, meters, and the stall-tolerant deadline."""

from __future__ import annotations

import asyncio
import time

import pytest
from clocks import FakeTime

from notebook_kit.clock import LoopClock
from notebook_kit.config import RetryPolicy
from notebook_kit.deadline import Deadline
from notebook_kit.meters import AdaptiveConcurrency, Budget, ConcurrencyLimit, RateMeter, StartGate

pytestmark = pytest.mark.looptime  # waits in these tests are virtual


async def hold(limit: ConcurrencyLimit, seen: list[int], release: asyncio.Event) -> None:
    await limit.acquire()
    seen.append(limit.in_use)
    try:
        await release.wait()
    finally:
        limit.release()


async def test_limit_admits_at_most_total_and_grows_at_once() -> None:
    limit = ConcurrencyLimit(2)
    release = asyncio.Event()
    seen: list[int] = []
    tasks = [asyncio.create_task(hold(limit, seen, release)) for _ in range(6)]
    await asyncio.sleep(0.01)
    assert limit.in_use == 2
    limit.total = 5  # raising admits waiters without anyone releasing
    await asyncio.sleep(0.01)
    assert limit.in_use == 5
    release.set()
    await asyncio.gather(*tasks)
    assert max(seen) == 5
    assert limit.in_use == 0


async def test_lowering_the_limit_lets_holders_finish_and_admits_no_one_until_below() -> None:
    limit = ConcurrencyLimit(4)
    for _ in range(4):
        await limit.acquire()
    limit.total = 2
    waiter = asyncio.create_task(limit.acquire())
    limit.release()
    limit.release()  # 2 held now: not below the new total yet
    await asyncio.sleep(0.01)
    assert not waiter.done()
    limit.release()  # 1 held: the waiter may enter
    await asyncio.sleep(0.01)
    assert waiter.done()
    assert limit.in_use == 2


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    limit = ConcurrencyLimit(1)
    await limit.acquire()
    waiter = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limit.release()
    assert limit.in_use == 0
    await asyncio.wait_for(limit.acquire(), 1)


async def test_waiter_cancelled_while_a_release_runs_is_not_lost() -> None:
    limit = ConcurrencyLimit(1)
    await limit.acquire()
    waiter = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    limit.release()  # runs before the cancelled waiter resumes: it drops the dead waiter
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limit.in_use == 0
    await asyncio.wait_for(limit.acquire(), 1)


async def test_limit_rejects_zero() -> None:
    with pytest.raises(ValueError):
        ConcurrencyLimit(1).total = 0


async def test_rate_meter_spaces_starts_evenly() -> None:
    fake = FakeTime()
    meter = RateMeter(600, clock=fake)  # 10 per second
    starts = []
    for _ in range(5):
        await meter.take(1)
        starts.append(fake.t)
    assert starts == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


async def test_rate_meter_settles_real_cost() -> None:
    fake = FakeTime()
    meter = RateMeter(60, clock=fake)  # 1 unit per second
    await meter.take(10)  # estimated 10 units
    meter.settle(-8)  # really cost 2
    await meter.take(1)
    assert fake.t == pytest.approx(2.0)


async def test_rate_meter_does_not_burst_after_idle() -> None:
    fake = FakeTime()
    meter = RateMeter(60, clock=fake)
    await meter.take(1)
    fake.t += 100  # a long idle spell earns no credit
    await meter.take(1)
    t = fake.t
    await meter.take(1)
    assert fake.t - t == pytest.approx(1.0)


async def test_gate_cools_down_and_pauses() -> None:
    fake = FakeTime()
    gate = StartGate(clock=fake, policy=RetryPolicy())
    gate.cool_down(2.0)
    gate.cool_down(1.0)  # never shortens
    await gate.acquire()
    assert fake.t == pytest.approx(2.0)
    gate.pause()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    gate.resume()
    await asyncio.wait_for(waiter, 1)


async def test_a_cool_down_ending_under_a_millisecond_from_now_is_over() -> None:
    """A Retry-After computed from floats can end a hair after now; a virtual clock does not
    advance for such a sleep, and a row spun between a gate that said "open" and one that
    said "closed" (a run of the simulated rpm limit hung the test process)."""
    gate = StartGate(clock=LoopClock(), policy=RetryPolicy())
    gate.cool_down(1e-9)
    assert not gate.closed()
    await asyncio.wait_for(gate.acquire(), 1.0)
    gate.cool_down(0.01)
    assert gate.closed()


async def test_deadline_times_out_a_hung_call() -> None:
    with pytest.raises(TimeoutError):
        async with Deadline(0.05, LoopClock()):
            await asyncio.sleep(10)


@pytest.mark.looptime(False)  # the stall is real: a blocking call holds the loop
async def test_deadline_lets_a_reply_that_arrived_during_a_stall_through() -> None:
    """A blocked loop must not turn a reply that is already there into a timeout."""
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[str] = loop.create_future()

    async def call() -> str:
        async with Deadline(0.2, LoopClock()):
            return await reply

    task = asyncio.create_task(call())
    await asyncio.sleep(0.01)
    loop.call_soon(reply.set_result, "paid for")  # the reply lands as the loop resumes...
    time.sleep(0.6)  # noqa: ASYNC251 - ...a blocking cell holds the loop past the deadline
    assert await task == "paid for"


async def test_deadline_does_not_swallow_outside_cancellation() -> None:
    async def call() -> None:
        async with Deadline(5, LoopClock()):
            await asyncio.sleep(10)

    task = asyncio.create_task(call())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def adaptive(total: int, fake: FakeTime) -> tuple[ConcurrencyLimit, AdaptiveConcurrency, list[int]]:
    limit = ConcurrencyLimit(total)
    changes: list[int] = []
    return (
        limit,
        AdaptiveConcurrency(limit, enabled=True, clock=fake, on_change=changes.append),
        changes,
    )


def test_adaptive_takes_a_slot_per_429_and_at_most_half_per_overload() -> None:
    fake = FakeTime()
    limit, aimd, _ = adaptive(20, fake)
    for _ in range(15):  # one overload: 15 rejections within the calm second
        aimd.rate_limited(None)
    assert limit.total == 10
    fake.t += 1.5  # a new overload may halve again
    for _ in range(3):
        aimd.rate_limited(None)
    assert limit.total == 7


def test_adaptive_grows_back_slowly_and_never_above_the_target() -> None:
    fake = FakeTime()
    limit, aimd, changes = adaptive(4, fake)
    aimd.rate_limited(None)
    aimd.rate_limited(None)
    assert limit.total == 2
    for _ in range(10):
        aimd.succeeded()
    assert limit.total == 2  # successes alone are not enough: at most one step per 2 s
    for _ in range(10):
        fake.t += 2.0
        for _ in range(limit.total):
            aimd.succeeded()
    assert limit.total == 4 and changes == [3, 2, 3, 4]
    aimd.set_target(6)
    assert limit.total == 6


async def test_budget_reserves_waits_and_refuses() -> None:
    budget = Budget(1.0)
    assert await budget.reserve(0.6)
    waiter = asyncio.create_task(budget.reserve(0.6))  # does not fit while 0.6 is held
    await asyncio.sleep(0.01)
    assert not waiter.done()
    budget.settle(0.6, 0.1)  # the request cost less than its reservation
    assert await asyncio.wait_for(waiter, 1)
    budget.settle(0.6, 0.6)
    assert not await budget.reserve(0.5)  # 0.7 spent, nothing in flight: it cannot fit
    budget.raise_to(2.0)
    assert await budget.reserve(0.5)
