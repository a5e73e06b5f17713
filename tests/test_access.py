"""Fast tier: who may call what. The access policy, tokens and lockout directly, and the one
interceptor (vault.rpc.interceptor) on a real loopback gRPC server in this process, in front of the
real servicers and core (fixed vectors instead of dlib: tests/doubles.py)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from conftest import deterministic_key_file
from doubles import VectorExtractor, sample_bytes
from vault.administration import Administration
from vault.access.audit import AuditEntry
from vault.access.auth import ADMIN, AUDITOR, ENROLLER, PANEL, AccessPolicy, Authenticator, Identity, LOCAL_OPERATOR
from vault.core import Vault
from vault.exceptions import NotFound, PermissionDenied, Unauthenticated
from vault.custody.keys import LocalKeyFile
from vault.access.lockout import PER_CLIENT, PER_SUBJECT, SPENT, FailureLimiter, Limits, LockedOut
from vault.templates.matching import warm_up
from vault.metrics import Metrics
from vault.templates.profiles import PROFILES
from vault.rpc.interceptor import Gatekeeper
from vault.rpc.servicers import AdminServicer, AuditServicer, VaultServicer
from vault.server import SERVICE_NAMES
from vault.store import open_store
from vault.access.tokens import TokenRegistry
from vault_client.v1 import vault_pb2 as pb
from vault_client.v1 import vault_pb2_grpc


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture
def store(tmp_path):
    keys = LocalKeyFile(deterministic_key_file(tmp_path / "keys.json"))
    store = open_store(f"sqlite:///{tmp_path / 'vault.db'}", keys.audit_key())
    store.keys = keys
    yield store
    store.close()


# -- rules, directly ---------------------------------------------------------------------------------
def test_each_role_gets_only_its_methods():
    policy = AccessPolicy()
    allowed = {role: {m for m in policy.allowed if role in policy.allowed[m]} for role in (PANEL, ENROLLER, AUDITOR, ADMIN)}
    assert allowed[PANEL] == {"Verify", "Identify"}
    assert allowed[ENROLLER] == {"Enroll", "Reissue", "ListTemplates"}
    assert allowed[AUDITOR] == {"Revoke", "ListTemplates", "ReadAudit", "VerifyAudit", "KeyStatus"}
    assert allowed[ADMIN] == {"CreateToken", "ListTokens", "RevokeToken", "RotateKey", "DestroyKeyVersion", "KeyStatus"}
    with pytest.raises(PermissionDenied):
        policy.authorize(Identity("t", frozenset({PANEL}), "p"), "NoSuchMethod")
    with pytest.raises(PermissionDenied):
        policy.authorize(Identity("t", frozenset({AUDITOR}), "a"), "Verify")
    AccessPolicy(auditor_score_bands=True).authorize(Identity("t", frozenset({AUDITOR}), "a"), "Verify")


def test_tokens_authenticate_until_revoked(store):
    tokens = TokenRegistry(store, store.keys.token_key())
    token, info = tokens.create("acme", PANEL, "door-1", AuditEntry("CreateToken", "acme", "admin"))
    assert tokens.authenticate(token) == info
    for forged in (token[:-2] + "xx", "vt_" + info.token_id + ".", "vt_nope.secret", "bearer", "vt_" + "a" * 300):
        with pytest.raises(Unauthenticated, match="invalid or revoked token"):
            tokens.authenticate(forged)
    assert [t.token_id for t in tokens.list("acme")] == [info.token_id] and tokens.list("other") == []
    with pytest.raises(NotFound):
        tokens.revoke("other", info.token_id, AuditEntry("RevokeToken", "other", "admin"))
    tokens.revoke("acme", info.token_id, AuditEntry("RevokeToken", "acme", "admin"))
    with pytest.raises(Unauthenticated):
        tokens.authenticate(token)
    assert [r.entry.rpc for r in store.audit_records("acme")] == ["CreateToken", "RevokeToken"]


def test_authenticator_without_tls_is_the_local_operator_unless_a_token_says_otherwise(store):
    tokens = TokenRegistry(store, store.keys.token_key())
    token, _ = tokens.create("acme", PANEL, "door-1", AuditEntry("CreateToken", "acme", "admin"))
    plaintext = Authenticator(tls=False, tokens=tokens)
    assert plaintext.identify(None, None) == LOCAL_OPERATOR
    assert plaintext.identify(token, None).tenant == "acme"
    with pytest.raises(Unauthenticated):
        Authenticator(tls=True, tokens=tokens).identify(None, None)


def test_lockout_counts_per_subject_and_per_client_and_expires(store):
    """The one lockout rule (vault.store.sql, as production runs it) on a temp SQLite store."""
    now = [0.0]
    limiter = FailureLimiter(store, Limits(per_subject=2, per_client=3, window_s=10, lockout_s=60),
                             clock=lambda: now[0])

    def fail(client: str, subject: str) -> tuple[str, ...]:
        limiter.begin("t", client, subject)
        return limiter.end("t", client, subject, matched=False)

    assert fail("door", "ana") == ()
    assert fail("door", "ana") == (PER_SUBJECT,)
    with pytest.raises(LockedOut, match="this subject"):
        limiter.begin("t", "door", "ana")
    assert fail("door", "bob") == (PER_CLIENT,)  # other subjects still open; the third failure of this client
    with pytest.raises(LockedOut, match="this client"):
        limiter.begin("t", "door")
    limiter.begin("t", "door-2", "ana")  # another client is not affected
    limiter.end("t", "door-2", "ana", matched=None)
    now[0] = 61.0
    limiter.begin("t", "door", "ana")


def test_token_rows_written_in_the_database_do_not_authenticate(store):
    """Issue 14, finding 2: write access to the database grants no token."""
    tokens = TokenRegistry(store, store.keys.token_key())
    admin_token, admin = tokens.create("acme", ADMIN, "root", AuditEntry("CreateToken", "acme", "admin"))
    panel_token, panel = tokens.create("evil", PANEL, "door", AuditEntry("CreateToken", "evil", "admin"))
    with store._transaction() as cur:
        # A copied row for another tenant's admin, with a secret the attacker knows.
        cur.execute("INSERT INTO tokens (token_id, tenant, role, name, secret_hash, created_at) "
                    "SELECT 'forged', 'acme', 'admin', name, secret_hash, created_at FROM tokens WHERE token_id = ?",
                    (panel.token_id,))
        # The attacker's own panel token moved to the victim tenant and promoted.
        cur.execute("UPDATE tokens SET tenant = 'acme', role = 'admin' WHERE token_id = ?", (panel.token_id,))
    for forged in ("vt_forged." + panel_token.split(".", 1)[1], panel_token):
        with pytest.raises(Unauthenticated):
            tokens.authenticate(forged)
    tokens.revoke("acme", admin.token_id, AuditEntry("RevokeToken", "acme", "admin"))
    with store._transaction() as cur:  # un-revoke
        cur.execute("UPDATE tokens SET revoked_at = NULL WHERE token_id = ?", (admin.token_id,))
    with pytest.raises(Unauthenticated):
        tokens.authenticate(admin_token)


def test_a_token_is_refused_with_another_tenants_certificate(store, tmp_path):
    from vault.custody import pki

    pki.init_ca(tmp_path / "pki")
    certificate = pki.issue(tmp_path / "pki", "acme-door", tenant="acme", role=PANEL).read_bytes()
    hardware = pki.issue(tmp_path / "pki", "panel-hw", server_hosts=["panel.local"]).read_bytes()  # no vault identity
    tokens = TokenRegistry(store, store.keys.token_key())
    acme, _ = tokens.create("acme", PANEL, "door", AuditEntry("CreateToken", "acme", "admin"))
    other, _ = tokens.create("other", PANEL, "door", AuditEntry("CreateToken", "other", "admin"))
    tls = Authenticator(tls=True, tokens=tokens)
    assert tls.identify(acme, certificate).tenant == "acme"
    assert tls.identify(other, hardware).tenant == "other"
    with pytest.raises(Unauthenticated, match="another tenant"):
        tls.identify(other, certificate)


def test_spent_counts_for_the_client_only(store):
    """SPENT (an informative answer, a failed extraction) comes out of the client's budget, never
    the subject's: a subject's limit is reached by NO_MATCHes alone."""
    limiter = FailureLimiter(store, Limits(per_subject=2, per_client=4))
    for _ in range(3):
        limiter.begin("t", "door", "ana")
        assert limiter.end("t", "door", "ana", matched=SPENT) == ()
    limiter.begin("t", "door", "ana")  # three spent tries: the subject is still open
    assert limiter.end("t", "door", "ana", matched=SPENT) == (PER_CLIENT,)
    with pytest.raises(LockedOut, match="this client"):
        limiter.begin("t", "door")


def test_concurrent_tries_cannot_pass_the_lockout_limit(store):
    """Issue 14, finding 6: tries in flight count, so 8 at once against a limit of 5 admit 5."""
    limiter = FailureLimiter(store, Limits(per_subject=5, per_client=100))
    admitted = 0
    for _ in range(8):
        try:
            limiter.begin("t", "door", "ana")
            admitted += 1
        except LockedOut:
            pass
    assert admitted == 5
    for _ in range(5):
        limiter.end("t", "door", "ana", matched=False)
    with pytest.raises(LockedOut, match="locked for"):
        limiter.begin("t", "door", "ana")


# -- the interceptor, on a loopback server -------------------------------------------------------------
class SlowExtractor(VectorExtractor):
    async def extract_many(self, modality, samples, require_single_face=False, features=(), client=None):
        await asyncio.sleep(5)
        return await super().extract_many(modality, samples, require_single_face, features)


class BrokenExtractor(VectorExtractor):
    async def extract_many(self, modality, samples, require_single_face=False, features=(), client=None):
        raise RuntimeError("secret internal detail")


async def serve(store, extractor=None, call_timeout_s=120.0):
    """A real gRPC server in this process: (server, channel, metrics, token registry). Its kernels
    are compiled first, as `vault serve` does, so no call pays for that; the default deadline is
    one only a hung call reaches (a busy test machine must not fail a test that is not about time)."""
    await asyncio.to_thread(warm_up, PROFILES.values())
    tokens = TokenRegistry(store, store.keys.token_key())
    core = Vault(store, store.keys, extractor or VectorExtractor(), limiter=FailureLimiter(store, Limits(per_subject=2)))
    metrics = Metrics()
    gatekeeper = Gatekeeper(set(SERVICE_NAMES), Authenticator(tls=False, tokens=tokens), AccessPolicy(), store,
                            metrics, call_timeout_s)
    server = grpc.aio.server(interceptors=[gatekeeper])
    administration = Administration(store.keys, store, tokens, core.identify_capacity)
    vault_pb2_grpc.add_VaultServicer_to_server(VaultServicer(core), server)
    vault_pb2_grpc.add_AdminServicer_to_server(AdminServicer(administration), server)
    vault_pb2_grpc.add_AuditServicer_to_server(AuditServicer(administration), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, grpc.aio.insecure_channel(f"127.0.0.1:{port}"), metrics, tokens


def bearer(token: str):
    return (("authorization", f"Bearer {token}"),)


def face(person: str, shot: int) -> pb.Sample:
    return pb.Sample(image=sample_bytes(person, shot))


def count(metrics: Metrics, rpc: str, code: str) -> float:
    return metrics.registry.get_sample_value("vault_rpc_total", {"rpc": rpc, "code": code}) or 0.0


def test_denials_are_refused_counted_and_audited(store):
    async def main():
        server, channel, metrics, tokens = await serve(store)
        panel, _ = tokens.create("acme", PANEL, "door-1", AuditEntry("CreateToken", "acme", "admin"))
        auditor, _ = tokens.create("acme", AUDITOR, "audit", AuditEntry("CreateToken", "acme", "admin"))
        stub, audit = vault_pb2_grpc.VaultStub(channel), vault_pb2_grpc.AuditStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.Enroll(pb.EnrollRequest(subject_id="a", modality=pb.FACE, samples=[face("a", 1)]),
                              metadata=bearer(panel))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.Verify(pb.VerifyRequest(subject_id="a", modality=pb.FACE, probe=face("a", 1)),
                              metadata=bearer(panel[:-3] + "xyz"))
        assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as streaming:  # server-streaming goes through the same gate
            [r async for r in audit.ReadAudit(pb.ReadAuditRequest(), metadata=bearer(panel))]
        assert streaming.value.code() == grpc.StatusCode.PERMISSION_DENIED
        records = [r async for r in audit.ReadAudit(pb.ReadAuditRequest(), metadata=bearer(auditor))]
        assert [(r.rpc, r.decision, r.actor) for r in records if r.decision == "DENIED"] == [
            ("Enroll", "DENIED", panel.split(".")[0].replace("vt_", "token:")),
            ("ReadAudit", "DENIED", panel.split(".")[0].replace("vt_", "token:"))]
        # The unauthenticated call is in the chain too, under no tenant.
        assert [(r.entry.rpc, r.entry.actor) for r in store.audit_records("")] == [("Verify", "unknown")]
        assert count(metrics, "Enroll", "PERMISSION_DENIED") == 1 and count(metrics, "ReadAudit", "OK") == 1
        await channel.close()
        await server.stop(None)

    run(main())


def test_malformed_requests_deadlines_and_internal_errors_get_clear_statuses(store):
    async def main():
        server, channel, metrics, _ = await serve(store, SlowExtractor(), call_timeout_s=0.2)
        raw = channel.unary_unary("/vault.v1.Vault/Enroll")  # bytes in, bytes out
        with pytest.raises(grpc.aio.AioRpcError) as malformed:
            await raw(b"\xff\xff\xff\xff")
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid Enroll message" in malformed.value.details()
        stub = vault_pb2_grpc.VaultStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as slow:
            await stub.Enroll(pb.EnrollRequest(subject_id="a", modality=pb.FACE, samples=[face("a", 1)]))
        assert slow.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await channel.close()
        await server.stop(None)

        server, channel, metrics, _ = await serve(store, BrokenExtractor())
        with pytest.raises(grpc.aio.AioRpcError) as broken:
            await vault_pb2_grpc.VaultStub(channel).Enroll(
                pb.EnrollRequest(subject_id="a", modality=pb.FACE, samples=[face("a", 1)]))
        assert broken.value.code() == grpc.StatusCode.INTERNAL
        assert "internal error, reference" in broken.value.details() and "secret" not in broken.value.details()
        assert count(metrics, "Enroll", "INTERNAL") == 1
        await channel.close()
        await server.stop(None)

    run(main())


def test_a_call_through_the_gate_reaches_the_core_as_its_caller(store):
    async def main():
        server, channel, metrics, tokens = await serve(store)
        enroller, _ = tokens.create("acme", ENROLLER, "hr", AuditEntry("CreateToken", "acme", "admin"))
        panel, _ = tokens.create("acme", PANEL, "door", AuditEntry("CreateToken", "acme", "admin"))
        stub = vault_pb2_grpc.VaultStub(channel)
        done = await stub.Enroll(pb.EnrollRequest(subject_id="ana", modality=pb.FACE, samples=[face("ana", 1)]),
                                 metadata=bearer(enroller))
        verdict = await stub.Verify(pb.VerifyRequest(template_id=done.template_id, probe=face("ana", 2)),
                                    metadata=bearer(panel))
        local = await stub.Verify(pb.VerifyRequest(template_id=done.template_id, probe=face("ana", 2)))
        assert (verdict.decision, local.decision) == (pb.MATCH, pb.NO_MATCH)  # local operator: tenant "default"
        assert store.get("acme", done.template_id).tenant == "acme"
        await channel.close()
        await server.stop(None)

    run(main())


def test_lockout_and_overload_are_told_apart_by_a_trailer(store):
    async def main():
        server, channel, metrics, tokens = await serve(store)
        stub = vault_pb2_grpc.VaultStub(channel)
        request = pb.VerifyRequest(subject_id="ana", modality=pb.FACE, probe=face("mallory", 1))
        for _ in range(2):
            assert (await stub.Verify(request)).decision == pb.NO_MATCH
        with pytest.raises(grpc.aio.AioRpcError) as locked:
            await stub.Verify(request)
        assert locked.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ("vault-reason", "locked-out") in tuple(locked.value.trailing_metadata())
        await channel.close()
        await server.stop(None)

    run(main())


def test_an_old_key_version_is_destroyed_through_the_admin_service(store):
    async def main():
        server, channel, metrics, tokens = await serve(store)
        admin = vault_pb2_grpc.AdminStub(channel)
        assert (await admin.RotateKey(pb.RotateKeyRequest())).key_version == 2
        assert (await admin.DestroyKeyVersion(pb.DestroyKeyVersionRequest(key_version=1))).shredded_templates == 0
        status = await admin.KeyStatus(pb.KeyStatusRequest())
        assert [v.key_version for v in status.versions] == [2]
        with pytest.raises(grpc.aio.AioRpcError) as current:
            await admin.DestroyKeyVersion(pb.DestroyKeyVersionRequest(key_version=2))
        assert current.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await channel.close()
        await server.stop(None)

    run(main())


def test_every_call_leaves_one_access_line_without_subject_ids(store, caplog):
    import json
    import logging

    from vault.logs import JsonFormatter

    async def main():
        server, channel, metrics, tokens = await serve(store)
        panel, _ = tokens.create("acme", PANEL, "door", AuditEntry("CreateToken", "acme", "admin"))
        stub = vault_pb2_grpc.VaultStub(channel)
        verdict = await stub.Verify(pb.VerifyRequest(subject_id="ana-secret-id", modality=pb.FACE, probe=face("x", 1)),
                                    metadata=bearer(panel))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Enroll(pb.EnrollRequest(subject_id="ana-secret-id", modality=pb.FACE, samples=[face("a", 1)]),
                              metadata=bearer(panel))
        await channel.close()
        await server.stop(None)
        return verdict

    with caplog.at_level(logging.INFO, logger="vault.rpc"):
        verdict = run(main())
    access = [json.loads(JsonFormatter().format(r)) for r in caplog.records if hasattr(r, "rpc")]
    assert [(a["rpc"], a["status"], a["tenant"], a["role"]) for a in access] == [
        ("Verify", "OK", "acme", PANEL), ("Enroll", "PERMISSION_DENIED", "acme", PANEL)]
    assert access[0]["decision_id"] == verdict.decision_id and access[0]["latency_ms"] >= 0
    assert access[0]["caller"].startswith("token:")
    assert "ana-secret-id" not in caplog.text and "ana-secret-id" not in json.dumps(access)
