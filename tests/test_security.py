"""The security boundary over real mutual TLS on loopback, with certificates made by `vault pki`."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys

import grpc
import pytest

from tests.conftest import ROOT, TEST_PASSPHRASE, read, start_tls_server
from vault.custody import pki
from vault_client.v1 import vault_pb2 as pb
from vault_client.v1 import vault_pb2_grpc

TENANTS = ("acme", "globex")
ROLES = ("panel", "enroller", "auditor", "admin")


def orl(subject: str, image: int) -> pb.Sample:
    return pb.Sample(image=read("face", "orl", subject, f"{image}.pgm"))


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki") / "pki"
    pki.init_ca(folder)
    pki.issue(folder, "server", server_hosts=["localhost", "127.0.0.1"])
    for tenant in TENANTS:
        for role in ROLES:
            pki.issue(folder, f"{tenant}-{role}", tenant=tenant, role=role)
    return folder


@pytest.fixture(scope="module")
def tls_server(pki_dir, tmp_path_factory):
    server = start_tls_server(pki_dir, tmp_path_factory.mktemp("tls"), "vault", "--max-failures-per-subject", "1000",
                              "--max-failures-per-client", "1000")
    yield server
    server.stop()


class Client:
    def __init__(self, port: int, folder, identity: str | None, token: str | None = None, ca=None):
        ca_pem = (ca or folder / "ca.crt").read_bytes()
        if identity:
            creds = grpc.ssl_channel_credentials(ca_pem, (folder / f"{identity}.key").read_bytes(),
                                                 (folder / f"{identity}.crt").read_bytes())
        else:
            creds = grpc.ssl_channel_credentials(ca_pem)
        self.channel = grpc.secure_channel(f"localhost:{port}", creds)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.vault = vault_pb2_grpc.VaultStub(self.channel)
        self.admin = vault_pb2_grpc.AdminStub(self.channel)
        self.audit = vault_pb2_grpc.AuditStub(self.channel)

    def call(self, service: str, method: str, request, **kw):
        result = getattr(getattr(self, service), method)(request, metadata=self.metadata, timeout=60, **kw)
        return list(result) if method == "ReadAudit" else result


def code_of(fn) -> grpc.StatusCode:
    try:
        fn()
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()


# Cheap requests: authorisation is checked before anything else, and these fail validation
# (or succeed) without extraction work.
CALLS = {
    ("vault", "Enroll"): pb.EnrollRequest(subject_id="x", modality=pb.FACE),
    ("vault", "Reissue"): pb.ReissueRequest(template_id="unknown"),
    ("vault", "Verify"): pb.VerifyRequest(subject_id="x"),
    ("vault", "Identify"): pb.IdentifyRequest(modality=pb.FACE),
    ("vault", "Revoke"): pb.RevokeRequest(template_id="unknown"),
    ("vault", "ListTemplates"): pb.ListTemplatesRequest(),
    ("admin", "CreateToken"): pb.CreateTokenRequest(role="nobody", name="x"),
    ("admin", "ListTokens"): pb.ListTokensRequest(),
    ("admin", "RevokeToken"): pb.RevokeTokenRequest(token_id="unknown"),
    ("admin", "KeyStatus"): pb.KeyStatusRequest(),
    ("audit", "ReadAudit"): pb.ReadAuditRequest(limit=1),
    ("audit", "VerifyAudit"): pb.VerifyAuditRequest(),
}
ALLOWED = {
    "Enroll": {"enroller"}, "Reissue": {"enroller"}, "Verify": {"panel"}, "Identify": {"panel"},
    "Revoke": {"auditor"}, "ListTemplates": {"enroller", "auditor"}, "CreateToken": {"admin"},
    "ListTokens": {"admin"}, "RevokeToken": {"admin"}, "KeyStatus": {"admin", "auditor"},
    "ReadAudit": {"auditor"}, "VerifyAudit": {"auditor"},
}


@pytest.mark.parametrize("role", ROLES)
def test_every_rpc_checks_the_role(tls_server, pki_dir, role):
    client = Client(tls_server.port, pki_dir, f"acme-{role}")
    for (service, method), request in CALLS.items():
        code = code_of(lambda: client.call(service, method, request))
        if role in ALLOWED[method]:
            assert code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), (role, method, code)
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (role, method, code)


def test_other_tenants_templates_behave_like_unknown_ones(tls_server, pki_dir):
    acme_enroller = Client(tls_server.port, pki_dir, "acme-enroller")
    template = acme_enroller.call("vault", "Enroll", pb.EnrollRequest(
        subject_id="alice", modality=pb.FACE, samples=[orl("s1", 1), orl("s1", 3)])).template_id
    acme_panel = Client(tls_server.port, pki_dir, "acme-panel")
    assert acme_panel.call("vault", "Verify", pb.VerifyRequest(template_id=template, probe=orl("s1", 5))).decision == pb.MATCH

    globex = {role: Client(tls_server.port, pki_dir, f"globex-{role}") for role in ROLES}
    for claim in ({"template_id": template}, {"subject_id": "alice", "modality": pb.FACE}):
        assert globex["panel"].call("vault", "Verify", pb.VerifyRequest(probe=orl("s1", 5), **claim)).decision == pb.NO_MATCH
    assert not globex["panel"].call("vault", "Identify", pb.IdentifyRequest(modality=pb.FACE, probe=orl("s1", 6), max_candidates=5)).candidates
    assert not globex["enroller"].call("vault", "ListTemplates", pb.ListTemplatesRequest(include_revoked=True)).templates

    def error(fn):
        with pytest.raises(grpc.RpcError) as caught:
            fn()
        return caught.value.code(), caught.value.details()

    other = error(lambda: globex["auditor"].call("vault", "Revoke", pb.RevokeRequest(template_id=template)))
    unknown = error(lambda: globex["auditor"].call("vault", "Revoke", pb.RevokeRequest(template_id="f" * 32)))
    assert other == unknown and other[0] == grpc.StatusCode.NOT_FOUND
    other = error(lambda: globex["enroller"].call("vault", "Reissue", pb.ReissueRequest(template_id=template, samples=[orl("s1", 2)])))
    unknown = error(lambda: globex["enroller"].call("vault", "Reissue", pb.ReissueRequest(template_id="f" * 32, samples=[orl("s1", 2)])))
    assert other == unknown and other[0] == grpc.StatusCode.NOT_FOUND
    # ... and acme's template is untouched.
    assert acme_panel.call("vault", "Verify", pb.VerifyRequest(template_id=template, probe=orl("s1", 5))).decision == pb.MATCH


def test_missing_wrong_ca_and_expired_certificates_are_refused(tls_server, pki_dir, tmp_path):
    no_cert = Client(tls_server.port, pki_dir, None)
    assert code_of(lambda: no_cert.call("vault", "ListTemplates", pb.ListTemplatesRequest())) == grpc.StatusCode.UNAVAILABLE

    rogue = tmp_path / "rogue"
    pki.init_ca(rogue)
    pki.issue(rogue, "acme-auditor", tenant="acme", role="auditor")
    wrong_ca = Client(tls_server.port, rogue, "acme-auditor", ca=pki_dir / "ca.crt")
    assert code_of(lambda: wrong_ca.call("vault", "ListTemplates", pb.ListTemplatesRequest())) == grpc.StatusCode.UNAVAILABLE

    expired_at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10)
    pki.issue(pki_dir, "acme-expired", tenant="acme", role="auditor", days=2, not_before=expired_at)
    expired = Client(tls_server.port, pki_dir, "acme-expired")
    assert code_of(lambda: expired.call("vault", "ListTemplates", pb.ListTemplatesRequest())) == grpc.StatusCode.UNAVAILABLE


def test_tokens_are_hashed_listed_without_secret_and_revocable(tls_server, pki_dir):
    admin = Client(tls_server.port, pki_dir, "acme-admin")
    created = admin.call("admin", "CreateToken", pb.CreateTokenRequest(role="panel", name="gate-3"))
    token, token_id = created.token, created.info.token_id
    secret = token.split(".", 1)[1]
    listed = admin.call("admin", "ListTokens", pb.ListTokensRequest()).tokens
    assert [(t.token_id, t.role, t.name) for t in listed if t.token_id == token_id] == [(token_id, "panel", "gate-3")]
    assert secret not in str(listed)
    stored = b"".join(p.read_bytes() for p in tls_server.state_dir.glob("vault.db*"))
    assert token_id.encode() in stored and secret.encode() not in stored and b"hmac-sha256:" in stored

    # The token's identity replaces the certificate's (an enroller certificate carrying a panel token).
    as_panel = Client(tls_server.port, pki_dir, "acme-enroller", token=token)
    assert code_of(lambda: as_panel.call("vault", "Identify", pb.IdentifyRequest(modality=pb.FACE, probe=orl("s9", 1)))) == grpc.StatusCode.OK
    assert code_of(lambda: as_panel.call("vault", "ListTemplates", pb.ListTemplatesRequest())) == grpc.StatusCode.PERMISSION_DENIED
    bad = Client(tls_server.port, pki_dir, "acme-enroller", token=token[:-2] + "xx")
    assert code_of(lambda: bad.call("vault", "Identify", pb.IdentifyRequest(modality=pb.FACE, probe=orl("s9", 1)))) == grpc.StatusCode.UNAUTHENTICATED

    admin.call("admin", "RevokeToken", pb.RevokeTokenRequest(token_id=token_id))
    assert code_of(lambda: as_panel.call("vault", "Identify", pb.IdentifyRequest(modality=pb.FACE, probe=orl("s9", 1)))) == grpc.StatusCode.UNAUTHENTICATED
    # Another tenant's admin cannot see or revoke it.
    globex_admin = Client(tls_server.port, pki_dir, "globex-admin")
    assert token_id not in [t.token_id for t in globex_admin.call("admin", "ListTokens", pb.ListTokensRequest()).tokens]


def test_audit_trail_is_readable_per_tenant_and_verifies(tls_server, pki_dir):
    auditor = Client(tls_server.port, pki_dir, "acme-auditor")
    records = auditor.call("audit", "ReadAudit", pb.ReadAuditRequest())
    assert records and all(r.rpc for r in records)
    assert [r.seq for r in records] == sorted(r.seq for r in records)
    globex_records = Client(tls_server.port, pki_dir, "globex-auditor").call("audit", "ReadAudit", pb.ReadAuditRequest())
    assert not {r.decision_id for r in records} & {r.decision_id for r in globex_records}
    result = auditor.call("audit", "VerifyAudit", pb.VerifyAuditRequest())
    assert result.intact and result.records >= len(records)


def test_key_rotation_identify_covers_every_version(tls_server, pki_dir):
    enroller = Client(tls_server.port, pki_dir, "globex-enroller")
    panel = Client(tls_server.port, pki_dir, "globex-panel")
    admin = Client(tls_server.port, pki_dir, "globex-admin")
    old = enroller.call("vault", "Enroll", pb.EnrollRequest(subject_id="bob", modality=pb.FACE, samples=[orl("s2", 1)]))
    version = admin.call("admin", "RotateKey", pb.RotateKeyRequest()).key_version
    assert version == old.key_version + 1
    new = enroller.call("vault", "Enroll", pb.EnrollRequest(subject_id="carol", modality=pb.FACE, samples=[orl("s3", 1)]))
    assert new.key_version == version
    for subject, probe in (("bob", orl("s2", 5)), ("carol", orl("s3", 5))):
        found = panel.call("vault", "Identify", pb.IdentifyRequest(modality=pb.FACE, probe=probe, max_candidates=1)).candidates
        assert [c.subject_id for c in found] == [subject]
    status = admin.call("admin", "KeyStatus", pb.KeyStatusRequest())
    assert status.current_key_version == version and "bob" in status.subjects_on_old_versions
    assert "carol" not in status.subjects_on_old_versions
    stale = enroller.call("vault", "ListTemplates", pb.ListTemplatesRequest(only_old_key_versions=True)).templates
    assert [t.subject_id for t in stale] == ["bob"]


def test_lockout_after_repeated_failures(pki_dir, tmp_path):
    server = start_tls_server(pki_dir, tmp_path, "lockout", "--max-failures-per-subject", "3")
    try:
        Client(server.port, pki_dir, "acme-enroller").call("vault", "Enroll", pb.EnrollRequest(
            subject_id="dave", modality=pb.FACE, samples=[orl("s4", 1)]))
        panel = Client(server.port, pki_dir, "acme-panel")
        verify = lambda probe: panel.call("vault", "Verify", pb.VerifyRequest(subject_id="dave", modality=pb.FACE, probe=probe))
        assert [verify(orl("s5", i)).decision for i in (1, 2, 3)] == [pb.NO_MATCH] * 3
        with pytest.raises(grpc.RpcError) as locked:
            verify(orl("s4", 5))  # even the genuine finger is refused while locked
        assert locked.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "locked" in locked.value.details()
        # Another subject from the same panel is not locked.
        assert code_of(lambda: panel.call("vault", "Verify", pb.VerifyRequest(subject_id="erin", modality=pb.FACE, probe=orl("s6", 1)))) == grpc.StatusCode.OK
        records = Client(server.port, pki_dir, "acme-auditor").call("audit", "ReadAudit", pb.ReadAuditRequest())
        assert [r.subject_id for r in records if r.decision == "LOCKED_OUT"] == ["dave"]
    finally:
        server.stop()


def test_score_bands_only_for_auditors_when_enabled(tls_server, pki_dir, tmp_path):
    panel = Client(tls_server.port, pki_dir, "acme-panel")
    assert panel.call("vault", "Verify", pb.VerifyRequest(subject_id="alice", modality=pb.FACE, probe=orl("s1", 5))).score_band == 0
    auditor = Client(tls_server.port, pki_dir, "acme-auditor")
    assert code_of(lambda: auditor.call("vault", "Verify", pb.VerifyRequest(subject_id="alice", modality=pb.FACE, probe=orl("s1", 5)))) == grpc.StatusCode.PERMISSION_DENIED
    server = start_tls_server(pki_dir, tmp_path, "bands", "--auditor-score-bands")
    try:
        Client(server.port, pki_dir, "acme-enroller").call("vault", "Enroll", pb.EnrollRequest(subject_id="fay", modality=pb.FACE, samples=[orl("s7", 1)]))
        auditor = Client(server.port, pki_dir, "acme-auditor")
        genuine = auditor.call("vault", "Verify", pb.VerifyRequest(subject_id="fay", modality=pb.FACE, probe=orl("s7", 5)))
        impostor = auditor.call("vault", "Verify", pb.VerifyRequest(subject_id="fay", modality=pb.FACE, probe=orl("s8", 5)))
        # A band only with a MATCH: a NO_MATCH's band would be a gradient to climb (issue 24, finding 5).
        assert (impostor.decision, impostor.score_band) == (pb.NO_MATCH, 0)
        assert genuine.decision == pb.MATCH and 1 <= genuine.score_band <= 10
        panel = Client(server.port, pki_dir, "acme-panel")
        assert panel.call("vault", "Verify", pb.VerifyRequest(subject_id="fay", modality=pb.FACE, probe=orl("s7", 5))).score_band == 0
    finally:
        server.stop()


def test_tampered_audit_and_swapped_sealed_rows_are_detected(pki_dir, tmp_path):
    server = start_tls_server(pki_dir, tmp_path, "tamper")
    enroller = Client(server.port, pki_dir, "acme-enroller")
    ids = {s: enroller.call("vault", "Enroll", pb.EnrollRequest(subject_id=s, modality=pb.FACE, samples=[orl(s, 1)])).template_id
           for s in ("s10", "s11", "s12")}
    server.stop()

    db = sqlite3.connect(server.state_dir / "vault.db")
    (salt_a, sealed_a), = db.execute("SELECT salt, sealed FROM templates WHERE template_id = ?", (ids["s10"],))
    (salt_b, sealed_b), = db.execute("SELECT salt, sealed FROM templates WHERE template_id = ?", (ids["s11"],))
    db.execute("UPDATE templates SET salt = ?, sealed = ? WHERE template_id = ?", (salt_b, sealed_b, ids["s10"]))
    db.execute("UPDATE templates SET salt = ?, sealed = ? WHERE template_id = ?", (salt_a, sealed_a, ids["s11"]))
    db.execute("UPDATE audit SET decision = 'forged' WHERE seq = 2")
    db.commit()
    db.close()

    offline = subprocess.run([sys.executable, "-m", "vault.cli", "audit", "verify", "--state-dir", str(server.state_dir),
                              "--key-file", str(server.key_file)],
                             capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "VAULT_KEY_PASSPHRASE": TEST_PASSPHRASE})
    assert offline.returncode == 4 and "seq 2" in offline.stdout

    server.start()
    try:
        panel = Client(server.port, pki_dir, "acme-panel")
        decisions = {s: panel.call("vault", "Verify", pb.VerifyRequest(subject_id=s, modality=pb.FACE, probe=orl(s, 5))).decision
                     for s in ("s10", "s11", "s12")}
        assert decisions == {"s10": pb.NO_MATCH, "s11": pb.NO_MATCH, "s12": pb.MATCH}
        assert "2 templates failed authentication" in server.log()
        result = Client(server.port, pki_dir, "acme-auditor").call("audit", "VerifyAudit", pb.VerifyAuditRequest())
        assert not result.intact and [p.seq for p in result.problems] == [2]
    finally:
        server.stop()


@pytest.mark.parametrize("args, message", [
    ([], "--plaintext"),
    (["--plaintext", "--listen", "0.0.0.0:0"], "loopback only"),
    (["--tls-dir", "{pki}", "--key-file", "{tmp}/keys/keys.json"], "the key file is not sealed"),  # issue 14, finding 1
    (["--tls-dir", "{pki}"], "inside the state directory"),  # the default place is the data's: refused with TLS
])
def test_plaintext_only_on_loopback_and_only_when_asked(tmp_path, pki_dir, args, message):
    args = [a.format(pki=pki_dir, tmp=tmp_path) for a in args]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_KEY_PASSPHRASE")}
    result = subprocess.run([sys.executable, "-m", "vault.cli", "serve", "--state-dir", str(tmp_path / "s"), *args],
                            capture_output=True, text=True, cwd=ROOT, timeout=60, env=environment)
    assert result.returncode == 2 and message in result.stderr
