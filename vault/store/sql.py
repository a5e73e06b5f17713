"""Store logic shared by the SQL backends. Subclasses provide connections and transactions."""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager
from typing import Collection, Iterator

from vault.access.audit import GENESIS, AuditEntry, AuditRecord, chain_mac
from vault.exceptions import FailedPrecondition
from vault.access.lockout import PER_CLIENT, PER_SUBJECT, SPENT
from vault.store.base import (ADD, Assignment, AUDIT_COLUMNS, BACKUP_TABLES, LIVE, MIGRATIONS, REMOVE, REVOKED, TEMPLATE_COLUMNS,
                              TOKEN_COLUMNS, Change, TemplateRow, audit_from, audit_values, row_from, row_values)
from vault.access.tokens import TokenRow

TEMPLATE_MARKS = ", ".join(["?"] * 15)
AUDIT_MARKS = ", ".join(["?"] * 11)
OPEN_ATTEMPT_S = 120.0  # an attempt still open after this (a replica died mid-call) no longer counts
PAGE_ROWS = 10_000  # live_rows reads in pages: no transaction stays open while a replica loads
# What a replica's start-up reads of each live row (vault.startup): what unsealing and indexing use.
LOAD_COLUMNS = "template_id, tenant, subject_id, modality, finger, profile, key_version, salt, sealed, sample_count"
QUALIFIED_COLUMNS = ", ".join(f"t.{c.strip()}" for c in TEMPLATE_COLUMNS.split(","))


class SqlStore:
    """Every role of vault.store.base (templates, tokens, change feed, attempts, audit, backups), in
    SQL both backends run; a backend gives it connections (vault.store.connections)."""

    placeholder = "?"

    def __init__(self, audit_key: bytes | None):
        self._audit_key = audit_key
        self._audit_lock = threading.Lock()
        self._appended: AuditRecord | None = None
        self.anchor = None  # vault.access.audit.AuditAnchor, set by the server: the chain's head, outside the database

    # -- backend hooks --------------------------------------------------------------------------
    @contextmanager
    def _transaction(self):  # yields a cursor; commits on success, rolls back on error
        raise NotImplementedError

    @contextmanager
    def _snapshot(self):
        """A read-only transaction whose reads all see one committed state (for backups)."""
        with self._transaction() as cur:
            yield cur

    def _lock_audit(self, cur) -> None:
        """Serialise audit appends across processes (the chain needs one writer at a time)."""

    def _lock_schema(self, cur) -> None:
        """Serialise migrations across processes (replicas starting together)."""

    def _notify_changes(self, cur, last_id: int) -> None:
        """Tell listeners, once this transaction commits, that the change feed reached last_id."""

    def change_listener(self):
        """Something to wait on between change-feed polls (see vault.replication)."""
        return SleepListener()

    @contextmanager
    def _audited(self):
        """A write transaction that appends audit records: one writer at a time, and once it has
        committed, the audit anchor (outside the database) advances to the newest record."""
        with self._audit_lock:
            self._appended = None
            with self._transaction() as cur:
                yield cur
            if self._appended is not None and self.anchor is not None:
                self.anchor.advance(self._appended, self.audit_mac)

    def audit_mac(self, seq: int) -> bytes | None:
        """The MAC of the audit record at `seq`, None if there is none (the anchor's check)."""
        with self._transaction() as cur:
            found = self._execute(cur, "SELECT mac FROM audit WHERE seq = ?", (seq,)).fetchone()
        return bytes(found[0]) if found else None

    def _sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def _execute(self, cur, text: str, params=()):
        cur.execute(self._sql(text), params)
        return cur

    # -- schema ---------------------------------------------------------------------------------
    def _migrate(self) -> None:
        with self._transaction() as cur:
            self._lock_schema(cur)
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
        if self._audit_key is None:
            raise RuntimeError("store opened without the audit key cannot append audit records")
        self._lock_audit(cur)
        last = self._execute(cur, "SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, previous = (last[0] + 1, bytes(last[1])) if last else (1, GENESIS)
        record = AuditRecord(seq, entry, chain_mac(self._audit_key, previous, seq, entry))
        self._execute(cur, f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES ({AUDIT_MARKS})", audit_values(record))
        self._appended = record
        return record

    def _append_changes(self, cur, tenant: str, changes: list[tuple[str, str]]) -> None:
        """Record (kind, template_id) changes. Call after _append_audit: the audit lock it took makes
        ids commit in id order, which is what lets a follower keep a plain `id > cursor` cursor."""
        if not changes:
            return
        last = self._execute(cur, "SELECT max(id) FROM changes").fetchone()[0] or 0
        at = time.time()
        for offset, (kind, template_id) in enumerate(changes, start=1):
            self._execute(cur, "INSERT INTO changes (id, at, tenant, template_id, kind) VALUES (?, ?, ?, ?, ?)",
                          (last + offset, at, tenant, template_id, kind))
        self._notify_changes(cur, last + len(changes))

    def insert(self, row: TemplateRow, audit: AuditEntry) -> None:
        with self._audited() as cur:
            self._execute(cur, f"INSERT INTO templates ({TEMPLATE_COLUMNS}) VALUES ({TEMPLATE_MARKS})", row_values(row))
            self._append_audit(cur, audit)
            self._append_changes(cur, row.tenant, [(ADD, row.template_id)])

    def revoke(self, tenant: str, template_ids: list[str], reason: str, audit: AuditEntry) -> list[str]:
        with self._audited() as cur:
            revoked = [t for t in template_ids if self._revoke_one(cur, tenant, t, reason, audit.at, "")]
            audit.template_id = ",".join(revoked)
            self._append_audit(cur, audit)
            self._append_changes(cur, tenant, [(REMOVE, t) for t in revoked])
        return revoked

    def _revoke_one(self, cur, tenant: str, template_id: str, reason: str, at: float, replaced_by: str) -> bool:
        # Revoke is erase: the sealed code goes with the status change, so flipping the status back
        # in the database (or stealing the keys later) brings nothing back.
        cur = self._execute(
            cur,
            "UPDATE templates SET status = ?, revoked_at = ?, revoke_reason = ?, replaced_by = ?, salt = ?, sealed = ? "
            "WHERE tenant = ? AND template_id = ? AND status = ?",
            (REVOKED, at, reason, replaced_by, b"", b"", tenant, template_id, LIVE),
        )
        return cur.rowcount == 1

    def reissue(self, old_id: str, row: TemplateRow, reason: str, audit: AuditEntry) -> bool:
        """Revoke old_id and insert row atomically; False (nothing written) if old_id is not live."""
        with self._audited() as cur:
            if not self._revoke_one(cur, row.tenant, old_id, reason, row.created_at, row.template_id):
                return False
            self._execute(cur, f"INSERT INTO templates ({TEMPLATE_COLUMNS}) VALUES ({TEMPLATE_MARKS})", row_values(row))
            self._append_audit(cur, audit)
            self._append_changes(cur, row.tenant, [(REMOVE, old_id), (ADD, row.template_id)])
        return True

    def record(self, audit: AuditEntry) -> None:
        with self._audited() as cur:
            self._append_audit(cur, audit)

    # -- tokens ---------------------------------------------------------------------------------
    def insert_token(self, token: TokenRow, audit: AuditEntry) -> None:
        with self._audited() as cur:
            self._execute(cur, f"INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          (token.token_id, token.tenant, token.role, token.name, token.secret_hash,
                           token.created_at, token.revoked_at, token.expires_at))
            self._append_audit(cur, audit)

    def token(self, token_id: str) -> TokenRow | None:
        with self._transaction() as cur:
            values = self._execute(cur, f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_id = ?", (token_id,)).fetchone()
        return TokenRow(*values) if values else None

    def tokens(self, tenant: str) -> list[TokenRow]:
        with self._transaction() as cur:
            rows = self._execute(cur, f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE tenant = ? ORDER BY created_at, token_id",
                                 (tenant,)).fetchall()
        return [TokenRow(*v) for v in rows]

    def revoked_tokens(self) -> list[tuple[str, str]]:
        """(token id, tenant) of every token the database records as revoked."""
        with self._transaction() as cur:
            return [tuple(v) for v in self._execute(
                cur, "SELECT token_id, tenant FROM tokens WHERE revoked_at IS NOT NULL ORDER BY token_id").fetchall()]

    def revoke_token(self, tenant: str, token_id: str, at: float, audit: AuditEntry) -> bool:
        """Revoke a live token of the tenant, with its audit record; False (nothing written) if none.
        Its stored MAC is erased: clearing revoked_at in the database revives nothing."""
        with self._audited() as cur:
            cur = self._execute(cur, "UPDATE tokens SET revoked_at = ?, secret_hash = '' "
                                     "WHERE tenant = ? AND token_id = ? AND revoked_at IS NULL",
                                (at, tenant, token_id))
            if cur.rowcount != 1:
                return False
            self._append_audit(cur, audit)
        return True

    # -- lockout: attempts shared by every replica of this store ---------------------------------
    # The one lockout rule (vault.access.lockout). An attempt row is 'open' while its call runs, then
    # 'failed' (counts for the client and the subject) or 'cleared' (counts for the client only:
    # SPENT, or a failure whose subject was matched since, or locked out); a match or a call without
    # decision leaves no row.
    def begin_attempt(self, tenant: str, client: str, subject: str, limits, now: float) -> tuple[str | None, str]:
        """Admit a verification attempt (attempt id, "") or refuse it (None, why). Serialised with
        every other writer of the store (the audit lock), so replicas cannot admit past a limit
        together; attempts in flight count, so concurrent ones cannot either."""
        with self._audit_lock, self._transaction() as cur:
            self._lock_audit(cur)
            for scope, name, limit in self._scopes(subject, limits):
                found = self._execute(cur, "SELECT until FROM lockouts WHERE tenant = ? AND client = ? AND subject = ?",
                                      (tenant, client, scope)).fetchone()
                what = "this subject from this client" if scope else "this client"
                if found and found[0] > now:
                    return None, f"too many failed attempts for {what}; locked for {int(found[0] - now) + 1} s more"
                if self._count(cur, tenant, client, scope, now, limits, with_open=True) >= limit:
                    return None, f"too many attempts in flight or failed for {what}; retry later"
            attempt_id = uuid.uuid4().hex
            self._execute(cur, "INSERT INTO attempts (attempt_id, tenant, client, subject, at, state) "
                               "VALUES (?, ?, ?, ?, ?, 'open')", (attempt_id, tenant, client, subject, now))
            return attempt_id, ""

    def end_attempt(self, attempt_id: str, tenant: str, client: str, subject: str, matched: bool | str | None,
                    limits, now: float) -> tuple[str, ...]:
        """Close an attempt: a failure counts, a match clears the subject's failures, SPENT counts
        for the client only, None (no decision) leaves no trace. The limits the attempt tripped
        (PER_SUBJECT, PER_CLIENT), which lock the subject or the client out; () when none."""
        with self._audit_lock, self._transaction() as cur:
            self._lock_audit(cur)
            self._execute(cur, "DELETE FROM attempts WHERE tenant = ? AND client = ? AND at < ?",
                          (tenant, client, now - max(limits.window_s, OPEN_ATTEMPT_S)))
            if matched == SPENT:  # 'cleared' counts for the client only
                self._execute(cur, "UPDATE attempts SET state = 'cleared', at = ? WHERE attempt_id = ?", (now, attempt_id))
                subject = ""
            elif matched is None or matched:
                self._execute(cur, "DELETE FROM attempts WHERE attempt_id = ?", (attempt_id,))
                if matched and subject:
                    self._clear_subject(cur, tenant, client, subject)
                return ()
            else:
                self._execute(cur, "UPDATE attempts SET state = 'failed', at = ? WHERE attempt_id = ?", (now, attempt_id))
            tripped = []
            for scope, name, limit in self._scopes(subject, limits):
                if self._count(cur, tenant, client, scope, now, limits, with_open=False) >= limit:
                    self._execute(cur, "DELETE FROM lockouts WHERE tenant = ? AND client = ? AND subject = ?",
                                  (tenant, client, scope))
                    self._execute(cur, "INSERT INTO lockouts (tenant, client, subject, until) VALUES (?, ?, ?, ?)",
                                  (tenant, client, scope, now + limits.lockout_s))
                    if scope:
                        self._clear_subject(cur, tenant, client, scope)
                    else:
                        self._execute(cur, "DELETE FROM attempts WHERE tenant = ? AND client = ? AND state != 'open'",
                                      (tenant, client))
                    tripped.append(name)
            return tuple(tripped)

    @staticmethod
    def _scopes(subject: str, limits) -> list[tuple[str, str, int]]:
        """(scope, limit name, limit): the client's ('' scope) and, for a named subject, the subject's."""
        return [("", PER_CLIENT, limits.per_client)] + ([(subject, PER_SUBJECT, limits.per_subject)] if subject else [])

    def _count(self, cur, tenant: str, client: str, scope: str, now: float, limits, with_open: bool) -> int:
        counted = "'failed'" if scope else "'failed', 'cleared'"
        query = f"SELECT count(*) FROM attempts WHERE tenant = ? AND client = ? AND ((state IN ({counted}) AND at > ?)"
        params: list = [tenant, client, now - limits.window_s]
        if with_open:
            query += " OR (state = 'open' AND at > ?)"
            params.append(now - OPEN_ATTEMPT_S)
        query += ")"
        if scope:
            query += " AND subject = ?"
            params.append(scope)
        return self._execute(cur, query, params).fetchone()[0]

    def _clear_subject(self, cur, tenant: str, client: str, subject: str) -> None:
        self._execute(cur, "UPDATE attempts SET state = 'cleared' WHERE tenant = ? AND client = ? AND subject = ? "
                           "AND state = 'failed'", (tenant, client, subject))

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

    def live_rows(self, tenants: Collection[str] | None = None) -> Iterator[TemplateRow]:
        """Every live row (of `tenants` only, when given: a replica group's), read in pages by
        template id. Rows changed during the walk may be missed or stale: a replica marks its
        change-feed cursor before loading and replays from there."""
        among, chosen = self._tenants_clause(tenants)
        if tenants is not None and not chosen:
            return
        after = ""
        while True:
            with self._transaction() as cur:
                # "+status": keep the planner off the (unselective) status index, which would sort
                # the whole table for every page; walk the primary key instead.
                page = self._execute(
                    cur, f"SELECT {TEMPLATE_COLUMNS} FROM templates WHERE +status = ? AND template_id > ?{among} "
                         "ORDER BY template_id LIMIT ?", (LIVE, after, *chosen, PAGE_ROWS)).fetchall()
            yield from (row_from(v) for v in page)
            if len(page) < PAGE_ROWS:
                return
            after = page[-1][0]

    def share_bounds(self, rows: int) -> list[str]:
        """Template ids that cut the store into shares of about `rows` rows each (rows of any status
        and tenant, in id order; one walk of the primary key): a replica's start-up reads and
        unseals each share apart, on every core (vault.startup)."""
        every = int(rows)  # a whole number written into the SQL ("%" would be a placeholder to psycopg)
        with self._snapshot() as cur:
            found = self._execute(
                cur, "SELECT template_id FROM (SELECT template_id, row_number() OVER (ORDER BY template_id) AS n "
                     f"FROM templates) AS ranked WHERE n / {every} * {every} = n ORDER BY template_id").fetchall()
        return [v[0] for v in found]

    def live_share(self, after: str, upto: str | None, limit: int,
                   tenants: Collection[str] | None = None) -> list[tuple]:
        """Live rows whose template id is after `after` and at most `upto` (None: no bound), of
        `tenants` only when given, the first `limit` in id order: LOAD_COLUMNS tuples (no
        TemplateRow a row: a million of them are a second of a replica's start-up)."""
        among, chosen = self._tenants_clause(tenants)
        if tenants is not None and not chosen:
            return []
        below, bound = (" AND template_id <= ?", (upto,)) if upto is not None else ("", ())
        with self._snapshot() as cur:
            # "+status": walk the primary key, not the (unselective) status index (see live_rows)
            return self._execute(
                cur, f"SELECT {LOAD_COLUMNS} FROM templates WHERE +status = ? AND template_id > ?{below}{among} "
                     "ORDER BY template_id LIMIT ?", (LIVE, after, *bound, *chosen, limit)).fetchall()

    def live_template_ids(self, tenants: Collection[str] | None = None) -> set[str]:
        among, chosen = self._tenants_clause(tenants)
        if tenants is not None and not chosen:
            return set()
        with self._transaction() as cur:
            return {v[0] for v in self._execute(cur, f"SELECT template_id FROM templates WHERE status = ?{among}",
                                                (LIVE, *chosen))}

    @staticmethod
    def _tenants_clause(tenants: Collection[str] | None) -> tuple[str, tuple[str, ...]]:
        """(' AND tenant IN (?, ...)', the tenants) for a filter; ('', ()) for none."""
        if tenants is None:
            return "", ()
        chosen = tuple(sorted(set(tenants)))
        return (f" AND tenant IN ({', '.join('?' * len(chosen))})", chosen) if chosen else ("", ())

    def rows(self, template_ids: list[str]) -> list[TemplateRow]:
        """Current rows of these templates, any tenant, any status (replication bookkeeping only)."""
        found = []
        with self._transaction() as cur:
            for start in range(0, len(template_ids), 500):
                batch = template_ids[start:start + 500]
                marks = ", ".join("?" * len(batch))
                found += self._execute(
                    cur, f"SELECT {TEMPLATE_COLUMNS} FROM templates WHERE template_id IN ({marks})", batch).fetchall()
        return [row_from(v) for v in found]

    # -- change feed ----------------------------------------------------------------------------
    def change_head(self) -> int:
        """The newest change id (0 when there is none): a cursor to follow the feed from."""
        with self._transaction() as cur:
            return self._execute(cur, "SELECT max(id) FROM changes").fetchone()[0] or 0

    def changes_after(self, cursor: int, limit: int = 1000) -> list[Change]:
        """Changes with id > cursor, oldest first, each with its template's current row."""
        with self._transaction() as cur:
            found = self._execute(
                cur, f"SELECT c.id, c.kind, {QUALIFIED_COLUMNS} FROM changes c "
                     "JOIN templates t ON t.template_id = c.template_id WHERE c.id > ? ORDER BY c.id LIMIT ?",
                (cursor, limit)).fetchall()
        return [Change(v[0], v[1], row_from(v[2:])) for v in found]

    def prune_changes(self, older_than_s: float) -> int:
        """Drop feed entries older than this; a replica further behind reconciles in full instead."""
        with self._transaction() as cur:
            # The newest entry always stays: ids continue from max(id), and must never restart.
            return self._execute(cur, "DELETE FROM changes WHERE at < ? AND id < (SELECT max(id) FROM changes)",
                                 (time.time() - older_than_s,)).rowcount

    # -- replica groups (vault.replication.ReplicaGroup) ------------------------------------------
    def assignments(self) -> list[Assignment]:
        with self._transaction() as cur:
            found = self._execute(cur, "SELECT tenant, group_name, joining, changed_at FROM tenant_groups "
                                       "ORDER BY tenant").fetchall()
        return [Assignment(*v) for v in found]

    def assignment(self, tenant: str) -> Assignment | None:
        with self._transaction() as cur:
            found = self._execute(cur, "SELECT tenant, group_name, joining, changed_at FROM tenant_groups "
                                       "WHERE tenant = ?", (tenant,)).fetchone()
        return Assignment(*found) if found else None

    def assign(self, tenant: str, group: str, joining: str = "") -> Assignment:
        """Set the tenant's group (and the group loading it ahead of a move, or ''): one row a tenant."""
        at = time.time()
        with self._transaction() as cur:
            self._execute(cur, "INSERT INTO tenant_groups (tenant, group_name, joining, changed_at) VALUES (?, ?, ?, ?) "
                               "ON CONFLICT (tenant) DO UPDATE SET group_name = excluded.group_name, "
                               "joining = excluded.joining, changed_at = excluded.changed_at",
                          (tenant, group, joining, at))
        return Assignment(tenant, group, joining, at)

    def unassign(self, tenant: str) -> bool:
        with self._transaction() as cur:
            return self._execute(cur, "DELETE FROM tenant_groups WHERE tenant = ?", (tenant,)).rowcount == 1

    def tenant_audit(self, tenant: str, skip: int = 0, limit: int = 1000) -> list[AuditRecord]:
        """A tenant's records in chain order, after its first `skip` ones: its own numbering,
        which says nothing of other tenants' activity."""
        with self._transaction() as cur:
            rows = self._execute(cur, f"SELECT {AUDIT_COLUMNS} FROM audit WHERE tenant = ? ORDER BY seq LIMIT ? OFFSET ?",
                                 (tenant, limit, skip)).fetchall()
        return [audit_from(v) for v in rows]

    def audit_records(self, tenant: str | None = None, after_seq: int = 0) -> Iterator[AuditRecord]:
        query = f"SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > ?"
        params: list = [after_seq]
        if tenant is not None:
            query += " AND tenant = ?"
            params.append(tenant)
        with self._transaction() as cur:
            rows = self._execute(cur, query + " ORDER BY seq", params).fetchall()
        return (audit_from(v) for v in rows)

    # -- backup and restore (vault.custody.backup) ------------------------------------------------------
    def export_rows(self) -> Iterator[tuple[str, tuple]]:
        """(table, column values) of every row a backup holds, from one consistent snapshot taken
        while the vault keeps serving: sealed templates, token MACs, the audit chain. Not the
        change feed nor lockout state, which a restored vault starts afresh."""
        with self._snapshot() as cur:
            for table, (columns, order) in BACKUP_TABLES.items():
                self._execute(cur, f"SELECT {columns} FROM {table} ORDER BY {order}")
                while batch := cur.fetchmany(1000):
                    for values in batch:
                        yield table, tuple(bytes(v) if isinstance(v, memoryview) else v for v in values)

    def import_rows(self, rows: Iterator[tuple[str, tuple]]) -> dict[str, int]:
        """Load exported rows into this store, all or nothing; refused unless the store holds no
        template, token or audit record (a restore never merges into or overwrites a vault)."""
        counts = dict.fromkeys(BACKUP_TABLES, 0)
        with self._audited() as cur:
            for table in BACKUP_TABLES:
                if self._execute(cur, f"SELECT count(*) FROM {table}").fetchone()[0]:
                    raise FailedPrecondition(f"the target store already holds {table}: restore only into an empty store")
            for table, values in rows:
                # Columns added by later migrations come last: an archive of an older schema fills
                # the ones it has, and the others keep their defaults.
                columns = ", ".join(BACKUP_TABLES[table][0].split(", ")[:len(values)])
                marks = ", ".join(["?"] * len(values))
                self._execute(cur, f"INSERT INTO {table} ({columns}) VALUES ({marks})", values)
                counts[table] += 1
        return counts


class SleepListener:
    """The listener of a store without notifications: wait() just sleeps, so followers poll."""

    def __init__(self):
        self._closed = threading.Event()

    def wait(self, timeout: float) -> bool:
        self._closed.wait(timeout)
        return False

    def close(self) -> None:
        self._closed.set()
