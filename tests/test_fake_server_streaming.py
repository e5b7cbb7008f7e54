"""Checks the fake LLM server's streams (server-sent events) with the real openai and
anthropic SDK clients, and on the wire."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import anthropic
import openai
import pydantic
import pytest
from anthropic.types import Message, MessageParam, RawMessageStreamEvent, ToolParam
from conftest import KEY, eventually
from fake_server import FakeLLMServer
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam

MODEL = "test-model"
PROMPT = "one two three four"  # the reply: "Reply to: one two three four", 6 pieces
PIECES = ["Reply", " to:", " one", " two", " three", " four"]


class Verdict(pydantic.BaseModel):
    label: str
    score: int
    sure: bool


SCHEMA = Verdict.model_json_schema()


def openai_messages(prompt: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": prompt}]


def anthropic_messages(prompt: str) -> list[MessageParam]:
    return [{"role": "user", "content": prompt}]


async def ask_openai(client: openai.AsyncOpenAI, prompt: str, **kwargs: Any) -> ChatCompletion:
    completion: ChatCompletion = await client.chat.completions.create(
        model=MODEL, messages=openai_messages(prompt), **kwargs
    )
    return completion


async def stream_openai(
    client: openai.AsyncOpenAI,
    prompt: str,
    into: list[ChatCompletionChunk] | None = None,
    **kwargs: Any,
) -> list[ChatCompletionChunk]:
    """Every chunk of a streamed completion, also gathered in `into` as they come (what was
    read before an error)."""
    chunks = [] if into is None else into
    stream: openai.AsyncStream[ChatCompletionChunk] = await client.chat.completions.create(
        model=MODEL, messages=openai_messages(prompt), stream=True, **kwargs
    )
    async with stream:
        async for chunk in stream:
            chunks.append(chunk)
    return chunks


async def stream_anthropic(
    client: anthropic.AsyncAnthropic,
    prompt: str,
    into: list[RawMessageStreamEvent] | None = None,
    **kwargs: Any,
) -> list[RawMessageStreamEvent]:
    """Every event of a streamed message, also gathered in `into` as they come."""
    events = [] if into is None else into
    stream: anthropic.AsyncStream[RawMessageStreamEvent] = await client.messages.create(
        model=MODEL, max_tokens=100, messages=anthropic_messages(prompt), stream=True, **kwargs
    )
    async with stream:
        async for event in stream:
            events.append(event)
    return events


async def settled(server: FakeLLMServer) -> dict[str, Any]:
    """The stats once nothing is in flight: a stream's end reaches the client before the
    server (another thread) has counted it."""
    await eventually(lambda: server.stats()["in_flight"] == 0)
    return server.stats()


def contents(chunks: list[ChatCompletionChunk]) -> list[str | None]:
    return [chunk.choices[0].delta.content for chunk in chunks if chunk.choices]


def texts(events: list[RawMessageStreamEvent]) -> list[str]:
    return [
        event.delta.text
        for event in events
        if event.type == "content_block_delta" and event.delta.type == "text_delta"
    ]


def sse_records(text: str) -> list[tuple[str | None, str]]:
    """(event, data) of each record of an event-stream body; the body must end a record."""
    assert text.endswith("\n\n")
    records: list[tuple[str | None, str]] = []
    for record in text[:-2].split("\n\n"):
        fields = dict(line.split(": ", 1) for line in record.split("\n"))
        assert set(fields) <= {"event", "data"}, record
        records.append((fields.get("event"), fields["data"]))
    return records


# -- the streamed reply ------------------------------------------------------


async def test_openai_deltas_join_to_the_reply(
    server: FakeLLMServer, oai: openai.AsyncOpenAI
) -> None:
    whole = await ask_openai(oai, PROMPT)
    chunks = await stream_openai(oai, PROMPT)

    assert contents(chunks) == ["", *PIECES, None]
    assert "".join(piece or "" for piece in contents(chunks)) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [chunk.choices[0].finish_reason for chunk in chunks] == [None] * 7 + ["stop"]
    assert {chunk.id for chunk in chunks} == {"chatcmpl-2"}
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert all(chunk.usage is None for chunk in chunks)  # not asked for: no usage chunk
    stats = await settled(server)
    assert stats["responses"] == {"200": 2}
    assert (stats["streams_started"], stats["streams_completed"], stats["streams_cut"]) == (1, 1, 0)
    assert stats["chunks_sent"] == len(PIECES)
    assert stats["tokens_billed_output"] == 2 * len(PIECES)
    assert stats["in_flight"] == 0
    assert len(stats["stream_spans"]) == 1


async def test_anthropic_text_deltas_join_to_the_reply(
    server: FakeLLMServer, claude: anthropic.AsyncAnthropic
) -> None:
    whole: Message = await claude.messages.create(
        model=MODEL, max_tokens=100, messages=anthropic_messages(PROMPT)
    )
    events = await stream_anthropic(claude, PROMPT)

    assert [event.type for event in events] == [  # the SDK drops the ping
        "message_start",
        "content_block_start",
        *["content_block_delta"] * len(PIECES),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert texts(events) == PIECES
    assert whole.content[0].type == "text"
    assert "".join(texts(events)) == whole.content[0].text
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and delta.type == "message_delta"
    assert start.message.usage.input_tokens == whole.usage.input_tokens
    assert start.message.usage.output_tokens == 1
    assert (delta.delta.stop_reason, delta.delta.stop_sequence) == ("end_turn", None)
    assert delta.usage.output_tokens == whole.usage.output_tokens == len(PIECES)
    assert (await settled(server))["chunks_sent"] == len(PIECES)


async def test_the_wire_format(server: FakeLLMServer) -> None:
    """What the SDKs cannot show: the framing, the ping, and no usage key unless asked."""
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": True}
    async with aiohttp.ClientSession() as http:
        url = f"{server.openai_base_url}/chat/completions"
        async with http.post(url, json=body, headers=auth) as response:
            assert response.status == 200
            assert response.content_type == "text/event-stream"
            assert response.headers["x-request-id"] == "req_1"
            from_openai = sse_records(await response.text())
        async with http.post(f"{server.url}/v1/messages", json=body, headers=auth) as response:
            assert response.content_type == "text/event-stream"
            from_anthropic = sse_records(await response.text())

    assert from_openai[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for event, data in from_openai[:-1] if event is None]
    assert len(chunks) == len(from_openai) - 1 == 1 + len(PIECES) + 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert not any("usage" in chunk for chunk in chunks)
    kinds = [event for event, _ in from_anthropic]
    assert kinds[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(json.loads(data)["type"] == event for event, data in from_anthropic)


async def test_a_stream_script_is_the_wire_piece_by_piece(server: FakeLLMServer) -> None:
    """stream_script: the pieces verbatim (raw bytes through surrogateescape), each written
    apart (chunk_delay between), and the directives' N counting pieces."""
    script = ['data: {"a":', " 1}\r\n\r\n", ": ping\n", "data: \udcff\n\n"]
    server.configure(stream_script=script, chunk_delay=0.05)
    auth = {"Authorization": f"Bearer {KEY}", "x-api-key": KEY}
    url = f"{server.openai_base_url}/chat/completions"
    arrivals: list[tuple[float, bytes]] = []
    async with aiohttp.ClientSession() as http:
        for prompt in ("q", "[[cut_after=2]] q"):
            body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
            async with http.post(url, json={**body, "stream": True}, headers=auth) as response:
                assert response.status == 200
                assert response.content_type == "text/event-stream"
                wire = b""
                try:
                    async for chunk in response.content.iter_any():
                        arrivals.append((time.monotonic(), chunk))
                        wire += chunk
                except aiohttp.ClientPayloadError:
                    assert prompt.startswith("[[cut_after=2]]")
                    assert wire == b'data: {"a": 1}\r\n\r\n'
                else:
                    assert wire == b'data: {"a": 1}\r\n\r\n: ping\ndata: \xff\n\n'
        body = {"model": MODEL, "messages": [{"role": "user", "content": "q"}]}
        messages = f"{server.url}/v1/messages"
        async with http.post(messages, json={**body, "stream": True}, headers=auth) as response:
            assert (await response.read()).startswith(b'data: {"a": 1}')  # Anthropic's too

    stats = await settled(server)
    assert stats["streams_completed"] == 2 and stats["streams_cut"] == 1
    assert stats["chunks_sent"] == 4 + 2 + 4
    assert arrivals[1][0] - arrivals[0][0] >= 0.04  # pieces apart: chunk_delay between
    with pytest.raises(ValueError, match="list of strings"):
        server.configure(stream_script=[b"bytes"])


# -- usage -------------------------------------------------------------------


async def test_openai_usage_chunk_when_asked(
    server: FakeLLMServer, oai: openai.AsyncOpenAI
) -> None:
    whole = await ask_openai(oai, PROMPT)
    chunks = await stream_openai(oai, PROMPT, stream_options={"include_usage": True})

    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and whole.usage is not None
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens
    assert last.usage.completion_tokens == whole.usage.completion_tokens == len(PIECES)
    assert last.usage.total_tokens == whole.usage.total_tokens
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert "".join(piece or "" for piece in contents(chunks)) == whole.choices[0].message.content
    async with aiohttp.ClientSession() as http:  # the other chunks carry "usage": null
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        url = f"{server.openai_base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {KEY}"}
        async with http.post(url, json=body, headers=headers) as response:
            records = sse_records(await response.text())
    raw = [json.loads(data) for _, data in records[:-1]]
    assert [chunk["usage"] for chunk in raw[:-1]] == [None] * (len(raw) - 1)


@pytest.mark.parametrize("setting", ["stream_usage", "usage"])
async def test_streams_without_usage(
    server: FakeLLMServer,
    oai: openai.AsyncOpenAI,
    claude: anthropic.AsyncAnthropic,
    setting: str,
) -> None:
    server.configure(**{setting: False})

    chunks = await stream_openai(oai, PROMPT, stream_options={"include_usage": True})
    async with claude.messages.stream(
        model=MODEL, max_tokens=100, messages=anthropic_messages(PROMPT)
    ) as stream:
        message = await stream.get_final_message()

    assert all(chunk.choices and chunk.usage is None for chunk in chunks)
    assert contents(chunks) == ["", *PIECES, None]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (0, len(PIECES))
    assert (await settled(server))["streams_completed"] == 2


async def test_anthropic_stream_helper_final_message(
    server: FakeLLMServer, claude: anthropic.AsyncAnthropic
) -> None:
    whole: Message = await claude.messages.create(
        model=MODEL, max_tokens=100, messages=anthropic_messages(PROMPT)
    )
    async with claude.messages.stream(
        model=MODEL, max_tokens=100, messages=anthropic_messages(PROMPT)
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        message = await stream.get_final_message()
    async with claude.messages.stream(
        model=MODEL, max_tokens=2, messages=anthropic_messages(PROMPT)
    ) as stream:
        cut_short = await stream.get_final_message()

    assert pieces == PIECES
    assert message.id == "msg_2"
    assert message.content[0].type == "text" and whole.content[0].type == "text"
    assert message.content[0].text == whole.content[0].text
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (
        whole.usage.input_tokens,
        whole.usage.output_tokens,
    )
    assert cut_short.stop_reason == "max_tokens"
    assert cut_short.content[0].type == "text" and cut_short.content[0].text == "Reply to:"
    assert cut_short.usage.output_tokens == 2
    assert (await settled(server))["streams_completed"] == 2


# -- structured output ---------------------------------------------------------


async def test_openai_structured_output_streams_json(
    server: FakeLLMServer, oai: openai.AsyncOpenAI
) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "v", "schema": SCHEMA}}
    whole = await ask_openai(oai, "judge this", response_format=response_format)
    chunks = await stream_openai(oai, "judge this", response_format=response_format)
    async with oai.chat.completions.stream(
        model=MODEL, messages=openai_messages("judge this"), response_format=Verdict
    ) as stream:
        final = await stream.get_final_completion()

    pieces = [piece for piece in contents(chunks) if piece]
    assert len(pieces) > 1  # streamed in pieces, not in one
    assert whole.choices[0].message.content is not None
    assert "".join(pieces) == whole.choices[0].message.content
    assert json.loads("".join(pieces)) == {"label": "text", "score": 1, "sure": False}
    assert final.choices[0].message.parsed == Verdict(label="text", score=1, sure=False)
    assert (await settled(server))["streams_completed"] == 2


async def test_openai_refusal_streams_as_refusal_pieces(oai: openai.AsyncOpenAI) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "v", "schema": SCHEMA}}
    whole = await ask_openai(oai, "[[refusal]] judge", response_format=response_format)
    chunks = await stream_openai(oai, "[[refusal]] judge", response_format=response_format)
    async with oai.chat.completions.stream(
        model=MODEL, messages=openai_messages("[[refusal]] judge"), response_format=Verdict
    ) as stream:
        final = await stream.get_final_completion()

    refusal = [chunk.choices[0].delta.refusal for chunk in chunks]
    expected = whole.choices[0].message.refusal
    assert expected == "I can't help with that request."
    assert refusal[0] == "" and refusal[-1] is None
    assert refusal[1:-1] == ["I", " can't", " help", " with", " that", " request."]
    assert "".join(piece or "" for piece in refusal) == expected
    assert all(piece is None for piece in contents(chunks))
    assert chunks[-1].choices[0].finish_reason == "stop"
    message = final.choices[0].message
    assert (message.content, message.refusal, message.parsed) == (None, expected, None)


async def test_anthropic_forced_tool_streams_input_json(
    server: FakeLLMServer, claude: anthropic.AsyncAnthropic
) -> None:
    tool: ToolParam = {"name": "record", "description": "a verdict", "input_schema": SCHEMA}
    options: dict[str, Any] = {"tools": [tool], "tool_choice": {"type": "tool", "name": "record"}}
    whole: Message = await claude.messages.create(
        model=MODEL, max_tokens=100, messages=anthropic_messages("judge"), **options
    )
    events = await stream_anthropic(claude, "judge", **options)
    async with claude.messages.stream(
        model=MODEL, max_tokens=100, messages=anthropic_messages("judge"), **options
    ) as stream:
        final = await stream.get_final_message()

    start = events[1]
    assert start.type == "content_block_start" and start.content_block.type == "tool_use"
    assert (start.content_block.name, start.content_block.input) == ("record", {})
    partial = [
        event.delta.partial_json
        for event in events
        if event.type == "content_block_delta" and event.delta.type == "input_json_delta"
    ]
    assert len(partial) > 1
    assert whole.content[0].type == "tool_use" and final.content[0].type == "tool_use"
    assert json.loads("".join(partial)) == whole.content[0].input == final.content[0].input
    assert final.stop_reason == whole.stop_reason == "tool_use"
    assert (await settled(server))["chunks_sent"] == 2 * len(partial)


# -- pacing --------------------------------------------------------------------


async def test_latency_to_first_chunk_and_chunk_delay(
    server: FakeLLMServer, oai: openai.AsyncOpenAI
) -> None:
    server.configure(latency=0.1, chunk_delay=0.05)
    started = time.monotonic()
    chunks = await stream_openai(oai, PROMPT)
    elapsed = time.monotonic() - started
    await stream_openai(oai, "[[chunk_delay=0.08]] a b c")  # 5 pieces: 4 gaps

    assert contents(chunks) == ["", *PIECES, None]
    stats = await settled(server)
    assert stats["latencies"] == [0.1, 0.1]
    (to_first, spread), (_, directed) = stats["stream_spans"]
    assert to_first >= 0.1  # the latency: the time to the first chunk
    assert spread >= 5 * 0.05 - 0.005  # 6 pieces, 5 gaps
    assert directed >= 4 * 0.08 - 0.005  # the directive beats the setting
    # the last piece cannot reach the client before the server wrote it
    assert elapsed >= 0.1 + 5 * 0.05 - 0.005


async def test_a_stream_is_in_flight_until_it_ends(
    server: FakeLLMServer, oai: openai.AsyncOpenAI
) -> None:
    server.configure(chunk_delay=0.05)
    await stream_openai(oai, PROMPT)

    samples = (await settled(server))["in_flight_samples"]
    assert [level for _, level in samples] == [1, 0]
    (arrival, _), (left, _) = samples
    assert left - arrival >= 5 * 0.05 - 0.005  # it left the flight once its last chunk was out


# -- streams that go wrong -------------------------------------------------------


async def test_cut_after_raises_in_the_sdks(
    server: FakeLLMServer, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    prompt = f"[[cut_after=3 times=1]] {PROMPT}"
    got: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIConnectionError):  # openai wraps the read error
        await stream_openai(oai, prompt, into=got)
    again = await stream_openai(oai, prompt)  # times=1: the second attempt is whole
    events: list[RawMessageStreamEvent] = []
    with pytest.raises(anthropic.APIConnectionError):  # anthropic wraps it too
        await stream_anthropic(claude, "[[cut_after=2]] hi", into=events)

    assert contents(got) == ["", *PIECES[:3]]
    assert contents(again) == ["", *PIECES, None]
    assert texts(events) == ["Reply", " to:"]
    stats = await settled(server)
    assert (stats["streams_started"], stats["streams_completed"], stats["streams_cut"]) == (3, 1, 2)
    assert stats["chunks_sent"] == 3 + len(PIECES) + 2
    assert stats["attempts_by_prompt"][prompt] == 2


async def test_cut_after_more_than_the_reply_cuts_before_the_end(
    server: FakeLLMServer, oai: openai.AsyncOpenAI
) -> None:
    got: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIConnectionError):
        await stream_openai(oai, f"[[cut_after=99]] {PROMPT}", into=got)

    assert contents(got) == ["", *PIECES]  # every piece, but no finish and no [DONE]
    assert (await settled(server))["streams_cut"] == 1


async def test_stream_error_after_raises_the_sdks_api_error(
    server: FakeLLMServer, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    prompt = f"[[stream_error_after=2 times=1]] {PROMPT}"
    got: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIError) as from_openai:
        await stream_openai(oai, prompt, into=got)
    again = await stream_openai(oai, prompt)
    events: list[RawMessageStreamEvent] = []
    with pytest.raises(anthropic.APIStatusError) as from_anthropic:
        await stream_anthropic(claude, f"[[stream_error_after=2]] {PROMPT}", into=events)

    # openai raises its plain APIError on a data record with an "error" key
    assert type(from_openai.value) is openai.APIError
    assert from_openai.value.type == "server_error"
    assert from_openai.value.message.startswith("The server had an error")
    assert contents(got) == ["", *PIECES[:2]]
    assert contents(again) == ["", *PIECES, None]
    # anthropic raises a status error for an `event: error`, with the 200 of the stream
    assert type(from_anthropic.value) is anthropic.APIStatusError
    assert from_anthropic.value.status_code == 200
    assert from_anthropic.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert texts(events) == PIECES[:2]
    stats = await settled(server)
    assert (stats["streams_started"], stats["streams_completed"], stats["streams_cut"]) == (3, 1, 2)
    assert stats["disconnects"] == 0  # ended by the server, properly


async def test_stall_after_keeps_the_stream_open(
    server: FakeLLMServer, oai: openai.AsyncOpenAI
) -> None:
    stream = await oai.chat.completions.create(
        model=MODEL, messages=openai_messages(f"[[stall_after=2]] {PROMPT}"), stream=True
    )
    chunks = stream.__aiter__()
    got = [await chunks.__anext__() for _ in range(3)]
    assert contents(got) == ["", *PIECES[:2]]
    await eventually(lambda: server.stats()["chunks_sent"] == 2)
    stats = server.stats()
    assert (stats["in_flight"], stats["streams_cut"], stats["streams_completed"]) == (1, 0, 0)

    with pytest.raises(TimeoutError):  # nothing more comes: an idle stream
        await asyncio.wait_for(chunks.__anext__(), timeout=0.2)
    await stream.close()

    stats = await settled(server)
    assert (stats["streams_cut"], stats["disconnects"], stats["streams_completed"]) == (1, 1, 0)
    assert stats["chunks_sent"] == 2


async def test_anthropic_stall(server: FakeLLMServer, claude: anthropic.AsyncAnthropic) -> None:
    messages = anthropic_messages("[[stall_after=1]] hi")
    stream = await claude.messages.create(
        model=MODEL, max_tokens=100, messages=messages, stream=True
    )
    events = stream.__aiter__()
    got = [await events.__anext__() for _ in range(3)]
    assert texts(got) == ["Reply"]

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(events.__anext__(), timeout=0.2)
    await stream.close()

    stats = await settled(server)
    assert (stats["disconnects"], stats["streams_cut"], stats["chunks_sent"]) == (1, 1, 1)


# -- faults, limits and settings ----------------------------------------------------


async def test_errors_before_the_stream_stay_json_answers(
    server: FakeLLMServer, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    with pytest.raises(openai.InternalServerError):
        await stream_openai(oai, "[[status=500 latency=0.01]]")
    with pytest.raises(openai.RateLimitError) as limited:
        await stream_openai(oai, "[[429 retry_after=1.5]]")
    with pytest.raises(anthropic.OverloadedError):
        await stream_anthropic(claude, "[[status=529]]")
    with pytest.raises(openai.BadRequestError):
        await stream_openai(oai, "[[cut_after=-1]]")
    wrong_key = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await stream_openai(wrong_key, PROMPT)
    await wrong_key.close()
    before_reset = server.stats()
    server.reset_stats()  # an empty rate window, then one request per window
    server.configure(rpm_limit=1, rate_window=60)
    await stream_openai(oai, "the one allowed")
    with pytest.raises(openai.RateLimitError):
        await stream_openai(oai, "one too many")

    assert limited.value.response.headers["retry-after"] == "1.5"
    assert before_reset["responses"] == {"500": 1, "429": 1, "529": 1, "400": 1, "401": 1}
    assert before_reset["streams_started"] == 0
    assert before_reset["latencies"] == [0.01, 0.0]  # the 500 came after its latency
    stats = await settled(server)
    assert stats["responses"] == {"200": 1, "429": 1}
    assert (stats["streams_started"], stats["streams_completed"]) == (1, 1)


@pytest.mark.parametrize(
    ("directive", "error"),
    [
        ("[[malformed]]", json.JSONDecodeError),  # the first chunk's JSON cut in half
        ("[[not_utf8]]", UnicodeDecodeError),
        ("[[error_200]]", openai.APIError),  # the stream is an error record alone
    ],
)
async def test_faults_spoil_a_stream(
    server: FakeLLMServer, oai: openai.AsyncOpenAI, directive: str, error: type[Exception]
) -> None:
    got: list[ChatCompletionChunk] = []
    with pytest.raises(error) as raised:
        await stream_openai(oai, directive, into=got)

    assert type(raised.value) is error
    assert got == []
    stats = await settled(server)
    assert stats["streams_started"] == 1
    assert stats["malformed"] == (directive == "[[malformed]]")


async def test_stream_options_refused(server: FakeLLMServer, oai: openai.AsyncOpenAI) -> None:
    server.configure(stream_options_refused=True)

    with pytest.raises(openai.BadRequestError) as refused:
        await stream_openai(oai, PROMPT, stream_options={"include_usage": True})
    chunks = await stream_openai(oai, PROMPT)  # without stream_options: streamed

    assert refused.value.body == {
        "message": "Unrecognized request argument supplied: stream_options",
        "type": "invalid_request_error",
        "param": "stream_options",
        "code": None,
    }
    assert contents(chunks) == ["", *PIECES, None]
    assert (await settled(server))["streams_started"] == 1
