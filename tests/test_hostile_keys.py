"""Hostile keys and base URLs: pasted whitespace, control characters, short keys, user info.

A key never appears in a frame, exception text or log line, whatever it looks like."""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from conftest import KEY
from fake_server import FakeLLMServer
from test_hostile_replies import APIS, run

import notebook_kit as kit
from notebook_kit.providers import resolve
from notebook_kit.providers.base import transport_error
from notebook_kit.providers.status import status_error
from notebook_kit.secrets import Redactor

pytestmark = pytest.mark.usefixtures("request_path")  # the lean path and the SDK's

SENTINEL = "sk-SENTINEL-do-not-leak-4f7a9c"
SHORT_KEY = "k" + "1"  # not spelled out: tracebacks quote this file's source lines
ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


def chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        yield exc
        exc = exc.__cause__ or exc.__context__


def shown(exc: BaseException) -> str:
    """Everything a user could see of an exception: its text and every traceback in it."""
    return "".join(str(e) + "".join(traceback.format_exception(e)) for e in chain(exc))


# -- 8: a pasted key's whitespace --------------------------------------------


@pytest.fixture
def wrong_key_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(api_key="the-right-key") as server:  # it echoes wrong keys, stripped
        yield server


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("pasted", [SENTINEL + " ", SENTINEL + "\n", f"\t {SENTINEL}\r\n"])
@pytest.mark.parametrize("from_env", [False, True])
async def test_a_pasted_key_is_stripped_and_masked(
    wrong_key_server: FakeLLMServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    api: str,
    pasted: str,
    from_env: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    if from_env:
        monkeypatch.setenv(ENV[api], pasted)
    options: dict[str, Any] = {} if from_env else {"api_key": pasted}
    base_url = (
        wrong_key_server.openai_base_url if api == "openai" else wrong_key_server.anthropic_base_url
    )
    with pytest.raises(kit.AuthError) as caught:
        await kit.run_df(
            pd.DataFrame({"prompt": ["one", "two"]}),
            "prompt",
            provider=api,
            base_url=base_url,
            progress=False,
            **options,
        )
    assert wrong_key_server.stats()["keys_seen"] == [SENTINEL]  # sent stripped
    partial = caught.value.partial
    assert partial is not None
    assert "Incorrect API key provided: ***" in partial["error"].dropna().iloc[0]
    for text in (partial.to_csv(), str(partial.attrs), shown(caught.value), caplog.text):
        assert SENTINEL not in text


@pytest.mark.parametrize("api", APIS)
async def test_a_right_key_with_a_trailing_newline_works(server: FakeLLMServer, api: str) -> None:
    provider: kit.OpenAIProvider | kit.AnthropicProvider
    if api == "openai":
        provider = kit.OpenAIProvider(api_key=KEY + "\n", base_url=server.openai_base_url)
    else:
        provider = kit.AnthropicProvider(api_key=KEY + "\n", base_url=server.anthropic_base_url)
    result = await kit.run_df(
        pd.DataFrame({"prompt": ["q"]}), "prompt", provider=provider, progress=False
    )
    assert result.loc[0, "status"] == "ok"
    assert server.stats()["keys_seen"] == [KEY]


def test_short_keys_are_masked_as_whole_words_only() -> None:
    redact = Redactor("k1", "test")
    assert redact("Incorrect API key provided: k1.") == "Incorrect API key provided: ***."
    assert redact("key 'test' refused; see the latest test results") == (
        "key '***' refused; see the latest *** results"
    )
    assert redact("k1x, contest, tests, test-suite, k12") == "k1x, contest, tests, test-suite, k12"
    assert Redactor(SENTINEL + "\n")(f"got {SENTINEL}!") == "got ***!"  # the stripped form
    assert Redactor(SENTINEL)(f"a{SENTINEL}b") == "a***b"  # long keys: everywhere


@pytest.mark.parametrize("api", APIS)
async def test_a_short_wrong_key_is_masked_over_the_wire(
    wrong_key_server: FakeLLMServer, api: str
) -> None:
    with pytest.raises(kit.AuthError) as caught:
        await run(api, wrong_key_server, ["q"], api_key=SHORT_KEY)
    partial = caught.value.partial
    assert partial is not None
    assert str(partial.loc[0, "error"]).startswith("HTTP 401: Incorrect API key provided: ***")
    assert re.search(rf"\b{SHORT_KEY}\b", shown(caught.value)) is None


# -- 9: keys that cannot be sent ---------------------------------------------

BROKEN = [
    ("sk-SENTINEL\nsecond-line", "a line break"),
    ("sk-SENTINEL\x1b[0mtail", "a control character"),  # a terminal colour code
    ("sk-SENTINEL\x7ftail", "a control character"),
    ("sk-SENTINEL\u200btail", "a non-ASCII character"),  # a zero-width space
    ("sk-SENTINEL—tail", "a non-ASCII character"),  # an em dash from a word processor
]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(("key", "problem"), BROKEN)
@pytest.mark.parametrize("from_env", [False, True])
async def test_a_key_that_cannot_be_sent_is_refused_before_sending(
    server: FakeLLMServer,
    monkeypatch: pytest.MonkeyPatch,
    api: str,
    key: str,
    problem: str,
    from_env: bool,
) -> None:
    if from_env:
        monkeypatch.setenv(ENV[api], key)
    source = ENV[api] if from_env else "api_key="
    options: dict[str, Any] = {} if from_env else {"api_key": key}
    base_url = server.openai_base_url if api == "openai" else server.anthropic_base_url
    with pytest.raises(kit.ConfigError, match=problem) as caught:
        await kit.run_df(
            pd.DataFrame({"prompt": ["one", "two"]}),
            "prompt",
            provider=api,
            base_url=base_url,
            progress=False,
            **options,
        )
    assert source in str(caught.value)
    assert "SENTINEL" not in shown(caught.value) and "tail" not in str(caught.value)
    assert server.stats()["requests_total"] == 0


def test_a_broken_key_is_refused_when_the_provider_is_chosen_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-SENTINEL\nx")
    with pytest.raises(kit.ConfigError, match="ANTHROPIC_API_KEY") as caught:
        resolve(None)
    assert "SENTINEL" not in shown(caught.value)


def test_a_blank_key_is_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", " \n")
    with pytest.raises(kit.MissingKeyError, match="OPENAI_API_KEY"):
        kit.OpenAIProvider()
    assert isinstance(resolve(None)[0], kit.DemoProvider)  # a blank variable is not a key
    assert isinstance(resolve(None, api_key=" sk-ant-123 ")[0], kit.AnthropicProvider)


# -- 10: user info in a base URL ---------------------------------------------

URLS = [
    "https://ID:SECRET/WITH/SLASHES@127.0.0.1:9/v1",
    "http://user:SE/CRET@127.0.0.1:9",
    "http://user:SECRET@127.0.0.1:9/v1",
    "http://SECRET@127.0.0.1:9/v1",
    "http://127.0.0.1:9/v1?api-key=SECRET",
    "http://127.0.0.1:9/v1#SECRET",
    "http://127.0.0.1:SECRET/v1",  # no '@', but the "port" is a secret
    "HTTP://u:SECRET@127.0.0.1:9/v1",
]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("from_env", [False, True])
async def test_credentials_in_a_base_url_are_refused_unquoted(
    monkeypatch: pytest.MonkeyPatch, api: str, url: str, from_env: bool
) -> None:
    if from_env:
        monkeypatch.setenv(f"{api.upper()}_BASE_URL", url)
    options: dict[str, Any] = {} if from_env else {"base_url": url}
    with pytest.raises(kit.ConfigError, match="base_url") as caught:
        await kit.run_df(
            pd.DataFrame({"prompt": ["q"]}),
            "prompt",
            provider=api,
            api_key=KEY,
            progress=False,
            **options,
        )
    text = shown(caught.value)
    assert "SECRET" not in text and "CRET" not in text and "SE/" not in text
    assert not any(
        isinstance(e, ValueError) and not isinstance(e, kit.ConfigError)
        for e in chain(caught.value)
    )


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/v1", "https://api.example.com", "http://[::1]:8080/v1/"]
)
def test_plain_base_urls_are_kept_as_given(url: str) -> None:
    provider = kit.OpenAIProvider(api_key=KEY, base_url=url)
    assert provider.describe() == {"base_url": url}
    assert KEY not in repr(provider)


LONG_KEY = "sk-proj-" + "A1b2C3d4E5" * 6


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "x" * 150 + f" the key {LONG_KEY} was revoked", "type": "auth"}},
        [{"detail": [{"loc": ["header", "y" * 150 + LONG_KEY], "msg": "bad"}]}],
        "z" * 160 + LONG_KEY,
    ],
    ids=["message", "field", "text"],
)
def test_a_key_where_the_error_text_is_cut_leaves_no_piece_of_it(body: object) -> None:
    text = str(status_error(401, body, redact=Redactor(LONG_KEY)))
    assert not any(LONG_KEY[:n] in text for n in range(12, len(LONG_KEY)))


def test_a_key_where_a_connection_error_is_cut_leaves_no_piece_of_it() -> None:
    exc = ConnectionError("w" * 170 + f" proxy rejected {LONG_KEY} at the door")
    text = str(transport_error(exc, Redactor(LONG_KEY)))
    assert not any(LONG_KEY[:n] in text for n in range(12, len(LONG_KEY)))


@pytest.mark.parametrize("api", APIS)
async def test_secret_headers_are_sent_but_masked_in_the_frame(
    server: FakeLLMServer, api: str
) -> None:
    headers = {"X-Upstream-Key": SENTINEL, "X-Team": "analytics"}
    result = await run(api, server, ["q"], extra_headers=headers)
    assert result.loc[0, "status"] == "ok"
    assert SENTINEL not in repr(result.attrs) and SENTINEL not in result.to_json()
    assert result.attrs["notebook_kit"]["params"]["extra_headers"]["X-Team"] == "analytics"
