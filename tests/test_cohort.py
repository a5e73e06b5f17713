"""Fast tier: the per-key operating point (vault.cohort) and its use by the gallery."""

from __future__ import annotations

import dataclasses

import numpy as np

from vault import cohort
from vault.keys import TenantKey
from vault.matching import Gallery, agreement
from vault.profiles import CURRENT, FACE, FINGERPRINT
from vault.protection import Protector


def key(seed: int) -> TenantKey:
    rng = np.random.default_rng(seed)
    return TenantKey("t", 1, rng.bytes(32), rng.bytes(32))


def test_the_cohort_is_the_same_everywhere_and_each_key_gets_its_own_shift():
    face = CURRENT[FACE]
    vectors = cohort.cohort_vectors(face.cohort)
    assert vectors.shape == (cohort.COHORT_SIZE, face.feature_dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    shifts = [cohort.CohortShifts(Protector()).shift(key(seed), face) for seed in (1, 1, 2, 3)]
    assert shifts[0] == shifts[1]  # another replica, the same key: the same operating point
    assert len(set(shifts[1:])) == 3 and all(abs(s) < 0.02 for s in shifts)
    assert cohort.CohortShifts(Protector()).shift(key(1), CURRENT[FINGERPRINT]) == 0.0  # no cohort: one for all


def test_a_gallerys_thresholds_move_with_its_keys_shift():
    face = dataclasses.replace(CURRENT[FACE], cohort=None)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2, face.feature_dim)).astype(np.float32)
    vectors[1] = vectors[0] + 0.6 * vectors[1]
    codes = Protector().protect_many(key(5), face, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    score = float(agreement(codes[0], codes[1:], face.hash_count)[0])
    for shift, matched in ((score - face.threshold - 0.01, True), (score - face.threshold + 0.01, False)):
        gallery = Gallery(face, 1, threshold_shift=shift)
        gallery.add("t1", "ana", 0, codes[1])
        assert [h.matched for h in gallery.search(codes[0], template_id="t1")] == [matched]
        assert len(gallery.top(codes[0], limit=1)) == int(matched)
