"""Issue 9 regressions that live in the frame, the re-run path and the controls.

Each test names the issue item it guards. They run on the demo model on virtual time
(looptime) unless they need the wire.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import threading
from decimal import Decimal
from typing import Any, Literal

import numpy as np
import pandas as pd
import pydantic
import pytest
from conftest import KEY

import notebook_kit as kit
from notebook_kit.events import LimitChanged

pytestmark = pytest.mark.looptime


class Counting(kit.DemoProvider):
    """The demo model, counting the requests it answered."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.calls = 0

    def session(self, *, timeout: float, clock: Any) -> Any:
        return _Counted(super().session(timeout=timeout, clock=clock), self)


class _Counted:
    """Wraps the demo model's session to see each request; `owner` is the provider."""

    def __init__(self, inner: Any, owner: Any) -> None:
        self._inner, self._owner = inner, owner

    async def __aenter__(self) -> _Counted:
        self._session = await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._inner.__aexit__(*exc)

    async def complete(self, request: Any) -> Any:
        self._owner.calls += 1
        return await self._session.complete(request)


async def run(df: pd.DataFrame, provider: kit.DemoProvider, **options: Any) -> pd.DataFrame:
    options.setdefault("progress", False)
    options.setdefault("cache", False)
    return await kit.run_df(df, "prompt", provider=provider, **options)


async def test_item5_retry_failed_refuses_a_frame_without_kit_columns_before_sending() -> None:
    flaky = Counting(latency=0.1, error_rate=0.5, seed=3)
    first = await run(pd.DataFrame({"prompt": [f"q{i}" for i in range(20)]}), flaky, max_attempts=1)
    assert (first["status"] == "error").any()
    calls = flaky.calls
    with pytest.raises(kit.ConfigError, match=r"\['latency_s'\] are gone"):
        await kit.retry_failed(first.drop(columns=["latency_s"]))
    assert flaky.calls == calls  # nothing was paid for


async def test_item16_output_col_may_not_be_a_kit_column() -> None:
    df = pd.DataFrame({"prompt": ["a"]})
    for name in ("status", "error", "cost_usd"):
        with pytest.raises(kit.ConfigError, match="one of the kit's own columns"):
            await run(df, kit.DemoProvider(latency=0), output_col=name)


async def test_item17_retry_failed_keeps_the_original_runs_cache_off() -> None:
    flaky = kit.DemoProvider(latency=0.1, error_rate=0.5, seed=3)
    first = await run(pd.DataFrame({"prompt": [f"q{i}" for i in range(20)]}), flaky, max_attempts=1)
    flaky.error_rate = 0.0
    fixed = await kit.retry_failed(first)
    assert (fixed["status"] == "ok").all()
    assert fixed.attrs["notebook_kit"]["cache"] is None
    assert kit.cache_info()["entries"] == 0  # the default cache file was not written


async def test_item19_every_missing_value_flavour_is_skipped() -> None:
    missing = [None, np.nan, np.float32("nan"), Decimal("NaN"), pd.NaT, np.datetime64("NaT"), pd.NA]
    df = pd.DataFrame({"prompt": ["real", *missing]}, dtype=object)
    result = await run(df, kit.DemoProvider(latency=0))
    assert result["status"].tolist() == ["ok"] + ["skipped"] * len(missing)
    assert result["attempts"].tolist() == [1] + [0] * len(missing)


@pytest.mark.parametrize(
    "index",
    [
        pd.Index([7, 7, 3, 3, 7, 3] * 5),  # duplicate labels
        pd.MultiIndex.from_product([["a", "b", "c"], range(10)]),
    ],
    ids=["duplicate-labels", "multiindex"],
)
async def test_item20_retry_failed_replaces_rows_by_position(index: pd.Index) -> None:
    flaky = kit.DemoProvider(latency=0.1, error_rate=0.5, seed=5)
    df = pd.DataFrame({"prompt": [f"row {i}" for i in range(30)]}, index=index)
    first = await run(df, flaky, max_attempts=1)
    failed = (first["status"] != "ok").to_numpy()
    assert 0 < failed.sum() < 30
    flaky.error_rate = 0.0
    fixed = await kit.retry_failed(first)
    assert fixed.index.equals(df.index)
    assert fixed["prompt"].tolist() == df["prompt"].tolist()
    assert (fixed["status"] == "ok").all()
    pd.testing.assert_frame_equal(fixed[~failed], first[~failed])  # untouched, in place
    assert fixed["attempts"].to_numpy()[failed].tolist() == [2] * int(failed.sum())
    replies = fixed["response"].tolist()
    assert replies == [f"[demo] You asked: row {i}" for i in range(30)]  # each its own reply


async def test_item23_each_slider_steers_only_its_own_job() -> None:
    demo = kit.DemoProvider(latency=0.5, jitter=0.0)
    df = pd.DataFrame({"prompt": [f"q{i}" for i in range(40)]})
    first = kit.start(df, "prompt", provider=demo, concurrency=2, panel=True, cache=False)
    second = kit.start(df, "prompt", provider=demo, concurrency=3, panel=True, cache=False)
    await asyncio.sleep(0.1)
    first.panel.concurrency.value = 6
    await asyncio.sleep(0.1)
    assert (first.snapshot().target, second.snapshot().target) == (6, 3)
    defaults_panel = kit.controls()
    defaults_panel.concurrency.value = 11  # for the next runs, not the running ones
    await asyncio.sleep(0.1)
    assert (first.snapshot().target, second.snapshot().target) == (6, 3)
    one, two = await first, await second
    assert (one.attrs["notebook_kit"]["concurrency"], two.attrs["notebook_kit"]["concurrency"]) == (
        2,
        3,
    )
    assert kit.report(one).limit_changes[-1][1] == 6 and kit.report(two).limit_changes == [(0.0, 3)]
    defaults_panel.concurrency.value = kit.defaults.concurrency


async def test_item23_controls_from_another_thread_run_on_the_jobs_loop() -> None:
    demo = kit.DemoProvider(latency=0.5, jitter=0.0)
    job = kit.start(pd.DataFrame({"prompt": ["a", "b", "c"]}), "prompt", provider=demo, cache=False)
    threads: list[int] = []
    job.subscribe(
        lambda e: threads.append(threading.get_ident()) if isinstance(e, LimitChanged) else None
    )
    await asyncio.sleep(0.1)
    caller = threading.Thread(target=job.set_concurrency, args=(5,))  # like a widget's subshell
    caller.start()
    caller.join()
    await job
    assert len(threads) == 2 and set(threads) == {threading.get_ident()}  # the loop's thread


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8", None])
async def test_a_bad_concurrency_from_the_caller_is_refused_and_changes_nothing(bad: Any) -> None:
    demo = kit.DemoProvider(latency=0.05, jitter=0.0)
    job = kit.start(pd.DataFrame({"prompt": list("abcdef")}), "prompt", provider=demo, cache=False)
    job.set_concurrency(3)
    with pytest.raises(kit.ConfigError, match="concurrency must be a whole number >= 1"):
        job.set_concurrency(bad)
    result = await job
    assert (job.snapshot().limit, job.snapshot().target) == (3, 3)
    assert (result["status"] == "ok").all()


class Billing(kit.DemoProvider):
    """The demo model, billing input tokens as `bill(text)` says and replying as `reply_model`
    (a provider's alias, or a dated name no price table has)."""

    def __init__(self, bill: Any, reply_model: str | None = None, **settings: Any) -> None:
        super().__init__(**settings)
        self.bill, self.reply_model = bill, reply_model

    def session(self, *, timeout: float, clock: Any) -> Any:
        return _Billed(super().session(timeout=timeout, clock=clock), self)


class _Billed(_Counted):
    async def complete(self, request: Any) -> Any:
        reply = await self._session.complete(request)
        owner: Billing = self._owner
        text = "".join(str(m["content"]) for m in request.messages)
        model = owner.reply_model or reply.model
        return dataclasses.replace(reply, input_tokens=owner.bill(text), model=model)


def utf8_bytes(text: str) -> int:
    return len(text.encode("utf-8"))  # the most tokens any byte-level tokenizer can make


@pytest.mark.usefixtures("priced")
@pytest.mark.parametrize(
    "prompt",
    [
        "请用一句话总结这篇关于城市交通的文章。" * 3,
        "🙂🚀🎉✨" * 8,
        "def f(x):\n    return {x: [x] * 2}\n",
    ],
    ids=["cjk", "emoji", "code"],
)
async def test_item6_the_budget_holds_for_every_script(prompt: str) -> None:
    greedy = Billing(utf8_bytes, latency=0.1)
    df = pd.DataFrame({"prompt": [f"{prompt} {i}" for i in range(200)]})
    result = await run(
        df, greedy, model="priced-model", budget_usd=0.5, max_tokens=10, concurrency=20
    )
    billed = result.attrs["notebook_kit"]["cost_usd"]
    assert billed <= 0.5
    assert (result["status"] == "cancelled").any()  # the cap, not the data, ended the run


class Verdict(pydantic.BaseModel):
    label: Literal["keep", "drop"]
    reason: str
    confidence: float


@pytest.mark.usefixtures("priced")
async def test_item6_the_budget_holds_when_a_schema_goes_with_every_request() -> None:
    """A schema is input too (a response format, a tool, a system line): billed here at one
    token per byte on top of the prompt, the run still stops inside its budget."""
    schema_bytes = len(json.dumps(pydantic.TypeAdapter(Verdict).json_schema()).encode())
    greedy = Billing(lambda text: utf8_bytes(text) + schema_bytes, latency=0.1)
    df = pd.DataFrame({"prompt": [f"judge item {i}" for i in range(100)]})
    options: dict[str, Any] = dict(model="priced-model", max_tokens=10, concurrency=8)
    result = await run(df, greedy, schema=Verdict, budget_usd=3.0, **options)
    assert result.attrs["notebook_kit"]["cost_usd"] <= 3.0
    assert (result["status"] == "ok").sum() >= 5 and (result["status"] == "cancelled").any()
    small = await run(df.head(2), greedy, schema=Verdict, budget_usd=0.2, **options)
    assert small["status"].eq("cancelled").all()
    stopped = small.attrs["notebook_kit"]["stopped"]
    assert re.match(r"not run: one request may cost up to \$0\.\d+ \(its text", stopped)


@pytest.mark.usefixtures("priced")
async def test_item6_english_prose_still_spends_90_percent_of_the_budget() -> None:
    """The byte ceiling is ~4x an English request's input: the run stops at most one
    ceiling (here $0.17 of $3) short of the budget."""
    prose = "Summarise this review of a small tent in one short sentence please. " * 2
    fair = Billing(lambda text: len(text) // 4, latency=0.1)
    df = pd.DataFrame({"prompt": [f"{prose} {i}" for i in range(400)]})
    result = await run(df, fair, model="priced-model", budget_usd=3.0, max_tokens=10)
    assert (result["status"] == "cancelled").any()
    assert 0.9 * 3.0 <= result.attrs["notebook_kit"]["cost_usd"] <= 3.0


@pytest.mark.usefixtures("priced")
async def test_item7_an_alias_in_the_reply_is_priced_by_the_requested_model() -> None:
    alias = Billing(lambda text: 10, reply_model="priced-model-2099-01-01-alias", latency=0.1)
    result = await run(pd.DataFrame({"prompt": ["a", "b"]}), alias, model="priced-model")
    assert result["model"].eq("priced-model-2099-01-01-alias").all()
    assert result["cost_usd"].notna().all() and result["cost_usd"].gt(0).all()
    assert result.attrs["notebook_kit"]["cost_usd"] == pytest.approx(result["cost_usd"].sum())


async def test_item7_an_unknown_price_is_na_in_the_total_too_never_zero() -> None:
    demo = kit.DemoProvider(latency=0.1)
    result = await run(pd.DataFrame({"prompt": ["a", "b"]}), demo, model="nobody-prices-this")
    assert result["cost_usd"].isna().all()
    meta = result.attrs["notebook_kit"]
    assert meta["cost_usd"] is None and meta["unpriced_replies"] == 2


@pytest.mark.looptime(False)  # the wire: the fake server records what it received
@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_item21_each_rows_system_prompt_reaches_the_server(server: Any, api: str) -> None:
    url = server.openai_base_url if api == "openai" else server.anthropic_base_url
    df = pd.DataFrame(
        {"prompt": ["a", "b", "c", "d"], "persona": ["Be brief.", None, "Be kind.", "Be brief."]}
    )
    result = await kit.run_df(
        df,
        "prompt",
        system_col="persona",
        system="Default voice.",  # ignored: a per-row system prompt wins where given
        provider=api,
        base_url=url,
        api_key=KEY,
        concurrency=1,
        progress=False,
        cache=False,
    )
    assert (result["status"] == "ok").all()
    assert server.stats()["systems_seen"] == ["Be brief.", "", "Be kind.", "Be brief."]
