"""DataFrame in, requests out; results in, DataFrame out. Rows are matched by position only.

Input rules (checked before any call):
- exactly one of a prompt column (or a Series), `template=` or `messages_col=`;
- every named column must exist (the error lists the ones that do);
- the frame may not hold a column the kit adds, unless it is a frame the kit produced;
- what each row's cells become is `cells.py`'s business.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import cells
from .errors import ConfigError
from .types import ErrorType, OutputSchema, Request, RowResult, RowStatus

if TYPE_CHECKING:
    from .structured import Schema

STATUS_COLUMNS = (
    "status",
    "error",
    "error_type",
    "attempts",
    "latency_s",
    "ttft_s",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "finish_reason",
    "request_id",
    "model",
    "cached",
)
_DTYPES = {
    "attempts": "Int64",
    "latency_s": "Float64",
    "ttft_s": "Float64",
    "input_tokens": "Int64",
    "output_tokens": "Int64",
    "cost_usd": "Float64",
    "cached": "boolean",
}
META_KEY = "notebook_kit"
INPUT_KEYS = (
    "template",
    "messages_col",
    "system",
    "system_col",
    "model_col",
    "output_col",
    "prefix",
)
PARSED = "parsed"  # the column of validated values, under schema=


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A validated input: the frame to run and how each row becomes a request."""

    frame: pd.DataFrame  # the user's rows, without columns of an earlier run
    output_col: str
    prompt: str | None = None
    template: str | None = None
    messages_col: str | None = None
    system: str | None = None
    system_col: str | None = None
    model_col: str | None = None
    prefix: str = ""
    fields: tuple[str, ...] = ()  # the columns of a schema's fields (prefixed)

    @property
    def added_columns(self) -> list[str]:
        typed = [*self.fields, PARSED] if self.fields else []
        return [self.output_col, *typed, *STATUS_COLUMNS]

    def describe(self) -> dict[str, Any]:
        """The input settings, for the result's attrs (and for `retry_failed`)."""
        keys = ("prompt", *INPUT_KEYS)
        return {k: getattr(self, k) for k in keys if getattr(self, k) not in (None, "")}

    def requests(
        self, params: dict[str, Any], schema: OutputSchema | None = None
    ) -> Iterator[Request | RowResult]:
        """One item per row, lazily: a request, or a final result for rows that cannot run."""
        frame = self.frame
        systems = frame[self.system_col].tolist() if self.system_col else None
        models = frame[self.model_col].tolist() if self.model_col else None
        for key, content in enumerate(self._contents()):
            if isinstance(content, RowResult):
                yield content
                continue
            system = cells.text_or_none(systems[key]) if systems is not None else self.system
            messages = (
                content if isinstance(content, list) else [{"role": "user", "content": content}]
            )
            if system and not any(m.get("role") == "system" for m in messages):
                messages = [{"role": "system", "content": system}, *messages]
            problem = cells.encoding_problem(messages)
            if problem:
                yield cells.row_fault(key, ErrorType.INVALID_INPUT, problem)
                continue
            model = cells.text_or_none(models[key]) if models is not None else None
            yield Request(key=key, messages=messages, model=model, params=params, schema=schema)

    def _contents(self) -> Iterator[str | list[dict[str, Any]] | RowResult]:
        frame = self.frame
        if self.messages_col is not None:
            for key, value in enumerate(frame[self.messages_col].tolist()):
                yield cells.messages_of(key, value)
        elif self.template is not None:
            fields = cells.template_fields(self.template)
            columns = {name: frame[name].tolist() for name in fields}
            for key in range(len(frame)):
                row = {name: values[key] for name, values in columns.items()}
                empty = [name for name, value in row.items() if cells.is_missing(value)]
                if empty:
                    yield cells.skip(key, f"template field {empty[0]!r} is empty")
                    continue
                yield cells.render(self.template, row, key)
        else:
            assert self.prompt is not None
            for key, value in enumerate(frame[self.prompt].tolist()):
                yield cells.prompt_of(key, value)


def plan(
    data: pd.DataFrame | pd.Series,
    prompt: str | None = None,
    *,
    template: str | None = None,
    messages_col: str | None = None,
    system: str | None = None,
    system_col: str | None = None,
    model_col: str | None = None,
    output_col: str = "response",
    limit: int | None = None,
    prefix: str = "",
    schema_fields: Sequence[str] = (),
) -> Plan:
    """Check the input and settle how rows become requests. Raises `ConfigError`."""
    if isinstance(data, pd.Series):
        if prompt is not None or messages_col is not None:
            raise ConfigError("with a Series the Series is the prompt: drop prompt=/messages_col=")
        name = data.name if isinstance(data.name, str) else "prompt"
        data = data.to_frame(name)
        if template is None:
            prompt = name
    if not isinstance(data, pd.DataFrame):
        raise ConfigError(f"expected a pandas DataFrame or Series, got {type(data).__name__}")
    given = [x for x in (prompt, template, messages_col) if x is not None]
    if len(given) != 1:
        raise ConfigError(
            "say what to send: a prompt column (run_df(df, 'prompt')), template='...{col}...', "
            "or messages_col='...' (exactly one of them)"
        )
    if limit is not None:
        if limit < 0:
            raise ConfigError(f"limit must be >= 0, got {limit}")
        data = data.iloc[:limit]
    fields = tuple(prefix + name for name in schema_fields)
    taken = [f for f in fields if f in (output_col, PARSED, *STATUS_COLUMNS)]
    if taken:
        raise ConfigError(
            f"the schema's field(s) {taken} would be named like a column the kit adds; "
            "prefix them with prefix='...'"
        )
    if output_col in STATUS_COLUMNS:
        raise ConfigError(
            f"output_col={output_col!r} is one of the kit's own columns {list(STATUS_COLUMNS)}; "
            "choose another name for the replies"
        )
    frame = without_kit_columns(data, output_col)
    named = [c for c in (prompt, messages_col, system_col, model_col) if c is not None]
    if template is not None:
        named += cells.template_fields(template)
    for column in named:
        _require_column(frame, column)
    added = (output_col, *fields, *([PARSED] if fields else []), *STATUS_COLUMNS)
    clash = [c for c in added if c in frame.columns]
    if clash:
        way = " or prefix='...' for the schema's fields" if set(clash) & set(fields) else ""
        raise ConfigError(
            f"the frame already has column(s) {clash} that the kit adds; rename them "
            f"(df.rename(columns={{...}})) or choose another output_col=...{way}"
        )
    return Plan(
        frame=frame,
        output_col=output_col,
        prompt=prompt,
        template=template,
        messages_col=messages_col,
        system=system,
        system_col=system_col,
        model_col=model_col,
        prefix=prefix,
        fields=fields,
    )


def without_kit_columns(data: pd.DataFrame, output_col: str) -> pd.DataFrame:
    """A frame the kit produced may be run again: its added columns are dropped first."""
    meta = data.attrs.get(META_KEY)
    if isinstance(meta, Mapping):
        added = [str(c) for c in meta.get("columns", ())]
    elif set(STATUS_COLUMNS) <= set(data.columns):
        added = [*STATUS_COLUMNS, output_col]
    else:
        return data
    return data.drop(columns=[c for c in added if c in data.columns])


def build(
    plan: Plan,
    results: Mapping[int, RowResult],
    *,
    unfinished: RowStatus = RowStatus.CANCELLED,
    reason: str | None = None,
    schema: Schema | None = None,
) -> pd.DataFrame:
    """The input frame plus the output, typed field and status columns, rows in input order."""
    columns = result_columns(len(plan.frame), results, unfinished=unfinished, reason=reason)
    columns[plan.output_col] = columns.pop("text")
    if plan.fields and schema is not None:
        parsed = [None] * len(plan.frame)
        for key, result in results.items():
            parsed[key] = result.parsed
        columns[PARSED] = pd.array(parsed, dtype=object)
        columns.update(schema.columns(parsed, plan.prefix))
    added = {name: columns[name] for name in plan.added_columns}
    return plan.frame.assign(**added)


def result_columns(
    n: int,
    results: Mapping[int, RowResult],
    *,
    unfinished: RowStatus | None,
    reason: str | None = None,
    names: tuple[str, ...] = ("text", *STATUS_COLUMNS),
) -> dict[str, Any]:
    """Column arrays (position-aligned) for `n` rows from results keyed by position; rows
    without a result are `unfinished` (None: left NA)."""
    values: dict[str, list[Any]] = {name: [None] * n for name in names}
    status = values["status"]
    for key in range(n):
        status[key] = unfinished.value if unfinished is not None else None
    if unfinished is RowStatus.CANCELLED:
        values["error"] = [reason or "not run"] * n
        values["error_type"] = [ErrorType.CANCELLED.value] * n
        values["attempts"] = [0] * n
        values["cached"] = [False] * n
    for key, result in results.items():
        for name in names:
            value = getattr(result, name)
            values[name][key] = value.value if hasattr(value, "value") else value
    arrays: dict[str, Any] = {}
    for name, column in values.items():
        arrays[name] = pd.array(column, dtype=_DTYPES.get(name, "string"))  # type: ignore[call-overload]
    return arrays


def merge(
    result: pd.DataFrame,
    positions: np.ndarray[Any, Any],
    rerun: pd.DataFrame,
    columns: Sequence[str],
) -> pd.DataFrame:
    """`result` with `columns` of the rows at `positions` taken from `rerun`; what a row
    took and cost adds up (attempts, tokens, cost: NA only where both runs have none)."""
    merged = result.copy()
    rows = positions
    before = {name: pd.Series(merged[name].array[rows]) for name in ADDED_UP}
    for column in columns:
        values = merged[column].array.copy()
        values[rows] = rerun[column].array
        merged[column] = values
    for name, earlier in before.items():  # by position: the user's index may repeat labels
        later = pd.Series(rerun[name].array)
        total = earlier.add(later, fill_value=0)
        values = merged[name].array.copy()
        values[rows] = total.where(earlier.notna() | later.notna()).array
        merged[name] = values
    return merged


ADDED_UP = ("attempts", "input_tokens", "output_tokens", "cost_usd")


def _require_column(frame: pd.DataFrame, column: str) -> None:
    if column in frame.columns:
        return
    existing = [str(c) for c in frame.columns]
    close = get_close_matches(column, existing, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"no column {column!r}; the frame has {existing}.{hint}")
