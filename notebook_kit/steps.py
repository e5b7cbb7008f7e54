"""A pipeline's steps: what each one does, settled and checked before anything is sent.

A step is a model call over a template (any per-run option: provider, model, concurrency,
schema, ...) or a plain Python function of the row. Its name is its output column, and
later templates refer to it as `{name}` (a schema's fields as `{name}_{field}`). rpm and
tpm belong to an endpoint (provider, base_url, key, model): steps on one endpoint share
its meters, and conflicting values for one endpoint are a `ConfigError`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any

from . import cells
from .config import RunConfig, whole
from .errors import ConfigError
from .frame import STATUS_COLUMNS
from .options import RunOptions, checked, chosen_provider, run_config
from .providers.base import Provider
from .session import defaults

RowFunction = Callable[[dict[str, Any]], Any]

# options of the whole pipeline: a step cannot have its own
PIPELINE_OPTIONS = frozenset({"cache", "budget_usd", "progress", "limit"})
# ways to build a row's request that a step does not take (a step has a template)
NOT_IN_STEPS = frozenset({"messages_col", "system_col", "model_col", "output_col", "prefix"})
# what the pipeline adds besides each step's columns
ROW_COLUMNS = ("status", "error", "error_type", "failed_step", "cost_usd")
# a step's own columns: the status columns of a run, but a row's id, finish and model
STEP_COLUMNS = tuple(c for c in STATUS_COLUMNS if c not in ("finish_reason", "request_id", "model"))


class Step:
    """One step of a pipeline: a model call over `template`, or `fn(row)` (sync or async).

    `name` is the step's output column. `template` refers to the frame's columns and to
    earlier steps by name. `when(row)` false skips the step for that row. Other keywords
    are run options for this step (model, concurrency, schema, max_tokens, ...); the
    pipeline's options fill in the rest.
    """

    def __init__(
        self,
        name: str,
        template: str | None = None,
        *,
        fn: RowFunction | None = None,
        when: Callable[[dict[str, Any]], Any] | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(
                f"a step's name must be a Python identifier (templates say {{name}}), got {name!r}"
            )
        if (template is None) == (fn is None):
            raise ConfigError(f"step {name!r} needs either template='...' or fn=... (one of them)")
        if fn is not None and not callable(fn):
            raise ConfigError(f"step {name!r}: fn must be a function of the row")
        if when is not None and not callable(when):
            raise ConfigError(f"step {name!r}: when must be a function of the row")
        extra = sorted(set(options) - {"concurrency"})
        if fn is not None and extra:
            raise ConfigError(
                f"step {name!r} runs a function: it takes no {extra} (only concurrency=)"
            )
        for option in options:
            if option in PIPELINE_OPTIONS:
                raise ConfigError(
                    f"{option}=... applies to the whole pipeline: pass it to run_pipeline"
                )
            if option in NOT_IN_STEPS:
                raise ConfigError(f"step {name!r}: a step builds its prompt with template='...'")
        if template is not None:
            cells.template_fields(template)  # a malformed template fails here
        self.name = name
        self.template = template
        self.fn = fn
        self.when = when
        self.options = options

    def __repr__(self) -> str:
        what = f"template={self.template!r}" if self.template is not None else "fn=..."
        more = "".join(f", {k}={v!r}" for k, v in self.options.items() if k != "api_key")
        return f"Step({self.name!r}, {what}{', when=...' if self.when else ''}{more})"


@dataclass(frozen=True, eq=False)
class Stage:
    """A step settled for a run: its provider and config (model steps), and its fields."""

    step: Step
    index: int
    provider: Provider | None = None
    config: RunConfig | None = None
    endpoint: tuple[str, ...] | None = None
    system: str | None = None
    fallback: bool = False  # the demo model answers because no key was found
    calls: int = 0  # an async function step: calls awaited at once at most

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def outputs(self) -> tuple[str, ...]:
        """The columns this step adds for its output: its name, and a schema's fields."""
        schema = self.config.schema if self.config is not None else None
        return (self.name, *(f"{self.name}_{f}" for f in (schema.fields if schema else ())))

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.outputs, *(f"{self.name}_{c}" for c in STEP_COLUMNS))


def settle(
    steps: Sequence[Step],
    columns: Sequence[str],
    options: Mapping[str, Any],
    *,
    pause_at_budget: bool = False,
) -> list[Stage]:
    """Each step's provider and config (the pipeline's options under the step's own), with
    every name, template and limit checked against the frame's `columns`."""
    if isinstance(steps, Step) or not isinstance(steps, Sequence) or not steps:
        raise ConfigError("steps must be a non-empty list of kit.Step(...)")
    bad = [s for s in steps if not isinstance(s, Step)]
    if bad:
        raise ConfigError(f"steps must be kit.Step(...) objects, got {type(bad[0]).__name__}")
    given = dict(options)
    for option in NOT_IN_STEPS | {"template", "schema", "schema_retries"}:
        if given.get(option) is not None:
            raise ConfigError(f"{option}=... belongs to a step (kit.Step(..., {option}=...))")
    shared = {k: v for k, v in given.items() if k not in PIPELINE_OPTIONS}
    stages: list[Stage] = []
    for index, step in enumerate(steps):
        stage = Stage(step, index, calls=_function_calls(step, shared))
        if step.template is not None:
            stage = _model_stage(step, index, shared, given, pause_at_budget)
        stages.append(stage)
    _check_names(stages, columns)
    _share_rates(stages)
    return stages


def _function_calls(step: Step, shared: Mapping[str, Any]) -> int:
    """How many calls of an async function step may be awaited at once: its own
    concurrency=, else the pipeline's, else the session's."""
    given = step.options.get("concurrency", shared.get("concurrency"))
    if given is None:
        return defaults.concurrency
    return whole(f"step {step.name!r}: concurrency", given, minimum=1)


def _model_stage(
    step: Step,
    index: int,
    shared: Mapping[str, Any],
    given: Mapping[str, Any],
    pause_at_budget: bool,
) -> Stage:
    entry = f"step {step.name!r}"
    params = {**(shared.get("params") or {}), **(step.options.get("params") or {})}
    try:
        settled: RunOptions = checked({**shared, **step.options, "params": params}, entry=entry)
        if given.get("budget_usd") is not None:
            settled["budget_usd"] = given["budget_usd"]
        provider, fallback = chosen_provider(settled)
        config = run_config(settled, provider, pause_at_budget=pause_at_budget)
        if config.mode == "batch":
            raise ConfigError(
                'pipelines run online; mode="batch" takes one prompt per row: '
                'run_df(df, ..., mode="batch") for one step\'s column'
            )
    except ConfigError as exc:
        raise ConfigError(f"{entry}: {exc}") from None
    endpoint = provider.endpoint(config.model)
    return Stage(step, index, provider, config, endpoint, settled.get("system"), fallback)


def _check_names(stages: list[Stage], columns: Sequence[str]) -> None:
    """Unique names; no clash with the frame or the kit's columns; templates that name only
    the frame's columns and earlier steps' outputs."""
    taken = set(columns)
    made: dict[str, int] = {}  # output column -> the step that makes it
    added: set[str] = set(ROW_COLUMNS)
    for stage in stages:
        for column in stage.columns:
            if column in taken or column in added:
                where = "the frame" if column in taken else "the kit's columns"
                raise ConfigError(
                    f"step {stage.name!r} would add column {column!r}, which {where} already "
                    "has: rename the step (or the frame's column)"
                )
            added.add(column)
        for column in stage.outputs:
            made[column] = stage.index
    for stage in stages:
        if stage.step.template is None:
            continue
        for field in cells.template_fields(stage.step.template):
            if field in taken:
                continue
            if field in made:
                if made[field] >= stage.index:
                    raise ConfigError(
                        f"step {stage.name!r} uses {{{field}}}, which is made by a step that "
                        "runs at or after it: steps run in the order given"
                    )
                continue
            known = [*columns, *(c for c, i in made.items() if i < stage.index)]
            close = get_close_matches(field, [str(c) for c in known], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"step {stage.name!r} uses {{{field}}}: no such column or earlier step "
                f"(the frame has {[str(c) for c in columns]}).{hint}"
            )


def _share_rates(stages: list[Stage]) -> None:
    """One rpm and one tpm per endpoint: conflicting values are refused, and a value given
    on one step applies to every step on that endpoint."""
    by_endpoint: dict[tuple[str, ...], dict[str, float]] = {}
    for stage in stages:
        if stage.config is None or stage.endpoint is None:
            continue
        rates = by_endpoint.setdefault(stage.endpoint, {})
        for name in ("rpm", "tpm"):
            value = getattr(stage.config.limits, name)
            if value is None:
                continue
            if rates.get(name, value) != value:
                raise ConfigError(
                    f"{name}={value:g} for step {stage.name!r}, but {name}={rates[name]:g} for an "
                    f"earlier step on the same endpoint ({stage.endpoint[0]}, model "
                    f"{stage.config.model!r}): an endpoint has one {name}, shared by its steps"
                )
            rates[name] = value
    for i, stage in enumerate(stages):
        if stage.config is None or stage.endpoint is None:
            continue
        rates = by_endpoint[stage.endpoint]
        limits = stage.config.limits
        if (limits.rpm, limits.tpm) != (rates.get("rpm"), rates.get("tpm")):
            limits = dataclasses.replace(limits, rpm=rates.get("rpm"), tpm=rates.get("tpm"))
            stages[i] = dataclasses.replace(
                stage, config=dataclasses.replace(stage.config, limits=limits)
            )


def describe(stages: Sequence[Stage]) -> list[dict[str, Any]]:
    """The steps as JSON-safe facts for the result's attrs (functions by name only)."""
    facts = []
    for stage in stages:
        step = stage.step
        fact: dict[str, Any] = {"name": step.name}
        if step.template is not None:
            fact["template"] = step.template
        if step.fn is not None:
            fact["fn"] = getattr(step.fn, "__qualname__", repr(step.fn))
        if step.when is not None:
            fact["when"] = getattr(step.when, "__qualname__", repr(step.when))
        if stage.config is not None and stage.provider is not None:
            fact |= {"provider": stage.provider.name, **stage.config.describe()}
        facts.append(json.loads(json.dumps(fact, default=repr)))
    return facts
