"""Keeping API keys out of frames, reprs, logs and error text."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlsplit, urlunsplit

MASK = "***"
_MIN_SECRET = 4  # shorter strings would mask ordinary words


class Redactor:
    """Replaces every known secret in a text with `***`."""

    def __init__(self, *secrets: str | None) -> None:
        self._secrets = sorted(
            {s for s in secrets if s and len(s) >= _MIN_SECRET}, key=len, reverse=True
        )

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"


def url_secrets(url: str | None) -> list[str]:
    """The parts of a URL that may be credentials: user, password and query values."""
    if not url:
        return []
    parts = urlsplit(url)
    found = [parts.username, parts.password]
    found += [value for _, value in parse_qsl(parts.query)]
    return [s for s in found if s]


def safe_url(url: str | None) -> str | None:
    """The URL without user info and query, safe to show and store."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in a record's final message."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self._redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
