"""Connection handling for every SQL database the vault keeps: the template store (vault.store) and
the shred ledger on the key side (vault.custody.shredding). One SQLite file (stdlib sqlite3, one connection
shared by threads under a lock) or a PostgreSQL pool (psycopg 3, psycopg_pool); either gives a
cursor in one transaction, committed or rolled back, and says how its SQL marks parameters.

A PostgreSQL that cannot be reached raises StoreUnavailable (retryable: UNAVAILABLE, not INTERNAL).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

from vault.exceptions import StoreUnavailable

__all__ = ["Database", "PostgresDatabase", "SqliteDatabase", "is_postgres", "open_database"]


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


class SqliteDatabase:
    """One SQLite file, 0600 in a 0700 folder; one connection, one transaction at a time."""

    postgres = False
    placeholder = "?"

    def __init__(self, path: str | os.PathLike, pragmas: tuple[str, ...] = ()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # isolation_level=None: transactions are begun and committed here, explicitly.
        self.connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        os.chmod(self.path, 0o600)
        for pragma in pragmas:
            self.connection.execute(f"PRAGMA {pragma}")
        self.lock = threading.RLock()

    @contextmanager
    def transaction(self, begin: str = "BEGIN IMMEDIATE"):
        """A cursor in one explicit transaction (BEGIN IMMEDIATE: the write lock at once; BEGIN
        DEFERRED: a read snapshot in WAL mode), under the connection's lock."""
        with self.lock:
            cur = self.connection.cursor()
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

    def close(self) -> None:
        with self.lock:
            self.connection.close()


class PostgresDatabase:
    """A psycopg_pool pool. `check`: a pooled connection the server cut (restart,
    pg_terminate_backend) is replaced on checkout instead of failing the next call."""

    postgres = True
    placeholder = "%s"

    def __init__(self, url: str, name: str, min_connections: int = 1, max_connections: int = 8,
                 binary: bool = False, what: str = "the database"):
        from psycopg_pool import ConnectionPool

        self.url = url
        self.what = what  # as errors name it
        self.binary = binary  # binary results: bytea arrives as bytes without hex text to decode
        self.pool = ConnectionPool(url, min_size=min_connections, max_size=max_connections, open=False, name=name,
                                   check=ConnectionPool.check_connection, timeout=10)
        self.pool.open(wait=True, timeout=30)

    @contextmanager
    def transaction(self):
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor(binary=self.binary) as cur:
                yield cur
        except (psycopg.OperationalError, PoolTimeout) as error:  # retryable: UNAVAILABLE, not INTERNAL
            raise StoreUnavailable(f"{self.what} cannot be reached; retry shortly") from error

    def close(self) -> None:
        self.pool.close()


Database = SqliteDatabase | PostgresDatabase


def open_database(url: str, *, name: str, sqlite_pragmas: tuple[str, ...] = (), max_connections: int = 8,
                  binary: bool = False, what: str = "the database") -> Database:
    """`postgresql://...` (a pool named `name`), or `sqlite:///path` or a plain path."""
    if is_postgres(url):
        return PostgresDatabase(url, name, max_connections=max_connections, binary=binary, what=what)
    return SqliteDatabase(url.removeprefix("sqlite:///"), sqlite_pragmas)
