"""Feature vectors of a data set, extracted by the service's own code (vault.extraction.extract)
in a process pool and cached outside the repository, so a rerun after a transform change takes
seconds. Cache: $VAULT_BENCH_CACHE or ~/.cache/vault-bench."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.data import DataSet

CACHE = Path(os.environ.get("VAULT_BENCH_CACHE", Path.home() / ".cache" / "vault-bench"))


@dataclass
class Features:
    dataset: DataSet
    vectors: np.ndarray  # (n, d) float32 unit vectors; zero rows where extraction failed
    ok: np.ndarray  # (n,) bool
    seconds: np.ndarray  # (n,) extraction time

    @property
    def failure_rate(self) -> float:
        return float(1 - self.ok.mean())


def _extract_one(args):
    import time

    from vault.exceptions import VaultError
    from vault.extraction import IMAGE, ISO_19794_2, extract
    from vault.profiles import FACE, FINGERPRINT

    modality, path = args
    data = Path(path).read_bytes()
    kind = ISO_19794_2 if path.endswith(".iso") else IMAGE
    started = time.perf_counter()
    try:
        vector, _ = extract(FACE if modality == "face" else FINGERPRINT, kind, data, False)
        return vector, time.perf_counter() - started
    except VaultError:
        return None, time.perf_counter() - started


def _code_version(modality: str) -> str:
    """Cache key part: the source of the feature code, so editing it invalidates the cache."""
    root = Path(__file__).resolve().parents[1] / "vault"
    files = [root / "features" / ("face.py" if modality == "face" else "fingerprint.py"), root / "images.py"]
    if modality == "fingerprint":
        files.append(root / "iso19794.py")
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]


def load(dataset: DataSet, workers: int | None = None, progress: bool = True) -> Features:
    CACHE.mkdir(parents=True, exist_ok=True)
    cache = CACHE / f"{dataset.name}-{_code_version(dataset.modality)}.npz"
    if cache.exists():
        saved = np.load(cache)
        if len(saved["ok"]) == len(dataset.samples):
            return Features(dataset, saved["vectors"], saved["ok"], saved["seconds"])
    jobs = [(dataset.modality, str(s.path)) for s in dataset.samples]
    with ProcessPoolExecutor(workers or len(os.sched_getaffinity(0))) as pool:
        results = pool.map(_extract_one, jobs, chunksize=4)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(jobs), desc=f"extract {dataset.name}", unit="img")
        results = list(results)
    dim = next((len(v) for v, _ in results if v is not None), 1)
    vectors = np.zeros((len(results), dim), dtype=np.float32)
    ok = np.zeros(len(results), dtype=bool)
    for i, (vector, _) in enumerate(results):
        if vector is not None:
            vectors[i], ok[i] = vector, True
    seconds = np.array([t for _, t in results])
    np.savez(cache, vectors=vectors, ok=ok, seconds=seconds)
    return Features(dataset, vectors, ok, seconds)
