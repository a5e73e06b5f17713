"""A per-key operating point: each tenant key's thresholds follow its own impostor score tail.

A keyed projection moves the whole impostor score distribution a little: over 12 fresh keys the
face threshold at FMR 1e-3 on held-out LFW identities ranged over 0.0058 (false-match rate 1.0e-3
to 1.9e-3 at one global threshold). The shift is predictable without any enrolled data: a cohort of
synthetic impostors, unit vectors drawn from a Gaussian fitted to face embeddings (a mean and a
covariance shipped in vault/models/, no person's data), scored under the key, puts its own 99.9th
percentile where the real one goes (correlation 0.94 over those 12 keys). So each (key version,
profile) gets the profile's threshold moved by how far the cohort's tail under this key sits from
its average over calibration keys (ProtectionProfile.cohort_reference).

The cohort is drawn with a fixed seed: every replica computes the same shift for the same key.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from vault.keys import TenantKey
from vault.matching import agreement
from vault.profiles import ProtectionProfile

__all__ = ["CohortShifts", "cohort_quantile", "cohort_vectors"]

MODELS = Path(__file__).resolve().parent / "models"
COHORT_SIZE = 2000
PROBES = 600  # cohort members scored against all the others: ~1.2M impostor pairs, ~0.1 s
SEED = 20261127


@lru_cache(maxsize=4)
def cohort_vectors(model: str, size: int = COHORT_SIZE) -> np.ndarray:
    """Unit vectors (size, d) drawn with a fixed seed from the shipped Gaussian model `model`."""
    with np.load(MODELS / f"{model}.npz") as saved:
        mean, factor = saved["mean"], saved["cholesky"]
    draws = np.random.default_rng(SEED).standard_normal((size, len(mean))) @ factor.T + mean
    return (draws / np.linalg.norm(draws, axis=1, keepdims=True)).astype(np.float32)


def cohort_quantile(protector, key: TenantKey, profile: ProtectionProfile) -> float:
    """The cohort's impostor score at quantile 1 - profile.operating_fmr under this key."""
    codes = protector.protect_many(key, profile, cohort_vectors(profile.cohort))
    scores = np.concatenate([agreement(codes[a], codes[a + 1:], profile.hash_count) for a in range(PROBES)])
    return float(np.quantile(scores, 1.0 - profile.operating_fmr))


class CohortShifts:
    """Threshold shift per (tenant, key version, profile), computed once and kept in memory."""

    def __init__(self, protector):
        self.protector = protector
        self._shifts: dict[tuple, float] = {}
        self._lock = threading.Lock()

    def shift(self, key: TenantKey, profile: ProtectionProfile) -> float:
        if profile.cohort is None:
            return 0.0
        group = (key.tenant, key.version, profile.name)
        with self._lock:
            if group in self._shifts:
                return self._shifts[group]
        shift = cohort_quantile(self.protector, key, profile) - profile.cohort_reference
        with self._lock:
            return self._shifts.setdefault(group, shift)
