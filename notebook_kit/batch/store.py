"""The batch jobs a run created, written down the moment each exists: a kernel restart
reattaches to them instead of paying for the same rows again.

Two tables in the kit's database (the cache file, also with `cache=False`): one line per
provider batch (its account, state and counts), and one per row in it (the row's custom id
and the fingerprint of its request, the cache's key: what a later run matches on). Writes
are synchronous: a run goes on only once its batch is on disk.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from ..cache import connect, on_network_filesystem

SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_jobs (
    batch_id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    account TEXT NOT NULL,
    run_id TEXT NOT NULL,
    model TEXT,
    rows INTEGER NOT NULL,
    state TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    expires_at REAL,
    collected INTEGER NOT NULL DEFAULT 0,
    settings TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS batch_rows (
    batch_id TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (batch_id, custom_id)
);
"""
COLUMNS = (
    "batch_id, provider, account, run_id, model, rows, state, done, failed, created, "
    "expires_at, collected, settings"
)


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """One provider batch as the kit wrote it down."""

    batch_id: str
    provider: str  # the provider's name: openai, anthropic, demo
    account: str  # a digest of provider, base URL and key: whose batch it is (never the key)
    run_id: str
    model: str | None
    rows: int
    state: str  # the kit's word for it (see `remote.STATES`)
    done: int = 0
    failed: int = 0
    created: float = 0.0  # Unix time
    expires_at: float | None = None
    collected: bool = False  # its results were read into a frame (and the cache)
    settings: str = "{}"  # JSON: the provider's base URL, to attach from another kernel

    @property
    def base_url(self) -> str | None:
        value = json.loads(self.settings).get("base_url")
        return value if isinstance(value, str) else None


class BatchStore:
    """The batch tables of one database file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._wal = not on_network_filesystem(path.parent)
        with closing(connect(path, wal=self._wal)) as conn, conn:
            conn.executescript(SCHEMA)

    def __repr__(self) -> str:
        return f"BatchStore({str(self.path)!r})"

    def record(self, batch: StoredBatch, rows: Sequence[tuple[str, str]]) -> None:
        """Write a new batch and its (custom id, fingerprint) rows, in one transaction."""
        with closing(connect(self.path, wal=self._wal)) as conn, conn:
            conn.execute(
                f"INSERT OR REPLACE INTO batch_jobs ({COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _values(batch),
            )
            conn.executemany(
                "INSERT OR REPLACE INTO batch_rows VALUES (?, ?, ?)",
                ((batch.batch_id, custom_id, print_) for custom_id, print_ in rows),
            )

    def update(
        self,
        batch_id: str,
        *,
        state: str,
        done: int,
        failed: int,
        expires_at: float | None,
        collected: bool = False,
    ) -> None:
        with closing(connect(self.path, wal=self._wal)) as conn, conn:
            conn.execute(
                "UPDATE batch_jobs SET state = ?, done = ?, failed = ?, "
                "expires_at = COALESCE(?, expires_at), collected = MAX(collected, ?) "
                "WHERE batch_id = ?",
                (state, done, failed, expires_at, int(collected), batch_id),
            )

    def live(self, account: str) -> list[StoredBatch]:
        """The account's batches whose results were not read yet."""
        return self._select("WHERE account = ? AND collected = 0", (account,))

    def get(self, batch_id: str) -> StoredBatch | None:
        found = self._select("WHERE batch_id = ?", (batch_id,))
        return found[0] if found else None

    def all(self) -> list[StoredBatch]:
        """Every batch written down, newest first."""
        return self._select("", ())

    def rows(self, batch_id: str) -> list[tuple[str, str]]:
        """A batch's (custom id, fingerprint) pairs."""
        with closing(connect(self.path, wal=self._wal)) as conn:
            found = conn.execute(
                "SELECT custom_id, fingerprint FROM batch_rows WHERE batch_id = ?", (batch_id,)
            ).fetchall()
        return [(str(c), str(f)) for c, f in found]

    def _select(self, where: str, args: Iterable[object]) -> list[StoredBatch]:
        with closing(connect(self.path, wal=self._wal)) as conn:
            found = conn.execute(
                f"SELECT {COLUMNS} FROM batch_jobs {where} ORDER BY created DESC", tuple(args)
            ).fetchall()
        return [_batch(row) for row in found]


def _values(batch: StoredBatch) -> tuple[object, ...]:
    return (
        batch.batch_id,
        batch.provider,
        batch.account,
        batch.run_id,
        batch.model,
        batch.rows,
        batch.state,
        batch.done,
        batch.failed,
        batch.created or time.time(),
        batch.expires_at,
        int(batch.collected),
        batch.settings,
    )


def _batch(row: tuple[object, ...]) -> StoredBatch:
    (batch_id, provider, account, run_id, model, rows, state, done, failed, created) = row[:10]
    expires_at, collected, settings = row[10:]
    return StoredBatch(
        batch_id=str(batch_id),
        provider=str(provider),
        account=str(account),
        run_id=str(run_id),
        model=None if model is None else str(model),
        rows=int(rows),  # type: ignore[call-overload]
        state=str(state),
        done=int(done),  # type: ignore[call-overload]
        failed=int(failed),  # type: ignore[call-overload]
        created=float(created),  # type: ignore[arg-type]
        expires_at=None if expires_at is None else float(expires_at),  # type: ignore[arg-type]
        collected=bool(collected),
        settings=str(settings),
    )
