"""The demo model's structured answers: a JSON object that fits the requested schema.

Deterministic for a prompt: an enum takes the choice the prompt names (else one picked by
the prompt's hash), numbers sit inside their bounds, strings are the prompt's first words.
`spoil` returns the same object made invalid (a field missing or out of range), so a class
sees the re-ask path offline.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any


def answer(prompt: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An object that fits `schema` (a pydantic JSON schema of an object)."""
    value = _value(prompt, schema, schema.get("$defs", {}), "")
    return value if isinstance(value, dict) else {}


def spoil(valid: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """`valid` made to fail validation: a required field dropped, else a bad type."""
    required = [name for name in schema.get("required", []) if name in valid]
    if required:
        return {k: v for k, v in valid.items() if k != required[0]}
    return {name: [] for name in valid}


def as_text(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False)


def _value(prompt: str, schema: dict[str, Any], defs: dict[str, Any], path: str) -> Any:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _value(prompt, defs.get(ref.rsplit("/", 1)[-1], {}), defs, path)
    for key in ("anyOf", "oneOf", "allOf"):
        options = [s for s in schema.get(key, []) if s.get("type") != "null"]
        if options:
            return _value(prompt, options[0], defs, path)
    if "enum" in schema:
        return _choice(prompt, list(schema["enum"]), path)
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {
            name: _value(prompt, sub, defs, f"{path}.{name}") for name, sub in properties.items()
        }
    if kind == "array":
        return []
    if kind == "boolean":
        return _draw(prompt, path) % 2 == 0
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        high = schema.get("maximum", schema.get("exclusiveMaximum", low + 9))
        number = low + _draw(prompt, path) % max(1, int(high - low) + 1)
        return int(number) if kind == "integer" else float(number)
    formats = {"date-time": "2026-01-01T09:00:00Z", "date": "2026-01-01", "email": "a@example.org"}
    return formats.get(str(schema.get("format"))) or _words(prompt, schema.get("maxLength"))


def _choice(prompt: str, choices: list[Any], path: str) -> Any:
    """The choice the prompt mentions most (by its first five letters: "ship" in "shipped"
    does not count, "shipping" does); a prompt that lists them all once picks by the rest."""
    words = re.findall(r"[a-z]+", prompt.lower())
    scores = [sum(w.startswith(str(c).lower()[:5]) for w in words) for c in choices]
    best = max(scores)
    if best == 0 or scores.count(best) == len(choices):
        return choices[_draw(prompt, path) % len(choices)]
    return choices[scores.index(best)]


def _words(prompt: str, limit: Any) -> str:
    body = prompt.split(":", 1)[-1]
    text = " ".join(re.findall(r"[\w'.,!?-]+", body)[:12]) or "demo"
    return text[:limit] if isinstance(limit, int) else text


def _draw(prompt: str, path: str) -> int:
    return int(hashlib.sha1(f"{path}|{prompt}".encode("utf-8", "replace")).hexdigest()[:8], 16)
