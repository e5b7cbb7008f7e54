"""An offline model for classrooms and tests: fixed replies, simulated latency and faults."""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ..clock import Clock
from ..errors import CallError
from ..streaming import Chunks
from ..types import Completion, ErrorType, Request
from . import demo_json
from .base import Provider

POSITIVE = frozenset(
    "good great excellent love loved lovely perfect amazing happy fast best nice works "
    "recommend sturdy comfortable easy beautiful fantastic pleased wonderful solid".split()
)
NEGATIVE = frozenset(
    "bad poor terrible hate hated awful broke broken slow worst refund disappointed "
    "cheap flimsy useless returned leaks leaked late missing damaged never annoying".split()
)
REFUSAL_SHARE = 0.2  # a 429 comes back after this share of the usual latency
HANG_SECONDS = 3600.0  # a simulated hang lasts until the kit's timeout gives up on it
WORDS = re.compile(r"\s*\S+")  # a streamed piece: a word with the space before it
DEFAULT_STREAM_RATE = 20.0  # words per second of a streamed demo reply
FILLER = "and so the story goes on with more words about it".split()


class DemoProvider(Provider):
    """A simulated model: same prompt, same reply; latency and faults drawn from a seeded RNG.

    latency: median seconds per reply (lognormal with `jitter` as sigma; 0 for instant).
    error_rate, timeout_rate, rate_limit_rate: chance per request of a simulated 500,
    a hang (ended by the kit's `timeout`), or a 429 with `retry_after` seconds (None: a
    429 without Retry-After; a negative or NaN value, as some servers send, is sent as is).
    rpm: a simulated server limit, enforced as rpm/60 requests per sliding second (as
    providers do); requests beyond it get a 429 whose Retry-After says when to come back.
    Streaming (stream=True): the first word after `latency`, then `stream_rate` words per
    second (20 when not given). Given, a whole reply also takes as long as its writing.
    reply_words: replies that long (a deterministic filler after the answer), for long
    answers.
    batch_seconds: how long a batch job (mode="batch") takes, from submission to its last
    row; its rows fail at `error_rate` too.
    """

    name = "demo"
    models = ("demo", "demo-large")

    def __init__(
        self,
        *,
        latency: float = 1.0,
        jitter: float = 0.3,
        error_rate: float = 0.0,
        timeout_rate: float = 0.0,
        rate_limit_rate: float = 0.0,
        retry_after: float | None = 1.0,
        rpm: float | None = None,
        invalid_output_rate: float = 0.0,
        stream_rate: float | None = None,
        reply_words: int | None = None,
        batch_seconds: float = 5.0,
        seed: int = 0,
    ) -> None:
        if not batch_seconds >= 0:
            raise ValueError(f"batch_seconds must be >= 0, got {batch_seconds}")
        if stream_rate is not None and not stream_rate > 0:
            raise ValueError(f"stream_rate is words per second, > 0; got {stream_rate}")
        for rate in (error_rate, timeout_rate, rate_limit_rate, invalid_output_rate):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rates are probabilities in [0, 1], got {rate}")
        self.default_model = "demo"
        self.latency = latency
        self.jitter = jitter
        self.error_rate = error_rate
        self.timeout_rate = timeout_rate
        self.rate_limit_rate = rate_limit_rate
        self.retry_after = retry_after
        self.rpm = rpm
        self.invalid_output_rate = invalid_output_rate
        self.stream_rate = stream_rate
        self.reply_words = reply_words
        self.batch_seconds = batch_seconds
        self.seed = seed
        self._rng = random.Random(seed)
        self._recent: deque[float] = deque()  # start times inside the last second

    def __repr__(self) -> str:
        return (
            f"DemoProvider(latency={self.latency}, error_rate={self.error_rate}, "
            f"timeout_rate={self.timeout_rate}, rate_limit_rate={self.rate_limit_rate}, "
            f"rpm={self.rpm})"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "latency": self.latency,
            "error_rate": self.error_rate,
            "timeout_rate": self.timeout_rate,
            "rate_limit_rate": self.rate_limit_rate,
            "rpm": self.rpm,
            "invalid_output_rate": self.invalid_output_rate,
            "stream_rate": self.stream_rate,
            "reply_words": self.reply_words,
        }

    @asynccontextmanager
    async def session(self, *, timeout: float, clock: Clock) -> AsyncIterator[_DemoSession]:
        yield _DemoSession(self, clock)

    def _delay(self) -> float:
        if self.latency <= 0:
            return 0.0
        return self.latency * math.exp(self._rng.gauss(0.0, self.jitter))

    def _check_rpm(self, now: float) -> CallError | None:
        """The 429 a server enforcing `rpm` would send now, or None (the request counts)."""
        if self.rpm is None:
            return None
        while self._recent and not 0.0 <= now - self._recent[0] < 1.0:  # another run's clock
            self._recent.popleft()
        if len(self._recent) >= max(1.0, self.rpm / 60.0):
            wait = 1.0 - (now - self._recent[0])
            return CallError(
                ErrorType.RATE_LIMIT,
                f"HTTP 429: simulated limit of {self.rpm:g} requests per minute",
                status=429,
                retry_after=wait,
            )
        self._recent.append(now)
        return None


class _DemoSession:
    """The demo model during one run: its latency and limits follow the run's clock."""

    def __init__(self, model: DemoProvider, clock: Clock) -> None:
        self._model = model
        self._clock = clock

    async def complete(self, request: Request) -> Completion:
        await self._before_reply()
        completion = self._reply(request)
        rate = self._model.stream_rate
        if rate is not None:  # as long as streaming it would take
            await self._clock.sleep(max(0, len(WORDS.findall(completion.text)) - 1) / rate)
        return completion

    async def stream(self, request: Request, chunks: Chunks) -> Completion:
        """The same reply, a word at a time at the model's `stream_rate`."""
        await self._before_reply()
        completion = self._reply(request)
        pause = 1.0 / (self._model.stream_rate or DEFAULT_STREAM_RATE)
        for number, word in enumerate(WORDS.findall(completion.text)):
            if number:
                await self._clock.sleep(pause)
            chunks.text(word)
        return completion

    def _reply(self, request: Request) -> Completion:
        model = self._model
        if request.schema is not None:
            return structured_reply(
                request, spoiled=model._rng.random() < model.invalid_output_rate
            )
        return reply(request, length=model.reply_words)

    async def _before_reply(self) -> None:
        """The simulated faults, and the latency before the (first word of the) reply."""
        model, sleep = self._model, self._clock.sleep
        refusal = model._check_rpm(self._clock.now())
        draw = model._rng.random()
        if refusal is not None or draw < model.rate_limit_rate:
            await sleep(model.latency * REFUSAL_SHARE)  # a 429 is quick, not instant
            if refusal is not None:
                raise refusal
            raise CallError(
                ErrorType.RATE_LIMIT,
                "HTTP 429: simulated rate limit",
                status=429,
                retry_after=model.retry_after,
            )
        draw -= model.rate_limit_rate
        delay = model._delay()
        if draw < model.timeout_rate:
            await sleep(HANG_SECONDS)
        draw -= model.timeout_rate
        await sleep(delay)
        if draw < model.error_rate:
            raise CallError(ErrorType.SERVER, "HTTP 500: simulated server error", status=500)


def reply(request: Request, *, length: int | None = None) -> Completion:
    """The demo model's deterministic answer to a request (`length` words, if given)."""
    prompt = str(request.messages[-1].get("content", "")) if request.messages else ""
    text = _answer(prompt)
    if length is not None:
        padded = text.split() + [FILLER[i % len(FILLER)] for i in range(length)]
        text = " ".join(padded[:length])
    words = text.split()
    finish = "stop"
    max_tokens = request.params.get("max_tokens")
    if isinstance(max_tokens, int) and len(words) > max_tokens:
        words, finish = words[:max_tokens], "length"
        text = " ".join(words)
    chars = sum(len(str(m.get("content", ""))) for m in request.messages)
    digest = hashlib.sha1(prompt.encode("utf-8", "replace")).hexdigest()[:12]
    return Completion(
        text=text,
        model=request.model,
        input_tokens=max(1, chars // 4),
        output_tokens=len(words),
        finish_reason=finish,
        request_id=f"demo-{digest}",
    )


def structured_reply(request: Request, *, spoiled: bool) -> Completion:
    """A JSON object for schema=, about the row's own prompt (a re-ask's last message is the
    kit's, not the row's); `spoiled`: one that does not fit."""
    assert request.schema is not None
    prompt = next(
        (str(m.get("content", "")) for m in request.messages if m.get("role") == "user"), ""
    )
    schema = request.schema.json_schema
    value = demo_json.answer(prompt, schema)
    text = demo_json.as_text(demo_json.spoil(value, schema) if spoiled else value)
    chars = sum(len(str(m.get("content", ""))) for m in request.messages)
    return Completion(
        text=text,
        model=request.model,
        input_tokens=max(1, chars // 4),
        output_tokens=max(1, len(text) // 4),
        finish_reason="stop",
        request_id="demo-" + hashlib.sha1(text.encode()).hexdigest()[:12],
    )


def _answer(prompt: str) -> str:
    lowered = prompt.lower()
    words = re.findall(r"[a-z']+", lowered)
    if "sentiment" in lowered or "classify" in lowered:
        score = sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
        return "positive" if score > 0 else "negative" if score < 0 else "neutral"
    if "summar" in lowered:
        body = prompt.split(":", 1)[-1].strip()
        first = re.split(r"(?<=[.!?])\s", body, maxsplit=1)[0]
        return first[:200]
    preview = " ".join(prompt.split()[:8])
    return f"[demo] You asked: {preview}{'...' if len(prompt.split()) > 8 else ''}"
