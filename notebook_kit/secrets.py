"""Keeping API keys out of frames, reprs, logs and error text; refusing keys and base URLs
that cannot be sent or would carry a secret where it would be shown."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from .errors import ConfigError

MASK = "***"
# Keys this long are masked wherever they appear; shorter ones only as a whole word, since
# masking a short key inside words would mangle ordinary text (a key "test" in "latest").
WHOLE_WORD_BELOW = 8


class Redactor:
    """Replaces every known secret in a text with `***` (secrets are stripped first).

    A secret of `WHOLE_WORD_BELOW` characters or more is masked wherever it appears. A
    shorter one is masked entirely wherever it stands as a word of its own (not touching a
    letter, digit, `_` or `-`), never as a piece of a longer word.
    """

    def __init__(self, *secrets: str | None) -> None:
        keys = sorted({s.strip() for s in secrets if s and s.strip()}, key=len, reverse=True)
        self._count = len(keys)
        self._long = [key for key in keys if len(key) >= WHOLE_WORD_BELOW]
        short = "|".join(re.escape(key) for key in keys if len(key) < WHOLE_WORD_BELOW)
        self._short = re.compile(rf"(?<![\w-])(?:{short})(?![\w-])") if short else None

    def __call__(self, text: str) -> str:
        for secret in self._long:
            text = text.replace(secret, MASK)
        return self._short.sub(MASK, text) if self._short else text

    def __repr__(self) -> str:
        return f"Redactor({self._count} secrets)"


class Secret:
    """A key held by a provider: its repr is masked, so printing the provider's attributes
    (`vars(provider)`, a debugger, a traceback with locals) shows no key."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the SDK client only."""
        return self._value

    def digest(self) -> str:
        """A short one-way digest: tells two keys apart, reveals neither."""
        import hashlib

        return hashlib.sha256(self._value.encode("utf-8", "replace")).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"


def read_key(argument: str | None, env_var: str) -> str | None:
    """The API key given as `argument`, else in the environment variable `env_var`, without
    the whitespace a paste leaves around it; None when neither holds one.

    A key with a line break, a control character or non-ASCII text inside cannot be sent:
    `ConfigError` says where it came from (never quoting it), before anything is sent.
    """
    sources = ((argument, "api_key=..."), (os.environ.get(env_var), f"the {env_var} variable"))
    for value, source in sources:
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError(f"the API key in {source} must be text, not {type(value).__name__}")
        key = value.strip()
        if key:
            _check_key(key, source)
            return key
    return None


def _check_key(key: str, source: str) -> None:
    for position, char in enumerate(key, start=1):
        if char in "\r\n":
            problem = "a line break"
        elif not " " <= char <= "~":
            problem = "a control character" if char <= "\x7f" else "a non-ASCII character"
        else:
            continue
        raise ConfigError(
            f"the API key in {source} holds {problem} (character {position} of {len(key)}), "
            "so it cannot be sent: copy the key again"
        )


def check_base_url(url: str | None) -> None:
    """Refuse a base URL that is not plain http(s)://host[:port][/path].

    User info (any '@', wherever urlsplit would put it), a query or a fragment may carry a
    secret into attrs, logs and error text; the message never quotes the URL.
    """
    if not url:
        return
    if any(mark in url.partition("://")[2] for mark in "@?#"):
        raise ConfigError(
            "base_url must not carry credentials, a query or a fragment (user:password@, ?key=):"
            " give the server's address alone and pass the key as api_key=..."
        )
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number, a broken IPv6 address
        valid = False
    if not valid or any(char.isspace() or not char.isprintable() for char in url):
        raise ConfigError("base_url must be an http(s) URL like http://localhost:8000/v1")
