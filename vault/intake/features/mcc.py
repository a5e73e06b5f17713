"""Minutia Cylinder-Code (Cappelli, Ferrara, Maltoni, IEEE TPAMI 2010), vectorised in numpy.

Each minutia gets a cylinder: a (NS x NS) grid of cells on a disc of radius R centred on the
minutia and turned to its direction, times ND direction bins. A cell holds how strongly nearby
minutiae (spatial Gaussian) with a given direction *relative to the centre minutia* (directional
Gaussian) are present, squashed by a sigmoid. Cylinders are therefore invariant to translation and
rotation of the whole finger; a cell is valid only inside the disc and inside the (enlarged)
convex hull of the minutiae, so partial overlap does not read as missing minutiae.

Cylinder similarity is the normalised MCC one over the cells valid in both cylinders:
    1 - ||a - b|| / (||a|| + ||b||),   0 when too few cells are valid in both.
`similarity` computes it for all pairs of two cylinder sets with four matrix products.
"""

from __future__ import annotations

import math

import numpy as np

RADIUS = 70.0  # px at 500 ppi
NS = 16  # cells per side
ND = 6  # direction bins
SIGMA_S = 28.0 / 3.0
SIGMA_D = 2.0 * math.pi / 9.0
MU_PSI = 0.01
TAU_PSI = 400.0
OMEGA = 50.0  # px the convex hull is enlarged by
MIN_VALID_CELLS = 0.75  # fraction of the disc's cells a cylinder needs to be kept
MIN_NEIGHBOURS = 2  # minutiae (besides the centre) within R + 3 sigma_S
MIN_COMMON_CELLS = 0.6  # fraction of the disc's cells two cylinders must share to be compared

CELLS = NS * NS
LENGTH = CELLS * ND

_DELTA_S = 2.0 * RADIUS / NS
_DELTA_D = 2.0 * math.pi / ND
_OFFSETS = (np.arange(NS) - (NS - 1) / 2.0) * _DELTA_S
_GRID_I, _GRID_J = np.meshgrid(_OFFSETS, _OFFSETS, indexing="xy")
_CELL_U = _GRID_I.ravel()  # along the minutia direction
_CELL_V = _GRID_J.ravel()  # across it
_IN_DISC = np.hypot(_CELL_U, _CELL_V) <= RADIUS
_DISC_CELLS = int(_IN_DISC.sum())
_BIN_ANGLES = -math.pi + (np.arange(ND) + 0.5) * _DELTA_D


def _wrap(angle):
    """Angle difference into [-pi, pi)."""
    return np.mod(angle + math.pi, 2.0 * math.pi) - math.pi


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Counter-clockwise hull vertices (Andrew's monotone chain); fewer than 3 for degenerate sets."""
    pts = np.unique(points, axis=0)
    if len(pts) < 3:
        return pts

    def half(seq):
        out: list[np.ndarray] = []
        for p in seq:
            while len(out) >= 2:
                o, a = out[-2], out[-1]
                if (a[0] - o[0]) * (p[1] - o[1]) - (a[1] - o[1]) * (p[0] - o[0]) > 0:
                    break
                out.pop()
            out.append(p)
        return out

    lower = half(pts)
    upper = half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def _inside_enlarged_hull(px: np.ndarray, py: np.ndarray, hull: np.ndarray) -> np.ndarray:
    """Whether points lie within OMEGA of the hull (edge half-planes pushed out by OMEGA)."""
    if len(hull) < 3:
        return np.ones(px.shape, dtype=bool)
    a = hull
    b = np.roll(hull, -1, axis=0)
    edge = b - a
    length = np.hypot(edge[:, 0], edge[:, 1])
    keep = length > 0
    a, edge, length = a[keep], edge[keep], length[keep]
    # outward normal of a counter-clockwise polygon
    nx, ny = edge[:, 1] / length, -edge[:, 0] / length
    d = (px[..., None] - a[:, 0]) * nx + (py[..., None] - a[:, 1]) * ny
    return d.max(axis=-1) <= OMEGA


def cylinders(x: np.ndarray, y: np.ndarray, theta: np.ndarray):
    """Cylinders of the valid minutiae.

    x, y in pixels at 500 ppi with y pointing up; theta counter-clockwise, radians.
    Returns (values (k, LENGTH) float32, cell masks (k, CELLS) float32, kept (k,) indices).
    Values are zero outside each cylinder's valid cells.
    """
    n = x.size
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    # cell centres, (n, CELLS)
    cx = (x[:, None] + cos_t[:, None] * _CELL_U - sin_t[:, None] * _CELL_V).astype(np.float32)
    cy = (y[:, None] + sin_t[:, None] * _CELL_U + cos_t[:, None] * _CELL_V).astype(np.float32)
    hull = convex_hull(np.column_stack([x, y]))
    valid = _IN_DISC[None, :] & _inside_enlarged_hull(cx, cy, hull)

    dist_mm = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    neighbours = ((dist_mm <= RADIUS + 3 * SIGMA_S).sum(axis=1) - 1) >= MIN_NEIGHBOURS
    kept = np.flatnonzero(neighbours & (valid.sum(axis=1) >= MIN_VALID_CELLS * _DISC_CELLS))
    if kept.size == 0:
        return (np.zeros((0, LENGTH), np.float32), np.zeros((0, CELLS), np.float32), kept)

    cxk, cyk, validk = cx[kept], cy[kept], valid[kept]
    # Only minutiae within R + 3 sigma_S of the centre reach a cell: a padded neighbour list
    # (pad = a copy of the centre with zero weight) keeps the work at k x CELLS x neighbours.
    near = (dist_mm[kept] <= RADIUS + 3 * SIGMA_S) & (dist_mm[kept] > 0)
    near[np.arange(kept.size), kept] = False
    width = max(int(near.sum(axis=1).max()), 1)
    order = np.argsort(~near, axis=1, kind="stable")[:, :width]
    real = np.take_along_axis(near, order, axis=1)
    nx = x[order].astype(np.float32)
    ny = y[order].astype(np.float32)
    ds = np.hypot(cxk[:, :, None] - nx[:, None, :], cyk[:, :, None] - ny[:, None, :])
    gs = np.exp(-0.5 * (ds / SIGMA_S) ** 2) * (1.0 / (SIGMA_S * math.sqrt(2 * math.pi)))
    gs *= (ds <= 3 * SIGMA_S) & real[:, None, :]
    # directional contribution (k, width, ND): direction of t relative to the centre vs the bin
    rel = _wrap(theta[order] - theta[kept, None])
    gd = (
        np.exp(-0.5 * (_wrap(_BIN_ANGLES[None, None, :] - rel[:, :, None]) / SIGMA_D) ** 2)
        * (_DELTA_D / (SIGMA_D * math.sqrt(2 * math.pi)))
    ).astype(np.float32)
    raw = np.matmul(gs.astype(np.float32), gd)
    values = 1.0 / (1.0 + np.exp(-TAU_PSI * (raw - MU_PSI)))
    values *= validk[:, :, None]
    return (
        values.reshape(kept.size, LENGTH).astype(np.float32),
        validk.astype(np.float32),
        kept,
    )


def similarity(va: np.ndarray, ma: np.ndarray, vb: np.ndarray, mb: np.ndarray) -> np.ndarray:
    """MCC similarity of every cylinder of set a to every one of set b, (ka, kb) float32."""
    sq_a = (va * va).reshape(len(va), CELLS, ND).sum(axis=2)
    sq_b = (vb * vb).reshape(len(vb), CELLS, ND).sum(axis=2)
    a2 = sq_a @ mb.T  # ||a||^2 over the cells valid in b
    b2 = ma @ sq_b.T
    ab = va @ vb.T
    common = ma @ mb.T
    diff = np.sqrt(np.maximum(a2 + b2 - 2.0 * ab, 0.0))
    denom = np.sqrt(a2) + np.sqrt(b2)
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = np.where(denom > 0, 1.0 - diff / denom, 0.0)
    sim[common < MIN_COMMON_CELLS * _DISC_CELLS] = 0.0
    return sim.astype(np.float32)
