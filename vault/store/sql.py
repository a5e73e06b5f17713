"""Store logic shared by the SQL backends. Subclasses provide connections and transactions."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from vault.audit import GENESIS, AuditEntry, AuditRecord, chain_mac
from vault.store.base import (AUDIT_COLUMNS, LIVE, MIGRATIONS, REVOKED, TEMPLATE_COLUMNS, TemplateRow,
                              audit_from, audit_values, row_from, row_values)

TEMPLATE_MARKS = ", ".join(["?"] * 15)
AUDIT_MARKS = ", ".join(["?"] * 11)


class SqlStore:
    placeholder = "?"

    def __init__(self, audit_key: bytes):
        self._audit_key = audit_key
        self._audit_lock = threading.Lock()

    # -- backend hooks --------------------------------------------------------------------------
    @contextmanager
    def _transaction(self):  # yields a cursor; commits on success, rolls back on error
        raise NotImplementedError

    def _lock_audit(self, cur) -> None:
        """Serialise audit appends across processes (the chain needs one writer at a time)."""

    def _sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def _execute(self, cur, text: str, params=()):
        cur.execute(self._sql(text), params)
        return cur

    # -- schema ---------------------------------------------------------------------------------
    def _migrate(self) -> None:
        with self._transaction() as cur:
            self._execute(cur, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = self._execute(cur, "SELECT max(version) FROM schema_version").fetchone()
            current = row[0] or 0
            for version, script in enumerate(MIGRATIONS, start=1):
                if version > current:
                    for statement in filter(str.strip, script.split(";")):
                        self._execute(cur, statement)
                    self._execute(cur, "INSERT INTO schema_version (version) VALUES (?)", (version,))

    def schema_version(self) -> int:
        with self._transaction() as cur:
            return self._execute(cur, "SELECT max(version) FROM schema_version").fetchone()[0]

    # -- writes ---------------------------------------------------------------------------------
    def _append_audit(self, cur, entry: AuditEntry) -> AuditRecord:
        self._lock_audit(cur)
        last = self._execute(cur, "SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, previous = (last[0] + 1, bytes(last[1])) if last else (1, GENESIS)
        record = AuditRecord(seq, entry, chain_mac(self._audit_key, previous, seq, entry))
        self._execute(cur, f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES ({AUDIT_MARKS})", audit_values(record))
        return record

    def insert(self, row: TemplateRow, audit: AuditEntry) -> None:
        with self._audit_lock, self._transaction() as cur:
            self._execute(cur, f"INSERT INTO templates ({TEMPLATE_COLUMNS}) VALUES ({TEMPLATE_MARKS})", row_values(row))
            self._append_audit(cur, audit)

    def revoke(self, tenant: str, template_ids: list[str], reason: str, audit: AuditEntry) -> list[str]:
        with self._audit_lock, self._transaction() as cur:
            revoked = [t for t in template_ids if self._revoke_one(cur, tenant, t, reason, audit.at, "")]
            audit.template_id = ",".join(revoked)
            self._append_audit(cur, audit)
        return revoked

    def _revoke_one(self, cur, tenant: str, template_id: str, reason: str, at: float, replaced_by: str) -> bool:
        cur = self._execute(
            cur,
            "UPDATE templates SET status = ?, revoked_at = ?, revoke_reason = ?, replaced_by = ? "
            "WHERE tenant = ? AND template_id = ? AND status = ?",
            (REVOKED, at, reason, replaced_by, tenant, template_id, LIVE),
        )
        return cur.rowcount == 1

    def reissue(self, old_id: str, row: TemplateRow, reason: str, audit: AuditEntry) -> bool:
        """Revoke old_id and insert row atomically; False (nothing written) if old_id is not live."""
        with self._audit_lock, self._transaction() as cur:
            if not self._revoke_one(cur, row.tenant, old_id, reason, row.created_at, row.template_id):
                return False
            self._execute(cur, f"INSERT INTO templates ({TEMPLATE_COLUMNS}) VALUES ({TEMPLATE_MARKS})", row_values(row))
            self._append_audit(cur, audit)
        return True

    def record(self, audit: AuditEntry) -> None:
        with self._audit_lock, self._transaction() as cur:
            self._append_audit(cur, audit)

    # -- reads ----------------------------------------------------------------------------------
    def get(self, tenant: str, template_id: str) -> TemplateRow | None:
        with self._transaction() as cur:
            values = self._execute(
                cur, f"SELECT {TEMPLATE_COLUMNS} FROM templates WHERE tenant = ? AND template_id = ?",
                (tenant, template_id),
            ).fetchone()
        return row_from(values) if values else None

    def list(self, tenant: str, subject_id: str | None = None, include_revoked: bool = False) -> list[TemplateRow]:
        query = f"SELECT {TEMPLATE_COLUMNS} FROM templates WHERE tenant = ?"
        params: list = [tenant]
        if subject_id is not None:
            query += " AND subject_id = ?"
            params.append(subject_id)
        if not include_revoked:
            query += " AND status = ?"
            params.append(LIVE)
        with self._transaction() as cur:
            rows = self._execute(cur, query + " ORDER BY created_at, template_id", params).fetchall()
        return [row_from(v) for v in rows]

    def live_rows(self) -> Iterator[TemplateRow]:
        with self._transaction() as cur:
            rows = self._execute(cur, f"SELECT {TEMPLATE_COLUMNS} FROM templates WHERE status = ?", (LIVE,)).fetchall()
        return (row_from(v) for v in rows)

    def audit_records(self, tenant: str | None = None, after_seq: int = 0) -> Iterator[AuditRecord]:
        query = f"SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > ?"
        params: list = [after_seq]
        if tenant is not None:
            query += " AND tenant = ?"
            params.append(tenant)
        with self._transaction() as cur:
            rows = self._execute(cur, query + " ORDER BY seq", params).fetchall()
        return (audit_from(v) for v in rows)
