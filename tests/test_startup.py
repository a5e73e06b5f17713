"""Fast tier: a replica's start-up in shares (vault.startup), in this process and in worker
processes: the same index, the same decisions as the index enrolment built, and every tampered row
refused, whichever worker's share it lies in."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

import vault.core
import vault.startup
from conftest import deterministic_key_file
from doubles import VectorExtractor, sample_bytes
from vault.access.auth import Identity
from vault.core import IMAGE, Sample, Vault
from vault.custody.keys import LocalKeyFile
from vault.custody.shredding import ledger_path, open_ledger
from vault.store import open_store
from vault.templates.profiles import FACE, FINGERPRINT

ENROLLER = Identity("default", frozenset({"enroller"}), "hr")
PANEL = Identity("default", frozenset({"panel"}), "door-1")
OTHER_ENROLLER = Identity("other", frozenset({"enroller"}), "hr")
OTHER_PANEL = Identity("other", frozenset({"panel"}), "door-9")
SHARE = 4  # rows a share in these tests: a dozen templates make several shares, over both workers


def run(coroutine):
    return asyncio.run(coroutine)


def photo(person: str, shot: int) -> Sample:
    return Sample(IMAGE, sample_bytes(person, shot))


@pytest.fixture
def enrolled(tmp_path, monkeypatch):
    """A vault with faces and fingerprints (one touch, several kept apart) of two tenants, one of
    them over two key versions; shares of SHARE rows."""
    monkeypatch.setattr(vault.core, "SHARE_ROWS", SHARE)
    monkeypatch.setattr(vault.startup, "SHARE_ROWS", SHARE)
    keys = LocalKeyFile(deterministic_key_file(tmp_path / "keys.json"))
    store = open_store(f"sqlite:///{tmp_path / 'vault.db'}", keys.audit_key())
    shreds = open_ledger(ledger_path(keys.path), keys)
    core = Vault(store, keys, VectorExtractor(), shreds=shreds)
    done = {}
    for person in ("ana", "bob", "cem", "dia", "eve"):
        done[person] = run(core.enroll(ENROLLER, person, FACE, 0, [photo(person, 1), photo(person, 2)]))
    keys.rotate("default")
    for person in ("fay", "gus"):
        done[person] = run(core.enroll(ENROLLER, person, FACE, 0, [photo(person, 1)]))
    done["hal"] = run(core.enroll(ENROLLER, "hal", FINGERPRINT, 2, [photo("hal", 1)]))
    done["ivy"] = run(core.enroll(ENROLLER, "ivy", FINGERPRINT, 3, [photo("ivy", s) for s in (1, 2, 3)]))
    for person in ("jon", "kim"):
        done[person] = run(core.enroll(OTHER_ENROLLER, person, FACE, 0, [photo(person, 1)]))
    yield core, done
    store.close()
    shreds.close()


def reloaded(core: Vault, workers: int, tenants=None) -> tuple[Vault, tuple[int, int]]:
    fresh = Vault(core.store, core.keys, VectorExtractor(), shreds=core.shreds, load_workers=workers)
    return fresh, fresh.load_index(tenants)


def index_contents(core: Vault) -> dict:
    """Everything the index holds, gallery by gallery and template by template (row order aside)."""
    held = {}
    for (tenant, modality), galleries in core.index._groups.items():
        for (profile, key_version), gallery in galleries.items():
            n = len(gallery._template_ids)
            templates = {}
            for row in range(n):
                template_id = gallery._template_ids[row]
                templates.setdefault(template_id, []).append((
                    gallery._subject_ids[row], gallery._codes[row].tobytes(), int(gallery._fingers[row]),
                    bool(gallery._fused[row]), float(gallery._offsets[row]), int(gallery._orders[row])))
            if gallery._prefix_words:
                assert np.array_equal(gallery._prefixes[:n], gallery._codes[:n, :gallery._prefix_words])
            held[(tenant, modality, profile, key_version)] = (gallery.threshold_shift, templates)
    return held


def decisions(core: Vault, done: dict) -> list:
    answers = []
    for person in ("ana", "cem", "fay", "zed"):
        answers.append(run(core.verify(PANEL, photo(person, 3), subject_id=person, modality=FACE)).matched)
        answers.append([c.template_id for c in run(core.identify(PANEL, photo(person, 3), modality=FACE,
                                                                  max_candidates=3)).candidates])
    for person, finger in (("hal", 2), ("ivy", 3)):
        answers.append(run(core.verify(PANEL, photo(person, 4), template_id=done[person].template_id,
                                       modality=FINGERPRINT)).matched)
        answers.append([c.template_id for c in run(core.identify(PANEL, photo(person, 4), modality=FINGERPRINT,
                                                                  finger=finger)).candidates])
    answers.append(run(core.verify(OTHER_PANEL, photo("jon", 3), subject_id="jon", modality=FACE)).matched)
    return answers


@pytest.mark.parametrize("workers", [0, 2])
def test_a_start_up_in_shares_builds_the_index_enrolment_built(enrolled, workers):
    core, done = enrolled
    fresh, counts = reloaded(core, workers)
    assert counts == (len(done), 0)
    assert index_contents(fresh) == index_contents(core)
    expected = decisions(core, done)
    assert expected[:2] == [True, [done["ana"].template_id]]  # the decisions compared are real ones
    assert decisions(fresh, done) == expected


def test_workers_load_only_a_replica_groups_tenants(enrolled):
    core, done = enrolled
    fresh, counts = reloaded(core, 2, tenants=["other"])
    assert counts == (2, 0)
    assert fresh.index.template_ids() == {done["jon"].template_id, done["kim"].template_id}


def test_tampered_rows_in_workers_shares_are_refused_and_never_match(enrolled, caplog):
    """The attack: write access to the database. One row's sealed code edited, two rows' sealed codes
    swapped, one row moved to another subject, one copied into another tenant (sealed under the
    first tenant's key), and one whose shred secret a revocation erased: each is refused by the
    worker that reads its share, logged by template id, and matches no one; every other template
    loads as before, a retired profile's row is skipped, and the ledger's start-up sweep (fed the
    live ids the workers read) shreds no live template's secret."""
    core, done = enrolled
    edited, (swap_a, swap_b), moved, foreign, shredded = (done["bob"], (done["cem"], done["dia"]), done["fay"],
                                                          done["eve"], done["gus"])
    with core.store._transaction() as cur:
        sealed = bytearray(cur.execute("SELECT sealed FROM templates WHERE template_id = ?",
                                       (edited.template_id,)).fetchone()[0])
        sealed[40] ^= 1
        cur.execute("UPDATE templates SET sealed = ? WHERE template_id = ?", (bytes(sealed), edited.template_id))
        a, b = (cur.execute("SELECT salt, sealed FROM templates WHERE template_id = ?", (t.template_id,)).fetchone()
                for t in (swap_a, swap_b))
        cur.execute("UPDATE templates SET salt = ?, sealed = ? WHERE template_id = ?", (*b, swap_a.template_id))
        cur.execute("UPDATE templates SET salt = ?, sealed = ? WHERE template_id = ?", (*a, swap_b.template_id))
        cur.execute("UPDATE templates SET subject_id = 'ana' WHERE template_id = ?", (moved.template_id,))
        cur.execute("UPDATE templates SET tenant = 'other' WHERE template_id = ?", (foreign.template_id,))
        cur.execute("UPDATE templates SET profile = 'finger-iom-v1' WHERE template_id = ?", (done["hal"].template_id,))
    core.shreds.shred([shredded.template_id])  # revocation's erasure, its row left in place
    held = len(core.shreds.secrets())
    tampered = {t.template_id for t in (edited, swap_a, swap_b, moved, foreign, shredded)}
    caplog.set_level(logging.WARNING, logger="vault.core")
    fresh, counts = reloaded(core, 2)
    assert counts == (len(done) - len(tampered) - 1, len(tampered))
    assert {r.getMessage().split()[1] for r in caplog.records if "excluded from matching" in r.getMessage()} == tampered
    assert "1 live templates use retired protection profiles" in caplog.text
    assert not (tampered | {done["hal"].template_id}) & fresh.index.template_ids()
    for person in ("bob", "cem", "dia", "fay", "gus"):
        assert not run(fresh.verify(PANEL, photo(person, 3), subject_id=person, modality=FACE)).matched
        assert run(fresh.identify(PANEL, photo(person, 3), modality=FACE)).candidates == []
    assert not run(fresh.verify(PANEL, photo("fay", 3), subject_id="ana", modality=FACE)).matched
    assert not run(fresh.verify(OTHER_PANEL, photo("eve", 3), subject_id="eve", modality=FACE)).matched
    assert run(fresh.verify(PANEL, photo("ana", 3), subject_id="ana", modality=FACE)).matched
    assert len(core.shreds.secrets()) == held


def test_secrets_a_rotation_moved_are_read_again_by_the_server(enrolled, monkeypatch):
    """A revocation that rotates a ledger bucket while the load runs leaves the epoch keys the share
    was given behind: those rows are opened again by the server, never refused for it."""
    core, done = enrolled
    monkeypatch.setattr(type(core.shreds), "epoch_keys", lambda self: {})  # every epoch key as if rotated away
    fresh, counts = reloaded(core, 0)
    assert counts == (len(done), 0)
    assert index_contents(fresh) == index_contents(core)
