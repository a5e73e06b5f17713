"""Stand-ins for the fast in-process tier: fixed feature vectors instead of dlib and LEADER.

Everything else in that tier is real: the core, the keys, protection, the packed matcher, SQLite,
tokens, the interceptor on a loopback gRPC server.
"""

from __future__ import annotations

import hashlib

import numpy as np

from vault.exceptions import InvalidSample, PoorSample
from vault.intake.extraction import IMAGE, ISO_19794_2
from vault.intake.features import SampleReport, unit
from vault.templates.profiles import CURRENT

NO_SIGNAL = b"no-signal"  # a sample that decodes but shows nothing usable (no face, no minutiae)


def _rng(*parts: object) -> np.random.Generator:
    seed = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(seed[:8], "little"))


def sample_bytes(person: str, shot: int) -> bytes:
    """The bytes that stand for photo or impression `shot` of `person`."""
    return f"{person}/{shot}".encode()


class VectorExtractor:
    """The extraction pool's interface (vault.intake.extraction.Extractor.extract_many), answering with
    fixed vectors: a sample's bytes name a person and a shot ("ana/2"); its vector is the
    person's own random direction plus a little noise of that shot (cosine ~0.98 between two
    shots of one person, ~0 between people), the same on every run."""

    workers = 0
    pending = 0

    def __init__(self, noise: float = 0.15):
        self.noise = noise
        self.calls = 0

    async def extract_many(self, modality: int, samples, require_single_face: bool = False, features=(), client=None):
        self.calls += 1
        kinds = features or (CURRENT[modality].features,)
        self.last_features = tuple(kinds)
        out = []
        for kind, payload in samples:
            vector, report = self.vector(modality, kind, payload)
            out.append(({name: vector for name in kinds}, report))
        return out

    def vector(self, modality: int, kind: str, payload: bytes):
        if kind not in (IMAGE, ISO_19794_2) or not payload:
            raise InvalidSample("the sample is empty")
        if payload == NO_SIGNAL:
            raise PoorSample("no usable biometric signal in the sample")
        person, _, shot = payload.decode().partition("/")
        dim = CURRENT[modality].feature_dim
        base = _rng(modality, person).standard_normal(dim)
        noise = _rng(modality, person, shot).standard_normal(dim)
        return unit(base + self.noise * noise), SampleReport(faces_found=1)

    def warm(self) -> None:
        pass

    def close(self) -> None:
        pass


SLOW_NO_FACE = b"slow-no-face"  # a sample that keeps a worker busy for a while and shows no face


def timed_extract(modality: int, kind: str, payload: bytes, require_single_face: bool = False,
                  time_limit_s: float = 0.0, features=()):
    """vault.intake.extraction.Extractor.work in real worker processes, without the models: SLOW_NO_FACE
    costs 1.5 s of a worker and ends without a face (the red team's 4096x4096 PNG: 4.7 s); any
    other sample is VectorExtractor's, after 20 ms."""
    import time

    if payload == SLOW_NO_FACE:
        time.sleep(1.5)
        raise PoorSample("no face found in the image")
    time.sleep(0.02)
    vector, report = VectorExtractor().vector(modality, kind, payload)
    return {name: vector for name in (features or (CURRENT[modality].features,))}, report
