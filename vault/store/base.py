"""The store's roles (small protocols, one per part of the vault that uses the store) and the SQL
both backends share.

Every change to templates commits together with its audit record, in one transaction: there is
never a template without its audit record, nor a reissue that revoked the old template without
storing the new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Iterator, Protocol, runtime_checkable

from vault.access.audit import AuditEntry, AuditRecord
from vault.access.lockout import Attempts
from vault.access.tokens import TokenRow, Tokens

LIVE, REVOKED = 1, 2


@dataclass(frozen=True)
class TemplateRow:
    template_id: str
    tenant: str
    subject_id: str
    modality: int
    finger: int
    profile: str
    key_version: int
    salt: bytes
    sealed: bytes
    sample_count: int
    created_at: float
    status: int = LIVE
    revoked_at: float | None = None
    revoke_reason: str = ""
    replaced_by: str = ""


ADD, REMOVE = "add", "remove"  # change kinds: a template became live / stopped being live


@dataclass(frozen=True)
class Change:
    """One entry of the change feed, with the template's row as it is now (not as it was then)."""

    id: int
    kind: str
    row: TemplateRow


@dataclass(frozen=True)
class Assignment:
    """Which replica group serves a tenant (vault.replication.ReplicaGroup). `joining`: a group that
    loads the tenant too, ahead of taking it over (a move in progress), or ""."""

    tenant: str
    group: str
    joining: str = ""
    changed_at: float = 0.0


class ChangeListener(Protocol):
    def wait(self, timeout: float) -> bool: ...  # True if woken by a change notification
    def close(self) -> None: ...


# -- the store's roles ---------------------------------------------------------------------------------
# Each part of the vault depends on the role it uses, never on the whole store. SqlStore
# (vault.store.sql, with its SQLite and PostgreSQL backends) is the one implementation of them all.
# Every write that changes templates or tokens appends its audit record in the same transaction.
# Two roles are defined beside the rules that use them, with their records: Tokens and TokenRow
# (vault.access.tokens), Attempts (vault.access.lockout).

@runtime_checkable
class Templates(Protocol):
    """Sealed template rows (vault.core)."""

    reader_url: str  # what a start-up worker process opens to read its shares (vault.store.open_reader)

    def insert(self, row: TemplateRow, audit: AuditEntry) -> None: ...
    def revoke(self, tenant: str, template_ids: list[str], reason: str, audit: AuditEntry) -> list[str]: ...
    def reissue(self, old_id: str, row: TemplateRow, reason: str, audit: AuditEntry) -> bool: ...
    def get(self, tenant: str, template_id: str) -> TemplateRow | None: ...
    def list(self, tenant: str, subject_id: str | None = None, include_revoked: bool = False) -> list[TemplateRow]: ...
    def live_rows(self, tenants: Collection[str] | None = None) -> Iterator[TemplateRow]: ...
    # A replica's start-up, in shares (vault.startup): where the shares end, and one share's live rows.
    def share_bounds(self, rows: int) -> list[str]: ...
    def live_share(self, after: str, upto: str | None, limit: int,
                   tenants: Collection[str] | None = None) -> list[tuple]: ...


@runtime_checkable
class ChangeFeed(Protocol):
    """What replicas follow to keep their indexes current, and the reads that reconcile them
    (vault.replication)."""

    def change_head(self) -> int: ...
    def changes_after(self, cursor: int, limit: int = 1000) -> list[Change]: ...
    def change_listener(self) -> ChangeListener: ...
    def prune_changes(self, older_than_s: float) -> int: ...
    def live_template_ids(self, tenants: Collection[str] | None = None) -> set[str]: ...
    def rows(self, template_ids: list[str]) -> list[TemplateRow]: ...


@runtime_checkable
class TenantGroups(Protocol):
    """The tenant-to-replica-group assignment (vault.replication.ReplicaGroup; operators set it with
    `vault group`). A tenant without an assignment is served by ungrouped replicas only."""

    def assignments(self) -> list[Assignment]: ...
    def assignment(self, tenant: str) -> Assignment | None: ...
    def assign(self, tenant: str, group: str, joining: str = "") -> Assignment: ...
    def unassign(self, tenant: str) -> bool: ...


@runtime_checkable
class AuditTrail(Protocol):
    """The hash-chained, MAC'd audit trail (vault.access.audit), and its anchor outside the database."""

    anchor: object | None  # vault.access.audit.AuditAnchor, advanced after each committed audit append

    def record(self, audit: AuditEntry) -> None: ...
    def audit_records(self, tenant: str | None = None, after_seq: int = 0) -> Iterator[AuditRecord]: ...
    def tenant_audit(self, tenant: str, skip: int = 0, limit: int = 1000) -> list[AuditRecord]: ...
    def audit_mac(self, seq: int) -> bytes | None: ...


@runtime_checkable
class Backups(Protocol):
    """Whole-store export and restore (vault.custody.backup): the BACKUP_TABLES, from one snapshot."""

    def schema_version(self) -> int: ...
    def export_rows(self) -> Iterator[tuple[str, tuple]]: ...
    def import_rows(self, rows: Iterator[tuple[str, tuple]]) -> dict[str, int]: ...


@runtime_checkable
class TemplateStore(Templates, Tokens, ChangeFeed, Attempts, AuditTrail, Backups, TenantGroups, Protocol):
    """Every role: what a server opens (vault.store.open_store) and hands out role by role."""

    def close(self) -> None: ...


TEMPLATE_COLUMNS = (
    "template_id, tenant, subject_id, modality, finger, profile, key_version, salt, sealed, "
    "sample_count, created_at, status, revoked_at, revoke_reason, replaced_by"
)
AUDIT_COLUMNS = "seq, at, actor, tenant, rpc, subject_id, template_id, decision, decision_id, detail, mac"
TOKEN_COLUMNS = "token_id, tenant, role, name, secret_hash, created_at, revoked_at, expires_at"
# What a backup holds: table -> (columns, order). Never keys; sealed codes only open with the key store.
BACKUP_TABLES = {"templates": (TEMPLATE_COLUMNS, "template_id"), "tokens": (TOKEN_COLUMNS, "token_id"),
                 "audit": (AUDIT_COLUMNS, "seq")}

# Schema migrations, in order; the store applies the ones newer than its recorded version.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE templates (
        template_id   TEXT PRIMARY KEY,
        tenant        TEXT NOT NULL,
        subject_id    TEXT NOT NULL,
        modality      INTEGER NOT NULL,
        finger        INTEGER NOT NULL,
        profile       TEXT NOT NULL,
        key_version   INTEGER NOT NULL,
        salt          BYTEA NOT NULL,
        sealed        BYTEA NOT NULL,
        sample_count  INTEGER NOT NULL,
        created_at    DOUBLE PRECISION NOT NULL,
        status        INTEGER NOT NULL,
        revoked_at    DOUBLE PRECISION,
        revoke_reason TEXT NOT NULL DEFAULT '',
        replaced_by   TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX templates_tenant_subject ON templates (tenant, subject_id);
    CREATE INDEX templates_status ON templates (status);
    CREATE TABLE audit (
        seq          BIGINT PRIMARY KEY,
        at           DOUBLE PRECISION NOT NULL,
        actor        TEXT NOT NULL,
        tenant       TEXT NOT NULL,
        rpc          TEXT NOT NULL,
        subject_id   TEXT NOT NULL,
        template_id  TEXT NOT NULL,
        decision     TEXT NOT NULL,
        decision_id  TEXT NOT NULL,
        detail       TEXT NOT NULL,
        mac          BYTEA NOT NULL
    );
    """,
    # 2: API tokens. Only a MAC of each secret is stored (HMAC-SHA256 under a key-store key: vault.access.tokens).
    """
    CREATE TABLE tokens (
        token_id     TEXT PRIMARY KEY,
        tenant       TEXT NOT NULL,
        role         TEXT NOT NULL,
        name         TEXT NOT NULL,
        secret_hash  TEXT NOT NULL,
        created_at   DOUBLE PRECISION NOT NULL,
        revoked_at   DOUBLE PRECISION
    );
    CREATE INDEX tokens_tenant ON tokens (tenant);
    """,
    # 3: the change feed replicas follow (vault.replication). One row per template that became
    # live ('add') or stopped being live ('remove'), written in the transaction that made the change.
    # Ids are allocated under the audit lock, so they commit in id order: a reader that has seen id
    # n will never later find a newly committed id below n.
    """
    CREATE TABLE changes (
        id           BIGINT PRIMARY KEY,
        at           DOUBLE PRECISION NOT NULL,
        tenant       TEXT NOT NULL,
        template_id  TEXT NOT NULL,
        kind         TEXT NOT NULL
    );
    """,
    # 4: failed and in-flight verification attempts and lockouts (vault.access.lockout.FailureLimiter),
    # shared by every replica of one store. subject '' is a client-wide entry.
    """
    CREATE TABLE attempts (
        attempt_id   TEXT PRIMARY KEY,
        tenant       TEXT NOT NULL,
        client       TEXT NOT NULL,
        subject      TEXT NOT NULL,
        at           DOUBLE PRECISION NOT NULL,
        state        TEXT NOT NULL
    );
    CREATE INDEX attempts_client ON attempts (tenant, client, at);
    CREATE TABLE lockouts (
        tenant       TEXT NOT NULL,
        client       TEXT NOT NULL,
        subject      TEXT NOT NULL,
        until        DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (tenant, client, subject)
    );
    """,
    # 5: tokens expire (vault.access.tokens); the expiry is under the token's MAC, so no write extends it.
    """
    ALTER TABLE tokens ADD COLUMN expires_at DOUBLE PRECISION
    """,
    # 6: tenants spread over replica groups (vault.replication.ReplicaGroup): each tenant's group, and
    # the group loading it ahead of a move ('' when none). Not in backups: a site's topology, not its data.
    """
    CREATE TABLE tenant_groups (
        tenant       TEXT PRIMARY KEY,
        group_name   TEXT NOT NULL,
        joining      TEXT NOT NULL DEFAULT '',
        changed_at   DOUBLE PRECISION NOT NULL
    )
    """,
]


def row_from(values) -> TemplateRow:
    (template_id, tenant, subject_id, modality, finger, profile, key_version, salt, sealed,
     sample_count, created_at, status, revoked_at, revoke_reason, replaced_by) = values
    return TemplateRow(template_id, tenant, subject_id, modality, finger, profile, key_version,
                       bytes(salt), bytes(sealed), sample_count, created_at, status, revoked_at,
                       revoke_reason, replaced_by)


def row_values(row: TemplateRow) -> tuple:
    return (row.template_id, row.tenant, row.subject_id, row.modality, row.finger, row.profile,
            row.key_version, row.salt, row.sealed, row.sample_count, row.created_at, row.status,
            row.revoked_at, row.revoke_reason, row.replaced_by)


def audit_from(values) -> AuditRecord:
    seq, at, actor, tenant, rpc, subject_id, template_id, decision, decision_id, detail, mac = values
    entry = AuditEntry(rpc=rpc, tenant=tenant, actor=actor, subject_id=subject_id, template_id=template_id,
                       decision=decision, detail=detail, decision_id=decision_id, at=at)
    return AuditRecord(seq, entry, bytes(mac))


def audit_values(record: AuditRecord) -> tuple:
    e = record.entry
    return (record.seq, e.at, e.actor, e.tenant, e.rpc, e.subject_id, e.template_id, e.decision,
            e.decision_id, e.detail, record.mac)
