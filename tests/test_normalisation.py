"""Fast tier: scores normalised against the gallery's own cohort (vault.templates.normalisation, as
vault.templates.matching.Gallery runs it), on real keys and protection and fixed vectors: a crowded
population is judged by its own impostors, and a probe that resembles everyone (a wolf) cannot match."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import numpy as np
import pytest

from conftest import deterministic_key_file
from doubles import VectorExtractor
from vault.access.auth import Identity
from vault.core import FACE_EMBEDDING, Sample, Vault
from vault.custody.keys import LocalKeyFile, TenantKey
from vault.templates.matching import Gallery
from vault.templates.normalisation import CohortNorm, cohort_stats, stats_from_sums
from vault.templates.profiles import CURRENT, FACE, FACE_SFACE_V1
from vault.templates.protection import Protector
from vault.store import open_store

PROFILE = FACE_SFACE_V1
KEY = TenantKey("t", 1, b"p" * 32, b"s" * 32)


def population(rng, people: int, crowding: float, dim: int = 128, shots: int = 2):
    """Unit vectors of `people` people, `shots` each: a direction shared by the whole population
    (weight `crowding`: how alike its people look to the model), each person's own and each shot's noise."""
    shared = rng.standard_normal(dim)
    vectors, owners = [], []
    for person in range(people):
        own = rng.standard_normal(dim)
        for _ in range(shots):
            v = crowding * shared / np.sqrt(dim) + own / np.sqrt(dim) + 0.35 * rng.standard_normal(dim) / np.sqrt(dim)
            vectors.append(v / np.linalg.norm(v))
            owners.append(f"p{person}")
    return np.asarray(vectors, np.float32), np.asarray(owners, dtype=object)


def gallery_of(vectors, owners, profile=PROFILE):
    """One photo of each person enrolled; the others returned as (code, owner) probes."""
    codes = Protector().protect_many(KEY, profile, vectors)
    gallery, probes, seen = Gallery(profile, 1), [], set()
    for code, owner in zip(codes, owners):
        if owner in seen:
            probes.append((code, owner))
        else:
            seen.add(owner)
            gallery.add(uuid.uuid4().hex, owner, 0, code)
    return gallery, probes


def decisions(gallery, probes):
    """(genuine accepted, impostor comparisons accepted, impostor comparisons) over all probes."""
    accepted = false = comparisons = 0
    for code, owner in probes:
        for hit in gallery.search(code, subject_id=owner):
            accepted += hit.matched
        for other in {s for s in gallery._subject_ids if s != owner}:
            for hit in gallery.search(code, subject_id=other):
                false += hit.matched
                comparisons += 1
    return accepted, false, comparisons


def test_small_cohorts_are_shrunk_to_the_prior_and_large_ones_speak_for_themselves():
    norm = CohortNorm(cohort_size=256, prior_mean=0.4, prior_sd=0.05, prior_weight=4.0)
    few = np.array([[0.30, 0.32]])
    many = np.full((1, 400), 0.30) + np.linspace(-0.01, 0.01, 400)[None, :]
    mean_few, _ = cohort_stats(norm, few, np.ones_like(few, bool))
    mean_many, sd_many = cohort_stats(norm, many, np.ones_like(many, bool))
    assert 0.36 < mean_few[0] < 0.4  # two members barely move the prior
    assert abs(mean_many[0] - 0.3) < 0.002 and sd_many[0] < 0.02  # 400 outweigh it
    # left-out members count for nothing: the same as the sums of the kept ones
    keep = np.array([[True, False]])
    assert np.allclose(cohort_stats(norm, few, keep), stats_from_sums(norm, [1], [0.30], [0.09]))


def test_a_crowded_population_is_judged_by_its_own_impostors():
    rng = np.random.default_rng(7)
    spread = population(rng, 40, crowding=0.0)
    crowded = population(rng, 40, crowding=1.3)  # impostors of this population agree far more
    raw = dataclasses.replace(PROFILE, score_norm=None)
    # A raw threshold that the spread-out population's impostors never reach...
    g_spread, p_spread = gallery_of(*spread, profile=raw)
    highest = max(h.score for code, owner in p_spread for h in g_spread.top(code, 100, threshold=-1.0)
                  if h.subject_id != owner)
    raw_at = dataclasses.replace(raw, threshold=highest + 1e-3)
    _, raw_false, raw_count = decisions(*gallery_of(*crowded, profile=raw_at))
    assert raw_false > 0.05 * raw_count  # ...lets the crowded population's impostors through

    # Normalised against each gallery's own cohort, one threshold serves both populations.
    for vectors, owners in (spread, crowded):
        accepted, false, comparisons = decisions(*gallery_of(vectors, owners))
        assert false == 0 and accepted == len(set(owners)), (false, comparisons, accepted)


def test_a_probe_that_resembles_everyone_matches_no_one():
    """The wolf attack (red team 3, finding 1): the population's mean direction, sent as a probe,
    agrees with every template more than a real impostor does; normalised by its agreement with the
    cohort, it matches no one, by Verify or by Identify, while real people still match."""
    rng = np.random.default_rng(11)
    vectors, owners = population(rng, 60, crowding=1.3)
    gallery, probes = gallery_of(vectors, owners)
    wolf = vectors.mean(axis=0)
    wolf_code = Protector().protect(KEY, PROFILE, wolf / np.linalg.norm(wolf))
    # Without normalisation the wolf out-scores every real impostor against most templates: the attack.
    raw = dataclasses.replace(PROFILE, score_norm=None)
    raw_gallery, raw_probes = gallery_of(vectors, owners, profile=raw)
    highest_impostor = max(h.score for code, owner in raw_probes for h in raw_gallery.top(code, 100, threshold=-1.0)
                           if h.subject_id != owner)
    assert len(raw_gallery.top(wolf_code, 100, threshold=highest_impostor + 1e-6)) > 30
    for subject in set(owners):
        assert not any(h.matched for h in gallery.search(wolf_code, subject_id=subject))
    assert gallery.top(wolf_code, 10, per_comparison_fmr=1e-4) == []
    genuine = sum(any(h.matched for h in gallery.search(code, subject_id=owner)) for code, owner in probes)
    assert genuine == len(probes)


@pytest.fixture
def vault(tmp_path):
    keys = LocalKeyFile(deterministic_key_file(tmp_path / "keys.json"))
    store = open_store(f"sqlite:///{tmp_path / 'vault.db'}", keys.audit_key())
    yield Vault(store, keys, VectorExtractor(), allow_face_embeddings=True)
    store.close()


def test_the_mean_face_sent_as_an_embedding_opens_no_door(vault):
    """Finding 1 through the core: a panel's Verify with the gallery's mean embedding, one try per
    enrolled person, matches none; each person's own embedding matches."""
    rng = np.random.default_rng(3)
    vectors, owners = population(rng, 20, crowding=1.3, shots=2)
    enroller = Identity("default", frozenset({"enroller"}), "hr")
    panel = Identity("default", frozenset({"panel"}), "door")
    firsts = {}
    for vector, owner in zip(vectors, owners):
        if owner not in firsts:
            firsts[owner] = vector
            asyncio.run(vault.enroll(enroller, owner, FACE, 0, [Sample(FACE_EMBEDDING, tuple(map(float, vector)))]))
    mean = vectors.mean(axis=0)
    for owner in firsts:
        wolf = asyncio.run(vault.verify(panel, Sample(FACE_EMBEDDING, tuple(map(float, mean))), subject_id=owner,
                                        modality=FACE))
        assert not wolf.matched
    second = {o: v for v, o in zip(vectors[::-1], owners[::-1])}  # each person's other shot
    matched = [asyncio.run(vault.verify(panel, Sample(FACE_EMBEDDING, tuple(map(float, v))), subject_id=o,
                                        modality=FACE)).matched for o, v in second.items()]
    assert sum(matched) == len(matched)
    assert CURRENT[FACE].score_norm is not None


def test_a_gallery_after_enrolments_and_revocations_decides_as_one_built_afresh():
    """The cohort and the templates' statistics are kept between searches and updated as templates
    come and go (a revoked template outside the cohort leaves it as it was): every score equals
    that of a gallery built afresh from the templates that remain."""
    rng = np.random.default_rng(5)
    vectors, owners = population(rng, 40, crowding=1.0)
    small = dataclasses.replace(PROFILE, score_norm=dataclasses.replace(PROFILE.score_norm, cohort_size=8))
    codes = Protector().protect_many(KEY, small, vectors)
    ids = [uuid.uuid4().hex for _ in codes]
    kept = Gallery(small, 1)
    for template_id, owner, code in zip(ids[::2], owners[::2], codes[::2]):
        kept.add(template_id, owner, 0, code)
    probe = codes[1]
    kept.top(probe, 100, threshold=-1e9)  # the cohort and every template's statistics, computed
    gone = ids[::2][::3]
    for template_id in gone:
        kept.remove(template_id)
    for template_id, owner, code in zip(ids[1::4], owners[1::4], codes[1::4]):
        kept.add(template_id, owner, 0, code)
    fresh = Gallery(small, 1)
    for template_id, owner, code in zip(ids, owners, codes):
        if template_id in kept:
            fresh.add(template_id, owner, 0, code)
    scores = {h.template_id: h.score for h in kept.top(probe, 100, threshold=-1e9)}
    assert len(scores) == len(fresh) and not set(gone) & set(scores)
    assert scores == {h.template_id: h.score for h in fresh.top(probe, 100, threshold=-1e9)}


def test_the_population_benchmark_scores_as_the_gallery_does():
    """benchmarks.calibration.face_population recomputes the normalised scores from sums, for speed: they are the
    scores vault.templates.matching.Gallery decides on."""
    from benchmarks.calibration.face_population import deploy, normalised_scores

    rng = np.random.default_rng(9)
    vectors, owners = population(rng, 12, crowding=1.0, shots=3)
    deployment = deploy(Protector(), PROFILE, vectors, owners, rounds=1, key=KEY)
    genuine, impostor = normalised_scores(deployment, PROFILE.score_norm)
    gallery, probes = gallery_of(vectors, owners)
    by_gallery_genuine, by_gallery_impostor = [], []
    for code, owner in probes:
        for hit in gallery.top(code, 100, threshold=-1e9):
            (by_gallery_genuine if hit.subject_id == owner else by_gallery_impostor).append(hit.score)
    assert np.allclose(sorted(genuine), sorted(by_gallery_genuine), atol=1e-5)
    assert np.allclose(sorted(impostor), sorted(by_gallery_impostor), atol=1e-5)
