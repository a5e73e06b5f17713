"""Verification error rates (ISO/IEC 19795-1 vocabulary) from genuine and impostor scores.

Scores are similarities: a comparison is a MATCH when score >= threshold. Distances (Euclidean)
are passed negated. Pairs with a failure to extract are left out and the failure-to-extract rate
is reported apart (benchmarks.scores.usable).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.scores import threshold_at_fmr

OPERATING_FMRS = (1e-2, 1e-3, 1e-4)


def det(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FMR, FNMR), thresholds ascending: scikit-learn's DET curve with genuine
    comparisons as the positive class (FMR: impostors at or above the threshold; FNMR: genuine
    below it), from the threshold where FNMR is 0 to where nothing is accepted."""
    from sklearn.metrics import det_curve

    scores = np.concatenate([np.asarray(genuine, dtype=np.float64), np.asarray(impostor, dtype=np.float64)])
    labels = np.concatenate([np.ones(len(genuine), bool), np.zeros(len(impostor), bool)])
    fmr, fnmr, thresholds = det_curve(labels, scores)
    # det_curve ends at the highest threshold an impostor reaches; the EER's crossing may lie past
    # it, where nothing is accepted.
    return np.append(thresholds, np.inf), np.append(fmr, 0.0), np.append(fnmr, 1.0)


def eer(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Equal error rate (FVC style: mid-point of the interval where FNMR and FMR cross)."""
    _, fmr, fnmr = det(genuine, impostor)
    below = np.nonzero(fnmr <= fmr)[0]
    above = np.nonzero(fnmr >= fmr)[0]
    t1, t2 = below[-1], above[0]
    if fnmr[t1] + fmr[t1] <= fnmr[t2] + fmr[t2]:
        low, high = fnmr[t1], fmr[t1]
    else:
        low, high = fmr[t2], fnmr[t2]
    return float((low + high) / 2.0)


def fnmr_at(genuine: np.ndarray, impostor: np.ndarray, fmr: float) -> float:
    """FNMR at the smallest threshold whose FMR <= fmr; NaN when there are too few impostor
    scores to resolve that FMR (fewer than 1 / fmr)."""
    if len(impostor) * fmr < 1:
        return float("nan")
    threshold = threshold_at_fmr(impostor, fmr)
    return float(np.mean(np.asarray(genuine) < threshold))


@dataclass(frozen=True)
class Rates:
    genuine: int
    impostor: int
    eer: float
    fnmr: dict[float, float]  # operating FMR -> FNMR
    genuine_mean: float
    impostor_mean: float

    def tar(self, fmr: float) -> float:
        return 1.0 - self.fnmr[fmr]


def rates(genuine: np.ndarray, impostor: np.ndarray) -> Rates:
    genuine, impostor = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)
    return Rates(len(genuine), len(impostor), eer(genuine, impostor),
                 {f: fnmr_at(genuine, impostor, f) for f in OPERATING_FMRS},
                 float(genuine.mean()), float(impostor.mean()))
