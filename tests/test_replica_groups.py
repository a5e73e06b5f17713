"""Fast tier: tenants spread over replica groups (vault.replication.ReplicaGroup, issue 27).

The assignment in both stores; a group's replica loading, following and reconciling only its
tenants; a tenant moving between groups without a refused or wrong decision; the interceptor
refusing another group's tenant before anything is counted, with the right group in a trailer;
and the client package sending each call to its tenant's group. Replicas here are in-process
(a Vault, its index, an IndexSync and a ReplicaGroup over one store); the end-to-end test with real
server processes on PostgreSQL is tests/test_replica_groups_e2e.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
import pytest

from conftest import deterministic_key_file
from doubles import VectorExtractor, sample_bytes
from test_replicas import FollowedIndex
from test_store import AUDIT_KEY, backend, row  # noqa: F401 (backend: fixture)
from vault.access.audit import AuditEntry
from vault.access.auth import ENROLLER, LOCAL_OPERATOR, PANEL, AccessPolicy, Authenticator, Identity
from vault.access.tokens import TokenRegistry
from vault.core import Vault
from vault.custody.keys import LocalKeyFile
from vault.exceptions import GroupLoading, InvalidArgument, WrongGroup
from vault.metrics import Metrics
from vault.modalities import FACE
from vault.replication import IndexSync, ReplicaGroup
from vault.rpc.interceptor import Gatekeeper
from vault.rpc.servicers import AdminServicer, AuditServicer, VaultServicer
from vault.administration import Administration
from vault.server import SERVICE_NAMES
from vault.store import open_store
from vault.store.base import ADD
from vault_client.v1 import vault_pb2 as pb
from vault_client.v1 import vault_pb2_grpc


# -- the assignment in the store --------------------------------------------------------------------
def test_the_assignment_is_one_row_a_tenant_in_either_store(backend):  # noqa: F811
    store = backend.open()
    try:
        assert store.schema_version() >= 6 and store.assignments() == [] and store.assignment("acme") is None
        store.assign("acme", "g1")
        store.assign("globex", "g2")
        moving = store.assign("acme", "g1", joining="g3")
        assert (moving.group, moving.joining) == ("g1", "g3")
        assert [(a.tenant, a.group, a.joining) for a in store.assignments()] == [("acme", "g1", "g3"),
                                                                                  ("globex", "g2", "")]
        store.assign("acme", "g3")
        assert store.assignment("acme").group == "g3" and store.assignment("acme").joining == ""
        assert store.unassign("globex") and not store.unassign("globex")
        assert [a.tenant for a in store.assignments()] == ["acme"]
    finally:
        store.close()


def test_live_rows_and_ids_read_only_the_tenants_asked_for(backend):  # noqa: F811
    store = backend.open()
    try:
        for tenant, template_id in (("a", "a1"), ("a", "a2"), ("b", "b1"), ("c", "c1")):
            store.insert(row(template_id, tenant=tenant), AuditEntry("Enroll", tenant, "op"))
        store.revoke("a", ["a2"], "left", AuditEntry("Revoke", "a", "op"))
        assert {r.template_id for r in store.live_rows()} == {"a1", "b1", "c1"}
        assert {r.template_id for r in store.live_rows(["a", "c"])} == {"a1", "c1"}
        assert list(store.live_rows([])) == [] and list(store.live_rows(["nobody"])) == []
        assert store.live_template_ids({"b"}) == {"b1"} and store.live_template_ids(set()) == set()
        assert store.live_template_ids() == {"a1", "b1", "c1"}
    finally:
        store.close()


# -- a group's replica, on stand-in indexes -----------------------------------------------------------
class TenantIndex(FollowedIndex):
    """A replica's index: template ids, and each one's tenant (to drop a tenant)."""

    def __init__(self):
        super().__init__()
        self.tenant_of: dict[str, str] = {}

    def apply(self, kind, template_row):
        super().apply(kind, template_row)
        self.tenant_of[template_row.template_id] = template_row.tenant

    def drop(self, tenant: str) -> int:
        gone = {t for t in self.ids if self.tenant_of.get(t) == tenant}
        self.ids -= gone
        return len(gone)


def group_replica(store, name: str, drop_after_s: float = 0.0, during_load=None):
    """(ReplicaGroup, its IndexSync, its index): loaded as a starting server loads."""
    index = TenantIndex()
    sync = IndexSync(store, index.apply, index_ids=index.template_ids)

    def load(tenants):
        rows = store.live_rows(tenants)
        first = next(rows, None)
        if during_load is not None:
            during_load()  # another replica writes while this one reads
        for live in ([first] if first else []) + list(rows):
            index.apply(ADD, live)
        return len(index.ids), 0

    group = ReplicaGroup(name, store, sync, load, index.drop, drop_after_s=drop_after_s)
    sync.mark()
    group.load()
    return group, sync, index


@pytest.fixture
def pair(backend):  # noqa: F811
    writer, followed = backend.open(), backend.open()
    yield writer, followed
    writer.close()
    followed.close()


def enrol(store, template_id: str, tenant: str) -> None:
    store.insert(row(template_id, tenant=tenant), AuditEntry("Enroll", tenant, "op"))


def test_a_group_loads_follows_and_reconciles_only_its_tenants(pair):
    writer, followed = pair
    writer.assign("a", "g1")
    writer.assign("b", "g2")
    enrol(writer, "a1", "a")
    enrol(writer, "b1", "b")
    enrol(writer, "u1", "unassigned")
    group, sync, index = group_replica(followed, "g1")
    assert index.ids == {"a1"} and sync.tenants == {"a"} and group.tenants() == {"a"}
    enrol(writer, "a2", "a")
    enrol(writer, "b2", "b")
    writer.revoke("b", ["b1"], "left", AuditEntry("Revoke", "b", "op"))
    assert sync.poll() == 1 and index.ids == {"a1", "a2"}  # b's three changes passed over
    index.ids.discard("a2")  # lost: reconciliation repairs its own tenants, never adds another's
    assert sync.reconcile() == (1, 0) and index.ids == {"a1", "a2"}
    assert group.serves("a") and not group.serves("b") and not group.serves("unassigned")


def test_another_groups_tenant_is_refused_with_its_group_and_an_unassigned_one_without(pair):
    writer, followed = pair
    writer.assign("a", "g1")
    writer.assign("b", "g2")
    group, _, _ = group_replica(followed, "g1")
    group.admit("a")  # ours: passes
    with pytest.raises(WrongGroup) as other:
        group.admit("b")
    assert other.value.status == "FAILED_PRECONDITION" and other.value.group == "g2"
    assert other.value.trailers == (("vault-group", "g2"),) and "g2" in other.value.message
    with pytest.raises(WrongGroup) as nowhere:
        group.admit("stranger")
    assert nowhere.value.group == "" and nowhere.value.trailers == () and "no replica group" in nowhere.value.message
    with pytest.raises(InvalidArgument):
        ReplicaGroup("Not A Name!", followed, IndexSync(followed, lambda *a: None), lambda t: (0, 0), lambda t: 0)


def test_a_tenant_assigned_but_not_loaded_yet_is_unavailable_never_an_empty_index(pair):
    writer, followed = pair
    enrol(writer, "c1", "c")
    group, sync, index = group_replica(followed, "g3")
    writer.assign("c", "g3")  # straight to g3, without a move: g3 has not loaded it
    assert not group.serves("c")
    with pytest.raises(GroupLoading) as loading:
        group.admit("c")
    assert loading.value.status == "UNAVAILABLE" and loading.value.reason == "group-loading"
    group.refresh()
    assert index.ids == {"c1"} and group.serves("c")
    group.admit("c")


def test_a_move_loads_then_flips_then_drops_and_replays_what_changed_during_the_load(pair):
    writer, followed = pair
    writer.assign("t", "g1")
    enrol(writer, "t1", "t")
    enrol(writer, "t2", "t")
    old, old_sync, old_index = group_replica(followed, "g1", drop_after_s=60.0)

    def meanwhile():  # while g2 reads t's rows, t1 is revoked and t3 enrolled on g1
        writer.revoke("t", ["t1"], "left", AuditEntry("Revoke", "t", "op"))
        enrol(writer, "t3", "t")

    new, new_sync, new_index = group_replica(followed, "g2", during_load=meanwhile)
    assert new_index.ids == set() and not new.serves("t")

    # 1. g2 joins: it loads t while g1 serves it.
    writer.assign("t", "g1", joining="g2")
    new.refresh()
    assert new_index.ids == {"t2", "t3"}  # the revocation and the enrolment replayed
    assert not new.serves("t") and new_sync.tenants == {"t"}
    with pytest.raises(WrongGroup) as still_old:
        new.admit("t")
    assert still_old.value.group == "g1"
    old_sync.poll()
    assert old.serves("t") and old_index.ids == {"t2", "t3"}

    # 2. The flip. Until g1 sees it, g1 still answers t from its complete index; g2 answers at once
    # (a refusal re-reads the assignment).
    writer.assign("t", "g2")
    assert old.serves("t")
    new.admit("t")
    assert new.serves("t")

    # 3. g1 sees the flip: t is refused there (to g2) at once, its templates stay for the calls
    # admitted before (drop_after_s), then go.
    old.refresh()
    assert not old.serves("t") and old_index.ids == {"t2", "t3"}
    with pytest.raises(WrongGroup) as moved:
        old.admit("t")
    assert moved.value.group == "g2"
    old.drop_after_s = 0.0
    old._dropping = {"t": 0.0}
    old.refresh()
    assert old_index.ids == set() and old_sync.tenants == set()
    enrol(writer, "t4", "t")
    old_sync.poll()
    new_sync.poll()
    assert old_index.ids == set() and new_index.ids == {"t2", "t3", "t4"}


def test_a_tenant_that_comes_back_before_its_drop_is_still_complete(pair):
    writer, followed = pair
    writer.assign("t", "g1")
    enrol(writer, "t1", "t")
    group, sync, index = group_replica(followed, "g1", drop_after_s=60.0)
    writer.assign("t", "g2")
    group.refresh()
    assert not group.serves("t") and sync.tenants == {"t"}  # still followed until dropped
    enrol(writer, "t2", "t")
    sync.poll()
    writer.assign("t", "g1")
    group.refresh()
    assert group.serves("t") and index.ids == {"t1", "t2"} and group._dropping == {}


# -- the interceptor and the client, on loopback servers in this process ------------------------------
@dataclass
class Replica:
    server: grpc.aio.Server
    port: int
    vault: Vault
    group: ReplicaGroup
    sync: IndexSync


@pytest.fixture
def store(tmp_path):
    keys = LocalKeyFile(deterministic_key_file(tmp_path / "keys.json"))
    store = open_store(f"sqlite:///{tmp_path / 'vault.db'}", keys.audit_key())
    store.keys = keys
    yield store
    store.close()


async def replica(store, name: str) -> Replica:
    """A replica of group `name` on a loopback port, as vault.server.VaultServer assembles one."""
    from vault.templates.matching import MatchIndex, warm_up
    from vault.templates.profiles import PROFILES

    await asyncio.to_thread(warm_up, PROFILES.values())
    tokens = TokenRegistry(store, store.keys.token_key())
    index = MatchIndex()
    vault = Vault(store, store.keys, VectorExtractor(), index)
    sync = IndexSync(store, vault.apply_change, index_ids=index.template_ids)
    group = ReplicaGroup(name, store, sync, vault.load_index, index.drop_tenant)
    sync.mark()
    await asyncio.to_thread(group.load)
    gatekeeper = Gatekeeper(set(SERVICE_NAMES), Authenticator(tls=False, tokens=tokens), AccessPolicy(), store,
                            Metrics(), 120.0, group)
    server = grpc.aio.server(interceptors=[gatekeeper])
    vault_pb2_grpc.add_VaultServicer_to_server(VaultServicer(vault), server)
    administration = Administration(store.keys, store, tokens, vault.identify_capacity)
    vault_pb2_grpc.add_AdminServicer_to_server(AdminServicer(administration), server)
    vault_pb2_grpc.add_AuditServicer_to_server(AuditServicer(administration), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return Replica(server, port, vault, group, sync)


def face(person: str, shot: int) -> pb.Sample:
    return pb.Sample(image=sample_bytes(person, shot))


def test_another_groups_tenant_is_refused_before_any_attempt_is_counted(store):
    async def main():
        store.assign("acme", "g1")
        store.assign("globex", "g2")
        g1 = await replica(store, "g1")
        tokens = TokenRegistry(store, store.keys.token_key())
        acme, _ = tokens.create("acme", PANEL, "door", AuditEntry("CreateToken", "acme", "admin"))
        globex, _ = tokens.create("globex", PANEL, "door", AuditEntry("CreateToken", "globex", "admin"))
        stranger, _ = tokens.create("initech", PANEL, "door", AuditEntry("CreateToken", "initech", "admin"))
        await g1.vault.enroll(Identity("acme", frozenset({ENROLLER}), "hr"), "ana", FACE, 0, [_sample("ana", 1)])
        audited = len(list(store.audit_records()))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{g1.port}") as channel:
            stub = vault_pb2_grpc.VaultStub(channel)
            request = pb.VerifyRequest(subject_id="ana", modality=pb.FACE, probe=face("ana", 2))
            answer = await stub.Verify(request, metadata=(("authorization", f"Bearer {acme}"),))
            assert answer.decision == pb.MATCH
            for token, group in ((globex, "g2"), (stranger, None)):
                for call in (stub.Verify(request, metadata=(("authorization", f"Bearer {token}"),)),
                             stub.Identify(pb.IdentifyRequest(modality=pb.FACE, probe=face("ana", 2)),
                                           metadata=(("authorization", f"Bearer {token}"),))):
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await call
                    trailers = dict(refused.value.trailing_metadata())
                    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                    assert trailers.get("vault-reason") == "wrong-group" and trailers.get("vault-group") == group
            # Nothing counted, nothing audited for the refused calls: only acme's Verify.
            with store._transaction() as cur:
                attempts = store._execute(cur, "SELECT count(*) FROM attempts WHERE tenant != 'acme'").fetchone()[0]
            assert attempts == 0 and len(list(store.audit_records())) == audited + 1
        await g1.server.stop(None)

    asyncio.run(main())


def _sample(person: str, shot: int):
    from vault.core import IMAGE, Sample

    return Sample(IMAGE, sample_bytes(person, shot))


def test_the_client_sends_each_call_to_its_tenants_group_and_follows_a_move(store):
    """The plaintext loopback's caller is the local operator (tenant "default")."""
    from vault_client import Settings, VaultClient, errors
    from conftest import free_port

    async def main():
        tenant = LOCAL_OPERATOR.tenant
        store.assign(tenant, "g2")
        g1, g2 = await replica(store, "g1"), await replica(store, "g2")
        await g2.vault.enroll(LOCAL_OPERATOR, "ana", FACE, 0, [_sample("ana", 1)])
        groups = {"g1": f"127.0.0.1:{g1.port}", "g2": f"127.0.0.1:{g2.port}"}
        client = VaultClient(Settings(groups=groups, timeout_s=20))
        probe = face("ana", 2)
        answer = await asyncio.to_thread(client.verify, probe, subject_id="ana")
        assert answer.decision == pb.MATCH and client.group == "g2"  # g1 refused it, naming g2
        found = await asyncio.to_thread(client.identify, probe)
        assert [c.subject_id for c in found.candidates] == ["ana"]

        # The tenant moves to g1: g1 loads it (joining), the assignment flips, g2 sends the client on.
        store.assign(tenant, "g2", joining="g1")
        await asyncio.to_thread(g1.group.refresh)
        store.assign(tenant, "g1")
        await asyncio.to_thread(g2.group.refresh)  # its poll: g2 stops answering the tenant
        answer = await asyncio.to_thread(client.verify, probe, subject_id="ana")
        assert answer.decision == pb.MATCH and client.group == "g1"

        # Its group down: UNAVAILABLE, retryable; never another group's empty index.
        await g1.server.stop(None)
        with pytest.raises(errors.Unavailable) as down:
            await asyncio.to_thread(client.verify, probe, subject_id="ana")
        assert down.value.retryable
        client.close()

        # A client that has not found its group yet passes over one that does not answer.
        store.assign(tenant, "g2")
        await asyncio.to_thread(g2.group.refresh)
        lost = VaultClient(Settings(groups={"gone": f"127.0.0.1:{free_port()}", **groups}, timeout_s=20))
        answer = await asyncio.to_thread(lost.verify, probe, subject_id="ana")
        assert answer.decision == pb.MATCH and lost.group == "g2"
        lost.close()
        await g2.server.stop(None)

    asyncio.run(main())


def test_the_client_reads_groups_from_the_environment(monkeypatch):
    from vault_client import Settings
    from vault_client.connection import parse_groups

    monkeypatch.setenv("VAULT_GROUPS", "g1=10.0.0.1:50051, g2=10.0.0.2:50051")
    assert Settings.from_environment().groups == {"g1": "10.0.0.1:50051", "g2": "10.0.0.2:50051"}
    with pytest.raises(ValueError, match="NAME=HOST:PORT"):
        parse_groups("g1:10.0.0.1")
