"""The comparison kernel and the galleries: exactly the scores of a plain comparison of IoM indices,
for codes made by the real transform, at every chunk boundary and after any add/remove sequence."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.conftest import deterministic_key_file
from vault.hazmat.iom import pack_indices, unpack_indices
from vault.custody.keys import LocalKeyFile
from vault.templates.matching import Gallery, MatchIndex, agreement
from vault.templates.profiles import FACE, FACE_IOM_V1, FINGER_IOM_V1, PROFILES, ProtectionProfile
from vault.templates.protection import Protector


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return LocalKeyFile(deterministic_key_file(tmp_path_factory.mktemp("keys") / "keys.json")).tenant_key("default", 1)


@pytest.fixture(scope="module")
def protector():
    return Protector()


REAL_CODES = 64  # the real transform of 13,752-D fingerprint vectors takes ~8 ms each: vary beyond this


def codes_for(protector, key, profile: ProtectionProfile, n: int, seed: int) -> np.ndarray:
    """Codes from the real transform: random unit vectors through the tenant's projection. Past
    REAL_CODES rows, real codes with a random tenth of their indices redrawn: as many distinct
    scores as rows, at a fraction of the cost."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((min(n, REAL_CODES), profile.feature_dim)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    codes = protector.protect_many(key, profile, features)
    if n <= REAL_CODES:
        return codes
    indices = unpack_indices(codes[rng.integers(0, len(codes), n)], profile.hash_width)
    redraw = rng.random(indices.shape) < 0.1
    indices[redraw] = rng.integers(0, profile.hash_width, int(redraw.sum()), dtype=np.uint8)
    return pack_indices(indices, profile.hash_width)


def reference(probe: np.ndarray, codes: np.ndarray, profile: ProtectionProfile) -> np.ndarray:
    """The definition: the fraction of positions whose IoM index is equal."""
    equal = unpack_indices(codes, profile.hash_width) == unpack_indices(probe, profile.hash_width)
    return (1.0 - (profile.hash_count - equal.sum(axis=-1)) / profile.hash_count).astype(np.float32)


# One profile per code shape in use (the newest): versions that keep a transform (finger v4-v6) share a kernel.
SHAPES = list({(p.feature_dim, p.hash_count, p.hash_width, p.projection): p
               for p in PROFILES.values() if not p.retired}.values())


@pytest.mark.parametrize("profile", SHAPES, ids=lambda p: p.name)
@pytest.mark.parametrize("n", [0, 1, 7, 4095, 4096, 8525])
def test_agreement_is_exactly_the_index_agreement(protector, key, profile, n):
    codes = codes_for(protector, key, profile, n + 1, seed=n)
    probe, gallery = codes[0], codes[1:]
    expected = reference(probe, gallery, profile)
    got = agreement(probe, gallery, profile.hash_count)
    assert got.dtype == np.float32 and np.array_equal(got, expected)


@pytest.mark.parametrize("hash_width, hash_count", [(2, 64), (4, 512), (16, 1024), (32, 2048)])
def test_agreement_other_shapes(hash_width, hash_count):
    """Shapes no current profile uses (one plane, 8 or 32 words) get their own compiled kernel."""
    rng = np.random.default_rng(hash_width)
    indices = rng.integers(0, hash_width, size=(4101, hash_count), dtype=np.uint8)
    indices[1:50] = indices[0]  # exact matches: score 1.0
    packed = pack_indices(indices, hash_width)
    probe, codes = packed[0], packed[1:]
    equal = (indices[1:] == indices[0]).sum(axis=1)
    expected = (1.0 - (hash_count - equal) / hash_count).astype(np.float32)
    assert np.array_equal(agreement(probe, codes, hash_count), expected)
    assert (expected[:49] == 1.0).all()


def test_gallery_matches_brute_force_after_adds_and_removes(protector, key):
    profile = FINGER_IOM_V1
    codes = codes_for(protector, key, profile, 700, seed=1)
    rng = np.random.default_rng(2)
    gallery = Gallery(profile, 1)
    live: dict[str, tuple[str, int, np.ndarray]] = {}
    for i, code in enumerate(codes[1:]):  # grows past its initial capacity several times
        template_id, subject, finger = f"t{i}", f"s{i % 97}", int(rng.integers(1, 4))
        gallery.add(template_id, subject, finger, code)
        live[template_id] = (subject, finger, code)
        if rng.random() < 0.3:  # remove a random live one, often not the last row
            gone = sorted(live)[int(rng.integers(len(live)))]
            assert gallery.remove(gone)
            del live[gone]
    assert not gallery.remove("t-unknown")
    assert len(gallery) == len(live) and gallery.template_ids() == set(live)

    probe = codes[0]
    # Make one subject's template an exact copy of the probe: it must come first with score 1.0.
    target = sorted(live)[5]
    subject, finger, _ = live[target]
    assert gallery.remove(target)
    gallery.add(target, subject, finger, probe)
    live[target] = (subject, finger, probe)

    ids = sorted(live)
    scores = dict(zip(ids, reference(probe, np.stack([live[t][2] for t in ids]), profile)))
    for chosen_finger in (0, finger):
        eligible = [t for t in ids if not chosen_finger or live[t][1] == chosen_finger]
        threshold = float(np.quantile([scores[t] for t in eligible], 0.9))
        expected = sorted((t for t in eligible if scores[t] >= threshold), key=lambda t: (-scores[t], t))
        hits = gallery.top(probe, limit=len(eligible), finger=chosen_finger, threshold=threshold)
        assert hits[0].template_id == target and hits[0].score == 1.0
        assert sorted(h.template_id for h in hits) == sorted(expected)
        assert all(h.score == pytest.approx(float(scores[h.template_id]), abs=0) for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert all(h.subject_id == live[h.template_id][0] for h in hits)
        assert len(gallery.top(probe, limit=3, finger=chosen_finger, threshold=threshold)) == min(3, len(expected))

    hits = gallery.search(probe, subject_id=subject)
    assert {h.template_id for h in hits} == {t for t in ids if live[t][0] == subject}
    assert all(h.score == scores[h.template_id] for h in hits)
    assert gallery.has(template_id=target, finger=finger) and not gallery.has(template_id=target, finger=9)


def test_templates_kept_as_several_codes_score_their_best_code(protector, key):
    """A profile that keeps enrolment samples apart: a template holds one row per code, scores
    the probe's best agreement with any of them, is found once by 1:N, counts each code as a
    comparison, and leaves every other template intact when removed (rows move into its holes)."""
    profile = dataclasses.replace(FINGER_IOM_V1, keeps_sample_codes=True)
    codes = codes_for(protector, key, profile, 40, seed=5)
    rng = np.random.default_rng(6)
    gallery = Gallery(profile, 1)
    live: dict[str, tuple[str, np.ndarray]] = {}
    for i in range(12):  # templates of 1-4 codes each; grows past the initial 16 rows
        k = int(rng.integers(1, 5))
        template_codes = codes[1 + rng.choice(39, k, replace=False)]
        gallery.add(f"t{i}", f"s{i % 5}", 0, template_codes, sample_count=k)
        live[f"t{i}"] = (f"s{i % 5}", template_codes)
        if i % 3 == 2:
            gone = sorted(live)[int(rng.integers(len(live)))]
            assert gallery.remove(gone)
            del live[gone]
    assert len(gallery) == len(live) and gallery.template_ids() == set(live)
    assert gallery.count() == sum(len(c) for _, c in live.values())
    probe = codes[0]
    best = {t: float(reference(probe, c, profile).max()) for t, (_, c) in live.items()}
    for template_id, (subject, _) in live.items():
        (hit,) = gallery.search(probe, template_id=template_id)
        assert (hit.template_id, hit.subject_id, hit.score) == (template_id, subject, pytest.approx(best[template_id], abs=0))
    hits = gallery.top(probe, limit=100, threshold=0.0)
    assert sorted(h.template_id for h in hits) == sorted(live)  # one hit per template
    assert [h.score for h in hits] == sorted(best.values(), reverse=True)


def test_each_template_is_decided_at_its_own_enrolment_threshold(protector, key):
    """A profile with a fused threshold: one-sample and several-sample templates of the same score
    get different decisions, in 1:1 (Hit.matched) and in 1:N (top), also after rows move."""
    base = FINGER_IOM_V1
    codes = codes_for(protector, key, base, 3, seed=4)
    probe = codes[0]
    score = float(agreement(probe, codes[1:2], base.hash_count)[0])
    profile = dataclasses.replace(base, name="two-thresholds", threshold=score - 0.01, fused_threshold=score + 0.01)
    assert profile.threshold_for(1) < score < profile.threshold_for(3) == profile.threshold_for(2)
    gallery = Gallery(profile, 1)
    gallery.add("filler", "f", 0, codes[2], sample_count=1)
    gallery.add("single", "s", 0, codes[1], sample_count=1)
    gallery.add("fused", "u", 0, codes[1], sample_count=3)
    assert gallery.remove("filler")  # moves the last row ("fused") into row 0
    assert [h.matched for h in gallery.search(probe, template_id="single")] == [True]
    assert [h.matched for h in gallery.search(probe, template_id="fused")] == [False]
    assert [h.template_id for h in gallery.top(probe, limit=5)] == ["single"]
    assert sorted(h.template_id for h in gallery.top(probe, limit=5, threshold=score)) == ["fused", "single"]


def test_match_index_groups_and_removal(protector, key):
    codes = codes_for(protector, key, FACE_IOM_V1, 3, seed=3)
    index = MatchIndex()
    index.add("t", FACE, FACE_IOM_V1, 1, "a", "alice", 0, codes[0])
    index.add("t", FACE, FACE_IOM_V1, 2, "b", "bob", 0, codes[1])  # another key version: another gallery
    index.add("u", FACE, FACE_IOM_V1, 1, "c", "carol", 0, codes[2])
    assert len(index.galleries("t", FACE)) == 2 and index.count("t") == 2 and index.count() == 3
    assert index.remove("t", FACE, "b") and not index.remove("t", FACE, "c")  # tenant-scoped
    assert index.template_ids() == {"a", "c"}


def test_a_removed_template_is_never_added_back():
    from vault.templates.matching import MatchIndex
    from vault.templates.profiles import FACE, FACE_IOM_V1

    index = MatchIndex()
    code = np.zeros((FACE_IOM_V1.planes, FACE_IOM_V1.words), dtype=np.uint64)
    index.add("t", FACE, FACE_IOM_V1, 1, "a", "alice", 0, code)
    assert index.remove("t", FACE, "a")
    index.add("t", FACE, FACE_IOM_V1, 1, "a", "alice", 0, code)  # a stale 'add' from a change feed
    assert index.template_ids() == set()
    # Removing before the add ever arrived also holds.
    index.remove("t", FACE, "b")
    index.add("t", FACE, FACE_IOM_V1, 1, "b", "bob", 0, code)
    assert index.count("t") == 0
