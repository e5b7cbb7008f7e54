"""The lean request path (`fast=True`) sends what the SDK sends and is taken where it applies;
what it does not take goes through the SDK. (The provider test modules run every test on
both paths: see the `request_path` fixture.)"""

from __future__ import annotations

import json
import math
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
from notebook_kit.providers.anthropic_messages import _warned_models
from notebook_kit.providers.fast_http import FastPost, body_params
from notebook_kit.providers.replies import ReplyHeaders

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
        self.seen.append((request.path_qs, headers, json.loads(await request.read())))
        reply = ANTHROPIC_REPLY if request.path.endswith("/messages") else OPENAI_REPLY
        return web.json_response(reply, headers={"x-request-id": "req_1", "request-id": "req_1"})


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


@pytest.mark.parametrize("api", APIS)
async def test_the_lean_path_sends_what_the_sdk_sends(recorder: Recorder, api: str) -> None:
    params = {
        "metadata": {"user_id": "u-1"},
        "extra_body": {"top_k": 3},
        "extra_headers": {"X-Team": "analytics"},
    }
    results = [
        await one_row(api, recorder.url, fast, system="Be brief.", params=params)
        for fast in (False, True)
    ]
    (sdk_path, sdk_headers, sdk_body), (path, headers, body) = recorder.seen
    assert path == sdk_path
    assert body == sdk_body  # the same fields (in another order)
    assert {k: v for k, v in headers.items() if k not in SDK_ONLY} == {
        k: v for k, v in sdk_headers.items() if k not in SDK_ONLY
    }
    assert headers["x-team"] == "analytics" and KEY in headers["authorization"]
    assert results[0].drop(columns="latency_s").equals(results[1].drop(columns="latency_s"))


@pytest.mark.parametrize("api", APIS)
async def test_the_lean_path_is_taken(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch, api: str
) -> None:
    async def no_sdk(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the SDK sent a request the lean path takes")

    monkeypatch.setattr(openai._base_client.AsyncAPIClient, "request", no_sdk)
    monkeypatch.setattr(anthropic._base_client.AsyncAPIClient, "request", no_sdk)
    frame = pd.DataFrame({"prompt": ["a", "[[429 times=1]] b", "[[status=400]] c"]})
    result = await kit.run_df(
        frame,
        "prompt",
        provider=provider(api, server.url, fast=True),
        progress=False,
        retry=kit.RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02),
    )
    assert result["status"].tolist() == ["ok", "ok", "error"]
    assert result["error_type"].iloc[2] == "bad_request"
    assert result["attempts"].tolist() == [1, 2, 1]


@pytest.mark.parametrize("api", APIS)
async def test_a_request_the_lean_path_does_not_take_goes_through_the_sdk(
    recorder: Recorder, api: str
) -> None:
    params = {"extra_query": {"trace": "1"}}
    result = await one_row(api, recorder.url, True, params=params)
    assert result.loc[0, "status"] == "ok"
    assert recorder.seen[0][0].endswith("?trace=1")


@pytest.mark.parametrize("api", APIS)
async def test_a_body_json_cannot_send_fails_as_on_the_sdk_path(
    recorder: Recorder, api: str
) -> None:
    params = {"metadata": {"user_id": math.nan}}  # the SDK refuses NaN
    sdk, lean = [await one_row(api, recorder.url, fast, params=params) for fast in (False, True)]
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


async def test_a_request_the_sdk_warns_about_is_sent_by_the_sdk(recorder: Recorder) -> None:
    deprecated = min(_warned_models()[0])
    with pytest.warns(DeprecationWarning, match="deprecated"):
        result = await one_row("anthropic", recorder.url, True, model=deprecated)
    assert result.loc[0, "status"] == "ok"
