"""Checks the fake LLM server's batch jobs (OpenAI Files + Batch, Anthropic Message Batches)
with the real openai and anthropic SDK clients over HTTP."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import aiohttp
import anthropic
import openai
import pydantic
import pytest
from anthropic.types import Message
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse
from anthropic.types.messages.batch_create_params import Request
from conftest import KEY
from fake_server import FakeLLMServer, batches
from openai.types import Batch
from openai.types.chat import ChatCompletion

MODEL = "test-model"
ENDPOINT: Final = "/v1/chat/completions"
OPENAI_ENDED = ("completed", "failed", "expired", "cancelled")
T = TypeVar("T")


class Verdict(pydantic.BaseModel):
    label: str
    score: int


SCHEMA = Verdict.model_json_schema()


class Clock:
    """Stands in for the `time` module of the batch store: batches move when it is moved."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000 + self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(batches, "time", fake)
    return fake


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(api_key=KEY, seed=7, batch_seconds=0.3) as fake:
        yield fake


def line(custom_id: str, prompt: str, model: str = MODEL, **body: Any) -> dict[str, Any]:
    """One request of an OpenAI batch input file."""
    messages = [{"role": "user", "content": prompt}]
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": ENDPOINT,
        "body": {"model": model, "messages": messages, **body},
    }


def to_jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


async def submit(oai: openai.AsyncOpenAI, records: list[dict[str, Any]], **kwargs: Any) -> Batch:
    upload = await oai.files.create(file=("requests.jsonl", to_jsonl(records)), purpose="batch")
    batch: Batch = await oai.batches.create(
        input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h", **kwargs
    )
    return batch


async def until(fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> list[T]:
    """Every answer of `fetch`, polled until one is `done` (at most 5 s)."""
    seen: list[T] = []
    deadline = time.monotonic() + 5
    while not seen or not done(seen[-1]):
        assert time.monotonic() < deadline, f"not done within 5 s: {seen[-1]}"
        await asyncio.sleep(0.02)
        seen.append(await fetch())
    return seen


async def file_lines(oai: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    content = await oai.files.content(file_id)
    return [json.loads(text) for text in content.text.splitlines()]


def claude_request(custom_id: str, prompt: str, **params: Any) -> Request:
    messages = [{"role": "user", "content": prompt}]
    body = {"model": MODEL, "max_tokens": 100, "messages": messages, **params}
    return {"custom_id": custom_id, "params": cast(MessageCreateParamsNonStreaming, body)}


async def results(
    claude: anthropic.AsyncAnthropic, batch_id: str
) -> list[MessageBatchIndividualResponse]:
    return [result async for result in await claude.messages.batches.results(batch_id)]


# -- OpenAI ------------------------------------------------------------------------------


async def test_openai_batch_runs_to_its_end(server: FakeLLMServer, oai: openai.AsyncOpenAI) -> None:
    structured = {"type": "json_schema", "json_schema": {"name": "v", "schema": SCHEMA}}
    records = [line(f"row-{i}", f"question {i}") for i in range(4)]
    records += [
        line("row-4", "judge it", response_format=structured),
        line("row-5", "cut [[finish=length]]"),
        line("row-6", "long [[tokens=9]]"),
    ]
    created = await submit(oai, records, metadata={"job": "nightly", "part": "1"})
    assert created.status == "validating"
    assert created.request_counts is not None and created.request_counts.total == 0
    assert created.output_file_id is None and created.completed_at is None

    seen = await until(lambda: oai.batches.retrieve(created.id), lambda b: b.status == "completed")
    statuses = [batch.status for batch in seen]
    order = ["validating", "in_progress", "finalizing", "completed"]
    assert [order.index(status) for status in statuses] == sorted(map(order.index, statuses))
    completed = [batch.request_counts.completed for batch in seen if batch.request_counts]
    assert completed == sorted(completed)
    batch = seen[-1]
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (7, 7)
    assert batch.request_counts.failed == 0 and batch.error_file_id is None
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    assert batch.expires_at == batch.created_at + 24 * 3600
    assert batch.metadata == {"job": "nightly", "part": "1"} and batch.model == MODEL
    assert batch.usage is not None and batch.usage.output_tokens > 0

    output = await file_lines(oai, batch.output_file_id)
    ids = [record["custom_id"] for record in output]
    assert sorted(ids) == [f"row-{i}" for i in range(7)] and ids != sorted(ids)  # shuffled
    by_id = {record["custom_id"]: record for record in output}
    for record in output:
        assert record["error"] is None and record["response"]["status_code"] == 200
        assert record["response"]["request_id"].startswith("req_")
    replies = {
        cid: ChatCompletion.model_validate(r["response"]["body"]) for cid, r in by_id.items()
    }
    assert replies["row-0"].choices[0].message.content == "Reply to: question 0"
    assert Verdict.model_validate_json(replies["row-4"].choices[0].message.content or "")
    assert replies["row-5"].choices[0].finish_reason == "length"
    assert replies["row-6"].usage is not None and replies["row-6"].usage.completion_tokens == 9

    info = await oai.files.retrieve(batch.output_file_id or "")
    content = await oai.files.content(info.id)
    assert info.purpose == "batch_output" and info.bytes == len(content.content)
    found = [b async for b in oai.batches.list() if (b.metadata or {}).get("job") == "nightly"]
    assert [b.id for b in found] == [created.id]


async def test_openai_per_request_errors(server: FakeLLMServer, oai: openai.AsyncOpenAI) -> None:
    prompts = ["fine", "bad [[status=400]]", "down [[status=500]]", "rude [[content_filter]]"]
    records = [line(f"r{i}", prompt) for i, prompt in enumerate(prompts)]
    records.append(line("r4", "once [[status=500 times=1]]"))
    created = await submit(oai, records)
    batch = (
        await until(lambda: oai.batches.retrieve(created.id), lambda b: b.status == "completed")
    )[-1]
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 4)

    errors = {record["custom_id"]: record for record in await file_lines(oai, batch.error_file_id)}
    assert set(errors) == {"r1", "r2", "r3", "r4"}
    assert errors["r1"]["error"] is None
    assert set(errors["r1"]) == {"id", "custom_id", "response", "error"}
    assert errors["r1"]["response"]["status_code"] == 400
    assert errors["r1"]["response"]["body"]["error"]["type"] == "invalid_request_error"
    assert errors["r2"]["response"]["status_code"] == 500
    assert errors["r2"]["response"]["body"]["error"]["type"] == "server_error"
    assert errors["r3"]["response"]["body"]["error"]["code"] == "content_policy_violation"
    assert [record["custom_id"] for record in await file_lines(oai, batch.output_file_id)] == ["r0"]
    retried = await oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "once [[status=500 times=1]]"}]
    )  # the batch's attempt was the first: this one succeeds
    assert retried.choices[0].message.content == "Reply to: once"


async def test_openai_phases_cancel_and_expiry_follow_the_clock(clock: Clock) -> None:
    with FakeLLMServer(seed=1, batch_seconds=1.0, batch_cancel_seconds=0.1) as server:
        oai = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
        records = [line(f"r{i}", f"q {i}") for i in range(5)]  # done at .26 .42 .58 .74 .9

        async def at(offset: float, batch_id: str, start: float) -> Batch:
            clock.now = start + offset
            batch: Batch = await oai.batches.retrieve(batch_id)
            return batch

        start = clock.now
        batch = await submit(oai, records)
        phases = [(await at(t, batch.id, start)) for t in (0.05, 0.2, 0.5, 0.95, 1.0)]
        assert [b.status for b in phases] == [
            "validating",
            "in_progress",
            "in_progress",
            "finalizing",
            "completed",
        ]
        assert [b.request_counts.completed for b in phases if b.request_counts] == [0, 0, 2, 5, 5]
        assert phases[0].in_progress_at is None and phases[1].in_progress_at == phases[1].created_at
        assert phases[3].finalizing_at is not None and phases[3].completed_at is None
        with pytest.raises(openai.ConflictError):
            await oai.batches.cancel(batch.id)

        start = clock.now
        batch = await submit(oai, records)
        clock.now = start + 0.5
        cancelling = await oai.batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
        still = await at(0.58, batch.id, start)  # r2 would be done by now: the cancel stopped it
        assert still.status == "cancelling" and still.request_counts is not None
        assert still.request_counts.completed == 2
        cancelled = await at(0.6, batch.id, start)
        assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
        assert cancelled.request_counts is not None
        assert (cancelled.request_counts.completed, cancelled.request_counts.failed) == (2, 3)
        assert len(await file_lines(oai, cancelled.output_file_id)) == 2
        unrun = await file_lines(oai, cancelled.error_file_id)
        assert [record["response"] for record in unrun] == [None] * 3
        assert {record["error"]["code"] for record in unrun} == {"batch_cancelled"}
        assert (await oai.batches.cancel(batch.id)).status == "cancelled"  # again: as it is

        server.configure(batch_expire_after=0.5)
        start = clock.now = 2000.0
        batch = await submit(oai, records)
        assert batch.expires_at == batch.created_at  # 0.5 s after it, in whole seconds
        expired = await at(0.5, batch.id, start)
        assert expired.status == "expired" and expired.expired_at is not None
        assert len(await file_lines(oai, expired.output_file_id)) == 2
        unrun = await file_lines(oai, expired.error_file_id)
        assert [set(record["error"]) for record in unrun] == [{"code", "message"}] * 3
        assert {record["error"]["code"] for record in unrun} == {"batch_expired"}
        await oai.close()


async def test_openai_limits_fail_the_batch_or_the_upload(clock: Clock) -> None:
    with FakeLLMServer(batch_max_requests=3, batch_max_bytes=600, batch_seconds=1.0) as server:
        oai = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
        big = [line(f"r{i}", "x" * 200) for i in range(3)]
        with pytest.raises(openai.BadRequestError, match="File is too large"):
            await submit(oai, big)
        too_many = await submit(oai, [line(f"r{i}", "q") for i in range(4)])
        clock.now += 0.1
        failed = await oai.batches.retrieve(too_many.id)
        assert failed.status == "failed" and failed.failed_at is not None
        assert failed.errors is not None and failed.errors.data is not None
        assert [error.code for error in failed.errors.data] == ["too_many_tasks"]
        assert failed.output_file_id is None and failed.error_file_id is None
        await oai.close()


async def test_openai_enqueued_token_limit(clock: Clock) -> None:
    with FakeLLMServer(batch_enqueued_token_limit=100, batch_seconds=1.0) as server:
        oai = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
        prompt = "x" * 200  # about 50 tokens
        first = await submit(oai, [line("a", prompt)])
        second = await submit(oai, [line("a", prompt), line("b", prompt)])
        other_model = await submit(oai, [line("a", prompt, model="other-model")])
        clock.now += 0.5
        assert (await oai.batches.retrieve(first.id)).status == "in_progress"
        assert (await oai.batches.retrieve(other_model.id)).status == "in_progress"
        failed = await oai.batches.retrieve(second.id)
        assert failed.status == "failed" and failed.errors and failed.errors.data
        assert failed.errors.data[0].code == "token_limit_exceeded"
        assert "Enqueued token limit reached for test-model" in (
            failed.errors.data[0].message or ""
        )
        clock.now += 1  # the first has ended: its tokens are no longer enqueued
        again = await submit(oai, [line("a", prompt), line("b", prompt)])
        clock.now += 0.5
        assert (await oai.batches.retrieve(again.id)).status == "in_progress"
        await oai.close()


async def test_openai_invalid_input_file_fails_the_batch(clock: Clock) -> None:
    with FakeLLMServer(models=[MODEL, "other-model"], batch_seconds=1.0) as server:
        oai = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
        good = json.dumps(line("a", "fine"))
        bad = [
            json.dumps(line("b", "x"))[:-3],  # line 2: cut short
            json.dumps(line("a", "again")),  # line 3: a's id again
            json.dumps(line("c", "x") | {"url": "/v1/embeddings"}),  # line 4
            json.dumps(line("d", "x", model="no-such-model")),  # line 5
            json.dumps(line("e", "x", model="other-model")),  # line 6: a second model
        ]
        upload = await oai.files.create(
            file=("in.jsonl", "\n".join([good, *bad]).encode()), purpose="batch"
        )
        batch = await oai.batches.create(
            input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h"
        )
        empty = await submit(oai, [])
        clock.now += 0.1
        failed = await oai.batches.retrieve(batch.id)
        assert failed.status == "failed" and failed.errors and failed.errors.data
        codes = [(error.code, error.line) for error in failed.errors.data]
        assert codes == [
            ("invalid_json_line", 2),
            ("duplicate_custom_id", 3),
            ("url_mismatch", 4),
            ("model_not_found", 5),
            ("model_mismatch", 6),
        ]
        empty_failed = await oai.batches.retrieve(empty.id)
        assert empty_failed.errors and empty_failed.errors.data
        assert empty_failed.errors.data[0].code == "empty_file"
        await oai.close()


# -- Anthropic ---------------------------------------------------------------------------


async def test_anthropic_batch_runs_to_its_end(
    server: FakeLLMServer, claude: anthropic.AsyncAnthropic
) -> None:
    structured = {"format": {"type": "json_schema", "schema": SCHEMA}}
    requests = [claude_request(f"row-{i}", f"question {i}") for i in range(4)]
    requests += [
        claude_request("row-4", "judge it", output_config=structured),
        claude_request("row-5", "bad [[status=400]]"),
        claude_request("row-6", "down [[status=500]]"),
    ]
    created = await claude.messages.batches.create(requests=requests)
    assert created.processing_status == "in_progress" and created.results_url is None
    assert created.request_counts.processing == 7

    async def fetch() -> MessageBatch:
        return await claude.messages.batches.retrieve(created.id)

    seen = await until(fetch, lambda b: b.processing_status == "ended")
    processing = [batch.request_counts.processing for batch in seen]
    assert processing == sorted(processing, reverse=True)
    batch = seen[-1]
    counts = batch.request_counts
    assert (counts.processing, counts.succeeded, counts.errored) == (0, 5, 2)
    assert batch.ended_at is not None and batch.results_url is not None
    assert batch.results_url.startswith(server.url)
    assert (batch.expires_at - batch.created_at).total_seconds() == 24 * 3600

    got = await results(claude, created.id)
    ids = [result.custom_id for result in got]
    assert sorted(ids) == [f"row-{i}" for i in range(7)] and ids != sorted(ids)
    by_id = {result.custom_id: result.result for result in got}
    first = by_id["row-0"]
    assert first.type == "succeeded" and isinstance(first.message, Message)
    assert first.message.content[0].type == "text"
    assert first.message.content[0].text == "Reply to: question 0"
    judged = by_id["row-4"]
    assert judged.type == "succeeded" and judged.message.content[0].type == "text"
    assert Verdict.model_validate_json(judged.message.content[0].text)
    bad, down = by_id["row-5"], by_id["row-6"]
    assert bad.type == "errored" and bad.error.error.type == "invalid_request_error"
    assert down.type == "errored" and down.error.error.type == "api_error"
    async with (
        aiohttp.ClientSession() as http,
        http.get(batch.results_url, headers={"x-api-key": KEY}) as response,
    ):
        lines = [json.loads(text) for text in (await response.text()).splitlines()]
    error = {"type": "api_error", "message": "Injected HTTP 500 error."}
    errored = {"type": "errored", "error": {"type": "error", "error": error}}
    assert {"custom_id": "row-6", "result": errored} in lines
    listed = [b.id async for b in claude.messages.batches.list()]
    assert listed == [created.id]


async def test_anthropic_cancel_and_expiry_follow_the_clock(clock: Clock) -> None:
    with FakeLLMServer(batch_seconds=1.0, batch_cancel_seconds=0.1) as server:
        claude = anthropic.AsyncAnthropic(
            base_url=server.anthropic_base_url, api_key="k", max_retries=0
        )
        requests = [claude_request(f"r{i}", f"q {i}") for i in range(5)]  # done .2 .4 .6 .8 1

        start = clock.now
        batch = await claude.messages.batches.create(requests=requests)
        clock.now = start + 0.5
        canceling = await claude.messages.batches.cancel(batch.id)
        assert canceling.processing_status == "canceling"
        assert canceling.cancel_initiated_at is not None
        assert canceling.request_counts.processing == 3
        clock.now = start + 0.6
        ended = await claude.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended"
        counts = ended.request_counts
        assert (counts.succeeded, counts.canceled, counts.processing) == (2, 3, 0)
        kinds = sorted(result.result.type for result in await results(claude, batch.id))
        assert kinds == ["canceled"] * 3 + ["succeeded"] * 2
        assert (await claude.messages.batches.cancel(batch.id)).processing_status == "ended"

        server.configure(batch_expire_after=0.5)
        start = clock.now = 2000.0
        batch = await claude.messages.batches.create(requests=requests)
        assert (batch.expires_at - batch.created_at).total_seconds() == 0.5
        clock.now = start + 0.5
        expired = await claude.messages.batches.retrieve(batch.id)
        assert expired.processing_status == "ended"
        assert (expired.request_counts.succeeded, expired.request_counts.expired) == (2, 3)
        kinds = sorted(result.result.type for result in await results(claude, batch.id))
        assert kinds == ["expired"] * 3 + ["succeeded"] * 2
        await claude.close()


async def test_anthropic_limits_refuse_the_batch() -> None:
    with FakeLLMServer(batch_max_requests=3, batch_max_bytes=2000) as server:
        claude = anthropic.AsyncAnthropic(
            base_url=server.anthropic_base_url, api_key="k", max_retries=0
        )
        with pytest.raises(anthropic.BadRequestError, match="at most 3 requests"):
            await claude.messages.batches.create(
                requests=[claude_request(f"r{i}", "q") for i in range(4)]
            )
        with pytest.raises(anthropic.APIStatusError) as too_big:
            await claude.messages.batches.create(requests=[claude_request("r", "x" * 3000)])
        assert too_big.value.status_code == 413
        with pytest.raises(anthropic.BadRequestError, match="Duplicate custom_id"):
            await claude.messages.batches.create(
                requests=[claude_request("r", "a"), claude_request("r", "b")]
            )
        with pytest.raises(anthropic.BadRequestError, match="custom_id"):
            await claude.messages.batches.create(requests=[claude_request("row:1", "a")])
        assert server.stats()["batches_created"] == 0
        await claude.close()


# -- both --------------------------------------------------------------------------------


async def test_a_server_without_batches_answers_404() -> None:
    with FakeLLMServer(batches=False) as server:
        oai = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
        claude = anthropic.AsyncAnthropic(
            base_url=server.anthropic_base_url, api_key="k", max_retries=0
        )
        with pytest.raises(openai.NotFoundError, match="Invalid URL"):
            await oai.files.create(file=("in.jsonl", b"{}\n"), purpose="batch")
        with pytest.raises(openai.NotFoundError):
            await oai.batches.create(
                input_file_id="file-x", endpoint=ENDPOINT, completion_window="24h"
            )
        with pytest.raises(openai.NotFoundError):
            await oai.batches.retrieve("batch_x")
        with pytest.raises(openai.NotFoundError):
            [b async for b in oai.batches.list()]
        with pytest.raises(anthropic.NotFoundError):
            await claude.messages.batches.create(requests=[claude_request("r", "q")])
        with pytest.raises(anthropic.NotFoundError):
            await claude.messages.batches.retrieve("msgbatch_x")
        completion = await oai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "still here"}]
        )
        assert completion.choices[0].message.content == "Reply to: still here"
        await oai.close()
        await claude.close()


async def test_a_wrong_key_gets_401(server: FakeLLMServer) -> None:
    oai = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="wrong", max_retries=0)
    claude = anthropic.AsyncAnthropic(
        base_url=server.anthropic_base_url, api_key="wrong", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        await oai.files.create(file=("in.jsonl", b"{}\n"), purpose="batch")
    with pytest.raises(openai.AuthenticationError):
        await oai.batches.retrieve("batch_x")
    with pytest.raises(anthropic.AuthenticationError):
        await claude.messages.batches.create(requests=[claude_request("r", "q")])
    with pytest.raises(anthropic.AuthenticationError):
        await claude.messages.batches.retrieve("msgbatch_x")
    await oai.close()
    await claude.close()
    assert server.stats()["files_uploaded"] == 0


async def test_stats_count_batches(
    server: FakeLLMServer, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    first = await submit(oai, [line(f"r{i}", "q") for i in range(3)])
    message_batch = await claude.messages.batches.create(
        requests=[claude_request(f"r{i}", "q") for i in range(2)]
    )
    server.configure(batch_seconds=5)  # the next runs long enough to be cancelled
    second = await submit(oai, [line("r", "q")])
    await oai.batches.cancel(second.id)
    done = await until(lambda: oai.batches.retrieve(first.id), lambda b: b.status == "completed")
    await file_lines(oai, done[-1].output_file_id)
    await until(lambda: oai.batches.retrieve(second.id), lambda b: b.status in OPENAI_ENDED)
    await until(
        lambda: claude.messages.batches.retrieve(message_batch.id),
        lambda b: b.processing_status == "ended",
    )
    await results(claude, message_batch.id)
    stats = server.stats()
    assert stats["batches_created"] == 3
    assert stats["batches_by_api"] == {"openai": 2, "anthropic": 1}
    assert stats["batch_ids"] == [first.id, message_batch.id, second.id]
    assert stats["batch_sizes"] == [3, 2, 1] and stats["batch_requests"] == 6
    assert stats["files_uploaded"] == 2 and stats["batch_cancels"] == 1
    assert stats["result_downloads"] == 2 and stats["batch_retrieves"] >= 4
    assert [b.id async for b in oai.batches.list(limit=1)] == [second.id, first.id]  # pages
    assert server.stats()["batch_lists"] == 2
    server.reset_stats()
    assert server.stats()["batches_created"] == 0 and server.stats()["batch_sizes"] == []
    assert (await oai.batches.retrieve(first.id)).status == "completed"  # kept


CLIENT = """
import json, sys, time
import openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="k", max_retries=0)
rows = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "m", "messages": [{"role": "user", "content": f"q {i}"}]}}
        for i in range(4)]
data = "".join(json.dumps(row) + "\\n" for row in rows).encode()
upload = client.files.create(file=("in.jsonl", data), purpose="batch")
batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                              completion_window="24h", metadata={"run": "r-1"})
print(batch.id, flush=True)
time.sleep(60)
"""


async def test_subprocess_server_keeps_batches_for_a_new_client() -> None:
    tests = Path(__file__).parent
    server = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "fake_server", "--port", "0", "--api-key", "k"],
        *["--batch-seconds", "0.2", "--batch-max-requests", "10", "--batch-cancel-seconds", "0"],
        cwd=tests,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        ready = (await asyncio.wait_for(server.stdout.readline(), timeout=10)).decode()
        url = ready.split()[1]
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, url, stdout=asyncio.subprocess.PIPE
        )
        assert client.stdout is not None
        batch_id = (await asyncio.wait_for(client.stdout.readline(), timeout=20)).decode().strip()
        client.kill()  # the process that made the batch is gone
        await client.wait()

        oai = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        mine = [b async for b in oai.batches.list() if (b.metadata or {}).get("run") == "r-1"]
        assert [b.id for b in mine] == [batch_id]
        done = await until(
            lambda: oai.batches.retrieve(batch_id), lambda b: b.status == "completed"
        )
        output = await file_lines(oai, done[-1].output_file_id)
        assert sorted(record["custom_id"] for record in output) == ["r0", "r1", "r2", "r3"]
        async with aiohttp.ClientSession(url) as http:
            async with http.get("/_config") as response:
                config = await response.json()
            async with http.post("/_config", json={"batches": False}) as response:
                assert response.status == 200
            async with http.get("/_stats") as response:
                stats = await response.json()
        assert (config["batch_seconds"], config["batch_max_requests"]) == (0.2, 10)
        assert config["batch_cancel_seconds"] == 0 and config["batches"] is True
        assert stats["batch_sizes"] == [4] and stats["files_uploaded"] == 1
        with pytest.raises(openai.NotFoundError):
            await oai.batches.retrieve(batch_id)
        await oai.close()
    finally:
        server.terminate()
        await server.wait()
