"""Fast tier: the protobuf-free core (vault.core, vault.administration) in process, on a temp
SQLite store, real keys and protection, fixed vectors instead of dlib (tests/doubles.py)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from conftest import deterministic_key_file
from doubles import NO_SIGNAL, VectorExtractor, sample_bytes
from vault.administration import Administration
from vault.access.audit import AuditEntry
from vault.access.auth import Identity
from vault.core import FACE_EMBEDDING, IMAGE, ISO_19794_2, Sample, Vault, row_identity
from vault.exceptions import FailedPrecondition, InvalidArgument, InvalidSample, NotFound, PoorSample
from vault.custody.keys import LocalKeyFile
from vault.access.lockout import Limits, LockedOut, FailureLimiter
from vault.templates.matching import agreement
from vault.templates.profiles import CURRENT, FACE, FINGERPRINT
from vault.custody.shredding import ledger_path, open_ledger
from vault.store import LIVE, REVOKED, open_store
from vault.access.tokens import TokenRegistry

ENROLLER = Identity("default", frozenset({"enroller"}), "hr")
PANEL = Identity("default", frozenset({"panel"}), "door-1")
AUDITOR = Identity("default", frozenset({"auditor"}), "audit")
OTHER_TENANT_PANEL = Identity("other", frozenset({"panel"}), "door-9")


def run(coroutine):
    return asyncio.run(coroutine)


def photo(person: str, shot: int) -> Sample:
    return Sample(IMAGE, sample_bytes(person, shot))


@pytest.fixture
def vault(tmp_path):
    keys = LocalKeyFile(deterministic_key_file(tmp_path / "keys.json"))
    store = open_store(f"sqlite:///{tmp_path / 'vault.db'}", keys.audit_key())
    shreds = open_ledger(ledger_path(keys.path), keys)  # as the server keeps it: beside the key file
    core = Vault(store, keys, VectorExtractor(), limiter=FailureLimiter(store, Limits(per_subject=3, per_client=6)),
                 shreds=shreds)
    yield core
    store.close()
    shreds.close()


def administration_of(vault: Vault) -> Administration:
    return Administration(vault.keys, vault.store, TokenRegistry(vault.store, vault.keys.token_key()),
                          vault.identify_capacity)


def enroll(vault, person: str, shots=(1, 2), modality: int = FACE, finger: int = 0):
    return run(vault.enroll(ENROLLER, person, modality, finger, [photo(person, s) for s in shots]))


def test_enrol_then_verify_genuine_and_impostor(vault):
    done = enroll(vault, "ana")
    assert (done.profile, done.key_version, len(done.reports)) == (CURRENT[FACE].name, 1, 2)
    assert run(vault.verify(PANEL, photo("ana", 3), subject_id="ana", modality=FACE)).matched
    assert run(vault.verify(PANEL, photo("ana", 4), template_id=done.template_id)).matched
    assert not run(vault.verify(PANEL, photo("bob", 1), subject_id="ana", modality=FACE)).matched


def test_decisions_are_audited_with_their_ids(vault):
    enroll(vault, "ana")
    result = run(vault.verify(PANEL, photo("ana", 3), subject_id="ana", modality=FACE))
    records = list(vault.store.audit_records("default"))
    assert [r.entry.rpc for r in records] == ["Enroll", "Verify"]
    assert (records[-1].entry.decision, records[-1].entry.decision_id) == ("MATCH", result.decision_id)


def test_identify_finds_the_enrolled_person_and_not_a_stranger(vault):
    for person in ("ana", "bob", "cem", "dia"):
        enroll(vault, person)
    found = run(vault.identify(PANEL, photo("cem", 5), modality=FACE, max_candidates=3))
    assert [c.subject_id for c in found.candidates][:1] == ["cem"]
    assert [c.rank for c in found.candidates] == list(range(1, len(found.candidates) + 1))
    assert run(vault.identify(PANEL, photo("zed", 1), modality=FACE)).candidates == []


def test_tenants_do_not_see_each_other(vault):
    done = enroll(vault, "ana")
    assert not run(vault.verify(OTHER_TENANT_PANEL, photo("ana", 3), subject_id="ana", modality=FACE)).matched
    assert not run(vault.verify(OTHER_TENANT_PANEL, photo("ana", 3), template_id=done.template_id)).matched
    assert run(vault.identify(OTHER_TENANT_PANEL, photo("ana", 3), modality=FACE)).candidates == []
    with pytest.raises(NotFound):
        run(vault.revoke(Identity("other", frozenset({"auditor"}), "x"), "no", template_id=done.template_id))


def test_revoke_stops_matching_and_is_final(vault):
    done = enroll(vault, "ana")
    assert run(vault.revoke(AUDITOR, "left", template_id=done.template_id)) == [done.template_id]
    assert not run(vault.verify(PANEL, photo("ana", 3), subject_id="ana", modality=FACE)).matched
    assert run(vault.identify(PANEL, photo("ana", 3), modality=FACE)).candidates == []
    with pytest.raises(NotFound):
        run(vault.revoke(AUDITOR, "again", template_id=done.template_id))
    vault.apply_change("add", vault.store.get("default", done.template_id))  # a stale feed entry
    assert not run(vault.verify(PANEL, photo("ana", 3), template_id=done.template_id)).matched
    (row,) = run(vault.list_templates(AUDITOR, "ana", include_revoked=True))
    assert (row.status, row.revoke_reason) == (REVOKED, "left")


def test_revoke_erases_and_a_database_edit_cannot_bring_it_back(vault):
    """Issue 14, findings 2 and 4: revoked rows keep no sealed code; setting the status back to
    live in the database makes the row fail authentication, never match."""
    done = enroll(vault, "ana")
    run(vault.revoke(AUDITOR, "GDPR erasure request", template_id=done.template_id))
    row = vault.store.get("default", done.template_id)
    assert (row.salt, row.sealed) == (b"", b"")
    with vault.store._transaction() as cur:
        cur.execute("UPDATE templates SET status = ? WHERE template_id = ?", (LIVE, done.template_id))
    fresh = Vault(vault.store, vault.keys, VectorExtractor(), shreds=vault.shreds)
    assert fresh.load_index() == (0, 1)
    assert not run(fresh.verify(PANEL, photo("ana", 3), template_id=done.template_id)).matched


def test_revoke_shreds_every_copy_of_the_row_even_with_the_keys(vault, tmp_path):
    """Issue 14, finding 4: a backup taken before a revocation holds the revoked row; with the key
    store stolen later it still opens nothing, because the template's shred secret is gone."""
    ana, bob = enroll(vault, "ana"), enroll(vault, "bob")
    backup = {r.template_id: r for r in vault.store.list("default")}  # a copy of the data, before
    run(vault.revoke(AUDITOR, "GDPR erasure request", template_id=ana.template_id))
    copy = open_store(f"sqlite:///{tmp_path / 'restored.db'}", vault.keys.audit_key())
    for row in backup.values():
        copy.insert(row, AuditEntry("Enroll", "default", "restore"))
    thief = Vault(copy, vault.keys, VectorExtractor(), shreds=vault.shreds)  # keys and ledger as they are now
    assert thief.load_index() == (1, 1)  # bob opens; ana's old row does not
    assert not run(thief.verify(PANEL, photo("ana", 3), template_id=ana.template_id)).matched
    assert run(thief.verify(PANEL, photo("bob", 3), template_id=bob.template_id)).matched
    # Without the ledger (the data and the key store only), no template sealed with a secret opens.
    blind = Vault(copy, vault.keys, VectorExtractor(), shreds=open_ledger(tmp_path / "empty.shred.db", vault.keys))
    assert blind.load_index() == (0, 2)
    copy.close()


def test_a_secret_whose_template_never_committed_is_shredded_later(vault):
    from vault.core import store_identity

    live = {enroll(vault, "ana").template_id}
    vault.shreds.put("never-committed", "default", vault.shreds.new_secret())
    identity = store_identity(vault.store)
    assert vault.shreds.retain(live, identity, older_than_s=3600) == 0  # young: another replica may be enrolling it
    assert vault.shreds.retain(live, identity, older_than_s=0) == 1
    assert vault.shreds.secrets(["never-committed"]) == {}


def test_template_id_probes_answer_alike_whatever_exists(vault):
    """Issue 14, finding 6: a wrong modality or finger on a live template answers as an unknown
    template does (NO_MATCH, audited), not with an error only live templates give."""
    face = enroll(vault, "ana")
    finger = enroll(vault, "bob", modality=FINGERPRINT, finger=2)
    answers = [run(vault.verify(PANEL, photo("ana", 3), template_id=t, modality=m, finger=f)).matched
               for t, m, f in ((face.template_id, FINGERPRINT, 0), (face.template_id, 0, 3),
                               (finger.template_id, FINGERPRINT, 4), ("unknown", 0, 3), ("unknown", FINGERPRINT, 4))]
    assert answers == [False] * 5
    assert [r.entry.decision for r in vault.store.audit_records("default")][-5:] == ["NO_MATCH"] * 5


def test_reissue_replaces_the_template(vault):
    old = enroll(vault, "ana")
    new = run(vault.reissue(ENROLLER, old.template_id, [photo("ana", 7)], "new photo"))
    assert new.revoked_template_id == old.template_id
    assert not run(vault.verify(PANEL, photo("ana", 3), template_id=old.template_id)).matched
    assert run(vault.verify(PANEL, photo("ana", 3), template_id=new.template_id)).matched
    rows = {r.template_id: r for r in run(vault.list_templates(AUDITOR, "ana", include_revoked=True))}
    assert (rows[old.template_id].status, rows[old.template_id].replaced_by) == (REVOKED, new.template_id)
    assert rows[new.template_id].status == LIVE


def test_a_restart_loads_every_live_template(vault, tmp_path):
    kept, gone = enroll(vault, "ana"), enroll(vault, "bob")
    run(vault.revoke(AUDITOR, "left", template_id=gone.template_id))
    fresh = Vault(vault.store, vault.keys, VectorExtractor(), shreds=vault.shreds)
    assert fresh.load_index() == (1, 0)
    assert run(fresh.verify(PANEL, photo("ana", 3), template_id=kept.template_id)).matched


def test_an_edited_row_is_refused_at_load(vault):
    done = enroll(vault, "ana", shots=(1,))
    enroll(vault, "bob", shots=(1,))
    with vault.store._transaction() as cur:  # an attacker with write access to the database
        cur.execute("UPDATE templates SET subject_id = 'bob' WHERE template_id = ?", (done.template_id,))
    fresh = Vault(vault.store, vault.keys, VectorExtractor(), shreds=vault.shreds)
    assert fresh.load_index() == (1, 1)


def test_an_edited_sample_count_is_refused_at_load(vault):
    """The threshold depends on how many touches a template holds, so the count is authenticated:
    a three-touch row edited in the database to claim one touch never matches."""
    done = run(vault.enroll(ENROLLER, "ana", FINGERPRINT, 0, [photo("ana", s) for s in (1, 2, 3)]))
    with vault.store._transaction() as cur:
        cur.execute("UPDATE templates SET sample_count = 1 WHERE template_id = ?", (done.template_id,))
    fresh = Vault(vault.store, vault.keys, VectorExtractor(), shreds=vault.shreds)
    assert fresh.load_index() == (0, 1)


def test_a_fingerprint_templates_cohort_offset_is_taken_off_its_scores_and_the_same_after_a_restart(vault):
    """The decision takes each fingerprint code's cohort offset off its scores (vault.templates.cohort
    .TemplateCohort): computed at enrolment, and again from the unsealed codes at load."""
    done = run(vault.enroll(ENROLLER, "ana", FINGERPRINT, 2, [photo("ana", s) for s in (1, 2, 3)]))
    probe = vault._probe_codes("default", {CURRENT[FINGERPRINT].features:
                                           VectorExtractor().vector(FINGERPRINT, IMAGE, b"ana/4")[0]})
    [gallery] = vault.index.galleries("default", FINGERPRINT)
    [hit] = gallery.search(probe(gallery), template_id=done.template_id)
    row = vault.store.get("default", done.template_id)
    key = vault.keys.tenant_key("default", row.key_version)
    codes = vault.protector.unseal(key, row_identity(row), gallery.profile, row.salt, row.sealed,
                                   vault.shreds.secrets([row.template_id])[row.template_id])
    raw = agreement(probe(gallery), codes, gallery.profile.hash_count)
    offsets = vault.template_cohort.offsets(key, gallery.profile, codes)
    assert offsets.shape == (3,) and np.all(offsets != 0)
    assert hit.matched and hit.score == pytest.approx(float(np.max(raw - offsets)), abs=1e-6)
    fresh = Vault(vault.store, vault.keys, VectorExtractor(), shreds=vault.shreds)
    assert fresh.load_index() == (1, 0)
    [reloaded] = fresh.index.galleries("default", FINGERPRINT)
    assert reloaded.search(probe(reloaded), template_id=done.template_id) == [hit]


def test_lockout_after_repeated_failures_is_audited(vault):
    enroll(vault, "ana")
    for shot in range(3):
        assert not run(vault.verify(PANEL, photo("mallory", shot), subject_id="ana", modality=FACE)).matched
    with pytest.raises(LockedOut):
        run(vault.verify(PANEL, photo("ana", 3), subject_id="ana", modality=FACE))
    [lockout] = [r.entry for r in vault.store.audit_records("default") if r.entry.decision == "LOCKED_OUT"]
    assert (lockout.subject_id, lockout.detail) == ("ana", "per-subject limit 3")
    # Another door is not locked out by this one's failures.
    other_door = Identity("default", frozenset({"panel"}), "door-2")
    assert run(vault.verify(other_door, photo("ana", 3), subject_id="ana", modality=FACE)).matched


def test_a_lockout_names_the_limit_that_tripped(vault):
    """The per-client limit tripping on a Verify that names a subject is audited as the per-client
    limit (with the subject the try named), never as the per-subject one."""
    for person in ("ana", "bob", "cem"):
        enroll(vault, person)
    for person in ("ana", "bob", "cem", "ana", "bob"):  # 5 failures, at most 2 per subject
        assert not run(vault.verify(PANEL, photo("mallory", 1), subject_id=person, modality=FACE)).matched
    assert not run(vault.verify(PANEL, photo("mallory", 1), subject_id="cem", modality=FACE)).matched  # the 6th
    [lockout] = [r.entry for r in vault.store.audit_records("default") if r.entry.decision == "LOCKED_OUT"]
    assert (lockout.rpc, lockout.subject_id, lockout.detail) == ("Lockout", "cem", "per-client limit 6")
    with pytest.raises(LockedOut, match="this client"):
        run(vault.verify(PANEL, photo("cem", 3), subject_id="cem", modality=FACE))


def test_fingerprints_by_finger_and_iso_records(vault):
    enroll(vault, "ana", modality=FINGERPRINT, finger=2)
    right_finger = run(vault.verify(PANEL, Sample(ISO_19794_2, sample_bytes("ana", 5)), subject_id="ana",
                                    modality=FINGERPRINT, finger=2))
    wrong_finger = run(vault.verify(PANEL, photo("ana", 5), subject_id="ana", modality=FINGERPRINT, finger=3))
    assert (right_finger.matched, wrong_finger.matched) == (True, False)
    with pytest.raises(InvalidArgument, match="FINGERPRINT only"):
        run(vault.enroll(ENROLLER, "bob", FACE, 2, [photo("bob", 1)]))
    with pytest.raises(InvalidArgument, match="ISO/IEC 19794-2 records are FINGERPRINT"):
        run(vault.enroll(ENROLLER, "bob", FACE, 0, [Sample(ISO_19794_2, sample_bytes("bob", 1))]))


def test_fingerprint_touches_are_kept_apart_and_each_can_match(vault):
    """The fingerprint profile keeps one code per enrolment touch: a probe close to any one touch
    matches, even when the touches disagree (here: two unrelated 'fingers' under one template)."""
    assert CURRENT[FINGERPRINT].keeps_sample_codes
    done = run(vault.enroll(ENROLLER, "ana", FINGERPRINT, 2, [photo("left", 1), photo("right", 1)]))
    (row,) = run(vault.list_templates(AUDITOR, "ana"))
    assert row.sample_count == 2 and len(row.sealed) == 12 + 16 + 2 * CURRENT[FINGERPRINT].template_bytes
    for touch in ("left", "right"):
        assert run(vault.verify(PANEL, photo(touch, 2), template_id=done.template_id, modality=FINGERPRINT)).matched
    assert not run(vault.verify(PANEL, photo("other", 2), template_id=done.template_id, modality=FINGERPRINT)).matched
    found = run(vault.identify(PANEL, photo("right", 3), modality=FINGERPRINT))
    assert [c.template_id for c in found.candidates] == [done.template_id]


@pytest.mark.parametrize("call, error", [
    (lambda v: v.enroll(ENROLLER, "", FACE, 0, [photo("a", 1)]), "subject_id is required"),
    (lambda v: v.enroll(ENROLLER, "x" * 129, FACE, 0, [photo("a", 1)]), "1-128 printable"),
    (lambda v: v.enroll(ENROLLER, "a", 7, 0, [photo("a", 1)]), "modality must be"),
    (lambda v: v.enroll(ENROLLER, "a", FINGERPRINT, 11, [photo("a", 1)]), "finger position"),
    (lambda v: v.enroll(ENROLLER, "a", FACE, 0, []), "at least one sample"),
    (lambda v: v.enroll(ENROLLER, "a", FACE, 0, [photo("a", i) for i in range(11)]), "at most 10"),
    (lambda v: v.enroll(ENROLLER, "a", FACE, 0, [Sample(None)]), "no data"),
    (lambda v: v.verify(PANEL, photo("a", 1), modality=FACE), "subject_id or template_id"),
    (lambda v: v.verify(PANEL, None, subject_id="a", modality=FACE), "probe is required"),
    (lambda v: v.identify(PANEL, photo("a", 1), modality=FACE, max_candidates=101), "max_candidates"),
    (lambda v: v.revoke(AUDITOR, "\x00", subject_id="a"), "reason"),
])
def test_bad_requests_are_invalid_arguments(vault, call, error):
    with pytest.raises(InvalidArgument, match=error):
        run(call(vault))


def test_sample_problems_and_site_rules(vault):
    with pytest.raises(InvalidSample):
        run(vault.enroll(ENROLLER, "a", FACE, 0, [Sample(IMAGE, b"")]))
    with pytest.raises(PoorSample):
        run(vault.enroll(ENROLLER, "a", FACE, 0, [Sample(IMAGE, NO_SIGNAL)]))
    with pytest.raises(FailedPrecondition, match="embeddings"):
        run(vault.enroll(ENROLLER, "a", FACE, 0, [Sample(FACE_EMBEDDING, (0.1,) * 128)]))
    vault.allow_face_embeddings = True
    assert run(vault.enroll(ENROLLER, "a", FACE, 0, [Sample(FACE_EMBEDDING, (0.1,) * 128)])).template_id


def test_auditor_score_bands_only_where_enabled(vault):
    enroll(vault, "ana")
    auditor = Identity("default", frozenset({"auditor"}), "audit")
    assert run(vault.verify(auditor, photo("ana", 3), subject_id="ana", modality=FACE)).score_band == 0
    vault.auditor_score_bands = True
    assert 1 <= run(vault.verify(auditor, photo("ana", 3), subject_id="ana", modality=FACE)).score_band <= 10
    assert run(vault.verify(PANEL, photo("ana", 3), subject_id="ana", modality=FACE)).score_band == 0


def test_key_rotation_keeps_old_templates_matching_until_reenrolled(vault):
    admin = administration_of(vault)
    old = enroll(vault, "ana")
    assert run(admin.rotate_key(Identity("default", frozenset({"admin"}), "root"))) == 2
    new = enroll(vault, "bob")
    assert new.key_version == 2
    assert run(vault.verify(PANEL, photo("ana", 3), template_id=old.template_id)).matched
    status = run(admin.key_status(AUDITOR))
    assert (status.current_key_version, status.live_templates_by_version) == (2, {1: 1, 2: 1})
    assert status.subjects_on_old_versions == ["ana"]
    ((modality, capacity),) = status.identify  # two faces: Identify keeps its default FPIR easily
    assert (modality, capacity.templates, capacity.reachable) == (FACE, 2, True)
    assert [r.subject_id for r in run(vault.list_templates(AUDITOR, only_old_key_versions=True))] == ["ana"]


def test_destroying_an_old_key_version_shreds_its_revoked_templates(vault):
    """Issue 14, finding 4: after rotation and re-enrolment, the old key version can be destroyed;
    a revoked template sealed under it then opens for nobody, keys and a backup in hand or not."""
    from vault.core import row_identity
    from vault.exceptions import FailedPrecondition as Refused
    from vault.exceptions import KeyStoreError as Missing

    admin = administration_of(vault)
    root = Identity("default", frozenset({"admin"}), "root")
    old = enroll(vault, "ana")
    backup = vault.store.get("default", old.template_id)  # a backup taken before anything below
    run(admin.rotate_key(root))
    with pytest.raises(Refused, match="1 live templates use key version 1"):
        run(admin.destroy_key_version(root, 1))
    run(vault.reissue(ENROLLER, old.template_id, [photo("ana", 4)], "key rotation"))
    with pytest.raises(Refused, match="current key version"):
        run(admin.destroy_key_version(root, 2))
    assert run(admin.destroy_key_version(root, 1)) == 1
    assert vault.keys.versions("default") == [2]
    with pytest.raises(Missing):  # the backup's row: its key version no longer exists anywhere
        vault.protector.unseal(vault.keys.tenant_key("default", 1), row_identity(backup), CURRENT[FACE],
                               backup.salt, backup.sealed)
    assert [r.entry.rpc for r in vault.store.audit_records("default")][-1] == "DestroyKeyVersion"


def test_audit_reading_is_per_tenant_and_the_chain_verifies(vault):
    admin = administration_of(vault)
    enroll(vault, "ana")
    run(vault.verify(OTHER_TENANT_PANEL, photo("ana", 1), subject_id="ana", modality=FACE))
    enroll(vault, "bob")
    own = run(admin.read_audit(AUDITOR))
    assert [(n, r.entry.rpc) for n, r in own] == [(1, "Enroll"), (2, "Enroll")]  # the tenant's own numbers
    assert [n for n, _ in run(admin.read_audit(AUDITOR, after=1))] == [2]
    assert run(admin.verify_audit(AUDITOR)) == (2, [])  # this tenant's records only
    with pytest.raises(InvalidArgument):
        run(admin.read_audit(AUDITOR, limit=10_001))
    # A break in another tenant's records is reported without its numbers.
    with vault.store._transaction() as cur:
        cur.execute("UPDATE audit SET decision = 'forged' WHERE tenant = 'other'")
    count, problems = run(admin.verify_audit(AUDITOR))
    assert count == 2 and [(p.seq, "outside this tenant" in p.problem) for p in problems] == [(0, True)]


def test_a_deleted_audit_tail_is_caught_by_the_anchor(vault, tmp_path):
    """Issue 14, finding 3: deleting the newest audit records leaves a consistent but shorter
    chain; the anchor kept outside the database catches it."""
    from vault.access.audit import AuditAnchor

    vault.store.anchor = AuditAnchor(tmp_path / "keys.json.audit-head")
    admin = administration_of(vault)
    for person in ("ana", "bob", "cem"):
        enroll(vault, person)
    assert run(admin.verify_audit(AUDITOR)) == (3, [])
    with vault.store._transaction() as cur:
        cur.execute("DELETE FROM audit WHERE seq > 1")
    count, problems = run(admin.verify_audit(AUDITOR))
    assert [(p.seq, "newest records of the chain were deleted" in p.problem) for p in problems] == [(0, True)]


def test_an_older_face_profiles_templates_keep_matching_until_reissued(vault, monkeypatch):
    """face-iom-v3 (dlib) templates enrolled before face-sface-v1 still decide, at their own
    threshold, with the probe also run through dlib; reissue moves them to the current profile,
    after which probes go through SFace only."""
    from vault.templates.profiles import DLIB, FACE_IOM_V3, SFACE

    current = CURRENT[FACE]
    monkeypatch.setitem(CURRENT, FACE, FACE_IOM_V3)
    old = enroll(vault, "ana")
    enroll(vault, "bob")
    monkeypatch.setitem(CURRENT, FACE, current)
    assert old.profile == "face-iom-v3"
    assert run(vault.verify(PANEL, photo("ana", 3), subject_id="ana", modality=FACE)).matched
    assert set(vault.extractor.last_features) == {DLIB, SFACE}
    assert not run(vault.verify(PANEL, photo("bob", 3), subject_id="ana", modality=FACE)).matched
    for person in ("ana", "bob"):
        [row] = run(vault.list_templates(ENROLLER, person))
        assert run(vault.reissue(ENROLLER, row.template_id, [photo(person, 1)])).profile == current.name
    assert run(vault.verify(PANEL, photo("ana", 3), subject_id="ana", modality=FACE)).matched
    assert vault.extractor.last_features == (SFACE,)


def test_a_try_admitted_after_its_call_was_cancelled_is_closed(vault):
    """The limiter's calls run off the event loop: a Verify cancelled while the store admits its try
    (a client's deadline) ends that try once admitted, counting nothing; no attempt stays open."""
    import threading
    import time

    enroll(vault, "ana")
    admitted = threading.Event()
    begin = vault.store.begin_attempt

    def slow_begin(*args):
        time.sleep(0.3)
        try:
            return begin(*args)
        finally:
            admitted.set()

    vault.store.begin_attempt = slow_begin

    async def main():
        call = asyncio.ensure_future(vault.verify(PANEL, photo("ana", 3), subject_id="ana", modality=FACE))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.to_thread(admitted.wait, 5)
        for _ in range(100):  # the closing end() runs in a thread of its own
            await asyncio.sleep(0.02)
            with vault.store._transaction() as cur:
                if not cur.execute("SELECT count(*) FROM attempts").fetchone()[0]:
                    return True
        return False

    assert run(main())
    del vault.store.begin_attempt
    assert run(vault.verify(PANEL, photo("ana", 3), subject_id="ana", modality=FACE)).matched
