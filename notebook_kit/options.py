"""The run options, declared once. Every entry point takes them, checks them here and
settles them into a frozen `RunConfig`.

A value left out, or None, takes the default: the session's (`kit.defaults`) for a new
run, the original run's for `retry_failed`. Any other value is checked before anything
is sent; a wrong one raises `ConfigError` naming the option and what it accepts. Keywords
that are not options go to the model as parameters (`temperature=0.2`), unless they look
like a typo of an option.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from difflib import get_close_matches
from pathlib import Path
from typing import Any, TypedDict, TypeVar

from .cache import Cache, shared_cache
from .config import Limits, RetryPolicy, RunConfig, check_budget, mode, number, whole
from .errors import ConfigError
from .providers import Provider, resolve
from .session import defaults


class RunOptions(TypedDict, total=False):
    """Options of `run_df`, `run_df_sync`, `start`, `retry_failed` and `estimate`.

    Model parameters beyond the common ones below may be passed as keywords too; under
    mypy, pass them as `params={...}`.
    """

    # what to send
    template: str | None  # "Summarize: {text}" over columns, instead of a prompt column
    system: str | None  # a system prompt for every row
    messages_col: str | None  # a column of chat message lists (or their JSON)
    system_col: str | None  # a system prompt per row
    model_col: str | None  # a model per row (empty cells use model=)
    output_col: str  # the column of replies (default "response")
    limit: int | None  # run only the first N rows
    # who answers
    provider: str | Provider | None  # "openai", "anthropic", "demo" or a provider object
    model: str | None
    base_url: str | None  # an OpenAI-compatible server (vLLM, Ollama, LM Studio)
    api_key: str | None
    # online (one request per row now) or batch (the provider's batch job: half the price)
    mode: str | None  # "online" (default) or "batch"
    batch_poll_s: float | None  # batch mode: first wait between polls (growing to 60 s)
    # how fast
    concurrency: int | None  # requests in flight at most
    rpm: float | None  # requests started per minute at most
    tpm: float | None  # tokens per minute at most (input estimate + max_tokens)
    adaptive: bool | None  # lower concurrency on 429s, raise it back as calls succeed
    learn_rate: bool | None  # no rpm, no rate headers: learn a request rate from 429s
    limits: Limits | None  # all of the above in one object
    # when to give up
    max_attempts: int | None  # requests per row at most (429s not counted)
    timeout: float | None  # seconds per attempt (streaming: the longest wait between chunks)
    stream: bool | None  # read replies as they are written: time to first token, no cut
    total_timeout: float | None  # streaming: seconds a whole request may take (10 x timeout)
    retry: RetryPolicy | None  # backoff, Retry-After cap, 429 patience, a tenacity wait
    # money
    cache: bool | str | Path | Cache | None  # True (default file), False, a path or a Cache
    budget_usd: float | None  # spend at most this much (needs max_tokens and a price)
    # display
    progress: bool | None  # the panel in Jupyter, a text bar in a terminal
    # structured output
    schema: type | None  # a pydantic model (or dataclass, TypedDict): typed columns out
    schema_retries: int | None  # re-asks after a reply that does not fit (default 2)
    prefix: str | None  # prefixes the schema's field columns
    # the model's parameters
    params: dict[str, Any] | None  # sent to the model as is
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    seed: int | None
    stop: str | list[str] | None


INPUTS = (
    "template",
    "system",
    "messages_col",
    "system_col",
    "model_col",
    "output_col",
    "limit",
    "prefix",
)
MODEL_PARAMS = frozenset({"max_tokens", "temperature", "top_p", "seed", "stop"})
# options of one entry point only: an error elsewhere, never a model parameter
ENTRY_OPTIONS = frozenset(
    {"panel", "models", "use_nest_asyncio", "latency", "output_tokens", "only", "prompt", "steps"}
)


SECRET_OPTIONS = frozenset({"api_key", "base_url"})  # their values are never quoted


def _text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        shown = type(value).__name__ if name in SECRET_OPTIONS else repr(value)
        raise ConfigError(f"{name} must be non-empty text, got {shown}")


def _flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")


def _kind(*kinds: type) -> Callable[[str, object], None]:
    def check(name: str, value: object) -> None:
        if not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{name} must be {names}, got {type(value).__name__}")

    return check


def _stop_words(name: str, value: object) -> None:
    words = [value] if isinstance(value, str) else value
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ConfigError(f"{name} must be text or a list of texts, got {value!r}")


CHECKS: dict[str, Callable[[str, Any], object]] = {
    "template": _text,
    "system": _kind(str),
    "messages_col": _text,
    "system_col": _text,
    "model_col": _text,
    "output_col": _text,
    "limit": lambda name, value: whole(name, value, minimum=0),
    "provider": _kind(str, Provider),
    "model": _text,
    "base_url": _text,
    "api_key": _text,
    "mode": lambda name, value: mode(value),
    "batch_poll_s": lambda name, value: number(name, value, above=0),
    "concurrency": lambda name, value: whole(name, value, minimum=1),
    "rpm": lambda name, value: number(name, value, above=0),
    "tpm": lambda name, value: number(name, value, above=0),
    "adaptive": _flag,
    "learn_rate": _flag,
    "limits": _kind(Limits),
    "max_attempts": lambda name, value: whole(name, value, minimum=1),
    "timeout": lambda name, value: number(name, value, above=0),
    "stream": _flag,
    "total_timeout": lambda name, value: number(name, value, above=0),
    "retry": _kind(RetryPolicy),
    "cache": _kind(bool, str, Path, Cache),
    "budget_usd": lambda name, value: number(name, value),
    "progress": _flag,
    "params": _kind(Mapping),
    "schema": _kind(type),
    "schema_retries": lambda name, value: whole(name, value, minimum=0),
    "prefix": _kind(str),
    "max_tokens": lambda name, value: whole(name, value, minimum=1),
    "temperature": lambda name, value: number(name, value),
    "top_p": lambda name, value: number(name, value),
    "seed": lambda name, value: whole(name, value, minimum=-(2**63)),
    "stop": _stop_words,
}
LIMIT_PARTS = ("concurrency", "rpm", "tpm", "adaptive", "learn_rate")  # inside limits=
NOT_NULLABLE = frozenset({"output_col"})  # None here is a mistake, not "the default"


def checked(kwargs: Mapping[str, Any], *, entry: str) -> RunOptions:
    """The options among a call's keywords, checked; model parameters gathered in `params`."""
    options: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name in ENTRY_OPTIONS:
            raise ConfigError(f"{entry} takes no {name}=... option")
        if name not in CHECKS:
            close = get_close_matches(name, [*CHECKS, *ENTRY_OPTIONS], n=1, cutoff=0.8)
            if close:
                raise ConfigError(f"unknown option {name}=...; did you mean {close[0]}=...?")
            params[name] = value
            continue
        if value is None and name not in NOT_NULLABLE:
            continue
        CHECKS[name](name, value)
        if name in MODEL_PARAMS:
            params[name] = value
        else:
            options[name] = value
    options["params"] = {**options.get("params", {}), **params}
    _no_conflicts(options, "limits", LIMIT_PARTS)
    _no_conflicts(options, "retry", ("max_attempts",))
    return options  # type: ignore[return-value]


def _no_conflicts(options: Mapping[str, Any], whole_option: str, parts: tuple[str, ...]) -> None:
    given = [name for name in parts if name in options]
    if whole_option in options and given:
        raise ConfigError(
            f"give {given[0]} either inside {whole_option}=... or as {given[0]}=..., not both"
        )


def inputs(options: RunOptions) -> dict[str, Any]:
    """The options that say how rows become requests (for `frame.plan`)."""
    return {name: options[name] for name in INPUTS if name in options}  # type: ignore[literal-required]


def chosen_provider(options: RunOptions) -> tuple[Provider, bool]:
    """The provider, and whether the demo model was chosen because no key was found."""
    provider = options.get("provider")
    base_url, api_key = options.get("base_url"), options.get("api_key")
    if provider is None and base_url is None and api_key is None:
        provider = defaults.provider
    return resolve(provider, base_url=base_url, api_key=api_key)


def chosen_cache(choice: bool | str | Path | Cache | None) -> Cache | None:
    """None: the session default; True: the default file; a path or a Cache; False: off."""
    choice = defaults.cache if choice is None else choice
    if choice is False:
        return None
    if isinstance(choice, Cache):
        return choice
    return shared_cache(None if choice is True else Path(choice))


def session_config(provider: Provider) -> RunConfig:
    """The config a run gets from `kit.defaults` and the provider alone."""
    try:
        return RunConfig(
            model=defaults.model or provider.default_model,
            limits=Limits(
                concurrency=defaults.concurrency,
                rpm=defaults.rpm,
                tpm=defaults.tpm,
                adaptive=defaults.adaptive,
            ),
            retry=RetryPolicy(max_attempts=defaults.max_attempts),
            timeout=defaults.timeout,
            params=provider.defaults(),
            budget_usd=defaults.budget_usd,
        )
    except ConfigError as exc:
        raise ConfigError(f"kit.defaults: {exc}") from None


def run_config(
    options: RunOptions,
    provider: Provider,
    *,
    base: RunConfig | None = None,
    pause_at_budget: bool = False,
) -> RunConfig:
    """`base` (else the session's config) with the given options applied; checked."""
    base = base or session_config(provider)
    limits = options.get("limits") or base.limits
    given: Mapping[str, Any] = options
    parts = {k: given[k] for k in LIMIT_PARTS if k in given}
    retry = options.get("retry") or base.retry
    max_attempts = options.get("max_attempts")
    if max_attempts is not None:
        retry = dataclasses.replace(retry, max_attempts=max_attempts)
    schema, retries = base.schema, options.get("schema_retries")
    target = options.get("schema")
    if target is None and schema is not None and retries is not None:
        target = schema.target  # the same schema, with other re-asks
    if target is not None:
        from .structured import Schema

        schema = Schema(target, retries=2 if retries is None else retries)
    config = RunConfig(
        model=options.get("model") or base.model,
        limits=dataclasses.replace(limits, **parts) if parts else limits,
        retry=retry,
        timeout=options.get("timeout") or base.timeout,
        stream=base.stream if options.get("stream") is None else bool(options.get("stream")),
        total_timeout=options.get("total_timeout") or base.total_timeout,
        params={**base.params, **(options.get("params") or {})},
        budget_usd=options.get("budget_usd", base.budget_usd),
        pause_at_budget=pause_at_budget,
        schema=schema,
        mode=options.get("mode") or base.mode,
        batch_poll_s=options.get("batch_poll_s") or base.batch_poll_s,
    )
    check_budget(config)
    if config.mode == "batch":
        from .batch.service import check_batch_params

        check_batch_params(config.params)
    provider.check_params(config.params)  # a name the installed SDK refuses fails every row
    if config.schema is not None:
        provider.check_schema(config.schema)
    return config


F = TypeVar("F", bound=Callable[..., Any])


def shows_run_options(function: F) -> F:
    """List the run options in `function`'s signature, for help() and Jupyter's tooltips."""
    signature = inspect.signature(function)
    own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    taken = {p.name for p in own}
    options = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default="response" if name == "output_col" else None,
            annotation=getattr(hint, "__forward_arg__", hint),
        )
        for name, hint in RunOptions.__annotations__.items()
        if name not in taken
    ]
    rest = inspect.Parameter("model_params", inspect.Parameter.VAR_KEYWORD, annotation="Any")
    function.__signature__ = signature.replace(parameters=[*own, *options, rest])  # type: ignore[attr-defined]
    return function
