"""Search that reads less than the whole gallery: a prefix of every code first, then the full code
of the best candidates only (issue 27).

An IoM code's positions are independent draws of the same keyed transform, so the agreement over
its first positions is an unbiased estimate of the agreement over all of them, with binomial noise
(sd sqrt(a(1-a)/positions): 0.015 over 1,024 positions of a face code). A 1:N search reads the first
`words` 64-position words of each code (the code rows are interleaved by word, so they are the first
words * planes * 8 bytes of each row: one short read a row, no second copy held), keeps the
`share` best rows by that estimate (never fewer than `minimum`), and scores those in full; the
decision rule and thresholds are unchanged. A template that would reach an Identify threshold must
rank among the kept rows by its prefix: measured against the full scan on held-out faces among a
million distractors (benchmarks/performance/identify_speed.py --exactness).

Galleries under `from_rows` rows are scanned in full (the prefix saves nothing worth the risk).
Fingerprint codes (two-way hashes, genuine scores a few binomial sds above impostors) are not
prefiltered: their profiles set no Prefilter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prefilter:
    words: int = 16  # 64-position words of each plane read first (16: 1,024 positions)
    share: float = 1 / 256  # of the rows kept for the full comparison
    minimum: int = 4096  # rows kept at the least
    from_rows: int = 65536  # galleries smaller than this are scanned in full

    def keeps(self, rows: int) -> int:
        return min(rows, max(self.minimum, int(np.ceil(rows * self.share))))


def best_rows(mismatches: np.ndarray, keep: int, offsets: np.ndarray | None = None) -> np.ndarray:
    """Indices of (at least) the `keep` rows with the fewest prefix mismatches, in row order: every
    row tied with the last one kept is kept too, so the choice does not depend on row order.
    `offsets` (in mismatches, per row) are added first where rows carry a score offset."""
    if keep >= len(mismatches):
        return np.arange(len(mismatches))
    if offsets is None:
        # Mismatch counts are small integers: the cut is found from their histogram in one pass.
        counts = np.bincount(mismatches)
        cut = int(np.searchsorted(np.cumsum(counts), keep))
        return np.flatnonzero(mismatches <= cut)
    ranked = mismatches + offsets
    cut = np.partition(ranked, keep - 1)[keep - 1]
    return np.flatnonzero(ranked <= cut)
