"""Hostile failures over HTTP: dead servers, 429s that only sound like quota, and error
bodies of every shape, shown as one readable line."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import httpx2
import openai
import pandas as pd
import pytest
from conftest import eventually
from fake_server import FakeLLMServer
from test_hostile_replies import APIS, run

import notebook_kit as kit
from notebook_kit.providers.base import transport_error
from notebook_kit.secrets import Redactor
from notebook_kit.types import ErrorType

pytestmark = pytest.mark.usefixtures("request_path")  # the lean path and the SDK's

# -- 11: a dead server is a connection error, not a timeout ------------------


def closed_port() -> int:
    """A local port nobody listens on (connections to it are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("where", ["refused", "dns"])
async def test_an_unreachable_server_is_a_connection_error(api: str, where: str) -> None:
    host = f"127.0.0.1:{closed_port()}" if where == "refused" else "no-such-host.invalid"
    base_url = f"http://{host}/v1" if api == "openai" else f"http://{host}"
    result = await kit.run_df(
        pd.DataFrame({"prompt": ["q"]}),
        "prompt",
        provider=api,
        base_url=base_url,
        api_key="sk-test-key-123456",
        retry=kit.RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02),
        timeout=5,  # a hang would show as a timeout, quickly
        progress=False,
    )
    assert result.loc[0, "error_type"] == "connection"
    assert result.loc[0, "attempts"] == 2  # retried
    error = str(result.loc[0, "error"])
    assert error.startswith("connection failed (") and "Timeout" not in error


@pytest.mark.parametrize("api", APIS)
async def test_a_connection_cut_by_the_server_is_a_connection_error(
    server: FakeLLMServer, api: str
) -> None:
    result = await run(api, server, ["[[reset]] q"], max_attempts=2)
    assert result.loc[0, "error_type"] == "connection"
    assert result.loc[0, "attempts"] == 2


@pytest.mark.parametrize("api", APIS)
async def test_a_server_killed_mid_request_is_a_connection_error(
    server: FakeLLMServer, api: str
) -> None:
    task = asyncio.create_task(run(api, server, ["[[hang]] q"], max_attempts=1, timeout=30))
    await eventually(lambda: server.stats()["in_flight"] == 1)
    server.stop()
    result = await task
    assert result.loc[0, "error_type"] == "connection"


def test_a_real_timeout_under_the_sdk_is_still_a_timeout() -> None:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    try:
        try:
            raise aiohttp.SocketTimeoutError("Timeout on reading data from socket")
        except aiohttp.SocketTimeoutError as cause:
            raise openai.APITimeoutError(request=request) from cause
    except openai.APITimeoutError as exc:
        error = transport_error(exc, Redactor())
    assert error.error_type is ErrorType.TIMEOUT


# -- 12: a 429 is a rate limit unless its code says quota --------------------

VERTEX_PER_MINUTE = {
    "error": {
        "code": 429,
        "message": (
            "Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_minute"
            "_per_project_per_base_model with base model: gemini-2.0-flash. Please submit a "
            "quota increase request."
        ),
        "status": "RESOURCE_EXHAUSTED",
    }
}


@pytest.mark.parametrize("api", APIS)
async def test_a_per_minute_quota_429_is_waited_out(server: FakeLLMServer, api: str) -> None:
    server.configure(error_body=VERTEX_PER_MINUTE)
    result = await run(api, server, ["[[429 times=2 retry_after=0.01]] q", "plain"])
    assert result["status"].tolist() == ["ok", "ok"]
    assert result["attempts"].tolist() == [3, 1]


BILLING_BODIES = [
    {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}},
    {"error": {"message": "Billing hard limit has been reached", "type": "billing_error"}},
    {"type": "error", "error": {"type": "billing_error", "message": "Add a payment method."}},
]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("body", BILLING_BODIES)
async def test_a_429_whose_code_says_billing_stops_the_run(
    server: FakeLLMServer, api: str, body: dict[str, Any]
) -> None:
    server.configure(error_body=body)
    with pytest.raises(kit.QuotaError):
        await run(api, server, ["[[429]] q"])
    assert server.stats()["requests_total"] == 1


# -- 14: the server's message, the field and the error type -----------------

PRISM_422 = {
    "type": "https://stoplight.io/prism/errors#UNPROCESSABLE_ENTITY",
    "title": "Invalid request",
    "status": 422,
    "detail": "Your request is not valid and no HTTP validation response was found in the spec.",
    "validation": [
        {
            "location": ["body", "temperature"],
            "severity": "Error",
            "code": "maximum",
            "message": "must be <= 2",
        }
    ],
}
FASTAPI_422 = {"detail": [{"loc": ["body", "model"], "msg": "Field required", "type": "missing"}]}
OPENAI_400 = {
    "error": {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model.",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "unsupported_parameter",
    }
}

ERROR_TEXTS: list[tuple[int, dict[str, Any] | None, str]] = [
    (
        422,
        PRISM_422,
        "HTTP 422: Your request is not valid and no HTTP validation response was found in the "
        "spec. (field: body.temperature: must be <= 2; type: UNPROCESSABLE_ENTITY)",
    ),
    (422, FASTAPI_422, "HTTP 422: Field required (field: body.model; type: missing)"),
    (
        400,
        OPENAI_400,
        "HTTP 400: Unsupported parameter: 'max_tokens' is not supported with this model. "
        "(field: max_tokens; type: invalid_request_error; code: unsupported_parameter)",
    ),
    (400, {"error": "model 'llama9' not found"}, "HTTP 400: model 'llama9' not found"),  # Ollama
    (400, {}, "HTTP 400: Bad Request"),
]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(("status", "body", "text"), ERROR_TEXTS)
async def test_error_text_shows_message_field_and_type(
    server: FakeLLMServer, api: str, status: int, body: dict[str, Any] | None, text: str
) -> None:
    server.configure(error_body=body)
    result = await run(api, server, [f"[[status={status}]] q"])
    assert result.loc[0, "error_type"] == "bad_request"
    assert result.loc[0, "error"] == text


@pytest.mark.parametrize(
    ("status", "kind", "error_type"),
    [(529, "overloaded_error", "server"), (400, "invalid_request_error", "bad_request")],
)
async def test_anthropic_errors_show_the_message_not_the_envelope(
    server: FakeLLMServer, status: int, kind: str, error_type: str
) -> None:
    result = await run("anthropic", server, [f"[[status={status}]] q"], max_attempts=1)
    assert result.loc[0, "error"] == f"HTTP {status}: Injected HTTP {status} error. (type: {kind})"
    assert result.loc[0, "error_type"] == error_type


@pytest.mark.parametrize("api", APIS)
async def test_a_long_message_is_cut_but_the_field_is_kept(server: FakeLLMServer, api: str) -> None:
    words = " ".join(f"word{i}" for i in range(200))
    body = {"error": {"message": f"{words}\n\n\tend", "param": "top_p", "type": "invalid"}}
    server.configure(error_body=body)
    result = await run(api, server, ["[[status=400]] q"])
    error = str(result.loc[0, "error"])
    assert error.startswith("HTTP 400: word0 word1 ")
    assert error.endswith(" (field: top_p; type: invalid)")
    assert len(error) <= len("HTTP 400: ") + 200 + len(" (field: top_p; type: invalid)")
