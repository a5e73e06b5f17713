"""Identification (1:N) decisions that hold a false-positive identification rate as galleries grow.

In ISO/IEC 19795-1 terms: FPIR is the share of searches by people who are not enrolled that
return any candidate; FNIR the share of searches by enrolled people whose template is not
returned. Searching N templates whose impostor comparisons each false-match with probability p
gives FPIR = 1 - (1 - p)^N, about N p: the 1:1 threshold (p = 1e-3) hands a candidate to most
strangers once N reaches a few thousand. So Identify asks each comparison for the per-comparison
rate that keeps FPIR at the configured target for the gallery actually searched, and reads the
threshold for that rate off a calibrated model of the impostor score tail (`ScoreModel`); a
template's threshold never drops below its 1:1 one.

Where the threshold the target needs leaves too few genuine scores above it, Identify still holds
the FPIR (strangers stay out) but misses enrolled people: `capacity` says so, for the operator
(Admin.KeyStatus, the metric vault_identify_expected_fnir, a log warning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Capacity", "ScoreModel", "capacity", "per_comparison_fmr"]


@dataclass(frozen=True)
class ScoreModel:
    """Calibrated score distributions of one kind of template under one profile.

    Impostor tail, peaks over threshold (generalised Pareto, the extreme-value model of a tail):
        P(impostor score >= t) = tail_rate * (1 + shape * (t - tail_start) / scale) ** (-1 / shape)
    for t >= tail_start (shape 0: the exponential limit). Genuine scores: their values at evenly
    spaced probabilities 0, 1/(k-1), ..., 1 (`genuine_quantiles`), read by linear interpolation.
    """

    tail_start: float
    tail_rate: float
    shape: float
    scale: float
    genuine_quantiles: tuple[float, ...]

    def false_match_rate(self, threshold: float) -> float:
        """Modelled P(impostor score >= threshold), for thresholds in the tail."""
        excess = max(threshold - self.tail_start, 0.0)
        if abs(self.shape) < 1e-9:
            return self.tail_rate * math.exp(-excess / self.scale)
        base = 1.0 + self.shape * excess / self.scale
        return 0.0 if base <= 0.0 else self.tail_rate * base ** (-1.0 / self.shape)

    def threshold_at(self, fmr: float) -> float:
        """The score whose modelled impostor tail probability is `fmr` (inverse of
        false_match_rate; rates above tail_rate, which the tail does not model, get tail_start)."""
        if fmr >= self.tail_rate:
            return self.tail_start
        ratio = max(fmr, 1e-300) / self.tail_rate
        if abs(self.shape) < 1e-9:
            return self.tail_start - self.scale * math.log(ratio)
        return self.tail_start + self.scale * (ratio ** (-self.shape) - 1.0) / self.shape

    def false_non_match_rate(self, threshold: float) -> float:
        """Modelled P(genuine score < threshold): 0 below the lowest quantile, 1 above the highest."""
        q = self.genuine_quantiles
        return float(np.interp(threshold, q, np.linspace(0.0, 1.0, len(q))))

    def genuine_band(self, score: float) -> int:
        """1-10: the tenth of genuine scores a score falls in (an auditor's coarse band), on
        whatever scale the profile decides (raw agreement or normalised)."""
        return 1 + min(9, int(10 * self.false_non_match_rate(score)))


def per_comparison_fmr(fpir: float, searched: int) -> float:
    """The false-match rate per comparison that gives `fpir` over `searched` comparisons."""
    if searched <= 1:
        return fpir
    return -math.expm1(math.log1p(-fpir) / searched)  # 1 - (1 - fpir) ** (1 / searched), exactly


@dataclass(frozen=True)
class Capacity:
    """What Identify can promise at one gallery size (no scores of anyone: model figures only)."""

    templates: int
    fpir_target: float
    expected_fnir: float  # of templates enrolled from one sample (the weaker kind)
    expected_fnir_fused: float  # of templates fused from several samples
    reachable: bool  # expected FNIR within the site's bound for every kind of template (the weaker decides)


def capacity(profile, templates: int, fpir: float, max_fnir: float) -> Capacity:
    """Expected FNIR of `profile`'s templates when Identify holds `fpir` over `templates`."""
    fmr = per_comparison_fmr(fpir, max(templates, 1))
    fnir = []
    for samples in (1, 2):
        model = profile.score_model(samples)
        threshold = profile.identify_threshold(samples, fmr)
        fnir.append(model.false_non_match_rate(threshold) if model is not None else float("nan"))
    known = [f for f in fnir if not math.isnan(f)]
    # The weaker figure decides: a gallery holds one-photo templates too, and a promise kept only for
    # fused ones is not kept (103 one-photo faces had been "ok" at an expected FNIR of 0.234 > 0.2).
    return Capacity(templates, fpir, fnir[0], fnir[1], bool(known) and max(known) <= max_fnir)
