"""mode="batch" over HTTP: the real openai and anthropic SDKs against the fake server's
Files, Batch and Message Batches APIs (results out of order, row errors, limits, waves,
expiry, cancel, a killed process, a server without batches, odd result bodies, keys)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import KEY, eventually
from fake_server import FakeLLMServer
from pydantic import BaseModel

import notebook_kit as kit
from notebook_kit.batch import service as batch_service
from notebook_kit.errors import AuthError, ConfigError

BATCH: dict[str, Any] = {"mode": "batch", "batch_poll_s": 0.02, "progress": False}
PROVIDERS = ("openai", "anthropic")


def prompts(n: int, **replaced: str) -> pd.DataFrame:
    texts = [f"question {i}" for i in range(n)]
    for row, text in replaced.items():
        texts[int(row)] = text
    return pd.DataFrame({"prompt": texts})


def provider(server: FakeLLMServer, name: str, key: str = KEY) -> kit.Provider:
    if name == "openai":
        return kit.OpenAIProvider(base_url=server.openai_base_url, api_key=key)
    return kit.AnthropicProvider(base_url=server.anthropic_base_url, api_key=key)


@pytest.fixture
def batches() -> Any:
    with FakeLLMServer(api_key=KEY, seed=7, batch_seconds=0.3) as fake:
        yield fake


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_batch_run_matches_results_out_of_order_at_the_batch_price(
    batches: FakeLLMServer, name: str
) -> None:
    df = prompts(20)
    result = await kit.run_df(df, "prompt", provider=provider(batches, name), **BATCH)
    assert (result["status"] == "ok").all()
    stats = batches.stats()
    assert stats["batches_created"] == 1 and stats["batch_requests"] == 20
    online = await kit.run_df(
        df, "prompt", provider=provider(batches, name), cache=False, progress=False
    )
    assert result["response"].tolist() == online["response"].tolist()  # each row its own
    assert result["input_tokens"].tolist() == online["input_tokens"].tolist()
    half = (online["cost_usd"] / 2).round(10).tolist()
    assert result["cost_usd"].round(10).tolist() == half


@pytest.mark.parametrize("name", PROVIDERS)
async def test_row_errors_map_as_online_and_retry_failed_runs_them_online(
    batches: FakeLLMServer, name: str
) -> None:
    df = prompts(6, **{"1": "bad [[status=400]]", "2": "busy [[status=500 times=1]]"})
    chosen = provider(batches, name)
    result = await kit.run_df(df, "prompt", provider=chosen, **BATCH)
    assert result["status"].tolist() == ["ok", "error", "error", "ok", "ok", "ok"]
    assert result["error_type"][1] == "bad_request" and result["error_type"][2] == "server"
    assert str(result["error"][2]).startswith("HTTP 5")
    again = await kit.retry_failed(result, only=["server"])
    assert again["status"].tolist() == ["ok", "error", "ok", "ok", "ok", "ok"]
    assert batches.stats()["batches_created"] == 1  # the retry went online


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_job_past_the_limits_is_split(
    batches: FakeLLMServer, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = batch_service.BatchLimit(requests=7, bytes=10**9)
    monkeypatch.setitem(batch_service.BATCH_LIMITS, name, small)
    batches.configure(batch_max_requests=7)  # the server would refuse a bigger one
    result = await kit.run_df(prompts(20), "prompt", provider=provider(batches, name), **BATCH)
    assert (result["status"] == "ok").all()
    assert sorted(batches.stats()["batch_sizes"]) == [6, 7, 7]


async def test_a_batch_past_the_enqueued_token_limit_waits_for_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small = batch_service.BatchLimit(requests=5, bytes=10**9)
    monkeypatch.setitem(batch_service.BATCH_LIMITS, "openai", small)
    with FakeLLMServer(api_key=KEY, batch_seconds=0.3, batch_enqueued_token_limit=25) as fake:
        chosen = provider(fake, "openai")
        result = await kit.run_df(prompts(15), "prompt", provider=chosen, **BATCH)
        stats = fake.stats()
    assert (result["status"] == "ok").all()
    assert stats["batches_created"] > 3  # some were refused for the queue and sent again
    assert sum(stats["batch_sizes"]) > 15


@pytest.mark.parametrize("name", PROVIDERS)
async def test_rows_a_batch_did_not_reach_before_it_expired_are_expired(name: str) -> None:
    with FakeLLMServer(api_key=KEY, batch_seconds=2.0, batch_expire_after=1.2) as fake:
        result = await kit.run_df(prompts(12), "prompt", provider=provider(fake, name), **BATCH)
    ok, expired = result["status"] == "ok", result["error_type"] == "expired"
    assert ok.any() and expired.any() and (ok | expired).all()
    assert list(result.attrs["notebook_kit"]["batches"].values()) == ["expired"]
    assert result.loc[expired, "status"].eq("error").all()


@pytest.mark.parametrize("name", PROVIDERS)
async def test_stop_cancels_the_batch_and_keeps_what_it_finished(name: str) -> None:
    with FakeLLMServer(api_key=KEY, batch_seconds=3.0) as fake:
        job = kit.start(prompts(30), "prompt", provider=provider(fake, name), panel=False, **BATCH)
        await eventually(lambda: any(b.done >= 3 for b in job.snapshot().batches))
        job.cancel()
        result = await job
        assert fake.stats()["batch_cancels"] == 1
    done = result["status"] == "ok"
    assert 3 <= done.sum() < 30
    assert result.loc[~done, "error_type"].eq("cancelled").all()
    assert result.loc[~done, "status"].eq("cancelled").all()


async def test_a_server_without_batches_is_refused_before_anything_is_uploaded() -> None:
    with FakeLLMServer(api_key=KEY, batches=False) as fake:
        with pytest.raises(ConfigError, match="has no batch API"):
            await kit.run_df(prompts(3), "prompt", provider=provider(fake, "openai"), **BATCH)
        assert fake.stats()["files_uploaded"] == 0


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_wrong_key_stops_the_run_and_never_shows_the_key(
    batches: FakeLLMServer, name: str
) -> None:
    wrong = "sk-wrong-SENTINEL-9999999999"
    with pytest.raises(AuthError) as caught:
        await kit.run_df(prompts(3), "prompt", provider=provider(batches, name, wrong), **BATCH)
    assert wrong not in str(caught.value)
    partial = caught.value.partial
    assert partial is not None and len(partial) == 3
    assert not partial.astype(str).apply(lambda c: c.str.contains("SENTINEL")).any().any()


class Verdict(BaseModel):
    label: str
    score: int


@pytest.mark.parametrize("name", PROVIDERS)
async def test_structured_output_is_validated_in_a_batch(batches: FakeLLMServer, name: str) -> None:
    result = await kit.run_df(
        prompts(4), "prompt", provider=provider(batches, name), schema=Verdict, **BATCH
    )
    assert (result["status"] == "ok").all()
    assert result["label"].notna().all() and result["score"].notna().all()


async def test_odd_fields_in_batch_results_lose_no_row() -> None:
    patch = {"usage": {"prompt_tokens": "NaN", "completion_tokens": -3}, "model": 7}
    with FakeLLMServer(api_key=KEY, batch_seconds=0.2, reply_patch=patch) as fake:
        result = await kit.run_df(prompts(5), "prompt", provider=provider(fake, "openai"), **BATCH)
    assert (result["status"] == "ok").all()
    assert result["input_tokens"].isna().all() and result["cost_usd"].isna().all()


def cell(tmp_path: Path, fake: FakeLLMServer, rows: int) -> tuple[list[str], dict[str, str]]:
    """A notebook cell as a script (the command and its environment): a batch run of `rows`
    rows on the fake server; run with the argument `die`, it dies (os._exit(3)) the moment
    it would write its created batch down."""
    script = tmp_path / "cell.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, os, sys
            import pandas as pd
            import notebook_kit as kit
            from notebook_kit.batch.store import BatchStore
            if sys.argv[1:] == ["die"]:
                BatchStore.settle_claim = lambda *args: os._exit(3)
            df = pd.DataFrame({{"prompt": [f"question {{i}}" for i in range({rows})]}})
            provider = kit.OpenAIProvider(base_url={fake.openai_base_url!r}, api_key={KEY!r})
            async def main():
                result = await kit.run_df(
                    df, "prompt", provider=provider, mode="batch", batch_poll_s=0.05,
                    progress=False)
                print("RESULT", result["status"].tolist())
            asyncio.run(main())
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return [sys.executable, str(script)], env


def test_a_killed_kernel_is_reattached_and_the_server_sees_one_batch(tmp_path: Path) -> None:
    """A process creates the batch and is killed; the same code in a new process reattaches:
    the server sees exactly one batch created."""
    with FakeLLMServer(api_key=KEY, batch_seconds=2.0) as fake:
        command, env = cell(tmp_path, fake, 8)
        first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        for _ in range(500):
            if fake.stats()["batch_retrieves"] >= 1:  # created, written down, polled
                break
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert fake.stats()["batches_created"] == 1
        second = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        assert "RESULT " + str(["ok"] * 8) in second.stdout
        assert fake.stats()["batches_created"] == 1


async def test_a_create_whose_reply_was_lost_is_found_not_sent_twice(
    batches: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from notebook_kit.batch.openai_batches import OpenAIBatches
    from notebook_kit.errors import CallError
    from notebook_kit.types import ErrorType

    real_submit = OpenAIBatches.submit

    async def reply_lost(self: OpenAIBatches, *args: Any, **kwargs: Any) -> Any:
        await real_submit(self, *args, **kwargs)  # the batch exists...
        raise CallError(ErrorType.CONNECTION, "connection failed (reset)")  # ...unknown to us

    monkeypatch.setattr(OpenAIBatches, "submit", reply_lost)
    result = await kit.run_df(prompts(5), "prompt", provider=provider(batches, "openai"), **BATCH)
    assert (result["status"] == "ok").all()
    assert batches.stats()["batches_created"] == 1
    assert kit.batches()["state"].tolist() == ["done"]


async def test_a_batch_that_failed_says_why() -> None:
    from notebook_kit.errors import ModelNotFoundError

    with FakeLLMServer(api_key=KEY, batch_seconds=0.2, models={"gpt-4.1-mini"}) as fake:
        chosen = provider(fake, "openai")
        with pytest.raises(ModelNotFoundError) as caught:
            await kit.run_df(prompts(3), "prompt", provider=chosen, model="gpt-nope", **BATCH)
    partial = caught.value.partial
    assert partial is not None
    assert partial["error"].str.contains("the batch failed: model_not_found").all()
    assert partial["error_type"].eq("not_found").all()


def test_a_kernel_killed_between_create_and_write_is_found_by_its_claim(tmp_path: Path) -> None:
    """The batch exists at the provider, but the process died before writing its id: the
    next run finds it by the claim in its metadata instead of creating another."""
    with FakeLLMServer(api_key=KEY, batch_seconds=0.5) as fake:
        command, env = cell(tmp_path, fake, 6)
        died = subprocess.run([*command, "die"], env=env, check=False)
        assert died.returncode == 3 and fake.stats()["batches_created"] == 1
        again = subprocess.run(command, env=env, capture_output=True, text=True)
        assert "RESULT " + str(["ok"] * 6) in again.stdout, again.stderr
        assert fake.stats()["batches_created"] == 1
