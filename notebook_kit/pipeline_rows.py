"""What a row meets in a pipeline's step: its request rendered from its cells and the
earlier steps' outputs, `when=` and `fn=` called so that nothing a function does or
returns can lose the row, and a whole row's result from its steps'."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from . import cells
from .engine import Item
from .steps import Stage
from .types import ErrorType, Request, RowResult, RowStatus


class RowValues:
    """The input cells a pipeline reads, by column and row position."""

    def __init__(self, columns: Mapping[str, list[Any]]) -> None:
        self._columns = columns

    def __contains__(self, column: str) -> bool:
        return column in self._columns

    def value(self, column: str, key: int) -> Any:
        return self._columns[column][key]

    def row(self, key: int) -> dict[str, Any]:
        return {name: values[key] for name, values in self._columns.items()}


class RowWork:
    """The rows' values so far, and the work of one step on one row."""

    def __init__(
        self,
        stages: Sequence[Stage],
        inputs: RowValues,
        keys: Sequence[int],
        carried: Mapping[int, Mapping[str, Any]],
    ) -> None:
        self.stages = list(stages)
        self._inputs = inputs
        self.values: dict[int, dict[str, Any]] = {k: dict(carried.get(k, {})) for k in keys}
        self._templates = {
            s.index: cells.template_fields(s.step.template) for s in stages if s.step.template
        }
        self._made = {c for s in stages for c in s.outputs}
        self._blank = dict.fromkeys(self._made)

    def keep(self, stage: Stage, result: RowResult) -> None:
        """A model step's reply, for later steps: its text, and a schema's fields."""
        values = self.values[result.key]
        values[stage.name] = result.text
        schema = stage.config.schema if stage.config is not None else None
        if schema is not None and result.parsed is not None:
            for field, value in schema.values(result.parsed).items():
                values[f"{stage.name}_{field}"] = value

    def item(self, stage: Stage, key: int) -> Item:
        """The row's request for a model step, or its result when it needs no call (or
        when building it raised: however odd an earlier value, the row is never lost)."""
        try:
            return self._item(stage, key)
        except Exception as exc:
            return self.unexpected(key, exc)

    def call(self, stage: Stage, key: int) -> RowResult | Awaitable[Any]:
        """A function step: its result, or the awaitable an async function returned."""
        try:
            return self._call(stage, key)
        except Exception as exc:
            return self.unexpected(key, exc)

    def unexpected(self, key: int, exc: Exception) -> RowResult:
        try:
            text = f"{type(exc).__name__}: {exc}"
        except Exception:
            text = type(exc).__name__
        message = self.redact(" ".join(f"unexpected error: {text}".split()))[:300]
        return RowResult(
            key=key, status=RowStatus.ERROR, error=message, error_type=ErrorType.UNEXPECTED
        )

    def _item(self, stage: Stage, key: int) -> Item:
        if stage.step.when is not None and (skip := self.skipped(stage, key)) is not None:
            return skip
        row: dict[str, Any] = {}
        for field in self._templates[stage.index]:
            value = self.values[key].get(field) if field in self._made else self._input(field, key)
            if type(value) is not str and cells.is_missing(value):
                return cells.skip(key, f"template field {field!r} is empty")
            row[field] = value
        assert stage.step.template is not None and stage.config is not None
        try:
            content = cells.render(stage.step.template, row, key)
        except Exception as exc:  # an earlier step's value whose __format__ raises
            problem = f"the template does not fit this row: {type(exc).__name__}: {exc}"
            return cells.row_fault(key, ErrorType.INVALID_INPUT, self.redact(problem))
        if isinstance(content, RowResult):
            return content
        messages = [{"role": "user", "content": content}]
        if stage.system:
            messages.insert(0, {"role": "system", "content": stage.system})
        unsendable = cells.encoding_problem(messages)
        if unsendable:
            return cells.row_fault(key, ErrorType.INVALID_INPUT, unsendable)
        config = stage.config  # model None: the step's model when the row is sent
        return Request(key=key, messages=messages, params=config.params, schema=config.schema)

    def skipped(self, stage: Stage, key: int) -> RowResult | None:
        """A `when=` that is false (skipped) or raises (function_error); None: run it."""
        when = stage.step.when
        if when is None:
            return None
        try:
            answer = when(self._view(key))
            if inspect.isawaitable(answer):
                close = getattr(answer, "close", None)
                if close is not None:
                    close()  # never awaited: no warning
                raise TypeError("when= must return True or False; an async function cannot")
            if answer:
                return None
        except Exception as exc:
            return self.function_error(key, "when", exc)
        return cells.skip(key, "when= is false for this row")

    def _call(self, stage: Stage, key: int) -> RowResult | Awaitable[Any]:
        skip = self.skipped(stage, key)
        if skip is not None:
            return skip
        assert stage.step.fn is not None
        try:
            value = stage.step.fn(self._view(key))
        except Exception as exc:
            return self.function_error(key, "fn", exc)
        if inspect.isawaitable(value):
            return value
        return self.function_value(key, stage, value)

    def function_value(self, key: int, stage: Stage, value: Any) -> RowResult:
        self.values[key][stage.name] = value
        return RowResult(key=key, status=RowStatus.OK)

    def _input(self, column: str, key: int) -> Any:
        return self._inputs.value(column, key)

    def _view(self, key: int) -> dict[str, Any]:
        """What fn= and when= see: the row's cells and the steps' outputs (None for a step
        that was skipped or has not run)."""
        return {**self._inputs.row(key), **self._blank, **self.values[key]}

    def function_error(self, key: int, what: str, exc: Exception) -> RowResult:
        """A function step that raised: its exception in one line, keys masked."""
        try:
            text = f"{type(exc).__name__}: {exc}"
        except Exception:  # an exception whose __str__ raises
            text = type(exc).__name__
        line = self.redact(" ".join(text.split()))[:300]
        return RowResult(
            key=key,
            status=RowStatus.ERROR,
            error=f"{what}= raised {line}",
            error_type=ErrorType.FUNCTION_ERROR,
        )

    def redact(self, text: str) -> str:
        for stage in self.stages:
            if stage.provider is not None:
                text = stage.provider.redact(text)
        return text


def row_result(key: int, results: Sequence[RowResult | None], failed: int | None) -> RowResult:
    """A whole row's result from its steps': the failed step's error, else ok (skipped when
    every step was skipped); the cost of every step added up."""
    cost: float | None = None
    skipped = ran = 0
    for result in results:
        if result is None:
            continue
        ran += 1
        skipped += result.status is RowStatus.SKIPPED
        if result.cost_usd is not None:
            cost = result.cost_usd if cost is None else cost + result.cost_usd
    cost = None if cost is None else round(cost, 10)
    bad = results[failed] if failed is not None else None
    if bad is not None:
        status, error, kind = bad.status, bad.error, bad.error_type
        return RowResult(key=key, status=status, error=error, error_type=kind, cost_usd=cost)
    status = RowStatus.SKIPPED if ran and skipped == ran else RowStatus.OK
    return RowResult(key=key, status=status, cost_usd=cost)
