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

Fingerprints move each template rather than each key (TemplateCohort). A finger's code can sit
close to what all prints share, and then it draws impostors: one FVC2000 DB3 finger alone took
synthetic probes past the threshold when that sensor was held out of calibration. Every code is
scored at enrolment, under its key, against a cohort of synthetic prints grown from random numbers
(benchmarks/calibration/synthetic_prints.py; their LEADER minutiae are shipped in vault/models/, no person's);
its mean agreement with them, less the profile's average over calibration templates, is taken off
every score it draws. Same key, same code, same cohort: every replica computes the same offset.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np

from vault.exceptions import PoorSample
from vault.intake.features import fingerprint
from vault.intake.features.leader import PX_PER_CM_500_PPI
from vault.intake.iso19794 import MinutiaeRecord
from vault.custody.keys import TenantKey
from vault.templates.matching import agreement, agreements_with_later
from vault.templates.profiles import ProtectionProfile

__all__ = ["CohortShifts", "TemplateCohort", "cohort_quantile", "cohort_vectors", "template_cohort_records",
           "template_cohort_vectors", "template_offsets"]

MODELS = Path(__file__).resolve().parents[1] / "models"
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
    scores = agreements_with_later(codes, PROBES, profile.hash_count)
    return float(np.quantile(scores, 1.0 - profile.operating_fmr))


class _PerKey:
    """What a key's projection makes of a shipped cohort, shared by every Vault of the process (tools
    and tests build many): keyed, as the Protector's projection cache is, by the projection secret
    and the profile, so a key's figure is computed once; at most `size` entries, the oldest dropped."""

    def __init__(self, size: int):
        self.size = size
        self._values: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: TenantKey, profile: ProtectionProfile, compute):
        entry = (key.projection, profile.name)
        with self._lock:
            if entry in self._values:
                self._values.move_to_end(entry)
                return self._values[entry]
        value = compute()
        with self._lock:
            value = self._values.setdefault(entry, value)
            while len(self._values) > self.size:
                self._values.popitem(last=False)
            return value


_QUANTILES = _PerKey(4096)  # floats
_COHORT_CODES = _PerKey(64)  # 256 codes of 2 KiB each


class CohortShifts:
    """Threshold shift per (key version, profile), computed once and kept in memory."""

    def __init__(self, protector):
        self.protector = protector

    def shift(self, key: TenantKey, profile: ProtectionProfile) -> float:
        if profile.cohort is None:
            return 0.0
        quantile = _QUANTILES.get(key, profile, lambda: cohort_quantile(self.protector, key, profile))
        return quantile - profile.cohort_reference


@lru_cache(maxsize=2)
def template_cohort_records(name: str) -> tuple[MinutiaeRecord, ...]:
    """The minutiae of the synthetic prints shipped as `name`, stated as the service states LEADER's
    minutiae of an image (500 ppi)."""
    with np.load(MODELS / f"{name}.npz") as saved:
        counts, minutiae, (width, height) = saved["counts"], saved["minutiae"], saved["size"]
    return tuple(MinutiaeRecord(int(width), int(height), PX_PER_CM_500_PPI, PX_PER_CM_500_PPI, 0, m)
                 for m in np.split(minutiae, np.cumsum(counts)[:-1]))


@lru_cache(maxsize=2)
def template_cohort_vectors(name: str) -> np.ndarray:
    """Fingerprint feature vectors (n, d) of the synthetic prints shipped as `name` (~2 s: once a process)."""
    vectors = []
    for record in template_cohort_records(name):
        try:
            vectors.append(fingerprint.minutiae_features(record))
        except PoorSample:
            continue
    return np.stack(vectors)


def template_offsets(codes: np.ndarray, cohort_codes: np.ndarray, profile: ProtectionProfile) -> np.ndarray:
    """Each code's (k, planes, words) mean agreement with the cohort's codes (under the same key),
    less the profile's calibration average: the amount taken off the scores it draws."""
    means = [agreement(code, cohort_codes, profile.hash_count).mean() for code in codes]
    return (np.asarray(means, np.float64) - profile.template_cohort_reference).astype(np.float32)


class TemplateCohort:
    """Score offsets of templates (ProtectionProfile.template_cohort), the cohort's codes made once
    per (key version, profile) and kept in memory (~0.6 s a key for 256 prints)."""

    def __init__(self, protector):
        self.protector = protector

    def offsets(self, key: TenantKey, profile: ProtectionProfile, code: np.ndarray) -> np.ndarray | None:
        """The offset of each of a template's codes (one code, or k kept apart); None without a cohort."""
        if profile.template_cohort is None:
            return None
        codes = np.asarray(code).reshape(-1, profile.planes, profile.words)
        cohort_codes = _COHORT_CODES.get(key, profile, lambda: self.protector.protect_many(
            key, profile, template_cohort_vectors(profile.template_cohort)))
        return template_offsets(codes, cohort_codes, profile)
