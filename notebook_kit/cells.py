"""What a row's cells become: a prompt, a message list, or a final result (skip or fault).

- a missing, NaN or blank prompt makes the row `skipped`;
- numbers and booleans are sent as `str(value)`; other objects (lists, dicts, bytes) fail
  their row as `invalid_input`;
- a template that does not fit one row, or text that is not valid UTF-8, fails that row.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from numbers import Number
from typing import Any

import numpy as np
import pandas as pd

from .errors import ConfigError
from .types import ErrorType, RowResult, RowStatus


def template_fields(template: str) -> list[str]:
    """Column names a template refers to, in order, without repeats."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(
            f"the template is not valid: {exc} (write {{{{ and }}}} for braces)"
        ) from None
    for _, field, _, _ in parsed:
        if field is None:
            continue
        name = field.split(".", 1)[0].split("[", 1)[0]
        if not name or name.isdigit():
            raise ConfigError("template fields must name columns, e.g. 'Summarize: {text}'")
        if name not in names:
            names.append(name)
    return names


def is_missing(value: Any) -> bool:
    """None, NA, NaN of any float type (numpy's too), NaT, and Decimal NaN."""
    if value is None or value is pd.NA:
        return True
    try:
        missing = pd.isna(value)
    except (TypeError, ValueError):
        return False
    return isinstance(missing, bool | np.bool_) and bool(missing)


def text_or_none(value: Any) -> str | None:
    return None if is_missing(value) or str(value).strip() == "" else str(value)


def prompt_of(key: int, value: Any) -> str | RowResult:
    if is_missing(value) or (isinstance(value, str) and not value.strip()):
        return skip(key, "the prompt is empty")
    if isinstance(value, str):
        return value
    if isinstance(value, Number | bool):
        return str(value)
    return row_fault(
        key,
        ErrorType.INVALID_INPUT,
        f"the prompt must be text, got {type(value).__name__}; "
        "use messages_col=... for rows that hold chat message lists",
    )


def render(template: str, row: dict[str, Any], key: int) -> str | RowResult:
    """The row's prompt, or an `invalid_input` fault (e.g. "{price:.2f}" over a text)."""
    try:
        return template.format_map(row)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        problem = f"the template does not fit this row: {type(exc).__name__}: {exc}"
        return row_fault(key, ErrorType.INVALID_INPUT, problem)


def messages_of(key: int, value: Any) -> list[dict[str, Any]] | RowResult:
    if is_missing(value):
        return skip(key, "the message list is empty")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return row_fault(key, ErrorType.INVALID_INPUT, "messages_col holds text, not JSON")
    if hasattr(value, "tolist"):
        value = value.tolist()
    valid = isinstance(value, list) and all(
        isinstance(m, Mapping) and "role" in m and "content" in m for m in value
    )
    if not valid:
        return row_fault(
            key,
            ErrorType.INVALID_INPUT,
            "messages_col must hold lists like [{'role': 'user', 'content': '...'}]",
        )
    if not value:
        return skip(key, "the message list is empty")
    return [dict(m) for m in value]


def encoding_problem(messages: list[dict[str, Any]]) -> str | None:
    for message in messages:
        try:
            str(message.get("content", "")).encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"the text cannot be sent: {exc.reason} at position {exc.start}"
    return None


def skip(key: int, reason: str) -> RowResult:
    return RowResult(key=key, status=RowStatus.SKIPPED, error=reason)


def row_fault(key: int, kind: ErrorType, message: str) -> RowResult:
    return RowResult(key=key, status=RowStatus.ERROR, error=message, error_type=kind)
