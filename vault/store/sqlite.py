"""The embedded default: one SQLite file in WAL mode (stdlib sqlite3, vault.store.connections)."""

from __future__ import annotations

import os

from vault.store.connections import SqliteDatabase
from vault.store.sql import SqlStore

# One connection, one writer at a time; WAL keeps readers of other processes (backups, the leak
# drill) off our lock. synchronous=FULL: an acknowledged enrolment survives power loss.
PRAGMAS = ("journal_mode=WAL", "synchronous=FULL")


class SqliteStore(SqlStore):
    def __init__(self, path: str | os.PathLike, audit_key: bytes | None, migrate: bool = True):
        super().__init__(audit_key)
        self.database = SqliteDatabase(path, PRAGMAS)
        self.path = self.database.path
        self.reader_url = f"sqlite:///{self.path}"  # what a start-up worker reads this store with (vault.startup)
        if migrate:
            self._migrate()

    def _transaction(self, begin: str = "BEGIN IMMEDIATE"):
        return self.database.transaction(begin)

    def _snapshot(self):
        # A deferred transaction takes no write lock: in WAL mode its reads see the state as of
        # its first read, while the server goes on writing.
        return self._transaction("BEGIN DEFERRED")

    def close(self) -> None:
        self.database.close()
