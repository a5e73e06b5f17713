"""Feature extraction: samples (images, minutiae records) to fixed-length vectors.

Everything here runs in extraction worker processes (vault.intake.extraction) and returns plain numpy
vectors that live only in memory for the request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SampleReport:
    """What the extractor saw (mirrors vault.v1.SampleReport; no biometric data)."""

    faces_found: int = 0
    largest_face_used: bool = False
    minutiae: int = 0


def unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def fuse(vectors: list[np.ndarray]) -> np.ndarray:
    """One enrolment vector from several samples of one subject: the mean direction."""
    return unit(np.mean([unit(v) for v in vectors], axis=0))
