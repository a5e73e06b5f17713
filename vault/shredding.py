"""Revoke = erase, backups included: a shred secret per template, kept on the key side.

A template's row key is derived from three things: the tenant's storage key (key store), the row's
salt (template store) and a 32-byte shred secret of its own, held in this ledger. The ledger lives
with the keys, never with the data: beside the key file by default, or in a database of its own
(`--shred-store postgresql://...`, shared by replicas). Revoking or reissuing a template deletes its
secret, so the sealed row in any copy of the data (a backup from before the revocation, a stolen
disk) can never be opened again, even by someone who later gets the key store. Back the ledger up
with the key store, on the key store's (short) retention, not with the data.

The ledger's secrets are useless without the key store, and the key store's keys are useless
against a revoked row without the ledger.

The ledger also keeps the ids of revoked API tokens (vault.tokens): a token row copied back from an
older copy of the database, or a restored backup, authenticates nothing once its id is here.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from vault.exceptions import StoreUnavailable
from vault.store.sqlite import transaction as sqlite_transaction

__all__ = ["ShredLedger", "open_ledger", "ledger_path"]

SECRET_BYTES = 32
SCHEMA = ("CREATE TABLE IF NOT EXISTS shred_secrets (template_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, "
          "secret BYTEA NOT NULL, created_at DOUBLE PRECISION NOT NULL)")
TOKEN_SCHEMA = ("CREATE TABLE IF NOT EXISTS revoked_tokens (token_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, "
                "revoked_at DOUBLE PRECISION NOT NULL)")


def ledger_path(key_file: str | os.PathLike) -> Path:
    """The default ledger: beside the key file, on the keys' volume."""
    return Path(f"{key_file}.shred.db")


class ShredLedger:
    """Shred secrets by template id, in SQLite (one host) or PostgreSQL (replicas)."""

    def __init__(self, url: str):
        self.url = url
        self._lock = threading.Lock()
        self._postgres = url.startswith(("postgresql://", "postgres://"))
        if self._postgres:
            from psycopg_pool import ConnectionPool

            # As the template store's pool (vault.store.postgres): a connection the server cut is
            # replaced on checkout instead of failing the call.
            self._pool = ConnectionPool(url, min_size=1, max_size=4, open=False, name="vault-shreds",
                                        check=ConnectionPool.check_connection, timeout=10)
            self._pool.open(wait=True, timeout=30)
        else:
            self._db = self._open_sqlite(Path(url.removeprefix("sqlite:///")))
        self._run(lambda cur: (cur.execute(SCHEMA), cur.execute(TOKEN_SCHEMA)))

    @staticmethod
    def _open_sqlite(path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        os.chmod(path, 0o600)
        # Deleted secrets are overwritten in the file, not left in free pages; no WAL copies.
        connection.execute("PRAGMA secure_delete=ON")
        connection.execute("PRAGMA journal_mode=DELETE")
        return connection

    @contextmanager
    def _transaction(self):
        if self._postgres:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
            return
        with sqlite_transaction(self._db, self._lock) as cur:
            yield cur

    def _run(self, work):
        """Run work(cursor) in one transaction."""
        with self._transaction() as cur:
            return work(cur)

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self._postgres else text

    # -- the ledger -------------------------------------------------------------------------------
    @staticmethod
    def new_secret() -> bytes:
        return secrets.token_bytes(SECRET_BYTES)

    def put(self, template_id: str, tenant: str, secret: bytes) -> None:
        """Keep a template's secret. Written before the template commits: a crash between the two
        leaves an orphan secret, which `retain` removes later."""
        self._run(lambda cur: cur.execute(
            self._sql("INSERT INTO shred_secrets (template_id, tenant, secret, created_at) VALUES (?, ?, ?, ?)"),
            (template_id, tenant, secret, time.time())))

    def secrets(self, template_ids: list[str] | None = None) -> dict[str, bytes]:
        """{template id: secret} of these templates (all of them when None: start-up)."""
        def read(cur):
            if template_ids is None:
                cur.execute("SELECT template_id, secret FROM shred_secrets")
                return {t: bytes(s) for t, s in cur.fetchall()}
            found = {}
            for start in range(0, len(template_ids), 500):
                batch = template_ids[start:start + 500]
                cur.execute(self._sql(f"SELECT template_id, secret FROM shred_secrets WHERE template_id IN "
                                      f"({', '.join('?' * len(batch))})"), batch)
                found.update({t: bytes(s) for t, s in cur.fetchall()})
            return found

        try:
            return self._run(read)
        except Exception as error:
            raise StoreUnavailable("the shred ledger cannot be read; retry shortly") from error

    def shred(self, template_ids: list[str]) -> int:
        """Delete these templates' secrets: their sealed rows, wherever copies are, open no more."""
        def delete(cur):
            count = 0
            for template_id in template_ids:
                cur.execute(self._sql("DELETE FROM shred_secrets WHERE template_id = ?"), (template_id,))
                count += cur.rowcount
            return count

        return self._run(delete) if template_ids else 0

    def retain(self, live_ids: set[str], older_than_s: float = 3600.0) -> int:
        """Shred every secret older than `older_than_s` whose template is not live: revocations whose
        shredding a crash interrupted, and enrolments that never committed. Younger secrets stay:
        another replica may be enrolling them right now."""
        stale = [t for t, _ in self._created_before(time.time() - older_than_s) if t not in live_ids]
        return self.shred(stale)

    def _created_before(self, moment: float) -> list[tuple[str, float]]:
        return self._run(lambda cur: _fetch(
            cur, self._sql("SELECT template_id, created_at FROM shred_secrets WHERE created_at < ?"), (moment,)))

    # -- revoked API tokens ------------------------------------------------------------------------
    def revoke_tokens(self, revoked: list[tuple[str, str]]) -> None:
        """Record (token id, tenant) pairs as revoked, for good: no database write undoes it."""
        def insert(cur):
            for token_id, tenant in revoked:
                cur.execute(self._sql("INSERT INTO revoked_tokens (token_id, tenant, revoked_at) VALUES (?, ?, ?) "
                                      "ON CONFLICT (token_id) DO NOTHING"), (token_id, tenant, time.time()))

        if revoked:
            self._run(insert)

    def token_revoked(self, token_id: str) -> bool:
        try:
            return bool(self._run(lambda cur: _fetch(
                cur, self._sql("SELECT 1 FROM revoked_tokens WHERE token_id = ?"), (token_id,))))
        except Exception as error:
            raise StoreUnavailable("the token revocation ledger cannot be read; retry shortly") from error

    def revoked_token_ids(self) -> set[str]:
        return {t for t, in self._run(lambda cur: _fetch(cur, "SELECT token_id FROM revoked_tokens", ()))}

    def close(self) -> None:
        if self._postgres:
            self._pool.close()
        else:
            with self._lock:
                self._db.close()


def _fetch(cur, sql: str, params) -> list:
    cur.execute(sql, params)
    return cur.fetchall()


def open_ledger(url_or_path: str | os.PathLike) -> ShredLedger:
    """A ledger at `postgresql://...`, `sqlite:///path` or a plain path."""
    text = str(url_or_path)
    return ShredLedger(text if text.startswith(("postgresql://", "postgres://", "sqlite:///")) else f"sqlite:///{text}")
