"""Checks the fake LLM server with the real openai and anthropic SDK clients."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from anthropic.types import Message, MessageParam
from conftest import eventually
from fake_server import FakeLLMServer
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

MODEL = "test-model"


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
async def oai(server: FakeLLMServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def claude(server: FakeLLMServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(
        base_url=server.anthropic_base_url, api_key="k", max_retries=0
    )
    yield client
    await client.close()


async def ask_openai(client: openai.AsyncOpenAI, prompt: str, **kwargs: Any) -> ChatCompletion:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": prompt}]
    completion: ChatCompletion = await client.chat.completions.create(
        model=MODEL, messages=messages, **kwargs
    )
    return completion


async def ask_anthropic(
    client: anthropic.AsyncAnthropic, prompt: str, max_tokens: int = 100, **kwargs: Any
) -> Message:
    messages: list[MessageParam] = [{"role": "user", "content": prompt}]
    message: Message = await client.messages.create(
        model=MODEL, max_tokens=max_tokens, messages=messages, **kwargs
    )
    return message


# -- successes ---------------------------------------------------------------


async def test_openai_success(server: FakeLLMServer, oai: openai.AsyncOpenAI) -> None:
    completion = await ask_openai(oai, "hello there, fake model")

    assert completion.id == "chatcmpl-1"
    assert completion._request_id == "req_1"
    assert completion.model == MODEL
    choice = completion.choices[0]
    assert choice.message.content == "Reply to: hello there, fake model"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len("hello there, fake model") // 4
    assert completion.usage.completion_tokens == 6
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 6
    stats = server.stats()
    assert stats["responses"] == {"200": 1}
    assert (stats["tokens_billed_input"], stats["tokens_billed_output"]) == (5, 6)
    assert stats["keys_seen"] == ["k"]
    assert stats["max_tokens_seen"] == [None]


async def test_anthropic_success(server: FakeLLMServer, claude: anthropic.AsyncAnthropic) -> None:
    message = await ask_anthropic(claude, "hello", system="s" * 40)

    assert message.id == "msg_1"
    assert message._request_id == "req_1"
    assert message.content[0].type == "text"
    assert message.content[0].text == "Reply to: hello"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (45 // 4, 3)
    assert server.stats()["max_tokens_seen"] == [100]


async def test_max_tokens_truncates(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    completion = await ask_openai(oai, "a long prompt", max_tokens=2)
    message = await ask_anthropic(claude, "a long prompt", max_tokens=2)

    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "Reply to:"
    assert completion.usage is not None and completion.usage.completion_tokens == 2
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2


async def test_token_and_finish_directives(
    server: FakeLLMServer, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    completion = await ask_openai(oai, "[[tokens=500]] write a lot")
    filtered = await ask_openai(oai, "[[finish=content_filter]] hi")
    refused = await ask_anthropic(claude, "[[finish=content_filter]] hi")

    assert completion.choices[0].message.content is not None
    assert completion.choices[0].message.content.startswith("Reply to: write a lot more")
    assert completion.usage is not None and completion.usage.completion_tokens == 500
    assert filtered.choices[0].finish_reason == "content_filter"
    assert refused.stop_reason == "refusal"
    assert server.stats()["tokens_billed_output"] == 500 + 3 + 3


async def test_usage_can_be_left_out(server: FakeLLMServer, oai: openai.AsyncOpenAI) -> None:
    server.configure(usage=False)

    completion = await ask_openai(oai, "hi")

    assert completion.usage is None
    assert server.stats()["tokens_billed_output"] == 3


# -- faults ------------------------------------------------------------------

# directive, exception from openai, exception from anthropic (both with max_retries=0)
FAULTS: list[tuple[str, type[Exception], type[Exception]]] = [
    ("[[status=400]]", openai.BadRequestError, anthropic.BadRequestError),
    ("[[status=401]]", openai.AuthenticationError, anthropic.AuthenticationError),
    ("[[status=403]]", openai.PermissionDeniedError, anthropic.PermissionDeniedError),
    ("[[status=404]]", openai.NotFoundError, anthropic.NotFoundError),
    ("[[status=500]]", openai.InternalServerError, anthropic.InternalServerError),
    ("[[status=503]]", openai.InternalServerError, anthropic.ServiceUnavailableError),
    ("[[status=529]]", openai.InternalServerError, anthropic.OverloadedError),
    ("[[429]]", openai.RateLimitError, anthropic.RateLimitError),
    ("[[quota]]", openai.RateLimitError, anthropic.BadRequestError),
    ("[[content_filter]]", openai.BadRequestError, anthropic.BadRequestError),
    ("[[reset]]", openai.APIConnectionError, anthropic.APIConnectionError),
    # Neither SDK wraps a broken JSON body: json.loads' error escapes as is.
    ("[[malformed]]", json.JSONDecodeError, json.JSONDecodeError),
]


@pytest.mark.parametrize(("directive", "openai_error", "anthropic_error"), FAULTS)
async def test_fault_raises(
    server: FakeLLMServer,
    oai: openai.AsyncOpenAI,
    claude: anthropic.AsyncAnthropic,
    directive: str,
    openai_error: type[Exception],
    anthropic_error: type[Exception],
) -> None:
    with pytest.raises(openai_error) as from_openai:
        await ask_openai(oai, directive)
    with pytest.raises(anthropic_error) as from_anthropic:
        await ask_anthropic(claude, directive)

    assert type(from_openai.value) is openai_error
    assert type(from_anthropic.value) is anthropic_error
    assert server.stats()["attempts_by_prompt"] == {directive: 2}


async def test_error_bodies(oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(openai.RateLimitError) as quota:
        await ask_openai(oai, "[[quota]]")
    with pytest.raises(openai.BadRequestError) as filtered:
        await ask_openai(oai, "[[content_filter]]")
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        await ask_anthropic(claude, "[[status=529]]")

    assert (quota.value.code, quota.value.type) == ("insufficient_quota", "insufficient_quota")
    assert filtered.value.code == "content_policy_violation"
    assert overloaded.value.type == "overloaded_error"
    assert overloaded.value.request_id == "req_3"


async def test_429_carries_retry_after(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    with pytest.raises(openai.RateLimitError) as from_openai:
        await ask_openai(oai, "[[429 retry_after=1.5]]")
    with pytest.raises(anthropic.RateLimitError) as from_anthropic:
        await ask_anthropic(claude, "[[429 retry_after=1.5]]")

    for error in (from_openai.value, from_anthropic.value):
        assert error.response.headers["retry-after"] == "1.5"
        assert error.response.headers["retry-after-ms"] == "1500"
    assert from_openai.value.code == "rate_limit_exceeded"
    assert from_anthropic.value.type == "rate_limit_error"


async def test_wrong_api_key_is_echoed(
    server: FakeLLMServer, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    server.configure(api_key="right-key")

    with pytest.raises(openai.AuthenticationError, match="Incorrect API key provided: k"):
        await ask_openai(oai, "hi")
    with pytest.raises(anthropic.AuthenticationError, match="Incorrect API key provided: k"):
        await ask_anthropic(claude, "hi")

    assert server.stats()["keys_seen"] == ["k"]


async def test_unknown_model(
    server: FakeLLMServer, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    server.configure(models=["other-model"])

    with pytest.raises(openai.NotFoundError) as from_openai:
        await ask_openai(oai, "hi")
    with pytest.raises(anthropic.NotFoundError) as from_anthropic:
        await ask_anthropic(claude, "hi")

    assert from_openai.value.code == "model_not_found"
    assert from_anthropic.value.type == "not_found_error"


async def test_quota_exhausted(
    server: FakeLLMServer, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    server.configure(quota_exhausted=True)

    with pytest.raises(openai.RateLimitError) as from_openai:
        await ask_openai(oai, "hi")
    with pytest.raises(anthropic.BadRequestError, match="credit balance"):
        await ask_anthropic(claude, "hi")

    assert from_openai.value.code == "insufficient_quota"


async def test_fault_for_first_attempts_only(
    server: FakeLLMServer, oai: openai.AsyncOpenAI
) -> None:
    prompt = "[[status=500 times=2]] flaky"
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await ask_openai(oai, prompt)

    completion = await ask_openai(oai, prompt)

    assert completion.choices[0].message.content == "Reply to: flaky"
    assert server.stats()["attempts_by_prompt"] == {prompt: 3}
    assert server.stats()["responses"] == {"500": 2, "200": 1}


async def test_sdks_retry_after_the_given_delay(server: FakeLLMServer) -> None:
    prompt = "[[429 retry_after=0.05 times=2]] retry me"
    oai = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=2)
    claude = anthropic.AsyncAnthropic(
        base_url=server.anthropic_base_url, api_key="k", max_retries=2
    )
    try:
        started = time.monotonic()
        await ask_openai(oai, prompt)
        await ask_anthropic(claude, prompt + "!")
        elapsed = time.monotonic() - started
    finally:
        await oai.close()
        await claude.close()

    assert server.stats()["count_429"] == 4
    assert elapsed < 1.0  # retry-after-ms honoured, not the SDKs' 0.5 s backoff


async def test_hang_times_out_and_leaves_flight(
    server: FakeLLMServer, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    with pytest.raises(openai.APITimeoutError):
        await ask_openai(oai.with_options(timeout=0.2), "[[hang]]")
    with pytest.raises(anthropic.APITimeoutError):
        await ask_anthropic(claude.with_options(timeout=0.2), "[[hang]]")

    await eventually(lambda: server.stats()["in_flight"] == 0)
    stats = server.stats()
    assert (stats["hangs"], stats["disconnects"]) == (2, 2)
    assert stats["responses"] == {}


async def test_hang_does_not_block_others(server: FakeLLMServer, oai: openai.AsyncOpenAI) -> None:
    hung = asyncio.create_task(ask_openai(oai, "[[hang]]"))
    await eventually(lambda: server.stats()["hangs"] == 1)
    await ask_openai(oai, "still served")

    await eventually(lambda: server.stats()["in_flight"] == 1)
    hung.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hung
    await eventually(lambda: server.stats()["in_flight"] == 0)


async def test_peak_in_flight(server: FakeLLMServer, oai: openai.AsyncOpenAI) -> None:
    server.configure(latency=0.2)

    async def timed(prompt: str) -> float:
        start = time.monotonic()
        await ask_openai(oai, prompt)
        return time.monotonic() - start

    started = time.monotonic()
    durations = await asyncio.gather(*(timed(f"prompt {i}") for i in range(20)))
    elapsed = time.monotonic() - started

    stats = server.stats()
    assert stats["peak_in_flight"] == 20
    assert stats["in_flight"] == 0
    assert min(durations) >= 0.2  # each reply really waited its latency (measured, not echoed)
    assert len(stats["in_flight_samples"]) == 40
    assert max(level for _, level in stats["in_flight_samples"]) == 20
    assert 0.2 <= elapsed < 1.0


async def test_seeded_random_faults_repeat() -> None:
    async def run() -> tuple[list[str], list[float]]:
        settings: dict[str, Any] = {
            "seed": 7,
            "rate_500": 0.5,
            "latency_median": 0.002,
            "latency_sigma": 0.5,
        }
        with FakeLLMServer(**settings) as server:
            client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
            outcomes = []
            for i in range(12):
                try:
                    await ask_openai(client, f"p{i}")
                    outcomes.append("ok")
                except openai.InternalServerError:
                    outcomes.append("500")
            await client.close()
            return outcomes, server.stats()["latencies"]

    first, second = await run(), await run()

    assert first == second
    assert {"ok", "500"} == set(first[0])
    assert len(set(first[1])) == 12


# -- rate limits -------------------------------------------------------------


async def test_rpm_sliding_window(server: FakeLLMServer, oai: openai.AsyncOpenAI) -> None:
    server.configure(rpm_limit=600)  # at most 10 arrivals in any 1.0 s window

    remaining = []
    for i in range(10):
        raw = await oai.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": f"p{i}"}]
        )
        remaining.append(int(raw.headers["x-ratelimit-remaining-requests"]))
        assert raw.headers["x-ratelimit-limit-requests"] == "600"
    with pytest.raises(openai.RateLimitError) as rejected:
        await ask_openai(oai, "eleventh")

    assert remaining == list(range(9, -1, -1))
    assert rejected.value.code == "rate_limit_exceeded"
    headers = rejected.value.response.headers
    assert headers["x-ratelimit-remaining-requests"] == "0"
    retry_after = float(headers["retry-after"])
    assert 0 < retry_after <= 1.0
    assert int(headers["retry-after-ms"]) == round(retry_after * 1000)

    await asyncio.sleep(retry_after)
    await ask_openai(oai, "eleventh")  # the oldest arrival has left the window
    stats = server.stats()
    assert stats["responses"] == {"200": 11, "429": 1}
    assert stats["count_429"] == 1
    assert len(stats["arrivals"]) == 12


async def test_tpm_limit(server: FakeLLMServer, oai: openai.AsyncOpenAI) -> None:
    server.configure(tpm_limit=600)  # 10 input tokens per 1.0 s window
    prompt = "x" * 32  # 8 input tokens

    await ask_openai(oai, prompt)
    with pytest.raises(openai.RateLimitError) as rejected:
        await ask_openai(oai, prompt)

    assert rejected.value.type == "tokens"
    headers = rejected.value.response.headers
    assert headers["x-ratelimit-limit-tokens"] == "600"
    assert headers["x-ratelimit-remaining-tokens"] == "2"
    assert "x-ratelimit-limit-requests" not in headers


async def test_anthropic_rate_limit_headers(
    server: FakeLLMServer, claude: anthropic.AsyncAnthropic
) -> None:
    server.configure(rpm_limit=600, tpm_limit=60_000)

    raw = await claude.messages.with_raw_response.create(
        model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )

    assert raw.headers["anthropic-ratelimit-requests-limit"] == "600"
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "9"
    assert raw.headers["anthropic-ratelimit-tokens-remaining"] == "999"
    reset = datetime.fromisoformat(raw.headers["anthropic-ratelimit-requests-reset"])
    assert 0 < (reset - datetime.now(UTC)).total_seconds() <= 1.0


# -- control -----------------------------------------------------------------


async def test_http_control(server: FakeLLMServer, oai: openai.AsyncOpenAI) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        async with http.post("/_config", json={"latency": 0.01, "models": [MODEL]}) as response:
            assert response.status == 200
            assert (await response.json())["models"] == [MODEL]
        async with http.post("/_config", json={"no_such_setting": 1}) as response:
            assert response.status == 400
        async with http.post("/_config", json={"rate_500": 2}) as response:
            assert response.status == 400
        await ask_openai(oai, "hi")
        async with http.get("/_stats") as response:
            stats = await response.json()
        assert stats == server.stats()
        async with http.post("/_reset") as response:
            after_reset = await response.json()
        async with http.get("/_config") as response:
            config = await response.json()

    assert stats["responses"] == {"200": 1}
    assert stats["latencies"] == [0.01]
    assert after_reset["requests_total"] == 0
    assert after_reset["attempts_by_prompt"] == {}
    assert config["latency"] == 0.01


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        FakeLLMServer(rate_500=0.7, rate_503=0.7)
    with pytest.raises(TypeError):
        FakeLLMServer(no_such_setting=1)


async def test_subprocess_mode() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *["-m", "fake_server"],
        *["--port", "0", "--latency", "0.05", "--api-key", "k", "--rpm-limit", "600"],
        cwd=Path(__file__).parent,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=10)).decode()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.split()[1]
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        completion = await ask_openai(client, "over the wire")
        await client.close()
        async with aiohttp.ClientSession(url) as http, http.get("/_stats") as response:
            stats = await response.json()
    finally:
        process.terminate()
        returncode = await process.wait()

    assert completion.choices[0].message.content == "Reply to: over the wire"
    assert stats["responses"] == {"200": 1}
    assert stats["latencies"] == [0.05]
    assert returncode == 0
