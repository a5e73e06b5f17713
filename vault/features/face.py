"""Face features: dlib's HOG face detector and 128-D ResNet embedding, via face_recognition.

The embedding is what the vault protects; it lives only in memory for the request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vault.exceptions import InvalidArgument, InvalidSample, PoorSample

FEATURE_DIM = 128
# dlib's HOG detector finds faces of ~80 px and larger; upsample small images once.
UPSAMPLE_BELOW = 400


@dataclass(frozen=True)
class FaceReport:
    faces_found: int
    largest_face_used: bool


def face_features(rgb: np.ndarray, require_single_face: bool = False) -> tuple[np.ndarray, FaceReport]:
    """Embedding (128,) float32 of the face in `rgb`; the largest one when there are several."""
    import face_recognition  # heavy (loads dlib models): imported in extraction workers only

    upsample = 1 if min(rgb.shape[:2]) < UPSAMPLE_BELOW else 0
    boxes = face_recognition.face_locations(rgb, number_of_times_to_upsample=upsample, model="hog")
    if not boxes:
        raise PoorSample("no face found in the image; capture a frontal face, at least ~80 px wide")
    if len(boxes) > 1 and require_single_face:
        raise InvalidArgument(f"{len(boxes)} faces found in the image and exactly one was required")
    largest = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))  # (top, right, bottom, left)
    encodings = face_recognition.face_encodings(rgb, [largest], num_jitters=1, model="small")
    if not encodings:
        raise PoorSample("the face could not be encoded; recapture")
    return np.asarray(encodings[0], dtype=np.float32), FaceReport(len(boxes), len(boxes) > 1)


def embedding_features(values) -> np.ndarray:
    """Validate a pre-computed 128-D embedding sent by a panel that extracts on the device."""
    vector = np.asarray(list(values), dtype=np.float32)
    if vector.shape != (FEATURE_DIM,) or not np.all(np.isfinite(vector)) or not np.any(vector):
        raise InvalidSample(f"a face embedding must be {FEATURE_DIM} finite values, not all zero")
    return vector
