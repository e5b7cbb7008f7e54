"""Structured output: a pydantic model (or a dataclass, or a TypedDict) in, typed columns out.

`Schema` wraps the user's type once per run: its JSON schema for the providers, the check
of a reply (pydantic validation, the first error as "field: reason"), the re-ask that puts
the errors back to the model, and the typed column of every top-level field.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import json
import types
import typing
from typing import Any, Literal, get_args, get_origin

import pandas as pd
import pydantic

from .errors import ConfigError
from .types import Request

REASK = (
    "Your reply did not match the required JSON schema: {problem}. "
    "Reply again with only the corrected JSON object."
)


class Schema:
    """The output type of a run: what to ask the provider for and how to read the reply."""

    def __init__(self, target: Any, *, retries: int = 2) -> None:
        try:
            self.adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(target)
            self.json_schema: dict[str, Any] = self.adapter.json_schema()
        except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError) as exc:
            raise ConfigError(f"schema={target!r} cannot be used: {exc}") from None
        if not isinstance(self.json_schema.get("properties"), dict):
            raise ConfigError(
                "schema= must describe an object with fields (a pydantic model, a dataclass "
                f"or a TypedDict), got {target!r}"
            )
        self.target = target
        self.retries = retries
        self.name = str(getattr(target, "__name__", "output"))
        self.fields = _field_names(target, self.json_schema)
        canonical = json.dumps(self.json_schema, sort_keys=True)
        self.fingerprint = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        self.json_bytes = len(canonical.encode())
        self._hints = typing.get_type_hints(target) if isinstance(target, type) else {}

    def __repr__(self) -> str:
        return f"Schema({self.name}, fields={self.fields})"

    def parse(self, text: str) -> tuple[Any, str | None]:
        """The validated value, or None and the first problem as "field: reason"."""
        try:
            return self.adapter.validate_json(text), None
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the reply"
            return None, f"{where}: {first['msg']}"

    def reask(self, request: Request, text: str, problem: str) -> Request:
        """The request again, with the invalid reply and what was wrong with it."""
        messages = [
            *request.messages,
            {"role": "assistant", "content": text},
            {"role": "user", "content": REASK.format(problem=problem)},
        ]
        return dataclasses.replace(request, messages=messages)

    def values(self, parsed: Any) -> dict[str, Any]:
        """A validated value's top-level fields, by name."""
        if isinstance(parsed, pydantic.BaseModel):
            return {name: getattr(parsed, name, None) for name in self.fields}
        if dataclasses.is_dataclass(parsed):
            return {name: getattr(parsed, name, None) for name in self.fields}
        if isinstance(parsed, dict):
            return {name: parsed.get(name) for name in self.fields}
        return {}

    def columns(self, parsed: list[Any], prefix: str = "") -> dict[str, Any]:
        """One typed column per top-level field (NA where a row has no valid value)."""
        rows = [self.values(p) if p is not None else {} for p in parsed]
        return {
            prefix + name: _typed([row.get(name) for row in rows], self._hints.get(name))
            for name in self.fields
        }


def _field_names(target: Any, json_schema: dict[str, Any]) -> list[str]:
    """The top-level fields by their Python names (`team_name`), not by the aliases the
    JSON uses (`teamName`): the names the user wrote, and the attributes to read."""
    if isinstance(target, type) and issubclass(target, pydantic.BaseModel):
        return list(target.model_fields)
    if dataclasses.is_dataclass(target):
        return [field.name for field in dataclasses.fields(target)]
    return list(json_schema["properties"])


def _typed(values: list[Any], hint: Any) -> Any:
    """`values` as the pandas array their annotation calls for."""
    hint = _without_none(hint)
    origin = get_origin(hint)
    if origin is Literal and all(isinstance(c, str) for c in get_args(hint)):
        kind = pd.CategoricalDtype(list(get_args(hint)))
        return pd.array(values, dtype=kind)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        kind = pd.CategoricalDtype([member.value for member in hint])
        plain = [v.value if isinstance(v, enum.Enum) else v for v in values]
        return pd.array(plain, dtype=kind)
    dtype = {str: "string", int: "Int64", float: "Float64", bool: "boolean"}.get(hint)
    if dtype is not None:
        return pd.array(values, dtype=dtype)  # type: ignore[call-overload]
    if hint in (datetime.datetime, datetime.date):  # in UTC: one dtype whatever the rows hold
        return pd.to_datetime(pd.Series(values, dtype=object), utc=True).array
    return pd.array(values, dtype=object)  # nested models, lists, dicts: Python objects


def _without_none(hint: Any) -> Any:
    """`X` for `X | None` (an optional field is typed as its value's type)."""
    if get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def expand(result: pd.DataFrame, column: str) -> pd.DataFrame:
    """`result` with an object column of nested values (models or dicts) spread one level
    into `{column}_{key}` columns; rows without a value get NA there."""
    if column not in result.columns:
        raise ConfigError(f"no column {column!r} to expand")
    rows = [_as_dict(value) for value in result[column].tolist()]
    keys = list(dict.fromkeys(key for row in rows for key in row))
    if not keys:
        raise ConfigError(f"column {column!r} holds no models or dicts to expand")
    added = {f"{column}_{key}": [row.get(key) for row in rows] for key in keys}
    clash = [name for name in added if name in result.columns]
    if clash:
        raise ConfigError(f"expanding {column!r} would overwrite {clash}")
    spread = pd.DataFrame(added, index=result.index).convert_dtypes()
    expanded = pd.concat([result, spread], axis=1)
    expanded.attrs = dict(result.attrs)
    return expanded


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return dict(value) if isinstance(value, dict) else {}
