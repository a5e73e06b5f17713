"""Comparison scores of a data set: raw features (cosine) and protected templates (the vault's own
Protector and agreement kernel, under fresh random tenant keys)."""

from __future__ import annotations

import secrets
import time

import numpy as np

from benchmarks.features import Features
from vault.custody.keys import TenantKey
from vault.templates.matching import _interleaved_agreement, agreement
from vault.templates.profiles import ProtectionProfile
from vault.templates.protection import Protector


def fresh_key(tenant: str = "bench", version: int = 1) -> TenantKey:
    """A new random tenant key (projection and storage secrets drawn as vault.custody.keys draws them;
    held in memory only)."""
    return TenantKey(tenant, version, secrets.token_bytes(32), secrets.token_bytes(32))


def one_to_many_ns(codes: np.ndarray, hash_count: int, gallery_size: int = 100_000) -> tuple[float, int]:
    """Nanoseconds a pair of one probe against about gallery_size packed codes (copies of `codes`,
    (n, planes, words)), held interleaved (n, words, planes) as vault.templates.matching.Gallery holds them;
    returns (ns, the gallery's size)."""
    gallery = np.repeat(codes, max(1, gallery_size // len(codes)), axis=0)
    interleaved = np.ascontiguousarray(gallery.transpose(0, 2, 1))
    probe = np.ascontiguousarray(codes[0].T)
    _interleaved_agreement(probe, interleaved[:10], hash_count)  # kernel compiled before timing
    started = time.perf_counter()
    _interleaved_agreement(probe, interleaved, hash_count)
    return 1e9 * (time.perf_counter() - started) / len(interleaved), len(interleaved)


def protected_codes(features: Features, profile: ProtectionProfile, key: TenantKey | None = None) -> np.ndarray:
    """Packed codes of every feature vector under `key` (a fresh one if None)."""
    return Protector().protect_many(key or fresh_key(), profile, features.vectors)


def pair_scores(pairs, *, vectors: np.ndarray | None = None, codes: np.ndarray | None = None,
                hash_count: int = 0) -> np.ndarray:
    """Score of each (i, j) pair: cosine of raw vectors, or IoM agreement of codes."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if vectors is not None:
        return np.einsum("ij,ij->i", vectors[pairs[:, 0]], vectors[pairs[:, 1]])
    out = np.empty(len(pairs), dtype=np.float32)
    for i in np.unique(pairs[:, 0]):
        rows = np.flatnonzero(pairs[:, 0] == i)
        out[rows] = agreement(codes[i], codes[pairs[rows, 1]], hash_count)
    return out


def usable(pairs, ok: np.ndarray):
    """Pairs whose both samples were extracted (failures to enrol are reported separately)."""
    return [(i, j) for i, j in pairs if ok[i] and ok[j]]


def threshold_at_fmr(impostor: np.ndarray, fmr: float) -> float:
    """Smallest threshold t with P(impostor >= t) <= fmr (decide MATCH when score >= t)."""
    ranked = np.sort(np.asarray(impostor))[::-1]
    allowed = int(np.floor(fmr * len(ranked)))
    if allowed >= len(ranked):
        return float(ranked[-1])
    return float(np.nextafter(ranked[allowed], np.float32(np.inf)))


def rates_at(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> tuple[float, float]:
    """(genuine accept rate, false match rate) when MATCH means score >= threshold."""
    return float(np.mean(genuine >= threshold)), float(np.mean(impostor >= threshold))


def code_matrix(left: np.ndarray, right: np.ndarray, hash_count: int) -> np.ndarray:
    """(len(left), len(right)) IoM agreement of every pair of packed codes, by the service's kernel."""
    out = np.empty((len(left), len(right)), dtype=np.float32)
    for i, probe in enumerate(left):
        out[i] = agreement(probe, right, hash_count)
    return out


def split_matrix(matrix: np.ndarray, subjects, ok: np.ndarray, same_samples: bool = True,
                 right_subjects=None, right_ok: np.ndarray | None = None):
    """(genuine, impostor) scores of a score matrix. same_samples: rows and columns are the same
    samples, so only the upper triangle (every unordered pair once, no self-pairs) is used."""
    left = np.asarray(subjects)
    right = left if right_subjects is None else np.asarray(right_subjects)
    valid = np.outer(ok, ok if right_ok is None else right_ok)
    if same_samples:
        valid &= np.triu(np.ones(matrix.shape, bool), 1)
    same = left[:, None] == right[None, :]
    return matrix[valid & same], matrix[valid & ~same]
