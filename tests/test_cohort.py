"""Fast tier: the per-key operating point (vault.templates.cohort) and its use by the gallery."""

from __future__ import annotations

import dataclasses

import numpy as np

from vault.templates import cohort
from vault.custody.keys import TenantKey
from vault.templates.matching import Gallery, agreement
from vault.templates.profiles import CURRENT, FACE, FACE_IOM_V3, FINGERPRINT
from vault.templates.protection import Protector


def key(seed: int) -> TenantKey:
    rng = np.random.default_rng(seed)
    return TenantKey("t", 1, rng.bytes(32), rng.bytes(32))


def test_the_cohort_is_the_same_everywhere_and_each_key_gets_its_own_shift():
    face = FACE_IOM_V3
    vectors = cohort.cohort_vectors(face.cohort)
    assert vectors.shape == (cohort.COHORT_SIZE, face.feature_dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    shifts = [cohort.CohortShifts(Protector()).shift(key(seed), face) for seed in (1, 1, 2, 3)]
    assert shifts[0] == shifts[1]  # another replica, the same key: the same operating point
    assert len(set(shifts[1:])) == 3 and all(abs(s) < 0.02 for s in shifts)
    assert cohort.CohortShifts(Protector()).shift(key(1), CURRENT[FINGERPRINT]) == 0.0  # no cohort: one for all


def probe_and_template(profile, seed: int, spread: float):
    """Codes of a probe and of a template near it under one key, and their agreement."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((2, profile.feature_dim)).astype(np.float32)
    vectors[1] = vectors[0] + spread * vectors[1]
    codes = Protector().protect_many(key(seed + 5), profile, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    return codes, float(agreement(codes[0], codes[1:], profile.hash_count)[0])


def test_a_gallerys_thresholds_move_with_its_keys_shift():
    face = dataclasses.replace(FACE_IOM_V3, cohort=None)
    codes, score = probe_and_template(face, 0, 0.6)
    for shift, matched in ((score - face.threshold - 0.01, True), (score - face.threshold + 0.01, False)):
        gallery = Gallery(face, 1, threshold_shift=shift)
        gallery.add("t1", "ana", 0, codes[1])
        assert [h.matched for h in gallery.search(codes[0], template_id="t1")] == [matched]
        assert len(gallery.top(codes[0], limit=1)) == int(matched)


def test_each_fingerprint_template_gets_its_own_offset_the_same_on_every_replica():
    finger = CURRENT[FINGERPRINT]
    assert finger.template_cohort is not None
    members = cohort.template_cohort_vectors(finger.template_cohort)
    assert members.shape[1] == finger.feature_dim and len(members) >= 200  # a few prints may be refused
    rng = np.random.default_rng(1)
    vectors = members[rng.choice(len(members), 3, replace=False)] + 0.05 * rng.standard_normal((3, finger.feature_dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    codes = Protector().protect_many(key(1), finger, vectors)
    offsets = cohort.TemplateCohort(Protector()).offsets(key(1), finger, codes)
    again = cohort.TemplateCohort(Protector()).offsets(key(1), finger, codes)  # another replica
    np.testing.assert_array_equal(offsets, again)
    assert offsets.shape == (3,) and len(set(offsets.tolist())) == 3 and np.all(np.abs(offsets) < 0.05)
    assert cohort.TemplateCohort(Protector()).offsets(key(1), FACE_IOM_V3, codes[0]) is None


def test_a_gallery_takes_each_rows_offset_off_its_scores():
    finger = CURRENT[FINGERPRINT]
    codes, score = probe_and_template(finger, 1, 0.9)
    for offset, matched in ((score - finger.threshold - 0.01, True), (score - finger.threshold + 0.01, False)):
        gallery = Gallery(finger, 1)
        gallery.add("t1", "ana", 1, codes[1], offsets=np.array([offset]))
        [hit] = gallery.search(codes[0], template_id="t1")
        assert hit.matched == matched and abs(hit.score - (score - offset)) < 1e-6
        assert len(gallery.top(codes[0], limit=1)) == int(matched)
