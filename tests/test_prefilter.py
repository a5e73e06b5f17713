"""Fast tier: the 1:N prefilter (vault.templates.prefilter) reads a prefix of every code and scores the best
candidates in full; its answers are the full scan's on galleries where it is switched on."""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np

from vault.templates.identification import per_comparison_fmr
from vault.templates.matching import Gallery
from vault.templates.prefilter import Prefilter, best_rows
from vault.templates.profiles import FACE_SFACE_V1
from vault.templates.protection import Protector
from vault.custody.keys import TenantKey

# The shipped rule, switched on from 2,000 rows and keeping 1/32 of them (at least 64), so a
# fast test searches galleries past the point where it applies.
SMALL = dataclasses.replace(FACE_SFACE_V1, prefilter=Prefilter(words=16, share=1 / 32, minimum=64, from_rows=2000))


def _people(n: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((n, 128)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _another_photo(vectors: np.ndarray, rng: np.random.Generator, noise: float = 0.045) -> np.ndarray:
    moved = vectors + noise * rng.standard_normal(vectors.shape).astype(np.float32)
    return moved / np.linalg.norm(moved, axis=1, keepdims=True)


KEY = TenantKey("t", 1, bytes(range(32)), bytes(range(32, 64)))
PROTECTOR = Protector()


def _protect(vectors: np.ndarray) -> np.ndarray:
    return PROTECTOR.protect_many(KEY, SMALL, vectors)


def _enrolled(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`count` people: their feature vectors, their codes and their names."""
    people = _people(count, rng)
    return people, _protect(people), [f"person-{i}" for i in range(count)]


def _id(name: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_OID, name).hex


def _gallery(profile, codes: np.ndarray, names: list[str]) -> Gallery:
    gallery = Gallery(profile, 1)
    for code, name in zip(codes, names):
        gallery.add(_id(name), name, 0, code)
    return gallery


def test_prefiltered_identify_answers_as_the_full_scan_and_reads_only_the_candidates():
    rng = np.random.default_rng(5)
    people, codes, names = _enrolled(3000, rng)
    prefiltered = _gallery(SMALL, codes, names)
    full = _gallery(dataclasses.replace(SMALL, prefilter=None), codes, names)
    fmr = per_comparison_fmr(0.01, len(names))

    probes = _protect(_another_photo(people[:40], rng))
    strangers = _protect(_people(40, rng))
    found = 0
    for probe in np.concatenate([probes, strangers]):
        ours = prefiltered.top(probe, 3, per_comparison_fmr=fmr)
        theirs = full.top(probe, 3, per_comparison_fmr=fmr)
        assert [(h.subject_id, h.score) for h in ours] == [(h.subject_id, h.score) for h in theirs]
        found += bool(ours)
    assert found >= 30  # the genuine searches find their person: the comparison is not of empty answers

    candidates = prefiltered._candidates(probes[0], np.arange(len(names)), len(names), 0)
    assert SMALL.prefilter.keeps(len(names)) <= len(candidates) < len(names) // 10  # ties at the cut kept too
    assert 0 in candidates  # the probe's own person is among the rows scored in full


def test_prefixes_follow_the_codes_through_revocations():
    rng = np.random.default_rng(6)
    people, codes, names = _enrolled(2500, rng)
    gallery = _gallery(SMALL, codes, names)
    for i in range(0, 2500, 7):  # removals move the last row into each hole
        assert gallery.remove(_id(names[i]))
    n = len(gallery._template_ids)
    assert np.array_equal(gallery._prefixes[:n], gallery._codes[:n, :SMALL.prefilter.words])
    kept = [i for i in range(2500) if i % 7]
    fresh = _gallery(SMALL, codes[kept], [names[i] for i in kept])
    probe = _protect(_another_photo(people[1:2], rng))[0]
    fmr = per_comparison_fmr(0.01, len(kept))
    assert [h.subject_id for h in gallery.top(probe, 3, per_comparison_fmr=fmr)] == \
           [h.subject_id for h in fresh.top(probe, 3, per_comparison_fmr=fmr)] == ["person-1"]


def test_best_rows_keeps_ties_whatever_the_row_order():
    mismatches = np.array([5, 1, 3, 3, 9, 3, 0])
    assert best_rows(mismatches, 3).tolist() == [1, 2, 3, 5, 6]  # the third best is tied three ways
    assert best_rows(mismatches[::-1], 3).tolist() == [0, 1, 3, 4, 5]
    assert best_rows(mismatches, 10).tolist() == list(range(7))
    offsets = np.array([0.0, 4.5, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert best_rows(mismatches, 2, offsets).tolist() == [2, 3, 5, 6]  # row 1 falls behind by its offset


def test_a_gallery_loaded_in_bulk_is_the_gallery_built_one_by_one():
    rng = np.random.default_rng(7)
    people, codes, names = _enrolled(2200, rng)
    ids = [_id(name) for name in names]
    one_by_one = _gallery(SMALL, codes, names)
    bulk = Gallery(SMALL, 1)
    bulk.add_many(ids[:1000], names[:1000], codes[:1000])
    bulk.add_many(ids[900:] + ids[:5], names[900:] + names[:5], np.concatenate([codes[900:], codes[:5]]))  # repeats skipped
    assert len(bulk) == len(one_by_one) == 2200
    n = len(bulk._template_ids)
    assert np.array_equal(bulk._codes[:n], one_by_one._codes[:n])
    assert np.array_equal(bulk._prefixes[:n], one_by_one._prefixes[:n])
    probe = _protect(_another_photo(people[3:4], rng))[0]
    fmr = per_comparison_fmr(0.01, 2200)
    assert [(h.subject_id, h.score) for h in bulk.top(probe, 2, per_comparison_fmr=fmr)] == \
           [(h.subject_id, h.score) for h in one_by_one.top(probe, 2, per_comparison_fmr=fmr)]
    assert bulk.search(probe, subject_id="person-3")[0].matched
