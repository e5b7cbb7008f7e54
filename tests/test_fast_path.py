"""The lean request path (`fast=True`) sends what the SDK sends and is taken where it applies;
what it does not take goes through the SDK. (The provider test modules run every test on
both paths: see the `request_path` fixture.)"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
import pandas as pd
import pytest
from aiohttp import web
from conftest import KEY
from fake_server import FakeLLMServer
from multidict import CIMultiDict, CIMultiDictProxy
from openai.resources.chat import AsyncCompletions

import notebook_kit as kit
from notebook_kit.clock import LoopClock
from notebook_kit.deadline import Deadline
from notebook_kit.errors import CallError
from notebook_kit.providers import anthropic_messages, openai_chat
from notebook_kit.providers.anthropic_messages import _warned_models
from notebook_kit.providers.fast_http import FastPost, body_params
from notebook_kit.providers.fast_stream import EventDecoder
from notebook_kit.providers.replies import ReplyHeaders
from notebook_kit.streaming import Chunks
from notebook_kit.types import ErrorType, Request

APIS = ["openai", "anthropic"]
OPENAI_REPLY = {
    "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
}
ANTHROPIC_REPLY = {
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 3, "output_tokens": 1},
}
# The SDK's marker for its own raw-response wrapper; the lean path has no wrapper to tell.
SDK_ONLY = {"x-stainless-raw-response", "content-length"}


class Recorder:
    """A server that records each request and answers as OpenAI or Anthropic would; a
    request to /v1/moved is sent on to the real path with a 307."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str], Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/moved"):
            raise web.HTTPTemporaryRedirect(request.path.removeprefix("/moved") or "/")
        headers = {name.lower(): value for name, value in request.headers.items()}
        body = json.loads(await request.read())
        self.seen.append((request.path_qs, headers, body))
        ids = {"x-request-id": "req_1", "request-id": "req_1"}
        anthropic = request.path.endswith("/messages")
        if body.get("stream"):
            stream = HELLO_CLAUDE if anthropic else HELLO_OAI
            return web.Response(text=sse(stream), content_type="text/event-stream", headers=ids)
        return web.json_response(ANTHROPIC_REPLY if anthropic else OPENAI_REPLY, headers=ids)


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    record = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    record.url = f"http://127.0.0.1:{port}"
    yield record
    await runner.cleanup()


def provider(api: str, url: str, fast: bool) -> kit.OpenAIProvider | kit.AnthropicProvider:
    """The API's provider for a server at `url` (OpenAI's paths under /v1, as Anthropic's)."""
    if api == "openai":
        return kit.OpenAIProvider(api_key=KEY, base_url=url + "/v1", fast=fast)
    return kit.AnthropicProvider(api_key=KEY, base_url=url, fast=fast)


async def one_row(api: str, url: str, fast: bool, prompt: str = "q", **options: Any) -> Any:
    options = {"progress": False, "cache": False, "max_attempts": 1, **options}
    frame = pd.DataFrame({"prompt": [prompt]})
    return await kit.run_df(frame, "prompt", provider=provider(api, url, fast), **options)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
async def test_the_lean_path_sends_what_the_sdk_sends(
    recorder: Recorder, api: str, stream: bool
) -> None:
    params = {
        "metadata": {"user_id": "u-1"},
        "extra_body": {"top_k": 3},
        "extra_headers": {"X-Team": "analytics"},
    }
    results = [
        await one_row(api, recorder.url, fast, system="Be brief.", params=params, stream=stream)
        for fast in (False, True)
    ]
    (sdk_path, sdk_headers, sdk_body), (path, headers, body) = recorder.seen
    assert path == sdk_path
    assert body == sdk_body  # the same fields (in another order)
    assert {k: v for k, v in headers.items() if k not in SDK_ONLY} == {
        k: v for k, v in sdk_headers.items() if k not in SDK_ONLY
    }
    assert headers["x-team"] == "analytics" and KEY in headers["authorization"]
    assert body.get("stream") is (stream or None)
    assert "x-stainless-raw-response" in sdk_headers  # the SDK's wrapper sent the first,
    assert "x-stainless-raw-response" not in headers  # the lean path the second
    timing = ["latency_s", "ttft_s"]
    assert results[0].drop(columns=timing).equals(results[1].drop(columns=timing))
    assert results[1].loc[0, "response"] == ("Hello world" if stream else "hi")


async def no_sdk(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the SDK sent a request the lean path takes")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
async def test_the_lean_path_is_taken(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch, api: str, stream: bool
) -> None:
    monkeypatch.setattr(openai._base_client.AsyncAPIClient, "request", no_sdk)
    monkeypatch.setattr(anthropic._base_client.AsyncAPIClient, "request", no_sdk)
    frame = pd.DataFrame({"prompt": ["a", "[[429 times=1]] b", "[[status=400]] c"]})
    result = await kit.run_df(
        frame,
        "prompt",
        provider=provider(api, server.url, fast=True),
        progress=False,
        stream=stream,
        retry=kit.RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02),
    )
    assert result["status"].tolist() == ["ok", "ok", "error"]
    assert result["error_type"].iloc[2] == "bad_request"
    assert result["attempts"].tolist() == [1, 2, 1]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
async def test_a_request_the_lean_path_does_not_take_goes_through_the_sdk(
    recorder: Recorder, api: str, stream: bool
) -> None:
    params = {"extra_query": {"trace": "1"}}
    result = await one_row(api, recorder.url, True, params=params, stream=stream)
    assert result.loc[0, "status"] == "ok"
    assert recorder.seen[0][0].endswith("?trace=1")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
async def test_a_body_json_cannot_send_fails_as_on_the_sdk_path(
    recorder: Recorder, api: str, stream: bool
) -> None:
    params = {"metadata": {"user_id": math.nan}}  # the SDK refuses NaN
    sdk, lean = [
        await one_row(api, recorder.url, fast, params=params, stream=stream)
        for fast in (False, True)
    ]
    assert lean.loc[0, "error_type"] == sdk.loc[0, "error_type"] == "unexpected"
    assert lean.loc[0, "error"] == sdk.loc[0, "error"]
    assert recorder.seen == []


@pytest.mark.parametrize("api", APIS)
async def test_a_redirect_is_followed_as_the_sdk_follows_it(recorder: Recorder, api: str) -> None:
    result = await one_row(api, recorder.url + "/moved", True)
    assert result.loc[0, "status"] == "ok", result.loc[0, "error"]
    assert len(recorder.seen) == 1


async def test_no_lean_path_where_the_sdk_must_send_every_request() -> None:
    create = AsyncCompletions.create
    plain = openai.AsyncOpenAI(api_key=KEY, base_url="http://127.0.0.1:9/v1")  # httpx2's own
    assert await FastPost.build(plain, openai, "/chat/completions", create) is None
    await plain.close()

    class Broken:  # an SDK client whose insides moved
        custom_auth = None

    assert await FastPost.build(Broken(), openai, "/chat/completions", create) is None
    async with kit.OpenAIProvider(api_key=KEY, fast=False).session(
        timeout=5, clock=LoopClock()
    ) as session:
        assert session._fast is None


def test_reply_headers_read_as_the_sdk_reads_them() -> None:
    raw = [
        ("X-RateLimit-Remaining-Requests", "5"),
        ("x-ratelimit-remaining-requests", "7"),
        ("retry-after", "nan"),
        ("x-empty", ""),
    ]
    ours = ReplyHeaders(CIMultiDictProxy(CIMultiDict(raw)))
    theirs = httpx2.Headers(raw)
    for name in ("x-ratelimit-remaining-requests", "RETRY-AFTER", "x-empty", "absent"):
        assert ours.get(name) == theirs.get(name)
    assert sorted(ours) == sorted(theirs.keys()) and len(ours) == 3
    with pytest.raises(KeyError):
        ours["absent"]


async def test_a_connection_failure_is_the_sdks_connection_error() -> None:
    dead = kit.OpenAIProvider(api_key=KEY, base_url="http://127.0.0.1:9/v1", fast=True)
    async with dead.session(timeout=5, clock=LoopClock()) as session:
        fast = session._fast
        assert fast is not None
        with pytest.raises(openai.APIConnectionError) as caught:
            await fast.post({"model": "m", "messages": []})
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)


@pytest.mark.parametrize("api", APIS)
async def test_what_the_lean_path_sends_as_body_fields_the_sdk_sends_there_too(api: str) -> None:
    """Every parameter the lean path takes for a body field, the installed SDK puts in the
    body under the same name (a parameter it sends as a header would be caught here)."""
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        bodies.append(json.loads(request.content))
        reply = OPENAI_REPLY if api == "openai" else ANTHROPIC_REPLY
        return httpx2.Response(200, json=reply)

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    required: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
    create: Any
    if api == "openai":
        client: Any = openai.AsyncOpenAI(api_key=KEY, base_url="http://x/v1", http_client=http)
        create, send = AsyncCompletions.create, client.chat.completions.with_raw_response.create
    else:
        client = anthropic.AsyncAnthropic(api_key=KEY, base_url="http://x", http_client=http)
        required["max_tokens"] = 5
        create = anthropic.resources.messages.AsyncMessages.create
        send = client.messages.with_raw_response.create
    names = body_params(create)
    assert {"model", "messages", "temperature" if api == "openai" else "system"} <= names
    for name in sorted(names - set(required)):
        await send(**{**required, name: "probe"})
        assert bodies[-1].get(name) == "probe", name
    await client.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_a_request_the_sdk_warns_about_is_sent_by_the_sdk(
    recorder: Recorder, stream: bool
) -> None:
    deprecated = min(_warned_models()[0])
    with pytest.warns(DeprecationWarning, match="deprecated"):
        result = await one_row("anthropic", recorder.url, True, model=deprecated, stream=stream)
    assert result.loc[0, "status"] == "ok"
    assert "x-stainless-raw-response" in recorder.seen[0][1]  # sent by the SDK


# -- streamed replies -----------------------------------------------------------------------


def oai_chunk(delta: Any = None, finish: Any = None, **fields: Any) -> dict[str, Any]:
    """A chat.completion.chunk record (`delta` None: no choices)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"object": "chat.completion.chunk", "model": "m-stream", "choices": choices, **fields}


def oai_stream(*middle: Any, done: bool = True) -> list[tuple[str | None, Any]]:
    """A Chat Completions stream's records around `middle`: the role, the finish, the usage."""
    role = oai_chunk({"role": "assistant", "content": ""})
    usage = oai_chunk(usage={"prompt_tokens": 3, "completion_tokens": 2})
    end = [(None, "[DONE]")] if done else []
    return [(None, role), *middle, (None, oai_chunk({}, "stop")), (None, usage), *end]


def oai_text(text: Any) -> tuple[str | None, Any]:
    return None, oai_chunk({"content": text})


def claude_stream(*middle: Any) -> list[tuple[str | None, Any]]:
    """A Messages stream's events around `middle`: the start (input tokens), the end."""
    usage = {"input_tokens": 3, "output_tokens": 1}
    start = {"type": "message_start", "message": {"model": "m-stream", "usage": usage}}
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}}
    delta["usage"] = {"output_tokens": 2}
    return [
        ("message_start", start),
        ("ping", {"type": "ping"}),
        *middle,
        ("message_delta", delta),
        ("message_stop", {"type": "message_stop"}),
    ]


def claude_text(text: Any, event: str | None = "content_block_delta") -> tuple[str | None, Any]:
    return event, {"type": "content_block_delta", "delta": {"type": "text_delta", "text": text}}


def sse(records: list[tuple[str | None, Any]], end: str = "\n") -> str:
    """Event-stream text of (event, data) records (data: JSON, or a str sent as is)."""
    out = []
    for event, data in records:
        head = "" if event is None else f"event: {event}{end}"
        text = data if isinstance(data, str) else json.dumps(data)
        out.append(f"{head}data: {text}{end}{end}")
    return "".join(out)


def split(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


HELLO_OAI = oai_stream(oai_text("Hello"), oai_text(" world"))
HELLO_CLAUDE = claude_stream(claude_text("Hello"), claude_text(" world"))
ERROR_OAI = {"error": {"message": "boom", "type": "server_error"}}
ERROR_CLAUDE = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
HUGE = "x" * 100_000  # one record over 64 KiB: beyond aiohttp's line limit
OK = "ok"
# A hostile stream per case: the wire's pieces (sent apart), a directive, and the row's
# status with its response (ok) or error type. Each must read the same on both paths.
HOSTILE: dict[str, tuple[str, list[str], str, str, str]] = {
    # (api, pieces, directive, status, response or error type)
    "oai-crlf": ("openai", [sse(HELLO_OAI, "\r\n")], "", OK, "Hello world"),
    "oai-cr": ("openai", [sse(HELLO_OAI, "\r")], "", OK, "Hello world"),
    "oai-split-everywhere": ("openai", split(sse(HELLO_OAI, "\r\n"), 7), "", OK, "Hello world"),
    "oai-data-on-lines": (
        "openai",
        [sse(HELLO_OAI[:1]) + 'data: {"choices":\ndata: [{"delta": {"content": "Hi"}}]}\n\n'],
        "",
        OK,
        "Hi",
    ),
    "oai-comments-and-fields": (
        "openai",
        [
            ": ping\nretry: 10\nretry: soon\nfoo: bar\n" + sse(HELLO_OAI[:1]),
            ": ping\n\n",
            'data:{"choices": [{"delta": {"content": "Hi"}}]}\n\n',
            sse(HELLO_OAI[-3:]),
        ],
        "",
        OK,
        "Hi",
    ),
    "oai-id-then-a-blank-line": (  # the kept id makes a blank line an event with no data
        "openai",
        ["id: 7\n" + sse(HELLO_OAI[:2]) + "\n" + sse(HELLO_OAI[2:])],
        "",
        "error",
        "invalid_response",
    ),
    "oai-event-names": (
        "openai",
        [
            sse(
                oai_stream(
                    ("whatever", oai_chunk({"content": "A"})),
                    ("thread.run", oai_chunk({"content": "B"})),  # wrapped by the SDK: no text
                )
            )
        ],
        "",
        OK,
        "A",
    ),
    "oai-huge-record": ("openai", split(sse(oai_stream(oai_text(HUGE))), 30_000), "", OK, HUGE),
    "oai-error-record": (
        "openai",
        [sse(oai_stream(oai_text("Hi"), (None, ERROR_OAI)))],
        "",
        "error",
        "server",
    ),
    "oai-error-not-an-object": (
        "openai",
        [sse(oai_stream(oai_text("Hi"), (None, {"error": "down"})))],
        "",
        "error",
        "server",
    ),
    "oai-falsy-errors": (
        "openai",
        [
            sse(
                oai_stream(
                    (None, {**oai_chunk({"content": "Hi"}), "error": None}), (None, {"error": {}})
                )
            )
        ],
        "",
        OK,
        "Hi",
    ),
    "oai-cut": ("openai", split(sse(HELLO_OAI), 40), "[[cut_after=3]]", "error", "connection"),
    "oai-not-utf8": (
        "openai",
        [sse(HELLO_OAI[:1]) + 'data: {"\udcff": 1}\n\n'],
        "",
        "error",
        "invalid_response",
    ),
    "oai-not-utf8-after-text": (  # what came before the bad line is read first
        "openai",
        [sse(oai_stream(oai_text("Hi"), (None, "\udcff"), oai_text("!")))],
        "",
        "error",
        "invalid_response",
    ),
    "oai-not-utf8-comment": (
        "openai",
        [": \udcff\n" + sse(HELLO_OAI)],
        "",
        "error",
        "invalid_response",
    ),
    "oai-utf8-split": (
        "openai",
        [
            sse(HELLO_OAI[:1]) + 'data: {"choices": [{"delta": {"content": "caf\udcc3',
            '\udca9"}}]}\n\n',
            sse(HELLO_OAI[-3:]),
        ],
        "",
        OK,
        "café",
    ),
    "oai-json-not-objects": (
        "openai",
        [
            sse(
                oai_stream(
                    (None, "[1, 2]"), (None, "5"), (None, '"s"'), (None, "null"), oai_text("Hi")
                )
            )
        ],
        "",
        OK,
        "Hi",
    ),
    "oai-odd-types": (
        "openai",
        [
            sse(
                [
                    (None, {"choices": {"0": 1}, "model": ["m"]}),
                    (None, {"choices": [{"delta": [1]}, 2]}),
                    (None, {"choices": [5]}),
                    oai_text(7),
                    oai_text([{"type": "text", "text": "!"}]),
                    (None, oai_chunk({"content": None}, finish=3)),
                    (None, oai_chunk(usage={"prompt_tokens": "4", "completion_tokens": 2.0})),
                    (None, "[DONE]"),
                ]
            )
        ],
        "",
        OK,
        "7!",
    ),
    "oai-done-variants": (
        "openai",
        [sse([*HELLO_OAI[:-1], (None, "[DONE] and more"), (None, "not json")])],
        "",
        OK,
        "Hello world",
    ),
    "oai-no-done-and-an-unended-record": (
        "openai",
        [
            sse(oai_stream(oai_text("Hi"), done=False))
            + 'data: {"choices": [{"delta": {"content": "!"}}]}'
        ],
        "",
        OK,
        "Hi",
    ),
    "oai-empty-data": (
        "openai",
        [sse(HELLO_OAI[:1]) + "data:\n\n"],
        "",
        "error",
        "invalid_response",
    ),
    "oai-bom": ("openai", ["\ufeff" + sse(HELLO_OAI)], "", OK, "Hello world"),
    "claude-crlf": ("anthropic", [sse(HELLO_CLAUDE, "\r\n")], "", OK, "Hello world"),
    "claude-cr": ("anthropic", [sse(HELLO_CLAUDE, "\r")], "", OK, "Hello world"),
    "claude-split-everywhere": (
        "anthropic",
        split(sse(HELLO_CLAUDE, "\r\n"), 7),
        "",
        OK,
        "Hello world",
    ),
    "claude-event-names": (  # no name: skipped; an unknown or wrong name: its data's type counts
        "anthropic",
        [
            sse(
                claude_stream(
                    claude_text("A", None),
                    claude_text("B", "surprise"),
                    claude_text("C", "message_stop"),
                    claude_text("D", ""),
                )
            )
        ],
        "",
        OK,
        "BC",
    ),
    "claude-data-on-lines-and-fields": (
        "anthropic",
        [
            ": hello\nid: 1\nretry: 5\n" + sse(HELLO_CLAUDE[:2]) + "\n\n",
            'event: content_block_delta\ndata: {"type": "content_block_delta",\n'
            'data: "delta": {"text": "Hi"}}\n\n',
            "event: ping\n\nevent: ping\ndata: not json\n\n" + sse(HELLO_CLAUDE[-2:]),
        ],
        "",
        OK,
        "Hi",
    ),
    "claude-huge-record": (
        "anthropic",
        split(sse(claude_stream(claude_text(HUGE))), 30_000),
        "",
        OK,
        HUGE,
    ),
    "claude-error-event": (
        "anthropic",
        [sse(claude_stream(claude_text("Hi"), ("error", ERROR_CLAUDE)))],
        "",
        "error",
        "server",
    ),
    "claude-error-event-not-json": (
        "anthropic",
        [sse(claude_stream(claude_text("Hi"), ("error", "oops")))],
        "",
        "error",
        "server",
    ),
    "claude-error-event-empty": (
        "anthropic",
        [sse(HELLO_CLAUDE[:1]) + "event: error\n\n"],
        "",
        "error",
        "server",
    ),
    "claude-cut": (
        "anthropic",
        split(sse(HELLO_CLAUDE), 40),
        "[[cut_after=4]]",
        "error",
        "connection",
    ),
    "claude-not-utf8": (
        "anthropic",
        [sse(HELLO_CLAUDE[:1]) + "event: x\ndata: \udcff\n\n"],
        "",
        "error",
        "invalid_response",
    ),
    "claude-not-json": (
        "anthropic",
        [sse(HELLO_CLAUDE[:1]) + "event: x\ndata: {\n\n"],
        "",
        "error",
        "invalid_response",
    ),
    "claude-json-not-objects": (
        "anthropic",
        [
            sse(
                claude_stream(
                    ("content_block_delta", "[1]"), ("x", "5"), ("x", "null"), claude_text("Hi")
                )
            )
        ],
        "",
        OK,
        "Hi",
    ),
    "claude-odd-types": (
        "anthropic",
        [
            sse(
                [
                    ("message_start", {"type": "message_start", "message": [1]}),
                    (
                        "message_start",
                        {
                            "type": "message_start",
                            "message": {"usage": {"input_tokens": "5"}, "model": 3},
                        },
                    ),
                    ("content_block_delta", {"type": "content_block_delta", "delta": "text"}),
                    claude_text(7),
                    (
                        "content_block_delta",
                        {"type": "content_block_delta", "delta": {"partial_json": "{}"}},
                    ),
                    (
                        "message_delta",
                        {"type": "message_delta", "delta": [], "usage": {"output_tokens": -1}},
                    ),
                ]
            )
        ],
        "",
        OK,
        "{}",
    ),
}


async def streamed_row(api: str, url: str, fast: bool, prompt: str) -> pd.DataFrame:
    result: pd.DataFrame = await one_row(api, url, fast, prompt, stream=True)
    return result.drop(columns=["latency_s", "ttft_s", "request_id"])


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_a_hostile_stream_reads_the_same_on_both_paths(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    api, pieces, directive, status, expected = HOSTILE[case]
    server.configure(stream_script=pieces, chunk_delay=0.001)
    prompt = f"{directive} q"
    sdk = await streamed_row(api, server.url, False, prompt)
    monkeypatch.setattr(openai._base_client.AsyncAPIClient, "request", no_sdk)
    monkeypatch.setattr(anthropic._base_client.AsyncAPIClient, "request", no_sdk)
    lean = await streamed_row(api, server.url, True, prompt)
    row = lean.iloc[0]
    assert row["status"] == status, row["error"]
    assert row["response" if status == OK else "error_type"] == expected
    pd.testing.assert_frame_equal(lean, sdk)


SSE_LINES = [
    'data: {"a": 1}',
    "data:x",
    "data",
    "data: ",
    "event: e",
    "event:",
    "id: 3",
    "id: a\0b",
    "id:",
    "retry: 5",
    "retry: soon",
    ": a comment",
    "foo: bar",
    "",
    "",
    "",
    "data: caf\u00e9",
    "\ufeffdata: bom",
]


def sse_wire(rng: random.Random) -> bytes:
    """Random event-stream bytes: lines of every kind, every line ending, now and then a
    byte that is no UTF-8."""
    lines = [rng.choice(SSE_LINES) + rng.choice(["\n", "\r", "\r\n"]) for _ in range(20)]
    wire = "".join(lines).encode()
    if rng.random() < 0.2:
        at = rng.randrange(len(wire))
        wire = wire[:at] + b"\xff" + wire[at:]
    return wire


def cut_up(wire: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(wire)), min(len(wire) - 1, rng.randrange(8))))
    return [wire[a:b] for a, b in itertools.pairwise([0, *cuts, len(wire)])]


async def sdk_decoded(decoder: Any, pieces: list[bytes]) -> tuple[list[Any], bool]:
    async def source() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    events = []
    try:
        async for sse_event in decoder.aiter_bytes(source()):
            events.append((sse_event.event, sse_event.data))
    except UnicodeDecodeError:
        return events, True
    return events, False


def lean_decoded(pieces: list[bytes]) -> tuple[list[Any], bool]:
    decoder, events = EventDecoder(), []
    for piece in [*pieces, b""]:
        events += decoder.feed(piece) if piece else decoder.finish()
        if decoder.failed is not None:
            return events, True
    return events, False


async def test_server_sent_events_decode_as_the_sdks_decode_them() -> None:
    """Random wires cut up at random (a CRLF split in two too): the lean path's decoder
    gives the events openai's decoder gives, and fails where it fails. anthropic's decoder
    differs in one way only: a CR that ends a piece after an empty line, then LF, is two
    line ends to it, and with an id kept that makes an extra event without a name, which
    its stream skips; so only its named events are compared."""
    rng = random.Random(15)
    for _ in range(3000):
        pieces = cut_up(sse_wire(rng), rng)
        ours, failed = lean_decoded(pieces)
        assert (ours, failed) == await sdk_decoded(openai._streaming.SSEDecoder(), pieces)
        theirs, also_failed = await sdk_decoded(anthropic._streaming.SSEDecoder(), pieces)
        named = [event for event in ours if event[0] is not None]
        assert (named, failed) == ([event for event in theirs if event[0] is not None], also_failed)


@pytest.mark.parametrize("api", APIS)
async def test_a_stream_that_hangs_past_the_sdks_read_timeout_times_out_on_both_paths(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch, api: str
) -> None:
    """The SDK client's own read timeout (a backstop behind the kit's deadlines) ends a
    stream that stalls mid-way: a timeout, with what the stream said and (anthropic) the
    tokens it reported, on both paths."""
    for module in (openai_chat, anthropic_messages):
        monkeypatch.setattr(module, "SDK_TIMEOUT_SLACK", 0.0)
    stream, hello = (HELLO_OAI, 2) if api == "openai" else (HELLO_CLAUDE, 3)
    server.configure(stream_script=[sse(stream[:hello]), sse(stream[hello:])])
    messages = [{"role": "user", "content": "[[stall_after=1]] q"}]
    params = {"max_tokens": 5} if api == "anthropic" else {}
    request = Request(key=0, messages=messages, model="m", params=params)
    errors = []
    for fast in (False, True):
        clock = LoopClock()
        chunks = Chunks(clock, Deadline(60, clock, idle=True))
        async with provider(api, server.url, fast).session(timeout=0.3, clock=clock) as session:
            with pytest.raises(CallError) as caught:
                await session.stream(request, chunks)
        error = caught.value
        errors.append((error.error_type, str(error), error.input_tokens, chunks.so_far))
        monkeypatch.setattr(openai._base_client.AsyncAPIClient, "request", no_sdk)
        monkeypatch.setattr(anthropic._base_client.AsyncAPIClient, "request", no_sdk)
    assert errors[0] == errors[1]
    assert errors[1][0] is ErrorType.TIMEOUT and errors[1][-1] == "Hello"
    assert errors[1][2] == (3 if api == "anthropic" else None)
