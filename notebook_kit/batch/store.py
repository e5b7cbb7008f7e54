"""The batch jobs a run created, written down the moment each exists: a kernel restart
reattaches to them instead of paying for the same rows again.

Two tables in the kit's database (the cache file, also with `cache=False`): one line per
provider batch (its account, state and counts), and one per row in it (the row's custom id
and the fingerprint of its request, the cache's key: what a later run matches on). Writes
are synchronous: a run goes on only once its batch is on disk.

A batch is *claimed* before it is created: written down in state `submitting` under a
claim id, with the process that submits it. Another run of the same rows meanwhile waits
for the claim instead of creating a second batch; a claim whose process died is looked up
at the provider by its id (the batch's metadata) or dropped.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from ..cache import connect, on_network_filesystem
from ..errors import ConfigError

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
    settings TEXT NOT NULL DEFAULT '{}',
    claim TEXT
);
CREATE TABLE IF NOT EXISTS batch_rows (
    batch_id TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (batch_id, custom_id)
);
"""
CLAIM_PATIENCE_S = 900.0  # a claim from another machine is waited for this long at most
COLUMNS = (
    "batch_id, provider, account, run_id, model, rows, state, done, failed, created, "
    "expires_at, collected, settings, claim"
)
CLAIMED = "submitting"  # the state of a claim: the batch is being created


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """One provider batch as the kit wrote it down."""

    batch_id: str
    provider: str  # the provider's name: openai, anthropic, demo
    account: str  # a digest of provider, base URL and key: whose batch it is (never the key)
    run_id: str
    model: str | None
    rows: int
    state: str  # the kit's word for it (see `types.BatchStatus`), "submitting" for a claim
    done: int = 0
    failed: int = 0
    created: float = 0.0  # Unix time
    expires_at: float | None = None
    collected: bool = False  # its results were read into a frame (and the cache)
    settings: str = "{}"  # JSON: base URL (to attach from another kernel); a claim's process
    claim: str | None = None  # the claim it was created under

    @property
    def base_url(self) -> str | None:
        value = json.loads(self.settings).get("base_url")
        return value if isinstance(value, str) else None

    @property
    def claimed(self) -> bool:
        """A claim: the batch is being created (or its process died doing so)."""
        return self.state == CLAIMED

    def claim_alive(self, now: float) -> bool:
        """Whether the process that claimed it may still be creating it: alive on this
        machine, or on another one for CLAIM_PATIENCE_S."""
        settings = json.loads(self.settings)
        if settings.get("host") != socket.gethostname():
            return now - self.created < CLAIM_PATIENCE_S
        pid = settings.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except PermissionError:  # alive, another user's
            return True
        except OSError:
            return False
        return True


class BatchStore:
    """The batch tables of one database file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._wal = not on_network_filesystem(path.parent)
            with closing(connect(path, wal=self._wal)) as conn, conn:
                conn.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"batch jobs are written down in the kit's database, and {path} cannot be "
                f"written ({type(exc).__name__}: {exc}): choose a file with "
                'cache="path.sqlite" (or set NOTEBOOK_KIT_CACHE)'
            ) from None

    def __repr__(self) -> str:
        return f"BatchStore({str(self.path)!r})"

    def record(self, batch: StoredBatch, rows: Sequence[tuple[str, str]]) -> None:
        """Write a new batch and its (custom id, fingerprint) rows, in one transaction."""
        with closing(connect(self.path, wal=self._wal)) as conn, conn:
            conn.execute(
                f"INSERT OR REPLACE INTO batch_jobs ({COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _values(batch),
            )
            conn.executemany(
                "INSERT OR REPLACE INTO batch_rows VALUES (?, ?, ?)",
                ((batch.batch_id, custom_id, print_) for custom_id, print_ in rows),
            )

    def settle_claim(self, claim: str, batch: StoredBatch) -> None:
        """The claimed batch exists: its id, state and times replace the claim's."""
        with closing(connect(self.path, wal=self._wal)) as conn, conn:
            conn.execute(
                "UPDATE batch_jobs SET batch_id = ?, state = ?, created = ?, expires_at = ?, "
                "model = ?, claim = ? WHERE batch_id = ?",
                (
                    batch.batch_id,
                    batch.state,
                    batch.created,
                    batch.expires_at,
                    batch.model,
                    claim,
                    claim,
                ),
            )
            conn.execute(
                "UPDATE batch_rows SET batch_id = ? WHERE batch_id = ?", (batch.batch_id, claim)
            )

    def drop(self, batch_id: str) -> None:
        """Forget a claim whose batch was never created."""
        with closing(connect(self.path, wal=self._wal)) as conn, conn:
            conn.execute("DELETE FROM batch_rows WHERE batch_id = ?", (batch_id,))
            conn.execute("DELETE FROM batch_jobs WHERE batch_id = ?", (batch_id,))

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
        """The batch of this id, or the one created under this claim."""
        found = self._select("WHERE batch_id = ? OR claim = ?", (batch_id, batch_id))
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
        batch.claim,
    )


def _batch(row: tuple[object, ...]) -> StoredBatch:
    (batch_id, provider, account, run_id, model, rows, state, done, failed, created) = row[:10]
    expires_at, collected, settings, claim = row[10:]
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
        claim=None if claim is None else str(claim),
    )
