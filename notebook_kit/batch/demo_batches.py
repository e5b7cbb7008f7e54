"""The demo model's batch service, for classrooms without keys: a batch is a file in the
kit's folder (as a provider keeps it on its side), so a fresh kernel finds it again; its
rows are answered one after another over `batch_seconds` of wall time."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ..errors import CallError, ConfigError
from ..providers.demo import DemoProvider, reply, structured_reply
from ..types import BatchStatus, ErrorType, OutputSchema, Request
from .sdk_batches import json_line
from .service import Outcome

EXPIRES_S = 24 * 3600.0


@dataclass(frozen=True)
class _JsonSchema:
    """What the demo's structured reply reads of a schema."""

    json_schema: dict[str, Any]


class DemoBatches:
    """Batches of the demo model, kept in `folder`."""

    def __init__(self, model: DemoProvider, folder: Path) -> None:
        self._model = model
        self._folder = folder
        self.poll_s = min(1.0, max(model.batch_seconds / 5, 0.05))

    @classmethod
    @asynccontextmanager
    async def opened(cls, model: DemoProvider, folder: Path) -> AsyncIterator[DemoBatches]:
        yield cls(model, folder)

    async def check(self) -> None:
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"the demo keeps its batches in {self._folder}: {exc}") from None

    def encode(self, custom_id: str, request: Request) -> bytes:
        schema = request.schema.json_schema if request.schema is not None else None
        item = {
            "custom_id": custom_id,
            "model": request.model,
            "messages": request.messages,
            "params": request.params,
            "schema": schema,
        }
        return json_line(item)

    async def submit(self, items: Sequence[bytes], *, run_id: str, claim: str) -> BatchStatus:
        batch_id = f"demobatch_{uuid.uuid4().hex[:16]}"
        record = {
            "created": time.time(),
            "seconds": self._model.batch_seconds,
            "run_id": run_id,
            "claim": claim,
            "items": [item.decode("utf-8") for item in items],
            "cancelled_at": None,
        }
        self._write(batch_id, record)
        return _status(batch_id, record)

    async def find(self, claim: str) -> BatchStatus | None:
        for path in sorted(self._folder.glob("demobatch_*.json")):
            try:
                record = json.loads(path.read_text("utf-8"))
            except (OSError, ValueError):  # damaged: as if gone
                continue
            if isinstance(record, dict) and record.get("claim") == claim:
                return _status(path.stem, record)
        return None

    async def poll(self, batch_id: str) -> BatchStatus:
        return _status(batch_id, self._read(batch_id))

    async def results(self, batch_id: str, model: str | None) -> dict[str, Outcome]:
        record = self._read(batch_id)
        items = [json.loads(item) for item in record["items"]]
        answered = _answered(record, len(items))
        outcomes: dict[str, Outcome] = {}
        for item in _in_finishing_order(items)[:answered]:
            outcomes[item["custom_id"]] = self._answer(item)
        return outcomes

    async def cancel(self, batch_id: str) -> None:
        record = self._read(batch_id)
        if record["cancelled_at"] is None:
            record["cancelled_at"] = time.time()
            self._write(batch_id, record)

    def _answer(self, item: dict[str, Any]) -> Outcome:
        if _draw(item["custom_id"], self._model.seed) < self._model.error_rate:
            return CallError(ErrorType.SERVER, "HTTP 500: simulated server error", status=500)
        schema = item.get("schema")
        request = Request(
            key=-1,
            messages=item["messages"],
            model=item["model"],
            params=item["params"],
            schema=cast(OutputSchema, _JsonSchema(schema)) if schema is not None else None,
        )
        if request.schema is not None:
            spoiled = (
                _draw(item["custom_id"], self._model.seed + 1) < self._model.invalid_output_rate
            )
            return structured_reply(request, spoiled=spoiled)
        return reply(request, length=self._model.reply_words)

    def _path(self, batch_id: str) -> Path:
        if not batch_id.replace("_", "").isalnum():
            raise CallError(ErrorType.NOT_FOUND, f"no demo batch {batch_id!r}")
        return self._folder / f"{batch_id}.json"

    def _read(self, batch_id: str) -> dict[str, Any]:
        try:
            data = json.loads(self._path(batch_id).read_text("utf-8"))
        except FileNotFoundError:
            data = None
        except (OSError, ValueError):  # damaged (edited, a disk error): as if gone
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("items"), list):
            raise CallError(
                ErrorType.NOT_FOUND, f"HTTP 404: no demo batch {batch_id} in {self._folder}"
            )
        return data

    def _write(self, batch_id: str, record: dict[str, Any]) -> None:
        path = self._path(batch_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        spare = path.with_suffix(".tmp")
        spare.write_text(json.dumps(record), "utf-8")
        os.replace(spare, path)  # whole or not at all


def _answered(record: dict[str, Any], total: int) -> int:
    """Rows answered by now (or by the cancel)."""
    until = record["cancelled_at"] or time.time()
    seconds = record["seconds"]
    if seconds <= 0:
        return total
    return min(total, int(total * max(0.0, until - record["created"]) / seconds))


def _status(batch_id: str, record: dict[str, Any]) -> BatchStatus:
    total = len(record["items"])
    answered = _answered(record, total)
    created = record["created"]
    if record["cancelled_at"] is not None:
        state = "cancelled"
    elif answered >= total:
        state = "done"
    else:
        state = "queued" if answered == 0 else "running"
    ended = state in ("done", "cancelled")
    return BatchStatus(
        batch_id=batch_id,
        state=state,
        total=total,
        done=answered,
        failed=total - answered if state == "cancelled" else 0,
        created=created,
        expires_at=None if ended else created + EXPIRES_S,
    )


def _in_finishing_order(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A fixed shuffle: a batch does not answer its rows in order."""
    return sorted(items, key=lambda item: _draw(item["custom_id"], -1))


def _draw(custom_id: str, seed: int) -> float:
    """A number in [0, 1) fixed by the row and the seed (the same in every process)."""
    digest = hashlib.sha256(f"{seed}:{custom_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
