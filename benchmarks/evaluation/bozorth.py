"""The unprotected fingerprint baseline: NIST NBIS mindtct minutiae compared by bozorth3 (nbis-py).

Score matrices are cached under the features cache (benchmarks.features.CACHE), keyed by the
content of every image of the set and the extractor settings: a set of 80 images is 3,160 pairs
at 1-6 ms each, extraction ~0.1 s an image.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np

from benchmarks.data import DataSet
from benchmarks.features import CACHE, save_atomically

SETTINGS = "min_quality=0.0,get_center=False,check_fingerprint=False,compute_nfiq2=False,ppi=None"


def mindtct_extractor():
    """NIST mindtct through nbis-py with the settings the baseline was measured with."""
    import nbis

    return nbis.new_nbis_extractor(nbis.NbisExtractorSettings(
        min_quality=0.0, get_center=False, check_fingerprint=False, compute_nfiq2=False, ppi=None))


@dataclass
class BozorthScores:
    matrix: np.ndarray  # (n, n) float64; matrix[i, j] for i < j (upper triangle) is the score
    ok: np.ndarray  # (n,) bool: minutiae extracted
    extract_seconds: np.ndarray  # (n,)
    compare_seconds: float  # mean per pair

    def pairs(self, pairs) -> np.ndarray:
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        lo, hi = pairs.min(axis=1), pairs.max(axis=1)
        return self.matrix[lo, hi]


def scores(dataset: DataSet, progress: bool = True) -> BozorthScores:
    digest = hashlib.sha256(SETTINGS.encode())
    images = [s.path.read_bytes() for s in dataset.samples]
    for image in images:
        digest.update(hashlib.sha256(image).digest())
    CACHE.mkdir(parents=True, exist_ok=True)
    cache = CACHE / f"bozorth3-{dataset.name}-{digest.hexdigest()[:16]}.npz"
    if cache.exists():
        saved = np.load(cache)
        return BozorthScores(saved["matrix"], saved["ok"], saved["extract_seconds"],
                             float(saved["compare_seconds"]))
    extractor = mindtct_extractor()
    templates, seconds = [], []
    for image in images:
        started = time.perf_counter()
        try:
            templates.append(extractor.extract_minutiae(image))
        except Exception:  # nbis raises its own error types; a failure is a failure to extract
            templates.append(None)
        seconds.append(time.perf_counter() - started)
    n = len(templates)
    matrix = np.full((n, n), np.nan)
    rows = range(n)
    if progress:
        from tqdm import tqdm

        rows = tqdm(rows, desc=f"bozorth3 {dataset.name}", unit="row")
    started, compared = time.perf_counter(), 0
    for i in rows:
        if templates[i] is None:
            continue
        for j in range(i + 1, n):
            if templates[j] is not None:
                matrix[i, j] = templates[i].compare(templates[j])
                compared += 1
    per_pair = (time.perf_counter() - started) / max(compared, 1)
    ok = np.array([t is not None for t in templates])
    save_atomically(cache, matrix=matrix, ok=ok, extract_seconds=np.array(seconds), compare_seconds=per_pair)
    return BozorthScores(matrix, ok, np.array(seconds), per_pair)
