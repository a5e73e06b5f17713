"""Backup and restore: archives hold sealed rows, token MACs and the audit chain, never keys; a
restore loads either backend, all or nothing; a SQLite vault moves to PostgreSQL through them and
every template still verifies, while a copy restored without the key store matches nothing."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time

import pytest

from tests.conftest import NO_LOCKOUT, ROOT, ServerProcess, deterministic_key_file, read
from tests.test_store import AUDIT_KEY, backend, postgres_admin_url, row  # noqa: F401 (backend: fixture)
from vault.access.audit import AuditEntry, verify_chain
from vault.custody.backup import restore_backup, write_backup
from vault.exceptions import FailedPrecondition, InvalidArgument
from vault.store import open_store
from vault.access.tokens import TokenRow
from vault_client.v1 import vault_pb2 as pb

BACKUP_KEY = b"backup-key-for-tests-only-32-byt"  # what vault.custody.backup.backup_key derives from a key store


def filled(url: str):
    store = open_store(url, AUDIT_KEY)
    for i in range(5):
        store.insert(row(f"t{i}", subject=f"s{i}"), AuditEntry("Enroll", "t", "hr", subject_id=f"s{i}"))
    store.revoke("t", ["t1"], "left", AuditEntry("Revoke", "t", "auditor"))
    store.insert_token(TokenRow("tok1", "t", "panel", "door-1", "ab" * 32, time.time()),
                       AuditEntry("CreateToken", "t", "admin"))
    return store


def test_a_backup_restores_every_row_into_either_backend(tmp_path, backend):  # noqa: F811
    source = filled(f"sqlite:///{tmp_path / 'source.db'}")
    summary = write_backup(source, tmp_path / "vault.custody.backup", BACKUP_KEY)
    assert summary.counts == {"templates": 5, "tokens": 1, "audit": 7}
    target = backend.open()
    try:
        assert restore_backup(tmp_path / "vault.custody.backup", target, BACKUP_KEY).counts == summary.counts
        assert target.list("t", include_revoked=True) == source.list("t", include_revoked=True)
        assert target.tokens("t") == source.tokens("t")
        restored_audit = list(target.audit_records())
        assert restored_audit == list(source.audit_records())
        assert verify_chain(AUDIT_KEY, restored_audit) == []
        target.record(AuditEntry("Verify", "t", "door"))  # the chain goes on where the backup ended
        assert verify_chain(AUDIT_KEY, list(target.audit_records())) == []
        with pytest.raises(FailedPrecondition):
            restore_backup(tmp_path / "vault.custody.backup", target, BACKUP_KEY)  # never merged into a vault that holds data
    finally:
        target.close()
        source.close()


def test_a_damaged_archive_is_refused_and_leaves_the_store_empty(tmp_path):
    source = filled(f"sqlite:///{tmp_path / 'source.db'}")
    write_backup(source, tmp_path / "good.backup", BACKUP_KEY)
    source.close()
    lines = gzip.open(tmp_path / "good.backup", "rt").read().splitlines(keepends=True)
    edited = [line.replace('"s3"', '"s9"') for line in lines]
    damaged = {"truncated.backup": lines[:-3], "edited.backup": edited, "garbage.backup": ["{not json\n"]}
    for name, content in damaged.items():
        with gzip.open(tmp_path / name, "wt") as out:
            out.writelines(content)
    (tmp_path / "plain.backup").write_bytes(b"not gzip at all")
    target = open_store(f"sqlite:///{tmp_path / 'target.db'}")
    for name in [*damaged, "plain.backup"]:
        with pytest.raises(InvalidArgument):
            restore_backup(tmp_path / name, target, BACKUP_KEY)
        assert target.list("t", include_revoked=True) == [] and list(target.audit_records()) == []
    target.close()


def test_a_sqlite_vault_moves_to_postgresql_and_every_template_verifies(tmp_path):
    from benchmarks.postgres_scratch import scratch_schema

    state = tmp_path / "sqlite-vault"
    keys = deterministic_key_file(state / "keys.json")
    server = ServerProcess(state, *NO_LOCKOUT).start()
    people = {s: read("face", "orl", s, "1.pgm") for s in ("s1", "s4", "s7")}
    try:
        vault = server.stub()
        for subject, image in people.items():
            vault.Enroll(pb.EnrollRequest(subject_id=subject, modality=pb.FACE, samples=[pb.Sample(image=image)]))
        cli = [sys.executable, "-m", "vault.cli"]
        backup = subprocess.run([*cli, "backup", "--state-dir", str(state), str(tmp_path / "vault.custody.backup")],
                                capture_output=True, text=True, cwd=ROOT)  # online: the server keeps running
        assert backup.returncode == 0, backup.stderr
        assert "3 templates" in backup.stdout and "no key material" in backup.stdout
        archive = gzip.open(tmp_path / "vault.custody.backup", "rt").read()
        secrets = list(strings_in(json.loads(keys.read_text())["payload"]))
        # the tenant's and audit secrets and the shred ledger's epoch keys: none is in the archive
        assert len(secrets) >= 3 and not [s for s in secrets if len(s) >= 32 and s in archive]
    finally:
        server.stop()

    def probe(subject):
        # 3.pgm: a three-person gallery is judged mostly against the normalisation's prior
        # (vault.templates.normalisation), which is strict; the move, not the operating point, is under test
        return pb.Sample(image=read("face", "orl", subject, "3.pgm"))

    with scratch_schema(postgres_admin_url(), prefix="vault_test") as url:
        restore = subprocess.run([*cli, "restore", "--store", url, "--key-file", str(keys), str(tmp_path / "vault.custody.backup")],
                                 capture_output=True, text=True, cwd=ROOT)
        assert restore.returncode == 0, restore.stderr
        moved = ServerProcess(tmp_path / "pg-vault", "--store", url, "--key-file", str(keys), *NO_LOCKOUT).start()
        try:
            decisions = {s: moved.stub().Verify(pb.VerifyRequest(subject_id=s, modality=pb.FACE, probe=probe(s))).decision
                         for s in people}
            assert decisions == dict.fromkeys(people, pb.MATCH)
            from vault_client.v1 import vault_pb2_grpc

            audit = vault_pb2_grpc.AuditStub(moved.channel).VerifyAudit(pb.VerifyAuditRequest())
            assert audit.intact and audit.records >= len(people) * 2
        finally:
            moved.stop()
        # The same archive without the key store: every row fails to open, and a server on it
        # refuses to start rather than serve nobody (issue 24, finding 8).
        thief = ServerProcess(tmp_path / "thief", "--store", url, *NO_LOCKOUT)
        with pytest.raises(RuntimeError, match="exited with 2"):
            thief.start()
        assert "excluded from matching" in thief.log() and "none of them opens" in thief.log()


def strings_in(tree):
    """Every string value of a JSON tree (the key file's base64 secrets among them)."""
    if isinstance(tree, dict):
        for value in tree.values():
            yield from strings_in(value)
    elif isinstance(tree, str):
        yield tree
