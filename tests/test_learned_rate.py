"""A rate learned from 429s, against a limit nobody told (the demo model's simulated rpm,
no rate headers), on looptime's virtual clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pandas as pd
import pytest

import notebook_kit as kit
from notebook_kit.events import AttemptFinished

pytestmark = pytest.mark.looptime


async def run(n: int, **options: Any) -> tuple[pd.DataFrame, list[AttemptFinished]]:
    df = pd.DataFrame({"prompt": [f"question {i}" for i in range(n)]})
    seen: list[AttemptFinished] = []
    job = kit.start(df, "prompt", cache=False, progress=False, concurrency=50, **options)
    job.subscribe(seen.append, (AttemptFinished,))  # type: ignore[arg-type]
    return await job, seen


def limited() -> kit.DemoProvider:
    return kit.DemoProvider(latency=0.2, jitter=0.0, rpm=600, retry_after=None)


async def test_an_undisclosed_limit_is_learned_close_to_it_with_few_429s() -> None:
    result, attempts = await run(300, provider=limited())
    assert (result["status"] == "ok").all()
    rejected = [a.t for a in attempts if a.outcome == "rate_limit"]
    assert len(rejected) <= 60
    assert sum(t > 2.0 for t in rejected) <= 20  # after the first burst, a few
    ends = sorted(a.t for a in attempts if a.outcome == "ok")
    rate = (len(ends) - 1) / (ends[-1] - ends[0])
    assert rate >= 0.9 * 10  # of the server's 10 a second


async def test_a_run_that_meets_no_limit_is_not_slowed() -> None:
    free = kit.DemoProvider(latency=0.2, jitter=0.0)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await run(200, provider=free)
    learning = loop.time() - began
    began = loop.time()
    await run(200, provider=kit.DemoProvider(latency=0.2, jitter=0.0), learn_rate=False)
    assert learning == pytest.approx(loop.time() - began, abs=1e-6)


async def test_rate_headers_turn_the_learning_off() -> None:
    from notebook_kit.clock import LoopClock
    from notebook_kit.errors import CallError
    from notebook_kit.meters import AttemptOutcome
    from notebook_kit.meters.learned import BACKOFF, CROWDED, MIN_SPAN, LearnedRate
    from notebook_kit.types import Completion, ErrorType, RateInfo, Request

    meter = LearnedRate(LoopClock())
    request = Request(key=0, messages=[{"role": "user", "content": "hi"}])
    await meter.acquire(request)
    ok = Completion(text="x", model="m")
    for _ in range(20):
        meter.release(None, AttemptOutcome(request, True, ok))
    limited_ = CallError(ErrorType.RATE_LIMIT, "429", status=429)
    for _ in range(CROWDED):
        meter.release(None, AttemptOutcome(request, True, None, limited_))
    # 20 accepted at once: measured over the shortest span, the estimate errs high
    assert meter.rate is not None and meter.rate == pytest.approx(20 / MIN_SPAN * BACKOFF)
    told = Completion(text="x", model="m", rate=RateInfo(remaining_requests=5))
    meter.release(None, AttemptOutcome(request, True, told))
    assert getattr(meter, "rate") is None and meter.told  # noqa: B009 - read afresh


async def test_a_server_refusing_a_few_requests_at_random_is_not_slowed() -> None:
    """3% of requests refused at random, whatever the rate: no limit to learn. Before the
    guard, each cut measured a lower rate than the last and the run crawled (128 s of
    virtual time against 23 s without learning, for lesson 3's frame)."""

    def flaky() -> kit.DemoProvider:
        return kit.DemoProvider(latency=0.2, jitter=0.0, rate_limit_rate=0.03, seed=3)

    loop = asyncio.get_running_loop()
    began = loop.time()
    result, attempts = await run(400, provider=flaky())
    learning = loop.time() - began
    assert (result["status"] == "ok").all()
    assert sum(a.outcome == "rate_limit" for a in attempts) >= 5  # the 429s came
    began = loop.time()
    await run(400, provider=flaky(), learn_rate=False)
    assert learning == pytest.approx(loop.time() - began, abs=1e-6)


async def test_stray_429s_do_not_cut_a_learned_rate_until_it_regrows() -> None:
    """After an overload, a lone 429 below the rate the server took then is a stray one;
    once the rate has grown back to it, a lone 429 is the limit again and cuts."""
    from notebook_kit.clock import LoopClock
    from notebook_kit.errors import CallError
    from notebook_kit.meters import AttemptOutcome
    from notebook_kit.meters.learned import BACKOFF, CROWDED, GROWTH, LearnedRate
    from notebook_kit.types import Completion, ErrorType, Request

    meter = LearnedRate(LoopClock())
    request = Request(key=0, messages=[{"role": "user", "content": "hi"}])
    ok = AttemptOutcome(request, True, Completion(text="x", model="m"))
    refused = AttemptOutcome(
        request, True, None, CallError(ErrorType.RATE_LIMIT, "429", status=429)
    )
    await meter.acquire(request)
    for _ in range(10):  # 10 a second accepted for 5 s
        await asyncio.sleep(0.5)
        for _ in range(5):
            meter.release(None, ok)
    for _ in range(CROWDED):
        meter.release(None, refused)
    assert meter.rate == pytest.approx(10 * BACKOFF, rel=0.03)
    for _ in range(2 * 40):  # the overload's 429s leave the sample
        meter.release(None, ok)
    await asyncio.sleep(2.0)
    meter.release(None, refused)  # a lone 429 at about 9.2 a second: stray
    after_stray = meter.rate
    assert after_stray is not None and after_stray > 10 * BACKOFF
    await asyncio.sleep(0.2 / GROWTH)  # grown past the 10 a second the server took
    await meter.acquire(request)
    grown = meter.rate
    assert grown is not None and grown > 10
    meter.release(None, refused)
    assert meter.rate == pytest.approx(grown * BACKOFF)


async def test_a_huge_retry_after_is_the_gates_to_cap_not_the_learned_rates() -> None:
    """Retry-After: 1e9 on the 429s of an overload. The start gate waits at most
    `retry_after_cap`; the learned rate used to push its next start a billion seconds away
    (uncapped), so every row sat in it after the gate had opened."""
    from notebook_kit.clock import LoopClock
    from notebook_kit.errors import CallError
    from notebook_kit.meters import AttemptOutcome
    from notebook_kit.meters.learned import CROWDED, LearnedRate
    from notebook_kit.types import Completion, ErrorType, Request

    meter = LearnedRate(LoopClock())
    request = Request(key=0, messages=[{"role": "user", "content": "hi"}])
    await meter.acquire(request)
    await asyncio.sleep(1.0)
    for _ in range(10):
        meter.release(None, AttemptOutcome(request, True, Completion(text="x", model="m")))
    huge = CallError(ErrorType.RATE_LIMIT, "429", status=429, retry_after=1e9)
    for _ in range(CROWDED):
        meter.release(None, AttemptOutcome(request, True, None, huge))
    assert meter.rate is not None  # the overload was learned
    await asyncio.wait_for(meter.acquire(request), timeout=10.0)  # virtual seconds


def test_learn_rate_is_an_option() -> None:
    with pytest.raises(kit.ConfigError, match="learn_rate must be True or False"):
        kit.run_df_sync(pd.DataFrame({"p": ["x"]}), "p", learn_rate="no")  # type: ignore[arg-type]


async def test_a_first_burst_answered_at_once_is_not_learned_too_low() -> None:
    """A server that answers at once: the first 429s come back with one reply accepted so
    far. Measured over a whole second that is 1 a second, and GROWTH took minutes to climb
    back (174 s for 300 rows against the fake server); the estimate now errs high, and the
    next 429 cuts it to what the server really takes."""
    from notebook_kit.clock import LoopClock
    from notebook_kit.errors import CallError
    from notebook_kit.meters import AttemptOutcome
    from notebook_kit.meters.learned import CROWDED, LearnedRate
    from notebook_kit.types import Completion, ErrorType, Request

    meter = LearnedRate(LoopClock())
    request = Request(key=0, messages=[{"role": "user", "content": "hi"}])
    await meter.acquire(request)
    await asyncio.sleep(0.01)
    meter.release(None, AttemptOutcome(request, True, Completion(text="x", model="m")))
    limited_ = CallError(ErrorType.RATE_LIMIT, "429", status=429)
    for _ in range(CROWDED):
        meter.release(None, AttemptOutcome(request, True, None, limited_))
    assert meter.rate is not None and meter.rate >= 10  # not 0.9 a second
