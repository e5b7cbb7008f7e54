"""A persistent cache of completions (sqlite): re-running a cell never pays twice.

The key is a fingerprint of provider, base URL, model, messages and parameters, never the
API key. Only successful replies are stored. Reads happen on the run's loop (a primary-key
lookup); writes go to a writer thread that commits in small batches, so no fsync ever
runs on the kernel's loop, and a row is on disk a fraction of a second after it arrives.
A crash mid-write loses at most that batch: sqlite's transactions keep the file intact.

The cache never fails a run. A write that fails (a full disk, a quota, a lock held past the
busy timeout) drops its batch and those queued behind it, and is counted (`write_failures`);
a run that sees the count grow stops writing and says so once. `flush()` gives up when no
write finishes for FLUSH_PATIENCE_S. A damaged file is moved aside and a new one started.

Concurrent kernels may share one file (WAL mode, busy timeout). WAL needs shared memory,
so on a network file system (NFS, SMB: typical for JupyterHub home folders) the cache
uses sqlite's rollback journal instead, which is slower but safe; a cache on local disk
(`cache="/tmp/nbkit.sqlite"`) is faster still.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .types import Completion

log = logging.getLogger("notebook_kit")

BUSY_TIMEOUT_S = 30.0
FLUSH_EVERY_S = 0.1  # a record put to an idle writer waits at most this long for company
MAX_BATCH = 500  # records per commit: under a flood of puts each commit stays short
FLUSH_PATIENCE_S = BUSY_TIMEOUT_S + 5.0  # longer than any write that can still succeed waits
DAMAGED = frozenset({sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT})
INSERT = "INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?)"
FILES = ("", "-wal", "-shm", "-journal")  # the database and its journals: path + suffix
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smbfs", "smb3", "fuse.sshfs", "9p"})

Record = tuple[str, str, str, str, float]  # key, provider, model, completion JSON, created

SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT,
    completion TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def default_path() -> Path:
    """$NOTEBOOK_KIT_CACHE, else $XDG_CACHE_HOME/notebook_kit/cache.sqlite, else ~/.cache/..."""
    explicit = os.environ.get("NOTEBOOK_KIT_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "notebook_kit" / "cache.sqlite"


def fingerprint(
    provider: str, base_url: str | None, model: str | None, messages: Any, params: Any
) -> str:
    """The cache key of a request: everything that shapes the reply, and nothing secret."""
    payload = json.dumps(
        [provider, base_url, model, messages, params],
        sort_keys=True,
        ensure_ascii=False,
        default=repr,
    )
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def connect(path: Path, *, wal: bool) -> sqlite3.Connection:
    """A connection to the kit's database file (WAL mode where the file system allows it)."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA journal_mode={'WAL' if wal else 'DELETE'}")
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def on_network_filesystem(path: Path) -> bool:
    """Whether `path` lives on NFS/SMB and friends, where sqlite's WAL mode is unsafe."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    target = str(path.resolve())
    best, kind = "", ""
    for line in mounts:
        fields = line.split()
        if len(fields) >= 3 and target.startswith(fields[1]) and len(fields[1]) > len(best):
            best, kind = fields[1], fields[2]
    return kind in NETWORK_FILESYSTEMS


class Cache:
    """Completions by request fingerprint, in one sqlite file shared by runs and kernels."""

    IDLE_S = 5.0  # the writer thread retires after this long without work

    def __init__(self, path: str | Path | None = None, *, wal: bool | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_path()
        if self.path.is_dir():
            raise ConfigError(
                f"the cache path {self.path} is a directory, not a file: choose a file with "
                f'cache="{self.path / "cache.sqlite"}" (or set NOTEBOOK_KIT_CACHE to a file '
                "path), or run without a cache: cache=False"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.wal = not on_network_filesystem(self.path.parent) if wal is None else wal
        self.write_failures = 0  # writes that failed since this object was made
        self.write_error = ""  # the sqlite error of the last one
        self._readers = threading.local()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # the writer waits here for records
        self._written = threading.Condition(self._lock)  # flush() waits here for the writer
        self._pending: deque[Record] = deque()
        self._puts = 0  # records put so far
        self._settled = 0  # of those, written or dropped: in put order (one writer, FIFO)
        self._writer: threading.Thread | None = None
        try:
            self._create()
        except sqlite3.DatabaseError as exc:
            if exc.sqlite_errorcode not in DAMAGED:
                raise
            aside = self._move_aside()
            log.warning(
                "the cache file %s is damaged (%s): moved it to %s and started a new one",
                self.path,
                exc,
                aside,
            )
            self._create()

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, wal={self.wal})"

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path, wal=self.wal)

    def _create(self) -> None:
        with closing(self._connect()) as conn, conn:
            conn.execute(SCHEMA)

    def _move_aside(self) -> Path:
        """Rename the damaged file, and its journals, to `<name>.corrupt-<time>`: kept, not
        deleted (it is only a cache, but someone may want to look at it)."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in FILES:  # an old journal must not meet the new file
            with suppress(FileNotFoundError):
                Path(f"{self.path}{suffix}").rename(f"{aside}{suffix}")
        return aside

    def get(self, key: str) -> Completion | None:
        """The stored completion for `key`, or None."""
        conn = getattr(self._readers, "conn", None)
        if conn is None:
            conn = self._readers.conn = self._connect()
        row = conn.execute("SELECT completion FROM completions WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return Completion(**json.loads(row[0]))

    def release(self) -> None:
        """Close this thread's read connection (a run calls it when it ends)."""
        conn = getattr(self._readers, "conn", None)
        if conn is not None:
            conn.close()
            self._readers.conn = None

    def put(self, key: str, provider: str, model: str, completion: Completion) -> None:
        """Store a successful completion; written by the writer thread within ~0.1 s."""
        data = {
            "text": completion.text,
            "model": completion.model,
            "input_tokens": completion.input_tokens,
            "output_tokens": completion.output_tokens,
            "finish_reason": completion.finish_reason,
            "request_id": completion.request_id,
        }
        record = (key, provider, model, json.dumps(data), time.time())
        with self._lock:  # the writer decides to retire under the same lock: no lost record
            self._pending.append(record)
            self._puts += 1
            if len(self._pending) in (1, MAX_BATCH):  # what the writer may be waiting for
                self._arrived.notify()
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write, name="notebook_kit-cache", daemon=True
                )
                self._writer.start()

    def flush(self, patience: float | None = None) -> bool:
        """Wait until everything put so far is written, or dropped by a failed write. Gives
        up, returning False, when no write finished for `patience` seconds (default
        FLUSH_PATIENCE_S): the writer is stuck, and waiting longer would hang the caller."""
        patience = FLUSH_PATIENCE_S if patience is None else patience
        with self._lock:
            target = self._puts
            while self._settled < target:
                if not self._written.wait(patience):
                    return False
        return True

    def _write(self) -> None:
        """The writer thread: commits batches until idle. A failed write drops its batch and
        those queued behind it (they would meet the same fault); the next put is tried afresh."""
        conn: sqlite3.Connection | None = None
        try:
            while (batch := self._next_batch()) is not None:
                error: Exception | None = None
                try:
                    conn = conn or self._connect()
                    with conn:
                        conn.executemany(INSERT, batch)
                except Exception as exc:  # whatever it is, the writer must live on
                    error = exc
                    if conn is not None:
                        conn.close()
                    conn = None
                with self._lock:
                    self._settled += len(batch)
                    if error is not None:
                        self._settled += len(self._pending)
                        self._pending.clear()
                        self.write_failures += 1
                        self.write_error = str(error) or type(error).__name__
                    self._written.notify_all()
        finally:
            if conn is not None:
                conn.close()

    def _next_batch(self) -> list[Record] | None:
        """Up to MAX_BATCH records: those waiting, or, when the writer was idle, the first to
        arrive and those that follow within FLUSH_EVERY_S. None: idle for IDLE_S, retire."""
        with self._lock:
            if not self._pending:
                if not self._arrived.wait_for(lambda: bool(self._pending), self.IDLE_S):
                    self._writer = None  # idle: the next put starts a new writer
                    return None
                self._arrived.wait_for(lambda: len(self._pending) >= MAX_BATCH, FLUSH_EVERY_S)
            return [self._pending.popleft() for _ in range(min(len(self._pending), MAX_BATCH))]

    def info(self) -> dict[str, Any]:
        """Where the cache is, how many replies it holds, and its size."""
        with closing(self._connect()) as conn:
            entries, models = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT model) FROM completions"
            ).fetchone()
            journal = conn.execute("PRAGMA journal_mode").fetchone()[0]  # what sqlite uses
        files = (Path(f"{self.path}{suffix}") for suffix in FILES)
        return {
            "path": str(self.path),
            "entries": entries,
            "models": models,
            "bytes": sum(file.stat().st_size for file in files if file.exists()),
            "journal": str(journal),
        }

    def clear(self, *, model: str | None = None, provider: str | None = None) -> int:
        """Forget stored replies (all, or one model's / provider's); returns how many."""
        self.flush()
        clauses, args = [], []
        for column, value in (("model", model), ("provider", provider)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with closing(self._connect()) as conn, conn:
            return int(conn.execute(f"DELETE FROM completions{where}", args).rowcount)


_shared: dict[Path, Cache] = {}


def shared_cache(path: Path | None = None) -> Cache:
    """One Cache object per file in this process (its writer thread is shared by runs)."""
    resolved = (path or default_path()).expanduser().resolve()
    if resolved not in _shared:
        _shared[resolved] = Cache(resolved)
    return _shared[resolved]
