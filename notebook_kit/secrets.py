"""Keeping API keys out of frames, reprs, logs and error text."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigError

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


def check_base_url(url: str | None) -> None:
    """Refuse credentials inside a base URL: they would reach logs and error text."""
    if not url:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("base_url must be an http(s) URL like http://localhost:8000/v1")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(
            f"base_url must not carry credentials or a query string; use "
            f"base_url={safe_url(url)!r} and pass the key as api_key=..."
        )


def safe_url(url: str | None) -> str | None:
    """The URL without user info, query and fragment: safe to show and store."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
