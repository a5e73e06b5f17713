"""How a gallery lays packed codes out in memory: interleaved rows (n, words, planes), so the
comparison kernel (vault.templates.matching) reads a row's planes side by side. Numba-free: a
replica's start-up workers (vault.startup) lay codes out without importing the kernel."""

from __future__ import annotations

import numpy as np

__all__ = ["interleave"]


def interleave(codes: np.ndarray, rows: np.ndarray) -> None:
    """Write packed codes (n, planes, words) into interleaved rows (n, words, planes), a plane at a
    time: numpy's copy of the whole transpose walks two elements at a time and takes several times
    as long (a replica's start-up writes a million rows). Codes that are a view of interleaved rows
    already (vault.startup lays them out so) are copied as they lie."""
    if codes.transpose(0, 2, 1).flags.c_contiguous:
        rows[...] = codes.transpose(0, 2, 1)
        return
    for plane in range(codes.shape[1]):
        rows[:, :, plane] = codes[:, plane, :]
