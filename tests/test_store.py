"""The SQLite store: migrations, atomic changes with their audit records, the audit chain."""

import sqlite3
import time

import pytest

from vault.audit import AuditEntry, verify_chain
from vault.store import LIVE, REVOKED, TemplateRow, open_store
from vault.store.base import MIGRATIONS

AUDIT_KEY = b"k" * 32


def row(template_id, subject="alice", tenant="t"):
    return TemplateRow(template_id, tenant, subject, 1, 0, "face-iom-v1", 1, b"s" * 16, b"sealed", 1, time.time())


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'vault.db'}", AUDIT_KEY)
    yield s
    s.close()


def test_migrations_recorded_and_idempotent(tmp_path):
    path = tmp_path / "vault.db"
    open_store(str(path), AUDIT_KEY).close()
    again = open_store(str(path), AUDIT_KEY)
    assert again.schema_version() == len(MIGRATIONS)
    again.close()


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


def test_failed_insert_writes_no_audit_record(store):
    store.insert(row("a1"), AuditEntry("Enroll", "t", "op"))
    with pytest.raises(sqlite3.IntegrityError):
        store.insert(row("a1"), AuditEntry("Enroll", "t", "op"))
    assert len(list(store.audit_records())) == 1


def test_audit_chain_verifies_and_names_each_tampering(tmp_path, store):
    for i in range(6):
        store.record(AuditEntry("Verify", "t", "panel", subject_id=f"s{i}", decision="MATCH"))
    assert verify_chain(AUDIT_KEY, store.audit_records()) == []
    assert verify_chain(b"x" * 32, store.audit_records())  # another key: nothing verifies
    db = sqlite3.connect(tmp_path / "vault.db")
    db.execute("UPDATE audit SET decision = 'NO_MATCH' WHERE seq = 3")
    db.execute("DELETE FROM audit WHERE seq = 5")
    db.commit()
    problems = {p.seq: p.problem for p in verify_chain(AUDIT_KEY, store.audit_records())}
    assert "edited" in problems[3] and "deleted" in problems[6]
    assert 1 not in problems and 2 not in problems


def test_database_file_is_private(tmp_path, store):
    assert (tmp_path / "vault.db").stat().st_mode & 0o077 == 0
