"""What the server is told to do: its settings, and the directives in a prompt."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

Finish = Literal["stop", "length", "content_filter", "refusal"]
Output = Literal["invalid_json", "refusal"]  # how a structured (schema) reply goes wrong
Mishap = Literal["cut", "error", "stall"]  # how a stream goes wrong after some chunks
OUTPUTS: tuple[Output, ...] = get_args(Output)
NamedFault = Literal[
    "quota", "content_filter", "reset", "hang", "malformed", "not_utf8", "error_200"
]
Fault = int | NamedFault  # an HTTP status to answer with, or a named fault
NAMED_FAULTS: tuple[NamedFault, ...] = get_args(NamedFault)
FINISHES: tuple[Finish, ...] = get_args(Finish)

RANDOM_FAULTS: tuple[tuple[str, Fault], ...] = (
    ("rate_429", 429),
    ("rate_500", 500),
    ("rate_503", 503),
    ("rate_529", 529),
    ("rate_reset", "reset"),
    ("rate_hang", "hang"),
    ("rate_malformed", "malformed"),
)
MISHAPS: dict[str, Mishap] = {
    "cut_after": "cut",
    "stream_error_after": "error",
    "stall_after": "stall",
}
DIRECTIVE = re.compile(r"\[\[(.*?)\]\]")


@dataclass(frozen=True)
class Settings:
    """Server behaviour; every field can be changed at runtime."""

    latency: float = 0.0
    latency_median: float | None = None  # lognormal latency when set
    latency_sigma: float = 0.0
    # per model: {"median": m, "sigma": s} (lognormal) or {"latency": t} (fixed); the
    # models not in it use the settings above, a [[latency=...]] directive beats both
    model_latency: dict[str, dict[str, float]] | None = None
    seed: int | None = None
    rate_429: float = 0.0
    retry_after: float = 1.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_529: float = 0.0
    rate_reset: float = 0.0
    rate_hang: float = 0.0
    rate_malformed: float = 0.0
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    rate_window: float = 1.0
    api_key: str | None = None
    models: frozenset[str] | None = None
    quota_exhausted: bool = False
    usage: bool = True
    rate_headers: bool = True  # False: enforce rpm/tpm limits without disclosing them
    reply_patch: dict[str, Any] | None = None  # JSON merge patch on every success body
    error_body: dict[str, Any] | None = None  # sent instead of the API's body on every error
    json_schema_refused: bool = False  # a 400 to json_schema / output_config (old servers)
    chunk_delay: float = 0.0  # streaming: seconds between two content chunks
    stream_options_refused: bool = False  # a 400 to OpenAI's stream_options (old servers)
    stream_usage: bool = True  # False: streams report no usage (see the package docstring)
    # streaming: the wire of every streamed success, piece by piece (see `script_bytes`)
    stream_script: list[str] | None = None
    # batch jobs (see the package docstring's "Batches"):
    batches: bool = True  # False: a server without batch routes (404 to each)
    batch_seconds: float = 0.5  # a batch's requests finish spread over this long
    batch_cancel_seconds: float = 0.1  # from a cancel to the batch's end
    batch_expire_after: float | None = None  # seconds: unfinished batches expire then
    batch_max_requests: int | None = None  # None: the API's (OpenAI 50000, Anthropic 100000)
    batch_max_bytes: int | None = None  # None: the API's (OpenAI 200 MB file, Anthropic 256 MB)
    batch_enqueued_token_limit: int | None = None  # OpenAI: per key and model, unfinished batches

    def __post_init__(self) -> None:
        if self.models is not None:
            object.__setattr__(self, "models", frozenset(self.models))
        rates = [getattr(self, name) for name, _ in RANDOM_FAULTS]
        if not all(0 <= rate <= 1 for rate in rates) or sum(rates) > 1:
            raise ValueError("fault rates must be probabilities that sum to at most 1")
        delays = (self.latency, self.latency_sigma, self.retry_after, self.chunk_delay)
        if min(delays) < 0 or self.rate_window <= 0:
            raise ValueError(
                "latency, latency_sigma, retry_after and chunk_delay must be >= 0, rate_window > 0"
            )
        if self.latency_median is not None and self.latency_median <= 0:
            raise ValueError("latency_median must be > 0")
        if min(self.batch_seconds, self.batch_cancel_seconds) < 0:
            raise ValueError("batch_seconds and batch_cancel_seconds must be >= 0")
        limits = (self.batch_max_requests, self.batch_max_bytes, self.batch_enqueued_token_limit)
        if (self.batch_expire_after is not None and self.batch_expire_after <= 0) or any(
            limit is not None and limit < 1 for limit in limits
        ):
            raise ValueError("batch_expire_after must be > 0 and the batch limits >= 1")
        if self.model_latency is not None:
            object.__setattr__(self, "model_latency", _checked_model_latency(self.model_latency))
        if self.stream_script is not None:
            if not all(isinstance(piece, str) for piece in self.stream_script):
                raise ValueError("stream_script must be a list of strings")
            object.__setattr__(self, "stream_script", list(self.stream_script))

    def script_bytes(self) -> list[bytes]:
        """`stream_script`'s pieces as the bytes to write: UTF-8, except that the code
        points U+DC80 to U+DCFF are the raw bytes 0x80 to 0xFF (Python's surrogateescape:
        "\udcff" writes a byte that is no UTF-8)."""
        return [piece.encode("utf-8", "surrogateescape") for piece in self.stream_script or ()]

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-compatible dict."""
        data = dataclasses.asdict(self)
        data["models"] = None if self.models is None else sorted(self.models)
        return data


MODEL_LATENCY_FORMS = ({"median", "sigma"}, {"latency"})


def _checked_model_latency(table: Any) -> dict[str, dict[str, float]]:
    """A copy of a `model_latency` setting, its numbers as floats; ValueError if malformed."""
    forms = "{'median': m, 'sigma': s} (lognormal) or {'latency': t} (fixed)"
    if not isinstance(table, dict):
        raise ValueError(f"model_latency must map model names to {forms}, not {table!r}")
    checked: dict[str, dict[str, float]] = {}
    for model, spec in table.items():
        where = f"model_latency[{model!r}]"
        if not isinstance(model, str):
            raise ValueError(f"model_latency keys must be model names (str), not {model!r}")
        if not isinstance(spec, dict) or set(spec) not in MODEL_LATENCY_FORMS:
            raise ValueError(f"{where} must be {forms}, not {spec!r}")
        values: dict[str, float] = {}
        for key, value in spec.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not math.isfinite(value):
                raise ValueError(f"{where}[{key!r}] must be a finite number, not {value!r}")
            values[key] = float(value)
        if values.get("median", 1.0) <= 0:
            raise ValueError(f"{where}['median'] must be > 0, not {values['median']!r}")
        for key in ("sigma", "latency"):
            if values.get(key, 0.0) < 0:
                raise ValueError(f"{where}[{key!r}] must be >= 0, not {values[key]!r}")
        checked[model] = values
    return checked


@dataclass(frozen=True)
class Directive:
    """What the ``[[...]]`` blocks of one prompt ask for."""

    fault: Fault | None = None
    times: int | None = None  # the fault hits only the first `times` attempts
    retry_after: float | None = None
    latency: float | None = None
    finish: Finish | None = None
    tokens: int | None = None
    retry_after_header: str | None = None  # sent verbatim as retry-after ("-5", "nan")
    retry_after_ms_header: str | None = None  # sent verbatim as retry-after-ms
    output: Output | None = None  # a schema reply that does not fit, or a refusal
    chunk_delay: float | None = None  # streaming: seconds between two content chunks
    # streaming: what goes wrong after that many content chunks (the first `times` attempts)
    cut_after: int | None = None  # the connection is aborted
    stream_error_after: int | None = None  # an error event, then the end of the stream
    stall_after: int | None = None  # nothing more is sent; the connection stays open

    @property
    def retry_headers(self) -> dict[str, str] | None:
        """The verbatim Retry-After headers asked for, None: the server computes them."""
        raw = {"retry-after": self.retry_after_header, "retry-after-ms": self.retry_after_ms_header}
        headers = {name: value for name, value in raw.items() if value is not None}
        return headers or None

    @classmethod
    def parse(cls, prompt: str) -> Directive | None:
        """The prompt's directive, None without one; ValueError if unknown."""
        blocks = DIRECTIVE.findall(prompt)
        if not blocks:
            return None
        fields: dict[str, Any] = {}
        for token in " ".join(blocks).split():
            key, _, value = token.partition("=")
            if not value and key == "429":
                fields["fault"] = 429
            elif not value and key in NAMED_FAULTS:
                fields["fault"] = key
            elif not value and key in OUTPUTS:
                fields["output"] = key
            elif key == "status":
                fields["fault"] = int(value)
            elif key in ("times", "tokens"):
                fields[key] = int(value)
            elif key in MISHAPS:
                fields[key] = int(value)
                if fields[key] < 0:
                    raise ValueError(f"{key} must be >= 0, not {value}")
            elif key in ("retry_after", "latency", "chunk_delay"):
                fields[key] = float(value)
            elif key in ("retry_after_header", "retry_after_ms_header") or (
                key == "finish" and value in FINISHES
            ):
                fields[key] = value
            else:
                raise ValueError(f"unknown directive {token!r}")
        return cls(**fields)

    def output_for(self, attempt: int) -> Output | None:
        """How the `attempt`-th structured reply of the prompt goes wrong, if it does."""
        return self.output if self.times is None or attempt <= self.times else None

    def mishap_for(self, attempt: int) -> tuple[Mishap, int] | None:
        """How the `attempt`-th stream of the prompt goes wrong and after how many content
        chunks: the earliest of cut_after, stream_error_after and stall_after (on a tie, in
        that order); None if it does not."""
        if self.times is not None and attempt > self.times:
            return None
        given = [
            (count, MISHAPS[key]) for key in MISHAPS if (count := getattr(self, key)) is not None
        ]
        if not given:
            return None
        count, mishap = min(given, key=lambda pair: pair[0])
        return mishap, count

    def fault_for(self, attempt: int) -> Fault | None:
        """The fault for the prompt's `attempt`-th request (counting from 1)."""
        return self.fault if self.times is None or attempt <= self.times else None
