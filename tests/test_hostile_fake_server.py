"""The fake server's tools for hostile tests: replies spoiled on purpose, patched bodies,
verbatim Retry-After headers, and the system prompt each request carried."""

from __future__ import annotations

import json

import aiohttp
import anthropic
import openai
import pytest
from anthropic.types import MessageParam, TextBlockParam
from conftest import KEY
from fake_server import FakeLLMServer
from multidict import CIMultiDict
from test_hostile_replies import APIS, run

pytestmark = pytest.mark.usefixtures("request_path")  # the lean path and the SDK's

MODEL = "test-model"
Raw = tuple[int, CIMultiDict[str], bytes]


async def post(server: FakeLLMServer, path: str, prompt: str) -> Raw:
    """One raw request: the status, headers and body bytes exactly as sent."""
    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": prompt}]}
    async with (
        aiohttp.ClientSession(server.url, headers={"x-api-key": KEY}) as http,
        http.post(path, json=body) as response,
    ):
        return response.status, response.headers.copy(), await response.read()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_replies_spoiled_on_purpose(server: FakeLLMServer, path: str) -> None:
    status, _, garbled = await post(server, path, "[[not_utf8]] hi")
    _, _, error = await post(server, path, "[[error_200]] hi")

    assert status == 200
    with pytest.raises(UnicodeDecodeError):
        garbled.decode("utf-8")
    assert json.loads(garbled.decode("latin-1").replace("\xff", ""))  # JSON but for one byte
    assert "Overloaded" in json.dumps(json.loads(error))
    assert server.stats()["tokens_billed_output"] == 3  # the error_200 reply was not billed


async def test_error_200_has_each_apis_error_shape(server: FakeLLMServer) -> None:
    _, _, from_openai = await post(server, "/v1/chat/completions", "[[error_200]]")
    _, _, from_anthropic = await post(server, "/v1/messages", "[[error_200]]")

    message = "Overloaded (an error in a 200 reply)."
    assert json.loads(from_openai) == {
        "error": {"message": message, "type": "server_error", "param": None, "code": None}
    }
    assert json.loads(from_anthropic) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": message},
    }


async def test_reply_patch_and_error_body(server: FakeLLMServer) -> None:
    problem = {"detail": "Unprocessable", "validation": [{"location": ["body"]}]}
    server.configure(
        reply_patch={"usage": {"input_tokens": "12", "output_tokens": 2.5}, "model": None},
        error_body=problem,
    )

    _, _, ok = await post(server, "/v1/messages", "hi")
    status, _, refused = await post(server, "/v1/messages", "[[status=422]]")

    body = json.loads(ok)
    assert body["usage"] == {"input_tokens": "12", "output_tokens": 2.5}
    assert "model" not in body and body["content"][0]["text"] == "Reply to: hi"
    assert status == 422
    assert json.loads(refused) == problem


async def test_retry_after_headers_sent_verbatim(server: FakeLLMServer) -> None:
    _, both, _ = await post(
        server, "/v1/messages", "[[429 retry_after_header=nan retry_after_ms_header=-5000]]"
    )
    _, only_one, _ = await post(server, "/v1/chat/completions", "[[429 retry_after_header=-5]]")
    _, on_503, _ = await post(server, "/v1/messages", "[[status=503 retry_after_header=inf]]")

    assert (both["retry-after"], both["retry-after-ms"]) == ("nan", "-5000")
    assert only_one["retry-after"] == "-5" and "retry-after-ms" not in only_one
    assert on_503["retry-after"] == "inf"


async def test_system_prompts_are_recorded_per_request(
    server: FakeLLMServer, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    await oai.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": [{"type": "text", "text": "Be kind."}]},
            {"role": "user", "content": "hi"},
        ],
    )
    await oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    hi: list[MessageParam] = [{"role": "user", "content": "hi"}]
    blocks: list[TextBlockParam] = [{"type": "text", "text": "Blocks too."}]
    await claude.messages.create(model=MODEL, max_tokens=5, messages=hi, system="In French.")
    await claude.messages.create(model=MODEL, max_tokens=5, messages=hi, system=blocks)
    await claude.messages.create(model=MODEL, max_tokens=5, messages=hi)

    assert server.stats()["systems_seen"] == [
        "Be brief.\n\nBe kind.",
        "",
        "In French.",
        "Blocks too.",
        "",
    ]


@pytest.mark.parametrize("api", APIS)
async def test_the_kits_system_prompt_is_seen_per_row(server: FakeLLMServer, api: str) -> None:
    await run(api, server, ["a", "b", "c"], system="Be brief.", concurrency=1)
    assert server.stats()["systems_seen"] == ["Be brief."] * 3


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(("seconds", "ms"), [("nan", "-5000"), ("-5", "inf"), ("inf", "nan")])
async def test_garbage_retry_after_over_the_wire_is_absent(
    server: FakeLLMServer, api: str, seconds: str, ms: str
) -> None:
    prompt = f"[[429 times=1 retry_after_header={seconds} retry_after_ms_header={ms}]] q"
    result = await run(api, server, [prompt])
    assert result.loc[0, "status"] == "ok"
    assert result.loc[0, "attempts"] == 2
