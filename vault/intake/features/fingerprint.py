"""Fingerprint features: LEADER minutiae (image path) or an ISO/IEC 19794-2 record, turned into a
fixed-length, alignment-free vector compared by cosine similarity (and protected by GRP-IoM, which
approximates that cosine).

Both input paths meet in one representation, `vault.intake.iso19794.MinutiaeRecord`: images go through
the LEADER network (vault.intake.features.leader), records through our own parser.

The vector (FEATURE_DIM = 13752) joins two unit-length parts, weighted so that the cosine of two
vectors is COV_WEIGHT times the first part's cosine plus the rest times the second's:

1. MCC second-order pooling (COV_DIM = 12880). Every minutia of quality >= MIN_QUALITY gets a
   Minutia Cylinder-Code cylinder (vault.intake.features.mcc; Cappelli, Ferrara, Maltoni, TPAMI 2010),
   a translation- and rotation-invariant description of its neighbourhood. Cells outside the
   fingerprint are filled with their mean value, so partial overlap reads as "unknown", not as
   "no minutiae". Each cylinder is reduced to PCA_DIMS whitened principal components (a basis
   fitted on other fingers, shipped in vault/models/) and scaled to unit length; the sample is
   described by the sum of their outer products minus its expected value (n I / d), i.e. how the
   finger's local structures co-vary, then a signed square root. The inner product of two such
   matrices is sum_ij (z_i . z_j)^2 - const: a quadratic match kernel over all pairs of cylinders,
   which needs no alignment and no correspondences. How many principal components are kept matters
   most: 48 gave FVC2002 DB1 single-impression EER 9.6%, 160 gives 4.3% (raw cosine).
2. The minutia-triplet histogram (TRIPLET_DIM = 872; the first baseline): a quality-weighted,
   soft-binned histogram of triplet shapes, feature-hashed with random signs (see _triplets).

Only the MAX_MINUTIAE best-quality minutiae are used: extractors report up to 90 (LEADER) or
100-200 (mindtct, commercial SDKs) on large noisy images, the low-quality ones mostly spurious.

Coordinates are scaled to 500 ppi when a record states its resolution; images and records without
one are assumed to be 500 ppi. The PCA basis is fitted on LEADER minutiae of FVC2000 DB1-DB3
(benchmarks/calibration/fit_fingerprint_model.py); FVC2002 is held out for the basis. The three design choices
above (160 components, the 0.8 / 0.2 weighting, the 60-minutia cap) were chosen with mindtct
minutiae, looking at both years.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np

from vault.exceptions import InvalidSample, PoorSample
from vault.intake.features import mcc
from vault.intake.iso19794 import MinutiaeRecord

__all__ = [
    "FEATURE_DIM",
    "CylinderModel",
    "MIN_IMAGE_SIDE",
    "MIN_MINUTIAE",
    "extract_minutiae",
    "minutiae_features",
]

MIN_MINUTIAE = 6
"""The quality gate: a print with fewer reliable minutiae (LEADER quality >= 0.55, or whatever a
record reports) is refused (PoorSample -> FAILED_PRECONDITION). LEADER finds 20-50 on FVC images;
the few prints with 6-11 (FVC2002 DB3's small captures) still verify, and pairs involving them
draw no higher impostor scores than others (measured on FVC2000/2002; a gate at 12 refused 5 of
FVC2002 DB3's 80 images and doubled its EER)."""

MIN_QUALITY = 20
"""NBIS quality (1..100) below which a minutia gets no cylinder (mostly spurious minutiae at the
print's border and in noisy areas). Records that report no quality (0) keep every minutia; a
sample with fewer than MIN_MINUTIAE good ones keeps them all."""

MAX_MINUTIAE = 60
"""The best-quality minutiae kept (ties: the order of _minutiae's canonical sort)."""

PCA_DIMS = 160
COV_DIM = PCA_DIMS * (PCA_DIMS + 1) // 2  # upper triangle of a symmetric PCA_DIMS^2 matrix
TRIPLET_DIM = 872
FEATURE_DIM = COV_DIM + TRIPLET_DIM  # 13752
COV_WEIGHT = 0.8  # share of the cosine that comes from the MCC part

MODEL_VERSION = "finger-leader-pca160-v1"
MODEL_PATH = Path(__file__).resolve().parents[2] / "models" / f"{MODEL_VERSION}.npz"

MIN_IMAGE_SIDE = 64
"""Smaller than any fingerprint sensor's image (13 mm at 500 ppi is 256 px)."""

REFERENCE_PX_PER_CM = 500 / 2.54  # 500 ppi, the resolution the parameters below are tuned for
NEIGHBOURS = 8
RADIUS_PX = 150.0
LENGTH_STEP_PX = 12.0
LENGTH_BINS = 12  # |ij| and |ih|; |jh| (up to twice as long) gets 2 * LENGTH_BINS
ANGLE_BINS = 12
MIN_SEPARATION_PX = 1.0  # coincident minutiae define no direction between them
UNREPORTED_QUALITY = 0.5  # weight of a minutia whose quality is 0 ("not reported" in ISO)

_TWO_PI = 2.0 * math.pi
_GRID = (LENGTH_BINS, LENGTH_BINS, 2 * LENGTH_BINS, ANGLE_BINS, ANGLE_BINS, ANGLE_BINS)

def extract_minutiae(image: bytes) -> MinutiaeRecord:
    """Minutiae of a fingerprint image (TIFF, PNG, BMP or PGM bytes, ~500 ppi) found by LEADER
    (vault.intake.features.leader).

    Raises InvalidSample when the bytes are not a decodable image, or one too small to be a
    fingerprint. The minutia count is not checked here; `minutiae_features` does that.
    """
    from vault.intake import images
    from vault.intake.features import leader

    if not isinstance(image, (bytes, bytearray, memoryview)) or len(image) == 0:
        raise InvalidSample("the fingerprint image is empty")
    gray = images.decode_fingerprint(bytes(image))
    if min(gray.shape) < MIN_IMAGE_SIDE:
        raise InvalidSample(
            f"the fingerprint image is too small; each side must be at least {MIN_IMAGE_SIDE} px"
        )
    return leader.extract_minutiae(gray)


class CylinderModel:
    """The learned part: per-cell fill values and a whitened PCA basis of MCC cylinders."""

    def __init__(self, fill: np.ndarray, mean: np.ndarray, basis: np.ndarray, version: str):
        self.fill = np.asarray(fill, np.float32).reshape(mcc.CELLS, mcc.ND)
        self.mean = np.asarray(mean, np.float32).reshape(mcc.LENGTH)
        self.basis = np.asarray(basis, np.float32).reshape(mcc.LENGTH, PCA_DIMS)
        self.version = version

    @classmethod
    def load(cls, path: Path) -> CylinderModel:
        with np.load(path, allow_pickle=False) as saved:
            if int(saved["pca_dims"]) != PCA_DIMS or int(saved["length"]) != mcc.LENGTH:
                raise ValueError(f"{path.name} does not fit this code's cylinder layout")
            return cls(saved["fill"], saved["mean"], saved["basis"], str(saved["version"]))

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            fill=self.fill.astype(np.float32),
            mean=self.mean.astype(np.float32),
            basis=self.basis.astype(np.float16),  # halves the file; codes move by < 1e-3
            pca_dims=np.int64(PCA_DIMS),
            length=np.int64(mcc.LENGTH),
            version=np.str_(self.version),
        )

    def project(self, values: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Cylinders (k, LENGTH) with their cell masks -> whitened PCA coordinates (k, PCA_DIMS)."""
        v = values.reshape(len(values), mcc.CELLS, mcc.ND)
        v = np.where(masks[:, :, None] > 0, v, self.fill[None])
        return (v.reshape(len(values), mcc.LENGTH) - self.mean) @ self.basis


_model: CylinderModel | None = None
_model_lock = threading.Lock()


def default_model() -> CylinderModel:
    global _model
    if _model is None:
        with _model_lock:
            if _model is None:
                _model = CylinderModel.load(MODEL_PATH)
    return _model


def minutiae_features(record: MinutiaeRecord, model: CylinderModel | None = None) -> np.ndarray:
    """Alignment-free feature vector, float32 (FEATURE_DIM,), unit L2 norm.

    Raises PoorSample when the record has fewer than MIN_MINUTIAE minutiae or when they are too
    scattered to describe. `model` is for benchmarks that score a basis fitted elsewhere.
    """
    x, y, theta, quality = _minutiae(record)
    cov = _cylinder_covariance(x, y, theta, quality, model or default_model())
    triplets = _triplets(x, y, theta, quality)
    vector = np.concatenate([math.sqrt(COV_WEIGHT) * cov, math.sqrt(1.0 - COV_WEIGHT) * triplets])
    return vector.astype(np.float32)


def cylinder_codes(record: MinutiaeRecord, model: CylinderModel | None = None) -> np.ndarray:
    """Whitened, unit-length PCA codes of the sample's cylinders (k, PCA_DIMS); for model fitting
    and tests."""
    x, y, theta, quality = _minutiae(record)
    return _codes(x, y, theta, quality, model or default_model())


def _minutiae(record: MinutiaeRecord):
    m = np.asarray(record.minutiae, dtype=np.float64)
    count = int(m.shape[0])
    if count < MIN_MINUTIAE:
        raise PoorSample(
            f"fingerprint has {count} minutiae, at least {MIN_MINUTIAE} are needed; recapture "
            "with the finger centred, pressed flat and the sensor clean"
        )
    if not np.all(np.isfinite(m)):
        raise InvalidSample("the fingerprint minutiae contain non-numeric values")
    # Canonical order, so the result does not depend on the order minutiae were listed in
    # (it breaks ties between equally distant neighbours).
    m = m[np.lexsort(m.T[::-1])]
    sx = REFERENCE_PX_PER_CM / record.x_resolution if record.x_resolution > 0 else 1.0
    sy = REFERENCE_PX_PER_CM / record.y_resolution if record.y_resolution > 0 else 1.0
    if count > MAX_MINUTIAE and np.any(m[:, 4] > 0):  # without qualities there is no "best"
        m = m[np.sort(np.argsort(-m[:, 4], kind="stable")[:MAX_MINUTIAE])]
    x = m[:, 0] * sx
    y = -m[:, 1] * sy  # image y points down; flip so angles are counter-clockwise as in ISO
    return x, y, m[:, 2], m[:, 4]


def sample_cylinders(record: MinutiaeRecord):
    """(values, masks) of the MCC cylinders the features use (for model fitting)."""
    return _cylinders(*_minutiae(record))


def _cylinders(x, y, theta, quality):
    good = quality >= MIN_QUALITY
    if not np.any(quality <= 0) and good.sum() >= MIN_MINUTIAE:
        x, y, theta = x[good], y[good], theta[good]
    values, masks, _ = mcc.cylinders(x, y, theta)
    if len(values) == 0:
        raise PoorSample("fingerprint minutiae are too scattered to describe; recapture")
    return values, masks


def _codes(x, y, theta, quality, model: CylinderModel) -> np.ndarray:
    z = model.project(*_cylinders(x, y, theta, quality))
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    return z / np.where(norm > 0, norm, 1.0)


_UPPER = np.triu_indices(PCA_DIMS)
_OFF_DIAGONAL = np.where(_UPPER[0] == _UPPER[1], 1.0, math.sqrt(2.0))  # keeps the Frobenius product


def _cylinder_covariance(x, y, theta, quality, model: CylinderModel) -> np.ndarray:
    z = _codes(x, y, theta, quality, model).astype(np.float64)
    gram = z.T @ z - (len(z) / PCA_DIMS) * np.eye(PCA_DIMS)
    v = gram[_UPPER] * _OFF_DIAGONAL
    v = np.sign(v) * np.sqrt(np.abs(v))
    norm = float(np.linalg.norm(v))
    if not norm > 0.0 or not math.isfinite(norm):
        raise PoorSample("fingerprint minutiae are too scattered to describe; recapture")
    return v / norm


def _triplets(x, y, theta, quality) -> np.ndarray:
    """Quality-weighted, soft-binned histogram of minutia triplets, hashed to TRIPLET_DIM, unit.

    * Each minutia i is joined with every pair (j, h) of its NEIGHBOURS nearest neighbours that
      lie within RADIUS_PX; (i, j, h) is ordered counter-clockwise.
    * The triplet is described by six translation- and rotation-invariant values: the side
      lengths |ij|, |ih|, |jh| and the direction of each minutia relative to a side.
    * Each value is soft-binned (linear interpolation between neighbouring bins; circular for
      angles), so a triplet spreads over 2^6 cells of a 6-D grid, weighted by the product of the
      three minutiae's qualities; cells are mapped to coordinates with a fixed hash and a hashed
      random sign (count sketch). Last, a signed square root and L2 normalisation.
    """
    count = x.size
    quality = quality / 100.0
    quality = np.where(quality > 0, quality, UNREPORTED_QUALITY)

    dx = x[None, :] - x[:, None]
    dy = y[None, :] - y[:, None]
    dist = np.hypot(dx, dy)
    far = np.where(dist < MIN_SEPARATION_PX, np.inf, dist)  # also excludes i == j

    k = min(NEIGHBOURS, count - 1)
    nearest = np.argsort(far, axis=1, kind="stable")[:, :k]
    a, b = np.triu_indices(k, 1)
    i = np.repeat(np.arange(count), a.size)
    j = nearest[:, a].ravel()
    h = nearest[:, b].ravel()
    keep = (far[i, j] < RADIUS_PX) & (far[i, h] < RADIUS_PX) & (far[j, h] < np.inf)
    i, j, h = i[keep], j[keep], h[keep]
    if i.size == 0:
        raise PoorSample("fingerprint minutiae are too scattered to describe; recapture")

    # Counter-clockwise order of (i, j, h).
    clockwise = dx[i, j] * dy[i, h] - dy[i, j] * dx[i, h] < 0
    j, h = np.where(clockwise, h, j), np.where(clockwise, j, h)

    dir_ij = np.arctan2(dy[i, j], dx[i, j])
    dir_ih = np.arctan2(dy[i, h], dx[i, h])
    values = (
        dist[i, j],
        dist[i, h],
        dist[j, h],
        np.mod(theta[i] - dir_ij, _TWO_PI),
        np.mod(theta[j] - dir_ij, _TWO_PI),
        np.mod(theta[h] - dir_ih, _TWO_PI),
    )
    cell = np.zeros(i.size, dtype=np.int64)
    weight = quality[i] * quality[j] * quality[h]
    cells, weights = [cell], [weight]
    for axis, (value, bins) in enumerate(zip(values, _GRID)):
        if axis < 3:
            lo, hi, frac = _soft_linear(value, LENGTH_STEP_PX, bins)
        else:
            lo, hi, frac = _soft_circular(value, bins)
        cells = [c * bins + lo for c in cells] + [c * bins + hi for c in cells]
        weights = [w * (1.0 - frac) for w in weights] + [w * frac for w in weights]

    index, sign = _hash(np.concatenate(cells))
    vector = np.bincount(index, weights=np.concatenate(weights) * sign, minlength=TRIPLET_DIM)
    vector = np.sign(vector) * np.sqrt(np.abs(vector))
    norm = float(np.linalg.norm(vector))
    if not norm > 0.0 or not math.isfinite(norm):
        raise PoorSample("fingerprint minutiae are too scattered to describe; recapture")
    return vector / norm


def _soft_linear(value: np.ndarray, step: float, bins: int):
    """Linear interpolation between bin centres; values beyond the ends go to the end bins."""
    pos = np.clip(value / step - 0.5, 0.0, bins - 1.0)
    lo = np.minimum(np.floor(pos).astype(np.int64), bins - 2)
    return lo, lo + 1, pos - lo


def _soft_circular(angle: np.ndarray, bins: int):
    pos = angle * (bins / _TWO_PI) - 0.5
    lo = np.floor(pos).astype(np.int64)
    return lo % bins, (lo + 1) % bins, pos - lo


def _hash(cells: np.ndarray):
    """Fixed 64-bit mix (splitmix64 finaliser) of grid cells -> (coordinate, +-1 sign)."""
    h = cells.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    h = h ^ (h >> np.uint64(31))
    index = (h % np.uint64(TRIPLET_DIM)).astype(np.int64)
    sign = np.where((h >> np.uint64(63)) == 1, -1.0, 1.0)
    return index, sign
