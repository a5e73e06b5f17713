"""Replicas keep their match index in step with the shared store (vault.replication.IndexSync).

The first tests drive IndexSync directly against both stores: one store object writes (another
replica), a second one is followed. The last test runs two real `vault serve` processes on one
PostgreSQL database.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import deterministic_key_file, read
from tests.test_store import AUDIT_KEY, backend, postgres_admin_url, row  # noqa: F401 (backend: fixture)
from vault.access.audit import AuditEntry
from vault.replication import IndexSync
from vault.store.base import ADD, REMOVE

PROPAGATION_S = 1.0  # the bound: a change on one replica takes effect on all within this


class FollowedIndex:
    """Stands for a replica's MatchIndex: the template ids it holds, and every call it received."""

    def __init__(self):
        self.ids: set[str] = set()
        self.calls: list[tuple[str, str]] = []

    def apply(self, kind, template_row):
        self.calls.append((kind, template_row.template_id))
        (self.ids.add if kind == ADD else self.ids.discard)(template_row.template_id)

    def template_ids(self):
        return set(self.ids)


def wait_until(condition, timeout: float) -> float:
    """Seconds until condition() held; fails after timeout."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not reached within {timeout} s")
        time.sleep(0.005)
    return time.monotonic() - started


@pytest.fixture
def pair(backend):  # noqa: F811 (the fixture imported above)
    writer, followed = backend.open(), backend.open()
    yield writer, followed
    writer.close()
    followed.close()


def test_follower_sees_enrol_revoke_and_reissue_from_another_writer(pair):
    writer, followed = pair
    writer.insert(row("before"), AuditEntry("Enroll", "t", "op"))
    index = FollowedIndex()
    sync = IndexSync(followed, index.apply, interval_s=0.05, index_ids=index.template_ids)
    sync.mark()  # before loading, as a starting replica does
    for live in followed.live_rows():
        index.apply(ADD, live)
    sync.start()
    try:
        writer.insert(row("a1"), AuditEntry("Enroll", "t", "op"))
        writer.insert(row("b1", "bob"), AuditEntry("Enroll", "t", "op"))
        wait_until(lambda: index.ids == {"before", "a1", "b1"}, 5 * PROPAGATION_S)
        writer.revoke("t", ["a1"], "left", AuditEntry("Revoke", "t", "op"))
        writer.reissue("b1", row("b2", "bob"), "new samples", AuditEntry("Reissue", "t", "op"))
        wait_until(lambda: index.ids == {"before", "b2"}, 5 * PROPAGATION_S)
    finally:
        sync.stop()
    assert sync.cursor == followed.change_head() == 6


def test_a_template_revoked_before_the_follower_looks_is_never_added(pair):
    writer, followed = pair
    index = FollowedIndex()
    sync = IndexSync(followed, index.apply)
    sync.mark()
    writer.insert(row("x1"), AuditEntry("Enroll", "t", "op"))
    writer.revoke("t", ["x1"], "left", AuditEntry("Revoke", "t", "op"))
    assert sync.poll() == 2
    assert (ADD, "x1") not in index.calls and index.calls == [(REMOVE, "x1"), (REMOVE, "x1")]
    assert index.ids == set()
    assert sync.poll() == 0  # nothing new


def test_changes_made_while_loading_are_replayed(pair):
    writer, followed = pair
    writer.insert(row("a1"), AuditEntry("Enroll", "t", "op"))
    index = FollowedIndex()
    sync = IndexSync(followed, index.apply, batch=2)  # several pages of the feed
    sync.mark()
    loading = followed.live_rows()
    first = next(loading)  # the load has begun...
    for i in range(5):  # ...when other replicas write
        writer.insert(row(f"n{i}"), AuditEntry("Enroll", "t", "op"))
    writer.revoke("t", ["a1"], "left", AuditEntry("Revoke", "t", "op"))
    index.apply(ADD, first)
    for live in loading:
        index.apply(ADD, live)
    sync.poll()
    assert index.ids == {f"n{i}" for i in range(5)}


def test_reconciliation_repairs_what_the_feed_missed(pair):
    writer, followed = pair
    for template_id in ("a1", "a2", "a3"):
        writer.insert(row(template_id), AuditEntry("Enroll", "t", "op"))
    writer.revoke("t", ["a3"], "left", AuditEntry("Revoke", "t", "op"))
    index = FollowedIndex()
    index.ids = {"a1", "a3"}  # lost a2's enrolment and a3's revocation
    sync = IndexSync(followed, index.apply, index_ids=index.template_ids)
    assert sync.reconcile() == (1, 1)
    assert index.ids == {"a1", "a2"}
    assert sync.reconcile() == (0, 0)


@pytest.mark.postgres
def test_postgres_notifications_wake_the_follower_without_polling(backend):  # noqa: F811
    if backend.name != "postgres":
        pytest.skip("notifications are PostgreSQL's")
    writer, followed = backend.open(), backend.open()
    index = FollowedIndex()
    sync = IndexSync(followed, index.apply, interval_s=60.0)  # a poll would come far too late
    sync.start()
    try:
        time.sleep(0.2)  # let the listener connect
        writer.insert(row("a1"), AuditEntry("Enroll", "t", "op"))
        assert wait_until(lambda: index.ids == {"a1"}, 5.0) < 5.0
    finally:
        sync.stop()
        writer.close()
        followed.close()


# -- two real replicas ------------------------------------------------------------------------------
def embedding(*parts: str) -> list[float]:
    """A real face's embedding, extracted by the service's own code (the RPCs then skip dlib, so
    what the test times is propagation, not extraction)."""
    from vault.intake.extraction import IMAGE, extract
    from vault.templates.profiles import CURRENT, FACE

    return [float(v) for v in extract(FACE, IMAGE, read(*parts), False)[0][CURRENT[FACE].features]]


@pytest.mark.postgres
def test_two_replicas_on_one_database_see_each_others_changes(server_factory, tmp_path):
    from benchmarks.postgres_scratch import scratch_schema
    from vault_client.v1 import vault_pb2 as pb

    alice = [embedding("face", "orl", "s1", f"{i}.pgm") for i in (1, 3, 5)]
    bob = [embedding("face", "orl", "s5", f"{i}.pgm") for i in (1, 2, 4, 6)]

    def sample(values):
        return pb.Sample(face_embedding=pb.FaceEmbedding(values=values))

    keys = deterministic_key_file(tmp_path / "shared" / "keys.json")
    with scratch_schema(postgres_admin_url(), prefix="vault_test") as url:
        # The test polls with probes that must fail for a while: lift the failure lockout.
        common = ("--store", url, "--key-file", str(keys), "--allow-face-embeddings",
                  "--max-failures-per-subject", "100000", "--max-failures-per-client", "100000")
        one, two = (server_factory(name, *common).stub() for name in ("one", "two"))

        def verifies(stub, subject, probe):
            return stub.Verify(pb.VerifyRequest(subject_id=subject, modality=pb.FACE,
                                                probe=sample(probe))).decision == pb.MATCH

        def identifies(stub, probe):
            found = stub.Identify(pb.IdentifyRequest(modality=pb.FACE, probe=sample(probe), max_candidates=5))
            return [c.template_id for c in found.candidates]

        # The first template under a key version a replica has not yet seen makes it compute that
        # key's operating point (vault.templates.cohort, ~2 s), once: outside the propagation bound.
        carol = [embedding("face", "orl", "s9", f"{i}.pgm") for i in (1, 2)]
        one.Enroll(pb.EnrollRequest(subject_id="carol", modality=pb.FACE, samples=[sample(carol[0])]))
        wait_until(lambda: verifies(two, "carol", carol[1]), 30.0)

        # Enrol on one: the other matches within the window.
        a = one.Enroll(pb.EnrollRequest(subject_id="alice", modality=pb.FACE, samples=[sample(alice[0])])).template_id
        # alice[1]: a two-person gallery is judged mostly against the normalisation's (strict) prior
        wait_until(lambda: verifies(two, "alice", alice[1]), PROPAGATION_S)
        assert identifies(two, alice[1]) == [a]

        # Revoke on two: one never matches it again after the window.
        two.Revoke(pb.RevokeRequest(template_id=a, reason="left"))
        wait_until(lambda: not verifies(one, "alice", alice[1]), PROPAGATION_S)
        for _ in range(20):
            assert not verifies(one, "alice", alice[1]) and identifies(one, alice[1]) == []

        # Reissue on one: two matches the new template and never the old one.
        old = two.Enroll(pb.EnrollRequest(subject_id="bob", modality=pb.FACE, samples=[sample(bob[0])])).template_id
        wait_until(lambda: identifies(one, bob[2]) == [old], PROPAGATION_S)
        new = one.Reissue(pb.ReissueRequest(template_id=old, samples=[sample(bob[1])], reason="new")).template_id
        wait_until(lambda: identifies(two, bob[3]) == [new], PROPAGATION_S)
        for _ in range(20):
            assert identifies(two, bob[2]) == [new]
