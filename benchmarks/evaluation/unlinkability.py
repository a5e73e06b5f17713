"""Unlinkability metrics of Gomez-Barrero et al., "General framework to evaluate unlinkability in
biometric template protection systems", IEEE TIFS 13(6), 2018.

Mated scores compare two protected templates of the same subject made under different conditions
(two tenant keys, a template and its reissue); non-mated scores the same for different subjects.
With the likelihood ratio LR(s) = p(s | mated) / p(s | non-mated) and the prior ratio omega
(1: equal priors, as in the paper's evaluation):

    D<->(s) = 2 * omega LR(s) / (1 + omega LR(s)) - 1   where omega LR(s) > 1, else 0   (local)
    D<->sys = integral of p(s | mated) D<->(s) ds                                          (global)

0 means fully unlinkable, 1 fully linkable. Densities are normalised histograms over shared bins,
as in the authors' reference code (min(n_mated / 10, 100) bins); where the non-mated density is
zero and the mated one is not, D<->(s) = 1.

Scores on a lattice (the IoM agreement k / m) get bins of whole lattice cells, so that no bin is
empty by aliasing.

A finite sample of two identical distributions still gives D<->sys > 0. `floor` measures that bias
for the sample sizes at hand: two disjoint random draws of the non-mated scores, one of the mated
set's size playing "mated" (mean of 5 draws).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Linkage:
    d_sys: float
    d_local: np.ndarray  # D<->(s) at `centers`
    centers: np.ndarray
    mated_density: np.ndarray
    nonmated_density: np.ndarray
    floor: float  # D<->sys of same-distribution samples of these sizes
    mated: int
    nonmated: int


def _dsys(mated: np.ndarray, nonmated: np.ndarray, omega: float, bins: int | None):
    bins = bins or int(max(10, min(len(mated) // 10, 100)))
    low, high = min(mated.min(), nonmated.min()), max(mated.max(), nonmated.max())
    if high <= low:
        high = low + 1e-9
    edges = np.linspace(low, high, bins + 1)
    values = np.unique(np.concatenate([mated, nonmated]))
    step = np.min(np.diff(values)) if len(values) > 1 else 0.0
    if step > 0 and (high - low) / step <= 20 * bins:
        # scores on a lattice (IoM agreement is k / m): whole lattice cells per bin, or bins alias
        cells = int(np.ceil(((high - low) / step + 1) / bins))
        edges = low - step / 2 + np.arange(0, (high - low) / step + cells + 1, cells) * step
    centers = (edges[1:] + edges[:-1]) / 2
    y1 = np.histogram(mated, bins=edges, density=True)[0]
    y2 = np.histogram(nonmated, bins=edges, density=True)[0]
    lr = np.divide(y1, y2, out=np.ones_like(y1), where=y2 != 0)
    d = 2 * (omega * lr / (1 + omega * lr)) - 1
    d[omega * lr <= 1] = 0
    d[(y2 == 0) & (y1 > 0)] = 1
    # sum of density * D * bin width: the integral over the histogram's steps; D<->sys lies in
    # [0, 1], and the float sum of a fully separated pair can land a few ulps above 1
    d_sys = float(np.clip(np.sum(d * y1) * (edges[1] - edges[0]), 0.0, 1.0))
    return d_sys, d, centers, y1, y2


def linkage(mated, nonmated, omega: float = 1.0, bins: int | None = None, seed: int = 0) -> Linkage:
    mated = np.asarray(mated, np.float64)
    nonmated = np.asarray(nonmated, np.float64)
    d_sys, d, centers, y1, y2 = _dsys(mated, nonmated, omega, bins)
    rng = np.random.default_rng(seed)
    floors = []
    for _ in range(5):
        shuffled = rng.permutation(nonmated)
        if len(shuffled) >= 2 * len(mated):
            fake, rest = shuffled[:len(mated)], shuffled[len(mated):]
        else:
            half = len(shuffled) // 2
            fake, rest = shuffled[:half], shuffled[half:]
        floors.append(_dsys(fake, rest, omega, bins)[0])
    floor = float(np.mean(floors))
    return Linkage(d_sys, d, centers, y1, y2, floor, len(mated), len(nonmated))
