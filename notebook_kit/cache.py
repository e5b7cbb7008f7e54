"""A persistent cache of completions (sqlite): re-running a cell never pays twice.

The key is a fingerprint of provider, base URL, model, messages and parameters, never the
API key. Only successful replies are stored. Reads happen on the run's loop (a primary-key
lookup); writes go to a writer thread that commits in small batches, so no fsync ever
runs on the kernel's loop, and a row is on disk a fraction of a second after it arrives.
A crash mid-write loses at most that batch: sqlite's transactions keep the file intact.

Concurrent kernels may share one file (WAL mode, busy timeout). WAL needs shared memory,
so on a network file system (NFS, SMB: typical for JupyterHub home folders) the cache
uses sqlite's rollback journal instead, which is slower but safe; a cache on local disk
(`cache="/tmp/nbkit.sqlite"`) is faster still.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from .types import Completion

BUSY_TIMEOUT_S = 30.0
FLUSH_EVERY_S = 0.1  # the writer commits at least this often while rows arrive
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smbfs", "smb3", "fuse.sshfs", "9p"})

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.wal = not on_network_filesystem(self.path.parent) if wal is None else wal
        self._readers = threading.local()
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        with closing(self._connect()) as conn, conn:
            conn.execute(SCHEMA)

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, wal={self.wal})"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        conn.execute(f"PRAGMA journal_mode={'WAL' if self.wal else 'DELETE'}")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

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
            self._queue.put(record)
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write, name="notebook_kit-cache", daemon=True
                )
                self._writer.start()

    def flush(self) -> None:
        """Wait until everything put so far is committed."""
        self._queue.join()

    def _write(self) -> None:
        conn = self._connect()
        try:
            while True:
                try:
                    first = self._queue.get(timeout=self.IDLE_S)
                except queue.Empty:
                    with self._lock:
                        if self._queue.empty():
                            self._writer = None  # idle: the next put starts a new writer
                            return
                    continue
                batch = [first]
                deadline = time.monotonic() + FLUSH_EVERY_S
                while time.monotonic() < deadline:
                    try:
                        batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                    except queue.Empty:
                        break
                try:
                    with conn:
                        conn.executemany(
                            "INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?)",
                            batch,
                        )
                finally:
                    for _ in batch:
                        self._queue.task_done()
        finally:
            conn.close()

    def info(self) -> dict[str, Any]:
        """Where the cache is, how many replies it holds, and its size."""
        with closing(self._connect()) as conn:
            entries, models = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT model) FROM completions"
            ).fetchone()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*"))
        return {
            "path": str(self.path),
            "entries": entries,
            "models": models,
            "bytes": size,
            "journal": "wal" if self.wal else "delete",
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
