"""The embedded default: one SQLite file in WAL mode (stdlib sqlite3)."""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

from vault.store.sql import SqlStore


@contextmanager
def transaction(connection: sqlite3.Connection, lock, begin: str = "BEGIN IMMEDIATE"):
    """A cursor in one explicit transaction on a connection opened with isolation_level=None,
    under `lock` (one connection shared by threads): committed, or rolled back on any error."""
    with lock:
        cur = connection.cursor()
        cur.execute(begin)
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()


class SqliteStore(SqlStore):
    def __init__(self, path: str | os.PathLike, audit_key: bytes | None):
        super().__init__(audit_key)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves. One connection, one writer at a
        # time; WAL keeps readers of other processes (backups, the leak drill) off our lock.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        os.chmod(self.path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged enrolment survives power loss
        self._lock = threading.RLock()
        self._migrate()

    def _transaction(self, begin: str = "BEGIN IMMEDIATE"):
        return transaction(self._db, self._lock, begin)

    def _snapshot(self):
        # A deferred transaction takes no write lock: in WAL mode its reads see the state as of
        # its first read, while the server goes on writing.
        return self._transaction("BEGIN DEFERRED")

    def close(self) -> None:
        with self._lock:
            self._db.close()
