"""Score normalisation against the gallery's own people: an operating point that follows the
population a deployment enrols, not the one the threshold was fitted on.

Face embeddings place people of one population closer together than people of another: with
SFace, impostor cosines have a median of 0.08 on LFW and 0.15-0.23 on East Asian sets, so one
threshold fitted on LFW lets East Asian impostors through 10-500 times as often. A vault sees its
own population without any labels: under one tenant key, the templates of different subjects are
impostors of each other. So every comparison is scored relative to a cohort drawn from the same
gallery (symmetric normalisation, "S-norm", as in speaker and face verification):

    normalised = ((s - mean_t) / sd_t + (s - mean_p) / sd_p) / 2

where (mean_t, sd_t) describe the template's agreements with the cohort and (mean_p, sd_p) the
probe's, each leaving out the compared subject's own templates. A template in a crowded part of
face space (a population the model separates poorly, a face that resembles many) needs a higher raw
agreement to match; so does a probe that resembles everyone, which is what a crafted "wolf" probe
(the mean face, a hub) is: it draws high agreements from the cohort and is normalised down.

The cohort is the gallery itself, chosen without anything a client controls: the templates whose
SHA-256 of the template id (random, made by the server) is smallest, at most `cohort_size`, one row
each; every replica with the same templates picks the same cohort. While a gallery is small, the statistics are shrunk
towards a prior (`prior_mean`, `prior_sd`, weighted as `prior_weight` cohort members): scalars set
above the populations calibrated on (benchmarks/calibration/face_population.py), never an embedding.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

__all__ = ["CohortNorm", "cohort_stats", "normalise", "stats_from_sums"]


def cohort_order(template_id: str) -> int:
    """A template's place in the cohort order: the first 8 bytes of the SHA-256 of its server-made
    id, as a number; kept per row (8 B), not per template in a dict (vault.templates.matching.Gallery)."""
    return int.from_bytes(hashlib.sha256(template_id.encode()).digest()[:8], "big")


@dataclass(frozen=True)
class CohortNorm:
    """How a profile's scores are normalised against the gallery's cohort."""

    cohort_size: int  # at most this many templates form the cohort
    prior_mean: float  # the cohort statistics' prior, on the profile's agreement scale
    prior_sd: float
    prior_weight: float  # the prior counts as this many cohort members
    preselect: int = 128  # Identify normalises the best this many templates by raw agreement


def cohort_stats(norm: CohortNorm, scores: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each row of `scores` (k, cohort) over the members `keep`
    (k, cohort) marks, shrunk towards the prior: (k,), (k,)."""
    scores = np.asarray(scores, np.float64)
    keep = np.asarray(keep, bool)
    return stats_from_sums(norm, keep.sum(axis=1), np.where(keep, scores, 0.0).sum(axis=1),
                           np.where(keep, scores * scores, 0.0).sum(axis=1))


def stats_from_sums(norm: CohortNorm, count, total, squares) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd from the count, sum and sum of squares of cohort agreements, shrunk towards the prior."""
    count = np.asarray(count, np.float64) + norm.prior_weight
    mean = (np.asarray(total, np.float64) + norm.prior_weight * norm.prior_mean) / count
    squares = np.asarray(squares, np.float64) + norm.prior_weight * (norm.prior_sd ** 2 + norm.prior_mean ** 2)
    return mean, np.sqrt(np.maximum(squares / count - mean * mean, 1e-12))


def normalise(raw: np.ndarray, template: tuple[np.ndarray, np.ndarray], probe: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The symmetric normalised score of raw agreements given the template's and the probe's
    cohort (mean, sd), all broadcast alike."""
    (t_mean, t_sd), (p_mean, p_sd) = template, probe
    return (0.5 * ((raw - t_mean) / t_sd + (raw - p_mean) / p_sd)).astype(np.float32)
