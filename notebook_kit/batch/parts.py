"""A run's rows as provider batches: the batches an earlier run left in flight that answer
some of them (matched by request fingerprint), and new ones within the provider's limits."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import CallError
from ..providers.base import Provider
from ..types import BatchStatus, Request, RowResult
from .budget import over_budget
from .results import cancelled, row_result
from .service import BatchLimit, BatchService, split
from .store import BatchStore, StoredBatch

log = logging.getLogger("notebook_kit")


@dataclass(slots=True)
class Part:
    """One provider batch of a run: the rows it answers, by custom id."""

    rows: dict[str, tuple[str | None, Request]]  # custom id -> (reuse key, request)
    prints: dict[str, str]  # custom id -> fingerprint, for every row of the batch
    items: list[bytes] = field(default_factory=list)  # what to submit (dropped once running)
    status: BatchStatus | None = None  # None: not submitted yet
    sent_at: float = 0.0  # on the run's clock
    collect_failures: int = 0
    cancel_sent: bool = False  # Stop: the provider accepted its cancel
    earlier: bool = False  # made by an earlier run, found again

    @property
    def model(self) -> str | None:
        """The model of its rows (a part holds one)."""
        return next(iter(self.rows.values()))[1].model if self.rows else None


def account(provider: Provider) -> str:
    """Whose batches these are: provider, settings and key digest (never the key)."""
    name, settings, _, key = provider.endpoint("")
    return hashlib.sha256(f"{name}\0{settings}\0{key}".encode()).hexdigest()[:16]


def reattached(
    store: BatchStore, owner: str, leaders: dict[str, Request], prints: dict[str, str]
) -> list[Part]:
    """Parts for the batches (and claims) an earlier run of `owner` left unread that
    answer some of these rows (`prints`: each leader's fingerprint); those rows leave
    `leaders`. Ended ones too: what they answered is read, the rest sent again."""
    by_print = {prints[key]: (key, request) for key, request in leaders.items()}
    parts: list[Part] = []
    for stored in store.live(owner):
        prints = dict(store.rows(stored.batch_id))
        mine = {cid: by_print.pop(fp) for cid, fp in prints.items() if fp in by_print}
        if not mine:
            continue
        for key, _ in mine.values():
            del leaders[key]
        rows: dict[str, tuple[str | None, Request]] = dict(mine)
        parts.append(Part(rows=rows, prints=prints, status=last_known(stored), earlier=True))
        log.info("found batch %s again (%d rows): not sent again", stored.batch_id, len(mine))
    return parts


def attached(store: BatchStore, stored: StoredBatch) -> Part:
    """Every row of one batch (`kit.attach`): keyed by its place in the batch."""
    prints = dict(store.rows(stored.batch_id))
    rows: dict[str, tuple[str | None, Request]] = {
        custom_id: (None, Request(key=position, messages=[], model=stored.model))
        for position, custom_id in enumerate(by_position(list(prints.items())))
    }
    return Part(rows=rows, prints=prints, status=last_known(stored), earlier=True)


def by_position(rows: Sequence[tuple[str, str]]) -> list[str]:
    """The custom ids of a batch's (custom id, fingerprint) rows, in the order of the
    positions the kit's ids end with (run id, dash, position)."""
    return sorted((custom_id for custom_id, _ in rows), key=_natural)


def new_parts(
    rows: Sequence[tuple[str, str, Request, bytes]],
    limit: BatchLimit,
    prints: Mapping[str, str],
) -> list[Part]:
    """(custom id, reuse key, request, encoded item) rows as parts within `limit`, one
    model per part (OpenAI's batches take one model each)."""
    by_model: dict[str | None, list[tuple[str, str, Request, bytes]]] = {}
    for row in rows:
        by_model.setdefault(row[2].model, []).append(row)
    return [
        Part(
            rows={same[i][0]: (same[i][1], same[i][2]) for i in part},
            prints={same[i][0]: prints[same[i][1]] for i in part},
            items=[same[i][3] for i in part],
        )
        for same in by_model.values()
        for part in split([len(row[3]) + 1 for row in same], limit)
    ]


def last_known(stored: StoredBatch) -> BatchStatus:
    return BatchStatus(
        batch_id=stored.batch_id,
        state=stored.state,
        total=stored.rows,
        done=stored.done,
        failed=stored.failed,
        created=stored.created,
        expires_at=stored.expires_at,
    )


def position_of(custom_id: str) -> int | None:
    """The row's position in the frame that made the batch (the kit's custom ids are the
    run id, a dash and the position)."""
    tail = custom_id.rpartition("-")[2]
    return int(tail) if tail.isdigit() else None


def planned(
    service: BatchService,
    leaders: Mapping[str, Request],
    prints: Mapping[str, str],
    *,
    run_id: str,
    limit: BatchLimit,
    budget: float | None,
) -> tuple[list[Part], list[tuple[str, Request, RowResult]]]:
    """New parts for the rows within the budget, encoded and split within `limit`; and the
    rows refused, with their results (past the budget, or not encodable). CPU work only:
    run it off the loop."""
    sent, over = over_budget(list(leaders.items()), budget)
    note = f"not submitted: the batch would pass budget_usd={budget}"
    refused = [(key, request, cancelled(request, note)) for key, request in over]
    rows: list[tuple[str, str, Request, bytes]] = []
    for key, request in sent:
        custom_id = f"{run_id}-{request.key}"
        try:
            rows.append((custom_id, key, request, service.encode(custom_id, request)))
        except CallError as exc:
            refused.append((key, request, row_result(request, exc)[0]))
    return new_parts(rows, limit, prints), refused


def again(part: Part, *, alone: bool) -> list[Part]:
    """A batch refused for the enqueued-token limit, to be sent again: whole (it waits for
    another of the run's batches to end), or, when none is left (`alone`), in halves."""
    ids = list(part.rows)
    cut = len(ids) // 2 if alone else len(ids)
    halves = [range(cut), range(cut, len(ids))] if alone else [range(len(ids))]
    return [
        Part(
            rows={ids[i]: part.rows[ids[i]] for i in half},
            prints={ids[i]: part.prints[ids[i]] for i in half},
            items=[part.items[i] for i in half],
        )
        for half in halves
        if half
    ]


def _natural(custom_id: str) -> tuple[str, int]:
    position = position_of(custom_id)
    return (custom_id.rpartition("-")[0], position) if position is not None else (custom_id, -1)
