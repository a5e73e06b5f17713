"""The scale-out store: PostgreSQL through psycopg 3 and a psycopg_pool connection pool
(vault.store.connections).

Several vault replicas share one database. What has to be serialised across them is done by the
database: the audit chain's appends (a transaction-scoped advisory lock), migrations (another), and
the change feed's ids (allocated under the audit lock). Each change transaction sends a NOTIFY,
delivered at commit, so followers (vault.replication) wake at once instead of waiting for a poll.
"""

from __future__ import annotations

from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from vault.store.connections import PostgresDatabase
from vault.store.sql import SqlStore

CHANNEL = "vault_changes"
# Advisory lock keys are per database; hashing the schema name in keeps vaults that share a
# database in separate schemas (and parallel test runs) from waiting on each other.
AUDIT_LOCK = "SELECT pg_advisory_xact_lock(hashtext('vault/access/audit/' || current_schema()))"
SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('vault/schema/' || current_schema()))"


class PostgresStore(SqlStore):
    placeholder = "%s"

    def __init__(self, url: str, audit_key: bytes | None, min_connections: int = 1, max_connections: int = 8,
                 migrate: bool = True):
        super().__init__(audit_key)
        self.url = url
        self.reader_url = url  # what a start-up worker reads this store with (vault.startup)
        # Binary results: sealed templates arrive as bytes, not hex text to decode (start-up reads
        # every live row).
        self.database = PostgresDatabase(url, "vault-store", min_connections, max_connections, binary=True,
                                         what="the template store")
        self._pool = self.database.pool
        try:
            if migrate:
                self._migrate()
        except BaseException:
            self.database.close()
            raise

    def _transaction(self):
        return self.database.transaction()

    @contextmanager
    def _snapshot(self):
        with self._transaction() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")  # one snapshot for every read
            yield cur

    def _lock_audit(self, cur) -> None:
        cur.execute(AUDIT_LOCK)

    def _lock_schema(self, cur) -> None:
        cur.execute(SCHEMA_LOCK)

    def _notify_changes(self, cur, last_id: int) -> None:
        # The payload names the schema so a listener can ignore other vaults in the same database.
        cur.execute("SELECT pg_notify(%s, current_schema() || ':' || %s)", (CHANNEL, str(last_id)))

    def change_listener(self) -> "PostgresListener":
        return PostgresListener(self.url)

    def close(self) -> None:
        self.database.close()


class PostgresListener:
    """A dedicated autocommit connection LISTENing on the change channel."""

    def __init__(self, url: str):
        self._conn = psycopg.connect(url, autocommit=True)
        self._schema = self._conn.execute("SELECT current_schema()").fetchone()[0]
        self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))

    def wait(self, timeout: float) -> bool:
        """Block until a change notification for our schema arrives, or timeout; True if one did."""
        woken = False
        for note in self._conn.notifies(timeout=timeout, stop_after=1):
            woken = woken or note.payload.split(":", 1)[0] == self._schema
        return woken

    def close(self) -> None:
        self._conn.close()


def with_schema(url: str, schema: str) -> str:
    """The URL with its search_path set to `schema` (libpq `options`), e.g. one vault per schema."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query)))
