"""Hostile 200 replies over HTTP: nothing after a successful reply may lose the row, and a
reply that is no reply is `invalid_response` (retried) on both providers."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from conftest import KEY, quick_retries
from fake_server import FakeLLMServer

import notebook_kit as kit
from notebook_kit.providers.replies import label, text_of, token_count

pytestmark = pytest.mark.usefixtures("request_path")  # the lean path and the SDK's

APIS = ["openai", "anthropic"]
USAGE_NAMES = {
    "openai": ("prompt_tokens", "completion_tokens"),
    "anthropic": ("input_tokens", "output_tokens"),
}


async def run(api: str, server: FakeLLMServer, prompts: list[str], **kwargs: Any) -> pd.DataFrame:
    """The prompts through `api`'s real SDK against the fake server, with quick retries."""
    base_url = server.openai_base_url if api == "openai" else server.anthropic_base_url
    kwargs.setdefault("progress", False)
    kwargs.setdefault("cache", False)
    kwargs.setdefault("api_key", KEY)
    quick_retries(kwargs)
    df = pd.DataFrame({"prompt": prompts})
    return await kit.run_df(df, "prompt", provider=api, base_url=base_url, **kwargs)


def ok(result: pd.DataFrame) -> pd.Series[Any]:
    """The only row of `result`, after checking it was answered with the fake model's text."""
    row = result.iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["response"] == "Reply to: q"
    return row


# -- usage -------------------------------------------------------------------

USAGE: list[tuple[object, object, int | None, int | None]] = [
    ("12", " 7 ", 12, 7),  # Anthropic-compatible servers that send strings
    (12.0, "7.0", 12, 7),  # clean numbers in other clothes
    (12.5, 7, None, 7),  # a fraction is not a count: None, the other count is kept
    ("twelve", -3, None, None),
    (True, 1e30, None, None),  # a bool is not a count; 1e30 would overflow Int64
    (float("nan"), [7], None, None),  # Python's json writes and reads NaN
    ({"n": 1}, "", None, None),
]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(("given_in", "given_out", "tokens_in", "tokens_out"), USAGE)
async def test_usage_of_any_type_keeps_the_row(
    server: FakeLLMServer,
    api: str,
    given_in: object,
    given_out: object,
    tokens_in: int | None,
    tokens_out: int | None,
) -> None:
    names = USAGE_NAMES[api]
    server.configure(reply_patch={"usage": {names[0]: given_in, names[1]: given_out}})
    result = await run(api, server, ["q"])
    row = ok(result)
    assert result["input_tokens"].dtype == "Int64" and result["output_tokens"].dtype == "Int64"
    assert (row["input_tokens"], row["output_tokens"]) == (
        pd.NA if tokens_in is None else tokens_in,
        pd.NA if tokens_out is None else tokens_out,
    )
    assert (row["cost_usd"] > 0) if tokens_in and tokens_out else pd.isna(row["cost_usd"])
    assert row["attempts"] == 1


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("usage", [None, "12 tokens", [1, 2]])  # None: no usage at all
async def test_a_reply_without_usable_usage_is_ok_with_no_tokens(
    server: FakeLLMServer, api: str, usage: object
) -> None:
    server.configure(reply_patch={"usage": usage})
    row = ok(await run(api, server, ["q"]))
    assert pd.isna(row["input_tokens"]) and pd.isna(row["output_tokens"])
    assert pd.isna(row["cost_usd"])  # unknown, never 0
    assert row["attempts"] == 1


# -- text, finish reason, model ----------------------------------------------

OPENAI_MESSAGES: list[tuple[dict[str, Any], str]] = [
    ({"role": "assistant"}, ""),  # content missing (null): an empty answer
    ({"role": "assistant", "content": 5}, "5"),
    ({"role": "assistant", "content": [{"type": "text", "text": "a"}, "b"]}, "ab"),
    ({"role": "assistant", "content": {"type": "text", "text": "c"}}, "c"),
    ({"role": "assistant", "content": True}, "true"),
]


@pytest.mark.parametrize(("message", "text"), OPENAI_MESSAGES)
async def test_openai_text_of_any_type(
    server: FakeLLMServer, message: dict[str, Any], text: str
) -> None:
    server.configure(reply_patch={"choices": [{"index": 0, "message": message}]})
    result = await run("openai", server, ["q"])
    assert result.loc[0, "status"] == "ok"
    assert result.loc[0, "response"] == text
    assert result["finish_reason"].isna().all()


ANTHROPIC_CONTENT: list[tuple[object, str]] = [
    ([], ""),
    ([{"type": "text"}], ""),  # text missing
    ([{"type": "text", "text": 5}, {"type": "text", "text": "x"}], "5x"),
    ([{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "y"}], "y"),
    ("plain string", "plain string"),  # some compatible servers
]


@pytest.mark.parametrize(("content", "text"), ANTHROPIC_CONTENT)
async def test_anthropic_text_of_any_type(
    server: FakeLLMServer, content: object, text: str
) -> None:
    server.configure(reply_patch={"content": content})
    result = await run("anthropic", server, ["q"])
    assert result.loc[0, "status"] == "ok"
    assert result.loc[0, "response"] == text


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("odd", [7, ["stop"], {"a": 1}, ""])
async def test_odd_finish_reasons_and_models_keep_the_row(
    server: FakeLLMServer, api: str, odd: object
) -> None:
    message = {"role": "assistant", "content": "Reply to: q"}
    choice = {"index": 0, "message": message, "finish_reason": odd}
    finish = {"choices": [choice]} if api == "openai" else {"stop_reason": odd}
    server.configure(reply_patch={**finish, "model": odd})
    row = ok(await run(api, server, ["q"]))
    assert pd.isna(row["finish_reason"])
    assert row["model"] == ("gpt-4.1-mini" if api == "openai" else "claude-haiku-4-5")
    assert row["cost_usd"] > 0  # priced by the requested model


@pytest.mark.parametrize("api", APIS)
async def test_a_missing_model_is_the_requested_one(server: FakeLLMServer, api: str) -> None:
    server.configure(reply_patch={"model": None})
    row = ok(await run(api, server, ["q"], model="my-model"))
    assert row["model"] == "my-model"


# -- replies that are no replies ---------------------------------------------

NOT_REPLIES = ["not_utf8", "error_200", "malformed"]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("fault", NOT_REPLIES)
async def test_a_reply_that_is_no_reply_is_retried(
    server: FakeLLMServer, api: str, fault: str
) -> None:
    result = await run(
        api, server, [f"[[{fault} times=1]] q", f"[[{fault}]] always"], max_attempts=3
    )
    assert result["status"].tolist() == ["ok", "error"]
    assert result["attempts"].tolist() == [2, 3]
    assert result.loc[1, "error_type"] == "invalid_response"
    assert result.loc[0, "response"] == "Reply to: q"


@pytest.mark.parametrize("api", APIS)
async def test_an_error_inside_a_200_is_shown(server: FakeLLMServer, api: str) -> None:
    result = await run(api, server, ["[[error_200]] q"], max_attempts=1)
    error = str(result.loc[0, "error"])
    assert result.loc[0, "error_type"] == "invalid_response"
    assert "Overloaded (an error in a 200 reply)." in error
    assert "{'" not in error  # no raw dict


WRONG_SHAPES = [
    ("openai", {"choices": "x"}),
    ("openai", {"choices": []}),
    ("openai", {"choices": None}),  # no choices at all
    ("openai", {"choices": [{"index": 0}]}),  # a choice without a message
    ("openai", {"choices": [5]}),
    ("anthropic", {"content": None}),
    ("anthropic", {"content": {"type": "text", "text": "x"}}),
    ("anthropic", {"content": 5}),
]


@pytest.mark.parametrize(("api", "patch"), WRONG_SHAPES)
async def test_a_reply_of_the_wrong_shape_is_invalid_and_retried(
    server: FakeLLMServer, api: str, patch: dict[str, Any]
) -> None:
    server.configure(reply_patch=patch)
    result = await run(api, server, ["q"], max_attempts=2)
    assert result.loc[0, "error_type"] == "invalid_response"
    assert result.loc[0, "attempts"] == 2


def test_field_readers() -> None:
    assert [token_count(v) for v in (3, "4", " 5\n", 6.0, "7.0", 0)] == [3, 4, 5, 6, 7, 0]
    odd: list[object] = [1.5, -1, "x", "", None, True, [1], {}, float("inf"), 10**13, "nan"]
    assert [token_count(v) for v in odd] == [None] * len(odd)
    assert [label(v) for v in ("req_1", "", "  ", None, 5, ["a"])] == ["req_1"] + [None] * 5
    parts = [{"type": "text", "text": "a"}, {"type": "tool_use", "id": "t"}, {"text": "b"}, None]
    assert [text_of(v) for v in (None, "x", parts, 1.5, False)] == ["", "x", "ab", "1.5", "false"]
