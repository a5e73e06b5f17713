"""Feature vectors of a data set, extracted by the service's own code (vault.intake.extraction.extract)
in a process pool and cached outside the repository, so a rerun after a transform change takes
seconds. Cache: $VAULT_BENCH_CACHE or ~/.cache/vault-bench."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.data import DataSet, Sample
from vault.intake.features import unit

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
    from vault.intake.extraction import IMAGE, ISO_19794_2, extract
    from vault.templates.profiles import FACE, FINGERPRINT

    modality, path, extractor = args
    data = Path(path).read_bytes()
    kind = ISO_19794_2 if path.endswith(".iso") else IMAGE
    started = time.perf_counter()
    try:
        vectors, _ = extract(FACE if modality == "face" else FINGERPRINT, kind, data, False, features=(extractor,))
        return vectors[extractor], time.perf_counter() - started
    except VaultError:
        return None, time.perf_counter() - started


def _extract_raw_face(path: str):
    """The dlib embedding as dlib returns it, before the service's unit normalisation (the raw
    Euclidean-distance baseline needs its length)."""
    import time

    from vault.intake import images
    from vault.exceptions import VaultError
    from vault.intake.features import face

    started = time.perf_counter()
    try:
        vector, _ = face.face_features(images.decode_face(Path(path).read_bytes()))
        return vector, time.perf_counter() - started
    except VaultError:
        return None, time.perf_counter() - started


def _code_version(modality: str, extractor: str = "dlib") -> str:
    """Cache key part: the source of the feature code, so editing it invalidates the cache."""
    root = Path(__file__).resolve().parents[1] / "vault"
    module = {"dlib": "face.py", "sface": "sface.py"}.get(extractor, "fingerprint.py")
    intake = root / "intake"
    files = [intake / "features" / (module if modality == "face" else "fingerprint.py"), intake / "images.py"]
    if modality == "fingerprint":
        files += [intake / "iso19794.py", intake / "features" / "mcc.py", *sorted((root / "models").glob("finger-*.npz"))]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]


def _cache_path(dataset: DataSet, raw: bool, extractor: str = "dlib") -> Path:
    tag = "" if extractor in ("dlib", "minutiae") else f"-{extractor}"
    return CACHE / f"{dataset.name}{tag}{'-raw' if raw else ''}-{_code_version(dataset.modality, extractor)}.npz"


def load(dataset: DataSet, workers: int | None = None, progress: bool = True, raw: bool = False,
         extractor: str = "dlib") -> Features:
    """Features of every sample. raw=True (faces only): dlib's own, unnormalised embeddings.
    `extractor` (faces): "dlib" (face-iom-v1..v3) or "sface" (face-sface-v1)."""
    if raw and dataset.modality != "face":
        raise ValueError("raw embeddings exist for faces only")
    if dataset.modality != "face":
        extractor = "minutiae"
    CACHE.mkdir(parents=True, exist_ok=True)
    cache = _cache_path(dataset, raw, extractor)
    if cache.exists():
        saved = np.load(cache)
        if len(saved["ok"]) == len(dataset.samples):
            return Features(dataset, saved["vectors"], saved["ok"], saved["seconds"])
    if dataset.modality == "face" and not raw and extractor == "dlib":
        # The service's face vector is dlib's embedding made unit length (vault.intake.extraction): derive
        # it from the raw extraction instead of running dlib over the set a second time.
        embeddings = load(dataset, workers, progress, raw=True)
        vectors = np.stack([unit(v) for v in embeddings.vectors]) if len(embeddings.ok) else embeddings.vectors
        save_atomically(cache, vectors=vectors, ok=embeddings.ok, seconds=embeddings.seconds)
        return Features(dataset, vectors, embeddings.ok, embeddings.seconds)
    if raw:
        function, jobs = _extract_raw_face, [str(s.path) for s in dataset.samples]
    else:
        function, jobs = _extract_one, [(dataset.modality, str(s.path), extractor) for s in dataset.samples]
    with ProcessPoolExecutor(workers or len(os.sched_getaffinity(0))) as pool:
        results = pool.map(function, jobs, chunksize=4)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(jobs), desc=f"extract {dataset.name}{' (raw)' if raw else ''}",
                           unit="img")
        results = list(results)
    dim = next((len(v) for v, _ in results if v is not None), 1)
    vectors = np.zeros((len(results), dim), dtype=np.float32)
    ok = np.zeros(len(results), dtype=bool)
    for i, (vector, _) in enumerate(results):
        if vector is not None:
            vectors[i], ok[i] = vector, True
    seconds = np.array([t for _, t in results])
    save_atomically(cache, vectors=vectors, ok=ok, seconds=seconds)
    return Features(dataset, vectors, ok, seconds)


def save_atomically(cache: Path, **arrays) -> None:
    """Write the cache file whole or not at all: parallel test workers may read it meanwhile."""
    partial = cache.with_name(f"{cache.name}.{os.getpid()}.part")
    with open(partial, "wb") as out:
        np.savez(out, **arrays)
    os.replace(partial, cache)


def subset(dataset: DataSet, subjects: list[str], name: str, workers: int | None = None,
           progress: bool = True, raw: bool = False, extractor: str = "dlib") -> Features:
    """Features of the samples of `subjects`: sliced from the full set's cache when it exists,
    else extracted (and cached) under their own `name`, never over the full set's cache."""
    keep = set(subjects)
    index = [i for i, s in enumerate(dataset.samples) if s.subject in keep]
    part = DataSet(name, dataset.modality, tuple(dataset.samples[i] for i in index), dataset.synthetic)
    if _cache_path(dataset, raw, extractor).exists():
        full = load(dataset, workers, progress, raw, extractor)
        return Features(part, full.vectors[index], full.ok[index], full.seconds[index])
    return load(part, workers, progress, raw, extractor)


def concat(parts: list[Features], name: str) -> Features:
    """Several sets as one; subjects are prefixed with their set's name so they stay apart."""
    samples = tuple(Sample(f"{f.dataset.name}/{s.subject}", s.path) for f in parts for s in f.dataset.samples)
    dataset = DataSet(name, parts[0].dataset.modality, samples, any(f.dataset.synthetic for f in parts))
    return Features(dataset, np.concatenate([f.vectors for f in parts]), np.concatenate([f.ok for f in parts]),
                    np.concatenate([f.seconds for f in parts]))
