"""What the server keeps between requests: rate-limit windows and stats."""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Window:
    """Admitted (arrival time, cost) pairs of a sliding rate-limit window."""

    entries: deque[tuple[float, int]] = field(default_factory=deque)

    def used(self, now: float, width: float) -> int:
        """Total cost admitted in (now - width, now]."""
        while self.entries and self.entries[0][0] <= now - width:
            self.entries.popleft()
        return sum(cost for _, cost in self.entries)

    def wait(self, cost: int, capacity: float, now: float, width: float) -> float:
        """Seconds until `cost` more fits (a full window if it never does)."""
        excess = self.used(now, width) + cost - capacity
        for arrival, admitted in self.entries:
            excess -= admitted
            if excess <= 0:
                return arrival + width - now
        return width

    def reset_in(self, now: float, width: float) -> float:
        """Seconds until the window is empty again."""
        return self.entries[-1][0] + width - now if self.entries else 0.0


@dataclass
class Stats:
    """What happened on the wire since the last reset."""

    requests_total: int = 0
    responses: dict[str, int] = field(default_factory=dict)  # by status code
    count_429: int = 0
    resets: int = 0
    hangs: int = 0
    malformed: int = 0
    disconnects: int = 0  # handlers cancelled: the client went away (or the server stopped)
    in_flight: int = 0
    peak_in_flight: int = 0
    in_flight_samples: list[list[float]] = field(default_factory=list)  # [t, level]
    # by the body's "model" (a body that is not a JSON object counts in no model's):
    requests_by_model: dict[str, int] = field(default_factory=dict)  # arrivals
    in_flight_by_model: dict[str, int] = field(default_factory=dict)  # now (no zeros)
    peak_in_flight_by_model: dict[str, int] = field(default_factory=dict)
    attempts_by_prompt: dict[str, int] = field(default_factory=dict)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic()
    rejections: list[float] = field(default_factory=list)  # when each 429 was sent, likewise
    keys_seen: set[str] = field(default_factory=set)
    tokens_billed_input: int = 0
    tokens_billed_output: int = 0
    latencies: list[float] = field(default_factory=list)
    max_tokens_seen: list[int | None] = field(default_factory=list)
    systems_seen: list[str] = field(default_factory=list)  # the system prompt, "" when none
    last_messages: list[str] = field(default_factory=list)  # each request's last user message
    # streams (requests with "stream": true answered with a 200 event stream):
    streams_started: int = 0
    streams_completed: int = 0  # every event sent, to the last one
    streams_cut: int = 0  # cut, ended by an error event, or the client went away mid-stream
    chunks_sent: int = 0  # content chunks (a piece of the reply each), all streams
    # per ended stream that sent content: [seconds from arrival to its first content chunk,
    # seconds from its first content chunk to its last]
    stream_spans: list[list[float]] = field(default_factory=list)
    # batch jobs (both APIs; `batches_by_api` by "openai" / "anthropic"):
    batches_created: int = 0
    batches_by_api: dict[str, int] = field(default_factory=dict)
    batch_ids: list[str] = field(default_factory=list)  # in creation order
    batch_sizes: list[int] = field(default_factory=list)  # requests in each, likewise
    batch_requests: int = 0  # requests submitted in batches
    files_uploaded: int = 0
    batch_retrieves: int = 0
    batch_cancels: int = 0
    batch_lists: int = 0
    result_downloads: int = 0  # OpenAI output/error file contents, Anthropic results

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible deep copy."""
        data = dataclasses.asdict(self)
        data["keys_seen"] = sorted(self.keys_seen)
        return data
