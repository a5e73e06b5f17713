"""Face features: dlib's HOG face detector and 128-D ResNet embedding, via face_recognition.

The embedding is what the vault protects; it lives only in memory for the request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vault.exceptions import InvalidArgument, PoorSample

FEATURE_DIM = 128
# dlib's HOG detector finds faces of ~80 px and larger; upsample small images once.
UPSAMPLE_BELOW = 400
# The quality gate, set beyond every face of the shared LFW and ORL sets (2,120 detected): the most
# blurred had a Laplacian variance of 14 over its face box, the most turned a nose 0.52 eye distances
# off the eyes' midpoint (a Gaussian blur of radius 2 on an ORL face gives 5). A capture past these
# is refused with FAILED_PRECONDITION before it becomes a template or a probe.
MIN_SHARPNESS = 10.0
MAX_YAW = 0.6


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
    check_quality(rgb, largest)
    encodings = face_recognition.face_encodings(rgb, [largest], num_jitters=1, model="small")
    if not encodings:
        raise PoorSample("the face could not be encoded; recapture")
    return np.asarray(encodings[0], dtype=np.float32), FaceReport(len(boxes), len(boxes) > 1)


def check_quality(rgb: np.ndarray, box) -> None:
    """PoorSample (FAILED_PRECONDITION) with the reason, for a face too blurred or turned too far."""
    import face_recognition

    top, right, bottom, left = box
    gray = rgb[max(top, 0):bottom, max(left, 0):right].astype(np.float32).mean(axis=2)
    if min(gray.shape) < 3:
        raise PoorSample("the face is too small; capture it at least ~80 px wide")
    laplacian = 4 * gray[1:-1, 1:-1] - gray[:-2, 1:-1] - gray[2:, 1:-1] - gray[1:-1, :-2] - gray[1:-1, 2:]
    if float(laplacian.var()) < MIN_SHARPNESS:
        raise PoorSample("the face is too blurred; recapture it in focus and without motion")
    if turn(face_recognition.face_landmarks(rgb, [box], model="small")[0]) > MAX_YAW:
        raise PoorSample("the face is turned too far from the camera; capture it facing the camera")


def turn(points: dict) -> float:
    """How far the face is turned: the nose tip's horizontal distance from the eyes' midpoint, in
    eye distances (0 frontal; dlib's 5-point landmarks)."""
    left_eye, right_eye = np.mean(points["left_eye"], axis=0), np.mean(points["right_eye"], axis=0)
    distance = float(np.linalg.norm(right_eye - left_eye))
    nose = np.mean(points["nose_tip"], axis=0)
    return float("inf") if distance == 0 else abs(float(nose[0]) - (left_eye[0] + right_eye[0]) / 2) / distance
