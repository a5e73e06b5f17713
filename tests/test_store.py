"""The template stores, SQLite and PostgreSQL, through one suite: migrations, atomic changes with
their audit records, the audit chain, the change feed, several writers on one database.

PostgreSQL tests use the server named by VAULT_TEST_POSTGRES (default: 127.0.0.1:5432, database
`test`, user root or postgres) and make a schema of their own per test. Without a server they skip,
unless VAULT_REQUIRE_POSTGRES=1 (CI), where they fail.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from vault.access.audit import AuditEntry, verify_chain
from vault.store import LIVE, REVOKED, TemplateRow, open_store
from vault.store import sql as sql_module
from vault.store.base import ADD, MIGRATIONS, REMOVE, TEMPLATE_COLUMNS, row_values

AUDIT_KEY = b"k" * 32
DEFAULT_POSTGRES = "postgresql://root@127.0.0.1:5432/test postgresql://postgres@127.0.0.1:5432/test"


def row(template_id, subject="alice", tenant="t"):
    return TemplateRow(template_id, tenant, subject, 1, 0, "face-iom-v1", 1, b"s" * 16, b"sealed", 1, time.time())


@functools.cache
def _reachable_postgres() -> tuple[str | None, str]:
    import psycopg

    problems = []
    for url in os.environ.get("VAULT_TEST_POSTGRES", DEFAULT_POSTGRES).split():
        try:
            psycopg.connect(url, connect_timeout=3).close()
            return url, ""
        except psycopg.Error as error:
            problems.append(f"{url}: {str(error).strip().splitlines()[0]}")
    return None, "; ".join(problems)


def postgres_admin_url() -> str:
    """A reachable PostgreSQL URL, or skip (fail under VAULT_REQUIRE_POSTGRES=1) saying why."""
    url, problems = _reachable_postgres()
    if url is None:
        message = (f"no PostgreSQL server reachable ({problems}); set VAULT_TEST_POSTGRES to a "
                   "postgresql:// URL to run the PostgreSQL tests")
        if os.environ.get("VAULT_REQUIRE_POSTGRES") == "1":
            pytest.fail(message + " (required: VAULT_REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(message)
    return url


@dataclass
class Backend:
    name: str
    url: str
    path: Path | None = None  # the SQLite file

    def open(self):
        return open_store(self.url, AUDIT_KEY)

    def tamper(self, *statements: str) -> None:
        """Edit the database behind the store's back, as someone with database access could."""
        if self.name == "sqlite":
            db = sqlite3.connect(self.path)
            for statement in statements:
                db.execute(statement)
            db.commit()
            db.close()
        else:
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as conn:
                for statement in statements:
                    conn.execute(statement)

    def integrity_errors(self) -> tuple[type[Exception], ...]:
        if self.name == "sqlite":
            return (sqlite3.IntegrityError,)
        import psycopg

        return (psycopg.errors.IntegrityError,)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request, tmp_path):
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path / 'vault.db'}", tmp_path / "vault.db")
        return
    from benchmarks.postgres_scratch import scratch_schema

    with scratch_schema(postgres_admin_url(), prefix="vault_test") as url:
        yield Backend("postgres", url)


@pytest.fixture
def store(backend):
    s = backend.open()
    yield s
    s.close()


def test_migrations_recorded_and_idempotent(backend):
    backend.open().close()
    again = backend.open()
    assert again.schema_version() == len(MIGRATIONS)
    again.close()


def test_upgrade_from_first_schema_keeps_rows_and_starts_the_feed(backend, monkeypatch):
    monkeypatch.setattr(sql_module, "MIGRATIONS", MIGRATIONS[:1])
    old = backend.open()
    with old._transaction() as cur:  # a row written by the first release (no change feed yet)
        old._execute(cur, f"INSERT INTO templates ({TEMPLATE_COLUMNS}) VALUES ({sql_module.TEMPLATE_MARKS})",
                     row_values(row("a1")))
    old.close()
    monkeypatch.setattr(sql_module, "MIGRATIONS", MIGRATIONS)
    upgraded = backend.open()
    try:
        assert upgraded.schema_version() == len(MIGRATIONS)
        assert [r.template_id for r in upgraded.live_rows()] == ["a1"]
        assert upgraded.change_head() == 0
        upgraded.revoke("t", ["a1"], "left", AuditEntry("Revoke", "t", "op"))
        assert [(c.id, c.kind) for c in upgraded.changes_after(0)] == [(1, REMOVE)]
    finally:
        upgraded.close()


def test_replicas_starting_together_migrate_once(backend):
    stores, errors = [], []

    def open_one():
        try:
            stores.append(backend.open())
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [s.schema_version() for s in stores] == [len(MIGRATIONS)] * 4
    for s in stores:
        s.close()


def test_insert_list_revoke_reissue(store):
    store.insert(row("a1"), AuditEntry("Enroll", "t", "op"))
    store.insert(row("b1", "bob"), AuditEntry("Enroll", "t", "op"))
    store.insert(row("x1", tenant="other"), AuditEntry("Enroll", "other", "op"))
    assert [r.template_id for r in store.list("t")] == ["a1", "b1"]
    assert store.get("t", "x1") is None  # tenant-scoped
    assert store.revoke("t", ["a1", "x1"], "left", AuditEntry("Revoke", "t", "op")) == ["a1"]
    assert store.get("t", "a1").status == REVOKED and store.get("other", "x1").status == LIVE
    assert [r.template_id for r in store.list("t", include_revoked=True)] == ["a1", "b1"]
    assert store.reissue("b1", row("b2", "bob"), "rotate", AuditEntry("Reissue", "t", "op"))
    old = store.get("t", "b1")
    assert old.status == REVOKED and old.replaced_by == "b2" and store.get("t", "b2").status == LIVE
    # Reissuing a template that is no longer live writes nothing.
    assert not store.reissue("b1", row("b3", "bob"), "again", AuditEntry("Reissue", "t", "op"))
    assert store.get("t", "b3") is None
    assert sorted(r.template_id for r in store.live_rows()) == ["b2", "x1"]
    assert store.live_template_ids() == {"b2", "x1"}
    assert {(r.template_id, r.status) for r in store.rows(["a1", "b2", "nope"])} == {("a1", REVOKED), ("b2", LIVE)}


def test_blobs_and_metadata_round_trip(store):
    original = TemplateRow("r1", "t", "subject with spaces", 2, 7, "finger-iom-v1", 3, bytes(range(16)),
                           bytes(range(256)) * 3, 4, 1700000000.25)
    store.insert(original, AuditEntry("Enroll", "t", "op"))
    assert store.get("t", "r1") == original


def test_live_rows_reads_in_pages(store, monkeypatch):
    monkeypatch.setattr(sql_module, "PAGE_ROWS", 3)
    ids = [f"p{i:02d}" for i in range(8)]
    for template_id in ids:
        store.insert(row(template_id), AuditEntry("Enroll", "t", "op"))
    store.revoke("t", ["p03"], "left", AuditEntry("Revoke", "t", "op"))
    assert [r.template_id for r in store.live_rows()] == [i for i in ids if i != "p03"]


def test_failed_insert_writes_no_audit_record_and_no_change(backend, store):
    store.insert(row("a1"), AuditEntry("Enroll", "t", "op"))
    with pytest.raises(backend.integrity_errors()):
        store.insert(row("a1"), AuditEntry("Enroll", "t", "op"))
    assert len(list(store.audit_records())) == 1
    assert [c.id for c in store.changes_after(0)] == [1]


def test_audit_chain_verifies_and_names_each_tampering(backend, store):
    for i in range(6):
        store.record(AuditEntry("Verify", "t", "panel", subject_id=f"s{i}", decision="MATCH"))
    assert verify_chain(AUDIT_KEY, store.audit_records()) == []
    assert verify_chain(b"x" * 32, store.audit_records())  # another key: nothing verifies
    backend.tamper("UPDATE audit SET decision = 'NO_MATCH' WHERE seq = 3", "DELETE FROM audit WHERE seq = 5")
    problems = {p.seq: p.problem for p in verify_chain(AUDIT_KEY, store.audit_records())}
    assert "edited" in problems[3] and "deleted" in problems[6]
    assert 1 not in problems and 2 not in problems


def test_change_feed_records_every_template_change_in_order(store):
    assert store.change_head() == 0 and store.changes_after(0) == []
    store.insert(row("a1"), AuditEntry("Enroll", "t", "op"))
    store.insert(row("b1", "bob"), AuditEntry("Enroll", "t", "op"))
    store.record(AuditEntry("Verify", "t", "panel"))  # not a template change
    store.revoke("t", ["a1", "missing"], "left", AuditEntry("Revoke", "t", "op"))
    store.reissue("b1", row("b2", "bob"), "new samples", AuditEntry("Reissue", "t", "op"))
    store.reissue("b1", row("b3", "bob"), "again", AuditEntry("Reissue", "t", "op"))  # refused: no entry
    feed = store.changes_after(0)
    assert [(c.id, c.kind, c.row.template_id) for c in feed] == [
        (1, ADD, "a1"), (2, ADD, "b1"), (3, REMOVE, "a1"), (4, REMOVE, "b1"), (5, ADD, "b2")]
    # Each entry carries the template's row as it is now.
    assert [c.row.status for c in feed] == [REVOKED, REVOKED, REVOKED, REVOKED, LIVE]
    assert store.change_head() == 5
    assert [c.id for c in store.changes_after(3)] == [4, 5]
    assert [c.id for c in store.changes_after(0, limit=2)] == [1, 2]


def test_pruning_keeps_ids_increasing(store):
    for template_id in ("a1", "a2", "a3"):
        store.insert(row(template_id), AuditEntry("Enroll", "t", "op"))
    assert store.prune_changes(older_than_s=-60) == 2  # everything is "old"; the newest stays
    store.insert(row("a4"), AuditEntry("Enroll", "t", "op"))
    assert [c.id for c in store.changes_after(0)] == [3, 4]


def test_a_running_replica_prunes_the_feed_on_schedule(store):
    from vault.replication import IndexSync

    for template_id in ("a1", "a2", "a3"):
        store.insert(row(template_id), AuditEntry("Enroll", "t", "op"))
    sync = IndexSync(store, lambda kind, r: None, interval_s=0.01, keep_changes_s=-60, prune_every_s=0.01)
    sync.start()
    try:
        deadline = time.monotonic() + 10
        while sync.pruned < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sync.stop()
    assert sync.pruned == 2 and [c.id for c in store.changes_after(0)] == [3]


def test_tokens_are_stored_with_their_audit_records(store):
    from vault.access.tokens import TokenRow

    store.insert_token(TokenRow("id1", "t", "panel", "door", "hmac-sha256:00", 1.0), AuditEntry("CreateToken", "t", "op"))
    store.insert_token(TokenRow("id2", "u", "admin", "root", "hmac-sha256:00", 2.0), AuditEntry("CreateToken", "u", "op"))
    assert [t.token_id for t in store.tokens("t")] == ["id1"] and store.token("id2").tenant == "u"
    assert not store.revoke_token("u", "id1", 3.0, AuditEntry("RevokeToken", "u", "op"))  # another tenant's
    assert store.revoke_token("t", "id1", 3.0, AuditEntry("RevokeToken", "t", "op"))
    assert not store.revoke_token("t", "id1", 4.0, AuditEntry("RevokeToken", "t", "op"))  # already revoked
    assert store.token("id1").revoked_at == 3.0 and store.token("nope") is None
    assert [r.entry.rpc for r in store.audit_records()] == ["CreateToken", "CreateToken", "RevokeToken"]


def test_writers_on_two_connections_keep_one_chain_and_one_feed(backend):
    """Two store objects stand for two replicas: only the database serialises them (for
    PostgreSQL, the advisory lock), not the in-process lock each object has."""
    first, second = backend.open(), backend.open()
    errors = []

    def write(s, name):
        try:
            for i in range(15):
                s.insert(row(f"{name}{i}", subject=name), AuditEntry("Enroll", "t", name))
                s.record(AuditEntry("Verify", "t", name))
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(s, n)) for s, n in ((first, "x"), (second, "y"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        records = list(first.audit_records())
        assert len(records) == 60 and verify_chain(AUDIT_KEY, records) == []
        feed = second.changes_after(0)
        assert [c.id for c in feed] == list(range(1, 31))
        assert {c.row.template_id for c in feed} == {f"{n}{i}" for n in "xy" for i in range(15)}
    finally:
        first.close()
        second.close()


def test_listener_wakes_on_a_change_from_another_connection(backend):
    writer, follower = backend.open(), backend.open()
    listener = follower.change_listener()
    try:
        writer.insert(row("a1"), AuditEntry("Enroll", "t", "op"))
        started = time.monotonic()
        woken = listener.wait(timeout=5.0)
        if backend.name == "postgres":
            assert woken and time.monotonic() - started < 5.0
        else:  # no notifications: the follower polls
            assert not woken
        assert [c.row.template_id for c in follower.changes_after(0)] == ["a1"]
    finally:
        listener.close()
        writer.close()
        follower.close()


def test_database_file_is_private(tmp_path):
    open_store(f"sqlite:///{tmp_path / 'vault.db'}", AUDIT_KEY).close()
    assert (tmp_path / "vault.db").stat().st_mode & 0o077 == 0


@pytest.mark.postgres
def test_cut_connections_are_replaced_and_a_lost_store_answers_unavailable():
    """Issue 16: after the server cut the vault's connections (pg_terminate_backend), the next call
    works; a store that cannot be reached raises StoreUnavailable (gRPC UNAVAILABLE, retryable)."""
    import psycopg

    from benchmarks.postgres_scratch import scratch_schema
    from vault.exceptions import StoreUnavailable

    admin_url = postgres_admin_url()
    with scratch_schema(admin_url, prefix="vault_test") as url:
        store = open_store(url + "&application_name=vault_cut_test", AUDIT_KEY)
        try:
            store.insert(row("a1"), AuditEntry("Enroll", "t", "op"))
            with psycopg.connect(admin_url, autocommit=True) as admin:
                cut = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                    "WHERE application_name = 'vault_cut_test'").fetchone()[0]
            assert cut >= 1
            assert store.get("t", "a1").template_id == "a1"  # a fresh connection, no error
            store._pool.close()  # the store is gone for this process
            with pytest.raises(StoreUnavailable, match="retry"):
                store.get("t", "a1")
        finally:
            store.close()



def test_one_storage_stack_implements_every_role_and_the_ledger_shares_its_connections(backend, tmp_path):
    """Templates, tokens, change feed, attempts, audit and backups: each a small protocol, all of
    them implemented by SqlStore on either backend; the shred ledger opens its database through the
    same connection handling (vault.store.connections)."""
    from vault.custody.keys import LocalKeyFile
    from vault.custody.shredding import open_ledger
    from vault.store import base
    from vault.store.connections import PostgresDatabase, SqliteDatabase

    store = backend.open()
    try:
        for role in (base.Templates, base.Tokens, base.ChangeFeed, base.Attempts, base.AuditTrail, base.Backups,
                     base.TemplateStore):
            assert isinstance(store, role), role.__name__
        assert isinstance(store.database, PostgresDatabase if backend.name == "postgres" else SqliteDatabase)
    finally:
        store.close()
    postgres = backend.name == "postgres"
    ledger = open_ledger(backend.url if postgres else tmp_path / "keys.json.shred.db", LocalKeyFile(tmp_path / "keys.json"))
    try:
        assert isinstance(ledger._database, PostgresDatabase if postgres else SqliteDatabase)
        ledger.put("t1", "acme", b"s" * 32)
        assert ledger.secrets(["t1"]) == {"t1": b"s" * 32}
        assert postgres or ledger._database.path.stat().st_mode & 0o777 == 0o600
    finally:
        ledger.close()


def test_replicas_share_one_lockout_and_count_attempts_in_flight(backend):
    """Issue 14, finding 6: two replicas of one store count the same attempts, so an attacker gets
    the limit, not twice it, and tries in flight count."""
    from vault.access.lockout import PER_SUBJECT, FailureLimiter, Limits, LockedOut

    limits = Limits(per_subject=3, per_client=10, window_s=60, lockout_s=60)
    now = [1000.0]
    first, second = backend.open(), backend.open()
    try:
        a, b = (FailureLimiter(s, limits, clock=lambda: now[0]) for s in (first, second))
        for limiter in (a, b, a):  # three tries in flight at once, over both replicas
            limiter.begin("t", "door", "ana")
        with pytest.raises(LockedOut, match="in flight"):
            b.begin("t", "door", "ana")
        assert [limiter.end("t", "door", "ana", matched=False) for limiter in (a, b, a)] == [(), (), (PER_SUBJECT,)]
        with pytest.raises(LockedOut, match="locked for"):
            b.begin("t", "door", "ana")
        b.begin("t", "door", "bob")  # another person, same door: still open
        b.end("t", "door", "bob", matched=True)
        now[0] += 61  # the lockout ends
        a.begin("t", "door", "ana")
        assert a.end("t", "door", "ana", matched=True) == ()
    finally:
        first.close()
        second.close()
